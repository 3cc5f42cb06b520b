// `mlcapsule bench MODEL --batch B --threads T --iters N --warmup W [--input-shape ...]`: times
// Session::Run on random inputs and prints one JSON line (engine, model, batch, threads,
// median_ms, p10_ms, p90_ms, throughput_per_s, achieved GFLOP/s, peak RSS).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/cli_common.h"
#include "engine/plan_stats.h"
#include "engine/session.h"

namespace mlcapsule::cli {
namespace {

struct BenchOptions {
  std::string model;
  int64_t batch = 1;
  int threads = 1;
  int iters = 20;
  int warmup = 3;
  std::string input_shape;
  bool reference = false;
  bool profile = false;
};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

void RunBench(const BenchOptions& o) {
  compiler::CompileOptions options;
  std::vector<int64_t> shape;
  if (!o.input_shape.empty()) {
    auto dims = ParseDims(o.input_shape);
    if (!dims.ok()) return SetExitCode(ReportError(dims.status()));
    shape = *dims;
    if (shape.empty()) return SetExitCode(ReportError(InvalidArgument("--input-shape is empty")));
    shape[0] = -1;  // keep the batch dynamic; --batch sets it
  }
  if (!shape.empty()) options.input_shapes[""] = shape;  // the first input
  auto plan = LoadModel(o.model, options);
  if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
  const double flops = engine::PlanFlops(*plan, o.batch);
  std::vector<engine::Tensor> inputs;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int32_t index : plan->inputs) {
    const engine::PlanTensor& t = plan->tensors[static_cast<size_t>(index)];
    engine::Dims dims = engine::ResolveShape(t.type.shape, o.batch);
    if (!engine::HasBatchDim(t.type.shape) && !dims.empty() && o.batch != 1 && dims[0] == 1)
      dims[0] = o.batch;
    engine::Tensor tensor = engine::Tensor::Make(t.type.dtype, dims);
    if (t.type.dtype == engine::DType::kFloat32)
      for (int64_t i = 0; i < tensor.NumElements(); ++i) tensor.Data<float>()[i] = normal(rng);
    inputs.push_back(std::move(tensor));
  }
  engine::SessionOptions session_options;
  session_options.threads = o.threads;
  session_options.fast_kernels = !o.reference;
  session_options.profile = o.profile;
  auto session = engine::Session::Create(std::move(plan).value(), session_options);
  if (!session.ok()) return SetExitCode(ReportError(session.status()));
  std::vector<engine::TensorView> views;
  for (engine::Tensor& t : inputs) views.push_back(t.View());
  std::vector<engine::Tensor> outputs;
  for (int i = 0; i < o.warmup; ++i) {
    Status s = (*session)->Run(views, &outputs);
    if (!s.ok()) return SetExitCode(ReportError(s));
  }
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(o.iters));
  for (int i = 0; i < o.iters; ++i) {
    auto start = std::chrono::steady_clock::now();
    Status s = (*session)->Run(views, &outputs);
    auto end = std::chrono::steady_clock::now();
    if (!s.ok()) return SetExitCode(ReportError(s));
    ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }
  double mean = 0;
  for (double v : ms) mean += v;
  mean /= static_cast<double>(ms.size());
  double median = Percentile(ms, 0.5);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::string model_name = std::filesystem::path(o.model).filename().string();
  if (model_name == "model.onnx")
    model_name = std::filesystem::path(o.model).parent_path().filename().string();
  nlohmann::json j = {
      {"engine", std::string("mlcapsule-") + kVersion},
      {"model", model_name},
      {"batch", o.batch},
      {"threads", o.threads},
      {"iters", o.iters},
      {"warmup", o.warmup},
      {"median_ms", median},
      {"p10_ms", Percentile(ms, 0.1)},
      {"p90_ms", Percentile(ms, 0.9)},
      {"mean_ms", mean},
      {"throughput_per_s", static_cast<double>(o.batch) * 1000.0 / median},
      {"gflop", flops / 1e9},
      {"gflops_per_s", flops / 1e9 / (median / 1000.0)},
      {"arena_mib", static_cast<double>((*session)->stats().arena_bytes) / (1 << 20)},
      {"peak_rss_mib", static_cast<double>(usage.ru_maxrss) / 1024.0},
      {"kernels", o.reference ? "reference" : "fast"},
  };
  std::printf("%s\n", j.dump().c_str());
  if (o.profile) {
    std::map<std::string, double> by_op;
    double total = 0;
    for (const auto& p : (*session)->Profile()) {
      by_op[p.op] += p.total_ms / std::max<int64_t>(p.runs, 1);
      total += p.total_ms / std::max<int64_t>(p.runs, 1);
    }
    std::vector<std::pair<double, std::string>> rows;
    for (auto& [op, ms] : by_op) rows.emplace_back(ms, op);
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "per-op time per run (profiled run, %.3f ms total):\n", total);
    for (auto& [ms, op] : rows)
      std::fprintf(stderr, "  %-24s %9.3f ms  %5.1f%%\n", op.c_str(), ms, 100.0 * ms / total);
  }
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  static BenchOptions options;
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure inference latency of a model (.onnx or .plan) on random inputs");
  cmd->add_option("MODEL", options.model, "Model file (.onnx or .plan)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--batch", options.batch, "Batch size")
      ->check(CLI::Range(int64_t{1}, engine::kMaxBatch));
  cmd->add_option("--threads", options.threads, "Intra-op threads")->check(CLI::Range(1, 256));
  cmd->add_option("--iters", options.iters, "Timed iterations")->check(CLI::Range(1, 1000000));
  cmd->add_option("--warmup", options.warmup, "Untimed warm-up iterations")
      ->check(CLI::Range(0, 1000000));
  cmd->add_option(
      "--input-shape", options.input_shape,
      "Shape of the first input, e.g. 1,3,224,224 (dimension 0 is replaced by --batch)");
  cmd->add_flag("--profile", options.profile, "Also print the time per operator type to stderr");
  cmd->add_flag("--reference", options.reference,
                "Time the plain reference kernels instead of the fast ones");
  cmd->footer(
      "Prints one JSON line: engine, model, batch, threads, median_ms, p10_ms, p90_ms, "
      "throughput_per_s, ...");
  cmd->callback([] { RunBench(options); });
}

}  // namespace mlcapsule::cli
