// The TPM 2.0 evidence verifier and the software TPM2_MakeCredential (see tpm.h): bounded
// big-endian parsers for TPMT_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE, the EK chain check against
// the configured roots, the quote checks, and the credential protection math with OpenSSL.
// Everything read from the evidence is untrusted; every TPM2B size is checked against the
// structure's limit (Part 2) and against the bytes left before it is used.
#include "server/evidence/tpm.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <string>
#include <string_view>

#include "capsule/crypto.h"
#include "capsule/tpm_evidence.h"

namespace mlcapsule::server::evidence {
namespace {

// Part 2 limits: TPM2B_DIGEST and TPM2B_DATA hold at most sizeof(TPMU_HA) = 64 bytes,
// TPM2B_NAME sizeof(TPMU_NAME) = 66, TPM2B_ECC_PARAMETER MAX_ECC_KEY_BYTES (66 for P-521).
constexpr size_t kMaxDigestBytes = 64;
constexpr size_t kMaxNameBytes = 66;
constexpr size_t kMaxEccParameterBytes = 66;
constexpr uint32_t kMaxPcrSelections = 16;            // HASH_COUNT is far smaller on every TPM
constexpr size_t kMaxPcrSelectBytes = 4;              // PCR_SELECT_MAX: 3 for the 24 PC Client PCRs
constexpr char kEkCertificateEku[] = "2.23.133.8.1";  // tcg-kp-EKCertificate
constexpr int kEkRsaBits = 2048;
constexpr size_t kCredentialSeedBytes = 32;  // the EK's nameAlg (SHA-256) digest size
constexpr size_t kAes128KeyBytes = 16;
// The OAEP label of a credential's seed, with its terminating NUL (Part 1, "IDENTITY").
constexpr uint8_t kIdentityLabel[] = {'I', 'D', 'E', 'N', 'T', 'I', 'T', 'Y', 0};

using EvpPkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OpenSslFree<EVP_PKEY_CTX_free>>;
using EvpCipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, OpenSslFree<EVP_CIPHER_CTX_free>>;
using EkuPtr = std::unique_ptr<EXTENDED_KEY_USAGE, OpenSslFree<EXTENDED_KEY_USAGE_free>>;
struct X509StackFree {
  void operator()(STACK_OF(X509) * stack) const { sk_X509_free(stack); }
};

// Big-endian reader for TPM structures; errors start with parse_error and name the structure
// and field.
class TpmReader {
 public:
  TpmReader(std::span<const uint8_t> bytes, std::string_view what) : bytes_(bytes), what_(what) {}

