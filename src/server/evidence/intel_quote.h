// Private to the evidence library (and its tests): the Intel SGX DCAP quote v3 / TDX quote v4
// verifier's parsed structures and steps (docs/dev/attestation-plan.md §3-§5). The quote and the
// collateral are untrusted; the pinned Intel root is the only trust anchor. Each step is a
// function of its own so the unit tests can drive it with parsed structs (TCB levels, TDX module
// identity, CRL lookup) where a real Intel signature cannot be forged.
//
//   IntelVerifier intel(anchors);
//   MLC_ASSIGN_OR_RETURN(Verdict v, intel.Verify(capsule::EvidenceType::kSgx, quote, collateral,
//                                                now));
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/crypto.h"
#include "server/evidence/evidence.h"
#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence::intel {

// Intel's QE vendor ID (quote header offset 12).
inline constexpr std::array<uint8_t, 16> kIntelQeVendorId = {
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};
inline constexpr size_t kHeaderBytes = 48;
inline constexpr size_t kReportBodyBytes = 384;    // SGX report body (enclave and QE)
inline constexpr size_t kTdReportBodyBytes = 584;  // TD report 1.0
inline constexpr size_t kSgxSignedBytes = kHeaderBytes + kReportBodyBytes;    // 432
inline constexpr size_t kTdxSignedBytes = kHeaderBytes + kTdReportBodyBytes;  // 632
inline constexpr uint16_t kSgxQuoteVersion = 3;
inline constexpr uint16_t kTdxQuoteVersion = 4;
inline constexpr uint16_t kAttestationKeyEcdsaP256 = 2;
inline constexpr uint32_t kTeeTypeSgx = 0x00000000;
inline constexpr uint32_t kTeeTypeTdx = 0x00000081;
inline constexpr uint16_t kCertDataPckChain = 5;
inline constexpr uint16_t kCertDataQeReport = 6;

// Offsets inside a 384-byte SGX report body (§3.1).
inline constexpr size_t kReportCpuSvn = 0;
inline constexpr size_t kReportMiscSelect = 16;
inline constexpr size_t kReportAttributes = 48;
inline constexpr size_t kReportMrEnclave = 64;
inline constexpr size_t kReportMrSigner = 128;
inline constexpr size_t kReportIsvProdId = 256;
inline constexpr size_t kReportIsvSvn = 258;
inline constexpr size_t kReportData = 320;

// Offsets inside the 584-byte TD report body (§4.1).
inline constexpr size_t kTdTeeTcbSvn = 0;
inline constexpr size_t kTdMrSeam = 16;
inline constexpr size_t kTdMrSignerSeam = 64;
inline constexpr size_t kTdSeamAttributes = 112;
inline constexpr size_t kTdAttributes = 120;
inline constexpr size_t kTdXfam = 128;
inline constexpr size_t kTdMrTd = 136;
inline constexpr size_t kTdMrConfigId = 184;
inline constexpr size_t kTdMrOwner = 232;
inline constexpr size_t kTdMrOwnerConfig = 280;
inline constexpr size_t kTdRtmr0 = 328;
inline constexpr size_t kTdReportData = 520;

// A quote split into views of its own bytes (valid while the quote's buffer lives). Every length
// has been checked against the buffer; nothing has been verified.
struct ParsedQuote {
  capsule::EvidenceType type = capsule::EvidenceType::kSgx;
  std::span<const uint8_t> signed_bytes;         // header + report body: [0:432) or [0:632)
  std::span<const uint8_t> body;                 // enclave report (384) or TD report (584)
  std::span<const uint8_t> signature;            // r||s (64)
  std::span<const uint8_t> attestation_key;      // x||y (64)
  std::span<const uint8_t> qe_report;            // 384
  std::span<const uint8_t> qe_report_signature;  // r||s (64)
  std::span<const uint8_t> qe_auth_data;
  std::string_view pck_chain_pem;  // trailing NULs included
};
// `type` is kSgx or kTdx; errors are "parse_error: ..." or "unsupported_format: ...".
Result<ParsedQuote> ParseQuote(capsule::EvidenceType type, std::span<const uint8_t> quote);

// The TCB values of the PCK leaf's SGX extension (§5.3).
struct PckInfo {
  std::array<uint8_t, 16> components{};
  uint16_t pce_svn = 0;
  std::array<uint8_t, 16> cpu_svn{};
  std::array<uint8_t, 6> fmspc{};
  std::array<uint8_t, 2> pce_id{};
};
Result<PckInfo> ParsePckExtension(X509* pck_leaf);

