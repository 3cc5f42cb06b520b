// `mlcapsule conformance DIR...`: runs ONNX test-data directories (model.onnx plus
// test_data_set_*/input_*.pb and output_*.pb; a directory of such directories also works).
// Prints one line per failure and per skip with the reason, then
// "conformance: N passed, M failed, K skipped" (with --json, one JSON object instead). Exit status
// 0 only when nothing failed.
// Skipped means the model uses an operator or element type the engine does not support.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cli/cli_common.h"
#include "compiler/onnx_import.h"
#include "engine/session.h"

namespace mlcapsule::cli {
namespace {

namespace fs = std::filesystem;

enum class Outcome { kPass, kFail, kSkip };

struct TestResult {
  Outcome outcome = Outcome::kPass;
  std::string reason;
};

struct ConformanceOptions {
  std::vector<std::string> dirs;
  double rtol = 1e-3;
  double atol = 1e-5;
  double range_tol =
      0.0;  // > 0: pass when max |diff| <= range_tol * (max - min of the expected output)
  int threads = 1;
  bool reference = false;
  bool verbose = false;
  bool json = false;  // one JSON object on stdout instead of the lines
};

std::vector<fs::path> SortedFiles(const fs::path& dir, const std::string& prefix) {
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !EndsWith(name, ".pb")) continue;
    found.emplace_back(std::atoi(name.c_str() + prefix.size()), entry.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [i, p] : found) out.push_back(p);
  return out;
}

TestResult Classify(const Status& s, const std::string& stage) {
  TestResult r;
  r.outcome = s.code() == StatusCode::kUnsupported ? Outcome::kSkip : Outcome::kFail;
  r.reason = stage + ": " + s.message();
  return r;
}

std::string Compare(const engine::Tensor& got, const engine::Tensor& want, double rtol, double atol,
                    double range_tol) {
  if (got.dtype != want.dtype)
    return fmt::format("element type {} differs from expected {}", engine::DTypeName(got.dtype),
                       engine::DTypeName(want.dtype));
  if (got.dims != want.dims)
    return fmt::format("shape {} differs from expected {}", engine::DimsToString(got.dims),
                       engine::DimsToString(want.dims));
  int64_t bad = 0, first = -1;
  double worst = 0.0;
  if (range_tol > 0 && want.dtype == engine::DType::kFloat32 && want.NumElements() > 0) {
    // Tolerance relative to the output's range (used for whole networks).
    float lo = want.Data<float>()[0], hi = lo;
    for (int64_t i = 0; i < want.NumElements(); ++i) {
      lo = std::min(lo, want.Data<float>()[i]);
      hi = std::max(hi, want.Data<float>()[i]);
    }
    atol = range_tol * static_cast<double>(hi - lo);
    rtol = 0.0;
  }
  for (int64_t i = 0; i < got.NumElements(); ++i) {
    if (got.dtype == engine::DType::kInt64) {  // integers must match exactly
      if (got.Data<int64_t>()[i] != want.Data<int64_t>()[i]) {
        if (first < 0) first = i;
        ++bad;
      }
      continue;
    }
    const double g = got.Data<float>()[i], w = want.Data<float>()[i];
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && g == w) continue;
    double diff = std::fabs(g - w);
    if (!(diff <= atol + rtol * std::fabs(w))) {
      if (first < 0) first = i;
      ++bad;
      worst = std::max(worst, std::isnan(diff) ? INFINITY : diff);
    }
  }
  if (bad == 0) return "";
  double g = got.dtype == engine::DType::kFloat32 ? got.Data<float>()[first]
                                                  : static_cast<double>(got.Data<int64_t>()[first]);
  double w = want.dtype == engine::DType::kFloat32
                 ? want.Data<float>()[first]
                 : static_cast<double>(want.Data<int64_t>()[first]);
  return fmt::format(
      "{} of {} values differ (first at {}: got {} expected {}; max abs diff {:.3g})", bad,
      got.NumElements(), first, g, w, worst);
}

