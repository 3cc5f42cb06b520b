// Reductions over a set of axes: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
// ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp (canonical form: axes is an
// attribute, as in opset 11..17; absent axes reduce everything unless noop_with_empty_axes = 1).
// Also the family's entry point AddReductionOps, which lists Softmax/LogSoftmax/Hardmax
// (softmax.cc) and ArgMax/ArgMin/CumSum (reduce_axis.cc) too.
//
// One loop serves every reduction: after dropping size-1 dims and merging neighbours, the input
// is [kept and reduced groups..., trailing kept block]. Each output row walks the reduced
// positions; when the trailing kept block is long the inner loop runs across it (contiguous,
// vectorisable), otherwise across the innermost reduced run. float32 accumulates in double.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/ops/elementwise_family.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kReduceAttrs[] = {"axes", "keepdims", "noop_with_empty_axes"};

// Which input dims are reduced; empty when the op is the identity (noop_with_empty_axes).
struct ReduceAxes {
  std::vector<bool> reduced;
  bool identity = false;
};

Result<ReduceAxes> ParseReduceAxes(const NodeContext& ctx) {
  const int64_t rank = static_cast<int64_t>(ctx.input(0).shape.size());
  const Attribute* axes_attr = ctx.node().FindAttr("axes");
  if (axes_attr != nullptr && axes_attr->kind != AttrKind::kInts)
    return ctx.Error("attribute 'axes' must be ints");
  MLC_ASSIGN_OR_RETURN(bool noop, BoolAttr(ctx, "noop_with_empty_axes", false));
  std::span<const int64_t> axes = ctx.Ints("axes");
  ReduceAxes result;
  result.reduced.assign(static_cast<size_t>(rank), axes.empty());
  if (axes.empty()) {
    result.identity = noop;
    return result;
  }
  for (int64_t axis : axes) {
    if (axis < -rank || axis >= rank)
      return ctx.Error("axis {} is out of range for rank {} (allowed [{}, {}])", axis, rank, -rank,
                       rank - 1);
    size_t index = static_cast<size_t>(axis < 0 ? axis + rank : axis);
    if (result.reduced[index]) return ctx.Error("axis {} is listed twice in 'axes'", axis);
    result.reduced[index] = true;
  }
  return result;
}

template <bool kAllowInt64>
Status InferReduce(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(CheckNumericInput(ctx, 0, kAllowInt64));
  MLC_ASSIGN_OR_RETURN(bool keepdims, BoolAttr(ctx, "keepdims", true));
  MLC_ASSIGN_OR_RETURN(ReduceAxes axes, ParseReduceAxes(ctx));
  const TensorType& in = ctx.input(0);
  if (axes.identity) {
    outputs->push_back(in);
    return Status::Ok();
  }
  TensorType out{in.dtype, {}};
  for (size_t i = 0; i < in.shape.size(); ++i) {
    if (!axes.reduced[i]) {
      out.shape.push_back(in.shape[i]);
    } else if (keepdims) {
      out.shape.push_back(Dim{1, false});
    }
  }
  outputs->push_back(std::move(out));
  return Status::Ok();
}

// The loop structure for concrete dims (see the file comment).
struct ReduceLayout {
  std::vector<int64_t> kept_sizes, kept_strides;        // outer kept groups
  std::vector<int64_t> reduced_sizes, reduced_strides;  // reduced groups, less the inner run
  int64_t rows = 1;                                     // product of kept_sizes
  int64_t positions = 1;                                // product of reduced_sizes
  int64_t inner = 1;  // trailing kept block (contiguous in input and output)
  int64_t run = 1;    // innermost reduced run when inner == 1 (contiguous in input)
  int64_t count = 1;  // input elements per output element
};

