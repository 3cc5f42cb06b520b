// TPM 2.0 evidence verifier and credential maker of the license server (docs/dev/
// tee-backends-plan.md §4.2-§4.4). The evidence (capsule/tpm_evidence.h) is untrusted: an EK
// certificate and its intermediates, the AK's TPMT_PUBLIC, a TPMS_ATTEST from TPM2_Quote over
// PCR 23 of the SHA-256 bank and its TPMT_SIGNATURE. The only trusted inputs are the EK CA roots
// the server was configured with (TrustAnchors::tpm_ek_roots; none are compiled in) and `now`.
// The server needs no TPM and does not link libtss2: the TPM structures are read by the small
// bounded big-endian parsers below (TPM 2.0 Library Part 2 layouts).
//
// Checks, in order; each error message starts with its check's name:
//   parse_error      the container, or a TPM structure that cannot be read (truncated, a TPM2B
//                    over its limit, trailing bytes)
//   ek_chain         the EK certificate chains to a configured root at `now` (the evidence's
//                    intermediates untrusted), has an RSA-2048 key, and its extended key usage
//                    (if present) names tcg-kp-EKCertificate 2.23.133.8.1
//   ak_attributes    the AK is ECC NIST P-256, nameAlg SHA-256, objectAttributes exactly
//                    fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign
//                    (0x00050072), ECDSA-SHA256, no symmetric or KDF scheme, 32-byte coordinates
//   attest_magic     TPM_GENERATED_VALUE 0xff544347
//   attest_type      TPM_ST_ATTEST_QUOTE 0x8018
//   extra_data       qualifyingData == capsule::TpmQualifyingData(report_data)
//   pcr_select       exactly {sha256: [23]}
//   pcr_digest       == SHA-256(capsule::TpmPcr23(measurement, report_data))
//   quote_signature  ECDSA-SHA256 over the TPMS_ATTEST bytes with the AK
// What this proves: a TPM whose EK the configured CA certified holds *an* AK that quoted PCR 23 =
// replay(measurement, report_data). That the AK lives in the same TPM as the EK is proved only
// when the core activates a credential made by MakeTpmCredential (delivered with the lease).
// resetCount, restartCount and firmwareVersion are obfuscated by the TPM for keys outside the
// endorsement hierarchy, so they are stable per AK but not the TPM's true values.
//
//   TpmRoots roots = ParseTpmRoots(anchors);  // once
//   MLC_ASSIGN_OR_RETURN(Verdict verdict, VerifyTpm(evidence, roots, now));
//   MLC_RETURN_IF_ERROR(CheckPolicy(verdict, PolicyFor(policy, capsule::EvidenceType::kTpm),
//                                   &expected_report_data));
//   MLC_ASSIGN_OR_RETURN(TpmCredential credential,
//                        MakeTpmCredential(verdict.tpm_ek_cert_der, verdict.ak_name, secret));
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "server/evidence/evidence.h"
#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence {

// TPM 2.0 constants used here (Part 2).
inline constexpr uint16_t kTpmAlgSha256 = 0x000B;
inline constexpr uint16_t kTpmAlgNull = 0x0010;
inline constexpr uint16_t kTpmAlgEcdsa = 0x0018;
inline constexpr uint16_t kTpmAlgEcc = 0x0023;
inline constexpr uint16_t kTpmEccNistP256 = 0x0003;
inline constexpr uint32_t kTpmGeneratedValue = 0xFF544347;
inline constexpr uint16_t kTpmStAttestQuote = 0x8018;
// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
inline constexpr uint32_t kTpmAkAttributes = 0x00050072;

// The parsed AK public area (TPMT_PUBLIC). `ecc` is false for a type other than ECC; then only
// the common fields are read (the rest is left to ak_attributes to refuse).
struct TpmPublicArea {
  uint16_t type = 0;
  uint16_t name_alg = 0;
  uint32_t object_attributes = 0;
  std::span<const uint8_t> auth_policy;
  bool ecc = false;
  uint16_t symmetric = 0;  // TPMT_SYM_DEF_OBJECT algorithm
  uint16_t scheme = 0;     // TPMT_ECC_SCHEME
  uint16_t scheme_hash = 0;
  uint16_t curve = 0;
  uint16_t kdf = 0;
  std::span<const uint8_t> x;
  std::span<const uint8_t> y;
};
// Errors start with parse_error. The spans point into `bytes`.
Result<TpmPublicArea> ParseTpmPublic(std::span<const uint8_t> bytes);

