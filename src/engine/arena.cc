// Greedy-by-size arena planner (see arena.h).
#include "engine/arena.h"

#include <algorithm>
#include <numeric>

namespace mlcapsule::engine {

ArenaLayout PlanArena(const std::vector<ArenaRequest>& requests) {
  ArenaLayout layout;
  layout.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].bytes > requests[b].bytes; });
  struct Placed {
    uint64_t begin, end;
    int32_t first, last;
  };
  std::vector<Placed> placed;
  placed.reserve(requests.size());
  std::vector<std::pair<uint64_t, uint64_t>> busy;
  for (size_t index : order) {
    const ArenaRequest& r = requests[index];
    uint64_t size = (r.bytes + 63) / 64 * 64;
    busy.clear();
    for (const Placed& p : placed)
      if (p.first <= r.last_step && r.first_step <= p.last) busy.emplace_back(p.begin, p.end);
    std::sort(busy.begin(), busy.end());
    uint64_t offset = 0;
    for (const auto& [begin, end] : busy) {
      if (offset + size <= begin) break;
      offset = std::max(offset, end);
    }
    layout.offsets[index] = offset;
    placed.push_back({offset, offset + size, r.first_step, r.last_step});
    layout.total_bytes = std::max(layout.total_bytes, offset + size);
  }
  return layout;
}

}  // namespace mlcapsule::engine
