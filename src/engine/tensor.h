// Element types, symbolic shapes and tensor views used by the plan, the compiler and the kernels.
// A shape dimension is either a fixed size or a multiple of the batch size N, so one plan runs any
// batch size: Dim{3, false} is 3, Dim{512, true} is 512 * N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::engine {

// Codes equal ONNX TensorProto.DataType so the two never need a table to convert.
enum class DType : uint8_t {
  kFloat32 = 1,
  kInt64 = 7,
};

inline constexpr int64_t kMaxRank = 8;
// Largest element count of any one tensor (2^31 elements = 8 GiB of float32).
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 31;
inline constexpr int64_t kMaxBatch = 1 << 20;

bool IsKnownDType(int code);
size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

struct Dim {
  int64_t value = 0;
  bool batch = false;  // true: the size is value * N
  bool operator==(const Dim&) const = default;
  int64_t Resolve(int64_t batch_size) const { return batch ? value * batch_size : value; }
};
using Shape = std::vector<Dim>;     // symbolic, in the plan
using Dims = std::vector<int64_t>;  // concrete, at run time

std::string ShapeToString(const Shape& shape);
std::string DimsToString(std::span<const int64_t> dims);
Dims ResolveShape(const Shape& shape, int64_t batch_size);
Shape FixedShape(std::span<const int64_t> dims);
bool HasBatchDim(const Shape& shape);
// Element count with overflow checking: error when the product overflows or exceeds
// kMaxTensorElements (`what` names the tensor in the message).
Result<int64_t> CheckedNumElements(std::span<const int64_t> dims, std::string_view what);

struct TensorType {
  DType dtype = DType::kFloat32;
  Shape shape;
  bool operator==(const TensorType&) const = default;
  std::string ToString() const;
};

// A concrete tensor seen by a kernel: dims are resolved for the current batch size; data points
// into the arena, the plan's constants or the caller's buffers.
struct TensorView {
  DType dtype = DType::kFloat32;
  Dims dims;
  void* data = nullptr;
  int64_t NumElements() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
  int rank() const { return static_cast<int>(dims.size()); }
  template <typename T>
  T* As() const {
    return static_cast<T*>(data);
  }
};

// An owned tensor (host side: inputs, outputs, constant folding, tests).
struct Tensor {
  DType dtype = DType::kFloat32;
  Dims dims;
  std::vector<uint8_t> bytes;

  static Tensor Make(DType dtype, Dims dims);
  static Tensor FromFloats(Dims dims, std::vector<float> values);
  static Tensor FromInt64s(Dims dims, std::vector<int64_t> values);
  int64_t NumElements() const;
  template <typename T>
  T* Data() {
    return reinterpret_cast<T*>(bytes.data());
  }
  template <typename T>
  const T* Data() const {
    return reinterpret_cast<const T*>(bytes.data());
  }
  TensorView View() { return TensorView{dtype, dims, bytes.data()}; }
};

}  // namespace mlcapsule::engine
