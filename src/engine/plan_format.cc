// Plan byte format: serialisation, parsing of untrusted bytes, and semantic validation.
//
// Grammar (all integers little-endian; docs/plan-format.md is the reference):
//   plan       := magic:"MLCPLAN\0" version:u32(=1) flags:u32(=0)
//                 model_name:str producer:str
//                 tensor_count:u32 tensor{tensor_count}
//                 node_count:u32 node{node_count}
//                 input_count:u32 i32{input_count} output_count:u32 i32{output_count}
//                 constants_size:u64 pad constants:u8{constants_size}   ; pad to a 64-byte offset
//                 end:"MLCPEND\0"
//   str        := length:u32 (<= 4096) u8{length}
//   tensor     := name:str dtype:u8 kind:u8 rank:u8 (<= 8) dim{rank} data_offset:u64 data_bytes:u64
//   dim        := value:i64 batch:u8 (0 or 1)
//   node       := op:u16 name:str in_count:u32 i32{in_count} out_count:u32 i32{out_count}
//                 attr_count:u32 (<= 64) attr{attr_count}
//   attr       := name:str kind:u8 (1 ints, 2 floats) count:u32 (<= 65536) (i64|f32){count}
// Every count is checked against its limit and against the bytes that remain before anything is
// allocated, so a hostile length cannot make the parser allocate more than the input's size.
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "base/bytes.h"
#include "engine/op.h"
#include "engine/plan.h"

namespace mlcapsule::engine {
namespace {

constexpr char kMagic[8] = {'M', 'L', 'C', 'P', 'L', 'A', 'N', '\0'};
constexpr char kEndMagic[8] = {'M', 'L', 'C', 'P', 'E', 'N', 'D', '\0'};

}  // namespace

std::string SerializePlan(const Plan& plan) {
  ByteWriter w;
  w.Bytes(kMagic, sizeof(kMagic));
  w.Pod<uint32_t>(kPlanVersion);
  w.Pod<uint32_t>(0);
  w.Str(plan.model_name);
  w.Str(plan.producer);
  w.Pod<uint32_t>(static_cast<uint32_t>(plan.tensors.size()));
  for (const PlanTensor& t : plan.tensors) {
    w.Str(t.name);
    w.Pod<uint8_t>(static_cast<uint8_t>(t.type.dtype));
    w.Pod<uint8_t>(static_cast<uint8_t>(t.kind));
    w.Pod<uint8_t>(static_cast<uint8_t>(t.type.shape.size()));
    for (const Dim& d : t.type.shape) {
      w.Pod<int64_t>(d.value);
      w.Pod<uint8_t>(d.batch ? 1 : 0);
    }
    w.Pod<uint64_t>(t.data_offset);
    w.Pod<uint64_t>(t.data_bytes);
  }
  w.Pod<uint32_t>(static_cast<uint32_t>(plan.nodes.size()));
  for (const PlanNode& n : plan.nodes) {
    w.Pod<uint16_t>(static_cast<uint16_t>(n.op));
    w.Str(n.name);
    w.Pod<uint32_t>(static_cast<uint32_t>(n.inputs.size()));
    for (int32_t i : n.inputs) w.Pod<int32_t>(i);
    w.Pod<uint32_t>(static_cast<uint32_t>(n.outputs.size()));
    for (int32_t i : n.outputs) w.Pod<int32_t>(i);
    w.Pod<uint32_t>(static_cast<uint32_t>(n.attrs.size()));
    for (const Attribute& a : n.attrs) {
      w.Str(a.name);
      w.Pod<uint8_t>(static_cast<uint8_t>(a.kind));
      if (a.kind == AttrKind::kInts) {
        w.Pod<uint32_t>(static_cast<uint32_t>(a.ints.size()));
        w.Bytes(a.ints.data(), a.ints.size() * sizeof(int64_t));
      } else {
        w.Pod<uint32_t>(static_cast<uint32_t>(a.floats.size()));
        w.Bytes(a.floats.data(), a.floats.size() * sizeof(float));
      }
    }
  }
  w.Pod<uint32_t>(static_cast<uint32_t>(plan.inputs.size()));
  for (int32_t i : plan.inputs) w.Pod<int32_t>(i);
  w.Pod<uint32_t>(static_cast<uint32_t>(plan.outputs.size()));
  for (int32_t i : plan.outputs) w.Pod<int32_t>(i);
  w.Pod<uint64_t>(plan.constants.size());
  w.PadTo(64);
  w.Bytes(plan.constants.data(), plan.constants.size());
  w.Bytes(kEndMagic, sizeof(kEndMagic));
  return std::move(w.out());
}

namespace {
// `adopt`, when given, is the buffer `bytes` views: its constants are taken over instead of copied.
Result<Plan> ParsePlanImpl(std::span<const uint8_t> bytes, AlignedBuffer* adopt);
}  // namespace

Result<Plan> ParsePlan(std::span<const uint8_t> bytes) { return ParsePlanImpl(bytes, nullptr); }

Result<Plan> ParsePlan(AlignedBuffer bytes) {
  std::span<const uint8_t> view(bytes.data(), bytes.size());
  return ParsePlanImpl(view, &bytes);
}

namespace {
Result<Plan> ParsePlanImpl(std::span<const uint8_t> bytes, AlignedBuffer* adopt) {
  ByteReader r(bytes, "plan");
  char magic[8];
  MLC_RETURN_IF_ERROR(r.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    return InvalidArgument("not an MLCapsule plan (bad magic)");
  uint32_t version = 0, flags = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&version, "version"));
  if (version != kPlanVersion)
    return Unsupported("plan format version {} is not supported (this build reads version {})",
                       version, kPlanVersion);
  MLC_RETURN_IF_ERROR(r.Pod(&flags, "flags"));
  if (flags != 0) return InvalidArgument("plan flags {:#x} are not defined (must be 0)", flags);
  Plan plan;
  MLC_RETURN_IF_ERROR(r.Str(&plan.model_name, kMaxNameBytes, "model name"));
  MLC_RETURN_IF_ERROR(r.Str(&plan.producer, kMaxNameBytes, "producer"));

