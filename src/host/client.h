// The untrusted client runtime: starts the trusted core (software TEE process by default), feeds it
// the capsule and its sealed state, stores every sealed state it returns, and turns tensors into
// boundary calls. Everything it handles is either public (the capsule's ciphertext, the header,
// the answers the policy allows) or sealed for the TEE; it never sees a key or a weight.
//
//   host::ClientOptions options;
//   options.state_dir = "state/";
//   MLC_ASSIGN_OR_RETURN(auto client, host::Client::Open("model.capsule", options));
//   if (client->info().state != host::CoreStateKind::kReady) { ...licensing... }
//   std::vector<engine::Tensor> outputs;
//   MLC_RETURN_IF_ERROR(client->Infer({image.View()}, &outputs));
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/messages.h"
#include "engine/tensor.h"
#include "host/core_channel.h"

namespace mlcapsule::host {

enum class CoreStateKind : uint8_t { kNeedsLease = 1, kReady = 2 };

// What the core says about itself (boundary.h, core_info).
struct CoreInfo {
  CoreStateKind state = CoreStateKind::kNeedsLease;
  capsule::CapsuleId capsule_id{};
  std::string license_id;
  uint64_t queries_used = 0;  // of the current lease
  uint64_t query_quota = 0;
  int64_t expires_at = 0;
  uint64_t total_queries = 0;
  std::string policy_json;
  std::vector<capsule::IoTensor> inputs;
  std::vector<capsule::IoTensor> outputs;  // what the output policy returns
};
Result<CoreInfo> ParseCoreInfo(std::span<const uint8_t> bytes);

enum class Backend {
  kSoftware,              // the separate, confined mlcapsule-core process (the default)
  kInProcessInsecureTest  // tests only: the core inside this process; protects nothing
};

struct ClientOptions {
  std::string state_dir;  // required: one directory per capsule (sealed state, TEE files)
  int threads = 1;
  Backend backend = Backend::kSoftware;
  std::string core_binary;  // "" = mlcapsule-core beside the running executable
  // The core's TEE backend (ProcessChannelOptions): e.g. {"--platform", "tpm", "--tpm", SPEC}.
  std::vector<std::string> platform_args;
  std::vector<std::string> launcher;  // e.g. {"gramine-sgx", "mlcapsule-core"}
};

class Client {
 public:
  static Result<std::unique_ptr<Client>> Open(const std::string& capsule_path,
                                              const ClientOptions& options);
  // With an already started channel (tests, the in-process backend).
  static Result<std::unique_ptr<Client>> OpenWithChannel(std::span<const uint8_t> capsule_bytes,
                                                         const ClientOptions& options,
                                                         std::unique_ptr<CoreChannel> channel);
  ~Client();

  const CoreInfo& info() const { return info_; }
  const capsule::CapsuleHeader& header() const { return header_; }
  std::string DescribeBackend() const { return channel_ ? channel_->Describe() : "closed"; }

  // The request the provider (or license server) answers with a lease. With attach_report the
  // latest signed usage report travels with it (renewals).
  Result<std::vector<uint8_t>> MakeEvidenceRequest(const capsule::Nonce& nonce, bool attach_report);
  Status InstallLease(std::span<const uint8_t> lease);
  Status Infer(std::span<const engine::TensorView> inputs, std::vector<engine::Tensor>* outputs);
  Status Infer(const std::vector<engine::TensorView>& inputs,
               std::vector<engine::Tensor>* outputs) {
    return Infer(std::span<const engine::TensorView>(inputs), outputs);
  }
  Result<std::vector<uint8_t>> UsageReport();
  // Seals and stops the core (also done by the destructor).
  Status Close();

 private:
  Client() = default;
  // `message` holds the kOpen payload up to and including the capsule (boundary.h).
  static Result<std::unique_ptr<Client>> OpenMessage(std::string message,
                                                     const ClientOptions& options,
                                                     std::unique_ptr<CoreChannel> channel);
  // Calls the core and stores any sealed state it returns (also when the call failed: the core's
  // counter has moved on).
  Status CallCore(trusted::Call call, std::span<const uint8_t> input, trusted::Reply* reply);
  Status CallCoreGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                        trusted::Reply* reply);
  Status StoreSealed(const std::vector<uint8_t>& sealed);

  ClientOptions options_;
  capsule::CapsuleHeader header_;
  std::unique_ptr<CoreChannel> channel_;
  CoreInfo info_;
  int lock_fd_ = -1;
  bool closed_ = false;
  std::string encode_buffer_;
  std::vector<std::span<const uint8_t>> encode_pieces_;
};

// File names inside the state directory.
inline constexpr const char* kSealedStateFile = "sealed-state.bin";
inline constexpr const char* kJournalFile = "journal.bin";  // PRADA's sealed records
inline constexpr const char* kCapsuleIdFile = "capsule-id";
inline constexpr const char* kLockFile = "lock";

}  // namespace mlcapsule::host