ReduceLayout MakeLayout(std::span<const int64_t> dims, const std::vector<bool>& reduced) {
  struct Group {
    int64_t size;
    bool reduced;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 1) continue;
    if (!groups.empty() && groups.back().reduced == reduced[i]) {
      groups.back().size *= dims[i];
    } else {
      groups.push_back({dims[i], reduced[i]});
    }
  }
  ReduceLayout layout;
  int64_t stride = 1;
  if (!groups.empty() && !groups.back().reduced) {
    layout.inner = groups.back().size;
    stride = layout.inner;
    groups.pop_back();
  } else if (!groups.empty()) {
    layout.run = groups.back().size;
    layout.count = layout.run;
    stride = layout.run;
    groups.pop_back();
  }
  for (size_t g = groups.size(); g-- > 0;) {
    if (groups[g].reduced) {
      layout.reduced_sizes.insert(layout.reduced_sizes.begin(), groups[g].size);
      layout.reduced_strides.insert(layout.reduced_strides.begin(), stride);
      layout.positions *= groups[g].size;
      layout.count *= groups[g].size;
    } else {
      layout.kept_sizes.insert(layout.kept_sizes.begin(), groups[g].size);
      layout.kept_strides.insert(layout.kept_strides.begin(), stride);
      layout.rows *= groups[g].size;
    }
    stride *= groups[g].size;
  }
  return layout;
}

// Runs `op` (Init, Map, Combine, Finalize; see the functors below) over `layout`.
template <typename T, typename Op>
void ReduceLoop(const RunContext& run_ctx, const ReduceLayout& layout, const T* x, T* y,
                const Op& op) {
  using Acc = typename Op::Acc;
  constexpr int64_t kChunk = 1024;  // accumulators on the stack when reducing across `inner`
  if (layout.rows == 0 || layout.inner == 0) return;
  const int64_t chunk = std::min(layout.inner, kChunk);
  const int64_t chunks = (layout.inner + chunk - 1) / chunk;
  const int64_t work = std::max<int64_t>(1, layout.positions * layout.run * chunk);
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / work);
  const size_t num_reduced = layout.reduced_sizes.size();
  ParallelFor(run_ctx, layout.rows * chunks, grain, [&](int64_t begin, int64_t end) {
    int64_t index[kMaxRank] = {};
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks;
      const int64_t first = (task % chunks) * chunk;
      const int64_t length = std::min(chunk, layout.inner - first);
      int64_t base = first, rest = row;
      for (size_t k = layout.kept_sizes.size(); k-- > 0;) {
        base += rest % layout.kept_sizes[k] * layout.kept_strides[k];
        rest /= layout.kept_sizes[k];
      }
      Acc acc[kChunk];
      for (int64_t i = 0; i < length; ++i) acc[i] = op.Init();
      const int64_t out_base = row * layout.inner + first;
      // Walk the reduced positions with an odometer over reduced_sizes.
      std::fill(index, index + num_reduced, 0);
      int64_t offset = base;
      for (int64_t p = 0; p < layout.positions; ++p) {
        const T* px = x + offset;
        if (layout.inner == 1) {
          Acc a = acc[0];
          for (int64_t j = 0; j < layout.run; ++j) a = op.Combine(a, op.Map(px[j], out_base));
          acc[0] = a;
        } else {
          for (int64_t i = 0; i < length; ++i)
            acc[i] = op.Combine(acc[i], op.Map(px[i], out_base + i));
        }
        for (size_t d = num_reduced; d-- > 0;) {
          offset += layout.reduced_strides[d];
          if (++index[d] < layout.reduced_sizes[d]) break;
          offset -= layout.reduced_strides[d] * layout.reduced_sizes[d];
          index[d] = 0;
        }
      }
      for (int64_t i = 0; i < length; ++i) y[out_base + i] = op.Finalize(acc[i], out_base + i);
    }
  });
}

// ---- Reduction functors: Acc is the accumulator type; Map's and Finalize's index is the output
// element's (only ReduceLogSumExp uses it). ----

template <typename T>
struct AccOf {
  using Type = double;
};
template <>
struct AccOf<int64_t> {
  using Type = int64_t;
};

