// `mlcapsule watermark verify`: the provider's check of a suspect model for its DAWN watermark
// (defense/watermark.h, docs/defenses.md). It reads usage reports (raw signed bytes, as `usage
// --out` and `admin reports` write them), verifies each report's signature, opens the escrow
// records sealed to the provider's escrow key, de-duplicates the samples, runs the suspect model
// on each with our engine and counts how often its top-1 equals the watermark label the capsule
// returned. The verdict compares the chance that an independent model agrees that often with
// --max-chance.
//
// Trusts: the escrow key file (provider's own, mode 0600). Report files, escrow records and the
// suspect model are untrusted input: bounded, validated, and a report that fails to verify or a
// record that does not open is skipped and counted, never fatal.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/bytes.h"
#include "base/file_util.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "cli/cli_common.h"
#include "defense/watermark.h"
#include "engine/session.h"

namespace mlcapsule::cli {
namespace {

using nlohmann::json;

constexpr int64_t kMaxVerifyBatch = 32;

struct VerifyOptions {
  std::string escrow_key;
  std::string model;
  std::vector<std::string> reports;  // files or directories
  std::vector<std::string> input_shapes;
  std::string max_chance = "2^-64";
  int threads = 1;
  bool json_output = false;
};

// "2^-64" or a probability like 1e-20; returns its log2, in [-inf, 0].
Result<double> ParseMaxChance(const std::string& text) {
  const auto bad = [&] {
    return InvalidArgument("--max-chance '{}' is not a probability in (0, 1] like 1e-20 or 2^-64",
                           text);
  };
  char* end = nullptr;
  if (text.rfind("2^", 0) == 0) {
    const double exponent = std::strtod(text.c_str() + 2, &end);
    if (text.size() == 2 || *end != '\0' || !std::isfinite(exponent) || exponent > 0) return bad();
    return exponent;
  }
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value > 0) || value > 1) return bad();
  return std::log2(value);
}

// The report files named on the command line: files as given, directories' regular files (not
// recursive), in name order.
Result<std::vector<std::string>> ReportFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::vector<std::string> inside;
      for (const auto& entry : std::filesystem::directory_iterator(path, ec))
        if (entry.is_regular_file()) inside.push_back(entry.path().string());
      if (ec) return IoError("cannot list {}: {}", path, ec.message());
      std::sort(inside.begin(), inside.end());
      files.insert(files.end(), inside.begin(), inside.end());
    } else if (std::filesystem::exists(path, ec)) {
      files.push_back(path);
    } else {
      return NotFound("no report file or directory '{}'", path);
    }
  }
  return files;
}

struct Collected {
  uint64_t reports = 0;
  uint64_t reports_invalid = 0;
  uint64_t records = 0;
  uint64_t records_other_key = 0;
  uint64_t records_malformed = 0;
  uint64_t duplicates = 0;
  uint64_t conflicting = 0;  // a repeated sample whose label or class count differed
  std::vector<defense::EscrowRecord> samples;  // distinct, in the order first seen
  std::set<capsule::CapsuleId> capsules;
};

void Warn(const char* format, const std::string& a, const std::string& b) {
  std::fprintf(stderr, format, a.c_str(), b.c_str());
}

Result<Collected> CollectSamples(const std::vector<std::string>& files,
                                 const capsule::BoxKeyPair& escrow) {
  Collected c;
  std::map<capsule::Digest, size_t> seen;  // sample digest -> index in c.samples
  std::vector<uint8_t> sample;
  for (const std::string& file : files) {
    Result<std::string> bytes = ReadFile(file, capsule::kMaxUsageReportBytes);
    Result<capsule::UsageReport> report = bytes.ok()
                                              ? capsule::ParseAndVerifyUsageReport(AsBytes(*bytes))
                                              : Result<capsule::UsageReport>(bytes.status());
    if (!report.ok()) {
      ++c.reports_invalid;
      Warn("mlcapsule: warning: skipping %s: %s\n", file, report.status().message());
      continue;
    }
    ++c.reports;
    for (const std::vector<uint8_t>& sealed : report->escrow) {
      ++c.records;
      Result<defense::EscrowRecord> record = defense::OpenEscrowRecord(escrow, sealed);
      if (!record.ok()) {
        if (record.status().code() == StatusCode::kPermissionDenied) {
          ++c.records_other_key;
        } else {
          ++c.records_malformed;
          Warn("mlcapsule: warning: %s: an escrow record is malformed: %s\n", file,
               record.status().message());
        }
        continue;
      }
      defense::EscrowSampleBytes(*record, &sample);
      const capsule::Digest digest = capsule::Hash({sample});
      auto [it, inserted] = seen.emplace(digest, c.samples.size());
      if (!inserted) {
        ++c.duplicates;
        const defense::EscrowRecord& first = c.samples[it->second];
        c.conflicting += first.label != record->label || first.classes != record->classes;
        continue;
      }
      c.capsules.insert(record->capsule_id);
      c.samples.push_back(std::move(record).value());
    }
  }
  return c;
}

