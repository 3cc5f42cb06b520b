// The lab's run: configuration, the job graph with its content-addressed cache, the scheduler, and
// the results file the report is made from (runner.h).
#include "lab/runner.h"

#include <fmt/format.h>
#include <signal.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/bytes.h"
#include "base/file_util.h"
#include "capsule/crypto.h"
#include "lab/data.h"
#include "lab/extraction.h"
#include "lab/metrics.h"
#include "lab/mia.h"
#include "lab/nets.h"
#include "lab/oracle.h"
#include "lab/probe.h"
#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Bumped whenever a job's code changes what it produces: old cache entries are then ignored.
constexpr int kLabCacheVersion = 1;
constexpr uint64_t kMaxConfigBytes = 1 << 20;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- configuration ------------------------------------------------------------------------------

Result<ArchSpec> ParseArch(const std::string& name) {
  if (name == "cnn-a") return CnnA();
  if (name == "cnn-b") return CnnB();
  if (name == "mlp") return Mlp();
  return InvalidArgument("unknown architecture \"{}\" (cnn-a, cnn-b, mlp)", name);
}

struct VictimConfig {
  std::string name;
  ArchSpec arch;
  TrainOptions train;
  json spec;
};

struct Config {
  json raw;
  std::string name;
  uint64_t seed = 20261122;
  int jobs = 2;
  SplitSizes sizes;
  std::map<std::string, VictimConfig> victims;
  int64_t glyphs = 20000, transformed = 10000;  // the OOD pool
  int64_t backbone_glyphs = 20000;
  int backbone_epochs = 5;
  std::map<std::string, json> policies;  // name -> {"output":..., "defenses":...}
  // extraction
  std::string extraction_victim = "cnn";
  AttackConfig attack;
  json attack_spec;
  struct ExtractionRun {
    std::string policy;
    std::vector<AttackKind> attacks;
    std::vector<int64_t> budgets;
    AttackConfig options;
    json options_spec;
    std::string tag;
  };
  std::vector<ExtractionRun> extraction_runs;
  int64_t benign_queries = 10000;
  int benign_orders = 1;  // streams per PRADA policy (false-alarm count)
  std::vector<std::string> benign_policies;
  // membership
  std::vector<std::string> mia_victims;
  std::vector<std::string> mia_policies;
  json mia_spec;
  MiaConfig mia;
  std::map<std::string, int> lira_shadows;  // per victim
  // kennen
  bool kennen = false;
  ProbeConfig probe;
  json probe_spec;
};

template <typename T>
Status Get(const json& j, const char* key, T* out, const std::string& where) {
  if (!j.contains(key)) return Status::Ok();
  try {
    *out = j.at(key).get<T>();
    return Status::Ok();
  } catch (const std::exception& e) {
    return InvalidArgument("{}.{}: {}", where, key, e.what());
  }
}

Status CheckKeys(const json& j, std::initializer_list<const char*> allowed,
                 const std::string& where) {
  if (!j.is_object()) return InvalidArgument("{}: must be an object", where);
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) return InvalidArgument("{}: unknown field \"{}\"", where, it.key());
  }
  return Status::Ok();
}

std::string PolicyJson(const json& p) {
  json policy = {{"version", 1},
                 {"description", "mlcapsule lab"},
                 {"tee", {{"accept", {"software"}}}},
                 {"lease", {{"max_queries", 100000000}, {"max_days", 30}, {"seal_every", 1000}}},
                 {"output", p.at("output")}};
  if (p.contains("defenses")) policy["defenses"] = p.at("defenses");
  return policy.dump();
}

bool PolicyHasMemGuard(const json& p) {
  return p.contains("defenses") && p["defenses"].contains("memguard") &&
         p["defenses"]["memguard"].value("enabled", false);
}
bool PolicyHasPrada(const json& p) {
  return p.contains("defenses") && p["defenses"].contains("prada") &&
         p["defenses"]["prada"].value("enabled", false);
}

Status ParseAttackOptions(const json& o, const std::string& w, AttackConfig* a) {
  MLC_RETURN_IF_ERROR(
      CheckKeys(o,
                {"snapshot_passes", "snapshot_min_epochs", "snapshot_max_epochs", "sync_every",
                 "bandit_retrain", "jbda_seeds", "jbda_reservoir", "jbda_passes", "ff_passes",
                 "ff_candidates", "ff_epsilon", "soft_labels", "substitute"},
                w));
  MLC_RETURN_IF_ERROR(Get(o, "snapshot_passes", &a->snapshot_passes, w));
  MLC_RETURN_IF_ERROR(Get(o, "snapshot_min_epochs", &a->snapshot_min_epochs, w));
  MLC_RETURN_IF_ERROR(Get(o, "snapshot_max_epochs", &a->snapshot_max_epochs, w));
  MLC_RETURN_IF_ERROR(Get(o, "sync_every", &a->sync_every, w));
  MLC_RETURN_IF_ERROR(Get(o, "bandit_retrain", &a->bandit_retrain, w));
  MLC_RETURN_IF_ERROR(Get(o, "jbda_seeds", &a->jbda_seeds, w));
  MLC_RETURN_IF_ERROR(Get(o, "jbda_reservoir", &a->jbda_reservoir, w));
  MLC_RETURN_IF_ERROR(Get(o, "jbda_passes", &a->jbda_passes, w));
  MLC_RETURN_IF_ERROR(Get(o, "ff_passes", &a->ff_passes, w));
  MLC_RETURN_IF_ERROR(Get(o, "ff_candidates", &a->ff_candidates, w));
  MLC_RETURN_IF_ERROR(Get(o, "ff_epsilon", &a->ff_epsilon, w));
  MLC_RETURN_IF_ERROR(Get(o, "soft_labels", &a->soft_labels, w));
  if (o.contains("substitute")) {
    std::string arch;
    MLC_RETURN_IF_ERROR(Get(o, "substitute", &arch, w));
    MLC_ASSIGN_OR_RETURN(a->substitute, ParseArch(arch));
  }
  return Status::Ok();
}

