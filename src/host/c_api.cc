// The C API of include/mlcapsule/mlcapsule.h over host::Client. This file is the boundary between
// the application (any language, any mistakes) and the C++ host library: every pointer is checked
// before use, every caller-supplied size is checked against the tensor limits before anything is
// allocated, and no C++ exception crosses it (each entry point runs inside Guarded()). It trusts
// the host library as much as the rest of the untrusted host does; it holds no secrets.
#include "mlcapsule/mlcapsule.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "capsule/crypto.h"
#include "capsule/tensor_wire.h"
#include "engine/tensor.h"
#include "host/client.h"

using mlcapsule::Result;
using mlcapsule::Status;
using mlcapsule::StatusCode;
namespace capsule = mlcapsule::capsule;
namespace engine = mlcapsule::engine;
namespace host = mlcapsule::host;

static_assert(static_cast<int>(StatusCode::kInvalidArgument) == MLC_ERR_INVALID_ARGUMENT &&
                  static_cast<int>(StatusCode::kUnsupported) == MLC_ERR_UNSUPPORTED &&
                  static_cast<int>(StatusCode::kNotFound) == MLC_ERR_NOT_FOUND &&
                  static_cast<int>(StatusCode::kDataLoss) == MLC_ERR_DATA_LOSS &&
                  static_cast<int>(StatusCode::kResourceExhausted) == MLC_ERR_RESOURCE_EXHAUSTED &&
                  static_cast<int>(StatusCode::kFailedPrecondition) ==
                      MLC_ERR_FAILED_PRECONDITION &&
                  static_cast<int>(StatusCode::kPermissionDenied) == MLC_ERR_PERMISSION_DENIED &&
                  static_cast<int>(StatusCode::kIoError) == MLC_ERR_IO &&
                  static_cast<int>(StatusCode::kInternal) == MLC_ERR_INTERNAL,
              "mlc_status must mirror StatusCode");
static_assert(MLC_MAX_RANK == engine::kMaxRank);
static_assert(static_cast<int>(engine::DType::kFloat32) == MLC_DTYPE_FLOAT32 &&
              static_cast<int>(engine::DType::kInt64) == MLC_DTYPE_INT64);
static_assert(MLC_CAPSULE_ID_BYTES == sizeof(capsule::CapsuleId));
static_assert(MLC_NONCE_BYTES == sizeof(capsule::Nonce));

// The handle. Strings handed out as `const char*` live here; they are refreshed only by
// open and install-lease (the documented lifetime).
struct mlc_client {
  std::mutex mutex;  // one call at a time per client
  std::unique_ptr<host::Client> client;
  std::string capsule_id_hex;
  std::string model_name;
  std::string license_id;
  std::string policy_json;
  std::string backend;
  std::vector<capsule::IoTensor> inputs;
  std::vector<capsule::IoTensor> outputs;
};

