// Movement ops that rearrange or replicate every element: Transpose (with a cache-blocked fast
// path for batched 2-D transposes such as the NCHW <-> NHWC conversions the compiler inserts
// around convolutions), DepthToSpace, SpaceToDepth, Expand and Tile. Inference validates
// attributes and constant parameter inputs; kernels see validated shapes and do no checking.
#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "engine/ops/movement_util.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine::movement {
namespace {

constexpr std::string_view kNoAttrs[] = {""};
constexpr std::string_view kTransposeAttrs[] = {"perm"};
constexpr std::string_view kDepthToSpaceAttrs[] = {"blocksize", "mode"};
constexpr std::string_view kSpaceToDepthAttrs[] = {"blocksize"};

// --- Transpose --------------------------------------------------------------------------------

Result<std::vector<int64_t>> ReadPerm(const NodeContext& ctx, int64_t rank) {
  std::vector<int64_t> perm;
  if (!ctx.Has("perm")) {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
    return perm;
  }
  std::span<const int64_t> attr = ctx.Ints("perm");
  if (static_cast<int64_t>(attr.size()) != rank)
    return ctx.Error("attribute perm has {} entries, expected the input rank {}", attr.size(),
                     rank);
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t p : attr) {
    if (p < 0 || p >= rank)
      return ctx.Error("perm entry {} is out of range (allowed [0, {}])", p, rank - 1);
    if (seen[p]) return ctx.Error("perm entry {} appears twice", p);
    seen[p] = true;
  }
  return std::vector<int64_t>(attr.begin(), attr.end());
}

Status InferTranspose(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "data"));
  const Shape& in = ctx.input(0).shape;
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> perm, ReadPerm(ctx, static_cast<int64_t>(in.size())));
  Shape out;
  for (int64_t p : perm) out.push_back(in[p]);
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

// d[c][r] = s[r][c] for rows [r0, r1) and cols [c0, c1) of a rows x cols matrix.
template <typename T>
void TransposeScalar(const T* s, T* d, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                     int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    T* out = d + c * rows;
    for (int64_t r = r0; r < r1; ++r) out[r] = s[r * cols + c];
  }
}

// One tile of TransposeScalar; 4-byte elements go through SSE 4x4 register transposes (bits are
// only moved, never computed on, so reading them as floats is safe for any 4-byte type).
template <typename T>
void TransposeTile(const T* s, T* d, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                   int64_t c1) {
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4) {
    const int64_t r4 = r0 + (r1 - r0) / 4 * 4, c4 = c0 + (c1 - c0) / 4 * 4;
    const auto* src = reinterpret_cast<const float*>(s);
    auto* dst = reinterpret_cast<float*>(d);
    for (int64_t c = c0; c < c4; c += 4) {
      for (int64_t r = r0; r < r4; r += 4) {
        const float* in = src + r * cols + c;
        __m128 row0 = _mm_loadu_ps(in), row1 = _mm_loadu_ps(in + cols);
        __m128 row2 = _mm_loadu_ps(in + 2 * cols), row3 = _mm_loadu_ps(in + 3 * cols);
        _MM_TRANSPOSE4_PS(row0, row1, row2, row3);
        float* out = dst + c * rows + r;
        _mm_storeu_ps(out, row0);
        _mm_storeu_ps(out + rows, row1);
        _mm_storeu_ps(out + 2 * rows, row2);
        _mm_storeu_ps(out + 3 * rows, row3);
      }
    }
    TransposeScalar(s, d, rows, cols, r4, r1, c0, c1);  // leftover rows, every column
    TransposeScalar(s, d, rows, cols, r0, r4, c4, c1);  // leftover columns of the other rows
    return;
  }
#endif
  TransposeScalar(s, d, rows, cols, r0, r1, c0, c1);
}

