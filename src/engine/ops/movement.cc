// Movement ops that only compute a new shape or write a small generated tensor: Identity,
// Reshape, Flatten, Squeeze, Unsqueeze (pure reinterpretations of input 0's bytes, so the executor
// aliases them), Shape, ConstantOfShape and Range. Also the family's registration function.
// Parameter inputs (Reshape's shape, Squeeze's axes, Range's bounds, ...) must be plan constants;
// inference checks them once, so the kernels do no checking.
#include <cmath>
#include <cstring>

#include "engine/ops/movement_util.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace movement {
namespace {

constexpr std::string_view kNoAttrs[] = {""};
constexpr std::string_view kReshapeAttrs[] = {"allowzero"};
constexpr std::string_view kAxisAttrs[] = {"axis"};
constexpr std::string_view kShapeAttrs[] = {"start", "end"};
constexpr std::string_view kConstantOfShapeAttrs[] = {"dtype", "value"};

// --- Identity ---------------------------------------------------------------------------------

Status InferIdentity(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

// --- Reshape ----------------------------------------------------------------------------------

Status InferReshape(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ConstantInts(ctx, 1, "shape"));
  if (ctx.input(1).shape.size() != 1)
    return ctx.Error("input 'shape' has rank {}, expected 1", ctx.input(1).shape.size());
  const int64_t allowzero = ctx.Int("allowzero", 0);
  if (allowzero != 0 && allowzero != 1)
    return ctx.Error("attribute allowzero is {}, allowed 0 or 1", allowzero);
  if (static_cast<int64_t>(shape.size()) > kMaxRank)
    return ctx.Error("input 'shape' has {} entries, allowed at most {}", shape.size(), kMaxRank);
  const Shape& in = ctx.input(0).shape;
  Shape out(shape.size(), Dim{1, false});
  int inferred = -1;
  bool has_zero = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t v = shape[i];
    if (v == -1) {
      if (inferred >= 0) return ctx.Error("input 'shape' has more than one -1");
      inferred = static_cast<int>(i);
    } else if (v < -1) {
      return ctx.Error("shape[{}] is {}, allowed -1 or more", i, v);
    } else if (v == 0 && allowzero == 0) {
      if (i >= in.size())
        return ctx.Error("shape[{}] is 0 (copy the input dim) but the input {} has rank {}", i,
                         ShapeToString(in), in.size());
      out[i] = in[i];
    } else {
      if (v > kMaxTensorElements)
        return ctx.Error("shape[{}] is {}, allowed at most {}", i, v, kMaxTensorElements);
      out[i] = Dim{v, false};
      has_zero = has_zero || v == 0;
    }
  }
  if (has_zero && inferred >= 0)
    return ctx.Error("input 'shape' has both 0 (with allowzero=1) and -1");
  MLC_ASSIGN_OR_RETURN(SymbolicSize in_size, SymbolicProduct(ctx, in, "input 'data'"));
  MLC_ASSIGN_OR_RETURN(SymbolicSize known, SymbolicProduct(ctx, out, "output"));
  if (inferred < 0) {
    if (known.batch_power != in_size.batch_power && !(in_size.value == 0 && known.value == 0))
      return ctx.Unsupported("reshaping {} to {} only holds for one batch size", ShapeToString(in),
                             ShapeToString(out));
    if (known.value != in_size.value)
      return ctx.Error("cannot reshape {} to {}: element counts differ", ShapeToString(in),
                       ShapeToString(out));
  } else {
    if (known.value == 0)
      return ctx.Error("shape[{}] is -1 but another entry is 0, so it cannot be inferred",
                       inferred);
    const int power = in_size.batch_power - known.batch_power;
    if (power < 0 || power > 1)
      return ctx.Unsupported("reshaping {} to {} needs N^{} in the -1 dimension", ShapeToString(in),
                             ShapeToString(out), power);
    if (in_size.value % known.value != 0)
      return ctx.Error("cannot reshape {} to {}: {} elements do not divide by {}",
                       ShapeToString(in), ShapeToString(out), in_size.value, known.value);
    out[static_cast<size_t>(inferred)] = Dim{in_size.value / known.value, power == 1};
  }
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

// --- Flatten ----------------------------------------------------------------------------------

Status InferFlatten(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  const Shape& in = ctx.input(0).shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  int64_t axis = ctx.Int("axis", 1);
  if (axis < -rank || axis > rank)
    return ctx.Error("axis {} is out of range for rank {} (allowed [{}, {}])", axis, rank, -rank,
                     rank);
  if (axis < 0) axis += rank;
  std::span<const Dim> dims(in);
  MLC_ASSIGN_OR_RETURN(
      Dim outer, ProductAsDim(ctx, dims.first(static_cast<size_t>(axis)), "the dims before axis"));
  MLC_ASSIGN_OR_RETURN(Dim inner, ProductAsDim(ctx, dims.subspan(static_cast<size_t>(axis)),
                                               "the dims from axis on"));
  outputs->push_back(TensorType{ctx.input(0).dtype, {outer, inner}});
  return Status::Ok();
}

// --- Squeeze / Unsqueeze ----------------------------------------------------------------------

Status InferSqueeze(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  const Shape& in = ctx.input(0).shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  std::vector<bool> remove(in.size(), false);
  if (ctx.has_input(1)) {
    MLC_ASSIGN_OR_RETURN(std::vector<int64_t> axes, ConstantInts(ctx, 1, "axes"));
    for (int64_t a : axes) {
      MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, a, rank, "axes entry"));
      if (rank == 0) return ctx.Error("cannot squeeze a scalar");
      if (remove[axis]) return ctx.Error("axis {} is listed twice in 'axes'", a);
      const Dim& d = in[axis];
      if (d.batch)
        return ctx.Unsupported("axis {} has size {}, which is 1 only for batch size 1", a,
                               ShapeToString({d}));
      if (d.value != 1) return ctx.Error("cannot squeeze axis {} of size {}", a, d.value);
      remove[axis] = true;
    }
  } else {
    for (size_t i = 0; i < in.size(); ++i) remove[i] = !in[i].batch && in[i].value == 1;
  }
  Shape out;
  for (size_t i = 0; i < in.size(); ++i)
    if (!remove[i]) out.push_back(in[i]);
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

