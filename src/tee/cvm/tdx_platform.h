// The Intel TDX TEE's Platform (trusted/platform.h) for a core that runs inside a TD (a TDX
// confidential VM). As for SNP, the whole guest is the TEE and the adversary is the host and the
// hypervisor (docs/dev/tee-backends-plan.md §3.5).
//
//   evidence     the TDX quote v4 from configfs-tsm (provider tdx_guest; through the attester
//                helper when the core runs under seccomp), as the host's quote service made it.
//                There is no fallback: /dev/tdx_guest's TDX_CMD_GET_REPORT0 gives only the MAC'd
//                TDREPORT, which needs that same quote service to become a quote. Every quote is
//                checked here before it leaves (ValidateTdxQuote: at most 16 KiB, version 4,
//                tee_type 0x81, REPORTDATA at 568 equal to ours); the license server checks the
//                signatures, the PCK chain and the collateral.
//   sealing key  keyed BLAKE2b-256(key = STATE/core-seal.key, "mlcapsule/v1/tdx-seal"). TDX has
//                no hardware sealing key (no EGETKEY for a TD; Intel's answer is a key broker
//                or an SGX sealing sidecar), so the key is a random file on the CVM's disk.
//                It is exactly as secret as that disk: the deployment guide requires the root
//                disk to be encrypted with a key released only to an attested TD, and names that
//                disk as the trust base. Whoever can boot a TD from the disk can derive the key.
//   counter      STATE/core-counter (tee/common/file_counter.h), MAC'd with keyed BLAKE2b-256(key
//                = the key file, "mlcapsule/v1/tdx-counter"); integrity-protected, not fresh.
//   time         CLOCK_REALTIME of the guest, untrusted.
//
//   cvm::TdxPlatformOptions options;
//   options.state_dir = "/var/lib/mlcapsule/core";
//   options.reporter = std::move(attester);  // from cvm::SpawnAttester, before seccomp
//   MLC_ASSIGN_OR_RETURN(auto platform, cvm::TdxPlatform::Create(std::move(options)));
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tee/common/file_counter.h"
#include "tee/cvm/tsm_report.h"
#include "trusted/platform.h"

namespace mlcapsule::tee::cvm {

// TDX quote v4 (docs/dev/attestation-plan.md §4): header (48) and TD report body (584); the
// body's REPORTDATA is at 520, so at 568 in the quote.
inline constexpr size_t kMaxTdxQuoteBytes = 16 << 10;
inline constexpr size_t kTdxQuoteSignedBytes = 48 + 584;  // 632
inline constexpr size_t kTdxQuoteReportDataOffset = 48 + 520;
inline constexpr uint16_t kTdxQuoteVersion = 4;
inline constexpr uint32_t kTdxTeeType = 0x81;
inline constexpr std::string_view kTdxSealDomain = "mlcapsule/v1/tdx-seal";
inline constexpr std::string_view kTdxCounterDomain = "mlcapsule/v1/tdx-counter";

// InvalidArgument naming the field: a quote shorter than its signed part plus the signature
// length, over kMaxTdxQuoteBytes, of another version or TEE type, or with other report data.
Status ValidateTdxQuote(std::span<const uint8_t> quote, const capsule::ReportData& report_data);

struct TdxPlatformOptions {
  TsmOptions tsm;
  std::string state_dir;  // required: core-seal.key and core-counter
  // Where quotes come from; null: MakeInProcessReporter (not under seccomp).
  std::unique_ptr<TsmReporter> reporter;
};

class TdxPlatform final : public trusted::Platform {
 public:
  // Loads (or creates) the key file and opens the counter. Must run before seccomp. Asks for no
  // quote: the first Evidence call does.
  static Result<std::unique_ptr<TdxPlatform>> Create(TdxPlatformOptions options);
  ~TdxPlatform() override;

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kTdx; }
  Status Random(std::span<uint8_t> out) override;
  // The validated quote (the outblob; a TDX auxblob is empty and ignored).
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  trusted::PlatformTime Now() override;

 private:
  TdxPlatform() = default;

  std::unique_ptr<TsmReporter> reporter_;
  capsule::SecretBytes sealing_key_;
  std::unique_ptr<FileCounter> counter_;
};

}  // namespace mlcapsule::tee::cvm