  Status U8(uint8_t* out, std::string_view field) {
    std::span<const uint8_t> b;
    MLC_RETURN_IF_ERROR(Take(1, &b, field));
    *out = b[0];
    return Status::Ok();
  }
  Status U16(uint16_t* out, std::string_view field) {
    std::span<const uint8_t> b;
    MLC_RETURN_IF_ERROR(Take(2, &b, field));
    *out = static_cast<uint16_t>((b[0] << 8) | b[1]);
    return Status::Ok();
  }
  Status U32(uint32_t* out, std::string_view field) {
    std::span<const uint8_t> b;
    MLC_RETURN_IF_ERROR(Take(4, &b, field));
    *out = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
    return Status::Ok();
  }
  Status U64(uint64_t* out, std::string_view field) {
    uint32_t high = 0, low = 0;
    MLC_RETURN_IF_ERROR(U32(&high, field));
    MLC_RETURN_IF_ERROR(U32(&low, field));
    *out = (uint64_t{high} << 32) | low;
    return Status::Ok();
  }
  // TPM2B: u16 size (<= max) + bytes.
  Status Sized(std::span<const uint8_t>* out, size_t max, std::string_view field) {
    uint16_t size = 0;
    MLC_RETURN_IF_ERROR(U16(&size, field));
    if (size > max)
      return InvalidArgument("parse_error: {} {} size {} is over the limit {}", what_, field, size,
                             max);
    return Take(size, out, field);
  }
  Status Take(size_t n, std::span<const uint8_t>* out, std::string_view field) {
    if (n > bytes_.size() - pos_)
      return InvalidArgument(
          "parse_error: {} truncated reading {} at offset {} ({} bytes needed, {} left)", what_,
          field, pos_, n, bytes_.size() - pos_);
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  Status ExpectEnd() const {
    if (pos_ != bytes_.size())
      return InvalidArgument("parse_error: {} has {} unexpected trailing bytes at offset {}", what_,
                             bytes_.size() - pos_, pos_);
    return Status::Ok();
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string_view what_;
  size_t pos_ = 0;
};

std::array<uint8_t, 32> Sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> out{};
  SHA256(bytes.data(), bytes.size(), out.data());
  return out;
}

std::string Label(X509* cert) {
  const std::string name = CommonName(cert);
  return name.empty() ? NameText(X509_get_subject_name(cert)) : name;
}

// ek_chain: the EK certificate against the configured roots at `now`, then its key and EKU.
Status CheckEkChain(X509* ek, std::span<const X509Ptr> intermediates, const TpmRoots& roots,
                    int64_t now) {
  MLC_RETURN_IF_ERROR(roots.status);
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  std::unique_ptr<STACK_OF(X509), X509StackFree> untrusted(sk_X509_new_null());
  if (!ctx || !untrusted) return InternalError("ek_chain: X509 setup ({})", OpenSslErrors());
  for (const X509Ptr& cert : intermediates) {
    if (sk_X509_push(untrusted.get(), cert.get()) <= 0)
      return InternalError("ek_chain: sk_X509_push ({})", OpenSslErrors());
  }
  if (X509_STORE_CTX_init(ctx.get(), roots.store.get(), ek, untrusted.get()) != 1)
    return InternalError("ek_chain: X509_STORE_CTX_init ({})", OpenSslErrors());
  // Not X509_STRICT: TPM vendors' EK certificates are known to bend RFC 5280 in harmless ways
  // (swtpm's EK certificate has a critical SAN with a DirName and an empty subject).
  X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), static_cast<time_t>(now));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    X509* current = X509_STORE_CTX_get_current_cert(ctx.get());
    const std::string label = current != nullptr ? Label(current) : std::string("?");
    ERR_clear_error();
    return InvalidArgument(
        "ek_chain: certificate '{}' (depth {}): {} (X509 error {}; verified at {} against {} "
        "configured EK CA root(s))",
        label, depth, X509_verify_cert_error_string(error), error, FormatUtc(now), roots.count);
  }
  ERR_clear_error();

  EVP_PKEY* key = X509_get0_pubkey(ek);
  if (key == nullptr) {
    ERR_clear_error();
    return InvalidArgument("ek_chain: the EK certificate's public key cannot be read");
  }
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) != kEkRsaBits)
    return InvalidArgument(
        "ek_chain: the EK certificate's key is {} {} bits; only RSA 2048 EKs are supported",
        EVP_PKEY_get0_type_name(key), EVP_PKEY_get_bits(key));

  int critical = 0;
  EkuPtr eku(static_cast<EXTENDED_KEY_USAGE*>(
      X509_get_ext_d2i(ek, NID_ext_key_usage, &critical, nullptr)));
  if (eku == nullptr && critical != -1) {  // -1: absent; otherwise present but unreadable
    ERR_clear_error();
    return InvalidArgument("ek_chain: the EK certificate's extended key usage cannot be read");
  }
  if (eku != nullptr) {
    bool found = false;
    std::string listed;
    for (int i = 0; i < sk_ASN1_OBJECT_num(eku.get()); ++i) {
      char text[80] = {};
      OBJ_obj2txt(text, sizeof(text), sk_ASN1_OBJECT_value(eku.get(), i), 1);
      found = found || std::strcmp(text, kEkCertificateEku) == 0;
      listed += (listed.empty() ? "" : ", ") + std::string(text);
    }
    if (!found)
      return InvalidArgument(
          "ek_chain: the EK certificate's extended key usage ({}) does not name {} "
          "(tcg-kp-EKCertificate)",
          listed, kEkCertificateEku);
  }
  ERR_clear_error();
  return Status::Ok();
}

