// The TPM 2.0 backend's evidence (docs/tee-backends.md, docs/capsule-format.md): what
// `mlcapsule-core --platform tpm` sends and the license server verifies
// (server/evidence/tpm.h). Pure byte format, no TPM and no OpenSSL here, so both sides share it.
//
//   tpm_evidence := magic:"MLCTPMEV" version:u32(=1)
//                   report_data:u8[64]            ; ComputeReportData(nonce, capsule, keys)
//                   measurement:u8[32]            ; BLAKE2b-256 of the trusted core binary
//                   ek_cert:blob (<= 4 KiB)       ; DER, the TPM's endorsement key certificate
//                   ek_chain_count:u8 (<= 4) ek_chain:blob{ek_chain_count} (<= 4 KiB each, DER)
//                                                 ; intermediates the TPM or its vendor shipped
//                   ak_public:blob (<= 1 KiB)     ; the AK's TPMT_PUBLIC, marshalled (no size)
//                   attest:blob (<= 1 KiB)        ; TPMS_ATTEST from TPM2_Quote, marshalled
//                   signature:blob (<= 512)       ; TPMT_SIGNATURE from TPM2_Quote, marshalled
//   blob := length:u32 bytes ; integers little-endian (the TPM structures inside are big-endian)
//
// The quote covers PCR 23 of the SHA-256 bank after: reset; extend(measurement);
// extend(SHA-256(kTpmReportDataDomain || report_data)). Its qualifyingData (extraData) is
// SHA-256(kTpmQuoteDomain || report_data). TpmPcr23 replays that.
//
//   std::vector<uint8_t> bytes = EncodeTpmEvidence(parts);
//   MLC_ASSIGN_OR_RETURN(TpmEvidence parsed, ParseTpmEvidence(bytes));
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"

namespace mlcapsule::capsule {

inline constexpr std::string_view kTpmEvidenceMagic = "MLCTPMEV";
inline constexpr uint32_t kTpmEvidenceVersion = 1;
inline constexpr uint64_t kMaxTpmCertBytes = 4 << 10;
inline constexpr size_t kMaxTpmChainCerts = 4;
inline constexpr uint64_t kMaxTpmPublicBytes = 1 << 10;
inline constexpr uint64_t kMaxTpmAttestBytes = 1 << 10;
inline constexpr uint64_t kMaxTpmSignatureBytes = 512;
inline constexpr uint32_t kTpmPcrIndex = 23;
inline constexpr std::string_view kTpmReportDataDomain = "mlcapsule/v1/tpm-rd";
inline constexpr std::string_view kTpmQuoteDomain = "mlcapsule/v1/tpm-quote";

struct TpmEvidence {
  ReportData report_data{};
  Digest measurement{};
  std::vector<uint8_t> ek_cert;
  std::vector<std::vector<uint8_t>> ek_chain;
  std::vector<uint8_t> ak_public;
  std::vector<uint8_t> attest;
  std::vector<uint8_t> signature;
};

std::vector<uint8_t> EncodeTpmEvidence(const TpmEvidence& evidence);
// Structure and limits only (InvalidArgument naming the field); nothing is verified.
Result<TpmEvidence> ParseTpmEvidence(std::span<const uint8_t> bytes);

// SHA-256(kTpmReportDataDomain || report_data): the second PCR 23 extend.
std::array<uint8_t, 32> TpmReportDataEvent(const ReportData& report_data);
// SHA-256(kTpmQuoteDomain || report_data): the quote's qualifyingData.
std::array<uint8_t, 32> TpmQualifyingData(const ReportData& report_data);
// PCR 23 after reset (32 zero bytes), extend(measurement), extend(TpmReportDataEvent).
std::array<uint8_t, 32> TpmPcr23(const Digest& measurement, const ReportData& report_data);

}  // namespace mlcapsule::capsule
