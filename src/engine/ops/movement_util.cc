// Shared helpers of the Movement op family (see movement_util.h).
#include "engine/ops/movement_util.h"

#include <algorithm>
#include <cstring>

#include "engine/parallel.h"

namespace mlcapsule::engine::movement {

Status RequireInput(const NodeContext& ctx, int i, const char* name) {
  if (!ctx.has_input(i)) return ctx.Error("input '{}' is required", name);
  return Status::Ok();
}

Result<std::vector<int64_t>> ConstantInts(const NodeContext& ctx, int i, const char* name) {
  MLC_RETURN_IF_ERROR(RequireInput(ctx, i, name));
  const TensorType& type = ctx.input(i);
  if (type.dtype != DType::kInt64)
    return ctx.Error("input '{}' has element type {}, expected int64", name, DTypeName(type.dtype));
  if (type.shape.size() > 1)
    return ctx.Error("input '{}' has shape {}, expected rank 0 or 1", name,
                     ShapeToString(type.shape));
  int64_t count = 1;
  for (const Dim& d : type.shape) {
    if (d.batch)
      return ctx.Error("input '{}' has shape {} that depends on the batch size", name,
                       ShapeToString(type.shape));
    count = d.value;
  }
  if (count < 0 || count > static_cast<int64_t>(kMaxAttrValues))
    return ctx.Error("input '{}' has {} values, allowed 0 to {}", name, count, kMaxAttrValues);
  if (count == 0) return std::vector<int64_t>{};
  const int64_t* data = ctx.constant_as<int64_t>(i);
  if (data == nullptr) return ctx.Error("input '{}' must be a constant", name);
  return std::vector<int64_t>(data, data + count);
}

Result<SymbolicSize> SymbolicProduct(const NodeContext& ctx, std::span<const Dim> dims,
                                     const char* what) {
  SymbolicSize size;
  for (const Dim& d : dims) {
    if (d.value < 0) return ctx.Error("{} has negative dimension {}", what, d.value);
    if (d.value != 0 && size.value > kMaxTensorElements / d.value)
      return ctx.Error("{} has more than {} elements", what, kMaxTensorElements);
    size.value *= d.value;
    if (d.batch) ++size.batch_power;
  }
  return size;
}

Result<Dim> ProductAsDim(const NodeContext& ctx, std::span<const Dim> dims, const char* what) {
  MLC_ASSIGN_OR_RETURN(SymbolicSize size, SymbolicProduct(ctx, dims, what));
  if (size.batch_power > 1)
    return ctx.Unsupported("{} multiplies {} batch dimensions (size N^{})", what, size.batch_power,
                           size.batch_power);
  return Dim{size.value, size.batch_power == 1};
}

Status CheckOutputs(const NodeContext& ctx, const std::vector<TensorType>& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Shape& shape = outputs[i].shape;
    if (static_cast<int64_t>(shape.size()) > kMaxRank)
      return ctx.Error("output {} has rank {}, allowed at most {}", i, shape.size(), kMaxRank);
    MLC_ASSIGN_OR_RETURN(SymbolicSize size, SymbolicProduct(ctx, shape, "output"));
    (void)size;
  }
  return Status::Ok();
}

namespace {

template <typename T>
void CopyStridedTyped(const T* src, int64_t offset, std::span<const int64_t> strides,
                      std::span<const int64_t> dims, T* dst, const RunContext& ctx) {
  const int rank = static_cast<int>(dims.size());
  if (rank == 0) {
    dst[0] = src[offset];
    return;
  }
  const int64_t inner = dims[rank - 1];
  const int64_t inner_stride = strides[rank - 1];
  int64_t rows = 1;
  for (int a = 0; a < rank - 1; ++a) rows *= dims[a];
  if (inner == 0 || rows == 0) return;
  ParallelFor(ctx, rows, std::max<int64_t>(1, (1 << 14) / inner), [&](int64_t begin, int64_t end) {
    // Odometer over the outer dims, started at row `begin`.
    std::vector<int64_t> index(static_cast<size_t>(rank), 0);
    int64_t src_row = offset;
    int64_t rest = begin;
    for (int a = rank - 2; a >= 0; --a) {
      index[a] = rest % dims[a];
      rest /= dims[a];
      src_row += index[a] * strides[a];
    }
    for (int64_t row = begin; row < end; ++row) {
      T* out = dst + row * inner;
      const T* in = src + src_row;
      if (inner_stride == 1) {
        std::memcpy(out, in, static_cast<size_t>(inner) * sizeof(T));
      } else {
        for (int64_t j = 0; j < inner; ++j) out[j] = in[j * inner_stride];
      }
      for (int a = rank - 2; a >= 0; --a) {
        src_row += strides[a];
        if (++index[a] < dims[a]) break;
        src_row -= index[a] * strides[a];
        index[a] = 0;
      }
    }
  });
}

class CopyKernel final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    if (out[0].data == in[0].data) return;
    ParallelCopy(in[0].data, out[0].data, out[0].NumElements(), DTypeSize(out[0].dtype), ctx);
  }
};

}  // namespace

void CopyStrided(const void* src, int64_t offset, std::span<const int64_t> src_strides,
                 std::span<const int64_t> out_dims, void* dst, size_t element_size,
                 const RunContext& ctx) {
  if (element_size == 8) {
    CopyStridedTyped(static_cast<const uint64_t*>(src), offset, src_strides, out_dims,
                     static_cast<uint64_t*>(dst), ctx);
  } else {
    CopyStridedTyped(static_cast<const uint32_t*>(src), offset, src_strides, out_dims,
                     static_cast<uint32_t*>(dst), ctx);
  }
}

void ParallelCopy(const void* src, void* dst, int64_t count, size_t element_size,
                  const RunContext& ctx) {
  const int64_t bytes = count * static_cast<int64_t>(element_size);
  const auto* from = static_cast<const uint8_t*>(src);
  auto* to = static_cast<uint8_t*>(dst);
  ParallelFor(ctx, bytes, int64_t{1} << 18, [&](int64_t begin, int64_t end) {
    std::memcpy(to + begin, from + begin, static_cast<size_t>(end - begin));
  });
}

Result<std::unique_ptr<Kernel>> CreateCopyKernel(const NodeContext&) {
  return std::unique_ptr<Kernel>(new CopyKernel());
}

}  // namespace mlcapsule::engine::movement
