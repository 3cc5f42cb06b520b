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

#include "base/bytes.h"
#include "base/file_util.h"
#include "base/sensitive_memory.h"
#include "capsule/crypto.h"
#include "cli/cli_common.h"
#include "engine/plan_stats.h"
#include "engine/session.h"
#include "host/client.h"

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
  // Capsules only.
  std::string state, lease, baseline, core_binary;
  TeeArgs tee;
  int distinct = 1;
};

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(pos);
  size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::string ModelName(const std::string& path) {
  std::string name = std::filesystem::path(path).filename().string();
  if (name == "model.onnx") name = std::filesystem::path(path).parent_path().filename().string();
  return name;
}

engine::Tensor RandomTensor(engine::DType dtype, const engine::Dims& dims, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  engine::Tensor tensor = engine::Tensor::Make(dtype, dims);
  if (dtype == engine::DType::kFloat32)
    for (int64_t i = 0; i < tensor.NumElements(); ++i) tensor.Data<float>()[i] = normal(rng);
  return tensor;
}

void RunCapsuleBench(const BenchOptions& o);

void RunBench(const BenchOptions& o) {
  if (EndsWith(o.model, ".capsule")) return RunCapsuleBench(o);
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
  const auto load_start = std::chrono::steady_clock::now();
  auto plan = LoadModel(o.model, options);
  if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
  double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count();
  const double flops = engine::PlanFlops(*plan, o.batch);
  std::vector<engine::Tensor> inputs;
  std::mt19937 rng(42);
  for (int32_t index : plan->inputs) {
    const engine::PlanTensor& t = plan->tensors[static_cast<size_t>(index)];
    engine::Dims dims = engine::ResolveShape(t.type.shape, o.batch);
    if (!engine::HasBatchDim(t.type.shape) && !dims.empty() && o.batch != 1 && dims[0] == 1)
      dims[0] = o.batch;
    inputs.push_back(RandomTensor(t.type.dtype, dims, rng));
  }
  engine::SessionOptions session_options;
  session_options.threads = o.threads;
  session_options.fast_kernels = !o.reference;
  session_options.profile = o.profile;
  // Load time = read + parse (or compile) + validate + kernel set-up (weights reordered).
  const auto create_start = std::chrono::steady_clock::now();
  auto session = engine::Session::Create(std::move(plan).value(), session_options);
  if (!session.ok()) return SetExitCode(ReportError(session.status()));
  load_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - create_start)
          .count();
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
  const std::string model_name = ModelName(o.model);
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
      {"load_ms", load_ms},
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