// Index of the largest score; ties go to the lower index and NaN ranks below everything (as the
// output policy's label mode does).
uint32_t ArgMax(const float* scores, uint32_t classes) {
  uint32_t best = 0;
  for (uint32_t c = 1; c < classes; ++c)
    if (std::isnan(scores[best]) || (!std::isnan(scores[c]) && scores[c] > scores[best])) best = c;
  return best;
}

// Whether samples can be stacked into one batch: every plan input is batched along dim 0 alone.
bool PlanTakesBatches(const engine::Plan& plan) {
  for (int32_t index : plan.inputs) {
    const engine::Shape& shape = plan.tensors[static_cast<size_t>(index)].type.shape;
    if (shape.empty() || !(shape[0] == engine::Dim{1, true})) return false;
    for (size_t d = 1; d < shape.size(); ++d)
      if (shape[d].batch) return false;
  }
  return true;
}

bool SameShapes(const defense::EscrowRecord& a, const defense::EscrowRecord& b) {
  if (a.inputs.size() != b.inputs.size()) return false;
  for (size_t i = 0; i < a.inputs.size(); ++i)
    if (a.inputs[i].dtype != b.inputs[i].dtype || a.inputs[i].dims != b.inputs[i].dims)
      return false;
  return true;
}

// Runs the suspect on every sample; returns how many top-1 answers equal the watermark label.
Result<uint64_t> CountMatches(engine::Session& session, const std::vector<std::string>& input_names,
                              const std::vector<defense::EscrowRecord>& samples, uint32_t classes,
                              bool progress) {
  const engine::Plan& plan = session.plan();
  const int64_t max_batch = PlanTakesBatches(plan) ? kMaxVerifyBatch : 1;
  uint64_t matches = 0;
  std::vector<engine::Tensor> stacked(plan.inputs.size());
  std::vector<engine::TensorView> views(plan.inputs.size());
  std::vector<engine::Tensor> outputs;
  auto last_progress = std::chrono::steady_clock::now();
  for (size_t start = 0; start < samples.size();) {
    size_t end = start + 1;
    while (end < samples.size() && static_cast<int64_t>(end - start) < max_batch &&
           SameShapes(samples[start], samples[end]))
      ++end;
    const int64_t batch = static_cast<int64_t>(end - start);
    const defense::EscrowRecord& first = samples[start];
    if (first.inputs.size() != plan.inputs.size())
      return InvalidArgument(
          "the suspect model takes {} inputs, the escrowed samples have {}: it is not a model of "
          "the same task",
          plan.inputs.size(), first.inputs.size());
    for (size_t i = 0; i < first.inputs.size(); ++i) {
      const engine::TensorType& type = plan.tensors[static_cast<size_t>(plan.inputs[i])].type;
      if (type.dtype != first.inputs[i].dtype)
        return InvalidArgument(
            "the suspect model's input '{}' is {}, the escrowed samples' input "
            "{} is {}",
            input_names[i], engine::DTypeName(type.dtype), i,
            engine::DTypeName(first.inputs[i].dtype));
      engine::Tensor& t = stacked[i];
      t.dtype = first.inputs[i].dtype;
      t.dims = first.inputs[i].dims;
      t.dims[0] = batch;
      t.bytes.clear();
      for (size_t s = start; s < end; ++s)
        t.bytes.insert(t.bytes.end(), samples[s].inputs[i].bytes.begin(),
                       samples[s].inputs[i].bytes.end());
      views[i] = t.View();
    }
    Status ran = session.Run(views, &outputs);
    if (!ran.ok())
      return ran.WithContext(
          fmt::format("running the suspect model on an escrowed sample (input shapes {})",
                      engine::DimsToString(first.inputs[0].dims)));
    const engine::Tensor& scores = outputs.at(0);
    if (scores.dtype != engine::DType::kFloat32 || scores.dims.empty() || scores.dims[0] != batch)
      return InvalidArgument(
          "the suspect model's first output is {}{}: expected float32 scores [N, C] for N "
          "samples",
          engine::DTypeName(scores.dtype), engine::DimsToString(scores.dims));
    const int64_t per_row = scores.NumElements() / batch;
    if (per_row != static_cast<int64_t>(classes))
      return InvalidArgument(
          "the suspect model's first output has {} classes per sample ({}), the escrow records "
          "are for {} classes: it does not classify the same labels",
          per_row, engine::DimsToString(scores.dims), classes);
    for (int64_t row = 0; row < batch; ++row) {
      const uint32_t top = ArgMax(scores.Data<float>() + row * per_row, classes);
      matches += top == samples[start + static_cast<size_t>(row)].label;
    }
    start = end;
    const auto now = std::chrono::steady_clock::now();
    if (progress && now - last_progress > std::chrono::seconds(2)) {
      std::fprintf(stderr, "watermark verify: %zu of %zu samples run\n", end, samples.size());
      last_progress = now;
    }
  }
  return matches;
}

