// OpenSSL 3.0 building blocks shared by the evidence verifiers (Intel SGX/TDX quotes, AMD SEV-SNP
// reports): RAII owners for OpenSSL objects, certificate/CRL parsing, raw ECDSA keys and
// signatures, chain verification against a pinned root, X.509 extension contents, a small
// bounds-checked DER reader and Intel's date format (docs/dev/attestation-plan.md §2).
// Everything handed in is untrusted; the only trusted input is the pinned root the caller gives
// VerifyChain. Every function leaves the OpenSSL error queue empty.
//
//   MLC_ASSIGN_OR_RETURN(auto certs, ParsePemCertificates(pem, "PCK chain"));
//   ChainCheck options{.now = now, .crls = {root_crl.get(), pck_crl.get()}};
//   MLC_RETURN_IF_ERROR(VerifyChain(certs[0].get(), intermediates, root.get(), options,
//                                   "chain_invalid"));
//   MLC_ASSIGN_OR_RETURN(auto key, P256KeyFromRaw(attestation_key));
//   MLC_ASSIGN_OR_RETURN(auto der, EcdsaSignatureToDer(rs.first(32), rs.last(32), false));
//   MLC_RETURN_IF_ERROR(VerifySignature(key.get(), EVP_sha256(), der, signed_bytes,
//                                       "quote_signature"));
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule::server::evidence {

// unique_ptr deleter calling an OpenSSL free function.
template <auto Free>
struct OpenSslFree {
  template <typename T>
  void operator()(T* object) const {
    Free(object);
  }
};
using X509Ptr = std::unique_ptr<X509, OpenSslFree<X509_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, OpenSslFree<X509_CRL_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpenSslFree<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree<X509_STORE_CTX_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree<BIO_free>>;

// Drains the thread's OpenSSL error queue into one line ("error:...; error:..."); "" when empty.
std::string OpenSslErrors();

// One DER certificate (the whole span, no trailing bytes). `what` names it in errors.
Result<X509Ptr> ParseDerCertificate(std::span<const uint8_t> der, std::string_view what);
// Every PEM certificate in `pem`, in order (trailing NULs stripped; text between blocks is
// skipped, as OpenSSL's PEM reader does; a malformed block is an error). Error when there is
// none.
Result<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, std::string_view what);
// The DER bytes of every "CERTIFICATE" block of `pem`, in order, without parsing them (OpenSSL
// 3.0 parses a certificate's key slowly, so a caller with a cache looks the DER up first).
// Trailing NULs are stripped; only whitespace may surround the blocks. At most 16 blocks.
Result<std::vector<std::vector<uint8_t>>> PemCertificateBlocks(std::string_view pem,
                                                               std::string_view what);
// A PEM or DER certificate (DER when the bytes start with a SEQUENCE tag).
Result<X509Ptr> ParseCertificate(std::span<const uint8_t> bytes, std::string_view what);
Result<X509CrlPtr> ParseDerCrl(std::span<const uint8_t> der, std::string_view what);
std::vector<uint8_t> CertificateDer(X509* cert);
// The subject's commonName ("" when it has none) and the one-line subject ("CN=..., O=...").
std::string CommonName(X509* cert);
std::string NameText(const X509_NAME* name);

// ASN1_TIME -> Unix seconds; "2025-07-19T10:01:18Z" <- Unix seconds.
Result<int64_t> Asn1TimeToUnix(const ASN1_TIME* time, std::string_view what);
std::string FormatUtc(int64_t unix_seconds);
// Intel's "YYYY-MM-DDThh:mm:ssZ" (exactly 20 characters, UTC) -> Unix seconds.
Result<int64_t> ParseIntelDate(std::string_view text);

struct ValidityWindow {
  int64_t not_before = 0;
  int64_t not_after = 0;
};
Result<ValidityWindow> CertificateValidity(X509* cert);
// thisUpdate .. nextUpdate (a CRL without nextUpdate is an error: it would never expire).
Result<ValidityWindow> CrlValidity(X509_CRL* crl);