// dst[b][c][r] = src[b][r][c] for `batch` matrices of rows x cols, in square tiles small enough
// that a tile of the source and of the destination both stay in L1.
template <typename T>
void BlockedTranspose(const T* src, T* dst, int64_t batch, int64_t rows, int64_t cols,
                      const RunContext& ctx) {
  constexpr int64_t kBlock = 32;
  const int64_t row_blocks = (rows + kBlock - 1) / kBlock;
  const int64_t col_blocks = (cols + kBlock - 1) / kBlock;
  const int64_t tiles_per_matrix = row_blocks * col_blocks;
  ParallelFor(ctx, batch * tiles_per_matrix, 4, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t b = tile / tiles_per_matrix;
      const int64_t rest = tile % tiles_per_matrix;
      const int64_t r0 = (rest / col_blocks) * kBlock, c0 = (rest % col_blocks) * kBlock;
      TransposeTile(src + b * rows * cols, dst + b * rows * cols, rows, cols, r0,
                    std::min(rows, r0 + kBlock), c0, std::min(cols, c0 + kBlock));
    }
  });
}

// How one Transpose runs for the current concrete shape.
struct TransposePlan {
  enum Kind { kCopy, kBatched2D, kStrided } kind = kStrided;
  int64_t batch = 1, rows = 0, cols = 0;  // kBatched2D
  Dims out_dims, src_strides;             // kStrided
};

// The plain plan: walk the output in order, reading input[perm] strides.
TransposePlan ReferencePlan(const Dims& in_dims, std::span<const int64_t> perm) {
  TransposePlan plan;
  Dims strides = ContiguousStrides(in_dims);
  for (int64_t p : perm) {
    plan.out_dims.push_back(in_dims[p]);
    plan.src_strides.push_back(strides[p]);
  }
  return plan;
}

// Drops size-1 axes and merges axes that stay adjacent and in order, so [N,C,H,W] with perm
// [0,2,3,1] becomes [N,C,HW] with perm [0,2,1]: a batch of C x HW matrix transposes.
TransposePlan FastPlan(const Dims& in_dims, std::span<const int64_t> perm) {
  TransposePlan plan;
  const int rank = static_cast<int>(in_dims.size());
  int64_t total = 1;
  for (int64_t d : in_dims) total *= d;
  std::vector<int> kept;  // input axes in output order, without size-1 axes
  for (int i = 0; i < rank; ++i)
    if (in_dims[perm[i]] != 1) kept.push_back(static_cast<int>(perm[i]));
  // Runs of consecutive input axes in output order become one axis.
  std::vector<std::pair<int, int>> groups;  // [first, last] input axis, in output order
  for (int axis : kept) {
    if (!groups.empty() && groups.back().second + 1 == axis) {
      groups.back().second = axis;
    } else {
      groups.push_back({axis, axis});
    }
  }
  if (total == 0 || groups.size() <= 1) {
    plan.kind = TransposePlan::kCopy;
    return plan;
  }
  // Merged input dims in input order, and the merged perm.
  std::vector<int> by_input(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) by_input[g] = static_cast<int>(g);
  std::sort(by_input.begin(), by_input.end(),
            [&](int a, int b) { return groups[a].first < groups[b].first; });
  Dims merged(groups.size());
  std::vector<int64_t> merged_perm(groups.size());
  for (size_t k = 0; k < by_input.size(); ++k) {
    const auto [first, last] = groups[by_input[k]];
    int64_t size = 1;
    for (int a = first; a <= last; ++a) size *= in_dims[a];
    merged[k] = size;
    merged_perm[by_input[k]] = static_cast<int64_t>(k);
  }
  if (merged_perm == std::vector<int64_t>{1, 0}) {
    plan.kind = TransposePlan::kBatched2D;
    plan.rows = merged[0];
    plan.cols = merged[1];
    return plan;
  }
  if (merged_perm == std::vector<int64_t>{0, 2, 1}) {
    plan.kind = TransposePlan::kBatched2D;
    plan.batch = merged[0];
    plan.rows = merged[1];
    plan.cols = merged[2];
    return plan;
  }
  return ReferencePlan(merged, merged_perm);
}

