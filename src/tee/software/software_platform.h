// The software TEE's Platform (trusted/platform.h), created inside `mlcapsule-core` before
// seccomp: everything that needs a file is done in Create, and afterwards the platform only
// uses the counter file's descriptor, getrandom and the clock.
//
//   measurement  BLAKE2b-256 of the running executable (/proc/self/exe), computed once at start.
//                Shared libraries (oneDNN, libsodium, libc) are not measured.
//   sealing key  keyed BLAKE2b-256(key = STATE/core-seal.key, "mlcapsule/v1/software-seal" ||
//                measurement): a different binary derives a different key.
//   counter      STATE/core-counter (tee/common/file_counter.h), kept open and locked (flock) for
//                the life of the platform; an increment is pwrite + fdatasync.
//   evidence     "MLCSWEV1" measurement:u8[32] report_data:u8[64], unsigned.
//   time         CLOCK_REALTIME, reported as untrusted.
//
//   seal_key_file := key:u8[32]                       ; mode 0600, owned by the core's user
//   counter key   := keyed BLAKE2b-256(key = seal key file, "mlcapsule/v1/software-counter"),
//                    which does not depend on the measurement, so an upgraded core keeps (and
//                    cannot reset) the counter.
//
// What this is worth (docs/core-protocol.md): anyone who can read STATE/core-seal.key (the user
// who runs the core, and root) can derive the sealing key and forge evidence and counters. The
// software backend protects against other users and against casual inspection of the running
// core, not against its own user or the kernel; a provider policy must accept it by name.
//
//   MLC_ASSIGN_OR_RETURN(auto platform, SoftwarePlatform::Create("/var/lib/mlcapsule/core"));
//   MLC_ASSIGN_OR_RETURN(uint64_t counter, platform->IncrementCounter());
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "tee/common/file_counter.h"
#include "trusted/platform.h"

namespace mlcapsule::tee {

inline constexpr std::string_view kSoftwareEvidenceMagic = "MLCSWEV1";
inline constexpr size_t kSoftwareEvidenceBytes = 8 + 32 + 64;
inline constexpr std::string_view kSealKeyFileName = "core-seal.key";

class SoftwarePlatform final : public trusted::Platform {
 public:
  // Creates `state_dir` (mode 0700) if it is missing, the key and counter files if they are
  // missing, and refuses a key file that others can read, a corrupt counter file, or a state
  // directory another core is using. Must run before EnterSeccomp (it opens files).
  static Result<std::unique_ptr<SoftwarePlatform>> Create(const std::string& state_dir);
  // As Create, with a given measurement instead of /proc/self/exe's (tests: "another binary").
  static Result<std::unique_ptr<SoftwarePlatform>> CreateWithMeasurement(
      const std::string& state_dir, const capsule::Digest& measurement);
  ~SoftwarePlatform() override;

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kSoftware; }
  Status Random(std::span<uint8_t> out) override;
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  trusted::PlatformTime Now() override;

  const capsule::Digest& measurement() const { return measurement_; }

 private:
  SoftwarePlatform() = default;

  capsule::Digest measurement_{};
  capsule::SecretBytes sealing_key_;
  std::unique_ptr<FileCounter> counter_;
};

}  // namespace mlcapsule::tee