Status CheckAkAttributes(const TpmPublicArea& ak) {
  if (ak.type != kTpmAlgEcc)
    return InvalidArgument("ak_attributes: AK type 0x{:04x} is not ECC (0x{:04x})", ak.type,
                           kTpmAlgEcc);
  if (ak.name_alg != kTpmAlgSha256)
    return InvalidArgument("ak_attributes: AK nameAlg 0x{:04x} is not SHA-256 (0x{:04x})",
                           ak.name_alg, kTpmAlgSha256);
  if (ak.object_attributes != kTpmAkAttributes)
    return InvalidArgument(
        "ak_attributes: AK objectAttributes 0x{:08x} are not exactly 0x{:08x} (fixedTPM, "
        "fixedParent, sensitiveDataOrigin, userWithAuth, restricted, sign)",
        ak.object_attributes, kTpmAkAttributes);
  if (ak.symmetric != kTpmAlgNull)
    return InvalidArgument("ak_attributes: AK symmetric algorithm 0x{:04x} is not NULL",
                           ak.symmetric);
  if (ak.scheme != kTpmAlgEcdsa || ak.scheme_hash != kTpmAlgSha256)
    return InvalidArgument(
        "ak_attributes: AK scheme 0x{:04x}/0x{:04x} is not ECDSA (0x{:04x}) with SHA-256",
        ak.scheme, ak.scheme_hash, kTpmAlgEcdsa);
  if (ak.curve != kTpmEccNistP256)
    return InvalidArgument("ak_attributes: AK curve 0x{:04x} is not NIST P-256 (0x{:04x})",
                           ak.curve, kTpmEccNistP256);
  if (ak.kdf != kTpmAlgNull)
    return InvalidArgument("ak_attributes: AK KDF scheme 0x{:04x} is not NULL", ak.kdf);
  if (ak.x.size() != 32 || ak.y.size() != 32)
    return InvalidArgument("ak_attributes: AK point coordinates are {} and {} bytes, expected 32",
                           ak.x.size(), ak.y.size());
  return Status::Ok();
}

Status OpensslFailure(std::string_view what) {
  return InternalError("tpm credential: {} failed ({})", what, OpenSslErrors());
}

void AppendU16(std::vector<uint8_t>* out, size_t value) {
  out->push_back(static_cast<uint8_t>(value >> 8));
  out->push_back(static_cast<uint8_t>(value));
}

}  // namespace

Result<TpmPublicArea> ParseTpmPublic(std::span<const uint8_t> bytes) {
  TpmReader reader(bytes, "ak_public (TPMT_PUBLIC)");
  TpmPublicArea out;
  MLC_RETURN_IF_ERROR(reader.U16(&out.type, "type"));
  MLC_RETURN_IF_ERROR(reader.U16(&out.name_alg, "nameAlg"));
  MLC_RETURN_IF_ERROR(reader.U32(&out.object_attributes, "objectAttributes"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.auth_policy, kMaxDigestBytes, "authPolicy"));
  if (out.type != kTpmAlgEcc) return out;  // ak_attributes refuses it
  out.ecc = true;
  // TPMS_ECC_PARMS: symmetric, scheme, curveID, kdf; then TPMS_ECC_POINT unique.
  MLC_RETURN_IF_ERROR(reader.U16(&out.symmetric, "symmetric.algorithm"));
  if (out.symmetric != kTpmAlgNull) {
    uint16_t key_bits = 0, mode = 0;
    MLC_RETURN_IF_ERROR(reader.U16(&key_bits, "symmetric.keyBits"));
    MLC_RETURN_IF_ERROR(reader.U16(&mode, "symmetric.mode"));
  }
  MLC_RETURN_IF_ERROR(reader.U16(&out.scheme, "scheme.scheme"));
  if (out.scheme != kTpmAlgNull) {
    MLC_RETURN_IF_ERROR(reader.U16(&out.scheme_hash, "scheme.hashAlg"));
    if (out.scheme == 0x001A) {  // TPM_ALG_ECDAA carries a count too
      uint16_t count = 0;
      MLC_RETURN_IF_ERROR(reader.U16(&count, "scheme.count"));
    }
  }
  MLC_RETURN_IF_ERROR(reader.U16(&out.curve, "curveID"));
  MLC_RETURN_IF_ERROR(reader.U16(&out.kdf, "kdf.scheme"));
  if (out.kdf != kTpmAlgNull) {
    uint16_t kdf_hash = 0;
    MLC_RETURN_IF_ERROR(reader.U16(&kdf_hash, "kdf.hashAlg"));
  }
  MLC_RETURN_IF_ERROR(reader.Sized(&out.x, kMaxEccParameterBytes, "unique.x"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.y, kMaxEccParameterBytes, "unique.y"));
  MLC_RETURN_IF_ERROR(reader.ExpectEnd());
  return out;
}