class TransposeKernel final : public Kernel {
 public:
  TransposeKernel(std::vector<int64_t> perm, bool fast) : perm_(std::move(perm)), fast_(fast) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView>,
               const RunContext&) override {
    plan_ = fast_ ? FastPlan(in[0].dims, perm_) : ReferencePlan(in[0].dims, perm_);
    return Status::Ok();
  }

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const size_t size = DTypeSize(in[0].dtype);
    switch (plan_.kind) {
      case TransposePlan::kCopy:
        ParallelCopy(in[0].data, out[0].data, in[0].NumElements(), size, ctx);
        break;
      case TransposePlan::kBatched2D:
        if (size == 8) {
          BlockedTranspose(in[0].As<uint64_t>(), out[0].As<uint64_t>(), plan_.batch, plan_.rows,
                           plan_.cols, ctx);
        } else {
          BlockedTranspose(in[0].As<uint32_t>(), out[0].As<uint32_t>(), plan_.batch, plan_.rows,
                           plan_.cols, ctx);
        }
        break;
      case TransposePlan::kStrided:
        CopyStrided(in[0].data, 0, plan_.src_strides, plan_.out_dims, out[0].data, size, ctx);
        break;
    }
  }

 private:
  std::vector<int64_t> perm_;
  bool fast_;
  TransposePlan plan_;
};

Result<std::unique_ptr<Kernel>> CreateTranspose(const NodeContext& ctx) {
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> perm,
                       ReadPerm(ctx, static_cast<int64_t>(ctx.input(0).shape.size())));
  return std::unique_ptr<Kernel>(new TransposeKernel(std::move(perm), ctx.options().fast));
}

// --- DepthToSpace / SpaceToDepth --------------------------------------------------------------

constexpr int64_t kMaxBlockSize = 1 << 16;

Result<int64_t> ReadBlockSize(const NodeContext& ctx) {
  if (!ctx.Has("blocksize")) return ctx.Error("attribute blocksize is required");
  const int64_t b = ctx.Int("blocksize", 0);
  if (b < 1 || b > kMaxBlockSize)
    return ctx.Error("attribute blocksize is {}, allowed 1 to {}", b, kMaxBlockSize);
  return b;
}

// Checks a rank-4 input whose C, H and W are fixed (N may be the batch) and returns C, H, W.
Status ReadChw(const NodeContext& ctx, int64_t chw[3]) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  const Shape& in = ctx.input(0).shape;
  if (in.size() != 4)
    return ctx.Error("input has shape {}, expected rank 4 (N, C, H, W)", ShapeToString(in));
  const char* names[] = {"channel dimension", "height", "width"};
  for (int i = 0; i < 3; ++i) {
    MLC_ASSIGN_OR_RETURN(chw[i], FixedDim(ctx, in[i + 1], names[i]));
  }
  return Status::Ok();
}

Status InferDepthToSpace(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  int64_t chw[3];
  MLC_RETURN_IF_ERROR(ReadChw(ctx, chw));
  MLC_ASSIGN_OR_RETURN(int64_t b, ReadBlockSize(ctx));
  const int64_t mode = ctx.Int("mode", 0);
  if (mode != 0 && mode != 1)
    return ctx.Error("attribute mode is {}, allowed 0 (DCR) or 1 (CRD)", mode);
  if (chw[0] % (b * b) != 0)
    return ctx.Error("channels {} are not a multiple of blocksize^2 = {}", chw[0], b * b);
  const Shape& in = ctx.input(0).shape;
  outputs->push_back(TensorType{ctx.input(0).dtype,
                                {in[0], Dim{chw[0] / (b * b)}, Dim{chw[1] * b}, Dim{chw[2] * b}}});
  return Status::Ok();
}

Status InferSpaceToDepth(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  int64_t chw[3];
  MLC_RETURN_IF_ERROR(ReadChw(ctx, chw));
  MLC_ASSIGN_OR_RETURN(int64_t b, ReadBlockSize(ctx));
  if (chw[1] % b != 0 || chw[2] % b != 0)
    return ctx.Error("height {} and width {} must be multiples of blocksize {}", chw[1], chw[2], b);
  const Shape& in = ctx.input(0).shape;
  outputs->push_back(TensorType{ctx.input(0).dtype,
                                {in[0], Dim{chw[0] * b * b}, Dim{chw[1] / b}, Dim{chw[2] / b}}});
  return Status::Ok();
}