Result<Config> ParseConfig(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxConfigBytes));
  Config c;
  try {
    c.raw = json::parse(text);
  } catch (const std::exception& e) {
    return InvalidArgument("{}: not JSON: {}", path, e.what());
  }
  const json& j = c.raw;
  MLC_RETURN_IF_ERROR(
      CheckKeys(j,
                {"name", "description", "seed", "jobs", "splits", "victims", "ood_pool", "backbone",
                 "policies", "extraction", "benign", "membership", "kennen"},
                path));
  MLC_RETURN_IF_ERROR(Get(j, "name", &c.name, path));
  MLC_RETURN_IF_ERROR(Get(j, "seed", &c.seed, path));
  MLC_RETURN_IF_ERROR(Get(j, "jobs", &c.jobs, path));
  if (j.contains("splits")) {
    const json& s = j["splits"];
    MLC_RETURN_IF_ERROR(CheckKeys(
        s,
        {"victim_train", "victim_heldout", "defender_nonmember", "attacker_pool", "shadow", "test"},
        "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "victim_train", &c.sizes.victim_train, "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "victim_heldout", &c.sizes.victim_heldout, "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "defender_nonmember", &c.sizes.defender_nonmember, "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "attacker_pool", &c.sizes.attacker_pool, "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "shadow", &c.sizes.shadow, "splits"));
    MLC_RETURN_IF_ERROR(Get(s, "test", &c.sizes.test, "splits"));
  }
  if (!j.contains("victims") || !j["victims"].is_object() || j["victims"].empty())
    return InvalidArgument("{}: \"victims\" must name at least one victim", path);
  for (auto it = j["victims"].begin(); it != j["victims"].end(); ++it) {
    const std::string where = "victims." + it.key();
    MLC_RETURN_IF_ERROR(CheckKeys(it.value(), {"arch", "epochs", "batch", "lr"}, where));
    VictimConfig v;
    v.name = it.key();
    std::string arch = "cnn-a";
    MLC_RETURN_IF_ERROR(Get(it.value(), "arch", &arch, where));
    MLC_ASSIGN_OR_RETURN(v.arch, ParseArch(arch));
    MLC_RETURN_IF_ERROR(Get(it.value(), "epochs", &v.train.epochs, where));
    MLC_RETURN_IF_ERROR(Get(it.value(), "batch", &v.train.batch, where));
    MLC_RETURN_IF_ERROR(Get(it.value(), "lr", &v.train.lr, where));
    v.train.seed = DeriveSeed(c.seed, "victim-order-" + v.name);
    v.spec = it.value();
    c.victims[v.name] = v;
  }
  if (j.contains("ood_pool")) {
    MLC_RETURN_IF_ERROR(CheckKeys(j["ood_pool"], {"glyphs", "transformed"}, "ood_pool"));
    MLC_RETURN_IF_ERROR(Get(j["ood_pool"], "glyphs", &c.glyphs, "ood_pool"));
    MLC_RETURN_IF_ERROR(Get(j["ood_pool"], "transformed", &c.transformed, "ood_pool"));
  }
  if (j.contains("backbone")) {
    MLC_RETURN_IF_ERROR(CheckKeys(j["backbone"], {"glyphs", "epochs"}, "backbone"));
    MLC_RETURN_IF_ERROR(Get(j["backbone"], "glyphs", &c.backbone_glyphs, "backbone"));
    MLC_RETURN_IF_ERROR(Get(j["backbone"], "epochs", &c.backbone_epochs, "backbone"));
  }
  if (!j.contains("policies") || !j["policies"].is_object())
    return InvalidArgument("{}: \"policies\" must map names to policies", path);
  for (auto it = j["policies"].begin(); it != j["policies"].end(); ++it) {
    const std::string where = "policies." + it.key();
    MLC_RETURN_IF_ERROR(CheckKeys(it.value(), {"output", "defenses", "description"}, where));
    if (!it.value().contains("output")) return InvalidArgument("{}: needs \"output\"", where);
    c.policies[it.key()] = it.value();
  }
  auto check_policy = [&](const std::string& name, const std::string& where) -> Status {
    if (!c.policies.count(name)) return InvalidArgument("{}: unknown policy \"{}\"", where, name);
    return Status::Ok();
  };
  if (j.contains("extraction")) {
    const json& e = j["extraction"];
    MLC_RETURN_IF_ERROR(CheckKeys(e, {"victim", "budgets", "runs", "options"}, "extraction"));
    MLC_RETURN_IF_ERROR(Get(e, "victim", &c.extraction_victim, "extraction"));
    if (!c.victims.count(c.extraction_victim))
      return InvalidArgument("extraction.victim: unknown victim \"{}\"", c.extraction_victim);
    MLC_RETURN_IF_ERROR(Get(e, "budgets", &c.attack.budgets, "extraction"));
    if (c.attack.budgets.empty() ||
        !std::is_sorted(c.attack.budgets.begin(), c.attack.budgets.end()) ||
        c.attack.budgets.front() <= 0)
      return InvalidArgument("extraction.budgets: must be positive and increasing");
    if (e.contains("options"))
      MLC_RETURN_IF_ERROR(ParseAttackOptions(e["options"], "extraction.options", &c.attack));
    c.attack_spec = e.value("options", json::object());
    c.attack_spec["budgets"] = c.attack.budgets;
    if (e.contains("runs")) {
      for (const json& r : e["runs"]) {
        MLC_RETURN_IF_ERROR(
            CheckKeys(r, {"policy", "attacks", "budgets", "options", "tag"}, "extraction.runs[]"));
        std::string policy = r.value("policy", "");
        MLC_RETURN_IF_ERROR(check_policy(policy, "extraction.runs[].policy"));
        std::vector<AttackKind> attacks;
        for (const json& a : r.value("attacks", json::array())) {
          MLC_ASSIGN_OR_RETURN(AttackKind k, ParseAttackKind(a.get<std::string>()));
          attacks.push_back(k);
        }
        std::vector<int64_t> budgets = c.attack.budgets;
        MLC_RETURN_IF_ERROR(Get(r, "budgets", &budgets, "extraction.runs[]"));
        if (budgets.empty() || !std::is_sorted(budgets.begin(), budgets.end()) ||
            budgets.front() <= 0)
          return InvalidArgument("extraction.runs[].budgets: must be positive and increasing");
        // A run may change the attacker's options (e.g. train to convergence); its tag names
        // the variant in job names and the report ("random:converged").
        AttackConfig options = c.attack;
        json options_spec = c.attack_spec;
        if (r.contains("options")) {
          MLC_RETURN_IF_ERROR(
              ParseAttackOptions(r["options"], "extraction.runs[].options", &options));
          options_spec.update(r["options"]);
        }
        std::string tag = r.value("tag", "");
        if (r.contains("options") && tag.empty())
          return InvalidArgument("extraction.runs[]: a run with its own options needs a \"tag\"");
        c.extraction_runs.push_back({policy, attacks, budgets, options, options_spec, tag});
      }
    }
  }
  if (j.contains("benign")) {
    MLC_RETURN_IF_ERROR(CheckKeys(j["benign"], {"queries", "policies", "orders"}, "benign"));
    MLC_RETURN_IF_ERROR(Get(j["benign"], "orders", &c.benign_orders, "benign"));
    if (c.benign_orders < 1 || c.benign_orders > 1000)
      return InvalidArgument("benign.orders: {} is out of range 1..1000", c.benign_orders);
    MLC_RETURN_IF_ERROR(Get(j["benign"], "queries", &c.benign_queries, "benign"));
    MLC_RETURN_IF_ERROR(Get(j["benign"], "policies", &c.benign_policies, "benign"));
    for (const auto& p : c.benign_policies) MLC_RETURN_IF_ERROR(check_policy(p, "benign.policies"));
  }
  if (j.contains("membership")) {
    const json& m = j["membership"];
    MLC_RETURN_IF_ERROR(
        CheckKeys(m, {"victims", "policies", "lira_shadows", "mlleaks_shadows", "label_only_shift"},
                  "membership"));
    MLC_RETURN_IF_ERROR(Get(m, "victims", &c.mia_victims, "membership"));
    MLC_RETURN_IF_ERROR(Get(m, "policies", &c.mia_policies, "membership"));
    for (const auto& v : c.mia_victims)
      if (!c.victims.count(v))
        return InvalidArgument("membership.victims: unknown victim \"{}\"", v);
    for (const auto& p : c.mia_policies)
      MLC_RETURN_IF_ERROR(check_policy(p, "membership.policies"));
    if (m.contains("lira_shadows")) {
      if (m["lira_shadows"].is_number()) {
        for (const auto& v : c.mia_victims) c.lira_shadows[v] = m["lira_shadows"].get<int>();
      } else {
        MLC_RETURN_IF_ERROR(Get(m, "lira_shadows", &c.lira_shadows, "membership"));
      }
    }
    MLC_RETURN_IF_ERROR(Get(m, "mlleaks_shadows", &c.mia.mlleaks_shadows, "membership"));
    MLC_RETURN_IF_ERROR(Get(m, "label_only_shift", &c.mia.label_only_shift, "membership"));
    c.mia_spec = m;
  }
  if (j.contains("kennen")) {
    const json& k = j["kennen"];
    MLC_RETURN_IF_ERROR(
        CheckKeys(k, {"models", "queries", "train_samples", "epochs", "policies"}, "kennen"));
    c.kennen = true;
    MLC_RETURN_IF_ERROR(Get(k, "models", &c.probe.models, "kennen"));
    MLC_RETURN_IF_ERROR(Get(k, "queries", &c.probe.queries, "kennen"));
    MLC_RETURN_IF_ERROR(Get(k, "train_samples", &c.probe.train_samples, "kennen"));
    MLC_RETURN_IF_ERROR(Get(k, "epochs", &c.probe.epochs, "kennen"));
    for (const json& p : k.value("policies", json::array()))
      c.probe.output_policies.push_back(p.dump());
    c.probe.seed = DeriveSeed(c.seed, "kennen");
    c.probe_spec = k;
  }
  if (c.jobs < 1 || c.jobs > 64) return InvalidArgument("jobs: {} is out of range 1..64", c.jobs);
  return c;
}

// ---- the shared data ----------------------------------------------------------------------------

struct Data {
  Splits splits;
  ImageSet ood;  // glyphs (labels 0..61) then transformed images (labels 62..67)
  int ood_arms = kGlyphClasses + kTransformKinds;
  torch::Tensor test_images, test_labels;
};

// ---- jobs and the cache -------------------------------------------------------------------------

struct Job {
  std::string name;
  std::vector<std::string> deps;
  json spec;
  // Writes artefacts into `dir` (a fresh directory) and returns the job's result.
  std::function<Result<json>(const std::string& dir)> run;
  std::string key;
  json result;
  bool started = false, done = false, cached = false;
  double seconds = 0;
};

class Lab {
 public:
  Lab(Config config, RunOptions options) : c_(std::move(config)), o_(std::move(options)) {}

  Status Run();

 private:
  Status LoadData();
  void Plan();
  Job& Add(std::string name, std::vector<std::string> deps, json spec,
           std::function<Result<json>(const std::string&)> run);
  std::string EntryDir(const std::string& job) const {
    return cache_ + "/" + jobs_.at(index_.at(job)).key;
  }
  Result<Net> LoadVictim(const std::string& victim) const;
  Result<std::unique_ptr<CapsuleOracle>> MakeOracle(const std::string& job,
                                                    const std::string& victim,
                                                    const std::string& policy) const;
  Status RunJob(Job& job);
  void Progress(const std::string& event, const Job& job);
  Status WriteResults() const;

  // Jobs
  Result<json> TrainVictim(const VictimConfig& v, const std::string& dir);
  Result<json> TrainBackbone(const std::string& dir);
  Result<json> TrainDefender(const std::string& victim, const std::string& dir);
  Result<json> Extraction(const std::string& policy, const AttackConfig& options,
                          const std::string& attack_name, const std::string& dir);
  Result<json> Benign(const std::string& policy, const std::string& dir);
  Result<json> Shadows(const std::string& victim, const std::string& dir);
  Result<json> Membership(const std::string& victim, const std::string& policy,
                          const std::string& dir);
  Result<json> Kennen(const std::string& dir);

  Config c_;
  RunOptions o_;
  std::string cache_, scratch_;
  Data data_;
  std::vector<Job> jobs_;
  std::map<std::string, size_t> index_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int finished_ = 0;
  Clock::time_point start_ = Clock::now();
};

Job& Lab::Add(std::string name, std::vector<std::string> deps, json spec,
              std::function<Result<json>(const std::string&)> run) {
  Job job;
  job.name = std::move(name);
  job.deps = std::move(deps);
  job.spec = std::move(spec);
  job.run = std::move(run);
  json keyed = {{"job", job.name},
                {"spec", job.spec},
                {"version", kLabCacheVersion},
                {"seed", c_.seed},
                {"splits", c_.raw.value("splits", json::object())}};
  for (const std::string& d : job.deps) keyed["deps"][d] = jobs_.at(index_.at(d)).key;
  const std::string text = keyed.dump();
  capsule::Digest digest = capsule::Hash({AsBytes(text)});
  job.key = capsule::ToHex(digest).substr(0, 32);
  index_[job.name] = jobs_.size();
  jobs_.push_back(std::move(job));
  return jobs_.back();
}

void Lab::Plan() {
  for (auto& [name, v] : c_.victims) {
    json spec = v.spec;
    spec["arch"] = v.arch.Name();
    Add("victim/" + name, {}, spec,
        [this, v = v](const std::string& dir) { return TrainVictim(v, dir); });
  }
  const bool need_backbone = [&] {
    for (const auto& run : c_.extraction_runs)
      for (AttackKind a : run.attacks)
        if (a == AttackKind::kFeatureFool) return true;
    return false;
  }();
  if (need_backbone)
    Add("backbone", {}, {{"glyphs", c_.backbone_glyphs}, {"epochs", c_.backbone_epochs}},
        [this](const std::string& dir) { return TrainBackbone(dir); });
  // The defender's classifier for every victim whose capsule runs MemGuard.
  std::set<std::string> defended;
  auto uses_memguard = [&](const std::string& policy) {
    return PolicyHasMemGuard(c_.policies.at(policy));
  };
  for (const auto& run : c_.extraction_runs)
    if (uses_memguard(run.policy)) defended.insert(c_.extraction_victim);
  for (const auto& p : c_.benign_policies)
    if (uses_memguard(p)) defended.insert(c_.extraction_victim);
  for (const auto& v : c_.mia_victims)
    for (const auto& p : c_.mia_policies)
      if (uses_memguard(p)) defended.insert(v);
  for (const std::string& v : defended)
    Add("defender/" + v, {"victim/" + v}, json::object(),
        [this, v](const std::string& dir) { return TrainDefender(v, dir); });
  auto capsule_deps = [&](const std::string& victim, const std::string& policy) {
    std::vector<std::string> deps = {"victim/" + victim};
    if (uses_memguard(policy)) deps.push_back("defender/" + victim);
    return deps;
  };
  // Slow jobs first: shadows, then extraction, so two workers stay busy to the end.
  for (const std::string& v : c_.mia_victims) {
    json spec = c_.mia_spec;
    spec.erase("policies");
    spec["lira_shadows"] = c_.lira_shadows.count(v) ? c_.lira_shadows[v] : 16;
    Add("shadows/" + v, {"victim/" + v}, spec,
        [this, v](const std::string& dir) { return Shadows(v, dir); });
  }
  for (const auto& run : c_.extraction_runs) {
    for (AttackKind a : run.attacks) {
      const std::string policy = run.policy;
      AttackConfig options = run.options;
      options.kind = a;
      options.budgets = run.budgets;
      const std::string attack =
          run.tag.empty() ? AttackName(a) : fmt::format("{}:{}", AttackName(a), run.tag);
      std::vector<std::string> deps = capsule_deps(c_.extraction_victim, policy);
      if (a == AttackKind::kFeatureFool) deps.push_back("backbone");
      json spec = {{"policy", c_.policies.at(policy)},
                   {"attack", AttackName(a)},
                   {"options", run.options_spec},
                   {"budgets", run.budgets},
                   {"victim", c_.extraction_victim},
                   {"ood", {{"glyphs", c_.glyphs}, {"transformed", c_.transformed}}}};
      if (!run.tag.empty()) spec["tag"] = run.tag;
      spec["seeding"] = "per-attack";
      Add(fmt::format("extraction/{}/{}", policy, attack), deps, spec,
          [this, policy, options, attack](const std::string& dir) {
            return Extraction(policy, options, attack, dir);
          });
    }
  }
  for (const std::string& v : c_.mia_victims) {
    for (const std::string& p : c_.mia_policies) {
      std::vector<std::string> deps = capsule_deps(v, p);
      deps.push_back("shadows/" + v);
      Add(fmt::format("membership/{}/{}", v, p), deps, {{"policy", c_.policies.at(p)}},
          [this, v, p](const std::string& dir) { return Membership(v, p, dir); });
    }
  }
  for (const std::string& p : c_.benign_policies)
    Add("benign/" + p, capsule_deps(c_.extraction_victim, p),
        {{"policy", c_.policies.at(p)},
         {"queries", c_.benign_queries},
         {"victim", c_.extraction_victim},
         {"order", "shared"},
         {"orders", PolicyHasPrada(c_.policies.at(p)) ? c_.benign_orders : 1}},
        [this, p](const std::string& dir) { return Benign(p, dir); });
  if (c_.kennen)
    Add("kennen", {}, c_.probe_spec, [this](const std::string& dir) { return Kennen(dir); });
}

Status Lab::LoadData() {
  const auto start = Clock::now();
  MLC_ASSIGN_OR_RETURN(FashionMnist fm, LoadFashionMnist(kFashionMnistDir));
  MLC_ASSIGN_OR_RETURN(data_.splits, MakeSplits(fm, c_.sizes, c_.seed));
  MLC_ASSIGN_OR_RETURN(data_.ood, RenderGlyphs(c_.glyphs, DeriveSeed(c_.seed, "ood-glyphs")));
  ImageSet transformed = TransformImages(data_.splits.attacker_pool, c_.transformed,
                                         DeriveSeed(c_.seed, "ood-transformed"));
  for (int32_t& l : transformed.labels) l += kGlyphClasses;
  data_.ood.Append(transformed);
  data_.test_images = ImagesTensor(data_.splits.test);
  data_.test_labels = LabelsTensor(data_.splits.test);
  if (!o_.quiet)
    std::fprintf(
        stderr,
        "lab: data ready in %.1f s: victim_train %lld, victim_heldout %lld, defender %lld, "
        "attacker_pool %lld, shadow %lld, test %lld, OOD pool %lld\n",
        Since(start), static_cast<long long>(data_.splits.victim_train.count),
        static_cast<long long>(data_.splits.victim_heldout.count),
        static_cast<long long>(data_.splits.defender_nonmember.count),
        static_cast<long long>(data_.splits.attacker_pool.count),
        static_cast<long long>(data_.splits.shadow.count),
        static_cast<long long>(data_.splits.test.count), static_cast<long long>(data_.ood.count));
  return Status::Ok();
}

Result<Net> Lab::LoadVictim(const std::string& victim) const {
  Net net = MakeNet(c_.victims.at(victim).arch, 0);
  MLC_RETURN_IF_ERROR(LoadNet(net, EntryDir("victim/" + victim) + "/model.pt"));
  return net;
}

Result<std::unique_ptr<CapsuleOracle>> Lab::MakeOracle(const std::string& job,
                                                       const std::string& victim,
                                                       const std::string& policy) const {
  CapsuleSpec spec;
  spec.name = victim;
  MLC_ASSIGN_OR_RETURN(spec.model_onnx,
                       ReadFile(EntryDir("victim/" + victim) + "/model.onnx", 64 << 20));
  const json& p = c_.policies.at(policy);
  spec.policy_json = PolicyJson(p);
  if (PolicyHasMemGuard(p)) {
    MLC_ASSIGN_OR_RETURN(spec.membership_onnx,
                         ReadFile(EntryDir("defender/" + victim) + "/model.onnx", 64 << 20));
  }
  OracleOptions options;
  std::string dir = job;
  std::replace(dir.begin(), dir.end(), '/', '_');
  options.work_dir = scratch_ + "/" + dir;
  options.remove_work_dir = true;  // a PRADA journal can reach hundreds of MB
  return CapsuleOracle::Create(spec, options);
}

// ---- the jobs -----------------------------------------------------------------------------------

Result<json> Lab::TrainVictim(const VictimConfig& v, const std::string& dir) {
  Net net = MakeNet(v.arch, DeriveSeed(c_.seed, "victim-" + v.name));
  TrainOptions t = v.train;
  t.progress = !o_.quiet;
  torch::Tensor x = ImagesTensor(data_.splits.victim_train);
  torch::Tensor y = LabelsTensor(data_.splits.victim_train);
  MLC_RETURN_IF_ERROR(Train(net, x, y, t, "victim/" + v.name));
  MLC_RETURN_IF_ERROR(SaveNet(net, dir + "/model.pt"));
  MLC_ASSIGN_OR_RETURN(std::string onnx, ExportOnnx(net));
  MLC_RETURN_IF_ERROR(WriteFile(dir + "/model.onnx", onnx));
  int64_t parameters = 0;
  for (const auto& p : net->parameters()) parameters += p.numel();
  return json{{"arch", v.arch.Name()},
              {"parameters", parameters},
              {"train_accuracy", Accuracy(net, x, y)},
              {"test_accuracy", Accuracy(net, data_.test_images, data_.test_labels)},
              {"heldout_accuracy", Accuracy(net, ImagesTensor(data_.splits.victim_heldout),
                                            LabelsTensor(data_.splits.victim_heldout))},
              {"epochs", t.epochs}};
}

Result<json> Lab::TrainBackbone(const std::string& dir) {
  MLC_ASSIGN_OR_RETURN(ImageSet glyphs,
                       RenderGlyphs(c_.backbone_glyphs, DeriveSeed(c_.seed, "backbone-glyphs")));
  ArchSpec spec = CnnB();
  spec.classes = kGlyphClasses;
  Net net = MakeNet(spec, DeriveSeed(c_.seed, "backbone"));
  TrainOptions t;
  t.epochs = c_.backbone_epochs;
  t.seed = DeriveSeed(c_.seed, "backbone-order");
  t.progress = !o_.quiet;
  const int64_t train = glyphs.count * 9 / 10;
  ImageSet fit = glyphs.Slice(0, train), held = glyphs.Slice(train, glyphs.count - train);
  MLC_RETURN_IF_ERROR(Train(net, ImagesTensor(fit), LabelsTensor(fit), t, "backbone (glyphs)"));
  MLC_RETURN_IF_ERROR(SaveNet(net, dir + "/model.pt"));
  return json{{"arch", spec.Name()},
              {"glyphs", glyphs.count},
              {"heldout_accuracy", Accuracy(net, ImagesTensor(held), LabelsTensor(held))}};
}

Result<json> Lab::TrainDefender(const std::string& victim, const std::string& dir) {
  MLC_ASSIGN_OR_RETURN(Net net, LoadVictim(victim));
  MLC_ASSIGN_OR_RETURN(
      DefenderClassifier g,
      TrainDefenderClassifier(net, data_.splits, DeriveSeed(c_.seed, "defender-" + victim),
                              "defender/" + victim));
  MLC_ASSIGN_OR_RETURN(std::string onnx, ExportOnnx(g.net));
  MLC_RETURN_IF_ERROR(WriteFile(dir + "/model.onnx", onnx));
  return json{{"heldout_auc", g.heldout_auc}};
}

Result<json> Lab::Extraction(const std::string& policy, const AttackConfig& options,
                             const std::string& attack_name, const std::string& dir) {
  const std::string victim = c_.extraction_victim;
  const AttackKind attack = options.kind;
  const std::string job = fmt::format("extraction/{}/{}", policy, attack_name);
  MLC_ASSIGN_OR_RETURN(Net net, LoadVictim(victim));
  MLC_ASSIGN_OR_RETURN(auto oracle, MakeOracle(job, victim, policy));
  Net backbone{nullptr};
  if (attack == AttackKind::kFeatureFool) {
    ArchSpec spec = CnnB();
    spec.classes = kGlyphClasses;
    backbone = MakeNet(spec, 0);
    MLC_RETURN_IF_ERROR(LoadNet(backbone, EntryDir("backbone") + "/model.pt"));
  }
  AttackConfig a = options;
  // The same seed for one attack under every policy: the same first queries, the same snapshot
  // initialisation and order, so a difference between policies is the defense's, not sampling's.
  a.seed = DeriveSeed(c_.seed, std::string("extraction/") + AttackName(attack));
  AttackContext ctx;
  ctx.splits = &data_.splits;
  ctx.ood_pool = &data_.ood;
  ctx.ood_arms = data_.ood_arms;
  ctx.backbone = attack == AttackKind::kFeatureFool ? &backbone : nullptr;
  ctx.test_images = data_.test_images;
  ctx.test_labels = data_.test_labels;
  ctx.victim_test_labels = Predict(net, data_.test_images).argmax(1);
  ctx.oracle = oracle.get();
  ctx.work_dir = scratch_ + "/" + job;
  ctx.label = job;
  MLC_ASSIGN_OR_RETURN(std::vector<Checkpoint> points, RunExtraction(a, ctx));
  json out = json::array();
  for (const Checkpoint& p : points) {
    json j = {{"queries", p.queries},   {"accuracy", p.accuracy},
              {"fidelity", p.fidelity}, {"prada_alarm_at", p.prada_alarm_at},
              {"escrowed", p.escrowed}, {"escrow_dropped", p.escrow_dropped},
              {"seconds", p.seconds}};
    if (p.watermark_checked)
      j["watermark"] = {{"samples", p.watermark.samples},
                        {"matches", p.watermark.matches},
                        {"accuracy", p.watermark.accuracy},
                        {"log2_chance", p.watermark.log2_chance},
                        {"identified", p.watermark.identified}};
    out.push_back(j);
  }
  std::error_code ec;
  fs::remove_all(ctx.work_dir, ec);
  return json{
      {"policy", policy}, {"attack", attack_name}, {"victim", victim}, {"checkpoints", out}};
}

Result<json> Lab::Benign(const std::string& policy, const std::string& dir) {
  const std::string victim = c_.extraction_victim;
  const std::string job = "benign/" + policy;
  MLC_ASSIGN_OR_RETURN(Net net, LoadVictim(victim));
  const int64_t n = std::min(c_.benign_queries, data_.splits.test.count);
  const bool prada = PolicyHasPrada(c_.policies.at(policy));
  // Stream 0 measures utility; with PRADA, further streams (the same images in other orders,
  // each on a fresh capsule) count false alarms. Order k is the same for every policy, so the
  // streams differ only by the policy.
  const int streams = prada ? c_.benign_orders : 1;
  json alarms = json::array();
  json result;
  for (int k = 0; k < streams; ++k) {
    MLC_ASSIGN_OR_RETURN(auto oracle, MakeOracle(fmt::format("{}/{}", job, k), victim, policy));
    Rng rng(DeriveSeed(c_.seed, k == 0 ? std::string("benign") : fmt::format("benign-{}", k)));
    std::vector<int64_t> order = rng.Sample(data_.splits.test.count, n);
    ImageSet queries = data_.splits.test.Gather(order);
    std::vector<float> answers;
    MLC_RETURN_IF_ERROR(oracle->Query(queries.pixels, n, &answers));
    MLC_ASSIGN_OR_RETURN(OracleSync sync, oracle->Sync());
    alarms.push_back(sync.prada_alarm_at);
    if (k > 0) continue;
    const int classes = oracle->classes();
    torch::Tensor got = torch::from_blob(answers.data(), {n, classes}, torch::kFloat).clone();
    torch::Tensor raw = torch::softmax(Predict(net, ImagesTensor(queries)), 1);
    torch::Tensor labels = LabelsTensor(queries);
    const double accuracy = got.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
    const double raw_accuracy = raw.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
    const double l1 = (got - raw).abs().sum(1).mean().item<double>();
    const double agreement =
        got.argmax(1).eq(raw.argmax(1)).to(torch::kDouble).mean().item<double>();
    const double max_abs = oracle->label_only() ? -1 : (got - raw).abs().max().item<double>();
    result = json{{"policy", policy},
                  {"queries", n},
                  {"accuracy", accuracy},
                  {"undefended_accuracy", raw_accuracy},
                  {"mean_l1_change", l1},
                  {"top1_agreement", agreement},
                  {"max_abs_difference", max_abs},
                  {"prada", prada},
                  {"prada_alarm_at", sync.prada_alarm_at},
                  {"label_only", oracle->label_only()}};
  }
  result["prada_alarms"] = alarms;  // per stream: the query of the alarm, -1 when none
  return result;
}

Result<json> Lab::Shadows(const std::string& victim, const std::string& dir) {
  MiaConfig m = c_.mia;
  m.victim_arch = c_.victims.at(victim).arch;
  m.victim_train = c_.victims.at(victim).train;
  m.lira_shadows = c_.lira_shadows.count(victim) ? c_.lira_shadows.at(victim) : 16;
  m.seed = DeriveSeed(c_.seed, "shadows-" + victim);
  MLC_ASSIGN_OR_RETURN(ShadowSet set, TrainShadows(m, data_.splits, "shadows/" + victim));
  MLC_RETURN_IF_ERROR(SaveShadowSet(set, dir + "/shadows.pt"));
  return json{{"lira_shadows", m.lira_shadows}, {"mlleaks_shadows", m.mlleaks_shadows}};
}

json RocPoints(const RocCurve& roc) {
  // The curve on a log-spaced FPR grid (what the plot and the report need; the full curve has a
  // point per distinct score).
  json fpr = json::array(), tpr = json::array();
  for (int i = 0; i <= 160; ++i) {
    const double f = std::pow(10.0, -4.0 + 4.0 * i / 160.0);
    fpr.push_back(f);
    tpr.push_back(TprAtFpr(roc, f));
  }
  return json{{"fpr", fpr}, {"tpr", tpr}};
}

Result<json> Lab::Membership(const std::string& victim, const std::string& policy,
                             const std::string& dir) {
  const std::string job = fmt::format("membership/{}/{}", victim, policy);
  MLC_ASSIGN_OR_RETURN(ShadowSet shadows,
                       LoadShadowSet(EntryDir("shadows/" + victim) + "/shadows.pt"));
  MLC_ASSIGN_OR_RETURN(auto oracle, MakeOracle(job, victim, policy));
  MiaConfig m = c_.mia;
  m.victim_arch = c_.victims.at(victim).arch;
  m.victim_train = c_.victims.at(victim).train;
  m.seed = DeriveSeed(c_.seed, job);
  MLC_ASSIGN_OR_RETURN(std::vector<MiaResult> results,
                       RunMembershipAttacks(m, shadows, data_.splits, *oracle, job));
  json out = json::array();
  for (const MiaResult& r : results)
    out.push_back({{"attack", r.attack},
                   {"auc", r.auc},
                   {"balanced_accuracy_best", r.balanced_accuracy_best},
                   {"balanced_accuracy_calibrated", r.balanced_accuracy_calibrated},
                   {"tpr_at_1pct", r.tpr_at_1pct},
                   {"tpr_at_01pct", r.tpr_at_01pct},
                   {"members", r.members},
                   {"nonmembers", r.nonmembers},
                   {"queries", r.queries},
                   {"roc", RocPoints(r.roc)}});
  return json{{"victim", victim}, {"policy", policy}, {"attacks", out}};
}

Result<json> Lab::Kennen(const std::string& dir) {
  MLC_ASSIGN_OR_RETURN(std::vector<ProbeResult> rows,
                       RunKennenProbe(c_.probe, data_.splits, "kennen"));
  json out = json::array();
  for (const ProbeResult& r : rows)
    out.push_back({{"attribute", r.attribute},
                   {"policy", r.policy},
                   {"accuracy", r.accuracy},
                   {"ci_low", r.ci_low},
                   {"ci_high", r.ci_high},
                   {"majority", r.majority},
                   {"models", r.models}});
  return json{{"rows", out}};
}

// Scratch and temporary directories of runs that were killed (their process is gone): a capsule
// state with a PRADA journal can take hundreds of MB.
void RemoveAbandoned(const std::string& cache) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache, ec)) {
    const std::string name = entry.path().filename().string();
    const bool scratch = name.rfind("scratch-", 0) == 0, temporary = name.rfind("tmp-", 0) == 0;
    if (!scratch && !temporary) continue;
    const long pid = std::strtol(name.substr(name.rfind('-') + 1).c_str(), nullptr, 10);
    if (pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    fs::remove_all(entry.path(), ec);
  }
}

