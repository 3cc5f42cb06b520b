// Unary elementwise operators: activations (Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid,
// HardSwish, Elu, Selu, Celu, ThresholdedRelu, Softplus, Softsign, Mish) and math (Exp, Log,
// Sqrt, Neg, Abs, Reciprocal, Floor, Ceil, Round, Sign, Sin, Cos, Erf). Each op is a small functor
// run by one loop template; NaN inputs give NaN outputs as in numpy, which is why comparisons
// are written so that a NaN takes the branch returning an expression of x.
#include <cmath>
#include <type_traits>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kNoAttrs[] = {""};
constexpr std::string_view kAlphaAttrs[] = {"alpha"};
constexpr std::string_view kAlphaBetaAttrs[] = {"alpha", "beta"};
constexpr std::string_view kAlphaGammaAttrs[] = {"alpha", "gamma"};

template <typename T, typename Fn>
class UnaryKernel final : public Kernel {
 public:
  explicit UnaryKernel(Fn fn) : fn_(fn) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const T* x = in[0].As<T>();
    T* y = out[0].As<T>();
    const Fn fn = fn_;
    ParallelFor(ctx, in[0].NumElements(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = fn(x[i]);
    });
  }

 private:
  Fn fn_;
};

// Functors. Those with kInt64 = true also run on int64 (inference allows it for them only).
struct ReluFn {
  float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct SigmoidFn {
  float operator()(float x) const { return 1.0f / (1.0f + std::exp(-x)); }
};
struct TanhFn {
  float operator()(float x) const { return std::tanh(x); }
};
struct ExpFn {
  float operator()(float x) const { return std::exp(x); }
};
struct LogFn {
  float operator()(float x) const { return std::log(x); }
};
struct SqrtFn {
  float operator()(float x) const { return std::sqrt(x); }
};
struct ReciprocalFn {
  float operator()(float x) const { return 1.0f / x; }
};
struct FloorFn {
  float operator()(float x) const { return std::floor(x); }
};
struct CeilFn {
  float operator()(float x) const { return std::ceil(x); }
};
struct RoundFn {  // halves to even: the default rounding mode
  float operator()(float x) const { return std::nearbyint(x); }
};
struct SinFn {
  float operator()(float x) const { return std::sin(x); }
};
struct CosFn {
  float operator()(float x) const { return std::cos(x); }
};
struct ErfFn {
  float operator()(float x) const { return std::erf(x); }
};
// log(1 + exp(x)) without overflow for large x.
inline float Softplus(float x) {
  return (x > 0.0f ? x : 0.0f) + std::log1p(std::exp(-std::fabs(x)));
}
struct SoftplusFn {
  float operator()(float x) const { return Softplus(x); }
};
struct SoftsignFn {
  float operator()(float x) const { return x / (1.0f + std::fabs(x)); }
};
struct MishFn {
  float operator()(float x) const { return x * std::tanh(Softplus(x)); }
};
struct NegFn {
  static constexpr bool kInt64 = true;
  float operator()(float x) const { return -x; }
  int64_t operator()(int64_t x) const { return WrapSub(0, x); }
};
struct AbsFn {
  static constexpr bool kInt64 = true;
  float operator()(float x) const { return std::fabs(x); }
  int64_t operator()(int64_t x) const { return x < 0 ? WrapSub(0, x) : x; }
};
struct SignFn {
  static constexpr bool kInt64 = true;
  float operator()(float x) const { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x); }
  int64_t operator()(int64_t x) const { return (x > 0) - (x < 0); }
};
// A note on the branch-free forms below: GCC (which traps on FP exceptions by default,
// -ftrapping-math) will not vectorise `x < 0 ? alpha * x : x`, because it would compute alpha * x
// for every element; it does vectorise selects between already-computed values. So LeakyRelu is
// max(x, 0) + alpha * min(x, 0), each select written so a NaN x comes through, which equals the
// definition exactly for finite alpha.
struct LeakyReluFn {
  float alpha;
  float operator()(float x) const {
    const float positive = x < 0.0f ? 0.0f : x;
    const float negative = x > 0.0f ? 0.0f : x;
    return positive + alpha * negative;
  }
};
struct HardSigmoidFn {
  float alpha, beta;
  float operator()(float x) const {
    const float v = alpha * x + beta;
    const float low = v < 0.0f ? 0.0f : v;
    return low > 1.0f ? 1.0f : low;
  }
};
// x * HardSigmoid(x) with alpha = 1/6, beta = 0.5, computed as x * clamp(x + 3, 0, 6) / 6: the
// same value to rounding, and a form GCC vectorises (see LeakyReluFn).
struct HardSwishFn {
  float operator()(float x) const {
    const float v = x + 3.0f;
    const float low = v < 0.0f ? 0.0f : v;
    const float high = low > 6.0f ? 6.0f : low;
    return x * high * (1.0f / 6.0f);
  }
};
struct EluFn {
  float alpha;
  float operator()(float x) const { return x < 0.0f ? alpha * std::expm1(x) : x; }
};
struct SeluFn {
  float alpha, gamma;
  float operator()(float x) const { return x > 0.0f ? gamma * x : gamma * alpha * std::expm1(x); }
};
struct CeluFn {  // max(0, x) + min(0, alpha * (exp(x / alpha) - 1)), for either sign of alpha
  float alpha;
  float operator()(float x) const { return x >= 0.0f ? x : alpha * std::expm1(x / alpha); }
};
struct ThresholdedReluFn {
  float alpha;
  float operator()(float x) const { return x > alpha ? x : 0.0f; }
};

