// Shape arithmetic shared by the ops' inference functions: axis normalisation, multidirectional
// (NumPy) broadcasting over symbolic dims, and strides.
#pragma once

#include <span>

#include "engine/op.h"
#include "engine/tensor.h"

namespace mlcapsule::engine {

// Maps axis in [-rank, rank) to [0, rank); error naming the node when out of range.
Result<int> NormalizeAxis(const NodeContext& ctx, int64_t axis, int64_t rank,
                          const char* what = "axis");
// NumPy broadcasting of symbolic shapes. A batch dim broadcasts with 1 or an equal batch dim.
Result<Shape> BroadcastShapes(const NodeContext& ctx, std::span<const Shape* const> shapes);
// Concrete broadcasting helper for kernels: strides of `in` (rank-aligned to `out`) with 0 on
// broadcast dimensions.
std::vector<int64_t> BroadcastStrides(std::span<const int64_t> in, std::span<const int64_t> out);
std::vector<int64_t> ContiguousStrides(std::span<const int64_t> dims);
// True when every dim is fixed (no batch dims).
inline bool IsFixed(const Shape& s) { return !HasBatchDim(s); }
// Requires a fixed dim and returns its value; error otherwise.
Result<int64_t> FixedDim(const NodeContext& ctx, const Dim& d, const char* what);

}  // namespace mlcapsule::engine
