// ONNX import: graph construction, per-opset canonicalisation into the engine's operator forms,
// shape inference, constant folding and symbolic shape arithmetic; then the optimisation passes
// (optimize.cc) and plan emission. The ONNX file is untrusted: every name is resolved (dangling
// names and cycles are errors), every attribute checked, every error names the node and op.
#include "compiler/compiler.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <set>
#include <unordered_map>

#include "compiler/graph.h"
#include "compiler/onnx_import.h"

namespace mlcapsule::compiler {
namespace {

using engine::Attribute;
using engine::AttrKind;
using engine::Dim;
using engine::DType;
using engine::OpType;
using engine::Shape;
using engine::Tensor;
using engine::TensorType;

constexpr int kMinOpset =
    1;  // older forms of the supported ops are converted; 11-17 is the tested range
constexpr int kMaxOpset = 17;
constexpr int64_t kMaxFoldElements = int64_t{1} << 24;  // constants larger than this stay runtime
constexpr int kMaxNodes = 1 << 20;

std::string Describe(const onnx::NodeProto& n) {
  return fmt::format("node '{}' ({})", n.name(), n.op_type());
}

class OnnxAttrs {
 public:
  explicit OnnxAttrs(const onnx::NodeProto& node) : node_(node) {}
  const onnx::AttributeProto* Find(std::string_view name) const {
    for (const auto& a : node_.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  bool Has(std::string_view name) const { return Find(name) != nullptr; }
  int64_t Int(std::string_view name, int64_t fallback) const {
    const auto* a = Find(name);
    return a ? a->i() : fallback;
  }
  float Float(std::string_view name, float fallback) const {
    const auto* a = Find(name);
    return a ? a->f() : fallback;
  }
  std::vector<int64_t> Ints(std::string_view name) const {
    const auto* a = Find(name);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : std::vector<int64_t>{};
  }
  std::vector<float> Floats(std::string_view name) const {
    const auto* a = Find(name);
    return a ? std::vector<float>(a->floats().begin(), a->floats().end()) : std::vector<float>{};
  }
  std::string Str(std::string_view name, std::string fallback) const {
    const auto* a = Find(name);
    return a ? a->s() : fallback;
  }

 private:
  const onnx::NodeProto& node_;
};

// How each canonical op's inputs are used: slots that must be constants of the plan.
bool IsParameterSlot(OpType op, size_t slot) {
  switch (op) {
    case OpType::kReshape:
    case OpType::kSqueeze:
    case OpType::kUnsqueeze:
    case OpType::kSplit:
    case OpType::kExpand:
    case OpType::kTile:
    case OpType::kCumSum:
    case OpType::kTrilu:
      return slot == 1;
    case OpType::kSlice:
      return slot >= 1;
    case OpType::kPad:
      return slot == 1 || slot == 2;
    case OpType::kRange:
    case OpType::kConstantOfShape:
      return true;
    default:
      return false;
  }
}

// Same, by ONNX op type name (for binding graph inputs before canonicalisation).
bool IsOnnxParameterSlot(const std::string& op, size_t slot) {
  if (op.rfind("Reduce", 0) == 0) return slot == 1;  // axes as an input (ReduceSum-13, opset 18)
  if (op == "Clip") return slot >= 1;
  OpType type;
  if (!engine::OpTypeFromName(op, &type)) return false;
  return IsParameterSlot(type, slot);
}

bool ScalarDimOp(const Dim& a, const Dim& b, OpType op, Dim* out) {
  switch (op) {
    case OpType::kMul:
      if (a.batch && b.batch) return false;
      *out = Dim{a.value * b.value, a.batch || b.batch};
      return true;
    case OpType::kDiv:
      if (b.batch || b.value == 0) return false;
      if (a.batch && a.value % b.value != 0) return false;
      *out = Dim{a.value / b.value, a.batch};
      return true;
    case OpType::kAdd:
    case OpType::kSub: {
      int64_t bv = op == OpType::kSub ? -b.value : b.value;
      if (a.batch && b.batch) return false;
      if (a.batch && bv == 0) {
        *out = a;
        return true;
      }
      if (b.batch && a.value == 0 && op == OpType::kAdd) {
        *out = b;
        return true;
      }
      if (a.batch || b.batch) return false;
      *out = Dim{a.value + bv, false};
      return true;
    }
    default:
      return false;
  }
}

class Importer {
 public:
  Importer(const CompileOptions& options, CompileReport* report)
      : options_(options), report_(report) {}

  Status Import(onnx::ModelProto& model);
  Graph& graph() { return graph_; }

 private:
  Status ImportGraph(onnx::GraphProto& graph);
  Status ImportNode(const onnx::NodeProto& proto);
  Status Canonicalize(const onnx::NodeProto& proto, Node* node);
  Status Emit(Node node);
  Result<int> Lookup(const std::string& name, const onnx::NodeProto& proto);
  int ConstI64(const std::string& base, std::vector<int64_t> values, bool scalar = false);
  int ConstF32(const std::string& base, std::vector<float> values, bool scalar = false);
  Result<std::optional<std::vector<Dim>>> SymbolicValues(int value);
  bool TrySymbolic(const Node& node);
  Status MaterializeShapeParameter(Node& node);
  Status ResolveAutoPad(const onnx::NodeProto& proto, Node& node, const std::string& auto_pad);

  const CompileOptions& options_;
  CompileReport* report_;
  Graph graph_;
  int opset_ = 0;
  std::unordered_map<std::string, int> by_name_;
};

int Importer::ConstI64(const std::string& base, std::vector<int64_t> values, bool scalar) {
  engine::Dims dims = scalar ? engine::Dims{} : engine::Dims{static_cast<int64_t>(values.size())};
  return graph_.AddConstant(graph_.UniqueName(base), Tensor::FromInt64s(dims, std::move(values)));
}

int Importer::ConstF32(const std::string& base, std::vector<float> values, bool scalar) {
  engine::Dims dims = scalar ? engine::Dims{} : engine::Dims{static_cast<int64_t>(values.size())};
  return graph_.AddConstant(graph_.UniqueName(base), Tensor::FromFloats(dims, std::move(values)));
}

Result<int> Importer::Lookup(const std::string& name, const onnx::NodeProto& proto) {
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return InvalidArgument(
        "{}: input '{}' is not a graph input, initializer or output of an earlier node "
        "(dangling name, or the graph is cyclic / not topologically sorted)",
        Describe(proto), name);
  return it->second;
}

Status Importer::Import(onnx::ModelProto& model) {
  std::string other_domains;
  for (const auto& imp : model.opset_import()) {
    if (imp.domain().empty() || imp.domain() == "ai.onnx")
      opset_ = static_cast<int>(imp.version());
    else
      other_domains += (other_domains.empty() ? "" : ", ") + imp.domain();
  }
  if (opset_ == 0 && !other_domains.empty())
    return Unsupported("operator domain(s) {} are not supported (only the default ONNX domain)",
                       other_domains);
  if (opset_ == 0)
    return InvalidArgument("model imports no version of the default ONNX operator set");
  if (opset_ < kMinOpset || opset_ > kMaxOpset)
    return Unsupported("ONNX opset {} is not supported (supported: {} to {})", opset_, kMinOpset,
                       kMaxOpset);
  if (report_) report_->opset = opset_;
  if (!model.has_graph()) return InvalidArgument("model has no graph");
  return ImportGraph(*model.mutable_graph());
}

Status Importer::ImportGraph(onnx::GraphProto& g) {
  if (g.node_size() > kMaxNodes)
    return ResourceExhausted("graph has {} nodes, over the limit {}", g.node_size(), kMaxNodes);
  for (auto& init : *g.mutable_initializer()) {
    if (by_name_.count(init.name()))
      return InvalidArgument("initializer '{}' is defined twice", init.name());
    MLC_ASSIGN_OR_RETURN(Tensor t, TensorFromProto(init, "initializer '" + init.name() + "'"));
    by_name_[init.name()] = graph_.AddConstant(init.name(), std::move(t));
    // Free the protobuf copy of the weights now, so import needs about one copy of them.
    std::string().swap(*init.mutable_raw_data());
    init.clear_float_data();
    init.clear_int64_data();
  }
  std::set<std::string> unused_overrides;
  for (const auto& [name, dims] : options_.input_shapes) unused_overrides.insert(name);
  bool first_real_input = true;
  for (const auto& input : g.input()) {
    if (by_name_.count(input.name())) continue;  // an initializer with a default value: constant
    const std::string what = "input '" + input.name() + "'";
    auto bound = options_.bound_inputs.find(input.name());
    if (bound != options_.bound_inputs.end()) {
      bool parameter = false;
      for (const auto& n : g.node())
        for (int i = 0; i < n.input_size(); ++i)
          if (n.input(i) == input.name() &&
              IsOnnxParameterSlot(n.op_type(), static_cast<size_t>(i)))
            parameter = true;
      if (parameter) {
        by_name_[input.name()] = graph_.AddConstant(input.name(), bound->second);
        unused_overrides.erase(input.name());
        continue;
      }
    }
    if (!input.type().has_tensor_type()) return Unsupported("{} is not a tensor", what);
    const auto& tt = input.type().tensor_type();
    if (tt.elem_type() != 1 && tt.elem_type() != 7)
      return Unsupported("{} has element type {}, which is not supported (float32 and int64 only)",
                         what, OnnxTypeName(tt.elem_type()));
    TensorType type{static_cast<DType>(tt.elem_type()), {}};
    // An override by name, or under "" for the first input.
    auto override_it = options_.input_shapes.find(input.name());
    if (override_it == options_.input_shapes.end() && first_real_input)
      override_it = options_.input_shapes.find("");
    first_real_input = false;
    if (override_it != options_.input_shapes.end()) {
      unused_overrides.erase(override_it->first);
      const auto& dims = override_it->second;
      if (dims.size() > static_cast<size_t>(engine::kMaxRank))
        return InvalidArgument("{} override rank is over {}", what, engine::kMaxRank);
      for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] == -1 && i == 0 && options_.fixed_batch == 0) {
          type.shape.push_back(Dim{1, true});
        } else if (dims[i] == -1 && i == 0) {
          type.shape.push_back(Dim{options_.fixed_batch, false});
        } else if (dims[i] < 0) {
          return InvalidArgument("{} override dimension {} is {}", what, i, dims[i]);
        } else {
          type.shape.push_back(Dim{dims[i], false});
        }
      }
    } else {
      if (!tt.has_shape())
        return Unsupported("{} has no declared shape; give one with --input-shape", what);
      if (tt.shape().dim_size() > engine::kMaxRank)
        return InvalidArgument("{} rank is over {}", what, engine::kMaxRank);
      for (int i = 0; i < tt.shape().dim_size(); ++i) {
        const auto& d = tt.shape().dim(i);
        if (d.has_dim_value()) {
          if (d.dim_value() < 0 || d.dim_value() > engine::kMaxTensorElements)
            return InvalidArgument("{} dimension {} is {}", what, i, d.dim_value());
          type.shape.push_back(Dim{d.dim_value(), false});
        } else if (i == 0) {
          type.shape.push_back(options_.fixed_batch > 0 ? Dim{options_.fixed_batch, false}
                                                        : Dim{1, true});
        } else {
          return Unsupported(
              "{} dimension {} ('{}') is symbolic; only dimension 0 may be the batch; give a shape "
              "with --input-shape",
              what, i, d.dim_param());
        }
      }
    }
    MLC_ASSIGN_OR_RETURN(int64_t n,
                         engine::CheckedNumElements(engine::ResolveShape(type.shape, 1), what));
    (void)n;
    int id = graph_.AddValue(input.name(), type);
    graph_.values[static_cast<size_t>(id)].graph_input = true;
    graph_.inputs.push_back(id);
    by_name_[input.name()] = id;
  }
  if (!unused_overrides.empty())
    return InvalidArgument("an input shape was given for '{}', which is not an input of the graph",
                           *unused_overrides.begin());
  for (const auto& node : g.node()) {
    if (report_) report_->onnx_nodes++;
    MLC_RETURN_IF_ERROR(ImportNode(node));
  }
  if (g.output_size() == 0) return InvalidArgument("graph has no outputs");
  std::set<int> seen;
  for (const auto& output : g.output()) {
    auto it = by_name_.find(output.name());
    if (it == by_name_.end())
      return InvalidArgument("graph output '{}' is not computed by any node", output.name());
    int id = it->second;
    const Value& v = graph_.values[static_cast<size_t>(id)];
    if (v.graph_input || v.constant || v.graph_output || seen.count(id)) {
      // Outputs must be distinct computed tensors: copy through an Identity. (Copies first:
      // adding values may move the value vector.)
      const TensorType type = v.type;
      std::optional<Tensor> constant = v.constant;
      Node copy;
      copy.op = OpType::kIdentity;
      copy.name = graph_.UniqueName(output.name() + "_copy");
      int src = id;
      if (constant)
        src = graph_.AddConstant(graph_.UniqueName(output.name()), std::move(*constant));
      int out = graph_.AddValue(output.name(), type);
      copy.inputs = {src};
      copy.outputs = {out};
      graph_.nodes.push_back(copy);
      id = out;
    }
    graph_.values[static_cast<size_t>(id)].graph_output = true;
    graph_.outputs.push_back(id);
    seen.insert(id);
  }
  return Status::Ok();
}

Status Importer::ImportNode(const onnx::NodeProto& proto) {
  if (!proto.domain().empty() && proto.domain() != "ai.onnx")
    return Unsupported("{}: operator domain '{}' is not supported", Describe(proto),
                       proto.domain());
  Node node;
  node.name = proto.name().empty() ? graph_.UniqueName(proto.op_type()) : proto.name();
  for (const auto& name : proto.input()) {
    if (name.empty()) {
      node.inputs.push_back(-1);
      continue;
    }
    MLC_ASSIGN_OR_RETURN(int id, Lookup(name, proto));
    node.inputs.push_back(id);
  }
  while (!node.inputs.empty() && node.inputs.back() < 0) node.inputs.pop_back();
  int last_named = -1;
  for (int i = 0; i < proto.output_size(); ++i)
    if (!proto.output(i).empty()) last_named = i;
  for (int i = 0; i <= last_named; ++i) {
    const std::string& name = proto.output(i);
    if (!name.empty() && by_name_.count(name))
      return InvalidArgument(
          "{}: output '{}' is already defined (ONNX graphs are single-assignment)", Describe(proto),
          name);
    int id = graph_.AddValue(name.empty() ? graph_.UniqueName(node.name + "_unused") : name,
                             TensorType{});
    node.outputs.push_back(id);
    if (!name.empty()) by_name_[name] = id;
  }
  if (proto.op_type() == "Constant") {
    if (node.outputs.size() != 1)
      return InvalidArgument("{}: Constant must have one output", Describe(proto));
    OnnxAttrs a(proto);
    Tensor t;
    if (const auto* value = a.Find("value")) {
      MLC_ASSIGN_OR_RETURN(t, TensorFromProto(value->t(), Describe(proto) + " value"));
    } else if (a.Has("value_float")) {
      t = Tensor::FromFloats({}, {a.Float("value_float", 0)});
    } else if (a.Has("value_floats")) {
      auto v = a.Floats("value_floats");
      t = Tensor::FromFloats({static_cast<int64_t>(v.size())}, v);
    } else if (a.Has("value_int")) {
      t = Tensor::FromInt64s({}, {a.Int("value_int", 0)});
    } else if (a.Has("value_ints")) {
      auto v = a.Ints("value_ints");
      t = Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
    } else if (a.Has("sparse_value") || a.Has("value_string") || a.Has("value_strings")) {
      return Unsupported("{}: sparse or string constants are not supported", Describe(proto));
    } else {
      return InvalidArgument("{}: Constant has no value", Describe(proto));
    }
    Value& v = graph_.values[static_cast<size_t>(node.outputs[0])];
    v.type = TensorType{t.dtype, engine::FixedShape(t.dims)};
    v.constant = std::move(t);
    if (report_) report_->folded_nodes++;
    return Status::Ok();
  }
  MLC_RETURN_IF_ERROR(Canonicalize(proto, &node));
  return Emit(std::move(node));
}

Status Importer::ResolveAutoPad(const onnx::NodeProto& proto, Node& node,
                                const std::string& auto_pad) {
  if (auto_pad.empty() || auto_pad == "NOTSET") return Status::Ok();
  if (node.inputs.empty() || node.inputs[0] < 0)
    return InvalidArgument("{}: the input is missing", Describe(proto));
  const TensorType& x = graph_.values[static_cast<size_t>(node.inputs[0])].type;
  if (x.shape.size() < 3)
    return InvalidArgument("{}: input rank {} is below 3", Describe(proto), x.shape.size());
  size_t spatial = x.shape.size() - 2;
  std::vector<int64_t> kernel;
  if (const auto* k = node.Find("kernel_shape")) {
    kernel = k->ints;
  } else if (node.inputs.size() > 1 && node.inputs[1] >= 0) {
    const TensorType& w = graph_.values[static_cast<size_t>(node.inputs[1])].type;
    for (size_t i = 2; i < w.shape.size(); ++i) kernel.push_back(w.shape[i].value);
  }
  if (kernel.size() != spatial)
    return InvalidArgument("{}: kernel_shape does not match the input rank", Describe(proto));
  std::vector<int64_t> strides(spatial, 1), dilations(spatial, 1), pads(2 * spatial, 0);
  if (const auto* s = node.Find("strides"); s && s->ints.size() == spatial) strides = s->ints;
  if (const auto* d = node.Find("dilations"); d && d->ints.size() == spatial) dilations = d->ints;
  if (auto_pad == "VALID") {
    node.SetInts("pads", pads);
    return Status::Ok();
  }
  if (auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    return InvalidArgument("{}: auto_pad '{}' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID",
                           Describe(proto), auto_pad);
  for (size_t i = 0; i < spatial; ++i) {
    const Dim& d = x.shape[2 + i];
    if (d.batch)
      return Unsupported("{}: auto_pad with a batch-dependent spatial size", Describe(proto));
    if (strides[i] < 1 || dilations[i] < 1 || kernel[i] < 1)
      return InvalidArgument("{}: strides, dilations and kernel must be >= 1", Describe(proto));
    int64_t out = (d.value + strides[i] - 1) / strides[i];
    int64_t span = (kernel[i] - 1) * dilations[i] + 1;
    int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + span - d.value);
    int64_t small = total / 2, big = total - small;
    pads[i] = auto_pad == "SAME_UPPER" ? small : big;
    pads[spatial + i] = auto_pad == "SAME_UPPER" ? big : small;
  }
  node.SetInts("pads", pads);
  return Status::Ok();
}

Status Importer::Canonicalize(const onnx::NodeProto& proto, Node* out) {
  Node& node = *out;
  OnnxAttrs a(proto);
  const std::string& op = proto.op_type();
  const std::string where = Describe(proto);
  auto copy_ints = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (a.Has(n))
        node.SetInts(n, a.Find(n)->ints_size() ? a.Ints(n) : std::vector<int64_t>{a.Int(n, 0)});
  };
  auto copy_floats = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (a.Has(n))
        node.SetFloats(n,
                       a.Find(n)->floats_size() ? a.Floats(n) : std::vector<float>{a.Float(n, 0)});
  };
  auto known = [&](std::initializer_list<const char*> names) -> Status {
    for (const auto& attr : proto.attribute()) {
      bool ok = false;
      for (const char* n : names) ok |= attr.name() == n;
      if (!ok) return Unsupported("{}: attribute '{}' is not supported", where, attr.name());
    }
    return Status::Ok();
  };
  auto set_input = [&](size_t slot, int value) {
    if (node.inputs.size() <= slot) node.inputs.resize(slot + 1, -1);
    node.inputs[slot] = value;
  };
  if (op == "Dropout") {
    MLC_RETURN_IF_ERROR(known({"ratio", "seed", "is_test"}));
    if (node.inputs.empty() || node.inputs[0] < 0 || node.outputs.empty())
      return InvalidArgument("{}: Dropout needs an input and an output", where);
    if (node.inputs.size() > 2 && node.inputs[2] >= 0) {
      const Value& training = graph_.values[static_cast<size_t>(node.inputs[2])];
      if (!training.constant || training.constant->bytes.empty() ||
          training.constant->bytes[0] != 0)
        return Unsupported(
            "{}: training mode (random dropout) is not supported; export in eval mode", where);
    }
    if (node.outputs.size() > 1)
      return Unsupported("{}: the Dropout mask output (bool) is not supported", where);
    node.op = OpType::kIdentity;
    node.inputs.resize(1);
    return Status::Ok();
  }
  if (!engine::OpTypeFromName(op, &node.op) || static_cast<int>(node.op) >= 200)
    return Unsupported("{}: operator {} is not supported", where, op);
  // Counts are checked before any input is looked at (old-opset forms take fewer inputs; the
  // engine's schema checks the canonical form again after conversion).
  if (node.inputs.empty() || node.inputs[0] < 0)
    if (node.op != OpType::kRange && node.op != OpType::kConstantOfShape)
      return InvalidArgument("{}: the first input is missing", where);
  if (node.outputs.empty()) return InvalidArgument("{}: the node has no outputs", where);
  switch (node.op) {
    case OpType::kIdentity:
    case OpType::kRelu:
    case OpType::kSigmoid:
    case OpType::kTanh:
    case OpType::kExp:
    case OpType::kLog:
    case OpType::kSqrt:
    case OpType::kNeg:
    case OpType::kAbs:
    case OpType::kErf:
    case OpType::kReciprocal:
    case OpType::kFloor:
    case OpType::kCeil:
    case OpType::kSign:
    case OpType::kSin:
    case OpType::kCos:
    case OpType::kSoftplus:
    case OpType::kSoftsign:
    case OpType::kMish:
    case OpType::kHardSwish:
    case OpType::kRound:
    case OpType::kMatMul:
    case OpType::kPRelu:
    case OpType::kGlobalAveragePool:
    case OpType::kGlobalMaxPool:
    case OpType::kShape:
    case OpType::kExpand:
    case OpType::kRange:
    case OpType::kSum:
    case OpType::kMax:
    case OpType::kMin:
    case OpType::kMean:
      MLC_RETURN_IF_ERROR(known({"start", "end", "consumed_inputs"}));
      copy_ints({"start", "end"});
      return Status::Ok();
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv:
    case OpType::kPow:
      if (a.Has("broadcast") && a.Int("broadcast", 0) != 0 && a.Has("axis"))
        return Unsupported("{}: legacy broadcast with an axis (opset < 7)", where);
      MLC_RETURN_IF_ERROR(known({"broadcast", "consumed_inputs"}));
      return Status::Ok();
    case OpType::kMod:
      MLC_RETURN_IF_ERROR(known({"fmod"}));
      copy_ints({"fmod"});
      return Status::Ok();
    case OpType::kLeakyRelu:
    case OpType::kElu:
    case OpType::kCelu:
    case OpType::kThresholdedRelu:
      MLC_RETURN_IF_ERROR(known({"alpha"}));
      copy_floats({"alpha"});
      return Status::Ok();
    case OpType::kHardSigmoid:
    case OpType::kSelu:
      MLC_RETURN_IF_ERROR(known({"alpha", "beta", "gamma"}));
      copy_floats({"alpha", "beta", "gamma"});
      return Status::Ok();
    case OpType::kClip:
      MLC_RETURN_IF_ERROR(known({"min", "max"}));
      if (opset_ < 11) {
        node.inputs.resize(1);
        if (a.Has("min")) set_input(1, ConstF32(node.name + "_min", {a.Float("min", 0)}, true));
        if (a.Has("max")) set_input(2, ConstF32(node.name + "_max", {a.Float("max", 0)}, true));
      }
      return Status::Ok();
    case OpType::kSoftmax:
    case OpType::kLogSoftmax:
    case OpType::kHardmax:
      MLC_RETURN_IF_ERROR(known({"axis"}));
      node.SetInts("axis", {a.Int("axis", opset_ < 13 ? 1 : -1)});
      node.SetInts("coerce_2d", {opset_ < 13 ? 1 : 0});
      return Status::Ok();
    case OpType::kCast: {
      MLC_RETURN_IF_ERROR(known({"to", "saturate"}));
      int64_t to = a.Int("to", 0);
      if (const auto* t = a.Find("to"); t && t->type() == onnx::AttributeProto::STRING)
        return Unsupported("{}: Cast with a string 'to' (opset < 6)", where);
      if (to != 1 && to != 7)
        return Unsupported("{}: cast to element type {} is not supported", where,
                           OnnxTypeName(static_cast<int>(to)));
      node.SetInts("to", {to});
      return Status::Ok();
    }
    case OpType::kConv:
      MLC_RETURN_IF_ERROR(
          known({"auto_pad", "kernel_shape", "strides", "pads", "dilations", "group"}));
      copy_ints({"kernel_shape", "strides", "pads", "dilations", "group"});
      return ResolveAutoPad(proto, node, a.Str("auto_pad", "NOTSET"));
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      MLC_RETURN_IF_ERROR(known({"auto_pad", "kernel_shape", "strides", "pads", "dilations",
                                 "ceil_mode", "storage_order", "count_include_pad"}));
      copy_ints({"kernel_shape", "strides", "pads", "dilations", "ceil_mode", "storage_order",
                 "count_include_pad"});
      return ResolveAutoPad(proto, node, a.Str("auto_pad", "NOTSET"));
    case OpType::kGemm:
      MLC_RETURN_IF_ERROR(known({"alpha", "beta", "transA", "transB", "broadcast"}));
      copy_ints({"transA", "transB"});
      copy_floats({"alpha", "beta"});
      return Status::Ok();
    case OpType::kBatchNormalization:
      MLC_RETURN_IF_ERROR(
          known({"epsilon", "momentum", "training_mode", "spatial", "is_test", "consumed_inputs"}));
      if (a.Has("spatial") && a.Int("spatial", 1) != 1)
        return Unsupported("{}: spatial=0 is not supported", where);
      if (node.outputs.size() > 1 && opset_ < 14)
        return Unsupported(
            "{}: training outputs of BatchNormalization before opset 14 are not supported", where);
      copy_floats({"epsilon", "momentum"});
      copy_ints({"training_mode"});
      return Status::Ok();
    case OpType::kInstanceNormalization:
      MLC_RETURN_IF_ERROR(known({"epsilon"}));
      copy_floats({"epsilon"});
      return Status::Ok();
    case OpType::kConcat:
    case OpType::kFlatten:
    case OpType::kGather:
      MLC_RETURN_IF_ERROR(known({"axis"}));
      copy_ints({"axis"});
      return Status::Ok();
    case OpType::kTranspose:
      MLC_RETURN_IF_ERROR(known({"perm"}));
      copy_ints({"perm"});
      return Status::Ok();
    case OpType::kReshape:
      MLC_RETURN_IF_ERROR(known({"allowzero", "shape", "consumed_inputs"}));
      if (a.Has("shape")) set_input(1, ConstI64(node.name + "_shape", a.Ints("shape")));
      copy_ints({"allowzero"});
      return Status::Ok();
    case OpType::kSqueeze:
    case OpType::kUnsqueeze:
      MLC_RETURN_IF_ERROR(known({"axes"}));
      if (a.Has("axes")) set_input(1, ConstI64(node.name + "_axes", a.Ints("axes")));
      return Status::Ok();
    case OpType::kSlice:
      MLC_RETURN_IF_ERROR(known({"starts", "ends", "axes"}));
      if (a.Has("starts")) {
        set_input(1, ConstI64(node.name + "_starts", a.Ints("starts")));
        set_input(2, ConstI64(node.name + "_ends", a.Ints("ends")));
        if (a.Has("axes")) set_input(3, ConstI64(node.name + "_axes", a.Ints("axes")));
      }
      return Status::Ok();
    case OpType::kConstantOfShape: {
      MLC_RETURN_IF_ERROR(known({"value"}));
      if (const auto* v = a.Find("value")) {
        MLC_ASSIGN_OR_RETURN(Tensor t, TensorFromProto(v->t(), where + " value"));
        if (t.NumElements() != 1) return InvalidArgument("{}: value must hold one element", where);
        node.SetInts("dtype", {static_cast<int64_t>(t.dtype)});
        if (t.dtype == DType::kFloat32)
          node.SetFloats("value", {t.Data<float>()[0]});
        else
          node.SetInts("value", {t.Data<int64_t>()[0]});
      }
      return Status::Ok();
    }
    case OpType::kReduceMean:
    case OpType::kReduceSum:
    case OpType::kReduceMax:
    case OpType::kReduceMin:
    case OpType::kReduceProd:
    case OpType::kReduceL1:
    case OpType::kReduceL2:
    case OpType::kReduceSumSquare:
    case OpType::kReduceLogSum:
    case OpType::kReduceLogSumExp:
      MLC_RETURN_IF_ERROR(known({"axes", "keepdims", "noop_with_empty_axes"}));
      copy_ints({"axes", "keepdims", "noop_with_empty_axes"});
      if (node.inputs.size() > 1) {
        if (node.inputs[1] >= 0) {
          const Value& axes = graph_.values[static_cast<size_t>(node.inputs[1])];
          if (!axes.constant) return Unsupported("{}: axes must be a constant", where);
          const int64_t* p = axes.constant->Data<int64_t>();
          node.SetInts("axes", std::vector<int64_t>(p, p + axes.constant->NumElements()));
        }
        node.inputs.resize(1);
      }
      return Status::Ok();
    case OpType::kPad: {
      MLC_RETURN_IF_ERROR(known({"mode", "pads", "value", "paddings"}));
      std::string mode = a.Str("mode", "constant");
      int64_t mode_code = mode == "constant" ? 0 : mode == "reflect" ? 1 : mode == "edge" ? 2 : -1;
      if (mode_code < 0) return Unsupported("{}: pad mode '{}' is not supported", where, mode);
      node.SetInts("mode", {mode_code});
      if (opset_ < 11) {
        set_input(
            1, ConstI64(node.name + "_pads", a.Has("pads") ? a.Ints("pads") : a.Ints("paddings")));
        set_input(2, ConstF32(node.name + "_value", {a.Float("value", 0)}, true));
      }
      if (node.inputs.size() > 3)
        return Unsupported("{}: Pad axes input (opset 18) is not supported", where);
      return Status::Ok();
    }
    case OpType::kSplit:
      MLC_RETURN_IF_ERROR(known({"axis", "split", "num_outputs"}));
      if (a.Has("num_outputs")) return Unsupported("{}: num_outputs (opset 18)", where);
      copy_ints({"axis"});
      if (a.Has("split")) set_input(1, ConstI64(node.name + "_split", a.Ints("split")));
      return Status::Ok();
    case OpType::kTile:
      MLC_RETURN_IF_ERROR(known({}));
      return Status::Ok();
    case OpType::kArgMax:
    case OpType::kArgMin:
      MLC_RETURN_IF_ERROR(known({"axis", "keepdims", "select_last_index"}));
      copy_ints({"axis", "keepdims", "select_last_index"});
      return Status::Ok();
    case OpType::kCumSum:
      MLC_RETURN_IF_ERROR(known({"exclusive", "reverse"}));
      copy_ints({"exclusive", "reverse"});
      return Status::Ok();
    case OpType::kDepthToSpace: {
      MLC_RETURN_IF_ERROR(known({"blocksize", "mode"}));
      copy_ints({"blocksize"});
      std::string mode = a.Str("mode", "DCR");
      if (mode != "DCR" && mode != "CRD")
        return InvalidArgument("{}: mode '{}' is not DCR or CRD", where, mode);
      node.SetInts("mode", {mode == "CRD" ? 1 : 0});
      return Status::Ok();
    }
    case OpType::kSpaceToDepth:
      MLC_RETURN_IF_ERROR(known({"blocksize"}));
      copy_ints({"blocksize"});
      return Status::Ok();
    case OpType::kTrilu:
      MLC_RETURN_IF_ERROR(known({"upper"}));
      copy_ints({"upper"});
      return Status::Ok();
    default:
      return Unsupported("{}: operator {} is not supported", where, op);
  }
}