// Both ops are a reshape to 6-D, a transpose and a reshape back; the kernel walks the 6-D
// transposed view of the input with CopyStrided.
class SpaceDepthKernel final : public Kernel {
 public:
  enum Kind { kDepthToSpaceDcr, kDepthToSpaceCrd, kSpaceToDepth };
  SpaceDepthKernel(Kind kind, int64_t block) : kind_(kind), block_(block) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView>,
               const RunContext&) override {
    const int64_t n = in[0].dims[0], c = in[0].dims[1], h = in[0].dims[2], w = in[0].dims[3];
    const int64_t b = block_;
    if (kind_ == kSpaceToDepth) {
      // Input as [N, C, H/b, b(i), W/b, b(j)]; output [N, i, j, C, H/b, W/b].
      out_dims_ = {n, b, b, c, h / b, w / b};
      strides_ = {c * h * w, w, 1, h * w, b * w, b};
    } else if (kind_ == kDepthToSpaceDcr) {
      // Input as [N, b(i), b(j), C', H, W]; output [N, C', H, i, W, j].
      const int64_t cb = c / (b * b);
      out_dims_ = {n, cb, h, b, w, b};
      strides_ = {c * h * w, h * w, w, b * cb * h * w, 1, cb * h * w};
    } else {
      // Input as [N, C', b(i), b(j), H, W]; output [N, C', H, i, W, j].
      const int64_t cb = c / (b * b);
      out_dims_ = {n, cb, h, b, w, b};
      strides_ = {c * h * w, b * b * h * w, w, b * h * w, 1, h * w};
    }
    return Status::Ok();
  }

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    CopyStrided(in[0].data, 0, strides_, out_dims_, out[0].data, DTypeSize(in[0].dtype), ctx);
  }

 private:
  Kind kind_;
  int64_t block_;
  Dims out_dims_, strides_;
};

Result<std::unique_ptr<Kernel>> CreateDepthToSpace(const NodeContext& ctx) {
  auto kind = ctx.Int("mode", 0) == 1 ? SpaceDepthKernel::kDepthToSpaceCrd
                                      : SpaceDepthKernel::kDepthToSpaceDcr;
  return std::unique_ptr<Kernel>(new SpaceDepthKernel(kind, ctx.Int("blocksize", 1)));
}

Result<std::unique_ptr<Kernel>> CreateSpaceToDepth(const NodeContext& ctx) {
  return std::unique_ptr<Kernel>(
      new SpaceDepthKernel(SpaceDepthKernel::kSpaceToDepth, ctx.Int("blocksize", 1)));
}

// --- Expand -----------------------------------------------------------------------------------

Status InferExpand(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> shape, ConstantInts(ctx, 1, "shape"));
  if (ctx.input(1).shape.size() != 1)
    return ctx.Error("input 'shape' has rank {}, expected 1", ctx.input(1).shape.size());
  if (static_cast<int64_t>(shape.size()) > kMaxRank)
    return ctx.Error("input 'shape' has {} entries, allowed at most {}", shape.size(), kMaxRank);
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] < 0 || shape[i] > kMaxTensorElements)
      return ctx.Error("shape[{}] is {}, allowed 0 to {}", i, shape[i], kMaxTensorElements);
  const Shape target = FixedShape(shape);
  const Shape* shapes[] = {&ctx.input(0).shape, &target};
  MLC_ASSIGN_OR_RETURN(Shape out, BroadcastShapes(ctx, shapes));
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

class ExpandKernel final : public Kernel {
 public:
  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext&) override {
    strides_ = BroadcastStrides(in[0].dims, out[0].dims);
    return Status::Ok();
  }
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    CopyStrided(in[0].data, 0, strides_, out[0].dims, out[0].data, DTypeSize(in[0].dtype), ctx);
  }

 private:
  std::vector<int64_t> strides_;
};

Result<std::unique_ptr<Kernel>> CreateExpand(const NodeContext&) {
  return std::unique_ptr<Kernel>(new ExpandKernel());
}

// --- Tile -------------------------------------------------------------------------------------