Status InferUnsqueeze(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> axes, ConstantInts(ctx, 1, "axes"));
  const Shape& in = ctx.input(0).shape;
  const int64_t out_rank = static_cast<int64_t>(in.size() + axes.size());
  if (out_rank > kMaxRank)
    return ctx.Error("output rank {} is over the limit {}", out_rank, kMaxRank);
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : axes) {
    MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, a, out_rank, "axes entry"));
    if (inserted[axis]) return ctx.Error("axis {} is listed twice in 'axes'", a);
    inserted[axis] = true;
  }
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < out_rank; ++i) out.push_back(inserted[i] ? Dim{1, false} : in[next++]);
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

// --- Shape ------------------------------------------------------------------------------------

// Opset 15 semantics: negative start/end count from the back, then both clamp to [0, rank].
void ShapeRange(const NodeContext& ctx, int64_t rank, int64_t* start, int64_t* end) {
  auto clamp = [rank](int64_t v) {
    if (v < 0) v = v < -rank ? 0 : v + rank;
    return v > rank ? rank : v;
  };
  *start = clamp(ctx.Int("start", 0));
  *end = clamp(ctx.Int("end", rank));
}

Status InferShape(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  int64_t start, end;
  ShapeRange(ctx, static_cast<int64_t>(ctx.input(0).shape.size()), &start, &end);
  outputs->push_back(TensorType{DType::kInt64, {Dim{std::max<int64_t>(end - start, 0), false}}});
  return Status::Ok();
}

// Writes the concrete dims, so one plan serves every batch size.
class ShapeKernel final : public Kernel {
 public:
  explicit ShapeKernel(int64_t start) : start_(start) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext&) override {
    int64_t* y = out[0].As<int64_t>();
    for (int64_t i = 0; i < out[0].dims[0]; ++i) y[i] = in[0].dims[start_ + i];
  }

 private:
  int64_t start_;
};

Result<std::unique_ptr<Kernel>> CreateShape(const NodeContext& ctx) {
  int64_t start, end;
  ShapeRange(ctx, static_cast<int64_t>(ctx.input(0).shape.size()), &start, &end);
  return std::unique_ptr<Kernel>(new ShapeKernel(start));
}

// --- ConstantOfShape --------------------------------------------------------------------------

// The element bits of ConstantOfShape's fill value (already validated by inference).
struct FillValue {
  DType dtype = DType::kFloat32;
  uint64_t bits = 0;  // the low 4 bytes for float32
};