Result<std::optional<std::vector<Dim>>> Importer::SymbolicValues(int value) {
  if (value < 0) return std::optional<std::vector<Dim>>{};
  const Value& v = graph_.values[static_cast<size_t>(value)];
  if (v.symbolic) return v.symbolic;
  if (v.constant && v.constant->dtype == DType::kInt64 && v.constant->NumElements() <= 64) {
    std::vector<Dim> dims;
    for (int64_t i = 0; i < v.constant->NumElements(); ++i)
      dims.push_back(Dim{v.constant->Data<int64_t>()[i], false});
    return std::optional<std::vector<Dim>>(dims);
  }
  return std::optional<std::vector<Dim>>{};
}

// Shape arithmetic on batch-dependent values (Shape -> Gather -> Unsqueeze -> Concat -> Reshape
// chains): tracked symbolically so the consumer's parameter becomes a constant.
bool Importer::TrySymbolic(const Node& node) {
  if (node.outputs.size() != 1) return false;
  Value& out = graph_.values[static_cast<size_t>(node.outputs[0])];
  if (out.type.dtype != DType::kInt64 || out.type.shape.size() > 1 ||
      engine::HasBatchDim(out.type.shape))
    return false;
  std::vector<std::optional<std::vector<Dim>>> in;
  bool any_symbolic = false;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    auto r = SymbolicValues(node.inputs[i]);
    if (!r.ok()) return false;
    in.push_back(*r);
    if (node.inputs[i] >= 0 && graph_.values[static_cast<size_t>(node.inputs[i])].symbolic)
      any_symbolic = true;
  }
  std::vector<Dim> result;
  switch (node.op) {
    case OpType::kShape: {
      const Shape& s = graph_.values[static_cast<size_t>(node.inputs[0])].type.shape;
      int64_t rank = static_cast<int64_t>(s.size());
      int64_t start = node.Int("start", 0), end = node.Int("end", rank);
      if (start < 0) start += rank;
      if (end < 0) end += rank;
      start = std::clamp<int64_t>(start, 0, rank);
      end = std::clamp<int64_t>(end, 0, rank);
      for (int64_t i = start; i < end; ++i) result.push_back(s[static_cast<size_t>(i)]);
      any_symbolic = true;
      break;
    }
    case OpType::kIdentity:
    case OpType::kUnsqueeze:
    case OpType::kSqueeze:
    case OpType::kCast:
    case OpType::kReshape:
    case OpType::kFlatten:
      if (!in[0] || !any_symbolic) return false;
      result = *in[0];
      break;
    case OpType::kGather: {
      if (!in[0] || !in[1] || !any_symbolic || node.Int("axis", 0) != 0) return false;
      for (const Dim& idx : *in[1]) {
        if (idx.batch) return false;
        int64_t i = idx.value < 0 ? idx.value + static_cast<int64_t>(in[0]->size()) : idx.value;
        if (i < 0 || i >= static_cast<int64_t>(in[0]->size())) return false;
        result.push_back((*in[0])[static_cast<size_t>(i)]);
      }
      break;
    }
    case OpType::kConcat:
      if (!any_symbolic) return false;
      for (const auto& part : in) {
        if (!part) return false;
        result.insert(result.end(), part->begin(), part->end());
      }
      break;
    case OpType::kSlice: {
      if (!any_symbolic || !in[0] || !in[1] || !in[2]) return false;
      int64_t n = static_cast<int64_t>(in[0]->size());
      if (in[1]->size() != 1 || (*in[1])[0].batch || (*in[2])[0].batch) return false;
      int64_t step = in.size() > 4 && in[4] ? (*in[4])[0].value : 1;
      if (step != 1) return false;
      int64_t s = (*in[1])[0].value, e = (*in[2])[0].value;
      if (s < 0) s += n;
      if (e < 0) e += n;
      s = std::clamp<int64_t>(s, 0, n);
      e = std::clamp<int64_t>(e, 0, n);
      for (int64_t i = s; i < e; ++i) result.push_back((*in[0])[static_cast<size_t>(i)]);
      break;
    }
    case OpType::kMul:
    case OpType::kDiv:
    case OpType::kAdd:
    case OpType::kSub: {
      if (!any_symbolic || !in[0] || !in[1]) return false;
      size_t n = std::max(in[0]->size(), in[1]->size());
      for (size_t i = 0; i < n; ++i) {
        const Dim& x = in[0]->size() == 1 ? (*in[0])[0] : (*in[0])[i];
        const Dim& y = in[1]->size() == 1 ? (*in[1])[0] : (*in[1])[i];
        Dim r;
        if ((in[0]->size() != 1 && in[0]->size() != n) ||
            (in[1]->size() != 1 && in[1]->size() != n))
          return false;
        if (!ScalarDimOp(x, y, node.op, &r)) return false;
        result.push_back(r);
      }
      break;
    }
    default:
      return false;
  }
  int64_t expected = out.type.shape.empty() ? 1 : out.type.shape[0].value;
  if (static_cast<int64_t>(result.size()) != expected) return false;
  bool fixed = std::none_of(result.begin(), result.end(), [](const Dim& d) { return d.batch; });
  if (fixed) {
    std::vector<int64_t> values;
    for (const Dim& d : result) values.push_back(d.value);
    out.constant = Tensor::FromInt64s(engine::ResolveShape(out.type.shape, 1), values);
    return true;
  }
  out.symbolic = result;
  return false;  // the node stays; dead code elimination drops it once its users are constants
}