// tcbInfo v3 and enclaveIdentity v2 (§5.4, §5.5), read after their signature was checked.
struct IsvLevel {
  uint16_t isv_svn = 0;
  std::string tcb_date;
  std::string status;
  std::vector<std::string> advisory_ids;
};
struct TcbLevel {
  std::array<uint8_t, 16> sgx_components{};
  uint16_t pce_svn = 0;
  bool has_tdx_components = false;
  std::array<uint8_t, 16> tdx_components{};
  std::string tcb_date;
  std::string status;
  std::vector<std::string> advisory_ids;
};
struct TdxModuleIdentity {
  std::string id;  // "TDX_01"; "" for tcbInfo.tdxModule
  std::array<uint8_t, 48> mr_signer{};
  std::array<uint8_t, 8> attributes{};
  std::array<uint8_t, 8> attributes_mask{};
  std::vector<IsvLevel> levels;
};
struct TcbInfo {
  std::string id;  // "SGX" or "TDX"
  int version = 0;
  int64_t issue_date = 0;
  int64_t next_update = 0;
  std::array<uint8_t, 6> fmspc{};
  std::array<uint8_t, 2> pce_id{};
  std::vector<TcbLevel> levels;
  std::optional<TdxModuleIdentity> tdx_module;
  std::vector<TdxModuleIdentity> tdx_module_identities;
};
struct QeIdentity {
  std::string id;  // "QE" or "TD_QE"
  int version = 0;
  int64_t issue_date = 0;
  int64_t next_update = 0;
  std::array<uint8_t, 4> miscselect{};
  std::array<uint8_t, 4> miscselect_mask{};
  std::array<uint8_t, 16> attributes{};
  std::array<uint8_t, 16> attributes_mask{};
  std::array<uint8_t, 32> mr_signer{};
  uint16_t isv_prod_id = 0;
  std::vector<IsvLevel> levels;
};
// Errors are "collateral_invalid: tcbInfo...".
Result<TcbInfo> ParseTcbInfo(std::string_view json_text);
Result<QeIdentity> ParseQeIdentity(std::string_view json_text);

// §5.5: miscselect, attributes, mrsigner, isvprodid of the QE report against the identity
// ("qe_identity_mismatch: ..."). The status comes from EvaluateTcb.
Status CheckQeIdentity(const QeIdentity& identity, std::span<const uint8_t> qe_report);

// §4.3 step 4b: the TDX module identity that describes this TD report's module (tdxModule when
// TEE_TCB_SVN[1] is 0), its MRSIGNERSEAM and SEAM_ATTRIBUTES checked
// ("tdx_module_mismatch: ...").
Result<const TdxModuleIdentity*> CheckTdxModule(const TcbInfo& tcb_info,
                                                std::span<const uint8_t> td_report);

struct TcbInputs {
  PckInfo pck;
  uint16_t qe_isv_svn = 0;
  // TDX only: TEE_TCB_SVN and the module identity CheckTdxModule found.
  std::optional<std::array<uint8_t, 16>> tee_tcb_svn;
  const TdxModuleIdentity* tdx_module = nullptr;
};
struct TcbOutcome {
  std::string status;  // converged; "NotSupported" when no level matches
  std::vector<std::string> advisory_ids;
  std::string tcb_date;  // of the matched platform level ("" when none)
  std::string platform_status;
  std::string qe_status;
  std::string tdx_module_status;  // TDX only
};
// §5.4-§5.6. Never fails: an unmatched level gives "NotSupported".
TcbOutcome EvaluateTcb(const TcbInfo& tcb_info, const QeIdentity& qe_identity,
                       const TcbInputs& inputs);

// Whether `crl` lists `serial` (big-endian magnitude bytes, as in the certificate).
bool CrlListsSerial(X509_CRL* crl, std::span<const uint8_t> serial);

// Upper-case hex.
std::string UpperHex(std::span<const uint8_t> bytes);

// The verifier with its caches (§3.2 order). Thread-safe.
class IntelVerifier {
 public:
  explicit IntelVerifier(const TrustAnchors& anchors);
  ~IntelVerifier();
  Result<Verdict> Verify(capsule::EvidenceType type, std::span<const uint8_t> quote,
                         const IntelCollateral& collateral, int64_t now) const;

 private:
  struct Root;
  struct CollateralEntry;
  struct IssuerEntry;
  struct CertificateEntry;
  Result<std::shared_ptr<const CollateralEntry>> Collateral(
      const IntelCollateral& collateral) const;
  Result<std::shared_ptr<const IssuerEntry>> Issuer(const CertificateEntry& ca,
                                                    const CollateralEntry& collateral) const;
  // A parsed certificate by its DER (parsing is what OpenSSL 3.0 is slow at, and a platform
  // sends the same PCK chain with every quote). Parsing is deterministic, so this is exact.
  Result<std::shared_ptr<const CertificateEntry>> Certificate(std::vector<uint8_t> der) const;

  std::unique_ptr<Root> root_;
  mutable std::shared_mutex mutex_;
  mutable std::map<capsule::Digest, std::shared_ptr<const CollateralEntry>> collateral_cache_;
  mutable std::map<capsule::Digest, std::shared_ptr<const IssuerEntry>> issuer_cache_;
  mutable std::map<capsule::Digest, std::shared_ptr<const CertificateEntry>> certificate_cache_;
};

}  // namespace mlcapsule::server::evidence::intel
