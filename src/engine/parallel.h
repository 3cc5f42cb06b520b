// ParallelFor over the run's threads. The engine has one threading runtime, OpenMP, shared with
// oneDNN's kernels, so the two never compete for cores with separate pools. Work is cut into at
// most 4 tiles per thread of at least `grain` items, so small tensors stay on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/op.h"

namespace mlcapsule::engine {

template <typename Fn>
void ParallelFor(const RunContext& ctx, int64_t count, int64_t grain, Fn&& fn) {
  if (count <= 0) return;
  const int threads = ctx.threads;
  if (threads <= 1 || count <= grain) {
    fn(int64_t{0}, count);
    return;
  }
  const int64_t tiles =
      std::min<int64_t>(int64_t{threads} * 4, (count + grain - 1) / std::max<int64_t>(grain, 1));
  const int64_t tile = (count + tiles - 1) / tiles;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t begin = t * tile;
    const int64_t end = std::min(count, begin + tile);
    if (begin < end) fn(begin, end);
  }
}

}  // namespace mlcapsule::engine
