// Small vector loops used by the channels-last kernels, compiled twice (baseline x86-64 and
// AVX2+FMA) and picked at load time by the CPU's features (GCC target_clones / ifunc): the binary
// runs on any x86-64 CPU and uses 8-wide SIMD where it exists.
#pragma once

#include <cstdint>

namespace mlcapsule::engine::vec {

void MaxInto(float* y, const float* x, int64_t n);  // y[i] = max(y[i], x[i])
void AddInto(float* y, const float* x, int64_t n);  // y[i] += x[i]
void Scale(float* y, float s, int64_t n);           // y[i] *= s
void Fill(float* y, float v, int64_t n);

}  // namespace mlcapsule::engine::vec