Result<FillValue> ReadFillValue(const NodeContext& ctx) {
  const Attribute* value = ctx.node().FindAttr("value");
  int64_t code = ctx.Int("dtype", value != nullptr && value->kind == AttrKind::kInts ? 7 : 1);
  if (code != 1 && code != 7)
    return ctx.Error("attribute dtype is {}, allowed 1 (float32) or 7 (int64)", code);
  FillValue fill;
  fill.dtype = static_cast<DType>(code);
  if (value == nullptr) return fill;
  const AttrKind expected = fill.dtype == DType::kFloat32 ? AttrKind::kFloats : AttrKind::kInts;
  const size_t count = value->kind == AttrKind::kFloats ? value->floats.size() : value->ints.size();
  if (value->kind != expected || count != 1)
    return ctx.Error("attribute value must be one {} value", DTypeName(fill.dtype));
  if (fill.dtype == DType::kFloat32) {
    uint32_t bits;
    std::memcpy(&bits, &value->floats[0], sizeof(bits));
    fill.bits = bits;
  } else {
    std::memcpy(&fill.bits, &value->ints[0], sizeof(fill.bits));
  }
  return fill;
}

Status InferConstantOfShape(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ConstantInts(ctx, 0, "input"));
  if (ctx.input(0).shape.size() != 1)
    return ctx.Error("input 'input' has rank {}, expected 1", ctx.input(0).shape.size());
  if (static_cast<int64_t>(shape.size()) > kMaxRank)
    return ctx.Error("input 'input' has {} entries, allowed at most {}", shape.size(), kMaxRank);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] < 0) return ctx.Error("input[{}] is {}, allowed 0 or more", i, shape[i]);
  MLC_ASSIGN_OR_RETURN(FillValue fill, ReadFillValue(ctx));
  outputs->push_back(TensorType{fill.dtype, FixedShape(shape)});
  return Status::Ok();
}

class FillKernel final : public Kernel {
 public:
  explicit FillKernel(FillValue fill) : fill_(fill) {}
  void Run(std::span<const TensorView>, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t n = out[0].NumElements();
    if (fill_.dtype == DType::kInt64) {
      Fill(out[0].As<uint64_t>(), n, fill_.bits, ctx);
    } else {
      Fill(out[0].As<uint32_t>(), n, static_cast<uint32_t>(fill_.bits), ctx);
    }
  }

 private:
  template <typename T>
  static void Fill(T* y, int64_t n, T v, const RunContext& ctx) {
    ParallelFor(ctx, n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = v;
    });
  }
  FillValue fill_;
};

Result<std::unique_ptr<Kernel>> CreateConstantOfShape(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(FillValue fill, ReadFillValue(ctx));
  return std::unique_ptr<Kernel>(new FillKernel(fill));
}

// --- Range ------------------------------------------------------------------------------------

Status InferRange(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  const char* names[] = {"start", "limit", "delta"};
  for (int i = 0; i < 3; ++i) {
    MLC_RETURN_IF_ERROR(RequireInput(ctx, i, names[i]));
    const TensorType& t = ctx.input(i);
    if (t.dtype != ctx.input(0).dtype)
      return ctx.Error("input '{}' is {}, but 'start' is {}", names[i], DTypeName(t.dtype),
                       DTypeName(ctx.input(0).dtype));
    if (!(t.shape.empty() || (t.shape.size() == 1 && t.shape[0] == Dim{1, false})))
      return ctx.Error("input '{}' has shape {}, expected a scalar", names[i],
                       ShapeToString(t.shape));
    if (ctx.constant(i) == nullptr) return ctx.Error("input '{}' must be a constant", names[i]);
  }
  int64_t count = 0;
  if (ctx.input(0).dtype == DType::kInt64) {
    const __int128 start = *ctx.constant_as<int64_t>(0);
    const __int128 limit = *ctx.constant_as<int64_t>(1);
    const __int128 delta = *ctx.constant_as<int64_t>(2);
    if (delta == 0) return ctx.Error("input 'delta' is 0");
    const __int128 span = limit - start;
    if ((span > 0) == (delta > 0) && span != 0) {
      const __int128 magnitude = span > 0 ? span : -span;
      const __int128 step = delta > 0 ? delta : -delta;
      const __int128 n = (magnitude + step - 1) / step;
      if (n > kMaxTensorElements)
        return ctx.Error("output has {} elements, allowed at most {}", static_cast<int64_t>(n),
                         kMaxTensorElements);
      count = static_cast<int64_t>(n);
    }
  } else {
    const float start = *ctx.constant_as<float>(0);
    const float limit = *ctx.constant_as<float>(1);
    const float delta = *ctx.constant_as<float>(2);
    if (!std::isfinite(start) || !std::isfinite(limit) || !std::isfinite(delta))
      return ctx.Error("inputs start {}, limit {}, delta {} must be finite", start, limit, delta);
    if (delta == 0.0f) return ctx.Error("input 'delta' is 0");
    const double n = std::ceil(static_cast<double>(limit - start) / static_cast<double>(delta));
    if (n > static_cast<double>(kMaxTensorElements))
      return ctx.Error("output has {} elements, allowed at most {}", n, kMaxTensorElements);
    count = n > 0 ? static_cast<int64_t>(n) : 0;
  }
  outputs->push_back(TensorType{ctx.input(0).dtype, {Dim{count, false}}});
  return Status::Ok();
}

