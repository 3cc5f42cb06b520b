// Test helpers for the Movement op tests: shape inference on symbolic (batch) shapes, and
// running a kernel on a concrete batch size with some inputs hidden from inference as runtime
// tensors. EvaluateNode (op_test_util.h) covers fixed shapes where every input is a constant.
#pragma once

#include <memory>
#include <vector>

#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {

// One node input: its symbolic type, its concrete data (may be nullptr for inference only), and
// whether inference sees the data as a plan constant.
struct TestInput {
  TensorType type;
  const Tensor* data = nullptr;
  bool constant = true;
  bool present = true;
};

inline TestInput Absent() { return TestInput{{}, nullptr, false, false}; }
inline TestInput Symbolic(DType dtype, Shape shape) {
  return TestInput{{dtype, shape}, nullptr, false};
}
inline TestInput Const(const Tensor& t) {
  return TestInput{{t.dtype, FixedShape(t.dims)}, &t, true};
}
inline TestInput Runtime(const Tensor& t, Shape shape) {
  return TestInput{{t.dtype, shape}, &t, false};
}
inline Dim Batch(int64_t value) { return Dim{value, true}; }
inline Dim Fixed(int64_t value) { return Dim{value, false}; }

// Types and constant data of the inputs, as the plan loader passes them to NodeContext.
inline void CollectInputs(const std::vector<TestInput>& inputs,
                          std::vector<const TensorType*>* types,
                          std::vector<const void*>* constants) {
  for (const TestInput& in : inputs) {
    types->push_back(in.present ? &in.type : nullptr);
    constants->push_back(in.present && in.constant && in.data != nullptr ? in.data->bytes.data()
                                                                         : nullptr);
  }
}

inline Tensor Iota(Dims dims) {
  Tensor t = Tensor::Make(DType::kFloat32, std::move(dims));
  for (int64_t i = 0; i < t.NumElements(); ++i) t.Data<float>()[i] = static_cast<float>(i);
  return t;
}

inline Tensor Ints(std::vector<int64_t> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, std::move(values));
}

// Owns what a NodeContext points to (types, constant data, plan, options) for one test call.
struct TestNodeContext {
  TestNodeContext(const std::vector<TestInput>& inputs, bool fast) : options{fast} {
    CollectInputs(inputs, &types, &constants);
  }
  NodeContext Make(const PlanNode& node) const {
    return NodeContext(plan, node, types, constants, options);
  }
  std::vector<const TensorType*> types;
  std::vector<const void*> constants;
  Plan plan;
  KernelOptions options;
};

// Runs the op's inference the way the plan loader does.
inline Result<std::vector<TensorType>> InferTypes(const PlanNode& node,
                                                  const std::vector<TestInput>& inputs) {
  const OpSchema* schema = FindSchema(node.op);
  if (schema == nullptr) return Unsupported("no schema");
  TestNodeContext owner(inputs, false);
  NodeContext ctx = owner.Make(node);
  std::vector<TensorType> outputs;
  MLC_RETURN_IF_ERROR(schema->infer(ctx, &outputs));
  return outputs;
}

// Infers, creates the kernel and runs it with the batch size `batch` (the inputs' data must have
// the resolved shapes). Output 0 of an aliasing op is still computed by Run, as the executor
// does when it cannot alias.
inline Result<std::vector<Tensor>> RunNode(const PlanNode& node,
                                           const std::vector<TestInput>& inputs, int64_t batch,
                                           bool fast = false, const RunContext& run = {}) {
  const OpSchema* schema = FindSchema(node.op);
  if (schema == nullptr) return Unsupported("no schema");
  TestNodeContext owner(inputs, fast);
  NodeContext ctx = owner.Make(node);
  std::vector<TensorType> out_types;
  MLC_RETURN_IF_ERROR(schema->infer(ctx, &out_types));
  out_types.resize(node.outputs.size());
  ctx.set_output_types(&out_types);
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel, schema->create(ctx));
  std::vector<TensorView> in_views(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].present || inputs[i].data == nullptr) continue;
    const Tensor& t = *inputs[i].data;
    in_views[i] = TensorView{t.dtype, t.dims, const_cast<uint8_t*>(t.bytes.data())};
  }
  std::vector<Tensor> outputs;
  for (const TensorType& t : out_types)
    outputs.push_back(Tensor::Make(t.dtype, ResolveShape(t.shape, batch)));
  std::vector<TensorView> out_views;
  for (Tensor& t : outputs) out_views.push_back(t.View());
  MLC_RETURN_IF_ERROR(kernel->Setup(in_views, out_views, run));
  kernel->Run(in_views, out_views, run);
  return outputs;
}

}  // namespace mlcapsule::engine::testing
