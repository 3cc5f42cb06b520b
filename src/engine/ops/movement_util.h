// Private helpers of the Movement op family (movement*.cc): reading constant parameter inputs,
// symbolic size arithmetic for inference, and the element-size-agnostic copy loops the kernels
// share. Movement ops never look at element values, only move bytes, so every loop here works on
// 4-byte (float32) and 8-byte (int64) elements alike. Inputs to these helpers come from inference
// that has already validated ranks, axes and sizes; the copy loops do no checking.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/op.h"

namespace mlcapsule::engine::movement {

// Fails unless input i is present ("input 'shape' is required").
Status RequireInput(const NodeContext& ctx, int i, const char* name);

// Reads input i, which must be a constant int64 tensor of rank <= 1, as a vector. A
// zero-element tensor needs no data, so it is accepted even when no constant bytes are attached.
Result<std::vector<int64_t>> ConstantInts(const NodeContext& ctx, int i, const char* name);

// Product of symbolic dims: value * N^batch_power.
struct SymbolicSize {
  int64_t value = 1;
  int batch_power = 0;
};
// Error when the fixed part overflows kMaxTensorElements (`what` names the dims in the message).
Result<SymbolicSize> SymbolicProduct(const NodeContext& ctx, std::span<const Dim> dims,
                                     const char* what);
// A product as one Dim; Unsupported when it has N^2 or a higher power.
Result<Dim> ProductAsDim(const NodeContext& ctx, std::span<const Dim> dims, const char* what);

// Checks output ranks (<= kMaxRank), dims (>= 0) and the fixed element counts of inferred outputs.
Status CheckOutputs(const NodeContext& ctx, const std::vector<TensorType>& outputs);

// Wraps an inference function with CheckOutputs, so no op can produce an oversized shape.
template <InferFn kInfer>
Status CheckedInfer(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(kInfer(ctx, outputs));
  return CheckOutputs(ctx, *outputs);
}

// Writes the tensor of shape `out_dims` whose element (i0, ..., ik) is
// src[offset + sum(i_a * src_strides[a])] (strides in elements, may be 0 or negative) to dst, in
// order. The generic loop behind Slice, Expand, DepthToSpace and the reference Transpose.
void CopyStrided(const void* src, int64_t offset, std::span<const int64_t> src_strides,
                 std::span<const int64_t> out_dims, void* dst, size_t element_size,
                 const RunContext& ctx);

// Copies `count` elements of `element_size` bytes, split over the run's threads when large.
void ParallelCopy(const void* src, void* dst, int64_t count, size_t element_size,
                  const RunContext& ctx);

// The kernel of ops whose output is input 0's bytes unchanged (Identity, Reshape, Flatten,
// Squeeze, Unsqueeze). The executor normally aliases them and never calls Run; when it cannot,
// Run copies.
Result<std::unique_ptr<Kernel>> CreateCopyKernel(const NodeContext& ctx);

// Registration of the family's files (AddMovementOps in movement.cc calls each).
void AddShapeOps(std::vector<const OpSchema*>* ops);      // movement.cc
void AddLayoutOps(std::vector<const OpSchema*>* ops);     // movement_layout.cc
void AddSelectionOps(std::vector<const OpSchema*>* ops);  // movement_select.cc

}  // namespace mlcapsule::engine::movement