// The guarded path: every timed call goes host -> socket -> mlcapsule-core (seccomp, memfd_secret)
// -> quota, counter, chain, engine, output policy -> back. With --baseline, the plain engine runs
// the same model in this process on the same inputs, alternating with the guarded path in blocks.
void RunCapsuleBench(const BenchOptions& o) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return SetExitCode(ReportError(s));
  host::ClientOptions options;
  options.state_dir = o.state.empty() ? o.model + ".state" : o.state;
  options.threads = o.threads;
  options.core_binary = o.core_binary;
  options.launcher = CoreLauncher(o.tee);
  if (auto args = CorePlatformArgs(o.tee); args.ok()) {
    options.platform_args = std::move(args).value();
  } else {
    return SetExitCode(ReportError(args.status()));
  }
  auto open_start = std::chrono::steady_clock::now();
  auto client = host::Client::Open(o.model, options);
  if (!client.ok()) return SetExitCode(ReportError(client.status()));
  if (!o.lease.empty() && (*client)->info().state != host::CoreStateKind::kReady) {
    auto lease = ReadFile(o.lease, 1 << 20);
    if (!lease.ok()) return SetExitCode(ReportError(lease.status()));
    Status s = (*client)->InstallLease(AsBytes(*lease));
    if (!s.ok()) return SetExitCode(ReportError(s));
  }
  const double open_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - open_start)
          .count();
  if ((*client)->info().state != host::CoreStateKind::kReady)
    return SetExitCode(ReportError(FailedPrecondition(
        "bench: {} has no lease in {} (pass --lease FILE, or see `mlcapsule lease --help`)",
        o.model, options.state_dir)));
  const uint64_t needed =
      static_cast<uint64_t>(o.batch) * static_cast<uint64_t>(o.iters + o.warmup);
  const host::CoreInfo& info = (*client)->info();
  if (info.query_quota - info.queries_used < needed)
    return SetExitCode(ReportError(ResourceExhausted(
        "bench: the lease has {} queries left, the run needs {} (batch x (iters + warmup))",
        info.query_quota - info.queries_used, needed)));
  // --distinct N: N different random inputs, used in turn (defenses that look at inputs, such
  // as PRADA and the watermark, see a stream of distinct queries instead of one repeated).
  std::mt19937 rng(42);
  std::vector<std::vector<engine::Tensor>> input_sets(static_cast<size_t>(o.distinct));
  std::vector<std::vector<engine::TensorView>> view_sets(input_sets.size());
  for (size_t k = 0; k < input_sets.size(); ++k) {
    for (const capsule::IoTensor& io : info.inputs) {
      engine::Dims dims;
      for (const capsule::IoDim& d : io.dims) dims.push_back(d.batch ? d.value * o.batch : d.value);
      input_sets[k].push_back(RandomTensor(static_cast<engine::DType>(io.dtype), dims, rng));
    }
    for (engine::Tensor& t : input_sets[k]) view_sets[k].push_back(t.View());
  }
  size_t next_input = 0;
  auto next_views = [&]() -> const std::vector<engine::TensorView>& {
    return view_sets[next_input++ % view_sets.size()];
  };

  std::unique_ptr<engine::Session> baseline;
  if (!o.baseline.empty()) {
    compiler::CompileOptions compile_options;
    auto plan = LoadModel(o.baseline, compile_options);
    if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
    engine::SessionOptions session_options;
    session_options.threads = o.threads;
    auto session = engine::Session::Create(std::move(plan).value(), session_options);
    if (!session.ok()) return SetExitCode(ReportError(session.status()));
    baseline = std::move(session).value();
  }
  std::vector<engine::Tensor> outputs;
  for (int i = 0; i < o.warmup; ++i) {
    const std::vector<engine::TensorView>& views = next_views();
    if (Status s = (*client)->Infer(views, &outputs); !s.ok()) return SetExitCode(ReportError(s));
    if (baseline) {
      if (Status s = baseline->Run(views, &outputs); !s.ok()) return SetExitCode(ReportError(s));
    }
  }
  // With a baseline the two alternate in blocks of about a tenth of the iterations: each path runs
  // warm (its own caches, the core awake), and both see the same machine over the whole run.
  // (Alternating call by call would measure each path right after the other one evicted its
  // caches and let the core fall asleep between calls, which no real client does.)
  std::vector<double> guarded_ms, plain_ms;
  const int block = baseline ? std::max(1, o.iters / 10) : o.iters;
  for (int done = 0; done < o.iters;) {
    const int n = std::min(block, o.iters - done);
    const size_t block_start = next_input;
    for (int i = 0; i < n; ++i) {
      const std::vector<engine::TensorView>& views = next_views();
      auto start = std::chrono::steady_clock::now();
      Status s = (*client)->Infer(views, &outputs);
      auto end = std::chrono::steady_clock::now();
      if (!s.ok()) return SetExitCode(ReportError(s));
      guarded_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    }
    next_input = block_start;  // the baseline sees the same inputs in the same order
    for (int i = 0; baseline && i < n; ++i) {
      const std::vector<engine::TensorView>& views = next_views();
      auto start = std::chrono::steady_clock::now();
      Status s = baseline->Run(views, &outputs);
      auto end = std::chrono::steady_clock::now();
      if (!s.ok()) return SetExitCode(ReportError(s));
      plain_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    }
    next_input = block_start + static_cast<size_t>(n);
    done += n;
  }
  const double median = Percentile(guarded_ms, 0.5);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  nlohmann::json j = {
      {"engine", std::string("mlcapsule-") + kVersion + "-guarded"},
      {"model", ModelName(o.model)},
      {"batch", o.batch},
      {"threads", o.threads},
      {"iters", o.iters},
      {"warmup", o.warmup},
      {"median_ms", median},
      {"p10_ms", Percentile(guarded_ms, 0.1)},
      {"p90_ms", Percentile(guarded_ms, 0.9)},
      {"throughput_per_s", static_cast<double>(o.batch) * 1000.0 / median},
      {"backend", (*client)->DescribeBackend()},
      {"open_ms", open_ms},
      {"host_peak_rss_mib", static_cast<double>(usage.ru_maxrss) / 1024.0},
      {"distinct_inputs", o.distinct},
  };
  if (baseline) {
    const double plain = Percentile(plain_ms, 0.5);
    j["baseline_model"] = ModelName(o.baseline);
    j["baseline_median_ms"] = plain;
    j["overhead_ms"] = median - plain;
    j["overhead_us"] = (median - plain) * 1000.0;
    j["overhead_pct"] = 100.0 * (median - plain) / plain;
  }
  if (Status s = (*client)->Close(); !s.ok()) return SetExitCode(ReportError(s));
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace

void AddBenchCommand(CLI::App& app) {
  static BenchOptions options;
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure inference latency of a model (.onnx or .plan) or of a capsule's whole guarded "
      "path (.capsule: trusted process included) on random inputs");
  cmd->add_option("MODEL", options.model, "Model file (.onnx, .plan or .capsule)")
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
  cmd->add_option("--state", options.state,
                  "Capsules: the state directory holding the core's lease (default MODEL.state)");
  cmd->add_option("--lease", options.lease, "Capsules: install this lease file first if needed");
  cmd->add_option(
      "--baseline", options.baseline,
      "Capsules: also time this .onnx/.plan on the plain engine (same inputs, alternating "
      "in blocks of iters/10) and report the guarded path's overhead");
  cmd->add_option("--distinct", options.distinct,
                  "Capsules: cycle through this many different random inputs (defenses such as "
                  "PRADA and the watermark see distinct queries); default 1")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--core", options.core_binary,
                  "Capsules: the mlcapsule-core binary (default: beside this executable)");
  AddTeeOptions(cmd, &options.tee);
  cmd->footer(
      "Prints one JSON line: engine, model, batch, threads, median_ms, p10_ms, p90_ms, "
      "throughput_per_s, ...");
  cmd->callback([] { RunBench(options); });
}

}  // namespace mlcapsule::cli
