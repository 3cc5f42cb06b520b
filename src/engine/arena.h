// Arena planning: one buffer for every activation of a plan, with tensors whose lifetimes do not
// overlap sharing bytes. Greedy by size (largest first, lowest free offset), the approach TFLite's
// "greedy by size" planner uses; exact for the intervals it is given.
#pragma once

#include <cstdint>
#include <vector>

namespace mlcapsule::engine {

struct ArenaRequest {
  uint64_t bytes = 0;
  int32_t first_step = 0;  // first step that writes it
  int32_t last_step = 0;   // last step that reads it (inclusive)
};

struct ArenaLayout {
  std::vector<uint64_t> offsets;  // per request, 64-byte aligned
  uint64_t total_bytes = 0;
};

ArenaLayout PlanArena(const std::vector<ArenaRequest>& requests);

}  // namespace mlcapsule::engine
