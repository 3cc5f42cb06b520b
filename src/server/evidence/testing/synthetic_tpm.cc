// The synthetic TPM (see synthetic_tpm.h): an EK PKI and an AK made with OpenSSL 3.0, and
// TPMS_ATTEST / TPMT_SIGNATURE written big-endian in the layout measured on swtpm (tee-backends-
// plan.md §4.2: a 145-byte TPMS_ATTEST for one PCR, a 72-byte TPMT_SIGNATURE). The layouts are
// written out here from TPM 2.0 Part 2 rather than shared with the verifier's parsers, so that
// the tests check the verifier instead of sharing its mistakes. Test code only.
#include "server/evidence/testing/synthetic_tpm.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string_view>

#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence::testing {
namespace {

using Asn1StringPtr = std::unique_ptr<ASN1_STRING, OpenSslFree<ASN1_STRING_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OpenSslFree<X509_NAME_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslFree<X509_EXTENSION_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpenSslFree<ECDSA_SIG_free>>;

Status OpensslError(std::string_view what) {
  return InternalError("synthetic_tpm: {} failed ({})", what, OpenSslErrors());
}

void PutU16(std::vector<uint8_t>* out, uint16_t value) {
  out->push_back(static_cast<uint8_t>(value >> 8));
  out->push_back(static_cast<uint8_t>(value));
}
void PutU32(std::vector<uint8_t>* out, uint32_t value) {
  PutU16(out, static_cast<uint16_t>(value >> 16));
  PutU16(out, static_cast<uint16_t>(value));
}
void PutU64(std::vector<uint8_t>* out, uint64_t value) {
  PutU32(out, static_cast<uint32_t>(value >> 32));
  PutU32(out, static_cast<uint32_t>(value));
}
void PutSized(std::vector<uint8_t>* out, std::span<const uint8_t> bytes) {
  PutU16(out, static_cast<uint16_t>(bytes.size()));
  out->insert(out->end(), bytes.begin(), bytes.end());
}

Status AddConfExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1)
    return OpensslError(std::string("extension ") + value);
  return Status::Ok();
}

struct CertSpec {
  std::string common_name;
  uint64_t serial = 0;
  bool ca = false;
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::vector<std::string> eku;  // leaf only
};

// A v3 certificate for `subject_key`, signed by `issuer_key` (issuer == nullptr: self-signed).
Result<X509Ptr> MakeCertificate(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1)
    return OpensslError("X509_new");
  if (ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), spec.serial) != 1)
    return OpensslError("serial");
  X509NamePtr subject(X509_NAME_new());
  if (subject == nullptr ||
      X509_NAME_add_entry_by_txt(subject.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(spec.common_name.c_str()),
                                 -1, -1, 0) != 1 ||
      X509_NAME_add_entry_by_txt(subject.get(), "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("MLCapsule Synthetic TPM"),
                                 -1, -1, 0) != 1)
    return OpensslError("subject");
  if (X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(),
                           issuer != nullptr ? X509_get_subject_name(issuer) : subject.get()) != 1)
    return OpensslError("names");
  Asn1StringPtr not_before(ASN1_TIME_set(nullptr, static_cast<time_t>(spec.not_before)));
  Asn1StringPtr not_after(ASN1_TIME_set(nullptr, static_cast<time_t>(spec.not_after)));
  if (not_before == nullptr || not_after == nullptr ||
      X509_set1_notBefore(cert.get(), not_before.get()) != 1 ||
      X509_set1_notAfter(cert.get(), not_after.get()) != 1)
    return OpensslError("validity");
  if (X509_set_pubkey(cert.get(), subject_key) != 1) return OpensslError("X509_set_pubkey");
  MLC_RETURN_IF_ERROR(AddConfExtension(cert.get(), issuer, NID_subject_key_identifier, "hash"));
  MLC_RETURN_IF_ERROR(
      AddConfExtension(cert.get(), issuer, NID_authority_key_identifier, "keyid:always"));
  if (spec.ca) {
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), issuer, NID_key_usage, "critical,keyCertSign,cRLSign"));
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:TRUE"));
  } else {
    // As the EK profile and swtpm: key encipherment only, not a CA.
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), issuer, NID_key_usage, "critical,keyEncipherment"));
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), issuer, NID_basic_constraints, "critical,CA:FALSE"));
    if (!spec.eku.empty()) {
      std::string value;
      for (const std::string& oid : spec.eku) value += (value.empty() ? "" : ",") + oid;
      MLC_RETURN_IF_ERROR(AddConfExtension(cert.get(), issuer, NID_ext_key_usage, value.c_str()));
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return OpensslError("X509_sign");
  return cert;
}

