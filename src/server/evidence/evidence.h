// TEE evidence verifiers used by the license server and by `mlcapsule evidence verify`
// (docs/dev/attestation-plan.md is the specification: layouts, check order, pitfalls). The
// evidence, certificates and collateral are untrusted input; the only trust anchors are the
// pinned roots (Intel SGX Root CA, AMD ARK/ASK Milan), compiled in, which a caller may replace
// only explicitly (TrustAnchors, for a test PKI), and the TPM EK CA roots the server is configured
// with (none compiled in). Verification time is an input, never read from the clock here.
//
// Two steps, kept apart so each negative test fails at one predictable place:
//   1. Verify*: signatures, chains, CRLs, collateral windows, TCB level -> a Verdict (what the
//      evidence proves), or an error whose message starts with the failed check's name
//      ("quote_signature: ...", "collateral_expired: ...").
//   2. CheckPolicy: what the provider accepts (debug, measurements, signer, SVNs, TCB statuses,
//      the report data binding) -> Ok or PermissionDenied("policy: ...").
//
//   evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
//   MLC_ASSIGN_OR_RETURN(auto collateral, evidence::ParseIntelCollateral(json_text));
//   MLC_ASSIGN_OR_RETURN(evidence::Verdict v,
//                        verifier.Verify(capsule::EvidenceType::kSgx, quote, &collateral, now));
//   MLC_RETURN_IF_ERROR(evidence::CheckPolicy(v, evidence::PolicyFor(capsule_policy, "sgx"),
//                                             &expected_report_data));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"
#include "capsule/policy.h"

