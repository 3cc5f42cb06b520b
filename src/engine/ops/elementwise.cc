// Elementwise operators, the family's entry point: AddElementwiseOps lists the unary ops
// (elementwise_unary.cc), the binary and variadic ops (elementwise_binary.cc), and Clip and Cast,
// which live here. Also the attribute checks the family's inference functions share. Kernels
// trust shapes and types checked by inference; these loops are simple enough that the compiler's
// vectorisation is the fast path, so each op has one (reference) kernel.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {

Status CheckScalarAttr(const NodeContext& ctx, std::string_view name, AttrKind kind) {
  const Attribute* a = ctx.node().FindAttr(name);
  if (a == nullptr) return Status::Ok();
  size_t count = kind == AttrKind::kInts ? a->ints.size() : a->floats.size();
  if (a->kind != kind || count != 1)
    return ctx.Error("attribute '{}' must be one {} value", name,
                     kind == AttrKind::kInts ? "int" : "float");
  return Status::Ok();
}

Result<bool> BoolAttr(const NodeContext& ctx, std::string_view name, bool fallback) {
  MLC_RETURN_IF_ERROR(CheckScalarAttr(ctx, name, AttrKind::kInts));
  int64_t value = ctx.Int(name, fallback ? 1 : 0);
  if (value != 0 && value != 1)
    return ctx.Error("attribute '{}' is {} (allowed 0 or 1)", name, value);
  return value == 1;
}

Status CheckNumericInput(const NodeContext& ctx, int i, bool allow_int64) {
  DType dtype = ctx.input(i).dtype;
  if (dtype != DType::kFloat32 && !(allow_int64 && dtype == DType::kInt64))
    return ctx.Unsupported("element type {} of input {} (only {})", DTypeName(dtype), i,
                           allow_int64 ? "float32 and int64" : "float32");
  // The kernels keep per-dim state in arrays of kMaxRank entries.
  const size_t rank = ctx.input(i).shape.size();
  if (rank > static_cast<size_t>(kMaxRank))
    return ctx.Error("input {} has rank {}, over the limit {}", i, rank, kMaxRank);
  return Status::Ok();
}

namespace {

constexpr std::string_view kNoAttrs[] = {""};

// ---- Clip: inputs X, min (optional), max (optional); min and max are one-element tensors. ----

Status InferClip(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, /*allow_int64=*/true));
  const char* names[] = {"", "min", "max"};
  for (int i = 1; i < 3; ++i) {
    if (!ctx.has_input(i)) continue;
    const TensorType& bound = ctx.input(i);
    if (bound.dtype != ctx.input(0).dtype)
      return ctx.Error("{} has element type {}, input has {}", names[i], DTypeName(bound.dtype),
                       DTypeName(ctx.input(0).dtype));
    for (const Dim& d : bound.shape) {
      if (d.batch || d.value != 1)
        return ctx.Error("{} has shape {} (must be a scalar or hold one element)", names[i],
                         ShapeToString(bound.shape));
    }
  }
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

template <typename T>
class ClipKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    T low = std::numeric_limits<T>::lowest();
    T high = std::numeric_limits<T>::max();
    if constexpr (std::is_floating_point_v<T>) {
      low = -std::numeric_limits<T>::infinity();
      high = std::numeric_limits<T>::infinity();
    }
    if (in.size() > 1 && in[1].data != nullptr) low = in[1].As<T>()[0];
    if (in.size() > 2 && in[2].data != nullptr) high = in[2].As<T>()[0];
    const T* x = in[0].As<T>();
    T* y = out[0].As<T>();
    const int64_t n = in[0].NumElements();
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(low) || std::isnan(high)) {  // numpy: maximum/minimum with NaN is NaN
        for (int64_t i = 0; i < n; ++i) y[i] = std::numeric_limits<T>::quiet_NaN();
        return;
      }
    }
    // Written so a NaN x compares false and passes through, like numpy's clip. When low > high
    // every element becomes high, also like numpy.
    ParallelFor(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T v = x[i] < low ? low : x[i];
        y[i] = v > high ? high : v;
      }
    });
  }
};

Result<std::unique_ptr<Kernel>> CreateClip(const NodeContext& ctx) {
  if (ctx.input(0).dtype == DType::kInt64)
    return std::unique_ptr<Kernel>(new ClipKernel<int64_t>());
  return std::unique_ptr<Kernel>(new ClipKernel<float>());
}

// ---- Cast: attribute "to" (an ONNX TensorProto.DataType code). ----

constexpr std::string_view kCastAttrs[] = {"to"};
// ONNX data type codes run from 1 (FLOAT) to 23 (FLOAT4E2M1) as of opset 23.
constexpr int64_t kMaxOnnxTypeCode = 23;

Status InferCast(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckScalarAttr(ctx, "to", AttrKind::kInts));
  if (!ctx.Has("to")) return ctx.Error("attribute 'to' is missing");
  int64_t to = ctx.Int("to", 0);
  if (to < 1 || to > kMaxOnnxTypeCode)
    return ctx.Error("attribute 'to' is {} (allowed ONNX data type codes 1 to {})", to,
                     kMaxOnnxTypeCode);
  if (to != static_cast<int64_t>(DType::kFloat32) && to != static_cast<int64_t>(DType::kInt64))
    return ctx.Unsupported("cast to element type code {} (only 1 = float32 and 7 = int64)", to);
  outputs->push_back(TensorType{static_cast<DType>(to), ctx.input(0).shape});
  return Status::Ok();
}

// float -> int64 truncates toward zero. Out-of-range values saturate and NaN becomes INT64_MIN
// (what x86's cvttss2si gives numpy); a plain static_cast would be undefined behaviour.
inline int64_t FloatToInt64(float x) {
  constexpr float kTwo63 = 9223372036854775808.0f;
  if (x >= kTwo63) return std::numeric_limits<int64_t>::max();
  if (!(x >= -kTwo63)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(x);
}

class CastKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t n = in[0].NumElements();
    if (in[0].dtype == out[0].dtype) {
      std::memcpy(out[0].data, in[0].data, static_cast<size_t>(n) * DTypeSize(in[0].dtype));
      return;
    }
    if (in[0].dtype == DType::kFloat32) {
      const float* x = in[0].As<float>();
      int64_t* y = out[0].As<int64_t>();
      ParallelFor(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] = FloatToInt64(x[i]);
      });
      return;
    }
    const int64_t* x = in[0].As<int64_t>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = static_cast<float>(x[i]);
    });
  }
};

Result<std::unique_ptr<Kernel>> CreateCast(const NodeContext&) {
  return std::unique_ptr<Kernel>(new CastKernel());
}

const OpSchema kClip{OpType::kClip, 1, 3, 1, 1, {kNoAttrs, 0}, InferClip, CreateClip};
const OpSchema kCast{OpType::kCast, 1, 1, 1, 1, kCastAttrs, InferCast, CreateCast};

}  // namespace

void AddElementwiseOps(std::vector<const OpSchema*>* ops) {
  AddUnaryOps(ops);
  AddBinaryOps(ops);
  ops->push_back(&kClip);
  ops->push_back(&kCast);
}

}  // namespace mlcapsule::engine
