// Reading ONNX protobuf messages into engine tensors. Everything here parses untrusted bytes:
// sizes are checked before allocation, unsupported element types are reported by name.
#pragma once

#include <string>

#include "base/status.h"
#include "engine/tensor.h"

namespace onnx {
class TensorProto;
class ModelProto;
}  // namespace onnx

namespace mlcapsule::compiler {

// Name of an ONNX TensorProto.DataType code ("float16", "int32", ...).
const char* OnnxTypeName(int data_type);

// Converts a TensorProto (float32 or int64, inline data) into a tensor. Other element types are
// kUnsupported naming the type; inconsistent sizes are kInvalidArgument.
Result<engine::Tensor> TensorFromProto(const onnx::TensorProto& proto, const std::string& what);

// Parses a serialized TensorProto (.pb test data files).
Result<engine::Tensor> ParseTensorProto(std::string_view bytes, const std::string& what,
                                        std::string* name = nullptr);
std::string SerializeTensorProto(const engine::Tensor& tensor, const std::string& name);

// NumPy .npy (version 1/2, little-endian '<f4' or '<i8', C order).
Result<engine::Tensor> ParseNpy(std::string_view bytes, const std::string& what);
std::string SerializeNpy(const engine::Tensor& tensor);

inline constexpr uint64_t kMaxModelBytes = uint64_t{2} << 30;  // protobuf's own limit

Result<std::unique_ptr<onnx::ModelProto>> ParseModel(std::string_view bytes);

}  // namespace mlcapsule::compiler