namespace {

constexpr int kMaxThreads = 256;  // host::Client's limit
// mlc_options as API version 1 laid it out. A later version that adds fields reads them only when
// the caller's struct_size covers them, so programs built against this header keep working.
constexpr size_t kOptionsV1Size = sizeof(mlc_options);

std::string& LastError() {
  thread_local std::string message;
  return message;
}

// For the paths where even formatting a message failed: assigning a literal this short never
// allocates (it fits the string's inline buffer).
mlc_status FailWithoutMemory() noexcept {
  LastError().clear();
  LastError().append("out of memory");
  return MLC_ERR_INTERNAL;
}

mlc_status Fail(const Status& status) noexcept {
  try {
    LastError() = status.message();
  } catch (...) {
    return FailWithoutMemory();
  }
  return static_cast<mlc_status>(status.code());
}

mlc_status Succeed() {
  LastError().clear();
  return MLC_OK;
}

mlc_status Finish(const Status& status) { return status.ok() ? Succeed() : Fail(status); }

// Runs `body` (returning Status) with every exception turned into MLC_ERR_INTERNAL.
template <typename Body>
mlc_status Guarded(const char* function, Body&& body) noexcept {
  try {
    try {
      return Finish(body());
    } catch (const std::bad_alloc&) {
      return Fail(mlcapsule::InternalError("{}: out of memory", function));
    } catch (const std::exception& e) {
      return Fail(mlcapsule::InternalError("{}: internal error: {}", function, e.what()));
    } catch (...) {
      return Fail(mlcapsule::InternalError("{}: internal error (unknown exception)", function));
    }
  } catch (...) {  // building the message itself failed
    return FailWithoutMemory();
  }
}

// The integer a caller passed for an enum. C callers may pass any value; reading it through the
// enum type would be undefined for values outside the enum's range, so read the bytes.
template <typename Enum>
int EnumValue(const Enum& value) {
  std::underlying_type_t<Enum> raw;
  static_assert(sizeof(raw) == sizeof(value));
  std::memcpy(&raw, &value, sizeof(raw));
  return static_cast<int>(raw);
}

Status RequireNonNull(const void* pointer, const char* function, const char* argument) {
  if (pointer == nullptr) return mlcapsule::InvalidArgument("{}: {} is NULL", function, argument);
  return Status::Ok();
}

// Refreshes the strings and shapes the C API hands out. Caller holds the mutex.
void Snapshot(mlc_client* handle) {
  const host::CoreInfo& info = handle->client->info();
  handle->capsule_id_hex = capsule::CapsuleIdHex(info.capsule_id);
  handle->model_name = handle->client->header().model_name;
  handle->license_id = info.license_id;
  handle->policy_json =
      info.policy_json.empty() ? handle->client->header().policy_json : info.policy_json;
  handle->backend = handle->client->DescribeBackend();
  handle->inputs = info.inputs;
  handle->outputs = info.outputs;
}

// mlcapsule-core beside this shared library (the build tree), else in the installed bin
// directory relative to it (MLCAPSULE_LIBDIR_TO_BINDIR: "../bin" for lib/ and bin/, as
// `cmake --install` and the Debian package lay them out), when it is there ("" otherwise: the
// host then looks beside the running program).
std::string CoreBesideLibrary() {
  Dl_info dl_info{};
  if (dladdr(reinterpret_cast<void*>(&mlc_api_version), &dl_info) == 0 ||
      dl_info.dli_fname == nullptr)
    return "";
  std::string path = dl_info.dli_fname;
  size_t slash = path.rfind('/');
  const std::string directory =
      slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
  std::vector<std::string> candidates = {directory + "mlcapsule-core"};
#ifdef MLCAPSULE_LIBDIR_TO_BINDIR
  candidates.push_back(directory + MLCAPSULE_LIBDIR_TO_BINDIR "/mlcapsule-core");
#endif
  for (const std::string& candidate : candidates) {
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return candidate;
  }
  return "";
}

Status FillInfo(const std::vector<capsule::IoTensor>& list, size_t index, const char* what,
                mlc_tensor_info* out) {
  if (index >= list.size())
    return mlcapsule::InvalidArgument("{} index {} is out of range (the model has {})", what, index,
                                      list.size());
  const capsule::IoTensor& io = list[index];
  if (io.dims.size() > static_cast<size_t>(MLC_MAX_RANK))
    return mlcapsule::InternalError("{} '{}' has rank {}, over {}", what, io.name, io.dims.size(),
                                    MLC_MAX_RANK);
  out->name = io.name.c_str();
  out->dtype = static_cast<mlc_dtype>(io.dtype);
  out->rank = io.dims.size();
  for (size_t d = 0; d < io.dims.size(); ++d) {
    out->dims[d] = io.dims[d].value;
    if (io.dims[d].batch) out->batch_mask |= uint32_t{1} << d;
  }
  return Status::Ok();
}

// Checks one caller tensor and makes a view of it (no copy: the host encodes the inputs for the
// core before returning, and never writes through the view).
Status ToView(const mlc_tensor& tensor, size_t index, const std::vector<capsule::IoTensor>& inputs,
              engine::TensorView* view) {
  std::string what = index < inputs.size()
                         ? fmt::format("input {} ('{}')", index, inputs[index].name)
                         : fmt::format("input {}", index);
  const int dtype_code = EnumValue(tensor.dtype);
  if (!engine::IsKnownDType(dtype_code))
    return mlcapsule::InvalidArgument(
        "{}: dtype {} is not MLC_DTYPE_FLOAT32 (1) or MLC_DTYPE_INT64 (7)", what, dtype_code);
  if (tensor.rank > static_cast<size_t>(MLC_MAX_RANK))
    return mlcapsule::InvalidArgument("{}: rank {} is over the limit {}", what, tensor.rank,
                                      MLC_MAX_RANK);
  engine::Dims dims(tensor.dims, tensor.dims + tensor.rank);
  for (size_t d = 0; d < tensor.rank; ++d)
    if (dims[d] < 0)
      return mlcapsule::InvalidArgument("{}: dimension {} is {}, must be >= 0", what, d, dims[d]);
  MLC_ASSIGN_OR_RETURN(int64_t elements, engine::CheckedNumElements(dims, what));
  const auto dtype = static_cast<engine::DType>(dtype_code);
  const uint64_t expected = static_cast<uint64_t>(elements) * engine::DTypeSize(dtype);
  if (tensor.byte_size != expected)
    return mlcapsule::InvalidArgument("{}: byte_size is {}, but {} {} elements of shape {} take {}",
                                      what, tensor.byte_size, elements, engine::DTypeName(dtype),
                                      engine::DimsToString(dims), expected);
  if (tensor.data == nullptr && expected > 0)
    return mlcapsule::InvalidArgument("{}: data is NULL", what);
  view->dtype = dtype;
  view->dims = std::move(dims);
  view->data = const_cast<void*>(tensor.data);
  return Status::Ok();
}

// Arrays handed out by mlc_client_infer, keyed by the pointer the caller gets, so that
// mlc_tensors_free can recognise (and refuse) a pointer it did not hand out.
struct OutputBlock {
  std::vector<engine::Tensor> tensors;
  std::vector<std::string> names;
  std::vector<mlc_tensor> views;
};
std::mutex& BlocksMutex() {
  static std::mutex mutex;
  return mutex;
}
std::unordered_map<const mlc_tensor*, std::unique_ptr<OutputBlock>>& Blocks() {
  static auto* blocks = new std::unordered_map<const mlc_tensor*, std::unique_ptr<OutputBlock>>();
  return *blocks;  // never destroyed: frees may come from other static destructors
}

Status CopyToBuffer(const std::vector<uint8_t>& bytes, mlc_buffer* out) {
  if (bytes.empty()) return Status::Ok();
  auto* data = static_cast<uint8_t*>(std::malloc(bytes.size()));
  if (data == nullptr) return mlcapsule::InternalError("out of memory ({} bytes)", bytes.size());
  std::memcpy(data, bytes.data(), bytes.size());
  out->data = data;
  out->size = bytes.size();
  return Status::Ok();
}

}  // namespace

