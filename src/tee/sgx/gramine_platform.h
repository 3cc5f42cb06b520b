// The SGX TEE's Platform (trusted/platform.h) for a core that runs whole inside a Gramine enclave
// (`gramine-sgx mlcapsule-core`, manifest from `mlcapsule tee gramine-manifest`). It talks to
// the enclave through Gramine's /dev/attestation pseudo-files; outside Gramine (tests, the FIFO
// emulator) the same code reads a prepared directory of the same shape.
//
//   ATTEST/attestation_type      read: "dcap" (anything else is refused: the server verifies
//                                only DCAP quotes)
//   ATTEST/user_report_data      write: exactly the 64 bytes of report data, in one write(2)
//   ATTEST/quote                 read to EOF: the SGX DCAP quote v3 whose report data is what was
//                                just written (made by the Quoting Enclave through the host's AESM)
//   ATTEST/keys/_sgx_mrenclave   read: 16 raw bytes, EGETKEY(SEAL_KEY, KEYPOLICY_MRENCLAVE)
//
//   sealing key  keyed BLAKE2b-256(key = _sgx_mrenclave, "mlcapsule/v1/sgx-seal"): only this
//                enclave (same MRENCLAVE, same CPU, same CPUSVN/ISVSVN) derives it again; a TCB
//                recovery that raises the CPUSVN, or any rebuild, changes it (the sealed state is
//                then lost and the core asks for a new lease).
//   counter      STATE/core-counter (tee/common/file_counter.h), MAC'd with keyed BLAKE2b-256(key
//                = _sgx_mrenclave, "mlcapsule/v1/sgx-counter"). Integrity-protected, not fresh:
//                restoring an older copy together with the sealed state of the same moment costs
//                at most one lease of unreported usage (docs/licensing.md).
//   evidence     the quote as Gramine returns it. The platform refuses a quote that is not v3
//                with an ECDSA-256 attestation key, that is truncated, or whose report data is
//                not the 64 bytes it wrote (a stale or substituted quote); the license server
//                checks the signatures, the chain and the policy.
//   time         CLOCK_REALTIME, untrusted (Gramine forwards the host's clock).
//
// What it trusts: the enclave boundary. Under Gramine the core runs without seccomp,
// memfd_secret or prctl (Gramine implements none of them, docs/dev/tee-backends-plan.md §2.3):
// enclave memory is encrypted and the host cannot read or change it, so the boundary replaces the
// software backend's process confinement. That is also why the attestation files are opened anew
// by every Evidence call instead of once before a filter: /dev/attestation is served by Gramine
// inside the enclave, and no host system call is involved in opening it. Everything the files
// return is still checked as untrusted input (bounded reads, exact sizes), because outside Gramine
// they are ordinary files the host controls.
//
//   tee::GramineOptions options;
//   options.state_dir = "/state";
//   MLC_ASSIGN_OR_RETURN(auto platform, tee::GraminePlatform::Create(options));
//   MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> quote, platform->Evidence(report_data));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tee/common/file_counter.h"
#include "trusted/platform.h"

namespace mlcapsule::tee {

inline constexpr std::string_view kGramineAttestationDir = "/dev/attestation";
inline constexpr size_t kSgxHardwareKeyBytes = 16;  // sgx_key_128bit_t
// SGX quote v3 (docs/dev/attestation-plan.md §3.1): header (48) and report body (384), then the
// signature data length (u32) and the signature data.
inline constexpr size_t kSgxQuoteReportDataOffset = 48 + 320;
inline constexpr size_t kSgxQuoteSignedBytes = 432;
inline constexpr uint16_t kSgxQuoteVersion = 3;
inline constexpr uint16_t kSgxAttestationKeyEcdsa256 = 2;

struct GramineOptions {
  std::string attestation_dir = std::string(kGramineAttestationDir);
  std::string state_dir;  // required: where core-counter lives (/state in the manifest)
};

class GraminePlatform final : public trusted::Platform {
 public:
  // Refuses an attestation type other than "dcap" and a hardware key that is not 16 bytes
  // (FailedPrecondition, naming the value), then opens (creating if missing) the counter in
  // `state_dir`. Nothing in the state directory is touched before the attestation checks pass.
  static Result<std::unique_ptr<GraminePlatform>> Create(const GramineOptions& options);
  ~GraminePlatform() override;

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kSgx; }
  Status Random(std::span<uint8_t> out) override;
  // Writes `report_data` to user_report_data and reads the quote. Errors name the file and the
  // errno: Unavailable when a file cannot be opened, written (all 64 bytes) or read (Gramine or
  // the host's quoting service did not answer; the core may retry), InvalidArgument when the
  // quote is malformed, over capsule::kMaxEvidenceBytes or for other report data. The counter
  // is never touched.
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  trusted::PlatformTime Now() override;

 private:
  GraminePlatform() = default;

  std::string attestation_dir_;
  capsule::SecretBytes sealing_key_;
  std::unique_ptr<FileCounter> counter_;
};

// The checks Evidence applies to what `quote` returned (exposed for tests and fuzzing): version 3,
// attestation key type 2, at least the signed part and the signature data length, the signature
// data not cut short, and `report_data` at offset 368. `path` names the source in errors.
Status CheckSgxQuote(std::span<const uint8_t> quote, const capsule::ReportData& report_data,
                     std::string_view path);

}  // namespace mlcapsule::tee
