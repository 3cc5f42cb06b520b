// Movement ops that select, combine or border parts of tensors: Slice, Gather, Pad, Split,
// Concat and Trilu. Inference validates every axis, constant parameter and size once; kernels do
// no checking, with one exception: Gather's indices may be a runtime tensor, so its kernel checks
// each index against the axis size and writes zeros for an out-of-range one.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "engine/ops/movement_util.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine::movement {
namespace {

constexpr std::string_view kNoAttrs[] = {""};
constexpr std::string_view kAxisAttrs[] = {"axis"};
constexpr std::string_view kPadAttrs[] = {"mode"};
constexpr std::string_view kTriluAttrs[] = {"upper"};

// Product of dims [begin, end) of a concrete shape.
int64_t Product(std::span<const int64_t> dims, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= dims[i];
  return n;
}

// True when a [start, end) slice with step 1 of a batch dim (value * N) certainly keeps all of it
// for every batch size: start clamps to 0 and end to the dim.
bool CoversBatchDim(const Dim& d, int64_t start, int64_t end) {
  const int64_t largest = d.value * kMaxBatch;
  return (start == 0 || start <= -largest) && end >= largest;
}

// --- Slice ------------------------------------------------------------------------------------

// Per input axis: the first element read and the step (axes not sliced: 0 and 1).
struct SliceSpec {
  Dims starts, steps;
  Shape out;
};

Result<SliceSpec> ComputeSlice(const NodeContext& ctx) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  const Shape& in = ctx.input(0).shape;
  const int64_t rank = static_cast<int64_t>(in.size());
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> starts, ConstantInts(ctx, 1, "starts"));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> ends, ConstantInts(ctx, 2, "ends"));
  const size_t n = starts.size();
  std::vector<int64_t> axes, steps(n, 1);
  if (ctx.has_input(3)) {
    MLC_ASSIGN_OR_RETURN(axes, ConstantInts(ctx, 3, "axes"));
  } else {
    for (size_t i = 0; i < n; ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (ctx.has_input(4)) {
    MLC_ASSIGN_OR_RETURN(steps, ConstantInts(ctx, 4, "steps"));
  }
  if (ends.size() != n || axes.size() != n || steps.size() != n)
    return ctx.Error("starts, ends, axes and steps have {}, {}, {} and {} entries; they must match",
                     n, ends.size(), axes.size(), steps.size());
  SliceSpec spec{Dims(in.size(), 0), Dims(in.size(), 1), in};
  std::vector<bool> seen(in.size(), false);
  for (size_t k = 0; k < n; ++k) {
    if (rank == 0) return ctx.Error("cannot slice a scalar");
    MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, axes[k], rank, "axes entry"));
    if (seen[axis]) return ctx.Error("axis {} is listed twice in 'axes'", axes[k]);
    seen[axis] = true;
    int64_t step = steps[k], start = starts[k], end = ends[k];
    if (step == 0) return ctx.Error("steps[{}] is 0", k);
    const Dim& d = in[axis];
    if (d.batch) {
      if (step == 1 && CoversBatchDim(d, start, end)) continue;
      return ctx.Unsupported("slicing part of axis {} of size {} (a batch dimension)", axes[k],
                             ShapeToString({d}));
    }
    const int64_t dim = d.value;
    int64_t length = 0;
    if (start < 0) start += dim;  // no overflow: start < 0 <= dim
    if (end < 0) end += dim;
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      if (end > start) length = (end - start - 1) / step + 1;
    } else if (dim > 0) {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      // -step overflows for INT64_MIN; any magnitude >= dim reads one element.
      const int64_t magnitude = step < -dim ? dim : -step;
      if (start > end) length = (start - end - 1) / magnitude + 1;
    }
    if (length <= 1) step = 1;  // only element 0 is read; keeps offsets small in the kernel
    spec.starts[axis] = length > 0 ? start : 0;
    spec.steps[axis] = step;
    spec.out[axis] = Dim{length, false};
  }
  return spec;
}

Status InferSlice(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_ASSIGN_OR_RETURN(SliceSpec spec, ComputeSlice(ctx));
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(spec.out)});
  return Status::Ok();
}

