// A synthetic Intel SGX PKI and quote generator, for tests and the load generator only. It makes
// a root CA, a PCK Processor CA, a PCK leaf with the Intel SGX extension, a TCB Signing
// certificate, both CRLs, signed tcbInfo v3 / QE identity v2 collateral in dcap-qvl's JSON format
// (docs/dev/attestation-plan.md §1, §5) and SGX quotes v3 laid out exactly as §3.1, so that the
// full server path (evidence bound to a fresh nonce, revocation, TCB statuses) can be exercised
// without SGX hardware. Nothing here is trusted by the server unless a caller explicitly passes
// Anchors() to the Verifier; the pinned Intel root never signs anything made here.
//
// It trusts its options, which are the test's own choice, and reads nothing else. Keys are made
// once per instance (EC P-256); a quote costs one ECDSA signature (the QE part is signed once,
// because the attestation key and QE auth data do not change), so ~10^4 quotes take well under a
// second.
//
//   MLC_ASSIGN_OR_RETURN(auto pki, testing::SyntheticIntelPki::Create({}));
//   testing::SgxEnclaveSpec enclave;
//   enclave.report_data = capsule::ComputeReportData(nonce, capsule_id, box_key, signing_key);
//   MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> quote, pki->MakeSgxQuote(enclave));
//   MLC_ASSIGN_OR_RETURN(auto collateral, ParseIntelCollateral(pki->CollateralJson()));
//   Verifier verifier(pki->Anchors());
//   auto verdict = verifier.Verify(capsule::EvidenceType::kSgx, quote, &collateral, now);
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"
#include "server/evidence/evidence.h"

namespace mlcapsule::server::evidence::testing {

// One tcbInfo level (attestation-plan.md §5.4). Levels are listed highest first.
struct SyntheticTcbLevel {
  std::array<uint8_t, 16> sgx_components{};
  uint16_t pce_svn = 0;
  std::string tcb_date = "2024-03-13T00:00:00Z";
  std::string status = "UpToDate";  // written as given, so unknown strings can be tested too
  std::vector<std::string> advisory_ids;
};

// One QE identity level (§5.5).
struct SyntheticQeLevel {
  uint16_t isv_svn = 0;
  std::string tcb_date = "2024-03-13T00:00:00Z";
  std::string status = "UpToDate";
  std::vector<std::string> advisory_ids;
};

// Serials of the CA-issued certificates (the PCK leaf's is an option).
inline constexpr uint64_t kSyntheticRootSerial = 1;
inline constexpr uint64_t kSyntheticProcessorCaSerial = 2;
inline constexpr uint64_t kSyntheticTcbSigningSerial = 3;

struct SyntheticIntelOptions {
  // Validity of every certificate (inclusive Unix seconds). Defaults span the test time
  // 1751328000 (2025-07-01) by years.
  int64_t cert_not_before = 1672531200;  // 2023-01-01
  int64_t cert_not_after = 1988150400;   // 2033-01-01
  // thisUpdate / issueDate and nextUpdate of both CRLs and both JSON documents.
  int64_t collateral_issue_date = 1750291200;   // 2025-06-19
  int64_t collateral_next_update = 1752883200;  // 2025-07-19

  // PCK leaf: serial and the values of its SGX extension (§5.3).
  uint64_t pck_serial = 0x5C4A0001;
  std::array<uint8_t, 16> ppid{};
  std::array<uint8_t, 16> pck_components = {11, 11, 2, 2, 255, 1};
  uint16_t pck_pce_svn = 13;
  std::array<uint8_t, 16> pck_cpu_svn = {11, 11, 2, 2, 255, 1};
  std::array<uint8_t, 2> pce_id = {0, 0};
  std::array<uint8_t, 6> fmspc = {0x00, 0x90, 0x6e, 0xa1, 0x00, 0x00};
  uint8_t sgx_type = 0;  // 0 Standard, 1 Scalable

  // Serials on the PCK CRL; add pck_serial to revoke the leaf. root_revoked_serials go on the
  // root CRL (kSyntheticProcessorCaSerial, kSyntheticTcbSigningSerial revoke those two).
  std::vector<uint64_t> pck_revoked_serials;
  std::vector<uint64_t> root_revoked_serials;

  // tcbInfo levels; empty: one UpToDate level equal to the PCK's components and PCESVN.
  std::vector<SyntheticTcbLevel> tcb_levels;
  // tcbInfo.fmspc / pceId; unset: the PCK's values.
  std::optional<std::array<uint8_t, 6>> tcb_info_fmspc;
  std::optional<std::array<uint8_t, 2>> tcb_info_pce_id;

  // The QE whose report every quote carries, and the QE identity that describes it.
  std::array<uint8_t, 32> qe_mr_signer = {0x8c, 0x4f, 0x57, 0x75};
  std::array<uint8_t, 32> qe_mr_enclave = {0x96, 0xb3, 0x47, 0xa6};
  uint16_t qe_isv_prod_id = 1;
  uint16_t qe_isv_svn = 10;
  std::vector<uint8_t> qe_auth_data = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                       11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                       22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  // QE identity levels; empty: one UpToDate level at isvsvn 8.
  std::vector<SyntheticQeLevel> qe_levels;

  // Negative tests: sign tcbInfo / the QE identity with an unrelated P-256 key instead of the
  // TCB Signing key (the chain in the collateral still names the TCB Signing certificate).
  bool tcb_info_signed_by_wrong_key = false;
  bool qe_identity_signed_by_wrong_key = false;
};

// The enclave whose report a quote carries (§3.1 report body).
struct SgxEnclaveSpec {
  std::array<uint8_t, 32> mr_enclave{};
  std::array<uint8_t, 32> mr_signer{};
  uint16_t isv_prod_id = 0;
  uint16_t isv_svn = 0;
  uint64_t attribute_flags = 0x05;  // INIT | MODE64BIT; add 0x02 for a debug enclave
  uint64_t xfrm = 0xe7;
  std::array<uint8_t, 16> cpu_svn = {11, 11, 2, 2, 255, 1};
  capsule::ReportData report_data{};
};

// Field offsets of the quotes made here (equal to the real layout, §3.1), for mutation tests.
inline constexpr size_t kSgxQuoteReportBodyOffset = 48;
inline constexpr size_t kSgxQuoteReportDataOffset = 48 + 320;
inline constexpr size_t kSgxQuoteSignedBytes = 432;

// Thread-safe after Create (MakeSgxQuote only reads the keys).
class SyntheticIntelPki {
 public:
  static Result<std::unique_ptr<SyntheticIntelPki>> Create(const SyntheticIntelOptions& options);
  ~SyntheticIntelPki();
  SyntheticIntelPki(const SyntheticIntelPki&) = delete;
  SyntheticIntelPki& operator=(const SyntheticIntelPki&) = delete;

  // TrustAnchors::Pinned() with intel_root_der replaced by this PKI's root.
  TrustAnchors Anchors() const;
  // dcap-qvl's collateral JSON (every member a string), matching the PCK leaf's FMSPC.
  std::string CollateralJson() const;
  // A quote v3 (att_key_type 2, cert data type 5 with the PEM chain leaf, intermediate, root and
  // a trailing NUL), signed by this PKI's attestation key.
  Result<std::vector<uint8_t>> MakeSgxQuote(const SgxEnclaveSpec& enclave) const;

  const std::vector<uint8_t>& root_der() const;
  const std::vector<uint8_t>& pck_leaf_der() const;
  const SyntheticIntelOptions& options() const;

 private:
  struct Impl;
  explicit SyntheticIntelPki(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlcapsule::server::evidence::testing
