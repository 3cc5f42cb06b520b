// The AMD SEV-SNP TEE's Platform (trusted/platform.h) for a core that runs inside an SNP
// confidential VM. In a CVM the whole guest is the TEE: the adversary is the host and the
// hypervisor, and the client has no login in the guest (docs/dev/tee-backends-plan.md §3.5).
//
//   evidence     "MLCSNPEV" report:blob vcek:blob (blob = length:u32 LE + bytes), the container
//                server::evidence::EncodeSnpEvidence writes and the Verifier reads. The report
//                comes from configfs-tsm (provider sev_guest; through the attester helper when
//                the core runs under seccomp), or from the legacy SNP_GET_REPORT ioctl when the
//                guest has no configfs-tsm. Every report is checked here before it leaves
//                (ValidateSnpReport: 1184 bytes, version 2, the configured VMPL, our report
//                data, VCEK-signed). The VCEK comes from the auxblob's certificate table, else
//                from `vcek_file` (a DER certificate fetched from AMD's KDS for this chip and
//                TCB, read once at Create); a VLEK table is refused.
//   sealing key  SNP_GET_DERIVED_KEY with the VCEK as root key and guest_field_select 0x9
//                (policy + measurement), asked once at Create (before seccomp); the platform
//                keeps keyed BLAKE2b-256(key = derived, "mlcapsule/v1/snp-seal") and forgets the
//                derived key. Only a guest with the same launch measurement and policy on the
//                same chip derives it again.
//   counter      STATE/core-counter (tee/common/file_counter.h), MAC'd with keyed BLAKE2b-256(key
//                = derived, "mlcapsule/v1/snp-counter"). The counter key depends on the
//                measurement too, so a core of another measurement (an upgrade) cannot open the
//                old counter: it starts over with a new state directory, which costs nothing more
//                than the sealed state it could not open anyway. Integrity-protected, not fresh
//                (at most one lease of unreported usage for a snapshot restore).
//   time         CLOCK_REALTIME of the guest, untrusted (the host controls the guest's clock).
//
// seal_key_file_fallback (weaker, for guests without /dev/sev-guest and for tests): the key is
// the random STATE/core-seal.key instead of the hardware-derived one. It is then only as secret
// as the CVM's encrypted disk, and not bound to the measurement: whoever boots a guest from that
// disk derives it. Used only when the device does not exist, never when it fails.
//
//   cvm::SnpPlatformOptions options;
//   options.state_dir = "/var/lib/mlcapsule/core";
//   options.reporter = std::move(attester);  // from cvm::SpawnAttester, before seccomp
//   MLC_ASSIGN_OR_RETURN(auto platform, cvm::SnpPlatform::Create(std::move(options)));
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tee/common/file_counter.h"
#include "tee/cvm/sev_guest.h"
#include "tee/cvm/tsm_report.h"
#include "trusted/platform.h"

namespace mlcapsule::tee::cvm {

inline constexpr std::string_view kSnpSealDomain = "mlcapsule/v1/snp-seal";
inline constexpr std::string_view kSnpCounterDomain = "mlcapsule/v1/snp-counter";
// The key file of seal_key_file_fallback and of TDX (tdx_platform.h).
inline constexpr std::string_view kCvmSealKeyFileName = "core-seal.key";
inline constexpr size_t kCvmSealKeyBytes = 32;

struct SnpPlatformOptions {
  TsmOptions tsm;
  std::string sev_guest_device = std::string(kDefaultSevGuestDevice);
  std::string vcek_file;  // optional: the VCEK (DER) for reports that come without certificates
  std::string state_dir;  // required: core-counter (and core-seal.key with the fallback)
  uint32_t vmpl = 0;      // the VMPL asked for and required in every report (privlevel)
  bool seal_key_file_fallback = false;
  // Where reports come from; null: MakeInProcessReporter with the fields above (not under
  // seccomp). A reporter from SpawnAttester must have been made with the same VMPL.
  std::unique_ptr<TsmReporter> reporter;
};

// The evidence container, byte for byte what server::evidence::EncodeSnpEvidence writes (the
// trusted side cannot link the server library; snp_platform_test holds the two equal).
std::vector<uint8_t> PackSnpEvidence(std::span<const uint8_t> report,
                                     std::span<const uint8_t> vcek_der);
// Validates a reporter's answer for `report_data` at `vmpl` and packs it: the report must pass
// ValidateSnpReport, and the VCEK is the auxblob table's (FindVcek) or else `vcek_file`.
// FailedPrecondition when there is neither.
Result<std::vector<uint8_t>> SnpEvidenceFromBlobs(const TsmBlobs& blobs,
                                                  const capsule::ReportData& report_data,
                                                  uint32_t vmpl,
                                                  std::span<const uint8_t> vcek_file);

class SnpPlatform final : public trusted::Platform {
 public:
  // Reads vcek_file, takes the sealing key (FailedPrecondition naming the device when
  // /dev/sev-guest is missing and the fallback is off), opens the counter. Must run before
  // seccomp. Asks for no report: the first Evidence call does.
  static Result<std::unique_ptr<SnpPlatform>> Create(SnpPlatformOptions options);
  ~SnpPlatform() override;

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kSnp; }
  Status Random(std::span<uint8_t> out) override;
  // Errors: the reporter's (Unavailable, IoError, Aborted, ...) or the validation's
  // (InvalidArgument, Unsupported, FailedPrecondition); the counter and the keys are untouched.
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  trusted::PlatformTime Now() override;

  // False when the sealing key came from seal_key_file_fallback.
  bool hardware_sealing_key() const { return hardware_sealing_key_; }

 private:
  SnpPlatform() = default;

  std::unique_ptr<TsmReporter> reporter_;
  uint32_t vmpl_ = 0;
  std::vector<uint8_t> vcek_file_;
  capsule::SecretBytes sealing_key_;
  std::unique_ptr<FileCounter> counter_;
  bool hardware_sealing_key_ = false;
};

}  // namespace mlcapsule::tee::cvm