extern "C" {

const char* mlc_status_name(mlc_status status) {
  const int code = EnumValue(status);
  if (code < MLC_OK || code > MLC_ERR_ABORTED) return "unknown";
  return mlcapsule::StatusCodeName(static_cast<StatusCode>(code));
}

const char* mlc_last_error(void) {
  try {
    return LastError().c_str();
  } catch (...) {
    return "";
  }
}

int mlc_api_version(void) { return MLCAPSULE_API_VERSION; }

const char* mlc_version_string(void) { return MLCAPSULE_VERSION_STRING; }

size_t mlc_dtype_size(mlc_dtype dtype) {
  const int code = EnumValue(dtype);
  if (!engine::IsKnownDType(code)) return 0;
  return engine::DTypeSize(static_cast<engine::DType>(code));
}

const char* mlc_dtype_name(mlc_dtype dtype) {
  const int code = EnumValue(dtype);
  if (!engine::IsKnownDType(code)) return "unknown";
  return engine::DTypeName(static_cast<engine::DType>(code));
}

void mlc_options_init(mlc_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof(*options));
  options->struct_size = sizeof(mlc_options);
  options->threads = 1;
}

mlc_status mlc_client_open(const char* capsule_path, const mlc_options* options, mlc_client** out) {
  constexpr const char* kFn = "mlc_client_open";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, kFn, "out"));
    *out = nullptr;
    MLC_RETURN_IF_ERROR(RequireNonNull(capsule_path, kFn, "capsule_path"));
    MLC_RETURN_IF_ERROR(RequireNonNull(options, kFn, "options"));
    if (options->struct_size < kOptionsV1Size)
      return mlcapsule::InvalidArgument(
          "{}: options->struct_size is {}, expected at least {} (call mlc_options_init first)", kFn,
          options->struct_size, sizeof(mlc_options));
    if (capsule_path[0] == '\0')
      return mlcapsule::InvalidArgument("{}: capsule_path is empty", kFn);
    if (options->state_dir == nullptr || options->state_dir[0] == '\0')
      return mlcapsule::InvalidArgument(
          "{}: options->state_dir is not set (one directory per capsule holds its sealed state)",
          kFn);
    if (options->threads < 1 || options->threads > kMaxThreads)
      return mlcapsule::InvalidArgument("{}: options->threads is {}, allowed 1..{}", kFn,
                                        options->threads, kMaxThreads);
    host::ClientOptions client_options;
    client_options.state_dir = options->state_dir;
    client_options.threads = options->threads;
    client_options.core_binary = options->core_binary != nullptr && options->core_binary[0] != '\0'
                                     ? std::string(options->core_binary)
                                     : CoreBesideLibrary();

    // A clear error for the commonest mistake, before a core process is started.
    struct stat st {};
    if (::stat(capsule_path, &st) != 0)
      return Status(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError,
                    fmt::format("capsule '{}': {}", capsule_path, std::strerror(errno)));
    if (!S_ISREG(st.st_mode))
      return mlcapsule::InvalidArgument("capsule '{}' is not a regular file", capsule_path);

    MLC_RETURN_IF_ERROR(capsule::InitCrypto());
    Result<std::unique_ptr<host::Client>> client = host::Client::Open(capsule_path, client_options);
    if (!client.ok()) {
      const Status& status = client.status();
      if (status.message().find(capsule_path) != std::string::npos) return status;
      return status.WithContext(fmt::format("capsule '{}'", capsule_path));
    }
    auto handle = std::make_unique<mlc_client>();
    handle->client = std::move(client).value();
    Snapshot(handle.get());
    *out = handle.release();
    return Status::Ok();
  });
}

