// MLCapsule C++ SDK: a thin, header-only C++20 layer over the C API (mlcapsule.h). It calls
// nothing but mlc_* functions, so an application links libmlcapsule.so and nothing else.
//
//   #include <mlcapsule/mlcapsule.hpp>
//   namespace mlc = mlcapsule::sdk;
//
//   try {
//     mlc::Client client = mlc::Client::Open("model.capsule", {.state_dir = "state/"});
//     if (client.state() == mlc::State::kNeedsLease) {
//       std::vector<uint8_t> request = client.EvidenceRequest(nonce);  // send to the provider
//       client.InstallLease(lease_bytes);                              // its answer
//     }
//     mlc::Tensor image = mlc::Tensor::Floats({1, 784}, pixels);
//     std::vector<mlc::Tensor> outputs = client.Infer({image});
//     std::span<const float> scores = outputs[0].floats();
//   } catch (const mlc::Error& e) {
//     // e.code() is the mlc_status (MLC_ERR_RESOURCE_EXHAUSTED: quota used up), e.what() the
//     // library's message.
//   }
//
// Errors are exceptions (mlcapsule::sdk::Error). This is deliberate and safe: the SDK is compiled
// into the application, so no exception crosses a library boundary; the library itself (the C
// API) reports errors as codes + messages and never throws. Copying a Client is not allowed (it
// owns the core); moving is. The destructor closes the client and ignores a failure of the final
// seal: call Close() to see it.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mlcapsule/mlcapsule.h"

namespace mlcapsule::sdk {

// A failed C API call: the code and the library's message.
class Error : public std::runtime_error {
 public:
  Error(mlc_status code, const std::string& message) : std::runtime_error(message), code_(code) {}
  mlc_status code() const noexcept { return code_; }
  const char* code_name() const noexcept { return mlc_status_name(code_); }

 private:
  mlc_status code_;
};

namespace detail {
inline void Check(mlc_status status) {
  if (status != MLC_OK) throw Error(status, mlc_last_error());
}
}  // namespace detail

enum class State { kNeedsLease = MLC_STATE_NEEDS_LEASE, kReady = MLC_STATE_READY };

using Quota = mlc_quota;

struct Options {
  std::string state_dir;    // required: one directory per capsule
  int threads = 1;          // inference threads of the core (1..256)
  std::string core_binary;  // "": mlcapsule-core beside libmlcapsule.so
};

// The declared type of an input or output. Dimension i is dims[i] * N (the batch size) when
// is_batch(i), else dims[i].
struct TensorInfo {
  std::string name;
  mlc_dtype dtype = MLC_DTYPE_FLOAT32;
  std::vector<int64_t> dims;
  uint32_t batch_mask = 0;
  bool is_batch(size_t i) const { return i < 32 && ((batch_mask >> i) & 1u) != 0; }
};

// An owned dense tensor (row-major).
class Tensor {
 public:
  Tensor() = default;
  Tensor(mlc_dtype dtype, std::vector<int64_t> dims, std::vector<uint8_t> bytes,
         std::string name = {})
      : dtype_(dtype), dims_(std::move(dims)), bytes_(std::move(bytes)), name_(std::move(name)) {}

  static Tensor Floats(std::vector<int64_t> dims, std::span<const float> values) {
    return FromValues(MLC_DTYPE_FLOAT32, std::move(dims), values.data(), values.size_bytes());
  }
  static Tensor Int64s(std::vector<int64_t> dims, std::span<const int64_t> values) {
    return FromValues(MLC_DTYPE_INT64, std::move(dims), values.data(), values.size_bytes());
  }

