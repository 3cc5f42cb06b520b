// Fuzz target: the plan loader, the trust boundary of the consumer side. Bytes -> ParsePlan ->
// ValidatePlan -> Session::Create -> one Run on zero inputs (batch 1, inputs capped at 16 MiB).
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/plan.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlcapsule;
  auto plan = engine::ParsePlan(std::span<const uint8_t>(data, size));
  if (!plan.ok()) return 0;
  if (!engine::ValidatePlan(*plan).ok()) return 0;
  fuzz::RunOnZeros(std::move(plan).value());
  return 0;
}