// The parsed TPMS_ATTEST. `quote` is false when the type is not TPM_ST_ATTEST_QUOTE: the body
// after firmwareVersion is then not read (attest_type refuses it).
struct TpmAttest {
  uint32_t magic = 0;
  uint16_t type = 0;
  std::span<const uint8_t> qualified_signer;
  std::span<const uint8_t> extra_data;
  uint64_t clock = 0;
  uint32_t reset_count = 0;
  uint32_t restart_count = 0;
  uint8_t safe = 0;
  uint64_t firmware_version = 0;
  bool quote = false;
  struct PcrSelection {
    uint16_t hash = 0;
    std::span<const uint8_t> select;
  };
  std::vector<PcrSelection> pcr_selections;
  std::span<const uint8_t> pcr_digest;
};
Result<TpmAttest> ParseTpmAttest(std::span<const uint8_t> bytes);

// The parsed TPMT_SIGNATURE; r and s are read only for ECDSA (`ecdsa` true).
struct TpmSignature {
  uint16_t sig_alg = 0;
  bool ecdsa = false;
  uint16_t hash = 0;
  std::span<const uint8_t> r;
  std::span<const uint8_t> s;
};
Result<TpmSignature> ParseTpmSignature(std::span<const uint8_t> bytes);

// The Name of an object whose nameAlg is SHA-256 (the only kind accepted here): 0x000B ||
// SHA-256(marshalled TPMT_PUBLIC), 34 bytes.
std::vector<uint8_t> TpmObjectName(std::span<const uint8_t> tpmt_public);

// The configured EK CA roots, parsed once into an X509 store (read-only afterwards, so one
// TpmRoots may serve concurrent VerifyTpm calls). `status` is not Ok when there is no root or
// one is not a DER certificate; VerifyTpm then fails at ek_chain with it.
struct TpmRoots {
  X509StorePtr store;
  size_t count = 0;
  Status status;
};
TpmRoots ParseTpmRoots(const TrustAnchors& anchors);

// Verifies one capsule::EncodeTpmEvidence blob (the checks above) at `now` (Unix seconds). The
// verdict carries measurement (32 bytes), report_data, debug false, ek_fingerprint, ak_name,
// reset_count, restart_count, firmware_version and tpm_ek_cert_der.
Result<Verdict> VerifyTpm(std::span<const uint8_t> evidence, const TpmRoots& roots, int64_t now);

// TPM2_MakeCredential in software (TPM 2.0 Library Part 1, "Credential Protection", and Annex B's
// RSA secret sharing), for the TCG default RSA-2048 EK (AES-128-CFB, nameAlg SHA-256):
//   seed             32 random bytes
//   encrypted_secret RSA-OAEP(SHA-256, label "IDENTITY\0") of the seed to the EK's public key
//   symKey           KDFa(SHA-256, seed, "STORAGE", ak_name, "", 128)
//   encIdentity      AES-128-CFB(symKey, IV 0, u16 BE size || secret)
//   hmacKey          KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)
//   outerHMAC        HMAC-SHA256(hmacKey, encIdentity || ak_name)
//   id_object        TPM2B(TPM2B(outerHMAC) || encIdentity)
// Only the TPM that holds the EK's private key, and holds an object named `ak_name`, gets
// `secret` back (TPM2_ActivateCredential). Both outputs carry their 2-byte TPM2B size prefix
// (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET), as trusted::Platform::ActivateCredential takes them.
// Cross-checked on swtpm 0.7.1: tpm2_activatecredential returned the secret, and refused a
// credential made for another name with TPM_RC_INTEGRITY (0x1DF).
struct TpmCredential {
  std::vector<uint8_t> id_object;
  std::vector<uint8_t> encrypted_secret;
};
inline constexpr size_t kMaxTpmCredentialSecretBytes = 32;
// `ek_cert_der`: the EK certificate (an RSA-2048 key; it is not verified here, VerifyTpm does
// that); `ak_name`: 1..66 bytes (TPM2B_NAME); `secret`: 1..32 bytes. InvalidArgument naming the
// input otherwise.
Result<TpmCredential> MakeTpmCredential(std::span<const uint8_t> ek_cert_der,
                                        std::span<const uint8_t> ak_name,
                                        std::span<const uint8_t> secret);

// KDFa with SHA-256 (Part 1 §11.4.10.2): HMAC-SHA256(key, i:u32 BE || label || 0x00 || context_u
// || context_v || bits:u32 BE) for i = 1, 2, ..., concatenated and cut to bits/8 bytes (bits a
// multiple of 8). Exposed for tests.
capsule::SecretBytes TpmKdfaSha256(std::span<const uint8_t> key, std::string_view label,
                                   std::span<const uint8_t> context_u,
                                   std::span<const uint8_t> context_v, uint32_t bits);

}  // namespace mlcapsule::server::evidence