  mlc_dtype dtype() const { return dtype_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  const std::string& name() const { return name_; }  // outputs: the output's name
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  size_t num_elements() const {
    const size_t size = mlc_dtype_size(dtype_);
    return size == 0 ? 0 : bytes_.size() / size;
  }
  // The values, after checking the element type.
  std::span<const float> floats() const { return Values<float>(MLC_DTYPE_FLOAT32); }
  std::span<const int64_t> int64s() const { return Values<int64_t>(MLC_DTYPE_INT64); }

  // A view for the C API (valid while this tensor is alive and unchanged).
  mlc_tensor c_tensor() const {
    if (dims_.size() > MLC_MAX_RANK)
      throw Error(MLC_ERR_INVALID_ARGUMENT, "tensor rank " + std::to_string(dims_.size()) +
                                                " is over the limit " +
                                                std::to_string(MLC_MAX_RANK));
    mlc_tensor t{};
    t.dtype = dtype_;
    t.rank = dims_.size();
    for (size_t i = 0; i < dims_.size(); ++i) t.dims[i] = dims_[i];
    t.data = bytes_.data();
    t.byte_size = bytes_.size();
    t.name = nullptr;
    return t;
  }

 private:
  static Tensor FromValues(mlc_dtype dtype, std::vector<int64_t> dims, const void* data,
                           size_t size) {
    std::vector<uint8_t> bytes(size);
    if (size > 0) std::memcpy(bytes.data(), data, size);
    return Tensor(dtype, std::move(dims), std::move(bytes));
  }
  template <typename T>
  std::span<const T> Values(mlc_dtype want) const {
    if (dtype_ != want)
      throw Error(MLC_ERR_INVALID_ARGUMENT, std::string("tensor '") + name_ + "' is " +
                                                mlc_dtype_name(dtype_) + ", not " +
                                                mlc_dtype_name(want));
    // operator new aligns the bytes for any fundamental type.
    return {reinterpret_cast<const T*>(bytes_.data()), bytes_.size() / sizeof(T)};
  }

  mlc_dtype dtype_ = MLC_DTYPE_FLOAT32;
  std::vector<int64_t> dims_;
  std::vector<uint8_t> bytes_;
  std::string name_;
};

// One capsule on this machine (see mlc_client_* in mlcapsule.h for what each call does).
class Client {
 public:
  static Client Open(const std::string& capsule_path, const Options& options) {
    if (mlc_api_version() < MLCAPSULE_API_VERSION)
      throw Error(MLC_ERR_UNSUPPORTED,
                  "libmlcapsule provides API version " + std::to_string(mlc_api_version()) +
                      ", this program needs " + std::to_string(MLCAPSULE_API_VERSION));
    mlc_options c_options;
    mlc_options_init(&c_options);
    c_options.state_dir = options.state_dir.c_str();
    c_options.threads = options.threads;
    c_options.core_binary = options.core_binary.c_str();
    mlc_client* handle = nullptr;
    detail::Check(mlc_client_open(capsule_path.c_str(), &c_options, &handle));
    return Client(handle);
  }