template <typename Fn>
constexpr bool AllowsInt64() {
  if constexpr (requires { Fn::kInt64; }) return Fn::kInt64;
  return false;
}

template <typename Fn>
Result<std::unique_ptr<Kernel>> MakeUnary(const NodeContext& ctx, Fn fn) {
  if constexpr (AllowsInt64<Fn>()) {
    if (ctx.input(0).dtype == DType::kInt64)
      return std::unique_ptr<Kernel>(new UnaryKernel<int64_t, Fn>(fn));
  }
  return std::unique_ptr<Kernel>(new UnaryKernel<float, Fn>(fn));
}

// Every attribute a unary op allows (alpha, beta, gamma) is one float.
template <typename Fn>
Status InferUnary(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, AllowsInt64<Fn>()));
  for (const Attribute& a : ctx.node().attrs)
    MLC_RETURN_IF_ERROR(CheckScalarAttr(ctx, a.name, AttrKind::kFloats));
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

Status InferCelu(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(InferUnary<CeluFn>(ctx, outputs));
  if (ctx.Float("alpha", 1.0f) == 0.0f) return ctx.Error("attribute 'alpha' must not be 0");
  return Status::Ok();
}

template <typename Fn>
Result<std::unique_ptr<Kernel>> CreatePlain(const NodeContext& ctx) {
  return MakeUnary(ctx, Fn{});
}
Result<std::unique_ptr<Kernel>> CreateLeakyRelu(const NodeContext& ctx) {
  return MakeUnary(ctx, LeakyReluFn{ctx.Float("alpha", 0.01f)});
}
Result<std::unique_ptr<Kernel>> CreateHardSigmoid(const NodeContext& ctx) {
  return MakeUnary(ctx, HardSigmoidFn{ctx.Float("alpha", 0.2f), ctx.Float("beta", 0.5f)});
}
Result<std::unique_ptr<Kernel>> CreateElu(const NodeContext& ctx) {
  return MakeUnary(ctx, EluFn{ctx.Float("alpha", 1.0f)});
}
Result<std::unique_ptr<Kernel>> CreateSelu(const NodeContext& ctx) {
  return MakeUnary(ctx, SeluFn{ctx.Float("alpha", 1.67326319217681884765625f),
                               ctx.Float("gamma", 1.05070102214813232421875f)});
}
Result<std::unique_ptr<Kernel>> CreateCelu(const NodeContext& ctx) {
  return MakeUnary(ctx, CeluFn{ctx.Float("alpha", 1.0f)});
}
Result<std::unique_ptr<Kernel>> CreateThresholdedRelu(const NodeContext& ctx) {
  return MakeUnary(ctx, ThresholdedReluFn{ctx.Float("alpha", 1.0f)});
}