// A Reshape/Expand whose shape input is symbolic gets an equivalent constant: batch-dependent
// entries become 0 (copy the input dim) or -1 (infer).
Status Importer::MaterializeShapeParameter(Node& node) {
  if ((node.op != OpType::kReshape && node.op != OpType::kExpand) || node.inputs.size() < 2 ||
      node.inputs[1] < 0)
    return Status::Ok();
  const Value& shape_value = graph_.values[static_cast<size_t>(node.inputs[1])];
  if (!shape_value.symbolic) return Status::Ok();
  const std::vector<Dim>& target = *shape_value.symbolic;
  const Shape& input = graph_.values[static_cast<size_t>(node.inputs[0])].type.shape;
  std::vector<int64_t> encoded;
  if (node.op == OpType::kExpand) {
    size_t offset = target.size() >= input.size() ? target.size() - input.size() : 0;
    for (size_t i = 0; i < target.size(); ++i) {
      if (!target[i].batch) {
        encoded.push_back(target[i].value);
      } else if (i >= offset && input[i - offset] == target[i]) {
        encoded.push_back(1);
      } else {
        return Unsupported(
            "node '{}' (Expand): target shape depends on the batch size in a way that cannot be "
            "expressed",
            node.name);
      }
    }
  } else {
    if (node.Int("allowzero", 0) != 0)
      return Unsupported("node '{}' (Reshape): allowzero with a batch-dependent shape", node.name);
    int batch_entries = 0;
    for (size_t i = 0; i < target.size(); ++i) {
      if (!target[i].batch) {
        encoded.push_back(target[i].value);
      } else if (i < input.size() && input[i] == target[i]) {
        encoded.push_back(0);
      } else {
        encoded.push_back(-1);
        ++batch_entries;
      }
    }
    if (batch_entries > 1)
      return Unsupported("node '{}' (Reshape): more than one batch-dependent dimension to infer",
                         node.name);
  }
  node.inputs[1] = ConstI64(node.name + "_shape", encoded);
  return Status::Ok();
}

