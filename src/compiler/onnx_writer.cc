// ONNX ModelProto writer (see onnx_writer.h). Trusts nothing in the spec: every name, reference,
// size and the opset are checked before anything is serialized, and each error names the node,
// initializer or value it is about.
#include "compiler/onnx_writer.h"

#include <onnx/onnx_pb.h>

#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

namespace mlcapsule::compiler {
namespace {

// raw_data is little-endian by the ONNX spec; a plain copy of the floats is only right on a
// little-endian host, which is all MLCapsule builds for.
static_assert(std::endian::native == std::endian::little,
              "onnx_writer copies floats into raw_data as-is; add a byte swap for this host");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "raw_data holds IEEE-754 binary32 floats");

constexpr int64_t kMinOpset = 7;
constexpr int64_t kMaxOpset = 21;
constexpr int64_t kIrVersion = 7;
constexpr const char* kBatchParam = "batch";

// A graph input or output: a name, dims >= 0 or -1 (the symbolic batch).
Status CheckValueInfo(const OnnxValueInfo& value, std::string_view kind, size_t index) {
  if (value.name.empty()) return InvalidArgument("graph {} {} has an empty name", kind, index);
  for (size_t d = 0; d < value.dims.size(); ++d)
    if (value.dims[d] < -1)
      return InvalidArgument("graph {} '{}' dim {} is {}; a dim must be >= 0, or -1 for '{}'", kind,
                             value.name, d, value.dims[d], kBatchParam);
  return Status::Ok();
}

Status CheckInitializer(const OnnxInitializer& init, size_t index) {
  if (init.name.empty()) return InvalidArgument("initializer {} has an empty name", index);
  uint64_t count = 1;
  for (size_t d = 0; d < init.dims.size(); ++d) {
    const int64_t dim = init.dims[d];
    if (dim < 0)
      return InvalidArgument("initializer '{}' dim {} is {}; dims must be >= 0", init.name, d, dim);
    // A product past size_t could never match values.size(); stop before it wraps.
    if (dim != 0 && count > std::numeric_limits<size_t>::max() / static_cast<uint64_t>(dim))
      return InvalidArgument("initializer '{}' has too many elements (dims overflow)", init.name);
    count *= static_cast<uint64_t>(dim);
  }
  if (init.values.size() != count)
    return InvalidArgument("initializer '{}' has {} values, its dims need {}", init.name,
                           init.values.size(), count);
  return Status::Ok();
}

Status CheckNode(const OnnxNode& node, size_t index, const std::set<std::string>& defined) {
  if (node.name.empty())
    return InvalidArgument("node {} ({}) has an empty name", index, node.op_type);
  if (node.op_type.empty()) return InvalidArgument("node '{}' has an empty op_type", node.name);
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const std::string& input = node.inputs[i];
    if (input.empty()) continue;  // an omitted optional input
    if (!defined.contains(input))
      return InvalidArgument(
          "node '{}' ({}) input {} '{}' is not a graph input, an initializer or the output of an "
          "earlier node",
          node.name, node.op_type, i, input);
  }
  if (node.outputs.empty())
    return InvalidArgument("node '{}' ({}) has no outputs", node.name, node.op_type);
  std::set<std::string> attribute_names;
  for (size_t a = 0; a < node.attributes.size(); ++a) {
    const std::string& name = node.attributes[a].name;
    if (name.empty())
      return InvalidArgument("node '{}' ({}) attribute {} has an empty name", node.name,
                             node.op_type, a);
    if (!attribute_names.insert(name).second)
      return InvalidArgument("node '{}' ({}) has attribute '{}' twice", node.name, node.op_type,
                             name);
  }
  return Status::Ok();
}

