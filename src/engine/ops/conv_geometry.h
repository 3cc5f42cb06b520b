// Window geometry shared by convolution and pooling: attribute validation and output sizes.
// auto_pad never reaches a plan: the compiler turns it into explicit pads.
#pragma once

#include <vector>

#include "engine/op.h"
#include "engine/ops/clamp.h"

namespace mlcapsule::engine {

struct WindowGeometry {
  int spatial = 0;             // number of spatial dims
  std::vector<int64_t> input;  // input spatial sizes
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;  // begin[spatial] then end[spatial]
  std::vector<int64_t> output;
};

// Reads kernel (from `kernel` when given, else the kernel_shape attribute), strides, dilations,
// pads, ceil_mode; checks every value and computes the output sizes.
Result<WindowGeometry> ComputeWindow(const NodeContext& ctx, std::span<const int64_t> input_spatial,
                                     std::span<const int64_t> kernel, bool allow_ceil_mode);

// Spatial dims of a symbolic shape (from index `first`), which must be fixed.
Result<std::vector<int64_t>> FixedSpatial(const NodeContext& ctx, const Shape& shape, size_t first,
                                          size_t count, const char* what);

// The fused clamp attributes output_min / output_max.
Clamp ReadClamp(const NodeContext& ctx);

}  // namespace mlcapsule::engine