Result<TpmAttest> ParseTpmAttest(std::span<const uint8_t> bytes) {
  TpmReader reader(bytes, "attest (TPMS_ATTEST)");
  TpmAttest out;
  MLC_RETURN_IF_ERROR(reader.U32(&out.magic, "magic"));
  MLC_RETURN_IF_ERROR(reader.U16(&out.type, "type"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.qualified_signer, kMaxNameBytes, "qualifiedSigner"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.extra_data, kMaxDigestBytes, "extraData"));
  MLC_RETURN_IF_ERROR(reader.U64(&out.clock, "clockInfo.clock"));
  MLC_RETURN_IF_ERROR(reader.U32(&out.reset_count, "clockInfo.resetCount"));
  MLC_RETURN_IF_ERROR(reader.U32(&out.restart_count, "clockInfo.restartCount"));
  MLC_RETURN_IF_ERROR(reader.U8(&out.safe, "clockInfo.safe"));
  MLC_RETURN_IF_ERROR(reader.U64(&out.firmware_version, "firmwareVersion"));
  if (out.type != kTpmStAttestQuote) return out;  // attest_type refuses it
  out.quote = true;
  uint32_t count = 0;
  MLC_RETURN_IF_ERROR(reader.U32(&count, "pcrSelect.count"));
  if (count > kMaxPcrSelections)
    return InvalidArgument(
        "parse_error: attest (TPMS_ATTEST) pcrSelect.count {} is over the "
        "limit {}",
        count, kMaxPcrSelections);
  out.pcr_selections.resize(count);
  for (TpmAttest::PcrSelection& selection : out.pcr_selections) {
    uint8_t size = 0;
    MLC_RETURN_IF_ERROR(reader.U16(&selection.hash, "pcrSelect.hash"));
    MLC_RETURN_IF_ERROR(reader.U8(&size, "pcrSelect.sizeofSelect"));
    if (size > kMaxPcrSelectBytes)
      return InvalidArgument(
          "parse_error: attest (TPMS_ATTEST) pcrSelect.sizeofSelect {} is over the limit {}", size,
          kMaxPcrSelectBytes);
    MLC_RETURN_IF_ERROR(reader.Take(size, &selection.select, "pcrSelect.pcrSelect"));
  }
  MLC_RETURN_IF_ERROR(reader.Sized(&out.pcr_digest, kMaxDigestBytes, "pcrDigest"));
  MLC_RETURN_IF_ERROR(reader.ExpectEnd());
  return out;
}

