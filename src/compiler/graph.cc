// Working graph helpers (see graph.h).
#include "compiler/graph.h"

namespace mlcapsule::compiler {

using engine::Attribute;
using engine::AttrKind;

void Node::SetInts(const std::string& key, std::vector<int64_t> v) {
  Erase(key);
  Attribute a;
  a.name = key;
  a.kind = AttrKind::kInts;
  a.ints = std::move(v);
  attrs.push_back(std::move(a));
}

void Node::SetFloats(const std::string& key, std::vector<float> v) {
  Erase(key);
  Attribute a;
  a.name = key;
  a.kind = AttrKind::kFloats;
  a.floats = std::move(v);
  attrs.push_back(std::move(a));
}

void Node::Erase(const std::string& key) {
  std::erase_if(attrs, [&](const Attribute& a) { return a.name == key; });
}

const Attribute* Node::Find(const std::string& key) const {
  for (const Attribute& a : attrs)
    if (a.name == key) return &a;
  return nullptr;
}

int64_t Node::Int(const std::string& key, int64_t fallback) const {
  const Attribute* a = Find(key);
  return a && a->kind == AttrKind::kInts && !a->ints.empty() ? a->ints[0] : fallback;
}

float Node::Float(const std::string& key, float fallback) const {
  const Attribute* a = Find(key);
  return a && a->kind == AttrKind::kFloats && !a->floats.empty() ? a->floats[0] : fallback;
}

int Graph::AddValue(std::string name, engine::TensorType type) {
  Value v;
  v.name = std::move(name);
  v.type = std::move(type);
  values.push_back(std::move(v));
  return static_cast<int>(values.size() - 1);
}

int Graph::AddConstant(std::string name, engine::Tensor tensor) {
  int id =
      AddValue(std::move(name), engine::TensorType{tensor.dtype, engine::FixedShape(tensor.dims)});
  values[static_cast<size_t>(id)].constant = std::move(tensor);
  return id;
}

std::vector<std::vector<int>> Graph::Consumers() const {
  std::vector<std::vector<int>> consumers(values.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].dead) continue;
    for (int v : nodes[i].inputs)
      if (v >= 0) consumers[static_cast<size_t>(v)].push_back(static_cast<int>(i));
  }
  return consumers;
}

std::string Graph::UniqueName(const std::string& base) {
  return fmt::format("{}__mlc{}", base, counter_++);
}

Status InferNode(Graph& graph, const Node& node) {
  static const engine::Plan kEmptyPlan;
  const engine::OpSchema* schema = engine::FindSchema(node.op);
  if (schema == nullptr)
    return Unsupported("node '{}': operator {} is not implemented", node.name,
                       engine::OpTypeName(node.op));
  engine::PlanNode plan_node;
  plan_node.op = node.op;
  plan_node.name = node.name;
  plan_node.attrs = node.attrs;
  plan_node.inputs.assign(node.inputs.begin(), node.inputs.end());
  plan_node.outputs.assign(node.outputs.begin(), node.outputs.end());
  std::vector<const engine::TensorType*> types(node.inputs.size(), nullptr);
  std::vector<const void*> constants(node.inputs.size(), nullptr);
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    int v = node.inputs[i];
    if (v < 0) continue;
    const Value& value = graph.values[static_cast<size_t>(v)];
    types[i] = &value.type;
    if (value.constant) constants[i] = value.constant->bytes.data();
  }
  engine::KernelOptions options{false};
  engine::NodeContext ctx(kEmptyPlan, plan_node, types, constants, options);
  int n_in = static_cast<int>(node.inputs.size()), n_out = static_cast<int>(node.outputs.size());
  if (n_in < schema->min_inputs || n_in > schema->max_inputs)
    return ctx.Error("has {} inputs, the op takes {} to {}", n_in, schema->min_inputs,
                     schema->max_inputs);
  if (n_out < schema->min_outputs || n_out > schema->max_outputs)
    return ctx.Error("has {} outputs, the op takes {} to {}", n_out, schema->min_outputs,
                     schema->max_outputs);
  for (const engine::Attribute& a : node.attrs) {
    bool allowed = false;
    for (std::string_view name : schema->attrs) allowed |= name == a.name;
    if (!allowed) return ctx.Unsupported("attribute '{}' is not supported", a.name);
  }
  for (int i = 0; i < n_in; ++i)
    if (node.inputs[static_cast<size_t>(i)] < 0 && i < schema->min_inputs)
      return ctx.Error("required input {} is missing", i);
  std::vector<engine::TensorType> out_types;
  MLC_RETURN_IF_ERROR(schema->infer(ctx, &out_types));
  if (out_types.size() < node.outputs.size())
    return InternalError("{}: inference gave {} outputs", ctx.Describe(), out_types.size());
  for (size_t i = 0; i < node.outputs.size(); ++i)
    graph.values[static_cast<size_t>(node.outputs[i])].type = out_types[i];
  return Status::Ok();
}

}  // namespace mlcapsule::compiler
