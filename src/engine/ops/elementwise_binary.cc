// Binary elementwise operators with NumPy broadcasting (Add, Sub, Mul, Div, Pow, Mod, PRelu) and
// the variadic ones (Sum, Max, Min, Mean), which fold their inputs pairwise into the output. All
// run through BroadcastBinary (elementwise_family.h). Integer arithmetic wraps on overflow, and
// integer division or remainder by zero gives 0 (numpy's result) instead of trapping: the
// divisor is run-time data that inference cannot check.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kNoAttrs[] = {""};
constexpr std::string_view kModAttrs[] = {"fmod"};

// ---- Functors: one overload per element type. ----

struct AddFn {
  float operator()(float a, float b) const { return a + b; }
  int64_t operator()(int64_t a, int64_t b) const { return WrapAdd(a, b); }
};
struct SubFn {
  float operator()(float a, float b) const { return a - b; }
  int64_t operator()(int64_t a, int64_t b) const { return WrapSub(a, b); }
};
struct MulFn {
  float operator()(float a, float b) const { return a * b; }
  int64_t operator()(int64_t a, int64_t b) const { return WrapMul(a, b); }
};
// Integer division truncates toward zero (C, and ONNX's reference, which truncates numpy's true
// quotient). INT64_MIN / -1 wraps instead of trapping.
struct DivFn {
  float operator()(float a, float b) const { return a / b; }
  int64_t operator()(int64_t a, int64_t b) const {
    if (b == 0) return 0;
    if (b == -1) return WrapSub(0, a);
    return a / b;
  }
};
// fmod = 0 on integers: the remainder takes the divisor's sign (Python's %).
struct ModFloorFn {
  int64_t operator()(int64_t a, int64_t b) const {
    if (b == 0 || b == -1) return 0;
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
};
// fmod = 1: the remainder takes the dividend's sign (C's fmod and %).
struct ModTruncFn {
  float operator()(float a, float b) const { return std::fmod(a, b); }
  int64_t operator()(int64_t a, int64_t b) const {
    if (b == 0 || b == -1) return 0;
    return a % b;
  }
};
// Max/Min propagate NaN from either side, like numpy's maximum/minimum.
struct MaxFn {
  float operator()(float a, float b) const { return (a > b || a != a) ? a : b; }
  int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; }
};
struct MinFn {
  float operator()(float a, float b) const { return (a < b || a != a) ? a : b; }
  int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};
// Branch-free like LeakyRelu (elementwise_unary.cc) so GCC vectorises it.
struct PReluFn {
  float operator()(float x, float slope) const {
    const float positive = x < 0.0f ? 0.0f : x;
    const float negative = x > 0.0f ? 0.0f : x;
    return positive + slope * negative;
  }
  int64_t operator()(int64_t x, int64_t slope) const { return x < 0 ? WrapMul(slope, x) : x; }
};

// Saturating double -> int64 (NaN -> INT64_MIN), for Pow with an int64 base.
inline int64_t DoubleToInt64(double x) {
  constexpr double kTwo63 = 9223372036854775808.0;
  if (x >= kTwo63) return std::numeric_limits<int64_t>::max();
  if (!(x >= -kTwo63)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(x);
}

// Pow accepts any mix of float32 and int64; the output has the base's type.
struct PowFn {
  float operator()(float a, float b) const { return std::pow(a, b); }
  float operator()(float a, int64_t b) const {
    return static_cast<float>(std::pow(static_cast<double>(a), static_cast<double>(b)));
  }
  int64_t operator()(int64_t a, float b) const {
    return DoubleToInt64(std::pow(static_cast<double>(a), static_cast<double>(b)));
  }
  int64_t operator()(int64_t a, int64_t b) const {
    if (b < 0) {  // 1 / a^|b| truncated: only a = 1 and a = -1 give a nonzero result
      if (a == 1) return 1;
      if (a == -1) return (b & 1) ? -1 : 1;
      return 0;
    }
    int64_t result = 1;  // square-and-multiply: at most 63 rounds
    while (b > 0) {
      if (b & 1) result = WrapMul(result, a);
      a = WrapMul(a, a);
      b >>= 1;
    }
    return result;
  }
};

// ---- Binary ops ----

template <typename TA, typename TB, typename Op>
class BinaryKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    BroadcastBinary<TA, TB, TA>(ctx, in[0], in[1], out[0], Op{});
  }
};