// A P-256 public key from its raw 64-byte x||y (the point must be on the curve).
Result<EvpPkeyPtr> P256KeyFromRaw(std::span<const uint8_t> xy);
// An ECDSA signature in DER from its r and s (big-endian as Intel writes them, or little-endian
// as AMD does; leading/trailing zero padding allowed).
Result<std::vector<uint8_t>> EcdsaSignatureToDer(std::span<const uint8_t> r,
                                                 std::span<const uint8_t> s, bool little_endian);
// EVP_DigestVerify (the digest `md` is computed here over `message`). The error message starts
// with `check` ("quote_signature: signature does not verify").
[[nodiscard]] Status VerifySignature(EVP_PKEY* key, const EVP_MD* md,
                                     std::span<const uint8_t> der_signature,
                                     std::span<const uint8_t> message, std::string_view check);

struct ChainCheck {
  int64_t now = 0;
  // CRLs to check every certificate of the chain against (X509_V_FLAG_CRL_CHECK_ALL); empty: no
  // revocation check.
  std::vector<X509_CRL*> crls;
  // X509_V_FLAG_X509_STRICT (right for Intel; AMD's VCEK lacks an Authority Key Identifier).
  bool strict = true;
  // Checks every certificate's (and CRL's) validity at `now` (inclusive at both ends) before the
  // signatures. False: the caller checks times itself; OpenSSL's own time checks are off then, so
  // the result does not depend on `now` and may be cached.
  bool check_time = true;
  // The check name used for a revoked certificate ("" = the `check` given to VerifyChain).
  std::string_view revoked_check;
};
// Verifies leaf <- intermediates <- pinned_root. First compares the chain's root (the last of
// `intermediates` when it is self-issued, else none) byte for byte with `pinned_root`
// ("root_mismatch: ..."); then times; then X509_verify_cert with only the pinned root trusted.
// Errors start with `check` (or root_mismatch / options.revoked_check).
[[nodiscard]] Status VerifyChain(X509* leaf, std::span<X509* const> intermediates,
                                 X509* pinned_root, const ChainCheck& options,
                                 std::string_view check);

// The contents of the extension's OCTET STRING (`oid_text` dotted, "1.2.840.113741.1.13.1").
// NotFound when the certificate does not carry it.
Result<std::vector<uint8_t>> ExtensionContents(X509* cert, const char* oid_text);

// Bounds-checked reader of the DER subset the vendors' certificate extensions use: single-byte
// tags, short or long (<= 4 bytes) definite lengths, nested SEQUENCEs, INTEGER (signed,
// big-endian, up to 8 bytes), ENUMERATED, BOOLEAN, OCTET STRING, OBJECT IDENTIFIER, IA5String.
class DerReader {
 public:
  static constexpr uint8_t kBoolean = 0x01;
  static constexpr uint8_t kInteger = 0x02;
  static constexpr uint8_t kOctetString = 0x04;
  static constexpr uint8_t kOid = 0x06;
  static constexpr uint8_t kEnumerated = 0x0A;
  static constexpr uint8_t kIa5String = 0x16;
  static constexpr uint8_t kSequence = 0x30;

  DerReader(std::span<const uint8_t> bytes, std::string_view what) : bytes_(bytes), what_(what) {}

  bool empty() const { return pos_ == bytes_.size(); }
  // The next element's tag without consuming it (0 when empty).
  uint8_t PeekTag() const { return empty() ? 0 : bytes_[pos_]; }
  // Any element: its tag and contents.
  Status Next(uint8_t* tag, std::span<const uint8_t>* contents);
  // An element that must have `tag`.
  Status Expect(uint8_t tag, std::span<const uint8_t>* contents, std::string_view field);
  // A SEQUENCE; `inner` reads its contents.
  Status Sequence(DerReader* inner, std::string_view field);
  Status Integer(int64_t* value, std::string_view field);
  Status Enumerated(int64_t* value, std::string_view field);
  Status Boolean(bool* value, std::string_view field);
  Status OctetString(std::span<const uint8_t>* value, std::string_view field);
  // Dotted text ("1.2.840.113741.1.13.1.2.17").
  Status Oid(std::string* dotted, std::string_view field);
  Status ExpectEnd() const;

 private:
  Status IntegerWithTag(uint8_t tag, int64_t* value, std::string_view field);
  std::span<const uint8_t> bytes_;
  std::string_view what_;
  size_t pos_ = 0;
};

}  // namespace mlcapsule::server::evidence