Status Importer::Emit(Node node) {
  MLC_RETURN_IF_ERROR(MaterializeShapeParameter(node));
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    int v = node.inputs[i];
    if (v >= 0 && IsParameterSlot(node.op, i) && graph_.values[static_cast<size_t>(v)].symbolic)
      return Unsupported(
          "node '{}' ({}): input {} depends on the batch size; compile with a fixed batch "
          "(--batch)",
          node.name, engine::OpTypeName(node.op), i);
  }
  MLC_RETURN_IF_ERROR(InferNode(graph_, node));
  // Constant folding: every input known -> evaluate now with the reference kernels.
  bool all_constant = !node.inputs.empty();
  for (int v : node.inputs)
    if (v >= 0 && !graph_.values[static_cast<size_t>(v)].constant) all_constant = false;
  if (node.op == OpType::kShape) {
    const Shape& s = graph_.values[static_cast<size_t>(node.inputs[0])].type.shape;
    if (!engine::HasBatchDim(s)) all_constant = true;
  }
  if (all_constant) {
    // Fold only fixed-shape outputs of bounded size.
    int64_t out_elements = 0;
    for (int v : node.outputs) {
      const Shape& shape = graph_.values[static_cast<size_t>(v)].type.shape;
      Result<int64_t> n = engine::CheckedNumElements(engine::ResolveShape(shape, 1), "output");
      out_elements += engine::HasBatchDim(shape) || !n.ok() ? kMaxFoldElements + 1 : *n;
    }
    if (out_elements <= kMaxFoldElements) {
      std::vector<const Tensor*> inputs;
      Tensor shape_input;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        int v = node.inputs[i];
        if (v < 0) {
          inputs.push_back(nullptr);
        } else if (!graph_.values[static_cast<size_t>(v)].constant) {  // Shape of a fixed tensor
          const TensorType& t = graph_.values[static_cast<size_t>(v)].type;
          shape_input = Tensor::Make(t.dtype, engine::ResolveShape(t.shape, 1));
          inputs.push_back(&shape_input);
        } else {
          inputs.push_back(&*graph_.values[static_cast<size_t>(v)].constant);
        }
      }
      engine::PlanNode plan_node;
      plan_node.op = node.op;
      plan_node.name = node.name;
      plan_node.attrs = node.attrs;
      plan_node.outputs.assign(node.outputs.begin(), node.outputs.end());
      std::vector<Tensor> results;
      MLC_RETURN_IF_ERROR(
          engine::EvaluateNode(plan_node, inputs, &results, engine::KernelOptions{false}));
      for (size_t i = 0; i < node.outputs.size(); ++i)
        graph_.values[static_cast<size_t>(node.outputs[i])].constant = std::move(results[i]);
      if (report_) report_->folded_nodes++;
      return Status::Ok();
    }
  }
  if (TrySymbolic(node)) {
    if (report_) report_->folded_nodes++;
    return Status::Ok();
  }
  graph_.nodes.push_back(std::move(node));
  return Status::Ok();
}