template <typename T>
struct SumOp {
  using Acc = typename AccOf<T>::Type;
  Acc Init() const { return 0; }
  Acc Map(T x, int64_t) const { return x; }
  Acc Combine(Acc a, Acc b) const {
    if constexpr (std::is_integral_v<Acc>) return WrapAdd(a, b);
    return a + b;
  }
  T Finalize(Acc a, int64_t) const { return static_cast<T>(a); }
};

template <typename T>
struct MeanOp : SumOp<T> {
  using Acc = typename SumOp<T>::Acc;
  double count;
  explicit MeanOp(int64_t n) : count(static_cast<double>(n)) {}
  T Finalize(Acc a, int64_t) const { return static_cast<T>(a / count); }
};

// Max and Min propagate NaN, like numpy's maximum.reduce.
template <typename T>
struct MaxOp {
  using Acc = typename AccOf<T>::Type;
  Acc Init() const {
    if constexpr (std::is_integral_v<Acc>) return std::numeric_limits<Acc>::min();
    return -std::numeric_limits<Acc>::infinity();
  }
  Acc Map(T x, int64_t) const { return x; }
  Acc Combine(Acc a, Acc b) const { return (b > a || IsNaN(b)) ? b : a; }
  T Finalize(Acc a, int64_t) const { return static_cast<T>(a); }
};

template <typename T>
struct MinOp {
  using Acc = typename AccOf<T>::Type;
  Acc Init() const {
    if constexpr (std::is_integral_v<Acc>) return std::numeric_limits<Acc>::max();
    return std::numeric_limits<Acc>::infinity();
  }
  Acc Map(T x, int64_t) const { return x; }
  Acc Combine(Acc a, Acc b) const { return (b < a || IsNaN(b)) ? b : a; }
  T Finalize(Acc a, int64_t) const { return static_cast<T>(a); }
};

template <typename T>
struct ProdOp {
  using Acc = typename AccOf<T>::Type;
  Acc Init() const { return 1; }
  Acc Map(T x, int64_t) const { return x; }
  Acc Combine(Acc a, Acc b) const {
    if constexpr (std::is_integral_v<Acc>) return WrapMul(a, b);
    return a * b;
  }
  T Finalize(Acc a, int64_t) const { return static_cast<T>(a); }
};

struct L1Op : SumOp<float> {
  double Map(float x, int64_t) const { return std::fabs(static_cast<double>(x)); }
};
struct SumSquareOp : SumOp<float> {
  double Map(float x, int64_t) const { return static_cast<double>(x) * x; }
};
struct L2Op : SumSquareOp {
  float Finalize(double a, int64_t) const { return static_cast<float>(std::sqrt(a)); }
};
struct LogSumOp : SumOp<float> {
  float Finalize(double a, int64_t) const { return static_cast<float>(std::log(a)); }
};

// Second pass of ReduceLogSumExp: `max` holds the first pass's ReduceMax per output element,
// subtracted before exp so large inputs do not overflow. An infinite max (all -inf, an empty
// reduction, or +inf present) is not subtracted: it would turn inf - inf into NaN.
struct LogSumExpOp : SumOp<float> {
  const float* max;
  static double Shift(float m) { return std::isfinite(m) ? m : 0.0; }
  double Map(float x, int64_t index) const { return std::exp(x - Shift(max[index])); }
  float Finalize(double a, int64_t index) const {
    return static_cast<float>(std::log(a) + Shift(max[index]));
  }
};

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kSumSquare, kLogSum, kLogSumExp };