mlc_status mlc_client_close(mlc_client* client) {
  if (client == nullptr) return Succeed();
  std::unique_ptr<mlc_client> handle(client);
  mlc_status result = Guarded("mlc_client_close", [&]() -> Status {
    std::lock_guard<std::mutex> lock(handle->mutex);
    return handle->client->Close();
  });
  try {
    handle.reset();
  } catch (...) {
    if (result == MLC_OK)
      result = Fail(mlcapsule::InternalError("mlc_client_close: the client did not stop cleanly"));
  }
  return result;
}

mlc_status mlc_client_state(mlc_client* client, mlc_state* out) {
  constexpr const char* kFn = "mlc_client_state";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, kFn, "out"));
    *out = MLC_STATE_NEEDS_LEASE;
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    *out = client->client->info().state == host::CoreStateKind::kReady ? MLC_STATE_READY
                                                                       : MLC_STATE_NEEDS_LEASE;
    return Status::Ok();
  });
}

mlc_status mlc_client_quota(mlc_client* client, mlc_quota* out) {
  constexpr const char* kFn = "mlc_client_quota";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, kFn, "out"));
    *out = mlc_quota{};
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    const host::CoreInfo& info = client->client->info();
    out->queries_used = info.queries_used;
    out->query_quota = info.query_quota;
    out->queries_left =
        info.query_quota > info.queries_used ? info.query_quota - info.queries_used : 0;
    out->expires_at = info.expires_at;
    out->total_queries = info.total_queries;
    return Status::Ok();
  });
}

namespace {

// The string getters: one shape, different fields.
mlc_status GetString(const char* function, mlc_client* client, const char** out,
                     const std::string mlc_client::*field) {
  return Guarded(function, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, function, "out"));
    *out = nullptr;
    MLC_RETURN_IF_ERROR(RequireNonNull(client, function, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    *out = (client->*field).c_str();
    return Status::Ok();
  });
}