// ---- plan emission ----

Result<engine::Plan> EmitPlan(Graph& g, const std::string& model_name) {
  engine::Plan plan;
  plan.model_name = model_name;
  plan.producer = "mlcapsule-compiler";
  // One allocation for all constants (each is padded to 64 bytes).
  size_t constant_bytes = 0;
  for (const Value& v : g.values)
    if (v.constant) constant_bytes += (v.constant->bytes.size() + 63) / 64 * 64;
  plan.constants.Reserve(constant_bytes);
  std::vector<int32_t> index(g.values.size(), -1);
  auto tensor_for = [&](int v) -> int32_t {
    if (v < 0) return engine::kNoTensor;
    if (index[static_cast<size_t>(v)] >= 0) return index[static_cast<size_t>(v)];
    Value& value = g.values[static_cast<size_t>(v)];
    int32_t t;
    if (value.constant) {
      t = plan.AddConstant(value.name, value.constant->dtype,
                           engine::FixedShape(value.constant->dims), value.constant->bytes.data());
      value.constant->bytes = {};  // the plan holds the bytes now
    } else {
      engine::PlanTensor pt;
      pt.name = value.name;
      pt.type = value.type;
      pt.kind = value.graph_input    ? engine::TensorKind::kInput
                : value.graph_output ? engine::TensorKind::kOutput
                                     : engine::TensorKind::kIntermediate;
      plan.tensors.push_back(pt);
      t = static_cast<int32_t>(plan.tensors.size() - 1);
    }
    index[static_cast<size_t>(v)] = t;
    return t;
  };
  for (int v : g.inputs) plan.inputs.push_back(tensor_for(v));
  for (const Node& n : g.nodes) {
    if (n.dead) continue;
    engine::PlanNode pn;
    pn.op = n.op;
    pn.name = n.name;
    pn.attrs = n.attrs;
    for (int v : n.inputs) pn.inputs.push_back(tensor_for(v));
    for (int v : n.outputs) pn.outputs.push_back(tensor_for(v));
    plan.nodes.push_back(std::move(pn));
  }
  for (int v : g.outputs) plan.outputs.push_back(tensor_for(v));
  return plan;
}

}  // namespace