// ---- the scheduler ------------------------------------------------------------------------------

void Lab::Progress(const std::string& event, const Job& job) {
  if (o_.quiet) return;
  const int total = static_cast<int>(jobs_.size());
  constexpr int kWidth = 30;
  const int filled = total ? finished_ * kWidth / total : kWidth;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string running;
  for (const Job& j : jobs_)
    if (j.started && !j.done) running += (running.empty() ? "" : ", ") + j.name;
  std::fprintf(stderr, "lab [%s] %d/%d %s %s%s | %.0f s | running: %s\n", bar.c_str(), finished_,
               total, event.c_str(), job.name.c_str(),
               job.done
                   ? fmt::format(" ({}{:.0f} s)", job.cached ? "cached, " : "", job.seconds).c_str()
                   : "",
               Since(start_), running.empty() ? "-" : running.c_str());
}

Status Lab::RunJob(Job& job) {
  const std::string entry = cache_ + "/" + job.key;
  if (fs::exists(entry + "/result.json")) {
    Result<std::string> text = ReadFile(entry + "/result.json", 64 << 20);
    if (text.ok()) {
      try {
        job.result = json::parse(*text);
        job.cached = true;
        job.seconds = job.result.value("_seconds", 0.0);
        return Status::Ok();
      } catch (const std::exception&) {
        // A damaged entry: redo the job.
      }
    }
  }
  const std::string tmp = fmt::format("{}/tmp-{}-{}", cache_, job.key, getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return IoError("{}: {}", tmp, ec.message());
  const auto start = Clock::now();
  Result<json> result = [&]() -> Result<json> {
    try {
      return job.run(tmp);
    } catch (const std::exception& e) {
      return InternalError("libtorch: {}", e.what());
    }
  }();
  if (!result.ok()) return result.status().WithContext(job.name);
  job.result = std::move(result).value();
  job.seconds = Since(start);
  job.result["_seconds"] = job.seconds;
  job.result["_job"] = job.name;
  MLC_RETURN_IF_ERROR(WriteFile(tmp + "/result.json", job.result.dump(1)));
  fs::remove_all(entry, ec);
  fs::rename(tmp, entry, ec);
  if (ec) return IoError("{}: cannot commit the cache entry: {}", entry, ec.message());
  return Status::Ok();
}

Status Lab::Run() {
  cache_ = o_.cache_dir.empty() ? o_.out_dir + "/cache" : o_.cache_dir;
  std::error_code ec;
  fs::create_directories(cache_, ec);
  fs::create_directories(o_.out_dir, ec);
  if (ec) return IoError("{}: {}", o_.out_dir, ec.message());
  RemoveAbandoned(cache_);
  scratch_ = fmt::format("{}/scratch-{}", cache_, getpid());
  fs::create_directories(scratch_, ec);
  InitTorchForLab();
  MLC_RETURN_IF_ERROR(LoadData());
  Plan();
  const int workers = o_.jobs > 0 ? o_.jobs : c_.jobs;
  if (!o_.quiet)
    std::fprintf(stderr, "lab: %zu jobs on %d worker%s (cache %s)\n", jobs_.size(), workers,
                 workers == 1 ? "" : "s", cache_.c_str());
  Status failure = Status::Ok();
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      InitTorchForLab();
      at::set_num_threads(1);
      for (;;) {
        Job* next = nullptr;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          for (;;) {
            if (!failure.ok()) return;
            bool remaining = false;
            for (Job& j : jobs_) {
              if (j.started) continue;
              remaining = true;
              bool ready = true;
              for (const std::string& d : j.deps) ready = ready && jobs_[index_[d]].done;
              if (ready) {
                next = &j;
                break;
              }
            }
            if (next != nullptr || !remaining) break;
            changed_.wait(lock);
          }
          if (next == nullptr) return;
          next->started = true;
          Progress("start", *next);
        }
        Status s = RunJob(*next);
        std::lock_guard<std::mutex> lock(mutex_);
        if (!s.ok() && failure.ok()) failure = s;
        next->done = s.ok();
        if (s.ok()) {
          ++finished_;
          Progress("done ", *next);
        }
        changed_.notify_all();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  fs::remove_all(scratch_, ec);
  MLC_RETURN_IF_ERROR(failure);
  MLC_RETURN_IF_ERROR(WriteResults());
  return WriteReport(o_.out_dir);
}

Status Lab::WriteResults() const {
  json r;
  r["command"] = fmt::format("mlcapsule lab run {} --out {}", o_.config_path, o_.out_dir);
  r["config"] = c_.raw;
  r["environment"] = {{"libtorch", TORCH_VERSION},
                      {"torch_threads_per_job", 1},
                      {"jobs", o_.jobs > 0 ? o_.jobs : c_.jobs},
                      {"cpus", std::thread::hardware_concurrency()},
                      {"wall_seconds", Since(start_)}};
  r["splits"] = {{"victim_train", data_.splits.victim_train.count},
                 {"victim_heldout", data_.splits.victim_heldout.count},
                 {"defender_nonmember", data_.splits.defender_nonmember.count},
                 {"attacker_pool", data_.splits.attacker_pool.count},
                 {"shadow", data_.splits.shadow.count},
                 {"test", data_.splits.test.count},
                 {"ood_pool", data_.ood.count}};
  for (const Job& j : jobs_) {
    const std::string& n = j.name;
    const size_t slash = n.find('/');
    const std::string kind = n.substr(0, slash);
    const std::string rest = slash == std::string::npos ? "" : n.substr(slash + 1);
    if (kind == "victim")
      r["victims"][rest] = j.result;
    else if (kind == "backbone")
      r["backbone"] = j.result;
    else if (kind == "defender")
      r["defenders"][rest] = j.result;
    else if (kind == "extraction")
      r["extraction"].push_back(j.result);
    else if (kind == "benign")
      r["benign"].push_back(j.result);
    else if (kind == "membership")
      r["membership"].push_back(j.result);
    else if (kind == "kennen")
      r["kennen"] = j.result["rows"];
    r["timings"][n] = {{"seconds", j.seconds}, {"cached", j.cached}};
  }
  r["extraction_victim"] = c_.extraction_victim;
  r["policies"] = c_.policies;
  // The trained models, for use outside the lab (`mlcapsule pack`, the demo).
  std::error_code ec;
  fs::create_directories(o_.out_dir + "/models", ec);
  for (const Job& j : jobs_) {
    const size_t slash = j.name.find('/');
    const std::string kind = j.name.substr(0, slash);
    if (kind != "victim" && kind != "defender") continue;
    const std::string target =
        fmt::format("{}/models/{}-{}.onnx", o_.out_dir, kind, j.name.substr(slash + 1));
    fs::copy_file(cache_ + "/" + j.key + "/model.onnx", target,
                  fs::copy_options::overwrite_existing, ec);
    if (ec) return IoError("{}: {}", target, ec.message());
  }
  return WriteFile(o_.out_dir + "/results.json", r.dump(1));
}

}  // namespace

Status RunLab(const RunOptions& options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  MLC_ASSIGN_OR_RETURN(Config config, ParseConfig(options.config_path));
  Lab lab(std::move(config), options);
  return lab.Run();
}

}  // namespace mlcapsule::lab