mlc_status GetCount(const char* function, mlc_client* client, size_t* out, bool inputs) {
  return Guarded(function, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, function, "out"));
    *out = 0;
    MLC_RETURN_IF_ERROR(RequireNonNull(client, function, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    *out = inputs ? client->inputs.size() : client->outputs.size();
    return Status::Ok();
  });
}

mlc_status GetInfo(const char* function, mlc_client* client, size_t index, mlc_tensor_info* out,
                   bool inputs) {
  return Guarded(function, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, function, "out"));
    *out = mlc_tensor_info{};
    MLC_RETURN_IF_ERROR(RequireNonNull(client, function, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    Status status = FillInfo(inputs ? client->inputs : client->outputs, index,
                             inputs ? "input" : "output", out);
    if (!status.ok()) *out = mlc_tensor_info{};
    return status.WithContext(function);
  });
}

}  // namespace

mlc_status mlc_client_capsule_id(mlc_client* client, const char** out) {
  return GetString("mlc_client_capsule_id", client, out, &mlc_client::capsule_id_hex);
}
mlc_status mlc_client_model_name(mlc_client* client, const char** out) {
  return GetString("mlc_client_model_name", client, out, &mlc_client::model_name);
}
mlc_status mlc_client_license_id(mlc_client* client, const char** out) {
  return GetString("mlc_client_license_id", client, out, &mlc_client::license_id);
}
mlc_status mlc_client_policy_json(mlc_client* client, const char** out) {
  return GetString("mlc_client_policy_json", client, out, &mlc_client::policy_json);
}
mlc_status mlc_client_backend(mlc_client* client, const char** out) {
  return GetString("mlc_client_backend", client, out, &mlc_client::backend);
}

mlc_status mlc_client_input_count(mlc_client* client, size_t* out) {
  return GetCount("mlc_client_input_count", client, out, true);
}
mlc_status mlc_client_input_info(mlc_client* client, size_t index, mlc_tensor_info* out) {
  return GetInfo("mlc_client_input_info", client, index, out, true);
}
mlc_status mlc_client_output_count(mlc_client* client, size_t* out) {
  return GetCount("mlc_client_output_count", client, out, false);
}
mlc_status mlc_client_output_info(mlc_client* client, size_t index, mlc_tensor_info* out) {
  return GetInfo("mlc_client_output_info", client, index, out, false);
}

void mlc_buffer_free(mlc_buffer* buffer) {
  if (buffer == nullptr) return;
  std::free(buffer->data);
  buffer->data = nullptr;
  buffer->size = 0;
}

mlc_status mlc_client_evidence_request(mlc_client* client, const uint8_t* nonce, int attach_report,
                                       mlc_buffer* out) {
  constexpr const char* kFn = "mlc_client_evidence_request";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, kFn, "out"));
    *out = mlc_buffer{};
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    MLC_RETURN_IF_ERROR(RequireNonNull(nonce, kFn, "nonce"));
    capsule::Nonce nonce_bytes{};
    std::memcpy(nonce_bytes.data(), nonce, nonce_bytes.size());
    std::lock_guard<std::mutex> lock(client->mutex);
    Result<std::vector<uint8_t>> request =
        client->client->MakeEvidenceRequest(nonce_bytes, attach_report != 0);
    if (!request.ok()) return request.status();
    return CopyToBuffer(request.value(), out);
  });
}

mlc_status mlc_client_install_lease(mlc_client* client, const uint8_t* lease, size_t size) {
  constexpr const char* kFn = "mlc_client_install_lease";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    MLC_RETURN_IF_ERROR(RequireNonNull(lease, kFn, "lease"));
    if (size == 0 || size > capsule::kMaxLeaseBytes)
      return mlcapsule::InvalidArgument("{}: lease size {} is outside 1..{} bytes", kFn, size,
                                        capsule::kMaxLeaseBytes);
    // The host forwards these bytes to the core; copy them once so that the caller's buffer can
    // change under us without effect.
    std::vector<uint8_t> copy(lease, lease + size);
    std::lock_guard<std::mutex> lock(client->mutex);
    Status status = client->client->InstallLease(copy);
    Snapshot(client);  // the core info changes even on some failures (an expired lease)
    return status;
  });
}