template <typename Fn>
constexpr OpSchema PlainUnarySchema(OpType type) {
  return OpSchema{type, 1, 1, 1, 1, {kNoAttrs, 0}, InferUnary<Fn>, CreatePlain<Fn>};
}
const OpSchema kRelu = PlainUnarySchema<ReluFn>(OpType::kRelu);
const OpSchema kSigmoid = PlainUnarySchema<SigmoidFn>(OpType::kSigmoid);
const OpSchema kTanh = PlainUnarySchema<TanhFn>(OpType::kTanh);
const OpSchema kExp = PlainUnarySchema<ExpFn>(OpType::kExp);
const OpSchema kLog = PlainUnarySchema<LogFn>(OpType::kLog);
const OpSchema kSqrt = PlainUnarySchema<SqrtFn>(OpType::kSqrt);
const OpSchema kNeg = PlainUnarySchema<NegFn>(OpType::kNeg);
const OpSchema kAbs = PlainUnarySchema<AbsFn>(OpType::kAbs);
const OpSchema kReciprocal = PlainUnarySchema<ReciprocalFn>(OpType::kReciprocal);
const OpSchema kFloor = PlainUnarySchema<FloorFn>(OpType::kFloor);
const OpSchema kCeil = PlainUnarySchema<CeilFn>(OpType::kCeil);
const OpSchema kRound = PlainUnarySchema<RoundFn>(OpType::kRound);
const OpSchema kSign = PlainUnarySchema<SignFn>(OpType::kSign);
const OpSchema kSin = PlainUnarySchema<SinFn>(OpType::kSin);
const OpSchema kCos = PlainUnarySchema<CosFn>(OpType::kCos);
const OpSchema kErf = PlainUnarySchema<ErfFn>(OpType::kErf);
const OpSchema kSoftplus = PlainUnarySchema<SoftplusFn>(OpType::kSoftplus);
const OpSchema kSoftsign = PlainUnarySchema<SoftsignFn>(OpType::kSoftsign);
const OpSchema kMish = PlainUnarySchema<MishFn>(OpType::kMish);
const OpSchema kHardSwish = PlainUnarySchema<HardSwishFn>(OpType::kHardSwish);

const OpSchema kLeakyRelu{OpType::kLeakyRelu, 1, 1, 1, 1, kAlphaAttrs, InferUnary<LeakyReluFn>,
                          CreateLeakyRelu};
const OpSchema kHardSigmoid{
    OpType::kHardSigmoid, 1, 1, 1, 1, kAlphaBetaAttrs, InferUnary<HardSigmoidFn>,
    CreateHardSigmoid};
const OpSchema kElu{OpType::kElu, 1, 1, 1, 1, kAlphaAttrs, InferUnary<EluFn>, CreateElu};
const OpSchema kSelu{OpType::kSelu, 1, 1, 1, 1, kAlphaGammaAttrs, InferUnary<SeluFn>, CreateSelu};
const OpSchema kCelu{OpType::kCelu, 1, 1, 1, 1, kAlphaAttrs, InferCelu, CreateCelu};
const OpSchema kThresholdedRelu{
    OpType::kThresholdedRelu, 1, 1, 1, 1, kAlphaAttrs, InferUnary<ThresholdedReluFn>,
    CreateThresholdedRelu};

}  // namespace

void AddUnaryOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s : {&kRelu,       &kSigmoid,
                            &kTanh,       &kExp,
                            &kLog,        &kSqrt,
                            &kNeg,        &kAbs,
                            &kReciprocal, &kFloor,
                            &kCeil,       &kRound,
                            &kSign,       &kSin,
                            &kCos,        &kErf,
                            &kSoftplus,   &kSoftsign,
                            &kMish,       &kHardSwish,
                            &kLeakyRelu,  &kHardSigmoid,
                            &kElu,        &kSelu,
                            &kCelu,       &kThresholdedRelu})
    ops->push_back(s);
}

}  // namespace mlcapsule::engine