// A key for (key_set, role), made once per process and shared (reference-counted).
Result<EvpPkeyPtr> CachedKey(int key_set, std::string_view role, int rsa_bits) {
  static std::mutex mutex;
  static auto* cache = new std::map<std::string, EvpPkeyPtr>();
  const std::string id = fmt::format("{}/{}/{}", key_set, role, rsa_bits);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache->find(id);
  if (it == cache->end()) {
    EvpPkeyPtr key(rsa_bits > 0
                       ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits))
                       : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (key == nullptr) return OpensslError(fmt::format("{} key generation", role));
    it = cache->emplace(id, std::move(key)).first;
  }
  if (EVP_PKEY_up_ref(it->second.get()) != 1) return OpensslError("EVP_PKEY_up_ref");
  return EvpPkeyPtr(it->second.get());
}

}  // namespace

struct SyntheticTpm::Impl {
  SyntheticTpmOptions options;
  EvpPkeyPtr root_key, intermediate_key, ek_key, ak_key;
  std::vector<uint8_t> root_der, intermediate_der, ek_der;
  std::array<uint8_t, 32> ak_x{}, ak_y{};
};

SyntheticTpm::SyntheticTpm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SyntheticTpm::~SyntheticTpm() = default;

Result<std::unique_ptr<SyntheticTpm>> SyntheticTpm::Create(const SyntheticTpmOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  MLC_ASSIGN_OR_RETURN(impl->root_key, CachedKey(options.key_set, "root", 2048));
  MLC_ASSIGN_OR_RETURN(impl->intermediate_key, CachedKey(options.key_set, "intermediate", 2048));
  MLC_ASSIGN_OR_RETURN(impl->ek_key, CachedKey(options.key_set, "ek", options.ek_rsa_bits));
  MLC_ASSIGN_OR_RETURN(impl->ak_key, CachedKey(options.key_set, "ak", 0));

  CertSpec root_spec{.common_name = options.ca_name + " Root",
                     .serial = 1,
                     .ca = true,
                     .not_before = options.cert_not_before,
                     .not_after = options.cert_not_after};
  MLC_ASSIGN_OR_RETURN(X509Ptr root, MakeCertificate(root_spec, impl->root_key.get(), nullptr,
                                                     impl->root_key.get()));
  CertSpec intermediate_spec = root_spec;
  intermediate_spec.common_name = options.ca_name;
  intermediate_spec.serial = 2;
  MLC_ASSIGN_OR_RETURN(X509Ptr intermediate,
                       MakeCertificate(intermediate_spec, impl->intermediate_key.get(), root.get(),
                                       impl->root_key.get()));
  CertSpec ek_spec{.common_name = "synthetic TPM EK",
                   .serial = 3,
                   .ca = false,
                   .not_before = options.cert_not_before,
                   .not_after = options.cert_not_after,
                   .eku = options.ek_eku};
  MLC_ASSIGN_OR_RETURN(X509Ptr ek, MakeCertificate(ek_spec, impl->ek_key.get(), intermediate.get(),
                                                   impl->intermediate_key.get()));
  impl->root_der = CertificateDer(root.get());
  impl->intermediate_der = CertificateDer(intermediate.get());
  impl->ek_der = CertificateDer(ek.get());

  uint8_t point[65];
  size_t length = 0;
  if (EVP_PKEY_get_octet_string_param(impl->ak_key.get(), "encoded-pub-key", point, sizeof(point),
                                      &length) != 1 ||
      length != 65 || point[0] != 0x04)
    return OpensslError("AK public point");
  std::memcpy(impl->ak_x.data(), point + 1, 32);
  std::memcpy(impl->ak_y.data(), point + 33, 32);
  return std::unique_ptr<SyntheticTpm>(new SyntheticTpm(std::move(impl)));
}

TrustAnchors SyntheticTpm::Anchors() const {
  TrustAnchors anchors = TrustAnchors::Pinned();
  anchors.tpm_ek_roots = {impl_->root_der};
  return anchors;
}