class SliceKernel final : public Kernel {
 public:
  explicit SliceKernel(SliceSpec spec) : spec_(std::move(spec)) {}
  Status Setup(std::span<const TensorView> in, std::span<const TensorView>,
               const RunContext&) override {
    const Dims strides = ContiguousStrides(in[0].dims);
    offset_ = 0;
    src_strides_.resize(strides.size());
    for (size_t a = 0; a < strides.size(); ++a) {
      offset_ += spec_.starts[a] * strides[a];
      src_strides_[a] = spec_.steps[a] * strides[a];
    }
    return Status::Ok();
  }
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    CopyStrided(in[0].data, offset_, src_strides_, out[0].dims, out[0].data, DTypeSize(in[0].dtype),
                ctx);
  }

 private:
  SliceSpec spec_;
  int64_t offset_ = 0;
  Dims src_strides_;
};

Result<std::unique_ptr<Kernel>> CreateSlice(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(SliceSpec spec, ComputeSlice(ctx));
  return std::unique_ptr<Kernel>(new SliceKernel(std::move(spec)));
}

// --- Gather -----------------------------------------------------------------------------------

Result<int> GatherAxis(const NodeContext& ctx) {
  const int64_t rank = static_cast<int64_t>(ctx.input(0).shape.size());
  if (rank == 0) return ctx.Error("input 'data' must have rank 1 or more");
  return NormalizeAxis(ctx, ctx.Int("axis", 0), rank);
}

Status InferGather(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 1, "indices"));
  MLC_ASSIGN_OR_RETURN(int axis, GatherAxis(ctx));
  const Shape& data = ctx.input(0).shape;
  const TensorType& indices = ctx.input(1);
  if (indices.dtype != DType::kInt64)
    return ctx.Error("input 'indices' has element type {}, expected int64",
                     DTypeName(indices.dtype));
  if (data[axis].batch)
    return ctx.Unsupported("gathering along axis {} of size {} (a batch dimension)", axis,
                           ShapeToString({data[axis]}));
  const int64_t size = data[axis].value;
  if (const int64_t* values = ctx.constant_as<int64_t>(1); values != nullptr) {
    MLC_ASSIGN_OR_RETURN(SymbolicSize count, SymbolicProduct(ctx, indices.shape, "indices"));
    for (int64_t i = 0; i < count.value; ++i)
      if (values[i] < -size || values[i] >= size)
        return ctx.Error("indices[{}] is {}, allowed [{}, {}] for axis {} of size {}", i, values[i],
                         -size, size - 1, axis, size);
  }
  Shape out(data.begin(), data.begin() + axis);
  out.insert(out.end(), indices.shape.begin(), indices.shape.end());
  out.insert(out.end(), data.begin() + axis + 1, data.end());
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

class GatherKernel final : public Kernel {
 public:
  explicit GatherKernel(int axis) : axis_(static_cast<size_t>(axis)) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const Dims& dims = in[0].dims;
    const int64_t outer = Product(dims, 0, axis_);
    const int64_t axis_size = dims[axis_];
    const size_t chunk =
        static_cast<size_t>(Product(dims, axis_ + 1, dims.size())) * DTypeSize(in[0].dtype);
    const int64_t count = in[1].NumElements();
    const int64_t* indices = in[1].As<int64_t>();
    const auto* src = in[0].As<const uint8_t>();
    auto* dst = out[0].As<uint8_t>();
    if (chunk == 0) return;  // empty output
    const int64_t grain = std::max<int64_t>(1, (1 << 16) / static_cast<int64_t>(chunk + 1));
    ParallelFor(ctx, outer * count, grain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        int64_t index = indices[t % count];
        if (index < 0) index += axis_size;
        uint8_t* to = dst + static_cast<size_t>(t) * chunk;
        // Indices may come from the input at run time, where load-time validation cannot reach:
        // an out-of-range index yields zeros instead of a read outside `data`.
        if (index < 0 || index >= axis_size) {
          std::memset(to, 0, chunk);
        } else {
          std::memcpy(to, src + static_cast<size_t>((t / count) * axis_size + index) * chunk,
                      chunk);
        }
      }
    });
  }

 private:
  size_t axis_;
};

Result<std::unique_ptr<Kernel>> CreateGather(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int axis, GatherAxis(ctx));
  return std::unique_ptr<Kernel>(new GatherKernel(axis));
}

// --- Pad --------------------------------------------------------------------------------------

enum PadMode : int64_t { kPadConstant = 0, kPadReflect = 1, kPadEdge = 2 };