std::string ChanceText(double log2_chance) {
  if (log2_chance == 0) return "1";
  const double value = std::exp2(log2_chance);
  if (value > 0) return fmt::format("{:.3g}", value);
  return fmt::format("2^{:.1f}", log2_chance);
}

void RunVerify(const VerifyOptions& o) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return SetExitCode(ReportError(s));
  Result<double> max_log2 = ParseMaxChance(o.max_chance);
  if (!max_log2.ok()) {
    ReportError(max_log2.status());
    return SetExitCode(kExitUsage);
  }
  Result<capsule::BoxKeyPair> escrow = capsule::ReadEscrowSecretKeyFile(o.escrow_key);
  if (!escrow.ok()) return SetExitCode(ReportError(escrow.status()));
  Result<std::vector<std::string>> files = ReportFiles(o.reports);
  if (!files.ok()) return SetExitCode(ReportError(files.status()));
  Result<Collected> collected = CollectSamples(*files, *escrow);
  if (!collected.ok()) return SetExitCode(ReportError(collected.status()));
  Collected& c = *collected;

  uint32_t classes = 0;
  for (const defense::EscrowRecord& record : c.samples) {
    if (classes != 0 && record.classes != classes)
      return SetExitCode(ReportError(InvalidArgument(
          "the escrow records disagree on the class count ({} and {}): verify the reports of one "
          "model at a time",
          classes, record.classes)));
    classes = record.classes;
  }

  uint64_t matches = 0;
  if (!c.samples.empty()) {
    compiler::CompileOptions options;
    for (const std::string& spec : o.input_shapes) {
      const size_t eq = spec.find('=');
      Result<std::vector<int64_t>> dims =
          ParseDims(eq == std::string::npos ? spec : spec.substr(eq + 1));
      if (!dims.ok()) return SetExitCode(ReportError(dims.status()));
      options.input_shapes[eq == std::string::npos ? "" : spec.substr(0, eq)] = *dims;
    }
    Result<engine::Plan> plan = LoadModel(o.model, options);
    if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
    std::vector<std::string> input_names;
    for (int32_t index : plan->inputs)
      input_names.push_back(plan->tensors[static_cast<size_t>(index)].name);
    engine::SessionOptions session_options;
    session_options.threads = o.threads;
    Result<std::unique_ptr<engine::Session>> session =
        engine::Session::Create(std::move(plan).value(), session_options);
    if (!session.ok()) return SetExitCode(ReportError(session.status()));
    Result<uint64_t> counted = CountMatches(**session, input_names, c.samples, classes,
                                            /*progress=*/c.samples.size() > 1000);
    if (!counted.ok()) return SetExitCode(ReportError(counted.status().WithContext(o.model)));
    matches = *counted;
  }

  const uint64_t n = c.samples.size();
  const double log2_chance = defense::Log2ChanceProbability(n, matches, classes);
  const bool identified = n > 0 && log2_chance <= *max_log2;
  const double accuracy = n > 0 ? static_cast<double>(matches) / static_cast<double>(n) : 0.0;
  json capsules = json::array();
  for (const capsule::CapsuleId& id : c.capsules) capsules.push_back(capsule::CapsuleIdHex(id));
  if (o.json_output) {
    json j = {{"model", o.model},
              {"reports", c.reports},
              {"reports_invalid", c.reports_invalid},
              {"escrow_records", c.records},
              {"records_other_key", c.records_other_key},
              {"records_malformed", c.records_malformed},
              {"capsules", capsules},
              {"classes", classes},
              {"samples", n},
              {"duplicates", c.duplicates},
              {"conflicting_duplicates", c.conflicting},
              {"matches", matches},
              {"watermark_accuracy", accuracy},
              {"log2_chance", log2_chance},
              {"chance", std::exp2(log2_chance)},
              {"max_chance_log2", *max_log2},
              {"identified", identified},
              {"verdict", identified ? "identified" : "not identified"}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("reports: %llu verified, %llu skipped\n",
                static_cast<unsigned long long>(c.reports),
                static_cast<unsigned long long>(c.reports_invalid));
    std::printf("escrow records: %llu (%llu sealed to another key, %llu malformed), capsules: %s\n",
                static_cast<unsigned long long>(c.records),
                static_cast<unsigned long long>(c.records_other_key),
                static_cast<unsigned long long>(c.records_malformed), capsules.dump().c_str());
    std::printf("samples: %llu distinct (%llu duplicates), %u classes\n",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(c.duplicates),
                classes);
    std::printf("matches: %llu of %llu (watermark accuracy %.1f%%)\n",
                static_cast<unsigned long long>(matches), static_cast<unsigned long long>(n),
                100.0 * accuracy);
    std::printf("chance for an independent model: log2 P = %.2f (P = %s)\n", log2_chance,
                ChanceText(log2_chance).c_str());
    std::printf("verdict: %s (threshold 2^%.1f)\n", identified ? "identified" : "not identified",
                *max_log2);
  }
  if (c.conflicting > 0)
    std::fprintf(stderr,
                 "mlcapsule: warning: %llu repeated samples came with another label or class "
                 "count; the first was kept\n",
                 static_cast<unsigned long long>(c.conflicting));
  SetExitCode(identified ? kExitOk : kExitFailure);
}

}  // namespace

