// Fused output clamp of Conv/Gemm/FullyConnected (attributes output_min / output_max, written by
// the compiler's activation fusion; absent means unbounded).
#pragma once

#include <limits>

namespace mlcapsule::engine {

struct Clamp {
  float min = -std::numeric_limits<float>::infinity();
  float max = std::numeric_limits<float>::infinity();
  bool active() const {
    return min != -std::numeric_limits<float>::infinity() ||
           max != std::numeric_limits<float>::infinity();
  }
  bool is_relu() const { return min == 0.0f && max == std::numeric_limits<float>::infinity(); }
  float Apply(float v) const { return v < min ? min : (v > max ? max : v); }
};

}  // namespace mlcapsule::engine
