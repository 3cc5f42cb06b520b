// Shared by the fuzz targets: runs a plan once on zero inputs at batch size 1. Bounded so that a
// plan which validates but asks for huge tensors is skipped, not allocated (the fuzzer's RSS limit
// would otherwise report it as a crash).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/plan.h"
#include "engine/session.h"
#include "engine/tensor.h"

namespace mlcapsule::fuzz {

inline constexpr uint64_t kMaxInputBytes = uint64_t{16} << 20;
inline constexpr uint64_t kMaxArenaBytes = uint64_t{256} << 20;
// Plans whose tensors (inputs, intermediates, outputs at batch 1) hold more elements than this in
// all are not run: under ASan the reference kernels need ~1 us per element-operation, and a
// 150-byte model (MaxPool with pads of 64 on a [59,3,28,28] input) otherwise takes 15 s, which
// libFuzzer reports as a timeout although nothing is wrong.
inline constexpr int64_t kMaxRunElements = int64_t{1} << 20;

// Creates a session for `plan` and runs it once. Errors are expected (the input is hostile); only
// crashes, sanitizer reports, leaks and timeouts are findings.
inline void RunOnZeros(engine::Plan plan) {
  std::vector<engine::Tensor> inputs;
  uint64_t total = 0;
  for (int32_t index : plan.inputs) {
    if (index < 0 || static_cast<size_t>(index) >= plan.tensors.size()) return;
    const engine::TensorType& type = plan.tensors[static_cast<size_t>(index)].type;
    engine::Dims dims = engine::ResolveShape(type.shape, 1);
    auto elements = engine::CheckedNumElements(dims, "input");
    if (!elements.ok()) return;
    total += static_cast<uint64_t>(*elements) * engine::DTypeSize(type.dtype);
    if (total > kMaxInputBytes) return;
    engine::Tensor t;
    t.dtype = type.dtype;
    t.dims = dims;
    t.bytes.assign(static_cast<size_t>(*elements) * engine::DTypeSize(type.dtype), 0);
    inputs.push_back(std::move(t));
  }
  int64_t run_elements = 0;
  for (const engine::PlanTensor& tensor : plan.tensors) {
    if (tensor.kind == engine::TensorKind::kConstant) continue;
    auto elements =
        engine::CheckedNumElements(engine::ResolveShape(tensor.type.shape, 1), "tensor");
    if (!elements.ok()) return;
    run_elements += *elements;
    if (run_elements > kMaxRunElements) return;
  }
  engine::SessionOptions options;
  options.threads = 1;
  options.max_arena_bytes = kMaxArenaBytes;
  auto session = engine::Session::Create(std::move(plan), options);
  if (!session.ok()) return;
  std::vector<engine::TensorView> views;
  for (engine::Tensor& t : inputs) views.push_back(t.View());
  std::vector<engine::Tensor> outputs;
  (void)(*session)->Run(views, &outputs);
}

}  // namespace mlcapsule::fuzz
