// How an operator plugs into the engine: one OpSchema per op (its allow-listed attributes, shape
// inference and kernel factory), defined in its own file under engine/ops/ and listed in
// registry.cc. Shape inference runs in the compiler and again when a plan is loaded, so a plan's
// stored shapes are never trusted. Kernels get validated shapes; Run() does no checking.
//
// A new op: add it to MLC_ENGINE_OPS (plan.h), write ops/<name>.cc with its schema, reference
// kernel (and fast kernel, if any), write ops/<name>_test.cc, list the schema in registry.cc.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::engine {

struct RunContext {
  int threads = 1;  // intra-op threads (OpenMP team size; see parallel.h)
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Called before the first Run and whenever concrete shapes or buffer addresses change (a new
  // batch size). Input/output addresses stay fixed between Setup calls.
  virtual Status Setup(std::span<const TensorView> inputs, std::span<const TensorView> outputs,
                       const RunContext& ctx) {
    return Status::Ok();
  }
  // Absent optional inputs have data == nullptr.
  virtual void Run(std::span<const TensorView> inputs, std::span<const TensorView> outputs,
                   const RunContext& ctx) = 0;
};

struct KernelOptions {
  bool fast = true;  // false: always the plain reference kernel (tests, debugging)
};

// What an op sees of its node during inference and kernel creation.
class NodeContext {
 public:
  NodeContext(const Plan& plan, const PlanNode& node, std::span<const TensorType* const> inputs,
              std::span<const void* const> constants, const KernelOptions& options)
      : plan_(plan), node_(node), inputs_(inputs), constants_(constants), options_(options) {}

  const PlanNode& node() const { return node_; }
  const Plan& plan() const { return plan_; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  int num_outputs() const { return static_cast<int>(node_.outputs.size()); }
  bool has_input(int i) const { return i < num_inputs() && inputs_[i] != nullptr; }
  const TensorType& input(int i) const { return *inputs_[i]; }
  // Data of input i when it is a constant of the plan, else nullptr.
  const void* constant(int i) const { return i < num_inputs() ? constants_[i] : nullptr; }
  template <typename T>
  const T* constant_as(int i) const {
    return static_cast<const T*>(constant(i));
  }
  // Output types (valid during kernel creation, after inference).
  const TensorType& output(int i) const;
  const KernelOptions& options() const { return options_; }

  bool Has(std::string_view name) const { return node_.FindAttr(name) != nullptr; }
  int64_t Int(std::string_view name, int64_t fallback) const;
  float Float(std::string_view name, float fallback) const;
  std::span<const int64_t> Ints(std::string_view name) const;  // empty when absent
  std::span<const float> Floats(std::string_view name) const;

  // "node 'conv1' (Conv)": prefix for every error message about this node.
  std::string Describe() const;
  // Error helpers that prefix Describe().
  template <typename... Args>
  Status Error(fmt::format_string<Args...> format, Args&&... args) const {
    return Status(StatusCode::kInvalidArgument,
                  Describe() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  Status Unsupported(fmt::format_string<Args...> format, Args&&... args) const {
    return Status(StatusCode::kUnsupported,
                  Describe() + ": " + fmt::format(format, std::forward<Args>(args)...));
  }

  void set_output_types(const std::vector<TensorType>* types) { outputs_ = types; }

 private:
  const Plan& plan_;
  const PlanNode& node_;
  std::span<const TensorType* const> inputs_;
  std::span<const void* const> constants_;
  const KernelOptions& options_;
  const std::vector<TensorType>* outputs_ = nullptr;
};

using InferFn = Status (*)(const NodeContext& ctx, std::vector<TensorType>* outputs);
using CreateFn = Result<std::unique_ptr<Kernel>> (*)(const NodeContext& ctx);

struct OpSchema {
  OpType type;
  int min_inputs;
  int max_inputs;
  int min_outputs;
  int max_outputs;
  std::span<const std::string_view> attrs;  // the only attribute names a plan may use
  InferFn infer;
  CreateFn create;
  // Output 0 is input 0's bytes reinterpreted (Reshape, Flatten, Squeeze, ...): the executor
  // lets them share one buffer and does not call Run when they do.
  bool output_aliases_input = false;
};

// The allow-list: nullptr for an op the engine does not implement.
const OpSchema* FindSchema(OpType type);

// Runs one node on concrete tensors with its reference kernel (compiler constant folding, tests).
// Output shapes come from inference with batch size 1 fixed shapes.
Status EvaluateNode(const PlanNode& node, std::span<const Tensor* const> inputs,
                    std::vector<Tensor>* outputs, const KernelOptions& options = {false});

}  // namespace mlcapsule::engine
