// Shared CLI helpers (see cli_common.h).
#include "cli/cli_common.h"

#include <cstdio>

#include "base/file_util.h"
#include "compiler/onnx_import.h"

namespace mlcapsule::cli {

namespace {
int g_exit_code = 0;
}  // namespace

void SetExitCode(int code) { g_exit_code = code; }
int ExitCode() { return g_exit_code; }

int ExitCodeFor(const Status& status) {
  if (status.ok()) return kExitOk;
  if (status.code() == StatusCode::kUnsupported) return kExitUnsupported;
  return kExitFailure;
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "mlcapsule: error: %s\n", status.message().c_str());
  return ExitCodeFor(status);
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Result<std::vector<int64_t>> ParseDims(const std::string& text) {
  std::vector<int64_t> dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < -1 || v > engine::kMaxTensorElements)
      return InvalidArgument("'{}' is not a shape like 1,3,224,224 (bad entry '{}')", text, item);
    dims.push_back(v);
    if (dims.size() > static_cast<size_t>(engine::kMaxRank))
      return InvalidArgument("shape '{}' has more than {} dims", text, engine::kMaxRank);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return dims;
}

Result<engine::Plan> LoadModel(const std::string& path, const compiler::CompileOptions& options,
                               compiler::CompileReport* report) {
  if (EndsWith(path, ".capsule"))
    return Unsupported(
        "'{}' is a capsule: its plan is encrypted; run it with `mlcapsule run` or measure it "
        "with `mlcapsule bench`",
        path);
  MLC_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, compiler::kMaxModelBytes));
  if (EndsWith(path, ".plan") || bytes.rfind("MLCPLAN", 0) == 0) {
    Result<engine::Plan> plan = engine::ParsePlan(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (!plan.ok()) return plan.status().WithContext(path);
    return plan;
  }
  Result<engine::Plan> plan = compiler::CompileOnnx(std::move(bytes), options, report);
  if (!plan.ok()) return plan.status().WithContext(path);
  return plan;
}

Result<engine::Tensor> ReadTensorFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, kMaxTensorFileBytes));
  if (EndsWith(path, ".npy")) return compiler::ParseNpy(bytes, path);
  return compiler::ParseTensorProto(bytes, path);
}

void PrintTensorPreview(const std::string& name, const engine::Tensor& t) {
  std::printf("%s: %s%s [", name.c_str(), engine::DTypeName(t.dtype),
              engine::DimsToString(t.dims).c_str());
  const int64_t n = std::min<int64_t>(t.NumElements(), 10);
  for (int64_t k = 0; k < n; ++k) {
    if (t.dtype == engine::DType::kFloat32)
      std::printf("%s%.6g", k ? ", " : "", t.Data<float>()[k]);
    else
      std::printf("%s%lld", k ? ", " : "", static_cast<long long>(t.Data<int64_t>()[k]));
  }
  std::printf("%s]\n", t.NumElements() > n ? ", ..." : "");
}

Status WriteTensorFile(const std::string& path, const engine::Tensor& tensor,
                       const std::string& name) {
  if (EndsWith(path, ".npy")) return WriteFile(path, compiler::SerializeNpy(tensor));
  return WriteFile(path, compiler::SerializeTensorProto(tensor, name));
}

}  // namespace mlcapsule::cli