Result<TpmSignature> ParseTpmSignature(std::span<const uint8_t> bytes) {
  TpmReader reader(bytes, "signature (TPMT_SIGNATURE)");
  TpmSignature out;
  MLC_RETURN_IF_ERROR(reader.U16(&out.sig_alg, "sigAlg"));
  if (out.sig_alg != kTpmAlgEcdsa) return out;  // quote_signature refuses it
  out.ecdsa = true;
  MLC_RETURN_IF_ERROR(reader.U16(&out.hash, "hash"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.r, kMaxEccParameterBytes, "signatureR"));
  MLC_RETURN_IF_ERROR(reader.Sized(&out.s, kMaxEccParameterBytes, "signatureS"));
  MLC_RETURN_IF_ERROR(reader.ExpectEnd());
  return out;
}

std::vector<uint8_t> TpmObjectName(std::span<const uint8_t> tpmt_public) {
  std::vector<uint8_t> name;
  name.reserve(34);
  AppendU16(&name, kTpmAlgSha256);
  const std::array<uint8_t, 32> digest = Sha256(tpmt_public);
  name.insert(name.end(), digest.begin(), digest.end());
  return name;
}

TpmRoots ParseTpmRoots(const TrustAnchors& anchors) {
  TpmRoots roots;
  if (anchors.tpm_ek_roots.empty()) {
    roots.status = FailedPrecondition(
        "ek_chain: the server has no TPM EK CA configured (--tpm-ek-ca), so no TPM evidence can "
        "be verified");
    return roots;
  }
  roots.store.reset(X509_STORE_new());
  if (!roots.store) {
    roots.status = InternalError("ek_chain: X509_STORE_new ({})", OpenSslErrors());
    return roots;
  }
  for (size_t i = 0; i < anchors.tpm_ek_roots.size(); ++i) {
    Result<X509Ptr> cert = ParseDerCertificate(
        anchors.tpm_ek_roots[i],
        fmt::format("TPM EK CA certificate {} of {}", i + 1, anchors.tpm_ek_roots.size()));
    if (!cert.ok()) {
      roots.status = FailedPrecondition("ek_chain: {}", cert.status().message());
      return roots;
    }
    // The store takes its own reference.
    if (X509_STORE_add_cert(roots.store.get(), cert->get()) != 1) {
      roots.status = InternalError("ek_chain: X509_STORE_add_cert ({})", OpenSslErrors());
      return roots;
    }
  }
  roots.count = anchors.tpm_ek_roots.size();
  return roots;
}

