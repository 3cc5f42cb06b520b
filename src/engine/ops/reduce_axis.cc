// Operators along one axis that are not plain reductions: ArgMax and ArgMin (attributes axis,
// keepdims, select_last_index; int64 indices out) and CumSum (the axis is a constant int64
// input, read at inference; attributes exclusive and reverse). The input is viewed as
// [outer, n, inner] around the axis.
#include <cstring>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kArgAttrs[] = {"axis", "keepdims", "select_last_index"};
constexpr std::string_view kCumSumAttrs[] = {"exclusive", "reverse"};

// [outer, n, inner] sizes of concrete dims around `axis`.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisView ViewAround(std::span<const int64_t> dims, int axis) {
  AxisView v;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (static_cast<int>(i) < axis) {
      v.outer *= dims[i];
    } else if (static_cast<int>(i) == axis) {
      v.n = dims[i];
    } else {
      v.inner *= dims[i];
    }
  }
  return v;
}

Result<int> ParseAxis(const NodeContext& ctx, int64_t axis) {
  const int64_t rank = static_cast<int64_t>(ctx.input(0).shape.size());
  if (rank == 0) return ctx.Error("input is a scalar (rank 0); the op needs rank >= 1");
  return NormalizeAxis(ctx, axis, rank);
}

// ---- ArgMax / ArgMin ----

Status InferArg(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, /*allow_int64=*/true));
  MLC_RETURN_IF_ERROR(CheckScalarAttr(ctx, "axis", AttrKind::kInts));
  MLC_ASSIGN_OR_RETURN(bool keepdims, BoolAttr(ctx, "keepdims", true));
  MLC_ASSIGN_OR_RETURN(bool select_last, BoolAttr(ctx, "select_last_index", false));
  (void)select_last;
  MLC_ASSIGN_OR_RETURN(int axis, ParseAxis(ctx, ctx.Int("axis", 0)));
  const Shape& in = ctx.input(0).shape;
  if (in[axis].value == 0) return ctx.Error("axis {} has size 0: no index to return", axis);
  TensorType out{DType::kInt64, {}};
  for (int i = 0; i < static_cast<int>(in.size()); ++i) {
    if (i != axis) {
      out.shape.push_back(in[i]);
    } else if (keepdims) {
      out.shape.push_back(Dim{1, false});
    }
  }
  outputs->push_back(std::move(out));
  return Status::Ok();
}

// Whether v replaces the current best. As numpy's argmax/argmin, a NaN beats every number; with
// select_last_index ties (NaN included) go to the later index, like ONNX's reference, which
// flips the axis and takes the first index.
template <typename T, bool kMax, bool kLast>
inline bool Better(T v, T best) {
  if (IsNaN(v)) return kLast || !IsNaN(best);
  if (IsNaN(best)) return false;
  if constexpr (kMax) return kLast ? v >= best : v > best;
  return kLast ? v <= best : v < best;
}

template <typename T, bool kMax, bool kLast>
class ArgKernel final : public Kernel {
 public:
  explicit ArgKernel(int axis) : axis_(axis) {}
  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext& ctx) override {
    view_ = ViewAround(in[0].dims, axis_);
    return Status::Ok();
  }
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const T* x = in[0].As<T>();
    int64_t* y = out[0].As<int64_t>();
    const AxisView v = view_;
    if (v.n == 0) return;  // only when another dim is 0 too (inference rejects a fixed 0 axis)
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / v.n);
    ParallelFor(ctx, v.outer * v.inner, grain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const T* p = x + (item / v.inner) * v.n * v.inner + item % v.inner;
        T best = p[0];
        int64_t index = 0;
        for (int64_t k = 1; k < v.n; ++k) {
          if (Better<T, kMax, kLast>(p[k * v.inner], best)) {
            best = p[k * v.inner];
            index = k;
          }
        }
        y[item] = index;
      }
    });
  }

 private:
  int axis_;
  AxisView view_;
};

template <typename T, bool kMax>
std::unique_ptr<Kernel> MakeArg(int axis, bool last) {
  if (last) return std::unique_ptr<Kernel>(new ArgKernel<T, kMax, true>(axis));
  return std::unique_ptr<Kernel>(new ArgKernel<T, kMax, false>(axis));
}

template <bool kMax>
Result<std::unique_ptr<Kernel>> CreateArg(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int axis, ParseAxis(ctx, ctx.Int("axis", 0)));
  const bool last = ctx.Int("select_last_index", 0) == 1;
  if (ctx.input(0).dtype == DType::kInt64) return MakeArg<int64_t, kMax>(axis, last);
  return MakeArg<float, kMax>(axis, last);
}

