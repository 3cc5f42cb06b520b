// Writes an ONNX ModelProto from plain structs, so that code without protobuf (the lab's libtorch
// models, tools) can export models that `mlcapsule compile` and `pack` read. Float32 initializers
// are stored as little-endian raw_data; the graph's inputs and outputs are float32 with a symbolic
// batch dimension where a dim is -1. IR version 7, default domain at the given opset (13 by
// default), exactly what torch 1.13's exporter writes for the same layers.
//
//   compiler::OnnxGraphSpec g;
//   g.inputs = {{"input", {-1, 784}}};
//   g.outputs = {{"logits", {-1, 10}}};
//   g.initializers.push_back({"fc.weight", {10, 784}, weights});
//   g.nodes.push_back({"Gemm", "fc", {"input", "fc.weight", "fc.bias"}, {"logits"},
//                      {compiler::OnnxAttribute::Int("transB", 1)}});
//   MLC_ASSIGN_OR_RETURN(std::string bytes, compiler::WriteOnnxModel(g));
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace mlcapsule::compiler {

struct OnnxAttribute {
  enum class Kind { kInt, kInts, kFloat };
  std::string name;
  Kind kind = Kind::kInt;
  int64_t i = 0;
  std::vector<int64_t> ints;
  float f = 0;
  static OnnxAttribute Int(std::string name, int64_t v) {
    return {std::move(name), Kind::kInt, v, {}, 0};
  }
  static OnnxAttribute Ints(std::string name, std::vector<int64_t> v) {
    return {std::move(name), Kind::kInts, 0, std::move(v), 0};
  }
  static OnnxAttribute Float(std::string name, float v) {
    return {std::move(name), Kind::kFloat, 0, {}, v};
  }
};
struct OnnxNode {
  std::string op_type, name;
  std::vector<std::string> inputs, outputs;
  std::vector<OnnxAttribute> attributes;
};
struct OnnxInitializer {
  std::string name;
  std::vector<int64_t> dims;
  std::vector<float> values;  // product(dims) values, row-major
};
struct OnnxValueInfo {
  std::string name;
  std::vector<int64_t> dims;  // -1: the symbolic dimension "batch"
};
struct OnnxGraphSpec {
  std::string graph_name = "main_graph";
  std::string producer = "mlcapsule-lab";
  int64_t opset = 13;
  std::vector<OnnxValueInfo> inputs, outputs;
  std::vector<OnnxNode> nodes;
  std::vector<OnnxInitializer> initializers;
};

// Checks names are non-empty and every node input is a graph input, an initializer or an earlier
// node's output, and initializer sizes match their dims; then serializes.
Result<std::string> WriteOnnxModel(const OnnxGraphSpec& spec);

}  // namespace mlcapsule::compiler