Result<Verdict> VerifyTpm(std::span<const uint8_t> evidence, const TpmRoots& roots, int64_t now) {
  // parse_error: the container and every TPM structure in it.
  MLC_ASSIGN_OR_RETURN(capsule::TpmEvidence parts, capsule::ParseTpmEvidence(evidence));
  Result<X509Ptr> ek = ParseDerCertificate(parts.ek_cert, "EK certificate");
  if (!ek.ok()) return InvalidArgument("parse_error: {}", ek.status().message());
  std::vector<X509Ptr> intermediates;
  for (size_t i = 0; i < parts.ek_chain.size(); ++i) {
    Result<X509Ptr> cert =
        ParseDerCertificate(parts.ek_chain[i], fmt::format("EK chain certificate {}", i + 1));
    if (!cert.ok()) return InvalidArgument("parse_error: {}", cert.status().message());
    intermediates.push_back(std::move(cert).value());
  }
  MLC_ASSIGN_OR_RETURN(TpmPublicArea ak, ParseTpmPublic(parts.ak_public));
  MLC_ASSIGN_OR_RETURN(TpmAttest attest, ParseTpmAttest(parts.attest));
  MLC_ASSIGN_OR_RETURN(TpmSignature signature, ParseTpmSignature(parts.signature));

  MLC_RETURN_IF_ERROR(CheckEkChain(ek->get(), intermediates, roots, now));
  MLC_RETURN_IF_ERROR(CheckAkAttributes(ak));

  if (attest.magic != kTpmGeneratedValue)
    return InvalidArgument(
        "attest_magic: 0x{:08x} is not TPM_GENERATED_VALUE 0x{:08x} (not made by a TPM)",
        attest.magic, kTpmGeneratedValue);
  if (attest.type != kTpmStAttestQuote || !attest.quote)
    return InvalidArgument("attest_type: 0x{:04x} is not TPM_ST_ATTEST_QUOTE 0x{:04x}", attest.type,
                           kTpmStAttestQuote);
  const std::array<uint8_t, 32> qualifying = capsule::TpmQualifyingData(parts.report_data);
  if (!capsule::ConstantTimeEqual(attest.extra_data, qualifying))
    return InvalidArgument(
        "extra_data: the quote's qualifyingData ({} bytes, {}...) is not SHA-256(\"{}\" || report "
        "data) ({}...)",
        attest.extra_data.size(),
        capsule::ToHex(attest.extra_data.first(std::min<size_t>(8, attest.extra_data.size()))),
        capsule::kTpmQuoteDomain, capsule::ToHex(std::span<const uint8_t>(qualifying).first(8)));
  constexpr uint8_t kPcr23Select[3] = {0x00, 0x00, 0x80};
  if (attest.pcr_selections.size() != 1 || attest.pcr_selections[0].hash != kTpmAlgSha256 ||
      attest.pcr_selections[0].select.size() != sizeof(kPcr23Select) ||
      std::memcmp(attest.pcr_selections[0].select.data(), kPcr23Select, sizeof(kPcr23Select)) !=
          0) {
    std::string shown;
    for (const TpmAttest::PcrSelection& selection : attest.pcr_selections)
      shown += fmt::format("{}{{hash 0x{:04x}: {}}}", shown.empty() ? "" : ", ", selection.hash,
                           capsule::ToHex(selection.select));
    return InvalidArgument(
        "pcr_select: the quote selects [{}], expected exactly {{hash 0x000b (sha256): 000080}} "
        "(PCR 23)",
        shown);
  }
  const std::array<uint8_t, 32> pcr23 = capsule::TpmPcr23(parts.measurement, parts.report_data);
  const std::array<uint8_t, 32> expected_digest = Sha256(pcr23);
  if (!capsule::ConstantTimeEqual(attest.pcr_digest, expected_digest))
    return InvalidArgument(
        "pcr_digest: the quoted PCR digest ({} bytes, {}...) is not SHA-256 of PCR 23 replayed "
        "from measurement {}... and the report data ({}...)",
        attest.pcr_digest.size(),
        capsule::ToHex(attest.pcr_digest.first(std::min<size_t>(8, attest.pcr_digest.size()))),
        capsule::ToHex(std::span<const uint8_t>(parts.measurement).first(8)),
        capsule::ToHex(std::span<const uint8_t>(expected_digest).first(8)));

  if (!signature.ecdsa || signature.hash != kTpmAlgSha256)
    return InvalidArgument(
        "quote_signature: signature scheme 0x{:04x}/0x{:04x} is not ECDSA (0x{:04x}) with "
        "SHA-256",
        signature.sig_alg, signature.hash, kTpmAlgEcdsa);
  if (signature.r.empty() || signature.s.empty() || signature.r.size() > 32 ||
      signature.s.size() > 32)
    return InvalidArgument("quote_signature: r and s are {} and {} bytes, expected 1..32",
                           signature.r.size(), signature.s.size());
  std::array<uint8_t, 64> xy{};
  std::memcpy(xy.data(), ak.x.data(), 32);
  std::memcpy(xy.data() + 32, ak.y.data(), 32);
  Result<EvpPkeyPtr> key = P256KeyFromRaw(xy);
  if (!key.ok()) return InvalidArgument("quote_signature: AK {}", key.status().message());
  Result<std::vector<uint8_t>> der =
      EcdsaSignatureToDer(signature.r, signature.s, /*little_endian=*/false);
  if (!der.ok()) return InvalidArgument("quote_signature: {}", der.status().message());
  MLC_RETURN_IF_ERROR(
      VerifySignature(key->get(), EVP_sha256(), *der, parts.attest, "quote_signature"));

  Verdict verdict;
  verdict.type = capsule::EvidenceType::kTpm;
  verdict.measurement.assign(parts.measurement.begin(), parts.measurement.end());
  verdict.report_data = parts.report_data;
  verdict.debug = false;
  verdict.ek_fingerprint = capsule::ToHex(Sha256(parts.ek_cert));
  verdict.ak_name = TpmObjectName(parts.ak_public);
  verdict.reset_count = attest.reset_count;
  verdict.restart_count = attest.restart_count;
  verdict.firmware_version = attest.firmware_version;
  verdict.tpm_ek_cert_der = std::move(parts.ek_cert);
  return verdict;
}