template <typename Op>
Result<std::unique_ptr<Kernel>> MakeBinary(const NodeContext& ctx) {
  if (ctx.input(0).dtype == DType::kInt64)
    return std::unique_ptr<Kernel>(new BinaryKernel<int64_t, int64_t, Op>());
  return std::unique_ptr<Kernel>(new BinaryKernel<float, float, Op>());
}

Status InferBroadcast(const NodeContext& ctx, DType dtype, std::vector<TensorType>* outputs) {
  std::vector<const Shape*> shapes;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) return ctx.Error("input {} is absent", i);
    shapes.push_back(&ctx.input(i).shape);
  }
  MLC_ASSIGN_OR_RETURN(Shape shape, BroadcastShapes(ctx, shapes));
  outputs->push_back(TensorType{dtype, std::move(shape)});
  return Status::Ok();
}

// Every input float32 (or int64 when allowed), all of one type, broadcast together.
Status InferSameType(const NodeContext& ctx, bool allow_int64, std::vector<TensorType>* outputs) {
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (!ctx.has_input(i)) return ctx.Error("input {} is absent", i);
    MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, i, allow_int64));
    if (ctx.input(i).dtype != ctx.input(0).dtype)
      return ctx.Error("input {} has element type {}, input 0 has {}", i,
                       DTypeName(ctx.input(i).dtype), DTypeName(ctx.input(0).dtype));
  }
  return InferBroadcast(ctx, ctx.input(0).dtype, outputs);
}

Status InferArithmetic(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  return InferSameType(ctx, /*allow_int64=*/true, outputs);
}

Status InferPow(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, /*allow_int64=*/true));
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 1, /*allow_int64=*/true));
  return InferBroadcast(ctx, ctx.input(0).dtype, outputs);
}

Result<std::unique_ptr<Kernel>> CreatePow(const NodeContext& ctx) {
  bool int_base = ctx.input(0).dtype == DType::kInt64;
  bool int_exponent = ctx.input(1).dtype == DType::kInt64;
  Kernel* kernel;
  if (int_base && int_exponent) {
    kernel = new BinaryKernel<int64_t, int64_t, PowFn>();
  } else if (int_base) {
    kernel = new BinaryKernel<int64_t, float, PowFn>();
  } else if (int_exponent) {
    kernel = new BinaryKernel<float, int64_t, PowFn>();
  } else {
    kernel = new BinaryKernel<float, float, PowFn>();
  }
  return std::unique_ptr<Kernel>(kernel);
}

Status InferMod(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_ASSIGN_OR_RETURN(bool fmod, BoolAttr(ctx, "fmod", false));
  MLC_RETURN_IF_ERROR(InferSameType(ctx, /*allow_int64=*/true, outputs));
  if (ctx.input(0).dtype == DType::kFloat32 && !fmod)
    return ctx.Error("attribute 'fmod' is 0 with float32 inputs (ONNX requires fmod = 1)");
  return Status::Ok();
}

Result<std::unique_ptr<Kernel>> CreateMod(const NodeContext& ctx) {
  if (ctx.input(0).dtype == DType::kFloat32)
    return std::unique_ptr<Kernel>(new BinaryKernel<float, float, ModTruncFn>());
  if (ctx.Int("fmod", 0) == 1)
    return std::unique_ptr<Kernel>(new BinaryKernel<int64_t, int64_t, ModTruncFn>());
  return std::unique_ptr<Kernel>(new BinaryKernel<int64_t, int64_t, ModFloorFn>());
}

// PRelu: slope broadcasts to X (unidirectionally), so the output has X's shape.
Status InferPRelu(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(InferSameType(ctx, /*allow_int64=*/true, outputs));
  if ((*outputs)[0].shape != ctx.input(0).shape)
    return ctx.Error("slope shape {} does not broadcast to input shape {}",
                     ShapeToString(ctx.input(1).shape), ShapeToString(ctx.input(0).shape));
  return Status::Ok();
}

