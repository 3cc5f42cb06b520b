// FLOP counting (see plan_stats.h).
#include "engine/plan_stats.h"

namespace mlcapsule::engine {

double PlanFlops(const Plan& plan, int64_t batch_size) {
  double flops = 0.0;
  auto dims = [&](int32_t t) {
    return ResolveShape(plan.tensors[static_cast<size_t>(t)].type.shape, batch_size);
  };
  auto count = [](const Dims& d) {
    double n = 1;
    for (int64_t x : d) n *= static_cast<double>(x);
    return n;
  };
  for (const PlanNode& n : plan.nodes) {
    switch (n.op) {
      case OpType::kConv:
      case OpType::kConvNhwc: {
        Dims w = dims(n.inputs[1]);
        double per_output = count(w) / static_cast<double>(w[0]);  // (C/g) * kernel
        flops += 2.0 * count(dims(n.outputs[0])) * per_output;
        break;
      }
      case OpType::kFullyConnected: {
        Dims w = dims(n.inputs[1]);
        flops += 2.0 * count(dims(n.outputs[0])) * static_cast<double>(w[1]);
        break;
      }
      case OpType::kGemm:
      case OpType::kMatMul: {
        Dims a = dims(n.inputs[0]);
        int64_t k = a.empty() ? 1 : a.back();
        if (n.op == OpType::kGemm && n.FindAttr("transA") && !n.FindAttr("transA")->ints.empty() &&
            n.FindAttr("transA")->ints[0])
          k = a[0];
        flops += 2.0 * count(dims(n.outputs[0])) * static_cast<double>(k);
        break;
      }
      default:
        break;
    }
  }
  return flops;
}

}  // namespace mlcapsule::engine
