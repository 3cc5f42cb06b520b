// Softmax, LogSoftmax and Hardmax along one axis. Canonical form: attributes axis (default -1)
// and coerce_2d (default 0). coerce_2d = 1 is the opset < 13 meaning: the input is viewed as
// [prod(dims[:axis]), prod(dims[axis:])] and the op runs along the second dim.
//
// The input is viewed as [outer, n, inner] with the op along n. Columns of `inner` are processed
// in blocks of kBlock, so every inner loop is contiguous whatever the axis. Softmax subtracts the
// maximum before exp, so large inputs do not overflow; a NaN anywhere in a slice makes the
// whole slice NaN, as in ONNX's reference.
#include <cmath>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kSoftmaxAttrs[] = {"axis", "coerce_2d"};
constexpr int64_t kBlock = 64;

struct SoftmaxAxis {
  int axis = 0;
  bool coerce_2d = false;
};

Result<SoftmaxAxis> ParseSoftmaxAxis(const NodeContext& ctx) {
  MLC_RETURN_IF_ERROR(CheckScalarAttr(ctx, "axis", AttrKind::kInts));
  SoftmaxAxis result;
  MLC_ASSIGN_OR_RETURN(result.coerce_2d, BoolAttr(ctx, "coerce_2d", false));
  const int64_t rank = static_cast<int64_t>(ctx.input(0).shape.size());
  MLC_ASSIGN_OR_RETURN(result.axis, NormalizeAxis(ctx, ctx.Int("axis", -1), rank));
  return result;
}

Status InferSoftmax(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, /*allow_int64=*/false));
  MLC_ASSIGN_OR_RETURN(SoftmaxAxis axis, ParseSoftmaxAxis(ctx));
  (void)axis;
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

enum class SoftmaxKind { kSoftmax, kLogSoftmax, kHardmax };

// One block of up to kBlock columns: x and y point at [0, column] of an [n, inner] slice.
void SoftmaxBlock(SoftmaxKind kind, const float* x, float* y, int64_t n, int64_t inner,
                  int64_t width) {
  float max[kBlock], sum[kBlock];
  int64_t best[kBlock];
  for (int64_t c = 0; c < width; ++c) {
    max[c] = x[c];
    best[c] = 0;
  }
  // Max along n, NaN-propagating; for Hardmax also the first index of the maximum (a NaN counts as
  // the maximum, like numpy's argmax).
  for (int64_t k = 1; k < n; ++k) {
    const float* row = x + k * inner;
    for (int64_t c = 0; c < width; ++c) {
      const float v = row[c];
      const bool better = v > max[c] || (v != v && max[c] == max[c]);
      max[c] = better ? v : max[c];
      best[c] = better ? k : best[c];
    }
  }
  if (kind == SoftmaxKind::kHardmax) {
    for (int64_t k = 0; k < n; ++k) {
      float* row = y + k * inner;
      for (int64_t c = 0; c < width; ++c) row[c] = best[c] == k ? 1.0f : 0.0f;
    }
    return;
  }
  for (int64_t c = 0; c < width; ++c) sum[c] = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    const float* in = x + k * inner;
    float* out = y + k * inner;
    for (int64_t c = 0; c < width; ++c) {
      const float e = std::exp(in[c] - max[c]);
      if (kind == SoftmaxKind::kSoftmax) out[c] = e;
      sum[c] += e;
    }
  }
  if (kind == SoftmaxKind::kSoftmax) {
    for (int64_t c = 0; c < width; ++c) sum[c] = 1.0f / sum[c];
    for (int64_t k = 0; k < n; ++k) {
      float* out = y + k * inner;
      for (int64_t c = 0; c < width; ++c) out[c] *= sum[c];
    }
    return;
  }
  // (x - max) - log(sum), in this order: x - max is exact, while folding max into the log-sum
  // first would round it at the scale of x.
  for (int64_t c = 0; c < width; ++c) sum[c] = std::log(sum[c]);
  for (int64_t k = 0; k < n; ++k) {
    const float* in = x + k * inner;
    float* out = y + k * inner;
    for (int64_t c = 0; c < width; ++c) out[c] = (in[c] - max[c]) - sum[c];
  }
}

class SoftmaxKernel final : public Kernel {
 public:
  SoftmaxKernel(SoftmaxKind kind, SoftmaxAxis axis) : kind_(kind), axis_(axis) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext& ctx) override {
    outer_ = 1;
    n_ = 1;
    inner_ = 1;
    const Dims& dims = in[0].dims;
    for (size_t i = 0; i < dims.size(); ++i) {
      const int axis = axis_.axis;
      if (static_cast<int>(i) < axis) {
        outer_ *= dims[i];
      } else if (static_cast<int>(i) == axis || axis_.coerce_2d) {
        n_ *= dims[i];
      } else {
        inner_ *= dims[i];
      }
    }
    return Status::Ok();
  }

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    if (outer_ == 0 || n_ == 0 || inner_ == 0) return;
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    const int64_t blocks = (inner_ + kBlock - 1) / kBlock;
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / (n_ * std::min(inner_, kBlock)));
    ParallelFor(ctx, outer_ * blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t o = task / blocks;
        const int64_t column = (task % blocks) * kBlock;
        const int64_t offset = o * n_ * inner_ + column;
        SoftmaxBlock(kind_, x + offset, y + offset, n_, inner_, std::min(kBlock, inner_ - column));
      }
    });
  }

 private:
  SoftmaxKind kind_;
  SoftmaxAxis axis_;
  int64_t outer_ = 1, n_ = 1, inner_ = 1;
};

template <SoftmaxKind kKind>
Result<std::unique_ptr<Kernel>> CreateSoftmax(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(SoftmaxAxis axis, ParseSoftmaxAxis(ctx));
  return std::unique_ptr<Kernel>(new SoftmaxKernel(kKind, axis));
}

const OpSchema kSoftmax{OpType::kSoftmax,
                        1,
                        1,
                        1,
                        1,
                        kSoftmaxAttrs,
                        InferSoftmax,
                        CreateSoftmax<SoftmaxKind::kSoftmax>};
const OpSchema kLogSoftmax{OpType::kLogSoftmax,
                           1,
                           1,
                           1,
                           1,
                           kSoftmaxAttrs,
                           InferSoftmax,
                           CreateSoftmax<SoftmaxKind::kLogSoftmax>};
const OpSchema kHardmax{OpType::kHardmax,
                        1,
                        1,
                        1,
                        1,
                        kSoftmaxAttrs,
                        InferSoftmax,
                        CreateSoftmax<SoftmaxKind::kHardmax>};

}  // namespace

void AddSoftmaxOps(std::vector<const OpSchema*>* ops) {
  ops->push_back(&kSoftmax);
  ops->push_back(&kLogSoftmax);
  ops->push_back(&kHardmax);
}

}  // namespace mlcapsule::engine