// ---- Variadic ops: y = in0 op in1 op in2 ..., accumulated in y. ----

template <typename T, typename Op>
class VariadicKernel final : public Kernel {
 public:
  explicit VariadicKernel(bool mean) : mean_(mean) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const TensorView& y = out[0];
    if (in.size() == 1) {  // one input: y has its shape
      std::memcpy(y.data, in[0].data, static_cast<size_t>(y.NumElements()) * sizeof(T));
    } else {
      BroadcastBinary<T, T, T>(ctx, in[0], in[1], y, Op{});
      for (size_t k = 2; k < in.size(); ++k) BroadcastBinary<T, T, T>(ctx, y, in[k], y, Op{});
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (!mean_ || in.size() == 1) return;
      const T count = static_cast<T>(in.size());
      T* p = y.As<T>();
      ParallelFor(ctx, y.NumElements(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) p[i] /= count;
      });
    }
  }

 private:
  bool mean_;
};

template <typename Op, bool kMean>
Result<std::unique_ptr<Kernel>> CreateVariadic(const NodeContext& ctx) {
  if (ctx.input(0).dtype == DType::kInt64)
    return std::unique_ptr<Kernel>(new VariadicKernel<int64_t, Op>(kMean));
  return std::unique_ptr<Kernel>(new VariadicKernel<float, Op>(kMean));
}

Status InferMean(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  return InferSameType(ctx, /*allow_int64=*/false, outputs);
}

constexpr int kMaxInputs = static_cast<int>(kMaxNodeInputs);
constexpr CreateFn CreateSum = CreateVariadic<AddFn, false>;
constexpr CreateFn CreateMax = CreateVariadic<MaxFn, false>;
constexpr CreateFn CreateMin = CreateVariadic<MinFn, false>;
constexpr CreateFn CreateMean = CreateVariadic<AddFn, true>;

const OpSchema kAdd{OpType::kAdd, 2, 2, 1, 1, {kNoAttrs, 0}, InferArithmetic, MakeBinary<AddFn>};
const OpSchema kSub{OpType::kSub, 2, 2, 1, 1, {kNoAttrs, 0}, InferArithmetic, MakeBinary<SubFn>};
const OpSchema kMul{OpType::kMul, 2, 2, 1, 1, {kNoAttrs, 0}, InferArithmetic, MakeBinary<MulFn>};
const OpSchema kDiv{OpType::kDiv, 2, 2, 1, 1, {kNoAttrs, 0}, InferArithmetic, MakeBinary<DivFn>};
const OpSchema kPow{OpType::kPow, 2, 2, 1, 1, {kNoAttrs, 0}, InferPow, CreatePow};
const OpSchema kMod{OpType::kMod, 2, 2, 1, 1, kModAttrs, InferMod, CreateMod};
const OpSchema kPRelu{OpType::kPRelu, 2, 2, 1, 1, {kNoAttrs, 0}, InferPRelu, MakeBinary<PReluFn>};
const OpSchema kSum{OpType::kSum, 1, kMaxInputs, 1, 1, {kNoAttrs, 0}, InferArithmetic, CreateSum};
const OpSchema kMax{OpType::kMax, 1, kMaxInputs, 1, 1, {kNoAttrs, 0}, InferArithmetic, CreateMax};
const OpSchema kMin{OpType::kMin, 1, kMaxInputs, 1, 1, {kNoAttrs, 0}, InferArithmetic, CreateMin};
const OpSchema kMean{OpType::kMean, 1, kMaxInputs, 1, 1, {kNoAttrs, 0}, InferMean, CreateMean};

}  // namespace

void AddBinaryOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s :
       {&kAdd, &kSub, &kMul, &kDiv, &kPow, &kMod, &kPRelu, &kSum, &kMax, &kMin, &kMean})
    ops->push_back(s);
}

}  // namespace mlcapsule::engine
