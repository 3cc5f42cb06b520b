// ONNX protobuf reading (see onnx_import.h).
#include "compiler/onnx_import.h"

#include <google/protobuf/io/coded_stream.h>
#include <onnx/onnx_pb.h>

#include <cstring>

namespace mlcapsule::compiler {

using engine::DType;
using engine::Tensor;

const char* OnnxTypeName(int data_type) {
  switch (data_type) {
    case 0:
      return "undefined";
    case 1:
      return "float32";
    case 2:
      return "uint8";
    case 3:
      return "int8";
    case 4:
      return "uint16";
    case 5:
      return "int16";
    case 6:
      return "int32";
    case 7:
      return "int64";
    case 8:
      return "string";
    case 9:
      return "bool";
    case 10:
      return "float16";
    case 11:
      return "float64";
    case 12:
      return "uint32";
    case 13:
      return "uint64";
    case 14:
      return "complex64";
    case 15:
      return "complex128";
    case 16:
      return "bfloat16";
    default:
      return "unknown";
  }
}

Result<Tensor> TensorFromProto(const onnx::TensorProto& proto, const std::string& what) {
  if (proto.data_location() == onnx::TensorProto::EXTERNAL)
    return Unsupported("{} uses external data, which is not supported (embed the weights)", what);
  int type = proto.data_type();
  if (type != 1 && type != 7)
    return Unsupported("{} has element type {}, which is not supported (float32 and int64 only)",
                       what, OnnxTypeName(type));
  if (proto.dims_size() > engine::kMaxRank)
    return InvalidArgument("{} has rank {}, over the limit {}", what, proto.dims_size(),
                           engine::kMaxRank);
  engine::Dims dims(proto.dims().begin(), proto.dims().end());
  MLC_ASSIGN_OR_RETURN(int64_t n, engine::CheckedNumElements(dims, what));
  Tensor t;
  t.dtype = static_cast<DType>(type);
  t.dims = dims;
  const size_t elem = engine::DTypeSize(t.dtype);
  if (proto.has_raw_data()) {
    if (proto.raw_data().size() != static_cast<size_t>(n) * elem)
      return InvalidArgument("{} raw data has {} bytes, shape {} needs {}", what,
                             proto.raw_data().size(), engine::DimsToString(dims),
                             static_cast<size_t>(n) * elem);
    t.bytes.assign(proto.raw_data().begin(), proto.raw_data().end());
    return t;
  }
  // Sizes are compared before allocating: a declared shape is not trusted to fit the data.
  if (type == 1) {
    if (proto.float_data_size() != n)
      return InvalidArgument("{} has {} float values, shape {} needs {}", what,
                             proto.float_data_size(), engine::DimsToString(dims), n);
    t.bytes.resize(static_cast<size_t>(n) * elem);
    if (n) std::memcpy(t.bytes.data(), proto.float_data().data(), t.bytes.size());
  } else {
    if (proto.int64_data_size() != n)
      return InvalidArgument("{} has {} int64 values, shape {} needs {}", what,
                             proto.int64_data_size(), engine::DimsToString(dims), n);
    t.bytes.resize(static_cast<size_t>(n) * elem);
    if (n) std::memcpy(t.bytes.data(), proto.int64_data().data(), t.bytes.size());
  }
  return t;
}

Result<Tensor> ParseTensorProto(std::string_view bytes, const std::string& what,
                                std::string* name) {
  onnx::TensorProto proto;
  if (bytes.size() > kMaxModelBytes ||
      !proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return InvalidArgument("{} is not a valid ONNX TensorProto", what);
  if (name) *name = proto.name();
  return TensorFromProto(proto, what);
}

std::string SerializeTensorProto(const Tensor& tensor, const std::string& name) {
  onnx::TensorProto proto;
  proto.set_name(name);
  proto.set_data_type(static_cast<int>(tensor.dtype));
  for (int64_t d : tensor.dims) proto.add_dims(d);
  proto.set_raw_data(tensor.bytes.data(), tensor.bytes.size());
  return proto.SerializeAsString();
}

Result<std::unique_ptr<onnx::ModelProto>> ParseModel(std::string_view bytes) {
  if (bytes.size() > kMaxModelBytes)
    return ResourceExhausted("model is {} bytes, over the limit {}", bytes.size(), kMaxModelBytes);
  auto model = std::make_unique<onnx::ModelProto>();
  google::protobuf::io::CodedInputStream stream(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                static_cast<int>(bytes.size()));
  stream.SetRecursionLimit(64);
  if (!model->ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage())
    return InvalidArgument("not a valid ONNX model (protobuf parse failed)");
  return model;
}

// ---- .npy ----

Result<Tensor> ParseNpy(std::string_view bytes, const std::string& what) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    return InvalidArgument("{} is not a .npy file (bad magic)", what);
  uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len =
        static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return DataLoss("{} is truncated", what);
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  } else {
    return Unsupported("{} has .npy version {}", what, major);
  }
  if (header_len > 65536 || offset + header_len > bytes.size())
    return DataLoss("{} header is truncated", what);
  std::string header(bytes.substr(offset, header_len));
  auto field = [&](const std::string& key) -> std::string {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) return "";
    size_t colon = header.find(':', k);
    if (colon == std::string::npos) return "";
    size_t start = header.find_first_not_of(' ', colon + 1);
    if (start == std::string::npos) return "";
    if (header[start] == '(') return header.substr(start, header.find(')', start) - start + 1);
    size_t end = header.find_first_of(",}", start);
    return header.substr(start, end - start);
  };
  std::string descr = field("descr"), order = field("fortran_order"), shape = field("shape");
  Tensor t;
  if (descr == "'<f4'") {
    t.dtype = DType::kFloat32;
  } else if (descr == "'<i8'") {
    t.dtype = DType::kInt64;
  } else {
    return Unsupported("{} has dtype {}, only '<f4' (float32) and '<i8' (int64) are supported",
                       what, descr);
  }
  if (order != "False") return Unsupported("{} is Fortran-ordered", what);
  if (shape.size() < 2 || shape.front() != '(') return InvalidArgument("{} has no shape", what);
  std::string inner = shape.substr(1, shape.size() - 2);
  size_t pos = 0;
  while (pos < inner.size()) {
    size_t comma = inner.find(',', pos);
    std::string item =
        inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(' '));
    if (!item.empty()) {
      char* end = nullptr;
      long long v = std::strtoll(item.c_str(), &end, 10);
      if (end == item.c_str() || v < 0)
        return InvalidArgument("{} has a bad shape entry '{}'", what, item);
      t.dims.push_back(v);
      if (t.dims.size() > static_cast<size_t>(engine::kMaxRank))
        return InvalidArgument("{} rank is over {}", what, engine::kMaxRank);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  MLC_ASSIGN_OR_RETURN(int64_t n, engine::CheckedNumElements(t.dims, what));
  size_t need = static_cast<size_t>(n) * engine::DTypeSize(t.dtype);
  size_t data_offset = offset + header_len;
  if (bytes.size() - data_offset != need)
    return InvalidArgument("{} holds {} data bytes, shape {} needs {}", what,
                           bytes.size() - data_offset, engine::DimsToString(t.dims), need);
  t.bytes.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data_offset), bytes.end());
  return t;
}

std::string SerializeNpy(const Tensor& tensor) {
  std::string shape = "(";
  for (size_t i = 0; i < tensor.dims.size(); ++i)
    shape += std::to_string(tensor.dims[i]) +
             (tensor.dims.size() == 1 ? "," : (i + 1 < tensor.dims.size() ? ", " : ""));
  shape += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                   tensor.dtype == DType::kFloat32 ? "<f4" : "<i8", shape);
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size());
  return out;
}

}  // namespace mlcapsule::compiler
