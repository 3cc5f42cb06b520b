// Arena planner: buffers whose lifetimes overlap never share bytes, and reuse happens.
#include "engine/arena.h"

#include <gtest/gtest.h>

#include <random>

namespace mlcapsule::engine {
namespace {

void ExpectNoOverlap(const std::vector<ArenaRequest>& requests, const ArenaLayout& layout) {
  ASSERT_EQ(layout.offsets.size(), requests.size());
  for (size_t a = 0; a < requests.size(); ++a) {
    EXPECT_EQ(layout.offsets[a] % 64, 0u);
    EXPECT_LE(layout.offsets[a] + requests[a].bytes, layout.total_bytes);
    for (size_t b = a + 1; b < requests.size(); ++b) {
      bool live_together = requests[a].first_step <= requests[b].last_step &&
                           requests[b].first_step <= requests[a].last_step;
      bool bytes_overlap = layout.offsets[a] < layout.offsets[b] + requests[b].bytes &&
                           layout.offsets[b] < layout.offsets[a] + requests[a].bytes;
      if (live_together && requests[a].bytes && requests[b].bytes) {
        EXPECT_FALSE(bytes_overlap)
            << "requests " << a << " and " << b << " share bytes while both live";
      }
    }
  }
}

TEST(ArenaTest, ChainReusesMemory) {
  // A chain a->b->c->d: each buffer only overlaps its neighbours, so two slots suffice.
  std::vector<ArenaRequest> chain{{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  ArenaLayout layout = PlanArena(chain);
  ExpectNoOverlap(chain, layout);
  EXPECT_EQ(layout.total_bytes, 2 * 1024u);
}

TEST(ArenaTest, RandomRequestsNeverOverlap) {
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<ArenaRequest> requests;
    for (int i = 0; i < 40; ++i) {
      int32_t first = static_cast<int32_t>(rng() % 30);
      requests.push_back({rng() % 100000, first, first + static_cast<int32_t>(rng() % 10)});
    }
    ArenaLayout layout = PlanArena(requests);
    ExpectNoOverlap(requests, layout);
    uint64_t sum = 0;
    for (const auto& r : requests) sum += (r.bytes + 63) / 64 * 64;
    EXPECT_LE(layout.total_bytes, sum);
  }
}

}  // namespace
}  // namespace mlcapsule::engine
