// ONNX -> plan compiler (provider side). Reads an ONNX model (opsets 11 to 17; older opsets of the
// supported operators are converted too), infers static shapes with a symbolic batch dimension,
// folds constants and shape arithmetic, fuses (Conv+BatchNorm+activation, Gemm/MatMul+bias+
// activation), rewrites convolutions to channels-last for the fast kernels, pre-arranges weights
// and emits a validated plan.
//
//   compiler::CompileOptions options;
//   MLC_ASSIGN_OR_RETURN(engine::Plan plan, compiler::CompileOnnx(model_bytes, options));
//   std::string bytes = engine::SerializePlan(plan);
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::compiler {

struct CompileOptions {
  // Replaces the declared shape of an input (e.g. {"input", {1, 3, 224, 224}}); the name "" means
  // the first input. A value of -1 in dimension 0 keeps that dimension as the dynamic batch. A
  // name that is not a graph input is an error.
  std::map<std::string, std::vector<int64_t>> input_shapes;
  // > 0: compile for this fixed batch size instead of a dynamic batch dimension.
  int64_t fixed_batch = 0;
  // Values for graph inputs that feed shape parameters (a Reshape's shape, a Slice's starts, ...);
  // such inputs become constants of the plan. Used by the conformance runner.
  std::map<std::string, engine::Tensor> bound_inputs;
  bool optimize = true;       // fusion and constant folding of activations
  bool channels_last = true;  // rewrite 2-D convolutions and pools to NHWC for the fast kernels
};

struct CompileReport {
  int onnx_nodes = 0;
  int plan_nodes = 0;
  int folded_nodes = 0;
  int fused_nodes = 0;
  int layout_transposes = 0;
  int opset = 0;
};

Result<engine::Plan> CompileOnnx(std::string_view model_bytes, const CompileOptions& options,
                                 CompileReport* report = nullptr);
// Same, freeing the serialized bytes as soon as they are parsed (lower peak memory).
Result<engine::Plan> CompileOnnx(std::string&& model_bytes, const CompileOptions& options,
                                 CompileReport* report = nullptr);

}  // namespace mlcapsule::compiler

namespace mlcapsule::compiler {

// Names of the graph's real inputs (not initializers), in order; for matching test data files.
Result<std::vector<std::string>> OnnxInputNames(std::string_view model_bytes);

}  // namespace mlcapsule::compiler