Status InferTile(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, 0, "input"));
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> repeats, ConstantInts(ctx, 1, "repeats"));
  const Shape& in = ctx.input(0).shape;
  if (ctx.input(1).shape.size() != 1 || repeats.size() != in.size())
    return ctx.Error("input 'repeats' has shape {}, expected [{}] (the input rank)",
                     ShapeToString(ctx.input(1).shape), in.size());
  Shape out = in;
  for (size_t i = 0; i < repeats.size(); ++i) {
    if (repeats[i] < 0 || repeats[i] > kMaxTensorElements)
      return ctx.Error("repeats[{}] is {}, allowed 0 to {}", i, repeats[i], kMaxTensorElements);
    if (in[i].value > kMaxTensorElements)
      return ctx.Error("input dimension {} is {}, allowed at most {}", i, in[i].value,
                       kMaxTensorElements);
    out[i].value *= repeats[i];  // both <= 2^31: no overflow
    if (out[i].value == 0) out[i].batch = false;
  }
  outputs->push_back(TensorType{ctx.input(0).dtype, std::move(out)});
  return Status::Ok();
}

// Each output row (all dims but the last) reads input row (o_a mod d_a), repeated along the last.
template <typename T>
void TileTyped(const T* src, std::span<const int64_t> in_dims, std::span<const int64_t> out_dims,
               T* dst, const RunContext& ctx) {
  const int rank = static_cast<int>(in_dims.size());
  if (rank == 0) {
    dst[0] = src[0];
    return;
  }
  const int64_t inner_in = in_dims[rank - 1], inner_out = out_dims[rank - 1];
  int64_t rows = 1;
  for (int a = 0; a < rank - 1; ++a) rows *= out_dims[a];
  if (rows == 0 || inner_out == 0) return;
  const Dims in_strides = ContiguousStrides(in_dims);
  ParallelFor(ctx, rows, std::max<int64_t>(1, (1 << 14) / inner_out), [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      int64_t rest = row, src_row = 0;
      for (int a = rank - 2; a >= 0; --a) {
        src_row += (rest % out_dims[a]) % in_dims[a] * in_strides[a];
        rest /= out_dims[a];
      }
      T* out = dst + row * inner_out;
      for (int64_t k = 0; k < inner_out; k += inner_in)
        std::memcpy(out + k, src + src_row, static_cast<size_t>(inner_in) * sizeof(T));
    }
  });
}

class TileKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    if (DTypeSize(in[0].dtype) == 8) {
      TileTyped(in[0].As<uint64_t>(), in[0].dims, out[0].dims, out[0].As<uint64_t>(), ctx);
    } else {
      TileTyped(in[0].As<uint32_t>(), in[0].dims, out[0].dims, out[0].As<uint32_t>(), ctx);
    }
  }
};

Result<std::unique_ptr<Kernel>> CreateTile(const NodeContext&) {
  return std::unique_ptr<Kernel>(new TileKernel());
}

const OpSchema kTranspose{
    OpType::kTranspose, 1, 1, 1, 1, kTransposeAttrs, CheckedInfer<InferTranspose>, CreateTranspose};
const OpSchema kDepthToSpace{
    OpType::kDepthToSpace, 1, 1, 1, 1, kDepthToSpaceAttrs, CheckedInfer<InferDepthToSpace>,
    CreateDepthToSpace};
const OpSchema kSpaceToDepth{
    OpType::kSpaceToDepth, 1, 1, 1, 1, kSpaceToDepthAttrs, CheckedInfer<InferSpaceToDepth>,
    CreateSpaceToDepth};
const OpSchema kExpand{OpType::kExpand,           2,           2, 1, 1, {kNoAttrs, 0},
                       CheckedInfer<InferExpand>, CreateExpand};
const OpSchema kTile{OpType::kTile, 2, 2, 1, 1, {kNoAttrs, 0}, CheckedInfer<InferTile>, CreateTile};

}  // namespace

void AddLayoutOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s : {&kTranspose, &kDepthToSpace, &kSpaceToDepth, &kExpand, &kTile})
    ops->push_back(s);
}

}  // namespace mlcapsule::engine::movement
