// The tensor list (grammar in tensor_wire.h). The parser trusts nothing: dtype, rank, element
// count (overflow-checked), byte count and padding are all checked before a view is made, and
// every pad byte must be zero so that each list has exactly one encoding.
#include "capsule/tensor_wire.h"

#include <cstring>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

constexpr size_t kDataAlignment = 64;
constexpr size_t kHeaderPadBytes = 6;

size_t PadFor(size_t offset) { return (kDataAlignment - offset % kDataAlignment) % kDataAlignment; }

size_t ByteCount(const engine::TensorView& tensor) {
  return static_cast<size_t>(tensor.NumElements()) * engine::DTypeSize(tensor.dtype);
}

}  // namespace

size_t TensorListBytes(std::span<const engine::TensorView> tensors) {
  size_t size = sizeof(uint32_t);
  for (const engine::TensorView& tensor : tensors) {
    size += 2 + kHeaderPadBytes + tensor.dims.size() * sizeof(int64_t) + sizeof(uint64_t);
    size += PadFor(size) + ByteCount(tensor);
  }
  return size;
}

void TensorListPieces(std::span<const engine::TensorView> tensors, std::string* headers,
                      std::vector<std::span<const uint8_t>>* pieces) {
  assert(tensors.size() <= kMaxWireTensors);
  headers->clear();
  pieces->clear();
  // First every non-data byte, remembering where each tensor's header ends (the string may move
  // while it grows, so the spans are made afterwards).
  std::vector<size_t> header_ends;
  ByteWriter w;
  w.out().swap(*headers);
  size_t total = 0;  // bytes of the list so far, headers and data
  w.Pod<uint32_t>(static_cast<uint32_t>(tensors.size()));
  total += sizeof(uint32_t);
  for (const engine::TensorView& tensor : tensors) {
    assert(tensor.dims.size() <= static_cast<size_t>(engine::kMaxRank));
    const uint8_t zeros[kDataAlignment] = {};
    const size_t before = w.size();
    w.Pod<uint8_t>(static_cast<uint8_t>(tensor.dtype));
    w.Pod<uint8_t>(static_cast<uint8_t>(tensor.dims.size()));
    w.Bytes(zeros, kHeaderPadBytes);
    for (int64_t dim : tensor.dims) w.Pod<int64_t>(dim);
    w.Pod<uint64_t>(ByteCount(tensor));
    total += w.size() - before;
    const size_t pad = PadFor(total);
    w.Bytes(zeros, pad);
    total += pad + ByteCount(tensor);
    header_ends.push_back(w.size());
  }
  w.out().swap(*headers);
  const auto* base = reinterpret_cast<const uint8_t*>(headers->data());
  size_t at = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    pieces->push_back({base + at, header_ends[i] - at});
    at = header_ends[i];
    const size_t bytes = ByteCount(tensors[i]);
    if (bytes > 0) pieces->push_back({static_cast<const uint8_t*>(tensors[i].data), bytes});
  }
  if (tensors.empty()) pieces->push_back({base, headers->size()});
}

void AppendTensorList(std::span<const engine::TensorView> tensors, std::string* out) {
  // One encoder: the pieces, joined.
  std::string headers;
  std::vector<std::span<const uint8_t>> pieces;
  TensorListPieces(tensors, &headers, &pieces);
  out->reserve(out->size() + TensorListBytes(tensors));
  for (std::span<const uint8_t> piece : pieces)
    out->append(reinterpret_cast<const char*>(piece.data()), piece.size());
}

Result<std::vector<engine::TensorView>> ParseTensorList(std::span<const uint8_t> bytes) {
  ByteReader r(bytes, "tensor list");
  uint32_t count = 0;
  // Each tensor is at least its 16 fixed header bytes (dtype, rank, pad, byte_count).
  MLC_RETURN_IF_ERROR(r.Count(&count, kMaxWireTensors, 16, "tensor count"));
  std::vector<engine::TensorView> tensors(count);
  for (uint32_t i = 0; i < count; ++i) {
    engine::TensorView& tensor = tensors[i];
    const std::string what = fmt::format("tensor {}", i);
    uint8_t dtype = 0, rank = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&dtype, "dtype"));
    if (!engine::IsKnownDType(dtype))
      return InvalidArgument("tensor list: {} has dtype {}, expected 1 (float32) or 7 (int64)",
                             what, dtype);
    tensor.dtype = static_cast<engine::DType>(dtype);
    MLC_RETURN_IF_ERROR(r.Pod(&rank, "rank"));
    if (rank > engine::kMaxRank)
      return InvalidArgument("tensor list: {} has rank {}, over the limit {}", what, rank,
                             engine::kMaxRank);
    uint8_t pad[kHeaderPadBytes] = {};
    MLC_RETURN_IF_ERROR(r.Bytes(pad, sizeof(pad), "header padding"));
    for (uint8_t b : pad)
      if (b != 0) return InvalidArgument("tensor list: {} has nonzero header padding", what);
    tensor.dims.resize(rank);
    for (int64_t& dim : tensor.dims) MLC_RETURN_IF_ERROR(r.Pod(&dim, "dimension"));
    MLC_ASSIGN_OR_RETURN(int64_t elements, engine::CheckedNumElements(tensor.dims, what));
    uint64_t byte_count = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&byte_count, "byte count"));
    // <= 2^31 elements of <= 8 bytes: no overflow.
    const uint64_t expected = static_cast<uint64_t>(elements) * engine::DTypeSize(tensor.dtype);
    if (byte_count != expected)
      return InvalidArgument("tensor list: {} ({} {}) has byte count {}, expected {}", what,
                             engine::DTypeName(tensor.dtype), engine::DimsToString(tensor.dims),
                             byte_count, expected);
    std::span<const uint8_t> padding;
    MLC_RETURN_IF_ERROR(r.View(PadFor(r.pos()), &padding, "data padding"));
    for (uint8_t b : padding)
      if (b != 0) return InvalidArgument("tensor list: {} has nonzero data padding", what);
    std::span<const uint8_t> data;
    MLC_RETURN_IF_ERROR(r.View(static_cast<size_t>(byte_count), &data, "tensor data"));
    // TensorView is the engine's mutable view type; callers of this parser only read inputs.
    tensor.data = const_cast<uint8_t*>(data.data());
  }
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return tensors;
}

Result<std::vector<engine::Tensor>> ParseTensorListCopy(std::span<const uint8_t> bytes) {
  MLC_ASSIGN_OR_RETURN(std::vector<engine::TensorView> views, ParseTensorList(bytes));
  std::vector<engine::Tensor> tensors(views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    engine::Tensor& tensor = tensors[i];
    tensor.dtype = views[i].dtype;
    tensor.dims = views[i].dims;
    const size_t size = ByteCount(views[i]);
    const auto* data = static_cast<const uint8_t*>(views[i].data);
    tensor.bytes.assign(data, data + size);
  }
  return tensors;
}

}  // namespace mlcapsule::capsule