Status InferPad(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  const TensorType& data = ctx.input(0);
  const size_t rank = data.shape.size();
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> pads, ConstantInts(ctx, 1, "pads"));
  if (pads.size() != 2 * rank)
    return ctx.Error("input 'pads' has {} entries, expected {} (twice the rank)", pads.size(),
                     2 * rank);
  const int64_t mode = ctx.Int("mode", kPadConstant);
  if (mode < kPadConstant || mode > kPadEdge)
    return ctx.Error("attribute mode is {}, allowed 0 (constant), 1 (reflect) or 2 (edge)", mode);
  if (ctx.has_input(2)) {
    const TensorType& value = ctx.input(2);
    if (value.dtype != data.dtype)
      return ctx.Error("input 'constant_value' is {}, expected {} like the data",
                       DTypeName(value.dtype), DTypeName(data.dtype));
    if (!(value.shape.empty() || (value.shape.size() == 1 && value.shape[0] == Dim{1, false})))
      return ctx.Error("input 'constant_value' has shape {}, expected a scalar",
                       ShapeToString(value.shape));
    if (ctx.constant(2) == nullptr) return ctx.Error("input 'constant_value' must be a constant");
  }
  Shape out = data.shape;
  for (size_t a = 0; a < rank; ++a) {
    const int64_t before = pads[a], after = pads[a + rank];
    const Dim& d = data.shape[a];
    if (d.batch) {
      if (before == 0 && after == 0) continue;
      return ctx.Unsupported("padding axis {} of size {} (a batch dimension)", a,
                             ShapeToString({d}));
    }
    if (std::abs(before) > kMaxTensorElements || std::abs(after) > kMaxTensorElements)
      return ctx.Error("pads for axis {} are {} and {}, allowed magnitude at most {}", a, before,
                       after, kMaxTensorElements);
    const int64_t kept = d.value - std::max<int64_t>(0, -before) - std::max<int64_t>(0, -after);
    if (kept < 0)
      return ctx.Error("pads {} and {} crop more than axis {} of size {}", before, after, a,
                       d.value);
    out[a].value = kept + std::max<int64_t>(0, before) + std::max<int64_t>(0, after);
    if (mode != kPadConstant && kept == 0 && out[a].value > 0)
      return ctx.Error("axis {} is empty, so it cannot be padded in reflect or edge mode", a);
  }
  outputs->push_back(TensorType{data.dtype, std::move(out)});
  return Status::Ok();
}

// Negative pads crop first; then reflect and edge modes read the cropped tensor (as ONNX Runtime
// does). For each axis, a table maps an output coordinate to its input coordinate, or -1 for the
// constant.
class PadKernel final : public Kernel {
 public:
  PadKernel(std::vector<int64_t> pads, int64_t mode) : pads_(std::move(pads)), mode_(mode) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext&) override {
    const size_t rank = in[0].dims.size();
    maps_.assign(rank, {});
    for (size_t a = 0; a < rank; ++a) {
      const int64_t before = pads_[a], after = pads_[a + rank];
      const int64_t low = std::max<int64_t>(0, -before);
      const int64_t kept = in[0].dims[a] - low - std::max<int64_t>(0, -after);
      const int64_t front = std::max<int64_t>(0, before);
      std::vector<int64_t>& map = maps_[a];
      map.resize(static_cast<size_t>(out[0].dims[a]));
      for (int64_t o = 0; o < out[0].dims[a]; ++o) {
        int64_t x = o - front;
        if (x < 0 || x >= kept) {
          if (mode_ == kPadConstant) {
            x = -1 - low;  // becomes -1 below
          } else if (mode_ == kPadEdge || kept == 1) {
            x = std::clamp<int64_t>(x, 0, kept - 1);
          } else {  // reflect: a triangle wave of period 2 * (kept - 1), as numpy repeats it
            const int64_t period = 2 * (kept - 1);
            x %= period;
            if (x < 0) x += period;
            if (x >= kept) x = period - x;
          }
        }
        map[static_cast<size_t>(o)] = low + x;
      }
    }
    return Status::Ok();
  }

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    if (DTypeSize(in[0].dtype) == 8) {
      RunTyped<uint64_t>(in, out, ctx);
    } else {
      RunTyped<uint32_t>(in, out, ctx);
    }
  }

 private:
  template <typename T>
  void RunTyped(std::span<const TensorView> in, std::span<const TensorView> out,
                const RunContext& ctx) {
    T value = 0;
    if (in.size() > 2 && in[2].data != nullptr) std::memcpy(&value, in[2].data, sizeof(T));
    const T* src = in[0].As<T>();
    T* dst = out[0].As<T>();
    const int rank = in[0].rank();
    if (rank == 0) {
      dst[0] = src[0];
      return;
    }
    const Dims& dims = out[0].dims;
    const Dims in_strides = ContiguousStrides(in[0].dims);
    const int64_t inner = dims[rank - 1];
    const int64_t rows = Product(dims, 0, static_cast<size_t>(rank - 1));
    const std::vector<int64_t>& inner_map = maps_[static_cast<size_t>(rank - 1)];
    if (rows == 0 || inner == 0) return;
    ParallelFor(ctx, rows, std::max<int64_t>(1, (1 << 14) / inner), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        T* to = dst + row * inner;
        int64_t rest = row, src_row = 0;
        bool inside = true;
        for (int a = rank - 2; a >= 0 && inside; --a) {
          const int64_t x = maps_[static_cast<size_t>(a)][static_cast<size_t>(rest % dims[a])];
          rest /= dims[a];
          inside = x >= 0;
          src_row += x * in_strides[a];
        }
        if (!inside) {
          std::fill(to, to + inner, value);
          continue;
        }
        const T* from = src + src_row;
        for (int64_t o = 0; o < inner; ++o) {
          const int64_t x = inner_map[static_cast<size_t>(o)];
          to[o] = x >= 0 ? from[x] : value;
        }
      }
    });
  }

  std::vector<int64_t> pads_;
  int64_t mode_;
  std::vector<std::vector<int64_t>> maps_;
};

