// Test fixtures for capsule tests: a tiny classifier plan, a provider that packs it and answers
// evidence requests with leases (the air-gapped path of capsule/licensing.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/licensing.h"
#include "capsule/policy.h"
#include "engine/plan.h"

namespace mlcapsule::testing {

inline constexpr int kClassifierInputs = 8;
inline constexpr int kClassifierClasses = 4;

// input [N,8] -> FullyConnected(8 -> 4, weights `weights` (4x8 row-major), bias 0..3 * 0.01)
// -> output "logits" [N,4].
engine::Plan ClassifierPlan(std::span<const float> weights);
// Default weights: a fixed pattern.
std::vector<float> DefaultClassifierWeights();

inline constexpr const char* kDefaultTestPolicy =
    R"({"version":1,"tee":{"accept":["software"]},"lease":{"max_queries":1000,"max_days":30,)"
    R"("seal_every":10},"output":{"mode":"probabilities","logits":true}})";

struct TestProvider {
  capsule::SigningKeyPair key;
  capsule::PackedCapsule packed;
  capsule::CapsuleHeader header;
  capsule::Policy policy;
  uint64_t sequence = 0;

  // Packs `plan` under `policy_json`; aborts the test binary on failure (fixture misuse).
  static TestProvider Make(const engine::Plan& plan, const std::string& policy_json,
                           uint32_t chunk_bytes = 4096);
  // Checks the request and issues a lease (sequence grows by one per call).
  Result<std::vector<uint8_t>> Lease(std::span<const uint8_t> request, uint64_t quota = 100,
                                     int64_t seconds = 86400, int64_t now = 0,
                                     const std::string& license_id = "license-1");
};

}  // namespace mlcapsule::testing