void AddWatermarkCommand(CLI::App& app) {
  CLI::App* watermark = app.add_subcommand(
      "watermark", "Provider: check a suspect model for the DAWN watermark of your capsules");
  watermark->require_subcommand(1);
  static VerifyOptions o;
  CLI::App* verify = watermark->add_subcommand(
      "verify",
      "Run a suspect model on the watermarked samples escrowed in usage reports and say whether "
      "it was trained on the capsule's answers (exit 0 identified, 1 not identified)");
  verify
      ->add_option("REPORT", o.reports,
                   "Usage report files (from `usage --out` or `admin reports`) or directories "
                   "of them")
      ->required();
  verify->add_option("--escrow-key", o.escrow_key, "Escrow secret key file (keygen --escrow)")
      ->required()
      ->check(CLI::ExistingFile);
  verify->add_option("--model", o.model, "The suspect model (.onnx or .plan)")
      ->required()
      ->check(CLI::ExistingFile);
  verify->add_option("--input-shape", o.input_shapes, "Input shape override, as for compile");
  verify
      ->add_option("--max-chance", o.max_chance,
                   "Identify when an independent model would agree this often with at most "
                   "this probability (a number like 1e-20, or 2^-64)")
      ->capture_default_str();
  verify->add_option("-t,--threads", o.threads, "Inference threads")->check(CLI::Range(1, 256));
  verify->add_flag("--json", o.json_output, "Print one JSON object");
  verify->callback([] { RunVerify(o); });
}

}  // namespace mlcapsule::cli