capsule::SecretBytes TpmKdfaSha256(std::span<const uint8_t> key, std::string_view label,
                                   std::span<const uint8_t> context_u,
                                   std::span<const uint8_t> context_v, uint32_t bits) {
  const size_t bytes = bits / 8;
  capsule::SecretBytes out(bytes);
  uint8_t block[SHA256_DIGEST_LENGTH];
  const uint8_t bits_be[4] = {static_cast<uint8_t>(bits >> 24), static_cast<uint8_t>(bits >> 16),
                              static_cast<uint8_t>(bits >> 8), static_cast<uint8_t>(bits)};
  const uint8_t zero = 0;
  size_t done = 0;
  for (uint32_t counter = 1; done < bytes; ++counter) {
    const uint8_t counter_be[4] = {
        static_cast<uint8_t>(counter >> 24), static_cast<uint8_t>(counter >> 16),
        static_cast<uint8_t>(counter >> 8), static_cast<uint8_t>(counter)};
    unsigned int length = 0;
    std::vector<uint8_t> message;
    message.insert(message.end(), counter_be, counter_be + 4);
    message.insert(message.end(), label.begin(), label.end());
    message.push_back(zero);
    message.insert(message.end(), context_u.begin(), context_u.end());
    message.insert(message.end(), context_v.begin(), context_v.end());
    message.insert(message.end(), bits_be, bits_be + 4);
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message.data(), message.size(),
         block, &length);
    const size_t take = std::min<size_t>(SHA256_DIGEST_LENGTH, bytes - done);
    std::memcpy(out.data() + done, block, take);
    done += take;
  }
  OPENSSL_cleanse(block, sizeof(block));
  return out;
}