Result<std::unique_ptr<Kernel>> CreatePad(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> pads, ConstantInts(ctx, 1, "pads"));
  return std::unique_ptr<Kernel>(new PadKernel(std::move(pads), ctx.Int("mode", kPadConstant)));
}

// --- Split ------------------------------------------------------------------------------------

Status InferSplit(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  const TensorType& in = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(in.shape.size());
  if (rank == 0) return ctx.Error("cannot split a scalar");
  MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, ctx.Int("axis", 0), rank));
  const int64_t parts = ctx.num_outputs();
  const Dim& d = in.shape[axis];
  std::vector<Dim> sizes;
  if (ctx.has_input(1)) {
    MLC_ASSIGN_OR_RETURN(std::vector<int64_t> split, ConstantInts(ctx, 1, "split"));
    if (static_cast<int64_t>(split.size()) != parts)
      return ctx.Error("input 'split' has {} entries, expected {} (the output count)", split.size(),
                       parts);
    if (d.batch)
      return ctx.Unsupported("splitting axis {} of size {} (a batch dimension) into fixed sizes",
                             axis, ShapeToString({d}));
    int64_t total = 0;
    for (size_t i = 0; i < split.size(); ++i) {
      if (split[i] < 0 || split[i] > d.value)
        return ctx.Error("split[{}] is {}, allowed 0 to {}", i, split[i], d.value);
      total += split[i];
      sizes.push_back(Dim{split[i], false});
    }
    if (total != d.value)
      return ctx.Error("split sizes sum to {}, but axis {} has size {}", total, axis, d.value);
  } else {
    // Opset 13 rule: equal parts only. A batch dim splits evenly when its multiple divides.
    if (d.value % parts != 0) {
      if (d.batch)
        return ctx.Unsupported("axis {} of size {} does not split into {} equal parts", axis,
                               ShapeToString({d}), parts);
      return ctx.Error("axis {} of size {} does not split into {} equal parts", axis, d.value,
                       parts);
    }
    sizes.assign(static_cast<size_t>(parts), Dim{d.value / parts, d.batch});
  }
  for (const Dim& size : sizes) {
    TensorType t = in;
    t.shape[axis] = size;
    outputs->push_back(std::move(t));
  }
  return Status::Ok();
}