namespace {

Result<engine::Plan> CompileParsed(std::unique_ptr<onnx::ModelProto> model,
                                   const CompileOptions& options, CompileReport* report) {
  Graph graph;
  std::string model_name;
  {
    model_name = model->graph().name();
    Importer importer(options, report);
    MLC_RETURN_IF_ERROR(importer.Import(*model));
    graph = std::move(importer.graph());
  }  // the protobuf model is freed before optimisation
  RemoveDeadNodes(graph);
  if (options.optimize) {
    int fused = 0;
    MLC_RETURN_IF_ERROR(FuseGraph(graph, &fused));
    if (report) report->fused_nodes = fused;
    RemoveDeadNodes(graph);
  }
  if (options.channels_last) {
    int transposes = 0;
    MLC_RETURN_IF_ERROR(ChannelsLast(graph, &transposes));
    if (report) report->layout_transposes = transposes;
    RemoveDeadNodes(graph);
  }
  MLC_ASSIGN_OR_RETURN(engine::Plan plan, EmitPlan(graph, model_name));
  if (report) report->plan_nodes = static_cast<int>(plan.nodes.size());
  Status valid = engine::ValidatePlan(plan);
  if (!valid.ok()) return InternalError("compiled plan failed validation: {}", valid.message());
  return plan;
}

Status CheckOptions(const CompileOptions& options) {
  if (options.fixed_batch < 0 || options.fixed_batch > engine::kMaxBatch)
    return InvalidArgument("batch {} is outside [0, {}]", options.fixed_batch, engine::kMaxBatch);
  return Status::Ok();
}

}  // namespace