TestResult RunOne(const fs::path& dir, const ConformanceOptions& o) {
  auto model_bytes = ReadFile((dir / "model.onnx").string(), compiler::kMaxModelBytes);
  if (!model_bytes.ok()) return Classify(model_bytes.status(), "read");
  std::vector<fs::path> sets;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0)
      sets.push_back(entry.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) return TestResult{Outcome::kFail, "no test_data_set_* directory"};
  auto names = compiler::OnnxInputNames(*model_bytes);
  if (!names.ok()) return Classify(names.status(), "compile");
  for (const fs::path& set : sets) {
    std::vector<engine::Tensor> inputs, expected;
    std::vector<std::string> input_names;
    for (const fs::path& p : SortedFiles(set, "input_")) {
      auto bytes = ReadFile(p.string(), kMaxTensorFileBytes);
      if (!bytes.ok()) return Classify(bytes.status(), "read");
      std::string name;
      auto t = compiler::ParseTensorProto(*bytes, p.filename().string(), &name);
      if (!t.ok()) return Classify(t.status(), "input " + p.filename().string());
      inputs.push_back(std::move(t).value());
      input_names.push_back(name);
    }
    for (const fs::path& p : SortedFiles(set, "output_")) {
      auto bytes = ReadFile(p.string(), kMaxTensorFileBytes);
      if (!bytes.ok()) return Classify(bytes.status(), "read");
      auto t = compiler::ParseTensorProto(*bytes, p.filename().string());
      if (!t.ok()) return Classify(t.status(), "expected output " + p.filename().string());
      expected.push_back(std::move(t).value());
    }
    if (inputs.size() > names->size())
      return TestResult{Outcome::kFail, fmt::format("{} input files for {} graph inputs",
                                                    inputs.size(), names->size())};
    // Input files may omit trailing optional inputs; map files to graph inputs by position
    // (their own names when present).
    compiler::CompileOptions fixed;
    std::map<std::string, size_t> position;
    for (size_t i = 0; i < inputs.size(); ++i) {
      std::string name = input_names[i].empty() ? (*names)[i] : input_names[i];
      fixed.input_shapes[name] = inputs[i].dims;
      fixed.bound_inputs[name] = inputs[i];  // used only where the input is a shape parameter
      position[name] = i;
    }
    // First the model as declared (dynamic batch), then specialised to the data's shapes.
    compiler::CompileOptions dynamic;
    dynamic.bound_inputs = fixed.bound_inputs;
    Result<engine::Plan> plan = compiler::CompileOnnx(*model_bytes, dynamic);
    bool fits = plan.ok();
    std::vector<engine::TensorView> views;
    auto order_views = [&](const engine::Plan& p) -> Status {
      views.clear();
      for (int32_t index : p.inputs) {
        auto it = position.find(p.tensors[static_cast<size_t>(index)].name);
        if (it == position.end())
          return InvalidArgument("graph input '{}' has no input file",
                                 p.tensors[static_cast<size_t>(index)].name);
        views.push_back(inputs[it->second].View());
      }
      return engine::InferBatchSize(p, views).status();
    };
    if (fits) fits = order_views(*plan).ok();
    if (!fits) {
      plan = compiler::CompileOnnx(*model_bytes, fixed);
      if (!plan.ok()) return Classify(plan.status(), "compile");
      Status s = order_views(*plan);
      if (!s.ok()) return Classify(s, "inputs");
    }
    engine::SessionOptions session_options;
    session_options.threads = o.threads;
    session_options.fast_kernels = !o.reference;
    auto session = engine::Session::Create(std::move(plan).value(), session_options);
    if (!session.ok()) return Classify(session.status(), "load");
    std::vector<engine::Tensor> outputs;
    Status s = (*session)->Run(views, &outputs);
    if (!s.ok()) return Classify(s, "run");
    if (outputs.size() < expected.size())
      return TestResult{Outcome::kFail,
                        fmt::format("{} outputs, {} expected", outputs.size(), expected.size())};
    for (size_t i = 0; i < expected.size(); ++i) {
      std::string diff = Compare(outputs[i], expected[i], o.rtol, o.atol, o.range_tol);
      if (!diff.empty())
        return TestResult{Outcome::kFail,
                          fmt::format("{} output {}: {}", set.filename().string(), i, diff)};
    }
  }
  return TestResult{};
}

