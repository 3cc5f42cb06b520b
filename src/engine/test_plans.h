// Small hand-built plans for engine tests (no ONNX needed).
#pragma once

#include "engine/plan.h"

namespace mlcapsule::engine::testing {

// input [N,1,6,6] -> ConvNhwc-free NCHW Conv(2 filters 3x3, pad 1) + Relu -> Flatten ->
// FullyConnected(72 -> 3) -> output [N,3]. Weights are a fixed pseudo-random pattern.
Plan SmallConvNet();

}  // namespace mlcapsule::engine::testing