class SplitKernel final : public Kernel {
 public:
  explicit SplitKernel(int axis) : axis_(static_cast<size_t>(axis)) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const Dims& dims = in[0].dims;
    const int64_t outer = Product(dims, 0, axis_);
    const size_t element = DTypeSize(in[0].dtype);
    const size_t inner = static_cast<size_t>(Product(dims, axis_ + 1, dims.size())) * element;
    const size_t in_row = static_cast<size_t>(dims[axis_]) * inner;
    const auto* src = in[0].As<const uint8_t>();
    size_t offset = 0;
    for (const TensorView& o : out) {
      const size_t chunk = static_cast<size_t>(o.dims[axis_]) * inner;
      if (chunk == 0) continue;  // an empty output may have no buffer at all
      auto* dst = o.As<uint8_t>();
      ParallelFor(ctx, outer, std::max<int64_t>(1, (1 << 16) / static_cast<int64_t>(chunk + 1)),
                  [&](int64_t b, int64_t e) {
                    for (int64_t r = b; r < e; ++r)
                      std::memcpy(dst + r * chunk, src + r * in_row + offset, chunk);
                  });
      offset += chunk;
    }
  }

 private:
  size_t axis_;
};

Result<std::unique_ptr<Kernel>> CreateSplit(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, ctx.Int("axis", 0), ctx.input(0).shape.size()));
  return std::unique_ptr<Kernel>(new SplitKernel(axis));
}

// --- Concat -----------------------------------------------------------------------------------

Status InferConcat(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  for (int i = 0; i < ctx.num_inputs(); ++i)
    if (!ctx.has_input(i)) return ctx.Error("input {} is absent", i);
  const TensorType& first = ctx.input(0);
  const int64_t rank = static_cast<int64_t>(first.shape.size());
  if (rank == 0) return ctx.Error("cannot concatenate scalars");
  if (!ctx.Has("axis")) return ctx.Error("attribute axis is required");
  MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, ctx.Int("axis", 0), rank));
  Dim fixed{0, false}, batch{0, true};
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    const TensorType& t = ctx.input(i);
    if (t.dtype != first.dtype)
      return ctx.Error("input {} is {}, but input 0 is {}", i, DTypeName(t.dtype),
                       DTypeName(first.dtype));
    bool same = t.shape.size() == first.shape.size();
    for (int64_t a = 0; same && a < rank; ++a) same = a == axis || t.shape[a] == first.shape[a];
    if (!same)
      return ctx.Error("input {} has shape {}, which does not match input 0's {} except on axis {}",
                       i, ShapeToString(t.shape), ShapeToString(first.shape), axis);
    (t.shape[axis].batch ? batch : fixed).value += t.shape[axis].value;
  }
  if (batch.value > 0 && fixed.value > 0)
    return ctx.Unsupported("axis {} would have size {} + {}", axis, ShapeToString({batch}),
                           fixed.value);
  TensorType out = first;
  out.shape[axis] = batch.value > 0 ? batch : fixed;
  outputs->push_back(std::move(out));
  return Status::Ok();
}

class ConcatKernel final : public Kernel {
 public:
  explicit ConcatKernel(int axis) : axis_(static_cast<size_t>(axis)) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const Dims& dims = out[0].dims;
    const int64_t outer = Product(dims, 0, axis_);
    const size_t element = DTypeSize(out[0].dtype);
    const size_t inner = static_cast<size_t>(Product(dims, axis_ + 1, dims.size())) * element;
    const size_t out_row = static_cast<size_t>(dims[axis_]) * inner;
    auto* dst = out[0].As<uint8_t>();
    size_t offset = 0;
    for (const TensorView& input : in) {
      const size_t chunk = static_cast<size_t>(input.dims[axis_]) * inner;
      if (chunk == 0) continue;  // an empty input may have no buffer at all
      const auto* src = input.As<const uint8_t>();
      ParallelFor(ctx, outer, std::max<int64_t>(1, (1 << 16) / static_cast<int64_t>(chunk + 1)),
                  [&](int64_t b, int64_t e) {
                    for (int64_t r = b; r < e; ++r)
                      std::memcpy(dst + r * out_row + offset, src + r * chunk, chunk);
                  });
      offset += chunk;
    }
  }

 private:
  size_t axis_;
};

Result<std::unique_ptr<Kernel>> CreateConcat(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int axis, NormalizeAxis(ctx, ctx.Int("axis", 0), ctx.input(0).shape.size()));
  return std::unique_ptr<Kernel>(new ConcatKernel(axis));
}

// --- Trilu ------------------------------------------------------------------------------------