  uint32_t tensor_count = 0;
  MLC_RETURN_IF_ERROR(r.Count(&tensor_count, kMaxPlanTensors, 23, "tensor count"));
  plan.tensors.resize(tensor_count);
  for (uint32_t i = 0; i < tensor_count; ++i) {
    PlanTensor& t = plan.tensors[i];
    uint8_t dtype = 0, kind = 0, rank = 0;
    MLC_RETURN_IF_ERROR(r.Str(&t.name, kMaxNameBytes, "tensor name"));
    MLC_RETURN_IF_ERROR(r.Pod(&dtype, "tensor dtype"));
    MLC_RETURN_IF_ERROR(r.Pod(&kind, "tensor kind"));
    MLC_RETURN_IF_ERROR(r.Pod(&rank, "tensor rank"));
    if (!IsKnownDType(dtype))
      return InvalidArgument("tensor {} '{}' has unknown element type {}", i, t.name, dtype);
    if (kind > static_cast<uint8_t>(TensorKind::kConstant))
      return InvalidArgument("tensor {} '{}' has unknown kind {}", i, t.name, kind);
    if (rank > kMaxRank)
      return InvalidArgument("tensor {} '{}' has rank {}, over the limit {}", i, t.name, rank,
                             kMaxRank);
    t.type.dtype = static_cast<DType>(dtype);
    t.kind = static_cast<TensorKind>(kind);
    t.type.shape.resize(rank);
    for (Dim& d : t.type.shape) {
      uint8_t batch = 0;
      MLC_RETURN_IF_ERROR(r.Pod(&d.value, "dimension"));
      MLC_RETURN_IF_ERROR(r.Pod(&batch, "dimension flag"));
      if (batch > 1)
        return InvalidArgument("tensor '{}' has a bad dimension flag {}", t.name, batch);
      d.batch = batch == 1;
      if (d.value < 0 || d.value > kMaxTensorElements || (d.batch && d.value == 0))
        return InvalidArgument("tensor '{}' has dimension {} outside [0, {}]", t.name, d.value,
                               kMaxTensorElements);
    }
    MLC_RETURN_IF_ERROR(r.Pod(&t.data_offset, "data offset"));
    MLC_RETURN_IF_ERROR(r.Pod(&t.data_bytes, "data size"));
  }

