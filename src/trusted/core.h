// The guarded core: everything the trusted side does, reached only through Boundary::Call
// (boundary.h) and talking to the world only through Platform. Trusts nothing it is given: the
// capsule, lease and sealed state are verified before use, and every input is bounded.
//
// Lifecycle: Open (capsule [+ sealed state]) -> Evidence (fresh core keys on first use) ->
// InstallLease (unwrap the capsule key, decrypt the plan, build the session) -> Infer* ->
// UsageReport -> Close. A reopened core with sealed state that holds a valid lease is ready at
// once (offline restart).
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "engine/session.h"
#include "trusted/boundary.h"
#include "trusted/platform.h"

namespace mlcapsule::trusted {

class Defenses;

// The sealed state (docs/capsule-format.md, "Sealed core state"):
//   sealed_state := magic:"MLCSEAL1" version:u32(=1) capsule_id:u8[16] counter:u64
//                   aead:blob (XChaCha20-Poly1305 under the platform sealing key, AD = the bytes
//                   before it; plaintext = state)
//   state        := box_secret:u8[32] box_public:u8[32] signing_secret:u8[64]
//                   has_lease:u8 [lease:blob capsule_key:u8[32]]
//                   total_count:u64 head:u8[32] reserved_until:u64 report_sequence:u64
//                   last_time:i64
//                   history_count:u8 (<= 8) (count:u64 head:u8[32]){history_count}
//                   alert_count:u16 (<= 256) alert{alert_count}
//                   defense_state                      ; trusted/defenses.h
inline constexpr char kSealedMagic[8] = {'M', 'L', 'C', 'S', 'E', 'A', 'L', '1'};
inline constexpr uint32_t kSealedVersion = 2;
inline constexpr size_t kChainHistory = 8;

enum class CoreState : uint8_t { kNeedsLease = 1, kReady = 2 };

class Core {
 public:
  explicit Core(Platform* platform);
  ~Core();

  Status Open(std::span<const uint8_t> input, Reply* reply);
  Status Evidence(std::span<const uint8_t> input, Reply* reply);
  Status InstallLease(std::span<const uint8_t> input, Reply* reply);
  Status Infer(std::span<const uint8_t> input, Reply* reply);
  Status UsageReport(std::span<const uint8_t> input, Reply* reply);
  Status Close(Reply* reply);

 private:
  struct Identity {
    capsule::BoxKeyPair box;
    capsule::SigningKeyPair signing;
  };
  struct ChainPoint {
    uint64_t count = 0;
    capsule::Digest head{};
  };

  Status RequireOpen(const char* call) const;
  // Open's work after parsing, done while the capsule signature is verified on another thread.
  Status OpenVerifiedLater(capsule::CapsuleView view, std::span<const uint8_t> sealed,
                           std::span<const uint8_t> journal);
  Status RestoreSealed(std::span<const uint8_t> sealed, std::span<const uint8_t> journal);
  // Records an alert for the next usage report (at most capsule::kMaxAlerts are held).
  void RaiseAlert(capsule::Alert alert);
  Status Seal(Reply* reply);
  Status ActivateLease(capsule::Lease lease, capsule::SecretBytes capsule_key);
  // Drops the capsule's ciphertext once the plan is loaded (not before the signature check).
  void ReleaseCiphertextIfLoaded();
  Status CheckLeaseTime(int64_t now) const;
  int64_t Now();
  std::vector<uint8_t> MakeUsageReport();
  std::vector<uint8_t> CoreInfo() const;
  void WipeAll();

  Platform* platform_;
  int threads_ = 1;
  // From the capsule (public).
  std::vector<uint8_t> capsule_bytes_;  // kept until the plan is decrypted
  std::optional<capsule::CapsuleView> capsule_;
  capsule::Policy policy_;
  std::vector<capsule::IoTensor> client_outputs_;
  int policy_output_index_ = 0;
  // Sealed state.
  std::optional<Identity> identity_;
  std::optional<capsule::Lease> lease_;
  std::vector<uint8_t> lease_bytes_;
  capsule::SecretBytes capsule_key_;
  uint64_t total_count_ = 0;
  capsule::Digest head_{};
  uint64_t report_sequence_ = 0;
  int64_t last_time_ = 0;
  std::vector<ChainPoint> history_;
  std::vector<capsule::Alert> alerts_;
  // Queries are charged ahead in blocks of policy seal_every: before answering past this count the
  // core seals a state that already counts the whole block, so a host that kills the core and
  // restarts from the last seal pays for the block instead of getting it free.
  uint64_t reserved_until_ = 0;
  bool dirty_ = false;                  // state changed since the last seal
  std::unique_ptr<Defenses> defenses_;  // from the policy, at open
  std::unique_ptr<engine::Session> session_;
  std::vector<engine::Tensor> model_outputs_, client_tensors_;  // reused across queries
};

}  // namespace mlcapsule::trusted