Result<int64_t> ReadTriluK(const NodeContext& ctx) {
  if (!ctx.has_input(1)) return int64_t{0};
  const Shape& shape = ctx.input(1).shape;
  if (!(shape.empty() || (shape.size() == 1 && shape[0] == Dim{1, false})))
    return ctx.Error("input 'k' has shape {}, expected a scalar", ShapeToString(shape));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> k, ConstantInts(ctx, 1, "k"));
  return k[0];
}

Status InferTrilu(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  if (ctx.input(0).shape.size() < 2)
    return ctx.Error("input has shape {}, expected rank 2 or more",
                     ShapeToString(ctx.input(0).shape));
  const int64_t upper = ctx.Int("upper", 1);
  if (upper != 0 && upper != 1) return ctx.Error("attribute upper is {}, allowed 0 or 1", upper);
  MLC_ASSIGN_OR_RETURN(int64_t k, ReadTriluK(ctx));
  (void)k;
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

// Upper keeps element (i, j) of each matrix where j - i >= k; lower keeps j - i <= k.
class TriluKernel final : public Kernel {
 public:
  TriluKernel(bool upper, int64_t k) : upper_(upper), k_(k) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const Dims& dims = in[0].dims;
    const size_t rank = dims.size();
    const int64_t rows = dims[rank - 2], cols = dims[rank - 1];
    const int64_t matrices = Product(dims, 0, rank - 2);
    if (cols == 0) return;  // empty
    const size_t element = DTypeSize(in[0].dtype);
    const auto* src = in[0].As<const uint8_t>();
    auto* dst = out[0].As<uint8_t>();
    // Clamped so i + k cannot overflow; any |k| > rows + cols selects all or nothing.
    const int64_t k = std::clamp<int64_t>(k_, -(rows + cols), rows + cols);
    ParallelFor(ctx, matrices * rows, std::max<int64_t>(1, (1 << 14) / (cols + 1)),
                [&](int64_t b, int64_t e) {
                  for (int64_t row = b; row < e; ++row) {
                    const int64_t i = row % rows;
                    const size_t at = static_cast<size_t>(row * cols) * element;
                    // Columns [zero_begin, zero_end) become zero.
                    int64_t zero_begin = 0, zero_end = 0;
                    if (upper_) {
                      zero_end = std::clamp<int64_t>(i + k, 0, cols);
                    } else {
                      zero_begin = std::clamp<int64_t>(i + k + 1, 0, cols);
                      zero_end = cols;
                    }
                    std::memcpy(dst + at, src + at, static_cast<size_t>(cols) * element);
                    if (zero_end > zero_begin)
                      std::memset(dst + at + static_cast<size_t>(zero_begin) * element, 0,
                                  static_cast<size_t>(zero_end - zero_begin) * element);
                  }
                });
  }

 private:
  bool upper_;
  int64_t k_;
};

Result<std::unique_ptr<Kernel>> CreateTrilu(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(int64_t k, ReadTriluK(ctx));
  return std::unique_ptr<Kernel>(new TriluKernel(ctx.Int("upper", 1) == 1, k));
}

const OpSchema kSlice{OpType::kSlice,           3,          5, 1, 1, {kNoAttrs, 0},
                      CheckedInfer<InferSlice>, CreateSlice};
const OpSchema kGather{OpType::kGather,           2,           2, 1, 1, kAxisAttrs,
                       CheckedInfer<InferGather>, CreateGather};
const OpSchema kPad{OpType::kPad, 2, 3, 1, 1, kPadAttrs, CheckedInfer<InferPad>, CreatePad};
const OpSchema kSplit{
    OpType::kSplit,           1,          2, 1, static_cast<int>(kMaxNodeInputs), kAxisAttrs,
    CheckedInfer<InferSplit>, CreateSplit};
const OpSchema kConcat{
    OpType::kConcat,           1,           static_cast<int>(kMaxNodeInputs), 1, 1, kAxisAttrs,
    CheckedInfer<InferConcat>, CreateConcat};
const OpSchema kTrilu{OpType::kTrilu,           1,          2, 1, 1, kTriluAttrs,
                      CheckedInfer<InferTrilu>, CreateTrilu};

}  // namespace

void AddSelectionOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s : {&kSlice, &kGather, &kPad, &kSplit, &kConcat, &kTrilu})
    ops->push_back(s);
}

}  // namespace mlcapsule::engine::movement
