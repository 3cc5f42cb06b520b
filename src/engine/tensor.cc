// Shapes and tensors (see tensor.h).
#include "engine/tensor.h"

#include <cstring>

namespace mlcapsule::engine {

bool IsKnownDType(int code) { return code == 1 || code == 7; }

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt64:
      return "int64";
  }
  return "unknown";
}

std::string ShapeToString(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ",";
    if (shape[i].batch) {
      out += shape[i].value == 1 ? "N" : fmt::format("{}N", shape[i].value);
    } else {
      out += std::to_string(shape[i].value);
    }
  }
  return out + "]";
}

std::string DimsToString(std::span<const int64_t> dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(dims[i]);
  }
  return out + "]";
}

Dims ResolveShape(const Shape& shape, int64_t batch_size) {
  Dims dims(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) dims[i] = shape[i].Resolve(batch_size);
  return dims;
}

Shape FixedShape(std::span<const int64_t> dims) {
  Shape shape(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) shape[i] = Dim{dims[i], false};
  return shape;
}

bool HasBatchDim(const Shape& shape) {
  for (const Dim& d : shape)
    if (d.batch) return true;
  return false;
}

Result<int64_t> CheckedNumElements(std::span<const int64_t> dims, std::string_view what) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0)
      return InvalidArgument("{} has negative dimension {} in shape {}", what, d,
                             DimsToString(dims));
    if (d != 0 && n > kMaxTensorElements / d) {
      return ResourceExhausted("{} shape {} has more than {} elements", what, DimsToString(dims),
                               kMaxTensorElements);
    }
    n *= d;
  }
  if (n > kMaxTensorElements) {
    return ResourceExhausted("{} shape {} has more than {} elements", what, DimsToString(dims),
                             kMaxTensorElements);
  }
  return n;
}

std::string TensorType::ToString() const {
  return fmt::format("{}{}", DTypeName(dtype), ShapeToString(shape));
}

Tensor Tensor::Make(DType dtype, Dims dims) {
  Tensor t;
  t.dtype = dtype;
  t.dims = std::move(dims);
  t.bytes.assign(static_cast<size_t>(t.NumElements()) * DTypeSize(dtype), 0);
  return t;
}

Tensor Tensor::FromFloats(Dims dims, std::vector<float> values) {
  Tensor t = Make(DType::kFloat32, std::move(dims));
  assert(static_cast<int64_t>(values.size()) == t.NumElements());
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::FromInt64s(Dims dims, std::vector<int64_t> values) {
  Tensor t = Make(DType::kInt64, std::move(dims));
  assert(static_cast<int64_t>(values.size()) == t.NumElements());
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

int64_t Tensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

}  // namespace mlcapsule::engine