// output[i] = start + i * delta, as the ONNX spec states it (not a running sum, which would
// accumulate rounding error in float32).
class RangeKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext&) override {
    const int64_t n = out[0].dims[0];
    if (out[0].dtype == DType::kInt64) {
      const int64_t start = *in[0].As<int64_t>(), delta = *in[2].As<int64_t>();
      int64_t* y = out[0].As<int64_t>();
      // Unsigned arithmetic: i * delta may pass INT64_MAX on the way to an in-range value.
      for (int64_t i = 0; i < n; ++i)
        y[i] = static_cast<int64_t>(static_cast<uint64_t>(start) +
                                    static_cast<uint64_t>(i) * static_cast<uint64_t>(delta));
    } else {
      const float start = *in[0].As<float>(), delta = *in[2].As<float>();
      float* y = out[0].As<float>();
      for (int64_t i = 0; i < n; ++i) y[i] = start + static_cast<float>(i) * delta;
    }
  }
};

Result<std::unique_ptr<Kernel>> CreateRange(const NodeContext&) {
  return std::unique_ptr<Kernel>(new RangeKernel());
}

// --- Schemas ----------------------------------------------------------------------------------

const OpSchema kIdentity{
    OpType::kIdentity, 1,   1, 1, 1, {kNoAttrs, 0}, CheckedInfer<InferIdentity>,
    CreateCopyKernel,  true};
const OpSchema kReshape{OpType::kReshape, 2,   2, 1, 1, kReshapeAttrs, CheckedInfer<InferReshape>,
                        CreateCopyKernel, true};
const OpSchema kFlatten{OpType::kFlatten, 1,   1, 1, 1, kAxisAttrs, CheckedInfer<InferFlatten>,
                        CreateCopyKernel, true};
const OpSchema kSqueeze{OpType::kSqueeze, 1,   2, 1, 1, {kNoAttrs, 0}, CheckedInfer<InferSqueeze>,
                        CreateCopyKernel, true};
const OpSchema kUnsqueeze{
    OpType::kUnsqueeze, 2,   2, 1, 1, {kNoAttrs, 0}, CheckedInfer<InferUnsqueeze>,
    CreateCopyKernel,   true};
const OpSchema kShape{OpType::kShape,           1,          1, 1, 1, kShapeAttrs,
                      CheckedInfer<InferShape>, CreateShape};
const OpSchema kConstantOfShape{
    OpType::kConstantOfShape, 1, 1, 1, 1, kConstantOfShapeAttrs, CheckedInfer<InferConstantOfShape>,
    CreateConstantOfShape};
const OpSchema kRange{OpType::kRange,           3,          3, 1, 1, {kNoAttrs, 0},
                      CheckedInfer<InferRange>, CreateRange};

}  // namespace

void AddShapeOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s : {&kIdentity, &kReshape, &kFlatten, &kSqueeze, &kUnsqueeze, &kShape,
                            &kConstantOfShape, &kRange})
    ops->push_back(s);
}

}  // namespace movement

void AddMovementOps(std::vector<const OpSchema*>* ops) {
  movement::AddShapeOps(ops);
  movement::AddLayoutOps(ops);
  movement::AddSelectionOps(ops);
}

}  // namespace mlcapsule::engine