std::vector<uint8_t> SyntheticTpm::AkPublic(uint32_t object_attributes) const {
  // TPMT_PUBLIC as tpm2_createak -G ecc -s ecdsa makes it (§4.1).
  std::vector<uint8_t> out;
  PutU16(&out, 0x0023);  // type ECC
  PutU16(&out, 0x000B);  // nameAlg SHA-256
  PutU32(&out, object_attributes);
  PutU16(&out, 0);       // authPolicy: empty
  PutU16(&out, 0x0010);  // symmetric NULL
  PutU16(&out, 0x0018);  // scheme ECDSA
  PutU16(&out, 0x000B);  //   hashAlg SHA-256
  PutU16(&out, 0x0003);  // curveID NIST P-256
  PutU16(&out, 0x0010);  // kdf NULL
  PutSized(&out, impl_->ak_x);
  PutSized(&out, impl_->ak_y);
  return out;
}

std::vector<uint8_t> SyntheticTpm::AkName() const {
  const std::vector<uint8_t> area = AkPublic();
  std::vector<uint8_t> name = {0x00, 0x0B};
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(area.data(), area.size(), digest);
  name.insert(name.end(), digest, digest + sizeof(digest));
  return name;
}

Result<capsule::TpmEvidence> SyntheticTpm::MakeEvidenceParts(const TpmQuoteSpec& spec) const {
  capsule::TpmEvidence parts;
  parts.report_data = spec.report_data;
  parts.measurement = spec.measurement;
  parts.ek_cert = impl_->ek_der;
  if (spec.ship_intermediate) parts.ek_chain.push_back(impl_->intermediate_der);
  parts.ak_public = AkPublic(spec.ak_object_attributes);

  // TPMS_ATTEST (Part 2 §10.12.12) with TPMS_QUOTE_INFO.
  std::vector<uint8_t>& attest = parts.attest;
  PutU32(&attest, spec.magic);
  PutU16(&attest, spec.attest_type);
  // qualifiedSigner: a Name (34 bytes); the verifier does not compare it.
  std::vector<uint8_t> signer = AkName();
  signer[2] ^= 0x5A;  // the parent-dependent qualified name differs from the AK name
  PutSized(&attest, signer);
  const std::array<uint8_t, 32> qualifying = capsule::TpmQualifyingData(spec.report_data);
  PutSized(&attest, spec.extra_data ? std::span<const uint8_t>(*spec.extra_data)
                                    : std::span<const uint8_t>(qualifying));
  PutU64(&attest, spec.clock);
  PutU32(&attest, spec.reset_count);
  PutU32(&attest, spec.restart_count);
  attest.push_back(1);  // safe = YES
  PutU64(&attest, spec.firmware_version);
  if (spec.pcr_selection) {
    attest.insert(attest.end(), spec.pcr_selection->begin(), spec.pcr_selection->end());
  } else {
    PutU32(&attest, 1);
    PutU16(&attest, 0x000B);
    attest.insert(attest.end(), {3, 0x00, 0x00, 0x80});
  }
  const std::array<uint8_t, 32> pcr = capsule::TpmPcr23(spec.measurement, spec.report_data);
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(pcr.data(), pcr.size(), digest);
  PutSized(&attest, spec.pcr_digest ? std::span<const uint8_t>(*spec.pcr_digest)
                                    : std::span<const uint8_t>(digest, sizeof(digest)));

  // TPMT_SIGNATURE: ECDSA-SHA256 over the attest bytes, r and s 32 bytes each.
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  uint8_t der[80];
  size_t der_length = sizeof(der);
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, impl_->ak_key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), der, &der_length, attest.data(), attest.size()) != 1)
    return OpensslError("EVP_DigestSign");
  const uint8_t* p = der;
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_length)));
  uint8_t r[32], s[32];
  if (sig == nullptr || BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), r, 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), s, 32) != 32)
    return OpensslError("ECDSA signature");
  if (spec.flip_signature_bit) s[31] ^= 0x01;
  PutU16(&parts.signature, spec.signature_alg);
  PutU16(&parts.signature, 0x000B);
  PutSized(&parts.signature, r);
  PutSized(&parts.signature, s);
  return parts;
}

Result<std::vector<uint8_t>> SyntheticTpm::MakeEvidence(const TpmQuoteSpec& spec) const {
  MLC_ASSIGN_OR_RETURN(capsule::TpmEvidence parts, MakeEvidenceParts(spec));
  return capsule::EncodeTpmEvidence(parts);
}

const std::vector<uint8_t>& SyntheticTpm::root_der() const { return impl_->root_der; }
const std::vector<uint8_t>& SyntheticTpm::intermediate_der() const {
  return impl_->intermediate_der;
}
const std::vector<uint8_t>& SyntheticTpm::ek_cert_der() const { return impl_->ek_der; }
EVP_PKEY* SyntheticTpm::ek_private_key() const { return impl_->ek_key.get(); }

}  // namespace mlcapsule::server::evidence::testing
