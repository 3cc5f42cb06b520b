// Fuzz target: the test-data parsers (ONNX TensorProto .pb and NumPy .npy) on the same bytes.
// A parsed tensor is re-serialized and parsed again: the round trip must give the same tensor.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "compiler/onnx_import.h"

namespace {

void CheckSame(const mlcapsule::engine::Tensor& a, const mlcapsule::engine::Tensor& b) {
  if (a.dtype != b.dtype || a.dims != b.dims || a.bytes != b.bytes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlcapsule;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::string name;
  auto proto = compiler::ParseTensorProto(bytes, "fuzz.pb", &name);
  if (proto.ok()) {
    auto again =
        compiler::ParseTensorProto(compiler::SerializeTensorProto(*proto, name), "again.pb");
    if (!again.ok()) std::abort();
    CheckSame(*proto, *again);
  }
  auto npy = compiler::ParseNpy(bytes, "fuzz.npy");
  if (npy.ok()) {
    auto again = compiler::ParseNpy(compiler::SerializeNpy(*npy), "again.npy");
    if (!again.ok()) std::abort();
    CheckSame(*npy, *again);
  }
  return 0;
}