Result<engine::Plan> CompileOnnx(std::string_view model_bytes, const CompileOptions& options,
                                 CompileReport* report) {
  MLC_RETURN_IF_ERROR(CheckOptions(options));
  MLC_ASSIGN_OR_RETURN(auto model, ParseModel(model_bytes));
  return CompileParsed(std::move(model), options, report);
}

Result<engine::Plan> CompileOnnx(std::string&& model_bytes, const CompileOptions& options,
                                 CompileReport* report) {
  MLC_RETURN_IF_ERROR(CheckOptions(options));
  Result<std::unique_ptr<onnx::ModelProto>> model = ParseModel(model_bytes);
  std::string().swap(model_bytes);  // the parsed model holds everything now
  if (!model.ok()) return model.status();
  return CompileParsed(std::move(model).value(), options, report);
}

}  // namespace mlcapsule::compiler

namespace mlcapsule::compiler {

Result<std::vector<std::string>> OnnxInputNames(std::string_view model_bytes) {
  MLC_ASSIGN_OR_RETURN(auto model, ParseModel(model_bytes));
  std::set<std::string> initializers;
  for (const auto& init : model->graph().initializer()) initializers.insert(init.name());
  std::vector<std::string> names;
  for (const auto& input : model->graph().input()) {
    if (initializers.count(input.name())) continue;
    if (!input.type().has_tensor_type())
      return Unsupported(
          "input '{}' has a sequence, map or optional type; element type {} is not supported "
          "(tensors only)",
          input.name(),
          input.type().has_sequence_type()   ? "sequence"
          : input.type().has_optional_type() ? "optional"
                                             : "map");
    names.push_back(input.name());
  }
  return names;
}

}  // namespace mlcapsule::compiler
