// Session: runs a validated plan. Create() validates the plan (every op, index, attribute and
// shape) and builds the kernels once; Run() takes any batch size, re-planning the arena and
// re-running kernel Setup only when the batch size changes. A Session is not thread-safe: use one
// per thread (they may share nothing but the plan bytes). Run() sets the calling thread's OpenMP
// team size to SessionOptions::threads (the engine and oneDNN share OpenMP's threads).
//
//   MLC_ASSIGN_OR_RETURN(Plan plan, ParsePlan(bytes));
//   MLC_ASSIGN_OR_RETURN(auto session, Session::Create(std::move(plan), {.threads = 2}));
//   std::vector<Tensor> outputs;
//   MLC_RETURN_IF_ERROR(session->Run({input.View()}, &outputs));
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::engine {

struct SessionOptions {
  int threads = 1;
  bool fast_kernels = true;
  uint64_t max_arena_bytes = uint64_t{16} << 30;
  bool profile = false;  // time every node (see Session::Profile)
};

struct NodeProfile {
  std::string name;
  std::string op;
  double total_ms = 0.0;
  int64_t runs = 0;
};

struct SessionStats {
  uint64_t arena_bytes = 0;  // activations for the current batch size
  int64_t batch_size = 0;
};

class Session {
 public:
  static Result<std::unique_ptr<Session>> Create(Plan plan, const SessionOptions& options = {});
  ~Session();

  // Inputs in the order of plan().inputs; outputs are resized and filled in plan().outputs order.
  Status Run(std::span<const TensorView> inputs, std::vector<Tensor>* outputs);
  Status Run(const std::vector<TensorView>& inputs, std::vector<Tensor>* outputs) {
    return Run(std::span<const TensorView>(inputs), outputs);
  }

  const Plan& plan() const;
  SessionStats stats() const;
  // Per-node accumulated run time (empty unless SessionOptions::profile).
  std::vector<NodeProfile> Profile() const;

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Batch size implied by concrete input dims against the plan's symbolic input shapes, or an error
// naming the input whose shape does not fit.
Result<int64_t> InferBatchSize(const Plan& plan, std::span<const TensorView> inputs);

}  // namespace mlcapsule::engine