  Client(Client&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Client& operator=(Client&& other) noexcept {
    if (this != &other) {
      (void)mlc_client_close(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() { (void)mlc_client_close(handle_); }

  // Seals the state and stops the core; throws when the final seal failed. The client is closed
  // either way; calling other methods afterwards throws.
  void Close() { detail::Check(mlc_client_close(std::exchange(handle_, nullptr))); }

  State state() const {
    mlc_state state = MLC_STATE_NEEDS_LEASE;
    detail::Check(mlc_client_state(handle_, &state));
    return static_cast<State>(state);
  }
  Quota quota() const {
    Quota quota{};
    detail::Check(mlc_client_quota(handle_, &quota));
    return quota;
  }
  std::string capsule_id() const { return String(&mlc_client_capsule_id); }
  std::string model_name() const { return String(&mlc_client_model_name); }
  std::string license_id() const { return String(&mlc_client_license_id); }
  std::string policy_json() const { return String(&mlc_client_policy_json); }
  std::string backend() const { return String(&mlc_client_backend); }

  std::vector<TensorInfo> inputs() const {
    return Infos(&mlc_client_input_count, &mlc_client_input_info);
  }
  std::vector<TensorInfo> outputs() const {
    return Infos(&mlc_client_output_count, &mlc_client_output_info);
  }

  std::vector<uint8_t> EvidenceRequest(std::span<const uint8_t, MLC_NONCE_BYTES> nonce,
                                       bool attach_report = false) {
    mlc_buffer buffer{};
    detail::Check(
        mlc_client_evidence_request(handle_, nonce.data(), attach_report ? 1 : 0, &buffer));
    return TakeBuffer(&buffer);
  }
  void InstallLease(std::span<const uint8_t> lease) {
    detail::Check(mlc_client_install_lease(handle_, lease.data(), lease.size()));
  }

  // Inputs in the order of inputs(); returns what the capsule's output policy allows.
  std::vector<Tensor> Infer(std::span<const Tensor> inputs) {
    std::vector<mlc_tensor> c_inputs;
    c_inputs.reserve(inputs.size());
    for (const Tensor& t : inputs) c_inputs.push_back(t.c_tensor());
    mlc_tensor* c_outputs = nullptr;
    size_t count = 0;
    detail::Check(mlc_client_infer(handle_, c_inputs.data(), c_inputs.size(), &c_outputs, &count));
    std::unique_ptr<mlc_tensor, void (*)(mlc_tensor*)> owned(c_outputs, &mlc_tensors_free);
    std::vector<Tensor> outputs;
    outputs.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const mlc_tensor& t = c_outputs[i];
      const auto* data = static_cast<const uint8_t*>(t.data);
      outputs.emplace_back(t.dtype, std::vector<int64_t>(t.dims, t.dims + t.rank),
                           std::vector<uint8_t>(data, data + t.byte_size),
                           t.name != nullptr ? std::string(t.name) : std::string());
    }
    return outputs;
  }
  std::vector<Tensor> Infer(std::initializer_list<Tensor> inputs) {
    return Infer(std::span<const Tensor>(inputs.begin(), inputs.size()));
  }

  std::vector<uint8_t> UsageReport() {
    mlc_buffer buffer{};
    detail::Check(mlc_client_usage_report(handle_, &buffer));
    return TakeBuffer(&buffer);
  }

  // The C handle, for calls this SDK does not wrap. Owned by this Client.
  mlc_client* handle() const { return handle_; }

 private:
  explicit Client(mlc_client* handle) : handle_(handle) {}

  using StringGetter = mlc_status (*)(mlc_client*, const char**);
  std::string String(StringGetter getter) const {
    const char* text = nullptr;
    detail::Check(getter(handle_, &text));
    return text != nullptr ? std::string(text) : std::string();
  }

  using CountGetter = mlc_status (*)(mlc_client*, size_t*);
  using InfoGetter = mlc_status (*)(mlc_client*, size_t, mlc_tensor_info*);
  std::vector<TensorInfo> Infos(CountGetter count_getter, InfoGetter info_getter) const {
    size_t count = 0;
    detail::Check(count_getter(handle_, &count));
    std::vector<TensorInfo> infos(count);
    for (size_t i = 0; i < count; ++i) {
      mlc_tensor_info info{};
      detail::Check(info_getter(handle_, i, &info));
      infos[i].name = info.name != nullptr ? info.name : "";
      infos[i].dtype = info.dtype;
      infos[i].dims.assign(info.dims, info.dims + info.rank);
      infos[i].batch_mask = info.batch_mask;
    }
    return infos;
  }

  static std::vector<uint8_t> TakeBuffer(mlc_buffer* buffer) {
    std::vector<uint8_t> bytes;
    try {
      bytes.assign(buffer->data, buffer->data + buffer->size);
    } catch (...) {
      mlc_buffer_free(buffer);
      throw;
    }
    mlc_buffer_free(buffer);
    return bytes;
  }

  mlc_client* handle_ = nullptr;
};

}  // namespace mlcapsule::sdk
