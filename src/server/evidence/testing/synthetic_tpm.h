// A synthetic TPM for tests of the server's TPM verifier (server/evidence/tpm.h): an RSA EK CA
// (root and intermediate) issuing an RSA-2048 EK certificate with the tcg-kp-EKCertificate EKU,
// an ECC P-256 AK kept in OpenSSL with its marshalled TPMT_PUBLIC, and TPMS_ATTEST quotes with
// their ECDSA TPMT_SIGNATURE laid out as TPM2_Quote writes them (tee-backends-plan.md §4.2), with
// knobs that corrupt each field a check looks at. Nothing here is trusted by the server unless a
// caller passes Anchors() to the Verifier. The EK's private key is exposed so tests can run
// TPM2_ActivateCredential's math on MakeTpmCredential's output.
//
// Test code: it trusts its options and reads nothing else.
//
//   MLC_ASSIGN_OR_RETURN(auto tpm, testing::SyntheticTpm::Create({}));
//   testing::TpmQuoteSpec spec;
//   spec.measurement = core_measurement;
//   spec.report_data = capsule::ComputeReportData(nonce, capsule_id, box_key, signing_key);
//   MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> evidence, tpm->MakeEvidence(spec));
//   Verifier verifier(tpm->Anchors());
//   auto verdict = verifier.Verify(capsule::EvidenceType::kTpm, evidence, nullptr, now);
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"
#include "capsule/tpm_evidence.h"
#include "server/evidence/evidence.h"
#include "server/evidence/tpm.h"

namespace mlcapsule::server::evidence::testing {

struct SyntheticTpmOptions {
  // Validity of every certificate (inclusive Unix seconds); spans the test time 1751328000.
  int64_t cert_not_before = 1672531200;  // 2023-01-01
  int64_t cert_not_after = 1988150400;   // 2033-01-01
  // The EK certificate's extended key usage: empty for none (allowed), else these dotted OIDs.
  std::vector<std::string> ek_eku = {"2.23.133.8.1"};
  // An RSA EK of this size (2048 is the only size the verifier accepts).
  int ek_rsa_bits = 2048;
  // Name of the CA in the certificates.
  std::string ca_name = "MLCapsule Synthetic TPM EK CA";
  // Instances with the same key_set share their keys (RSA key generation costs about half a
  // second each); give another key_set for an unrelated CA, EK and AK.
  int key_set = 0;
};

// One quote: what it attests, and knobs that make each check fail. Unset optionals take the
// values a real TPM would produce for `measurement` and `report_data`.
struct TpmQuoteSpec {
  capsule::Digest measurement{};
  capsule::ReportData report_data{};
  uint32_t magic = kTpmGeneratedValue;
  uint16_t attest_type = kTpmStAttestQuote;
  std::optional<std::vector<uint8_t>> extra_data;  // default TpmQualifyingData(report_data)
  // The marshalled TPML_PCR_SELECTION; default count 1, {0x000b, 3, 00 00 80}.
  std::optional<std::vector<uint8_t>> pcr_selection;
  std::optional<std::vector<uint8_t>> pcr_digest;  // default SHA-256(TpmPcr23(...))
  uint64_t clock = 123456789;
  uint32_t reset_count = 7;
  uint32_t restart_count = 2;
  uint64_t firmware_version = 0x2000000000000001;
  uint32_t ak_object_attributes = kTpmAkAttributes;  // marshalled into the AK's TPMT_PUBLIC
  uint16_t signature_alg = kTpmAlgEcdsa;
  bool flip_signature_bit = false;  // flips one bit of s after signing
  bool ship_intermediate = true;    // put the intermediate CA into ek_chain
};

class SyntheticTpm {
 public:
  static Result<std::unique_ptr<SyntheticTpm>> Create(const SyntheticTpmOptions& options);
  ~SyntheticTpm();
  SyntheticTpm(const SyntheticTpm&) = delete;
  SyntheticTpm& operator=(const SyntheticTpm&) = delete;

  // TrustAnchors::Pinned() with tpm_ek_roots = {this CA's root}.
  TrustAnchors Anchors() const;
  // The evidence parts (unencoded, for tests that change one) and the encoded evidence.
  Result<capsule::TpmEvidence> MakeEvidenceParts(const TpmQuoteSpec& spec) const;
  Result<std::vector<uint8_t>> MakeEvidence(const TpmQuoteSpec& spec) const;
  // The AK's TPMT_PUBLIC with the given objectAttributes (the same key every time).
  std::vector<uint8_t> AkPublic(uint32_t object_attributes = kTpmAkAttributes) const;
  // TpmObjectName(AkPublic()).
  std::vector<uint8_t> AkName() const;

  const std::vector<uint8_t>& root_der() const;
  const std::vector<uint8_t>& intermediate_der() const;
  const std::vector<uint8_t>& ek_cert_der() const;
  // The EK's private key (owned by this object), for ActivateCredential's math in tests.
  EVP_PKEY* ek_private_key() const;

 private:
  struct Impl;
  explicit SyntheticTpm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlcapsule::server::evidence::testing
