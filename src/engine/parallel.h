// ParallelFor over the run's thread pool (pthreadpool, shared with XNNPACK). Work is cut into
// tiles of at least `grain` items so small tensors stay on the calling thread.
#pragma once

#include <pthreadpool.h>

#include <algorithm>
#include <cstdint>

#include "engine/op.h"

namespace mlcapsule::engine {

template <typename Fn>
void ParallelFor(const RunContext& ctx, int64_t count, int64_t grain, Fn&& fn) {
  if (count <= 0) return;
  if (ctx.pool == nullptr || ctx.threads <= 1 || count <= grain) {
    fn(int64_t{0}, count);
    return;
  }
  int64_t tile = std::max<int64_t>(grain, (count + ctx.threads * 4 - 1) / (ctx.threads * 4));
  struct Closure {
    Fn* fn;
    int64_t count;
  } closure{&fn, count};
  pthreadpool_parallelize_1d_tile_1d(
      ctx.pool,
      [](void* arg, size_t start, size_t length) {
        auto* c = static_cast<Closure*>(arg);
        (*c->fn)(static_cast<int64_t>(start), static_cast<int64_t>(start + length));
      },
      &closure, static_cast<size_t>(count), static_cast<size_t>(tile), 0);
}

}  // namespace mlcapsule::engine
