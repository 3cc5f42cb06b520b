// `mlcapsule compile` (ONNX -> plan file) and `mlcapsule infer` (run a model on tensor files).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cli/cli_common.h"
#include "engine/session.h"

namespace mlcapsule::cli {
namespace {

struct ShapeOptions {
  std::vector<std::string> input_shapes;  // "name=1,3,224,224" or "1,3,224,224" (first input)
  int64_t batch = 0;
  bool no_optimize = false;
  bool no_channels_last = false;
};

void AddShapeOptions(CLI::App* cmd, ShapeOptions* o) {
  cmd->add_option("--input-shape", o->input_shapes,
                  "Input shape override, NAME=d0,d1,... or d0,d1,... for the first input; -1 in "
                  "dimension 0 keeps a dynamic batch");
  cmd->add_option("--batch", o->batch, "Compile for this fixed batch size (default: dynamic batch)")
      ->check(CLI::Range(int64_t{0}, engine::kMaxBatch));
  cmd->add_flag("--no-optimize", o->no_optimize, "Skip fusion passes");
  cmd->add_flag("--no-channels-last", o->no_channels_last,
                "Keep NCHW layout (reference kernels for convolutions)");
}

Result<compiler::CompileOptions> MakeCompileOptions(const ShapeOptions& o) {
  compiler::CompileOptions options;
  options.fixed_batch = o.batch;
  options.optimize = !o.no_optimize;
  options.channels_last = !o.no_channels_last;
  for (const std::string& spec : o.input_shapes) {
    size_t eq = spec.find('=');
    std::string name = eq == std::string::npos ? "" : spec.substr(0, eq);
    MLC_ASSIGN_OR_RETURN(std::vector<int64_t> dims,
                         ParseDims(eq == std::string::npos ? spec : spec.substr(eq + 1)));
    options.input_shapes[name] = dims;  // "" = the first input
  }
  return options;
}

void RunCompile(const std::string& model, const std::string& out, const ShapeOptions& shapes,
                bool as_json) {
  auto options = MakeCompileOptions(shapes);
  if (!options.ok()) return SetExitCode(ReportError(options.status()));
  compiler::CompileReport report;
  auto plan = LoadModel(model, *options, &report);
  if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
  std::string bytes = engine::SerializePlan(*plan);
  Status s = WriteFile(out, bytes);
  if (!s.ok()) return SetExitCode(ReportError(s));
  if (as_json) {
    nlohmann::json j = {{"model", model},
                        {"plan_file", out},
                        {"plan_bytes", bytes.size()},
                        {"opset", report.opset},
                        {"onnx_nodes", report.onnx_nodes},
                        {"plan_nodes", report.plan_nodes},
                        {"folded_nodes", report.folded_nodes},
                        {"fused_nodes", report.fused_nodes},
                        {"layout_transposes", report.layout_transposes},
                        {"weight_bytes", plan->WeightBytes()}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf(
      "compiled %s -> %s: opset %d, %d ONNX nodes -> %d plan nodes (%d folded, %d fused, %d layout "
      "transposes), "
      "%.1f MiB of weights, %zu bytes\n",
      model.c_str(), out.c_str(), report.opset, report.onnx_nodes, report.plan_nodes,
      report.folded_nodes, report.fused_nodes, report.layout_transposes,
      static_cast<double>(plan->WeightBytes()) / (1 << 20), bytes.size());
}

struct InferOptions {
  std::string model;
  std::vector<std::string> inputs, outputs;
  int threads = 1;
  bool reference = false;
  ShapeOptions shapes;
};

void RunInfer(const InferOptions& o) {
  auto options = MakeCompileOptions(o.shapes);
  if (!options.ok()) return SetExitCode(ReportError(options.status()));
  auto plan = LoadModel(o.model, *options);
  if (!plan.ok()) return SetExitCode(ReportError(plan.status()));
  std::vector<engine::Tensor> inputs;
  for (const std::string& path : o.inputs) {
    auto t = ReadTensorFile(path);
    if (!t.ok()) return SetExitCode(ReportError(t.status()));
    inputs.push_back(std::move(t).value());
  }
  if (inputs.size() != plan->inputs.size()) {
    return SetExitCode(ReportError(InvalidArgument(
        "the model takes {} inputs, {} given with --input", plan->inputs.size(), inputs.size())));
  }
  if (!o.outputs.empty() && o.outputs.size() != plan->outputs.size()) {
    return SetExitCode(
        ReportError(InvalidArgument("the model has {} outputs, {} given with --output",
                                    plan->outputs.size(), o.outputs.size())));
  }
  std::vector<std::string> output_names;
  for (int32_t index : plan->outputs)
    output_names.push_back(plan->tensors[static_cast<size_t>(index)].name);
  engine::SessionOptions session_options;
  session_options.threads = o.threads;
  session_options.fast_kernels = !o.reference;
  auto session = engine::Session::Create(std::move(plan).value(), session_options);
  if (!session.ok()) return SetExitCode(ReportError(session.status()));
  std::vector<engine::TensorView> views;
  for (engine::Tensor& t : inputs) views.push_back(t.View());
  std::vector<engine::Tensor> outputs;
  Status s = (*session)->Run(views, &outputs);
  if (!s.ok()) return SetExitCode(ReportError(s));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const engine::Tensor& t = outputs[i];
    if (!o.outputs.empty()) {
      Status w = WriteTensorFile(o.outputs[i], t, output_names[i]);
      if (!w.ok()) return SetExitCode(ReportError(w));
      std::printf("%s: %s%s -> %s\n", output_names[i].c_str(), engine::DTypeName(t.dtype),
                  engine::DimsToString(t.dims).c_str(), o.outputs[i].c_str());
      continue;
    }
    PrintTensorPreview(output_names[i], t);
  }
}

}  // namespace

void AddModelCommands(CLI::App& app) {
  static std::string compile_model, compile_out;
  static ShapeOptions compile_shapes;
  static bool compile_json = false;
  CLI::App* compile = app.add_subcommand(
      "compile", "Compile an ONNX model (opsets 11-17) into a validated plan file");
  compile->add_option("MODEL", compile_model, "ONNX model file")
      ->required()
      ->check(CLI::ExistingFile);
  compile->add_option("-o,--out", compile_out, "Plan file to write")->required();
  AddShapeOptions(compile, &compile_shapes);
  compile->add_flag("--json", compile_json,
                    "Print one JSON object (node counts, sizes, plan file) instead of the line");
  compile->callback([] { RunCompile(compile_model, compile_out, compile_shapes, compile_json); });

  static InferOptions infer_options;
  CLI::App* infer = app.add_subcommand(
      "infer", "Run a model (.onnx or .plan) on input tensors (.pb TensorProto or .npy)");
  infer->add_option("MODEL", infer_options.model, "Model file (.onnx or .plan)")
      ->required()
      ->check(CLI::ExistingFile);
  infer
      ->add_option("-i,--input", infer_options.inputs,
                   "Input tensor files in the model's input order")
      ->required();
  infer->add_option("-o,--output", infer_options.outputs,
                    "Output files to write (.pb or .npy), in output order; "
                    "without it a summary is printed");
  infer->add_option("-t,--threads", infer_options.threads, "Intra-op threads")
      ->check(CLI::Range(1, 256));
  infer->add_flag("--reference", infer_options.reference, "Use the plain reference kernels only");
  AddShapeOptions(infer, &infer_options.shapes);
  infer->callback([] { RunInfer(infer_options); });
}

}  // namespace mlcapsule::cli
