// NodeContext and single-node evaluation (see op.h).
#include "engine/op.h"

#include <cstring>

namespace mlcapsule::engine {

const TensorType& NodeContext::output(int i) const {
  assert(outputs_ != nullptr && i < static_cast<int>(outputs_->size()));
  return (*outputs_)[i];
}

int64_t NodeContext::Int(std::string_view name, int64_t fallback) const {
  const Attribute* a = node_.FindAttr(name);
  if (a == nullptr || a->kind != AttrKind::kInts || a->ints.empty()) return fallback;
  return a->ints[0];
}

float NodeContext::Float(std::string_view name, float fallback) const {
  const Attribute* a = node_.FindAttr(name);
  if (a == nullptr || a->kind != AttrKind::kFloats || a->floats.empty()) return fallback;
  return a->floats[0];
}

std::span<const int64_t> NodeContext::Ints(std::string_view name) const {
  const Attribute* a = node_.FindAttr(name);
  if (a == nullptr || a->kind != AttrKind::kInts) return {};
  return a->ints;
}

std::span<const float> NodeContext::Floats(std::string_view name) const {
  const Attribute* a = node_.FindAttr(name);
  if (a == nullptr || a->kind != AttrKind::kFloats) return {};
  return a->floats;
}

std::string NodeContext::Describe() const {
  return fmt::format("node '{}' ({})", node_.name, OpTypeName(node_.op));
}

Status EvaluateNode(const PlanNode& node, std::span<const Tensor* const> inputs,
                    std::vector<Tensor>* outputs, const KernelOptions& options) {
  const OpSchema* schema = FindSchema(node.op);
  if (schema == nullptr) return Unsupported("operator {} is not implemented", OpTypeName(node.op));
  std::vector<TensorType> types(inputs.size());
  std::vector<const TensorType*> type_ptrs(inputs.size(), nullptr);
  std::vector<const void*> constants(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    types[i] = TensorType{inputs[i]->dtype, FixedShape(inputs[i]->dims)};
    type_ptrs[i] = &types[i];
    constants[i] = inputs[i]->bytes.data();
  }
  Plan empty;
  NodeContext ctx(empty, node, type_ptrs, constants, options);
  int n_in = static_cast<int>(inputs.size());
  int n_out = static_cast<int>(node.outputs.size());
  if (n_in < schema->min_inputs || n_in > schema->max_inputs)
    return ctx.Error("has {} inputs, allowed {} to {}", n_in, schema->min_inputs,
                     schema->max_inputs);
  if (n_out < schema->min_outputs || n_out > schema->max_outputs)
    return ctx.Error("has {} outputs, allowed {} to {}", n_out, schema->min_outputs,
                     schema->max_outputs);
  for (int i = 0; i < schema->min_inputs; ++i)
    if (inputs[static_cast<size_t>(i)] == nullptr)
      return ctx.Error("required input {} is absent", i);
  std::vector<TensorType> out_types;
  MLC_RETURN_IF_ERROR(schema->infer(ctx, &out_types));
  if (static_cast<int>(out_types.size()) < n_out)
    return InternalError("{}: inference produced {} outputs", ctx.Describe(), out_types.size());
  out_types.resize(static_cast<size_t>(n_out));
  ctx.set_output_types(&out_types);
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel, schema->create(ctx));

  outputs->clear();
  std::vector<TensorView> in_views(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    in_views[i] = TensorView{inputs[i]->dtype, inputs[i]->dims,
                             const_cast<uint8_t*>(inputs[i]->bytes.data())};
  }
  for (const TensorType& t : out_types) {
    if (HasBatchDim(t.shape)) return InternalError("{}: symbolic output shape", ctx.Describe());
    Dims dims = ResolveShape(t.shape, 1);
    MLC_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(dims, ctx.Describe()));
    (void)n;
    outputs->push_back(Tensor::Make(t.dtype, dims));
  }
  std::vector<TensorView> out_views;
  for (Tensor& t : *outputs) out_views.push_back(t.View());
  // Aliasing ops still get their bytes copied here: EvaluateNode owns separate buffers.
  if (schema->output_aliases_input && !in_views.empty() && !out_views.empty()) {
    size_t bytes = static_cast<size_t>(out_views[0].NumElements()) * DTypeSize(out_types[0].dtype);
    if (bytes > 0) std::memcpy(out_views[0].data, in_views[0].data, bytes);
    return Status::Ok();
  }
  RunContext run_ctx;
  MLC_RETURN_IF_ERROR(kernel->Setup(in_views, out_views, run_ctx));
  kernel->Run(in_views, out_views, run_ctx);
  return Status::Ok();
}

}  // namespace mlcapsule::engine
