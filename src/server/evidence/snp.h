// AMD SEV-SNP attestation report verifier (docs/dev/attestation-plan.md §6): the 1184-byte
// ATTESTATION_REPORT v2 signed by a VCEK, the VCEK chained to the AMD ASK and ARK (Milan) taken
// from the trust anchors, never from the evidence. The report and the VCEK are untrusted; the
// only trusted inputs are `anchors` and `now`. Checks run in the plan's order so each mutation
// fails at one place; error messages start with the check's name: parse_error,
// unsupported_format, root_mismatch, chain_invalid, vcek_mismatch, report_signature.
//
//   MLC_ASSIGN_OR_RETURN(Verdict verdict,
//                        VerifySnp(report, vcek_der, TrustAnchors::Pinned(), now));
//   MLC_RETURN_IF_ERROR(CheckPolicy(verdict, policy, &expected_report_data));
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "server/evidence/evidence.h"
#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence {

// ATTESTATION_REPORT layout (AMD SEV-SNP Firmware ABI, pub. 56860; plan §6.1). All integers are
// little-endian.
inline constexpr size_t kSnpReportBytes = 0x4A0;  // 1184
inline constexpr size_t kSnpSignedBytes = 0x2A0;  // the signature covers [0, 0x2A0)
inline constexpr size_t kSnpVersionOffset = 0x000;
inline constexpr size_t kSnpPolicyOffset = 0x008;
inline constexpr size_t kSnpVmplOffset = 0x030;
inline constexpr size_t kSnpSignatureAlgoOffset = 0x034;
inline constexpr size_t kSnpKeyInfoOffset = 0x048;
inline constexpr size_t kSnpReportDataOffset = 0x050;
inline constexpr size_t kSnpMeasurementOffset = 0x090;
inline constexpr size_t kSnpReportedTcbOffset = 0x180;
inline constexpr size_t kSnpChipIdOffset = 0x1A0;
inline constexpr size_t kSnpSignatureROffset = 0x2A0;  // 72 bytes, little-endian, zero-padded
inline constexpr size_t kSnpSignatureSOffset = 0x2E8;
inline constexpr uint64_t kSnpPolicyDebugBit = uint64_t{1} << 19;
inline constexpr uint64_t kSnpPolicyMigrateMaBit = uint64_t{1} << 18;

// Verifies `report` (exactly 1184 bytes) signed by the VCEK in `vcek_der` (DER, or one PEM
// certificate) against anchors.amd_ark_der / amd_ask_der at `now` (Unix seconds). The verdict
// carries measurement (48 bytes), report_data, debug (POLICY bit 19), vmpl, guest_policy,
// reported_tcb and chip_id; CheckPolicy decides whether that is acceptable.
Result<Verdict> VerifySnp(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                          const TrustAnchors& anchors, int64_t now);

// The same with the ARK and ASK parsed once: parsing the two RSA-4096 certificates costs about
// as much as the chain check itself, so a long-lived Verifier keeps them.
struct SnpRoots {
  X509Ptr ark;
  X509Ptr ask;
};
// Errors start with root_mismatch (the anchors are not usable DER certificates).
Result<SnpRoots> ParseSnpRoots(const TrustAnchors& anchors);
Result<Verdict> VerifySnp(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                          const SnpRoots& roots, int64_t now);

}  // namespace mlcapsule::server::evidence