template <typename T>
class ReduceKernel final : public Kernel {
 public:
  ReduceKernel(ReduceKind kind, ReduceAxes axes) : kind_(kind), axes_(std::move(axes)) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext& ctx) override {
    layout_ = MakeLayout(in[0].dims, axes_.reduced);
    return Status::Ok();
  }

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const T* x = in[0].As<T>();
    T* y = out[0].As<T>();
    if (axes_.identity) {
      std::memcpy(y, x, static_cast<size_t>(in[0].NumElements()) * sizeof(T));
      return;
    }
    switch (kind_) {
      case ReduceKind::kSum:
        return ReduceLoop(ctx, layout_, x, y, SumOp<T>{});
      case ReduceKind::kMax:
        return ReduceLoop(ctx, layout_, x, y, MaxOp<T>{});
      case ReduceKind::kMin:
        return ReduceLoop(ctx, layout_, x, y, MinOp<T>{});
      case ReduceKind::kProd:
        return ReduceLoop(ctx, layout_, x, y, ProdOp<T>{});
      default:
        break;
    }
    if constexpr (std::is_same_v<T, float>) {
      switch (kind_) {
        case ReduceKind::kMean:
          return ReduceLoop(ctx, layout_, x, y, MeanOp<float>(layout_.count));
        case ReduceKind::kL1:
          return ReduceLoop(ctx, layout_, x, y, L1Op{});
        case ReduceKind::kL2:
          return ReduceLoop(ctx, layout_, x, y, L2Op{});
        case ReduceKind::kSumSquare:
          return ReduceLoop(ctx, layout_, x, y, SumSquareOp{});
        case ReduceKind::kLogSum:
          return ReduceLoop(ctx, layout_, x, y, LogSumOp{});
        case ReduceKind::kLogSumExp: {
          ReduceLoop(ctx, layout_, x, y, MaxOp<float>{});
          LogSumExpOp op;
          op.max = y;  // each output element is read, then overwritten by its own Finalize
          return ReduceLoop(ctx, layout_, x, y, op);
        }
        default:
          break;
      }
    }
  }

 private:
  ReduceKind kind_;
  ReduceAxes axes_;
  ReduceLayout layout_;
};

template <ReduceKind kKind>
Result<std::unique_ptr<Kernel>> CreateReduce(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(ReduceAxes axes, ParseReduceAxes(ctx));
  if (ctx.input(0).dtype == DType::kInt64)
    return std::unique_ptr<Kernel>(new ReduceKernel<int64_t>(kKind, std::move(axes)));
  return std::unique_ptr<Kernel>(new ReduceKernel<float>(kKind, std::move(axes)));
}

#define MLC_REDUCE_SCHEMA(name, kind, int64) \
  const OpSchema k##name{OpType::k##name,    \
                         1,                  \
                         1,                  \
                         1,                  \
                         1,                  \
                         kReduceAttrs,       \
                         InferReduce<int64>, \
                         CreateReduce<ReduceKind::kind>};
MLC_REDUCE_SCHEMA(ReduceSum, kSum, true)
MLC_REDUCE_SCHEMA(ReduceMean, kMean, false)
MLC_REDUCE_SCHEMA(ReduceMax, kMax, true)
MLC_REDUCE_SCHEMA(ReduceMin, kMin, true)
MLC_REDUCE_SCHEMA(ReduceProd, kProd, true)
MLC_REDUCE_SCHEMA(ReduceL1, kL1, false)
MLC_REDUCE_SCHEMA(ReduceL2, kL2, false)
MLC_REDUCE_SCHEMA(ReduceSumSquare, kSumSquare, false)
MLC_REDUCE_SCHEMA(ReduceLogSum, kLogSum, false)
MLC_REDUCE_SCHEMA(ReduceLogSumExp, kLogSumExp, false)
#undef MLC_REDUCE_SCHEMA

}  // namespace

void AddReductionOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s :
       {&kReduceSum, &kReduceMean, &kReduceMax, &kReduceMin, &kReduceProd, &kReduceL1, &kReduceL2,
        &kReduceSumSquare, &kReduceLogSum, &kReduceLogSumExp})
    ops->push_back(s);
  AddSoftmaxOps(ops);
  AddAxisReductionOps(ops);
}

}  // namespace mlcapsule::engine