// ---- CumSum ----

Result<int> CumSumAxis(const NodeContext& ctx) {
  if (!ctx.has_input(1)) return ctx.Error("the axis input is absent");
  const TensorType& axis_type = ctx.input(1);
  if (axis_type.dtype != DType::kInt64)
    return ctx.Unsupported("element type {} of the axis input (only int64)",
                           DTypeName(axis_type.dtype));
  for (const Dim& d : axis_type.shape) {
    if (d.batch || d.value != 1)
      return ctx.Error("the axis input has shape {} (must be a scalar)",
                       ShapeToString(axis_type.shape));
  }
  const int64_t* axis = ctx.constant_as<int64_t>(1);
  if (axis == nullptr) return ctx.Error("the axis input must be a constant");
  return ParseAxis(ctx, axis[0]);
}

Status InferCumSum(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, /*allow_int64=*/true));
  MLC_ASSIGN_OR_RETURN(bool exclusive, BoolAttr(ctx, "exclusive", false));
  MLC_ASSIGN_OR_RETURN(bool reverse, BoolAttr(ctx, "reverse", false));
  (void)exclusive;
  (void)reverse;
  MLC_ASSIGN_OR_RETURN(int axis, CumSumAxis(ctx));
  (void)axis;
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

template <typename T>
inline T AddValues(T a, T b) {
  if constexpr (std::is_integral_v<T>) return WrapAdd(a, b);
  return a + b;
}

// Sums run along n one [inner] row at a time: y[k] = y[k -/+ 1] + x[k or its neighbour], so
// every inner loop is contiguous. Float sums accumulate in order, like numpy's cumsum.
template <typename T>
class CumSumKernel final : public Kernel {
 public:
  CumSumKernel(int axis, bool exclusive, bool reverse)
      : axis_(axis), exclusive_(exclusive), reverse_(reverse) {}
  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext& ctx) override {
    view_ = ViewAround(in[0].dims, axis_);
    return Status::Ok();
  }
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const T* x = in[0].As<T>();
    T* y = out[0].As<T>();
    const AxisView v = view_;
    if (v.n == 0 || v.inner == 0) return;
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / (v.n * v.inner));
    const bool exclusive = exclusive_, reverse = reverse_;
    ParallelFor(ctx, v.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* xs = x + o * v.n * v.inner;
        T* ys = y + o * v.n * v.inner;
        // Positions along n in the order the sum runs; `step` goes from one to the next.
        const int64_t first = reverse ? v.n - 1 : 0;
        const int64_t step = reverse ? -v.inner : v.inner;
        T* row = ys + first * v.inner;
        const T* in_row = xs + first * v.inner;
        for (int64_t c = 0; c < v.inner; ++c) row[c] = exclusive ? T{0} : in_row[c];
        for (int64_t k = 1; k < v.n; ++k) {
          const T* prev = row;
          row += step;
          // Inclusive adds this position's x; exclusive adds the previous position's.
          const T* add = exclusive ? in_row : in_row + step;
          in_row += step;
          for (int64_t c = 0; c < v.inner; ++c) row[c] = AddValues(prev[c], add[c]);
        }
      }
    });
  }

 private:
  int axis_;
  bool exclusive_, reverse_;
  AxisView view_;
};

Result<std::unique_ptr<Kernel>> CreateCumSum(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int axis, CumSumAxis(ctx));
  const bool exclusive = ctx.Int("exclusive", 0) == 1;
  const bool reverse = ctx.Int("reverse", 0) == 1;
  if (ctx.input(0).dtype == DType::kInt64)
    return std::unique_ptr<Kernel>(new CumSumKernel<int64_t>(axis, exclusive, reverse));
  return std::unique_ptr<Kernel>(new CumSumKernel<float>(axis, exclusive, reverse));
}

const OpSchema kArgMax{OpType::kArgMax, 1, 1, 1, 1, kArgAttrs, InferArg, CreateArg<true>};
const OpSchema kArgMin{OpType::kArgMin, 1, 1, 1, 1, kArgAttrs, InferArg, CreateArg<false>};
const OpSchema kCumSum{OpType::kCumSum, 2, 2, 1, 1, kCumSumAttrs, InferCumSum, CreateCumSum};

}  // namespace

void AddAxisReductionOps(std::vector<const OpSchema*>* ops) {
  ops->push_back(&kArgMax);
  ops->push_back(&kArgMin);
  ops->push_back(&kCumSum);
}

}  // namespace mlcapsule::engine
