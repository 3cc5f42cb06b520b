// The compiler's working graph: values (typed, possibly constant or symbolic) and canonical
// nodes (engine op + attributes). Private to the compiler.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/op.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::compiler {

struct Value {
  std::string name;
  engine::TensorType type;
  std::optional<engine::Tensor> constant;
  // For small int64 tensors computed from shapes that depend on the batch: element values as
  // symbolic dims (Dim{k, true} = k * N). Scalars hold one entry.
  std::optional<std::vector<engine::Dim>> symbolic;
  bool graph_input = false;
  bool graph_output = false;
};

struct Node {
  engine::OpType op = engine::OpType::kIdentity;
  std::string name;
  std::vector<int> inputs;  // value ids, -1 for absent
  std::vector<int> outputs;
  std::vector<engine::Attribute> attrs;
  bool dead = false;

  void SetInts(const std::string& key, std::vector<int64_t> v);
  void SetFloats(const std::string& key, std::vector<float> v);
  void Erase(const std::string& key);
  const engine::Attribute* Find(const std::string& key) const;
  int64_t Int(const std::string& key, int64_t fallback) const;
  float Float(const std::string& key, float fallback) const;
};

struct Graph {
  std::vector<Value> values;
  std::vector<Node> nodes;
  std::vector<int> inputs, outputs;

  int AddValue(std::string name, engine::TensorType type);
  int AddConstant(std::string name, engine::Tensor tensor);
  // Consumers of each value (rebuilt on demand).
  std::vector<std::vector<int>> Consumers() const;
  std::string UniqueName(const std::string& base);

 private:
  int counter_ = 0;
};

// Runs the engine's shape inference for `node`; fills the output values' types.
Status InferNode(Graph& graph, const Node& node);

// Optimisation passes (optimize.cc).
Status FuseGraph(Graph& graph, int* fused);
Status ChannelsLast(Graph& graph, int* transposes);
void RemoveDeadNodes(Graph& graph);

}  // namespace mlcapsule::compiler