bool IsTestDir(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "model.onnx", ec);
}

void RunConformance(const ConformanceOptions& o) {
  std::vector<fs::path> tests;
  for (const std::string& d : o.dirs) {
    fs::path dir(d);
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      std::fprintf(stderr, "mlcapsule: error: '%s' is not a directory\n", d.c_str());
      return SetExitCode(kExitUsage);
    }
    if (IsTestDir(dir)) {
      tests.push_back(dir);
      continue;
    }
    std::vector<fs::path> children;
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.is_directory() && IsTestDir(entry.path())) children.push_back(entry.path());
    std::sort(children.begin(), children.end());
    if (children.empty()) {
      std::fprintf(stderr, "mlcapsule: error: '%s' holds no model.onnx test directories\n",
                   d.c_str());
      return SetExitCode(kExitUsage);
    }
    tests.insert(tests.end(), children.begin(), children.end());
  }
  int passed = 0, failed = 0, skipped = 0;
  nlohmann::json failures = nlohmann::json::array(), skips = nlohmann::json::array(),
                 passes = nlohmann::json::array();
  auto start = std::chrono::steady_clock::now();
  for (const fs::path& t : tests) {
    TestResult r = RunOne(t, o);
    std::string name = t.filename().string();
    switch (r.outcome) {
      case Outcome::kPass:
        ++passed;
        if (o.json) {
          if (o.verbose) passes.push_back(name);
          break;
        }
        if (o.verbose) std::printf("PASS %s\n", name.c_str());
        break;
      case Outcome::kFail:
        ++failed;
        if (o.json) {
          failures.push_back({{"name", name}, {"reason", r.reason}});
          break;
        }
        std::printf("FAIL %s: %s\n", name.c_str(), r.reason.c_str());
        break;
      case Outcome::kSkip:
        ++skipped;
        if (o.json) {
          skips.push_back({{"name", name}, {"reason", r.reason}});
          break;
        }
        std::printf("SKIP %s: %s\n", name.c_str(), r.reason.c_str());
        break;
    }
    std::fflush(stdout);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "ran %zu tests in %.1f s\n", tests.size(), seconds);
  if (o.json) {
    nlohmann::json j = {{"tests", tests.size()}, {"passed", passed},   {"failed", failed},
                        {"skipped", skipped},    {"seconds", seconds}, {"failures", failures},
                        {"skips", skips}};
    if (o.verbose) j["passes"] = passes;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("conformance: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  }
  SetExitCode(failed == 0 ? kExitOk : kExitFailure);
}

}  // namespace

void AddConformanceCommand(CLI::App& app) {
  static ConformanceOptions options;
  CLI::App* cmd = app.add_subcommand("conformance",
                                     "Run ONNX test-data directories (model.onnx + "
                                     "test_data_set_*/{input,output}_*.pb) and compare outputs");
  cmd->add_option("DIR", options.dirs, "Test directories, or directories of test directories")
      ->required();
  cmd->add_option("--rtol", options.rtol, "Relative tolerance (default 1e-3)");
  cmd->add_option("--atol", options.atol, "Absolute tolerance (default 1e-5)");
  cmd->add_option(
      "--range-tol", options.range_tol,
      "Instead of rtol/atol: max |diff| <= RANGE_TOL * (max - min) of each expected output "
      "(for whole networks, e.g. 1e-4)");
  cmd->add_option("-t,--threads", options.threads, "Intra-op threads")->check(CLI::Range(1, 256));
  cmd->add_flag("--reference", options.reference, "Use the plain reference kernels only");
  cmd->add_flag("-v,--verbose", options.verbose, "Also print a line for every passing test");
  cmd->add_flag("--json", options.json,
                "Print one JSON object (counts, failures and skips with reasons) instead of the "
                "lines; the exit status is the same");
  cmd->footer(
      "Ends with 'conformance: N passed, M failed, K skipped'; exit status 0 only when M is 0.");
  cmd->callback([] { RunConformance(options); });
}

}  // namespace mlcapsule::cli