  uint32_t node_count = 0;
  MLC_RETURN_IF_ERROR(r.Count(&node_count, kMaxPlanNodes, 18, "node count"));
  plan.nodes.resize(node_count);
  for (uint32_t i = 0; i < node_count; ++i) {
    PlanNode& n = plan.nodes[i];
    uint16_t op = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&op, "op code"));
    MLC_RETURN_IF_ERROR(r.Str(&n.name, kMaxNameBytes, "node name"));
    if (!IsKnownOpCode(op))
      return Unsupported("node {} '{}' has unknown op code {}", i, n.name, op);
    n.op = static_cast<OpType>(op);
    uint32_t count = 0;
    MLC_RETURN_IF_ERROR(r.Count(&count, kMaxNodeInputs, 4, "node input count"));
    n.inputs.resize(count);
    for (int32_t& x : n.inputs) MLC_RETURN_IF_ERROR(r.Pod(&x, "node input"));
    MLC_RETURN_IF_ERROR(r.Count(&count, kMaxNodeInputs, 4, "node output count"));
    n.outputs.resize(count);
    for (int32_t& x : n.outputs) MLC_RETURN_IF_ERROR(r.Pod(&x, "node output"));
    MLC_RETURN_IF_ERROR(r.Count(&count, kMaxNodeAttrs, 9, "attribute count"));
    n.attrs.resize(count);
    for (Attribute& a : n.attrs) {
      uint8_t kind = 0;
      uint32_t values = 0;
      MLC_RETURN_IF_ERROR(r.Str(&a.name, kMaxNameBytes, "attribute name"));
      MLC_RETURN_IF_ERROR(r.Pod(&kind, "attribute kind"));
      if (kind != 1 && kind != 2)
        return InvalidArgument("node '{}' attribute '{}' has unknown kind {}", n.name, a.name,
                               kind);
      a.kind = static_cast<AttrKind>(kind);
      size_t item = kind == 1 ? 8 : 4;
      MLC_RETURN_IF_ERROR(r.Count(&values, kMaxAttrValues, item, "attribute value count"));
      if (kind == 1) {
        a.ints.resize(values);
        MLC_RETURN_IF_ERROR(r.Bytes(a.ints.data(), values * item, "attribute values"));
      } else {
        a.floats.resize(values);
        MLC_RETURN_IF_ERROR(r.Bytes(a.floats.data(), values * item, "attribute values"));
      }
    }
  }
  uint32_t count = 0;
  MLC_RETURN_IF_ERROR(r.Count(&count, kMaxPlanTensors, 4, "graph input count"));
  plan.inputs.resize(count);
  for (int32_t& x : plan.inputs) MLC_RETURN_IF_ERROR(r.Pod(&x, "graph input"));
  MLC_RETURN_IF_ERROR(r.Count(&count, kMaxPlanTensors, 4, "graph output count"));
  plan.outputs.resize(count);
  for (int32_t& x : plan.outputs) MLC_RETURN_IF_ERROR(r.Pod(&x, "graph output"));
  uint64_t constants_size = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&constants_size, "constants size"));
  size_t pad = (64 - r.pos() % 64) % 64;
  MLC_RETURN_IF_ERROR(r.Skip(pad, "padding"));
  if (constants_size > kMaxConstantBytes || constants_size > r.remaining())
    return DataLoss("constants size {} exceeds the {} bytes left in the plan", constants_size,
                    r.remaining());
  if (adopt != nullptr && reinterpret_cast<uintptr_t>(bytes.data() + r.pos()) % 64 == 0) {
    const size_t offset = r.pos();
    MLC_RETURN_IF_ERROR(r.Skip(constants_size, "constants"));
    size_t allocation_bytes = 0;
    uint8_t* base = adopt->ReleaseAllocation(&allocation_bytes);
    const size_t base_offset = static_cast<size_t>(bytes.data() - base) + offset;
    plan.constants = AlignedBuffer::AdoptSensitive(base, allocation_bytes, base_offset,
                                                   static_cast<size_t>(constants_size));
  } else {
    plan.constants.Resize(static_cast<size_t>(constants_size));
    MLC_RETURN_IF_ERROR(r.Bytes(plan.constants.data(), constants_size, "constants"));
  }
  char end[8];
  MLC_RETURN_IF_ERROR(r.Bytes(end, sizeof(end), "end marker"));
  if (std::memcmp(end, kEndMagic, sizeof(kEndMagic)) != 0)
    return DataLoss("plan end marker is missing");
  if (r.remaining() != 0)
    return InvalidArgument("{} unexpected bytes after the plan's end", r.remaining());
  return plan;
}
}  // namespace