Result<TpmCredential> MakeTpmCredential(std::span<const uint8_t> ek_cert_der,
                                        std::span<const uint8_t> ak_name,
                                        std::span<const uint8_t> secret) {
  if (ak_name.empty() || ak_name.size() > kMaxNameBytes)
    return InvalidArgument("tpm credential: AK name is {} bytes, expected 1..{}", ak_name.size(),
                           kMaxNameBytes);
  if (secret.empty() || secret.size() > kMaxTpmCredentialSecretBytes)
    return InvalidArgument("tpm credential: secret is {} bytes, expected 1..{}", secret.size(),
                           kMaxTpmCredentialSecretBytes);
  MLC_ASSIGN_OR_RETURN(X509Ptr ek, ParseDerCertificate(ek_cert_der, "EK certificate"));
  EVP_PKEY* ek_key = X509_get0_pubkey(ek.get());
  if (ek_key == nullptr || EVP_PKEY_get_base_id(ek_key) != EVP_PKEY_RSA ||
      EVP_PKEY_get_bits(ek_key) != kEkRsaBits) {
    ERR_clear_error();
    return InvalidArgument("tpm credential: the EK certificate's key is not RSA 2048");
  }

  capsule::SecretBytes seed(kCredentialSeedBytes, capsule::SecretBytes::kUninitialized);
  capsule::RandomBytes(seed.span());

  // encrypted_secret: RSA-OAEP(SHA-256, MGF1-SHA-256, label "IDENTITY\0") of the seed.
  EvpPkeyCtxPtr rsa(EVP_PKEY_CTX_new_from_pkey(nullptr, ek_key, nullptr));
  if (!rsa || EVP_PKEY_encrypt_init(rsa.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(rsa.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(rsa.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(rsa.get(), EVP_sha256()) != 1)
    return OpensslFailure("RSA-OAEP setup");
  // set0_rsa_oaep_label takes ownership of an OPENSSL_malloc'd copy.
  void* label = OPENSSL_memdup(kIdentityLabel, sizeof(kIdentityLabel));
  if (label == nullptr ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(rsa.get(), label, sizeof(kIdentityLabel)) != 1) {
    OPENSSL_free(label);
    return OpensslFailure("RSA-OAEP label");
  }
  size_t encrypted_size = 0;
  if (EVP_PKEY_encrypt(rsa.get(), nullptr, &encrypted_size, seed.data(), seed.size()) != 1)
    return OpensslFailure("RSA-OAEP size");
  std::vector<uint8_t> encrypted(encrypted_size);
  if (EVP_PKEY_encrypt(rsa.get(), encrypted.data(), &encrypted_size, seed.data(), seed.size()) != 1)
    return OpensslFailure("RSA-OAEP encrypt");
  encrypted.resize(encrypted_size);

  // encIdentity: AES-128-CFB (IV 0) of TPM2B_DIGEST(secret) under KDFa(seed, "STORAGE", name).
  const capsule::SecretBytes sym_key =
      TpmKdfaSha256(seed.span(), "STORAGE", ak_name, {}, kAes128KeyBytes * 8);
  capsule::SecretBytes plain(2 + secret.size(), capsule::SecretBytes::kUninitialized);
  plain.data()[0] = static_cast<uint8_t>(secret.size() >> 8);
  plain.data()[1] = static_cast<uint8_t>(secret.size());
  std::memcpy(plain.data() + 2, secret.data(), secret.size());
  std::vector<uint8_t> enc_identity(plain.size());
  const uint8_t iv[16] = {};
  EvpCipherCtxPtr cipher(EVP_CIPHER_CTX_new());
  int written = 0, final_written = 0;
  if (!cipher ||
      EVP_EncryptInit_ex(cipher.get(), EVP_aes_128_cfb128(), nullptr, sym_key.data(), iv) != 1 ||
      EVP_EncryptUpdate(cipher.get(), enc_identity.data(), &written, plain.data(),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(cipher.get(), enc_identity.data() + written, &final_written) != 1 ||
      static_cast<size_t>(written + final_written) != plain.size())
    return OpensslFailure("AES-128-CFB");

  // outerHMAC over encIdentity || name, keyed by KDFa(seed, "INTEGRITY").
  const capsule::SecretBytes hmac_key =
      TpmKdfaSha256(seed.span(), "INTEGRITY", {}, {}, SHA256_DIGEST_LENGTH * 8);
  std::vector<uint8_t> hmac_input(enc_identity);
  hmac_input.insert(hmac_input.end(), ak_name.begin(), ak_name.end());
  uint8_t outer_hmac[SHA256_DIGEST_LENGTH];
  unsigned int hmac_size = 0;
  if (HMAC(EVP_sha256(), hmac_key.data(), static_cast<int>(hmac_key.size()), hmac_input.data(),
           hmac_input.size(), outer_hmac, &hmac_size) == nullptr ||
      hmac_size != SHA256_DIGEST_LENGTH)
    return OpensslFailure("HMAC-SHA256");

  TpmCredential out;
  const size_t blob_size = 2 + SHA256_DIGEST_LENGTH + enc_identity.size();
  AppendU16(&out.id_object, blob_size);
  AppendU16(&out.id_object, SHA256_DIGEST_LENGTH);
  out.id_object.insert(out.id_object.end(), outer_hmac, outer_hmac + SHA256_DIGEST_LENGTH);
  out.id_object.insert(out.id_object.end(), enc_identity.begin(), enc_identity.end());
  AppendU16(&out.encrypted_secret, encrypted.size());
  out.encrypted_secret.insert(out.encrypted_secret.end(), encrypted.begin(), encrypted.end());
  ERR_clear_error();
  return out;
}

}  // namespace mlcapsule::server::evidence
