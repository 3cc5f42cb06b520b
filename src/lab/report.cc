// The lab's report from results.json (report.h).
#include "lab/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/file_util.h"
#include "lab/plot.h"

namespace mlcapsule::lab {
namespace {

using nlohmann::json;

std::string Pct(double v) { return v < 0 ? "–" : fmt::format("{:.1f}%", 100 * v); }
std::string Pct2(double v) { return v < 0 ? "–" : fmt::format("{:.2f}%", 100 * v); }
std::string F3(double v) { return v < 0 ? "–" : fmt::format("{:.3f}", v); }

// The fewest watermarked samples with which even a 100% match reaches the verdict threshold:
// (1/(C-1))^n <= 2^-64.
int MinSamplesForVerdict(int classes) {
  return static_cast<int>(std::ceil(64.0 / std::log2(static_cast<double>(classes - 1))));
}

struct Csv {
  std::string text = "section,victim,policy,attack,queries,metric,value\n";
  void Row(const std::string& section, const std::string& victim, const std::string& policy,
           const std::string& attack, int64_t queries, const std::string& metric, double value) {
    text += fmt::format("{},{},{},{},{},{},{}\n", section, victim, policy, attack,
                        queries < 0 ? std::string() : std::to_string(queries), metric, value);
  }
};

const json* FindExtraction(const json& r, const std::string& policy, const std::string& attack) {
  if (!r.contains("extraction")) return nullptr;
  for (const json& e : r["extraction"])
    if (e["policy"] == policy && e["attack"] == attack) return &e;
  return nullptr;
}

// The targets, checked against this run's numbers (each line says what was compared).
std::string Checks(const json& r, const std::string& undefended) {
  std::string md = "\n## Checks against the targets\n\n";
  auto mark = [](bool ok) { return ok ? "**met**" : "**not met**"; };
  // Extraction: the best attack's fidelity within 10,000 queries on the undefended capsule.
  if (r.contains("extraction")) {
    double best = -1;
    std::string best_attack;
    int64_t best_queries = 0;
    for (const json& e : r["extraction"]) {
      if (e["policy"] != undefended) continue;
      for (const json& c : e["checkpoints"]) {
        if (c["queries"].get<int64_t>() > 10000) continue;
        if (c["fidelity"].get<double>() > best) {
          best = c["fidelity"];
          best_attack = e["attack"];
          best_queries = c["queries"];
        }
      }
    }
    if (best >= 0)
      md += fmt::format(
          "- Best extraction fidelity within 10,000 queries against `{}`: {} ({}, {} "
          "queries); target >= 90%: {}.\n",
          undefended, Pct(best), best_attack, best_queries, mark(best >= 0.9));
    // Watermark verdicts on every stolen substitute of a watermarking policy.
    int identified = 0, total = 0, too_small = 0;
    for (const json& e : r["extraction"]) {
      if (e["checkpoints"].empty() || !e["checkpoints"].back().contains("watermark")) continue;
      const json& w = e["checkpoints"].back()["watermark"];
      ++total;
      if (w["identified"].get<bool>())
        ++identified;
      else if (w["samples"].get<int64_t>() < MinSamplesForVerdict(10))
        ++too_small;
    }
    if (total > 0)
      md += fmt::format(
          "- Watermark: {} of {} stolen substitutes identified at 2^-64 at their "
          "largest budget ({} with too few escrowed samples to ever reach it); "
          "target all: {}.\n",
          identified, total, too_small, mark(identified == total));
    // PRADA: which attacks it caught.
    std::string caught, missed;
    for (const json& e : r["extraction"]) {
      if (e["checkpoints"].empty()) continue;
      const std::string p = e["policy"];
      if (!r.contains("policies") || !r["policies"].contains(p)) continue;
      const json& pol = r["policies"][p];
      if (!pol.contains("defenses") || !pol["defenses"].contains("prada")) continue;
      const int64_t at = e["checkpoints"].back()["prada_alarm_at"];
      const std::string item = fmt::format("{}/{}", p, e["attack"].get<std::string>());
      if (at >= 0)
        caught += fmt::format("{}{} (query {})", caught.empty() ? "" : ", ", item, at);
      else
        missed += fmt::format("{}{}", missed.empty() ? "" : ", ", item);
    }
    if (!caught.empty() || !missed.empty())
      md += fmt::format("- PRADA alarmed on: {}; did not alarm on: {}.\n",
                        caught.empty() ? "none" : caught, missed.empty() ? "none" : missed);
  }
  if (r.contains("benign")) {
    for (const json& b : r["benign"]) {
      if (!b.value("prada", false)) continue;
      int streams = 0, alarms = 0;
      for (const json& a : b.value("prada_alarms", json::array({b["prada_alarm_at"]}))) {
        ++streams;
        if (a.get<int64_t>() >= 0) ++alarms;
      }
      md += fmt::format(
          "- PRADA false alarms, `{}`: {} of {} benign streams of {} test queries "
          "(each in another random order, on a fresh capsule) alarmed; target zero: "
          "{}.\n",
          b["policy"].get<std::string>(), alarms, streams, b["queries"].get<int64_t>(),
          mark(alarms == 0));
    }
  }
  if (r.contains("membership")) {
    for (const json& m : r["membership"]) {
      double lira = -1, threshold = -1;
      std::string best_threshold;
      double max_auc = 0;
      std::string max_attack;
      for (const json& a : m["attacks"]) {
        const std::string name = a["attack"];
        const double t = a["tpr_at_01pct"];
        if (name == "lira-online" || name == "lira-offline") lira = std::max(lira, t);
        if (name == "loss" || name == "confidence" || name == "entropy" || name == "mentr") {
          if (t > threshold) {
            threshold = t;
            best_threshold = name;
          }
        }
        if (a["auc"].get<double>() > max_auc) {
          max_auc = a["auc"];
          max_attack = name;
        }
      }
      const std::string v = m["victim"], p = m["policy"];
      if (p == undefended || p == "undefended")
        md += fmt::format(
            "- `{}`/`{}`: LiRA TPR at 0.1% FPR {} vs the best threshold attack's {} "
            "({}); target LiRA ahead: {}.\n",
            v, p, Pct2(lira), Pct2(threshold), best_threshold, mark(lira > threshold));
      else
        md += fmt::format(
            "- `{}`/`{}`: the strongest membership attack has AUC {:.3f} ({}); "
            "target <= 0.55: {}.\n",
            v, p, max_auc, max_attack, mark(max_auc <= 0.55));
    }
  }
  return md;
}

}  // namespace

Status WriteReport(const std::string& dir) {
  MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/results.json", 256 << 20));
  json r;
  try {
    r = json::parse(text);
  } catch (const std::exception& e) {
    return DataLoss("{}/results.json: not JSON: {}", dir, e.what());
  }
  try {
    const json& config = r["config"];
    std::string md;
    Csv csv;
    md += fmt::format("# MLCapsule lab report: {}\n\n", config.value("name", "lab"));
    if (config.contains("description")) md += config["description"].get<std::string>() + "\n\n";
    md += fmt::format(
        "Made by `{}`. libtorch {}, {} job(s) of one thread each on {} CPUs, {:.0f} s wall "
        "(cached jobs count their original time below). Every query went through a packed "
        "capsule and the software TEE (`mlcapsule-core`), as a client's would. docs/lab.md "
        "explains every column.\n\n",
        r.value("command", std::string("mlcapsule lab run")),
        r["environment"].value("libtorch", "?"), r["environment"].value("jobs", 0),
        r["environment"].value("cpus", 0), r["environment"].value("wall_seconds", 0.0));

    md += "## Data (Fashion-MNIST, fixed splits)\n\n| split | images |\n|---|---|\n";
    for (auto it = r["splits"].begin(); it != r["splits"].end(); ++it)
      md += fmt::format("| {} | {} |\n", it.key(), it.value().get<int64_t>());

    md +=
        "\n## Victims\n\n| victim | architecture | parameters | train accuracy | held-out "
        "accuracy | test accuracy |\n|---|---|---|---|---|---|\n";
    for (auto it = r["victims"].begin(); it != r["victims"].end(); ++it) {
      const json& v = it.value();
      md +=
          fmt::format("| {} | {} | {} | {} | {} | {} |\n", it.key(), v.value("arch", ""),
                      v.value("parameters", 0), Pct(v.value("train_accuracy", -1.0)),
                      Pct(v.value("heldout_accuracy", -1.0)), Pct(v.value("test_accuracy", -1.0)));
      csv.Row("victim", it.key(), "", "", -1, "test_accuracy", v.value("test_accuracy", -1.0));
      csv.Row("victim", it.key(), "", "", -1, "train_accuracy", v.value("train_accuracy", -1.0));
    }
    if (r.contains("backbone"))
      md += fmt::format(
          "\nFeatureFool's pretrained backbone: {} on {} rendered glyphs (62 classes), "
          "held-out accuracy {}.\n",
          r["backbone"].value("arch", ""), r["backbone"].value("glyphs", 0),
          Pct(r["backbone"].value("heldout_accuracy", -1.0)));

    // Utility.
    const std::string ev = r.value("extraction_victim", std::string());
    if (r.contains("benign")) {
      md += fmt::format(
          "\n## Utility cost of each defense\n\nThe victim `{}` answers test images in random "
          "order through each policy's capsule. Accuracy is the answers' top-1 against the true "
          "labels; top-1 kept and mean L1 change compare each answer with the undefended "
          "model's probabilities for the same image; a PRADA alarm on this benign stream is a "
          "false alarm.\n\n| policy | queries | accuracy | change | top-1 kept | mean L1 change | "
          "PRADA false alarm |\n|---|---|---|---|---|---|---|\n",
          ev);
      for (const json& b : r["benign"]) {
        const double acc = b["accuracy"], raw = b["undefended_accuracy"];
        std::string alarm = "(no PRADA)";
        if (b.value("prada", false)) {
          const json alarms = b.value("prada_alarms", json::array({b["prada_alarm_at"]}));
          int alarmed = 0;
          std::string at;
          for (const json& a : alarms) {
            if (a.get<int64_t>() < 0) continue;
            ++alarmed;
            at += fmt::format("{}{}", at.empty() ? "" : ", ", a.get<int64_t>());
          }
          alarm =
              alarmed == 0
                  ? fmt::format("none in {} stream{}", alarms.size(), alarms.size() == 1 ? "" : "s")
                  : fmt::format("{} of {} streams (at query {})", alarmed, alarms.size(), at);
        }
        md += fmt::format("| {} | {} | {} | {:+.2f} pt | {} | {} | {} |\n",
                          b["policy"].get<std::string>(), b["queries"].get<int64_t>(), Pct(acc),
                          100 * (acc - raw), Pct(b["top1_agreement"]), F3(b["mean_l1_change"]),
                          alarm);
        const std::string p = b["policy"];
        csv.Row("utility", ev, p, "", b["queries"], "accuracy", acc);
        csv.Row("utility", ev, p, "", b["queries"], "accuracy_change", acc - raw);
        csv.Row("utility", ev, p, "", b["queries"], "mean_l1_change", b["mean_l1_change"]);
        csv.Row("utility", ev, p, "", b["queries"], "top1_agreement", b["top1_agreement"]);
        if (b.value("prada", false)) {
          int alarmed = 0, streams = 0;
          for (const json& a : b.value("prada_alarms", json::array({b["prada_alarm_at"]}))) {
            ++streams;
            if (a.get<int64_t>() >= 0) ++alarmed;
          }
          csv.Row("utility", ev, p, "", b["queries"], "prada_false_alarm_streams", alarmed);
          csv.Row("utility", ev, p, "", b["queries"], "prada_benign_streams", streams);
        }
      }
    }

    // Extraction.
    std::vector<std::string> policy_order;
    std::vector<std::string> attack_order;
    std::set<int64_t> budget_set;
    if (r.contains("extraction")) {
      for (const json& e : r["extraction"]) {
        const std::string p = e["policy"], a = e["attack"];
        if (std::find(policy_order.begin(), policy_order.end(), p) == policy_order.end())
          policy_order.push_back(p);
        if (std::find(attack_order.begin(), attack_order.end(), a) == attack_order.end())
          attack_order.push_back(a);
        for (const json& c : e["checkpoints"]) budget_set.insert(c["queries"].get<int64_t>());
      }
    }
    const std::string undefended = policy_order.empty() ? "" : policy_order.front();
    if (!policy_order.empty()) {
      md += fmt::format(
          "\n## Extraction\n\nVictim `{}`. Fidelity is the substitute's top-1 agreement with the "
          "victim on the {} test images; accuracy is against the true labels. The first policy "
          "(`{}`) is the undefended baseline.\n\n### Fidelity by query budget\n\n| policy | attack "
          "|",
          ev, r["splits"].value("test", 0), undefended);
      for (int64_t b : budget_set) md += fmt::format(" {} |", b);
      md += "\n|---|---|";
      for (size_t i = 0; i < budget_set.size(); ++i) md += "---|";
      md += "\n";
      for (const json& e : r["extraction"]) {
        md += fmt::format("| {} | {} |", e["policy"].get<std::string>(),
                          e["attack"].get<std::string>());
        for (int64_t b : budget_set) {
          std::string cell = " ";
          for (const json& c : e["checkpoints"])
            if (c["queries"].get<int64_t>() == b) cell = Pct(c["fidelity"]);
          md += fmt::format(" {} |", cell);
        }
        md += "\n";
        for (const json& c : e["checkpoints"]) {
          const std::string p = e["policy"], a = e["attack"];
          const int64_t q = c["queries"];
          csv.Row("extraction", ev, p, a, q, "fidelity", c["fidelity"]);
          csv.Row("extraction", ev, p, a, q, "accuracy", c["accuracy"]);
          csv.Row("extraction", ev, p, a, q, "prada_alarm_at", c["prada_alarm_at"]);
          if (c.contains("watermark")) {
            csv.Row("extraction", ev, p, a, q, "watermark_samples", c["watermark"]["samples"]);
            csv.Row("extraction", ev, p, a, q, "watermark_matches", c["watermark"]["matches"]);
            csv.Row("extraction", ev, p, a, q, "watermark_log2_chance",
                    c["watermark"]["log2_chance"]);
            csv.Row("extraction", ev, p, a, q, "watermark_identified",
                    c["watermark"]["identified"].get<bool>() ? 1 : 0);
          }
        }
      }
      md +=
          "\n### Each defense against each attack (at the attack's largest budget)\n\nFidelity "
          "reduction is the undefended fidelity minus this one at the same budget. PRADA alarm: "
          "the query count at which the core raised its alarm (`none`: never). Watermark: "
          "`watermark verify` on the stolen substitute with the escrowed samples of every usage "
          "report: matches of the watermark labels / samples, log2 of the chance that an "
          "independent model matches that often, verdict at 2^-64.\n\n"
          "| policy | attack | queries | fidelity | accuracy | fidelity reduction | PRADA alarm "
          "| watermark matches | log2 P | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n";
      const int min_samples = MinSamplesForVerdict(10);
      for (const json& e : r["extraction"]) {
        if (e["checkpoints"].empty()) continue;
        const json& last = e["checkpoints"].back();
        const int64_t q = last["queries"];
        std::string reduction = "–";
        if (e["policy"] != undefended) {
          if (const json* base = FindExtraction(r, undefended, e["attack"])) {
            for (const json& c : (*base)["checkpoints"])
              if (c["queries"].get<int64_t>() == q)
                reduction = fmt::format("{:+.1f} pt", 100 * (c["fidelity"].get<double>() -
                                                             last["fidelity"].get<double>()));
          }
        }
        std::string alarm = last["prada_alarm_at"].get<int64_t>() < 0
                                ? "none"
                                : std::to_string(last["prada_alarm_at"].get<int64_t>());
        std::string matches = "–", log2p = "–", verdict = "(no watermark)";
        if (last.contains("watermark")) {
          const json& w = last["watermark"];
          matches =
              fmt::format("{}/{}", w["matches"].get<uint64_t>(), w["samples"].get<uint64_t>());
          log2p = fmt::format("{:.1f}", w["log2_chance"].get<double>());
          if (w["identified"].get<bool>()) {
            verdict = "identified";
          } else if (w["samples"].get<int64_t>() < min_samples) {
            verdict = fmt::format("budget too small (< {} samples)", min_samples);
          } else {
            verdict = "not identified";
          }
        }
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                          e["policy"].get<std::string>(), e["attack"].get<std::string>(), q,
                          Pct(last["fidelity"]), Pct(last["accuracy"]), reduction, alarm, matches,
                          log2p, verdict);
      }
      md += "\n![fidelity vs queries](fidelity.png)\n";
    }

    // Membership.
    if (r.contains("membership")) {
      md +=
          "\n## Membership inference\n\nMembers: the victim's training split; non-members: its "
          "held-out split (balanced). Scores come from the capsule's answers. Balanced accuracy "
          "`best` uses the best threshold on the targets themselves (an upper bound); "
          "`calibrated` uses a threshold chosen on a shadow model (what an attacker can do). At "
          "n non-members, TPR at 0.1% FPR is resolvable only when n >= 1000.\n\n"
          "| victim | policy | attack | AUC | bal. acc. best | bal. acc. calibrated | TPR@1% "
          "| TPR@0.1% | members / non-members |\n|---|---|---|---|---|---|---|---|---|\n";
      for (const json& m : r["membership"]) {
        for (const json& a : m["attacks"]) {
          md += fmt::format(
              "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |\n",
              m["victim"].get<std::string>(), m["policy"].get<std::string>(),
              a["attack"].get<std::string>(), F3(a["auc"]), Pct(a["balanced_accuracy_best"]),
              Pct(a["balanced_accuracy_calibrated"]), Pct2(a["tpr_at_1pct"]),
              Pct2(a["tpr_at_01pct"]), a["members"].get<int64_t>(), a["nonmembers"].get<int64_t>());
          for (const char* k : {"auc", "balanced_accuracy_best", "balanced_accuracy_calibrated",
                                "tpr_at_1pct", "tpr_at_01pct"})
            csv.Row("membership", m["victim"], m["policy"], a["attack"], a["queries"], k, a[k]);
        }
      }
      if (r.contains("defenders"))
        for (auto it = r["defenders"].begin(); it != r["defenders"].end(); ++it)
          md += fmt::format(
              "\nMemGuard's defender classifier for `{}`: held-out AUC {:.3f} (members "
              "vs the defender's own non-member split).\n",
              it.key(), it.value()["heldout_auc"].get<double>());
      md += "\n![membership ROC](roc.png)\n";
    }

    if (r.contains("kennen")) {
      md +=
          "\n## Reverse engineering (KENNEN-style probe)\n\nA meta-classifier predicts each "
          "attribute of a black-box MLP from its answers to fixed queries under each output "
          "policy; leave-one-out accuracy with a 95% Wilson interval, against the majority "
          "baseline. A small zoo: an illustration, not a study.\n\n| policy | attribute | "
          "accuracy [95% CI] | majority | models |\n|---|---|---|---|---|\n";
      for (const json& k : r["kennen"]) {
        md += fmt::format("| {} | {} | {} [{}, {}] | {} | {} |\n", k["policy"].get<std::string>(),
                          k["attribute"].get<std::string>(), Pct(k["accuracy"]), Pct(k["ci_low"]),
                          Pct(k["ci_high"]), Pct(k["majority"]), k["models"].get<int>());
        csv.Row("kennen", "", k["policy"], k["attribute"], -1, "accuracy", k["accuracy"]);
        csv.Row("kennen", "", k["policy"], k["attribute"], -1, "majority", k["majority"]);
      }
    }

    md += Checks(r, undefended);
    md += "\n## Job times\n\n| job | seconds | from cache |\n|---|---|---|\n";
    for (auto it = r["timings"].begin(); it != r["timings"].end(); ++it)
      md += fmt::format("| {} | {:.0f} | {} |\n", it.key(), it.value()["seconds"].get<double>(),
                        it.value()["cached"].get<bool>() ? "yes" : "no");

    // Plots.
    if (!policy_order.empty()) {
      std::vector<Panel> panels;
      const double xmin = static_cast<double>(*budget_set.begin()) / 1.5;
      const double xmax = static_cast<double>(*budget_set.rbegin()) * 1.5;
      for (const std::string& p : policy_order) {
        Panel panel;
        panel.title = "policy: " + p;
        panel.x = {"queries", true, xmin, xmax};
        panel.y = {"fidelity to the victim", false, 0, 1};
        panel.reference_y = {0.9};
        for (const json& e : r["extraction"]) {
          if (e["policy"] != p) continue;
          Series s;
          s.name = e["attack"];
          for (const json& c : e["checkpoints"]) {
            s.x.push_back(c["queries"].get<double>());
            s.y.push_back(c["fidelity"].get<double>());
          }
          panel.series.push_back(s);
        }
        panels.push_back(panel);
      }
      MLC_RETURN_IF_ERROR(WritePlotPng(dir + "/fidelity.png", panels, 2));
    }
    if (r.contains("membership")) {
      std::vector<Panel> panels;
      for (const json& m : r["membership"]) {
        Panel panel;
        panel.title =
            fmt::format("{} / {}", m["victim"].get<std::string>(), m["policy"].get<std::string>());
        panel.x = {"false positive rate", true, 1e-4, 1};
        panel.y = {"true positive rate", true, 1e-4, 1};
        panel.diagonal = true;
        for (const json& a : m["attacks"]) {
          Series s;
          s.name = a["attack"];
          s.x = a["roc"]["fpr"].get<std::vector<double>>();
          s.y = a["roc"]["tpr"].get<std::vector<double>>();
          panel.series.push_back(s);
        }
        panels.push_back(panel);
      }
      MLC_RETURN_IF_ERROR(WritePlotPng(dir + "/roc.png", panels, 2));
    }
    MLC_RETURN_IF_ERROR(WriteFile(dir + "/report.md", md));
    MLC_RETURN_IF_ERROR(WriteFile(dir + "/results.csv", csv.text));
  } catch (const std::exception& e) {
    return DataLoss("{}/results.json: unexpected content: {}", dir, e.what());
  }
  return Status::Ok();
}

}  // namespace mlcapsule::lab
