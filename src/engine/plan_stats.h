// Arithmetic cost of a plan (for benchmark reports): multiply-adds of convolutions and matrix
// products counted as 2 FLOPs, everything else ignored.
#pragma once

#include "engine/plan.h"

namespace mlcapsule::engine {

double PlanFlops(const Plan& plan, int64_t batch_size);

}  // namespace mlcapsule::engine
