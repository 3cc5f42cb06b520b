// Fuzz target: the ONNX compiler (provider side, reads models from anywhere). Bytes ->
// CompileOnnx -> Session::Create -> one Run on zero inputs (batch 1, inputs capped at 16 MiB).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "compiler/compiler.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlcapsule;
  compiler::CompileOptions options;
  auto plan =
      compiler::CompileOnnx(std::string_view(reinterpret_cast<const char*>(data), size), options);
  if (!plan.ok()) return 0;
  fuzz::RunOnZeros(std::move(plan).value());
  return 0;
}