namespace mlcapsule::server::evidence {

// Intel collateral in dcap-qvl's JSON format (attestation-plan.md §1): every member a string.
struct IntelCollateral {
  std::string pck_crl_issuer_chain;         // PEM
  std::vector<uint8_t> root_ca_crl;         // DER
  std::vector<uint8_t> pck_crl;             // DER
  std::string tcb_info_issuer_chain;        // PEM
  std::string tcb_info;                     // the exact signed JSON text
  std::vector<uint8_t> tcb_info_signature;  // raw r||s (64 bytes)
  std::string qe_identity_issuer_chain;
  std::string qe_identity;
  std::vector<uint8_t> qe_identity_signature;
};
// Errors start with "collateral_invalid:"; the signatures are checked by the Verifier.
Result<IntelCollateral> ParseIntelCollateral(std::string_view json_text);
// For picking the collateral that fits a quote (nothing is verified here): the FMSPC of the PCK
// certificate inside an SGX v3 / TDX v4 quote, and a collateral's FMSPC and TEE ("SGX" / "TDX"),
// all upper-case as Intel writes them ("" when the collateral does not say).
Result<std::string> QuoteFmspc(std::span<const uint8_t> quote);
std::string CollateralFmspc(const IntelCollateral& collateral);
std::string CollateralTeeId(const IntelCollateral& collateral);

struct TrustAnchors {
  std::vector<uint8_t> intel_root_der;  // Intel SGX Root CA
  std::vector<uint8_t> amd_ark_der;     // ARK-Milan
  std::vector<uint8_t> amd_ask_der;     // ASK (SEV-Milan)
  // TPM EK CA roots (DER), from the server's configuration (--tpm-ek-ca). None are pinned: TPM
  // vendors each run their own CA, and which of them to trust is the provider's decision.
  std::vector<std::vector<uint8_t>> tpm_ek_roots;
  static TrustAnchors Pinned();  // the vendors' roots, compiled in (no TPM EK roots)
};

// What verified evidence proves. Fields a type does not have stay empty / zero.
struct Verdict {
  capsule::EvidenceType type = capsule::EvidenceType::kSoftware;
  std::vector<uint8_t> measurement;  // MRENCLAVE (32), MRTD (48), SNP MEASUREMENT (48),
                                     // software core measurement (32)
  capsule::ReportData report_data{};
  bool debug = false;
  // Intel
  std::vector<uint8_t> mr_signer;  // SGX MRSIGNER (32); TDX MRSIGNERSEAM (48)
  uint16_t isv_prod_id = 0;
  uint16_t isv_svn = 0;
  uint64_t attributes = 0;                  // SGX attributes.flags; TDX TD_ATTRIBUTES
  std::vector<std::vector<uint8_t>> rtmrs;  // TDX RTMR0..3 (48 each)
  std::vector<uint8_t> mr_seam;             // TDX (48 each)
  std::vector<uint8_t> mr_config_id;
  std::vector<uint8_t> mr_owner;
  std::vector<uint8_t> mr_owner_config;
  std::string tcb_status;  // converged platform + QE (+ TDX module) status
  std::vector<std::string> advisory_ids;
  std::string fmspc;     // upper-case hex
  std::string tcb_date;  // of the matched TCB level
  std::string qe_tcb_status;
  std::string tdx_module_status;  // TDX
  // SEV-SNP
  uint32_t vmpl = 0;
  uint64_t guest_policy = 0;
  uint64_t reported_tcb = 0;
  std::vector<uint8_t> chip_id;  // 64 bytes
  // TPM (server/evidence/tpm.h)
  std::string ek_fingerprint;            // SHA-256 of the EK certificate's DER, lowercase hex
  std::vector<uint8_t> ak_name;          // 0x000b || SHA-256(AK TPMT_PUBLIC), 34 bytes
  uint32_t reset_count = 0;              // clockInfo, obfuscated by the TPM for the AK
  uint32_t restart_count = 0;            // clockInfo, obfuscated by the TPM for the AK
  uint64_t firmware_version = 0;         // obfuscated by the TPM for the AK
  std::vector<uint8_t> tpm_ek_cert_der;  // for MakeTpmCredential (not in ToJson)
  // A one-line human summary ("sgx, mrenclave 33d8..., tcb ConfigurationAndSWHardeningNeeded").
  std::string Summary() const;
  // JSON object text: every field above, hex for bytes, plus "accepted" added by the caller.
  std::string ToJson() const;
};

// The SNP evidence blob inside an evidence request: the report and the VCEK that signed it.
//   snp_evidence := magic:"MLCSNPEV" report:blob (1184 bytes) vcek_der:blob (<= 16 KiB)
std::vector<uint8_t> EncodeSnpEvidence(std::span<const uint8_t> report,
                                       std::span<const uint8_t> vcek_der);

// Thread-safe; caches what does not depend on the time (verified collateral keyed by its digest
// together with its validity window, the PCK CAs verified against it, parsed certificates and
// trust anchors) so that the per-quote work is the quote's own signatures, the PCK leaf chain and
// the TCB lookup. Every time window is checked against `now` on every call.
class Verifier {
 public:
  explicit Verifier(TrustAnchors anchors);
  ~Verifier();
  // sgx / tdx: `evidence` is the quote, `collateral` required. snp: an EncodeSnpEvidence blob
  // (or, from the CLI, see VerifySnpParts). tpm: a capsule::EncodeTpmEvidence blob checked
  // against the anchors' tpm_ek_roots (server/evidence/tpm.h). software: ParseSoftwareEvidence's
  // format; it proves nothing by itself (CheckPolicy refuses it unless the policy names
  // "software").
  Result<Verdict> Verify(capsule::EvidenceType type, std::span<const uint8_t> evidence,
                         const IntelCollateral* collateral, int64_t now) const;
  Result<Verdict> VerifySnpParts(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                                 int64_t now) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The provider's acceptance rules for one evidence type.
struct EvidencePolicy {
  bool type_accepted = false;             // the capsule policy's tee.accept names the type
  std::vector<std::string> measurements;  // lowercase hex; empty = any
  bool allow_debug = false;
  std::vector<std::string> mr_signers;  // SGX MRSIGNER allow-list (lowercase hex); empty = any
  std::optional<uint16_t> isv_prod_id;  // SGX
  uint16_t min_isv_svn = 0;             // SGX
  // Intel TCB statuses that are acceptable (attestation-plan.md §11 default: UpToDate,
  // SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded).
  std::vector<std::string> tcb_statuses;
  uint32_t max_vmpl = 0;  // SNP
};
// The rules a capsule policy states for `type` ("sgx", ...).
EvidencePolicy PolicyFor(const capsule::Policy& policy, capsule::EvidenceType type);

// `expected_report_data`: the binding to the server nonce and the core keys (null: not checked,
// e.g. `evidence verify` without --report-data).
Status CheckPolicy(const Verdict& verdict, const EvidencePolicy& policy,
                   const capsule::ReportData* expected_report_data);

}  // namespace mlcapsule::server::evidence
