// Test helpers for the elementwise and reduction op tests: EvalThreaded runs one node like
// EvaluateNode but with several threads, so the kernels' ParallelFor tiling (tiles that start and
// end mid-row) is exercised; InferTypes runs inference alone on symbolic (batch) shapes.
#pragma once

#include <vector>

#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {

inline std::vector<Tensor> EvalThreaded(const PlanNode& node, std::vector<const Tensor*> inputs,
                                        int threads) {
  const OpSchema* schema = FindSchema(node.op);
  EXPECT_NE(schema, nullptr);
  if (schema == nullptr) return {};
  std::vector<TensorType> types(inputs.size());
  std::vector<const TensorType*> type_ptrs(inputs.size(), nullptr);
  std::vector<const void*> constants(inputs.size(), nullptr);
  std::vector<TensorView> in_views(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    types[i] = TensorType{inputs[i]->dtype, FixedShape(inputs[i]->dims)};
    type_ptrs[i] = &types[i];
    constants[i] = inputs[i]->bytes.data();
    in_views[i] = TensorView{inputs[i]->dtype, inputs[i]->dims,
                             const_cast<uint8_t*>(inputs[i]->bytes.data())};
  }
  Plan plan;
  KernelOptions options{true};
  NodeContext ctx(plan, node, type_ptrs, constants, options);
  std::vector<TensorType> out_types;
  Status s = schema->infer(ctx, &out_types);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return {};
  ctx.set_output_types(&out_types);
  auto kernel = schema->create(ctx);
  EXPECT_TRUE(kernel.ok()) << kernel.status().ToString();
  if (!kernel.ok()) return {};
  std::vector<Tensor> outputs;
  for (const TensorType& t : out_types)
    outputs.push_back(Tensor::Make(t.dtype, ResolveShape(t.shape, 1)));
  std::vector<TensorView> out_views;
  for (Tensor& t : outputs) out_views.push_back(t.View());
  RunContext run;
  run.threads = threads;
  s = kernel.value()->Setup(in_views, out_views, run);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (s.ok()) kernel.value()->Run(in_views, out_views, run);
  return outputs;
}

// Runs only `node`'s shape inference on symbolic input types (nullptr = absent); `constants`
// gives constant data per input (nullptr = a run-time tensor; empty = none constant).
inline Status InferTypes(const PlanNode& node, std::vector<const TensorType*> inputs,
                         std::vector<TensorType>* outputs,
                         std::vector<const void*> constants = {}) {
  const OpSchema* schema = FindSchema(node.op);
  if (schema == nullptr) return Unsupported("no schema");
  constants.resize(inputs.size(), nullptr);
  Plan plan;
  KernelOptions options{false};
  NodeContext ctx(plan, node, inputs, constants, options);
  return schema->infer(ctx, outputs);
}

}  // namespace mlcapsule::engine::testing
