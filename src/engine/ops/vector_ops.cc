// Vector loops with run-time ISA dispatch (see vector_ops.h).
#include "engine/ops/vector_ops.h"

namespace mlcapsule::engine::vec {

#if defined(__x86_64__) && !defined(__clang__)
#define MLC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MLC_CLONES
#endif

MLC_CLONES void MaxInto(float* __restrict y, const float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > y[i] ? x[i] : y[i];
}

MLC_CLONES void AddInto(float* __restrict y, const float* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

MLC_CLONES void Scale(float* __restrict y, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}

MLC_CLONES void Fill(float* __restrict y, float v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = v;
}

}  // namespace mlcapsule::engine::vec