Status ValidatePlan(const Plan& plan) {
  const size_t tensor_count = plan.tensors.size();
  std::vector<uint8_t> defined(tensor_count, 0);
  auto check_index = [&](int32_t index, const std::string& where) -> Status {
    if (index < 0 || static_cast<size_t>(index) >= tensor_count)
      return InvalidArgument("{} refers to tensor {}, outside [0, {})", where, index, tensor_count);
    return Status::Ok();
  };
  for (size_t i = 0; i < tensor_count; ++i) {
    const PlanTensor& t = plan.tensors[i];
    if (t.type.shape.size() > static_cast<size_t>(kMaxRank))
      return InvalidArgument("tensor '{}' rank {} is over the limit {}", t.name,
                             t.type.shape.size(), kMaxRank);
    if (t.kind == TensorKind::kConstant) {
      if (HasBatchDim(t.type.shape))
        return InvalidArgument("constant '{}' has a batch dimension", t.name);
      Dims dims = ResolveShape(t.type.shape, 1);
      MLC_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(dims, "constant '" + t.name + "'"));
      uint64_t bytes = static_cast<uint64_t>(n) * DTypeSize(t.type.dtype);
      if (bytes != t.data_bytes)
        return InvalidArgument("constant '{}' of shape {} needs {} bytes but declares {}", t.name,
                               ShapeToString(t.type.shape), bytes, t.data_bytes);
      if (t.data_offset % 64 != 0 || t.data_offset > plan.constants.size() ||
          t.data_bytes > plan.constants.size() - t.data_offset)
        return InvalidArgument(
            "constant '{}' bytes [{}, +{}) are outside the {} constant bytes or unaligned", t.name,
            t.data_offset, t.data_bytes, plan.constants.size());
      defined[i] = 1;
    } else {
      Dims dims = ResolveShape(t.type.shape, 1);
      MLC_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(dims, "tensor '" + t.name + "'"));
      (void)n;
    }
  }
  std::unordered_set<int32_t> seen_inputs;
  for (int32_t index : plan.inputs) {
    MLC_RETURN_IF_ERROR(check_index(index, "graph input"));
    const PlanTensor& t = plan.tensors[static_cast<size_t>(index)];
    if (t.kind != TensorKind::kInput || !seen_inputs.insert(index).second)
      return InvalidArgument("graph input '{}' is not an input tensor or is listed twice", t.name);
    defined[static_cast<size_t>(index)] = 1;
  }
  for (size_t i = 0; i < tensor_count; ++i)
    if (plan.tensors[i].kind == TensorKind::kInput && !seen_inputs.count(static_cast<int32_t>(i)))
      return InvalidArgument("input tensor '{}' is not a graph input", plan.tensors[i].name);
  if (plan.inputs.empty() && plan.outputs.empty())
    return InvalidArgument("plan has no inputs and no outputs");

  KernelOptions options{false};
  for (size_t ni = 0; ni < plan.nodes.size(); ++ni) {
    const PlanNode& node = plan.nodes[ni];
    std::string where = fmt::format("node {} '{}' ({})", ni, node.name, OpTypeName(node.op));
    const OpSchema* schema = FindSchema(node.op);
    if (schema == nullptr)
      return Unsupported("{}: operator is not implemented by this engine", where);
    int n_in = static_cast<int>(node.inputs.size()), n_out = static_cast<int>(node.outputs.size());
    if (n_in < schema->min_inputs || n_in > schema->max_inputs)
      return InvalidArgument("{}: {} inputs, allowed {} to {}", where, n_in, schema->min_inputs,
                             schema->max_inputs);
    if (n_out < schema->min_outputs || n_out > schema->max_outputs)
      return InvalidArgument("{}: {} outputs, allowed {} to {}", where, n_out, schema->min_outputs,
                             schema->max_outputs);
    for (size_t a = 0; a < node.attrs.size(); ++a) {
      const Attribute& attr = node.attrs[a];
      bool allowed = false;
      for (std::string_view name : schema->attrs) allowed |= (name == attr.name);
      if (!allowed) return Unsupported("{}: attribute '{}' is not supported", where, attr.name);
      for (size_t b = 0; b < a; ++b)
        if (node.attrs[b].name == attr.name)
          return InvalidArgument("{}: attribute '{}' appears twice", where, attr.name);
      for (float f : attr.floats)
        if (std::isnan(f)) return InvalidArgument("{}: attribute '{}' holds NaN", where, attr.name);
    }
    std::vector<const TensorType*> types(node.inputs.size(), nullptr);
    std::vector<const void*> constants(node.inputs.size(), nullptr);
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      int32_t index = node.inputs[k];
      if (index == kNoTensor) {
        if (static_cast<int>(k) < schema->min_inputs)
          return InvalidArgument("{}: required input {} is absent", where, k);
        continue;
      }
      MLC_RETURN_IF_ERROR(check_index(index, where + " input"));
      if (!defined[static_cast<size_t>(index)])
        return InvalidArgument(
            "{}: input '{}' is used before it is computed (plans are in execution order)", where,
            plan.tensors[static_cast<size_t>(index)].name);
      types[k] = &plan.tensors[static_cast<size_t>(index)].type;
      if (plan.tensors[static_cast<size_t>(index)].kind == TensorKind::kConstant)
        constants[k] = plan.ConstantData(index);
    }
    NodeContext ctx(plan, node, types, constants, options);
    std::vector<TensorType> inferred;
    MLC_RETURN_IF_ERROR(schema->infer(ctx, &inferred));
    if (inferred.size() < node.outputs.size())
      return InternalError("{}: shape inference gave {} outputs", where, inferred.size());
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      int32_t index = node.outputs[k];
      MLC_RETURN_IF_ERROR(check_index(index, where + " output"));
      const PlanTensor& t = plan.tensors[static_cast<size_t>(index)];
      if (defined[static_cast<size_t>(index)] || t.kind == TensorKind::kConstant ||
          t.kind == TensorKind::kInput)
        return InvalidArgument("{}: output '{}' is written twice or is an input/constant", where,
                               t.name);
      if (!(inferred[k] == t.type))
        return InvalidArgument("{}: output '{}' is declared {} but the op produces {}", where,
                               t.name, t.type.ToString(), inferred[k].ToString());
      defined[static_cast<size_t>(index)] = 1;
    }
  }
  std::unordered_set<int32_t> seen_outputs;
  for (int32_t index : plan.outputs) {
    MLC_RETURN_IF_ERROR(check_index(index, "graph output"));
    const PlanTensor& t = plan.tensors[static_cast<size_t>(index)];
    if (t.kind != TensorKind::kOutput || !defined[static_cast<size_t>(index)] ||
        !seen_outputs.insert(index).second)
      return InvalidArgument("graph output '{}' is not an output tensor computed by the plan",
                             t.name);
  }
  for (size_t i = 0; i < tensor_count; ++i)
    if (plan.tensors[i].kind == TensorKind::kOutput && !seen_outputs.count(static_cast<int32_t>(i)))
      return InvalidArgument("output tensor '{}' is not a graph output", plan.tensors[i].name);
  return Status::Ok();
}

}  // namespace mlcapsule::engine