mlc_status mlc_client_infer(mlc_client* client, const mlc_tensor* inputs, size_t input_count,
                            mlc_tensor** outputs, size_t* output_count) {
  constexpr const char* kFn = "mlc_client_infer";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(outputs, kFn, "outputs"));
    *outputs = nullptr;
    MLC_RETURN_IF_ERROR(RequireNonNull(output_count, kFn, "output_count"));
    *output_count = 0;
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    if (input_count > 0) MLC_RETURN_IF_ERROR(RequireNonNull(inputs, kFn, "inputs"));
    if (input_count > capsule::kMaxWireTensors)
      return mlcapsule::InvalidArgument("{}: input_count {} is over the limit {}", kFn, input_count,
                                        capsule::kMaxWireTensors);
    std::lock_guard<std::mutex> lock(client->mutex);
    std::vector<engine::TensorView> views(input_count);
    for (size_t i = 0; i < input_count; ++i)
      MLC_RETURN_IF_ERROR(ToView(inputs[i], i, client->inputs, &views[i]).WithContext(kFn));

    auto block = std::make_unique<OutputBlock>();
    MLC_RETURN_IF_ERROR(client->client->Infer(views, &block->tensors));
    if (block->tensors.empty()) return Status::Ok();
    if (block->tensors.size() > capsule::kMaxWireTensors)
      return mlcapsule::InternalError("{}: the core returned {} tensors", kFn,
                                      block->tensors.size());
    block->names.resize(block->tensors.size());
    block->views.resize(block->tensors.size());
    for (size_t i = 0; i < block->tensors.size(); ++i) {
      engine::Tensor& tensor = block->tensors[i];
      if (tensor.dims.size() > static_cast<size_t>(MLC_MAX_RANK))
        return mlcapsule::InternalError("{}: output {} has rank {}", kFn, i, tensor.dims.size());
      block->names[i] =
          i < client->outputs.size() ? client->outputs[i].name : fmt::format("output_{}", i);
      mlc_tensor& view = block->views[i];
      view = mlc_tensor{};
      view.dtype = static_cast<mlc_dtype>(tensor.dtype);
      view.rank = tensor.dims.size();
      for (size_t d = 0; d < tensor.dims.size(); ++d) view.dims[d] = tensor.dims[d];
      view.data = tensor.bytes.data();
      view.byte_size = tensor.bytes.size();
      view.name = block->names[i].c_str();
    }
    mlc_tensor* array = block->views.data();
    const size_t count = block->views.size();
    {
      std::lock_guard<std::mutex> blocks_lock(BlocksMutex());
      Blocks().emplace(array, std::move(block));
    }
    *outputs = array;
    *output_count = count;
    return Status::Ok();
  });
}

void mlc_tensors_free(mlc_tensor* tensors) {
  if (tensors == nullptr) return;
  try {
    std::unique_ptr<OutputBlock> block;
    {
      std::lock_guard<std::mutex> lock(BlocksMutex());
      auto it = Blocks().find(tensors);
      if (it == Blocks().end()) {
        Fail(mlcapsule::InvalidArgument(
            "mlc_tensors_free: {} is not an array returned by mlc_client_infer (or was freed "
            "already); ignored",
            static_cast<const void*>(tensors)));
        return;
      }
      block = std::move(it->second);
      Blocks().erase(it);
    }
  } catch (...) {
    // Nothing useful to report from a free; the memory stays allocated.
  }
}

mlc_status mlc_client_usage_report(mlc_client* client, mlc_buffer* out) {
  constexpr const char* kFn = "mlc_client_usage_report";
  return Guarded(kFn, [&]() -> Status {
    MLC_RETURN_IF_ERROR(RequireNonNull(out, kFn, "out"));
    *out = mlc_buffer{};
    MLC_RETURN_IF_ERROR(RequireNonNull(client, kFn, "client"));
    std::lock_guard<std::mutex> lock(client->mutex);
    Result<std::vector<uint8_t>> report = client->client->UsageReport();
    if (!report.ok()) return report.status();
    return CopyToBuffer(report.value(), out);
  });
}

}  // extern "C"