// Every check of WriteOnnxModel's contract, in the order a reader of the spec would meet them.
Status Validate(const OnnxGraphSpec& spec) {
  if (spec.opset < kMinOpset || spec.opset > kMaxOpset)
    return InvalidArgument("opset {} is out of the range {} to {}", spec.opset, kMinOpset,
                           kMaxOpset);
  if (spec.graph_name.empty()) return InvalidArgument("the graph name is empty");
  if (spec.outputs.empty()) return InvalidArgument("graph '{}' has no outputs", spec.graph_name);

  // One namespace for every value: graph inputs, initializers and node outputs. ONNX would let an
  // initializer shadow an input (a default value); this writer never lists initializers as
  // inputs, so the same name twice can only be a mistake.
  std::set<std::string> defined;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    MLC_RETURN_IF_ERROR(CheckValueInfo(spec.inputs[i], "input", i));
    if (!defined.insert(spec.inputs[i].name).second)
      return InvalidArgument("graph input '{}' is declared twice", spec.inputs[i].name);
  }
  for (size_t i = 0; i < spec.initializers.size(); ++i) {
    const OnnxInitializer& init = spec.initializers[i];
    MLC_RETURN_IF_ERROR(CheckInitializer(init, i));
    if (!defined.insert(init.name).second)
      return InvalidArgument("initializer '{}' duplicates a graph input or initializer name",
                             init.name);
  }
  std::set<std::string> node_names;
  for (size_t n = 0; n < spec.nodes.size(); ++n) {
    const OnnxNode& node = spec.nodes[n];
    MLC_RETURN_IF_ERROR(CheckNode(node, n, defined));
    if (!node_names.insert(node.name).second)
      return InvalidArgument("node name '{}' is used twice", node.name);
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      const std::string& output = node.outputs[o];
      if (output.empty()) continue;  // an optional output the graph does not use
      if (!defined.insert(output).second)
        return InvalidArgument(
            "node '{}' ({}) output {} '{}' duplicates a graph input, initializer or earlier "
            "output",
            node.name, node.op_type, o, output);
    }
  }

  std::set<std::string> produced;
  for (const OnnxNode& node : spec.nodes) produced.insert(node.outputs.begin(), node.outputs.end());
  std::set<std::string> output_names;
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    const OnnxValueInfo& output = spec.outputs[i];
    MLC_RETURN_IF_ERROR(CheckValueInfo(output, "output", i));
    if (!output_names.insert(output.name).second)
      return InvalidArgument("graph output '{}' is declared twice", output.name);
    if (!produced.contains(output.name))
      return InvalidArgument("graph output '{}' is not produced by any node", output.name);
  }
  return Status::Ok();
}

void FillValueInfo(const OnnxValueInfo& value, onnx::ValueInfoProto* proto) {
  proto->set_name(value.name);
  auto* tensor_type = proto->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor_type->mutable_shape();
  for (int64_t d : value.dims) {
    auto* dim = shape->add_dim();
    if (d == -1)
      dim->set_dim_param(kBatchParam);
    else
      dim->set_dim_value(d);
  }
}

void FillInitializer(const OnnxInitializer& init, onnx::TensorProto* proto) {
  proto->set_name(init.name);
  proto->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : init.dims) proto->add_dims(d);
  std::string* raw = proto->mutable_raw_data();
  raw->resize(init.values.size() * sizeof(float));
  if (!init.values.empty()) std::memcpy(raw->data(), init.values.data(), raw->size());
}

void FillNode(const OnnxNode& node, onnx::NodeProto* proto) {
  proto->set_op_type(node.op_type);
  proto->set_name(node.name);
  for (const std::string& input : node.inputs) proto->add_input(input);
  for (const std::string& output : node.outputs) proto->add_output(output);
  for (const OnnxAttribute& attribute : node.attributes) {
    auto* a = proto->add_attribute();
    a->set_name(attribute.name);
    switch (attribute.kind) {
      case OnnxAttribute::Kind::kInt:
        a->set_type(onnx::AttributeProto::INT);
        a->set_i(attribute.i);
        break;
      case OnnxAttribute::Kind::kInts:
        a->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : attribute.ints) a->add_ints(v);
        break;
      case OnnxAttribute::Kind::kFloat:
        a->set_type(onnx::AttributeProto::FLOAT);
        a->set_f(attribute.f);
        break;
    }
  }
}

}  // namespace

Result<std::string> WriteOnnxModel(const OnnxGraphSpec& spec) {
  MLC_RETURN_IF_ERROR(Validate(spec));

  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name(spec.producer);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(spec.opset);

  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name(spec.graph_name);
  for (const OnnxValueInfo& input : spec.inputs) FillValueInfo(input, graph->add_input());
  for (const OnnxInitializer& init : spec.initializers)
    FillInitializer(init, graph->add_initializer());
  for (const OnnxNode& node : spec.nodes) FillNode(node, graph->add_node());
  for (const OnnxValueInfo& output : spec.outputs) FillValueInfo(output, graph->add_output());

  std::string bytes;
  // Protobuf refuses messages of 2 GiB and more; the weights are what makes a model that big.
  if (!model.SerializeToString(&bytes))
    return ResourceExhausted("graph '{}' could not be serialized (over protobuf's 2 GiB limit?)",
                             spec.graph_name);
  return bytes;
}

}  // namespace mlcapsule::compiler
