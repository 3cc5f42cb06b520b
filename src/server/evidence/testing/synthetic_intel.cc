// The synthetic Intel SGX PKI and quote generator (see synthetic_intel.h): certificates, CRLs and
// collateral made with OpenSSL 3.0, mirroring the structure of the real Intel objects in
// /work/shared/attest-vectors (extensions, key usages, name encodings, JSON member order). Test
// code only: it trusts its options and never reads anything from outside.
#include "server/evidence/testing/synthetic_intel.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cstring>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "capsule/crypto.h"
#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence::testing {
namespace {

using OrderedJson = nlohmann::ordered_json;

// RAII owners beyond openssl_util.h's (X509Ptr, X509CrlPtr, EvpPkeyPtr, EvpMdCtxPtr, BioPtr).
// ASN1_TIME, ASN1_INTEGER and ASN1_OCTET_STRING are all ASN1_STRING.
using Asn1StringPtr = std::unique_ptr<ASN1_STRING, OpenSslFree<ASN1_STRING_free>>;
using Asn1ObjectPtr = std::unique_ptr<ASN1_OBJECT, OpenSslFree<ASN1_OBJECT_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OpenSslFree<X509_NAME_free>>;
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpenSslFree<X509_EXTENSION_free>>;
using X509RevokedPtr = std::unique_ptr<X509_REVOKED, OpenSslFree<X509_REVOKED_free>>;
using AuthorityKeyIdPtr = std::unique_ptr<AUTHORITY_KEYID, OpenSslFree<AUTHORITY_KEYID_free>>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpenSslFree<ECDSA_SIG_free>>;

// The Intel QE vendor ID every real quote carries (§3.1); the verifier requires it. The layout
// constants here are written out from the plan rather than taken from intel_quote.h, so that the
// generator checks the verifier's constants instead of sharing their mistakes.
constexpr uint8_t kIntelQeVendorId[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                          0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};
constexpr char kSgxExtensionOid[] = "1.2.840.113741.1.13.1";
constexpr size_t kReportBodyBytes = 384;

Status OpensslError(std::string_view what) {
  return InternalError("synthetic_intel: {} failed ({})", what, OpenSslErrors());
}

// Intel's JSON writes hex upper-case (fmspc "00A067110000"); dcap-qvl's members lower-case.
std::string HexUpper(std::span<const uint8_t> bytes) {
  std::string out = capsule::ToHex(bytes);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// --- A minimal DER writer for the SGX extension (definite lengths, non-negative INTEGERs). ---

void AppendTlv(std::vector<uint8_t>* out, uint8_t tag, std::span<const uint8_t> content) {
  out->push_back(tag);
  size_t n = content.size();
  if (n < 0x80) {
    out->push_back(static_cast<uint8_t>(n));
  } else {
    uint8_t length_bytes[sizeof(size_t)];
    int count = 0;
    for (size_t v = n; v != 0; v >>= 8) length_bytes[count++] = static_cast<uint8_t>(v);
    out->push_back(static_cast<uint8_t>(0x80 | count));
    for (int i = count - 1; i >= 0; --i) out->push_back(length_bytes[i]);
  }
  out->insert(out->end(), content.begin(), content.end());
}

// Minimal two's-complement big-endian: 255 becomes 02 02 00 FF, as in the real PCK (§2 step 6).
std::vector<uint8_t> DerUnsigned(uint8_t tag, uint64_t value) {
  std::vector<uint8_t> content;
  for (uint64_t v = value; v != 0; v >>= 8) content.insert(content.begin(), uint8_t(v & 0xff));
  if (content.empty() || (content[0] & 0x80) != 0) content.insert(content.begin(), 0);
  std::vector<uint8_t> out;
  AppendTlv(&out, tag, content);
  return out;
}

Result<std::vector<uint8_t>> DerOid(const std::string& dotted) {
  Asn1ObjectPtr object(OBJ_txt2obj(dotted.c_str(), 1));
  if (object == nullptr) return OpensslError("OBJ_txt2obj " + dotted);
  int n = i2d_ASN1_OBJECT(object.get(), nullptr);
  if (n <= 0) return OpensslError("i2d_ASN1_OBJECT");
  std::vector<uint8_t> out(static_cast<size_t>(n));
  uint8_t* p = out.data();
  i2d_ASN1_OBJECT(object.get(), &p);
  return out;
}

// SEQUENCE { OID oid, value }
Result<std::vector<uint8_t>> DerItem(const std::string& oid, std::span<const uint8_t> value_tlv) {
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> content, DerOid(oid));
  content.insert(content.end(), value_tlv.begin(), value_tlv.end());
  std::vector<uint8_t> out;
  AppendTlv(&out, 0x30, content);
  return out;
}

std::vector<uint8_t> DerOctets(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> out;
  AppendTlv(&out, 0x04, bytes);
  return out;
}

// The extension value exactly as in the real SGX PCK (§5.3): PPID, TCB (16 component SVNs,
// PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type.
Result<std::vector<uint8_t>> SgxExtensionValue(const SyntheticIntelOptions& o) {
  const std::string base = kSgxExtensionOid;
  std::vector<uint8_t> items;
  auto append = [&items](const std::vector<uint8_t>& item) {
    items.insert(items.end(), item.begin(), item.end());
  };
  MLC_ASSIGN_OR_RETURN(auto ppid, DerItem(base + ".1", DerOctets(o.ppid)));
  append(ppid);

  std::vector<uint8_t> tcb_items;
  for (int k = 0; k < 16; ++k) {
    MLC_ASSIGN_OR_RETURN(auto item, DerItem(base + ".2." + std::to_string(k + 1),
                                            DerUnsigned(0x02, o.pck_components[k])));
    tcb_items.insert(tcb_items.end(), item.begin(), item.end());
  }
  MLC_ASSIGN_OR_RETURN(auto pcesvn, DerItem(base + ".2.17", DerUnsigned(0x02, o.pck_pce_svn)));
  tcb_items.insert(tcb_items.end(), pcesvn.begin(), pcesvn.end());
  MLC_ASSIGN_OR_RETURN(auto cpusvn, DerItem(base + ".2.18", DerOctets(o.pck_cpu_svn)));
  tcb_items.insert(tcb_items.end(), cpusvn.begin(), cpusvn.end());
  std::vector<uint8_t> tcb_sequence;
  AppendTlv(&tcb_sequence, 0x30, tcb_items);
  MLC_ASSIGN_OR_RETURN(auto tcb, DerItem(base + ".2", tcb_sequence));
  append(tcb);

  MLC_ASSIGN_OR_RETURN(auto pce_id, DerItem(base + ".3", DerOctets(o.pce_id)));
  append(pce_id);
  MLC_ASSIGN_OR_RETURN(auto fmspc, DerItem(base + ".4", DerOctets(o.fmspc)));
  append(fmspc);
  MLC_ASSIGN_OR_RETURN(auto sgx_type, DerItem(base + ".5", DerUnsigned(0x0a, o.sgx_type)));
  append(sgx_type);

  std::vector<uint8_t> out;
  AppendTlv(&out, 0x30, items);
  return out;
}

// --- Certificates and CRLs ---

Result<EvpPkeyPtr> NewP256Key() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) return OpensslError("EVP_PKEY_Q_keygen P-256");
  return key;
}

// The subject of every certificate: CN plus the organisation fields Intel uses, with O naming
// this as a test PKI so that no certificate made here can be mistaken for Intel's.
Result<X509NamePtr> MakeName(const std::string& common_name) {
  X509NamePtr name(X509_NAME_new());
  if (name == nullptr) return OpensslError("X509_NAME_new");
  const std::pair<const char*, const char*> entries[] = {
      {"CN", common_name.c_str()},
      {"O", "MLCapsule Synthetic Test PKI"},
      {"L", "Santa Clara"},
      {"ST", "CA"},
      {"C", "US"},
  };
  for (const auto& [field, value] : entries) {
    if (X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value), -1, -1, 0) != 1) {
      return OpensslError("X509_NAME_add_entry_by_txt");
    }
  }
  return name;
}

Result<Asn1StringPtr> MakeTime(int64_t unix_seconds) {
  Asn1StringPtr time(ASN1_TIME_set(nullptr, static_cast<time_t>(unix_seconds)));
  if (time == nullptr) return OpensslError("ASN1_TIME_set");
  return time;
}

Status AddConfExtension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, nullptr, cert, nullptr, nullptr, 0);
  X509ExtensionPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpensslError(std::string("extension ") + value);
  }
  return Status::Ok();
}

// SHA-1 of the subject public key bits (RFC 5280 method 1), as Intel's certificates carry.
Result<Asn1StringPtr> KeyIdentifier(X509* cert) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_pubkey_digest(cert, EVP_sha1(), digest, &length) != 1) {
    return OpensslError("X509_pubkey_digest");
  }
  Asn1StringPtr id(ASN1_OCTET_STRING_new());
  if (id == nullptr || ASN1_OCTET_STRING_set(id.get(), digest, static_cast<int>(length)) != 1) {
    return OpensslError("ASN1_OCTET_STRING_set");
  }
  return id;
}

Result<AuthorityKeyIdPtr> AuthorityKeyId(const ASN1_OCTET_STRING* issuer_key_id) {
  AuthorityKeyIdPtr akid(AUTHORITY_KEYID_new());
  if (akid == nullptr) return OpensslError("AUTHORITY_KEYID_new");
  akid->keyid = ASN1_OCTET_STRING_dup(issuer_key_id);
  if (akid->keyid == nullptr) return OpensslError("ASN1_OCTET_STRING_dup");
  return akid;
}

struct CertSpec {
  std::string common_name;
  uint64_t serial = 0;
  bool ca = false;
  int path_length = -1;  // CA only; -1: none
  int64_t not_before = 0;
  int64_t not_after = 0;
  std::vector<uint8_t> sgx_extension;  // empty: none
};

// A v3 certificate for `subject_key`, signed by `issuer_key` (issuer == nullptr: self-signed).
Result<X509Ptr> MakeCertificate(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                                EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return OpensslError("X509_new");
  }
  if (ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), spec.serial) != 1) {
    return OpensslError("serial");
  }
  MLC_ASSIGN_OR_RETURN(X509NamePtr subject, MakeName(spec.common_name));
  if (X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(
          cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : subject.get()) != 1) {
    return OpensslError("names");
  }
  MLC_ASSIGN_OR_RETURN(Asn1StringPtr not_before, MakeTime(spec.not_before));
  MLC_ASSIGN_OR_RETURN(Asn1StringPtr not_after, MakeTime(spec.not_after));
  if (X509_set1_notBefore(cert.get(), not_before.get()) != 1 ||
      X509_set1_notAfter(cert.get(), not_after.get()) != 1) {
    return OpensslError("validity");
  }
  if (X509_set_pubkey(cert.get(), subject_key) != 1) return OpensslError("X509_set_pubkey");

  // Extension order as in Intel's certificates: AKI, (CRL DP omitted), SKI, key usage, basic
  // constraints, then the SGX extension.
  MLC_ASSIGN_OR_RETURN(Asn1StringPtr key_id, KeyIdentifier(cert.get()));
  const ASN1_OCTET_STRING* issuer_key_id =
      issuer != nullptr ? X509_get0_subject_key_id(issuer) : key_id.get();
  if (issuer_key_id == nullptr) return InternalError("synthetic_intel: issuer has no SKI");
  MLC_ASSIGN_OR_RETURN(AuthorityKeyIdPtr akid, AuthorityKeyId(issuer_key_id));
  if (X509_add1_ext_i2d(cert.get(), NID_authority_key_identifier, akid.get(), 0,
                        X509V3_ADD_DEFAULT) != 1 ||
      X509_add1_ext_i2d(cert.get(), NID_subject_key_identifier, key_id.get(), 0,
                        X509V3_ADD_DEFAULT) != 1) {
    return OpensslError("key identifiers");
  }
  if (spec.ca) {
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
    std::string constraints = "critical,CA:TRUE";
    if (spec.path_length >= 0) constraints += ",pathlen:" + std::to_string(spec.path_length);
    MLC_RETURN_IF_ERROR(AddConfExtension(cert.get(), NID_basic_constraints, constraints.c_str()));
  } else {
    MLC_RETURN_IF_ERROR(
        AddConfExtension(cert.get(), NID_key_usage, "critical,digitalSignature,nonRepudiation"));
    MLC_RETURN_IF_ERROR(AddConfExtension(cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  }
  if (!spec.sgx_extension.empty()) {
    Asn1ObjectPtr oid(OBJ_txt2obj(kSgxExtensionOid, 1));
    Asn1StringPtr value(ASN1_OCTET_STRING_new());
    if (oid == nullptr || value == nullptr ||
        ASN1_OCTET_STRING_set(value.get(), spec.sgx_extension.data(),
                              static_cast<int>(spec.sgx_extension.size())) != 1) {
      return OpensslError("SGX extension value");
    }
    X509ExtensionPtr ext(X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 0, value.get()));
    if (ext == nullptr || X509_add_ext(cert.get(), ext.get(), -1) != 1) {
      return OpensslError("SGX extension");
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return OpensslError("X509_sign");
  return cert;
}

Result<X509CrlPtr> MakeCrl(X509* issuer, EVP_PKEY* issuer_key, int64_t this_update,
                           int64_t next_update, const std::vector<uint64_t>& revoked) {
  X509CrlPtr crl(X509_CRL_new());
  if (crl == nullptr || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuer)) != 1) {
    return OpensslError("X509_CRL_new");
  }
  MLC_ASSIGN_OR_RETURN(Asn1StringPtr last, MakeTime(this_update));
  MLC_ASSIGN_OR_RETURN(Asn1StringPtr next, MakeTime(next_update));
  if (X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return OpensslError("CRL dates");
  }
  for (uint64_t serial : revoked) {
    X509RevokedPtr entry(X509_REVOKED_new());
    Asn1StringPtr number(ASN1_INTEGER_new());
    if (entry == nullptr || number == nullptr ||
        ASN1_INTEGER_set_uint64(number.get(), serial) != 1 ||
        X509_REVOKED_set_serialNumber(entry.get(), number.get()) != 1 ||
        X509_REVOKED_set_revocationDate(entry.get(), last.get()) != 1 ||
        X509_CRL_add0_revoked(crl.get(), entry.get()) != 1) {
      return OpensslError("CRL entry");
    }
    entry.release();  // owned by the CRL now
  }
  Asn1StringPtr crl_number(ASN1_INTEGER_new());
  if (crl_number == nullptr || ASN1_INTEGER_set(crl_number.get(), 1) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, crl_number.get(), 0, 0) != 1) {
    return OpensslError("CRL number");
  }
  const ASN1_OCTET_STRING* issuer_key_id = X509_get0_subject_key_id(issuer);
  if (issuer_key_id == nullptr) return InternalError("synthetic_intel: CRL issuer has no SKI");
  MLC_ASSIGN_OR_RETURN(AuthorityKeyIdPtr akid, AuthorityKeyId(issuer_key_id));
  if (X509_CRL_add1_ext_i2d(crl.get(), NID_authority_key_identifier, akid.get(), 0, 0) != 1) {
    return OpensslError("CRL AKI");
  }
  if (X509_CRL_sort(crl.get()) != 1 || X509_CRL_sign(crl.get(), issuer_key, EVP_sha256()) <= 0) {
    return OpensslError("X509_CRL_sign");
  }
  return crl;
}

Result<std::vector<uint8_t>> CrlDer(X509_CRL* crl) {
  int n = i2d_X509_CRL(crl, nullptr);
  if (n <= 0) return OpensslError("i2d_X509_CRL");
  std::vector<uint8_t> out(static_cast<size_t>(n));
  uint8_t* p = out.data();
  i2d_X509_CRL(crl, &p);
  return out;
}

Result<std::string> PemChain(std::initializer_list<X509*> certs) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr) return OpensslError("BIO_new");
  for (X509* cert : certs) {
    if (PEM_write_bio_X509(bio.get(), cert) != 1) return OpensslError("PEM_write_bio_X509");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// ECDSA P-256 / SHA-256 over `message`, as Intel's raw 64-byte big-endian r||s.
Result<std::array<uint8_t, 64>> SignRaw(EVP_PKEY* key, std::span<const uint8_t> message) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  uint8_t der[80];
  size_t der_length = sizeof(der);
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), der, &der_length, message.data(), message.size()) != 1) {
    return OpensslError("EVP_DigestSign");
  }
  const uint8_t* p = der;
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_length)));
  if (sig == nullptr) return OpensslError("d2i_ECDSA_SIG");
  std::array<uint8_t, 64> raw{};
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw.data(), 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw.data() + 32, 32) != 32) {
    return OpensslError("BN_bn2binpad");
  }
  return raw;
}

// The uncompressed point without its 04 prefix: the quote's 64-byte attestation key.
Result<std::array<uint8_t, 64>> RawPublicKey(EVP_PKEY* key) {
  uint8_t point[65];
  size_t length = 0;
  if (EVP_PKEY_get_octet_string_param(key, "encoded-pub-key", point, sizeof(point), &length) != 1 ||
      length != 65 || point[0] != 0x04) {
    return OpensslError("encoded public key");
  }
  std::array<uint8_t, 64> raw{};
  std::memcpy(raw.data(), point + 1, 64);
  return raw;
}

template <typename T>
void PutLe(uint8_t* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<uint8_t>(uint64_t(value) >> (8 * i));
}

// A 384-byte report body (§3.1), every reserved byte zero.
std::array<uint8_t, kReportBodyBytes> ReportBody(std::span<const uint8_t, 16> cpu_svn,
                                                 uint64_t flags, uint64_t xfrm,
                                                 std::span<const uint8_t, 32> mr_enclave,
                                                 std::span<const uint8_t, 32> mr_signer,
                                                 uint16_t isv_prod_id, uint16_t isv_svn,
                                                 std::span<const uint8_t, 64> report_data) {
  std::array<uint8_t, kReportBodyBytes> body{};
  std::memcpy(body.data(), cpu_svn.data(), 16);
  PutLe<uint64_t>(body.data() + 48, flags);
  PutLe<uint64_t>(body.data() + 56, xfrm);
  std::memcpy(body.data() + 64, mr_enclave.data(), 32);
  std::memcpy(body.data() + 128, mr_signer.data(), 32);
  PutLe<uint16_t>(body.data() + 256, isv_prod_id);
  PutLe<uint16_t>(body.data() + 258, isv_svn);
  std::memcpy(body.data() + 320, report_data.data(), 64);
  return body;
}

OrderedJson AdvisoryArray(const std::vector<std::string>& ids) {
  OrderedJson array = OrderedJson::array();
  for (const std::string& id : ids) array.push_back(id);
  return array;
}

std::string TcbInfoJson(const SyntheticIntelOptions& o) {
  std::vector<SyntheticTcbLevel> levels = o.tcb_levels;
  if (levels.empty()) {
    SyntheticTcbLevel level;
    level.sgx_components = o.pck_components;
    level.pce_svn = o.pck_pce_svn;
    levels.push_back(level);
  }
  OrderedJson tcb_levels = OrderedJson::array();
  for (const SyntheticTcbLevel& level : levels) {
    OrderedJson components = OrderedJson::array();
    for (uint8_t svn : level.sgx_components) components.push_back({{"svn", svn}});
    OrderedJson entry;
    entry["tcb"] = {{"sgxtcbcomponents", components}, {"pcesvn", level.pce_svn}};
    entry["tcbDate"] = level.tcb_date;
    entry["tcbStatus"] = level.status;
    if (!level.advisory_ids.empty()) entry["advisoryIDs"] = AdvisoryArray(level.advisory_ids);
    tcb_levels.push_back(std::move(entry));
  }
  OrderedJson info;
  info["id"] = "SGX";
  info["version"] = 3;
  info["issueDate"] = FormatUtc(o.collateral_issue_date);
  info["nextUpdate"] = FormatUtc(o.collateral_next_update);
  info["fmspc"] = HexUpper(o.tcb_info_fmspc.value_or(o.fmspc));
  info["pceId"] = HexUpper(o.tcb_info_pce_id.value_or(o.pce_id));
  info["tcbType"] = 0;
  info["tcbEvaluationDataNumber"] = 17;
  info["tcbLevels"] = std::move(tcb_levels);
  return info.dump();  // compact, members in insertion order: the exact text that is signed
}

std::string QeIdentityJson(const SyntheticIntelOptions& o) {
  std::vector<SyntheticQeLevel> levels = o.qe_levels;
  if (levels.empty()) {
    SyntheticQeLevel level;
    level.isv_svn = 8;
    levels.push_back(level);
  }
  OrderedJson tcb_levels = OrderedJson::array();
  for (const SyntheticQeLevel& level : levels) {
    OrderedJson entry;
    entry["tcb"] = {{"isvsvn", level.isv_svn}};
    entry["tcbDate"] = level.tcb_date;
    entry["tcbStatus"] = level.status;
    if (!level.advisory_ids.empty()) entry["advisoryIDs"] = AdvisoryArray(level.advisory_ids);
    tcb_levels.push_back(std::move(entry));
  }
  OrderedJson identity;
  identity["id"] = "QE";
  identity["version"] = 2;
  identity["issueDate"] = FormatUtc(o.collateral_issue_date);
  identity["nextUpdate"] = FormatUtc(o.collateral_next_update);
  identity["tcbEvaluationDataNumber"] = 17;
  identity["miscselect"] = "00000000";
  identity["miscselectMask"] = "FFFFFFFF";
  // The QE's attributes (0x15: INIT, MODE64BIT, PROVISIONKEY) under the mask 0xFB.
  identity["attributes"] = "11000000000000000000000000000000";
  identity["attributesMask"] = "FBFFFFFFFFFFFFFF0000000000000000";
  identity["mrsigner"] = HexUpper(o.qe_mr_signer);
  identity["isvprodid"] = o.qe_isv_prod_id;
  identity["tcbLevels"] = std::move(tcb_levels);
  return identity.dump();
}

constexpr uint64_t kQeAttributeFlags = 0x15;
constexpr uint64_t kQeXfrm = 0xe7;

}  // namespace

struct SyntheticIntelPki::Impl {
  SyntheticIntelOptions options;
  EvpPkeyPtr root_key, processor_key, pck_key, tcb_signing_key, attestation_key;
  X509Ptr root, processor_ca, pck_leaf, tcb_signing;
  std::vector<uint8_t> root_der, pck_leaf_der;
  std::string collateral_json;
  // Everything after the quote signature (att key, QE report and its signature, QE auth data,
  // certification data): the same for every quote.
  std::vector<uint8_t> signature_tail;
};

SyntheticIntelPki::SyntheticIntelPki(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SyntheticIntelPki::~SyntheticIntelPki() = default;

Result<std::unique_ptr<SyntheticIntelPki>> SyntheticIntelPki::Create(
    const SyntheticIntelOptions& options) {
  if (options.qe_auth_data.size() > 0xffff) {
    return InvalidArgument("synthetic_intel: QE auth data of {} bytes is over 65535",
                           options.qe_auth_data.size());
  }
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.options = options;
  MLC_ASSIGN_OR_RETURN(s.root_key, NewP256Key());
  MLC_ASSIGN_OR_RETURN(s.processor_key, NewP256Key());
  MLC_ASSIGN_OR_RETURN(s.pck_key, NewP256Key());
  MLC_ASSIGN_OR_RETURN(s.tcb_signing_key, NewP256Key());
  MLC_ASSIGN_OR_RETURN(s.attestation_key, NewP256Key());

  CertSpec root_spec{.common_name = "Synthetic SGX Root CA",
                     .serial = kSyntheticRootSerial,
                     .ca = true,
                     .path_length = 1,
                     .not_before = options.cert_not_before,
                     .not_after = options.cert_not_after};
  MLC_ASSIGN_OR_RETURN(s.root,
                       MakeCertificate(root_spec, s.root_key.get(), nullptr, s.root_key.get()));
  // The verifier checks the intermediates' CNs exactly (plan §3.2 step 2, §5.1), so those two
  // carry Intel's names; O names the test PKI, and the root (pinned by its bytes) and the leaf
  // (checked for "SGX PCK Certificate") say "Synthetic".
  CertSpec processor_spec{.common_name = "Intel SGX PCK Processor CA",
                          .serial = kSyntheticProcessorCaSerial,
                          .ca = true,
                          .path_length = 0,
                          .not_before = options.cert_not_before,
                          .not_after = options.cert_not_after};
  MLC_ASSIGN_OR_RETURN(s.processor_ca, MakeCertificate(processor_spec, s.processor_key.get(),
                                                       s.root.get(), s.root_key.get()));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> sgx_extension, SgxExtensionValue(options));
  CertSpec leaf_spec{.common_name = "Synthetic SGX PCK Certificate",
                     .serial = options.pck_serial,
                     .not_before = options.cert_not_before,
                     .not_after = options.cert_not_after,
                     .sgx_extension = std::move(sgx_extension)};
  MLC_ASSIGN_OR_RETURN(s.pck_leaf, MakeCertificate(leaf_spec, s.pck_key.get(), s.processor_ca.get(),
                                                   s.processor_key.get()));
  CertSpec tcb_spec{.common_name = "Intel SGX TCB Signing",
                    .serial = kSyntheticTcbSigningSerial,
                    .not_before = options.cert_not_before,
                    .not_after = options.cert_not_after};
  MLC_ASSIGN_OR_RETURN(s.tcb_signing, MakeCertificate(tcb_spec, s.tcb_signing_key.get(),
                                                      s.root.get(), s.root_key.get()));
  s.root_der = CertificateDer(s.root.get());
  s.pck_leaf_der = CertificateDer(s.pck_leaf.get());
  if (s.root_der.empty() || s.pck_leaf_der.empty()) return OpensslError("i2d_X509");

  // Collateral.
  MLC_ASSIGN_OR_RETURN(X509CrlPtr root_crl,
                       MakeCrl(s.root.get(), s.root_key.get(), options.collateral_issue_date,
                               options.collateral_next_update, options.root_revoked_serials));
  MLC_ASSIGN_OR_RETURN(
      X509CrlPtr pck_crl,
      MakeCrl(s.processor_ca.get(), s.processor_key.get(), options.collateral_issue_date,
              options.collateral_next_update, options.pck_revoked_serials));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> root_crl_der, CrlDer(root_crl.get()));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> pck_crl_der, CrlDer(pck_crl.get()));
  MLC_ASSIGN_OR_RETURN(std::string pck_issuer_chain,
                       PemChain({s.processor_ca.get(), s.root.get()}));
  MLC_ASSIGN_OR_RETURN(std::string tcb_issuer_chain, PemChain({s.tcb_signing.get(), s.root.get()}));

  EvpPkeyPtr wrong_key;
  if (options.tcb_info_signed_by_wrong_key || options.qe_identity_signed_by_wrong_key) {
    MLC_ASSIGN_OR_RETURN(wrong_key, NewP256Key());
  }
  const std::string tcb_info = TcbInfoJson(options);
  const std::string qe_identity = QeIdentityJson(options);
  auto as_bytes = [](const std::string& text) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  };
  MLC_ASSIGN_OR_RETURN(
      auto tcb_info_signature,
      SignRaw(options.tcb_info_signed_by_wrong_key ? wrong_key.get() : s.tcb_signing_key.get(),
              as_bytes(tcb_info)));
  MLC_ASSIGN_OR_RETURN(
      auto qe_identity_signature,
      SignRaw(options.qe_identity_signed_by_wrong_key ? wrong_key.get() : s.tcb_signing_key.get(),
              as_bytes(qe_identity)));
  OrderedJson collateral;  // dcap-qvl's member order
  collateral["pck_crl_issuer_chain"] = pck_issuer_chain;
  collateral["root_ca_crl"] = capsule::ToHex(root_crl_der);
  collateral["pck_crl"] = capsule::ToHex(pck_crl_der);
  collateral["tcb_info_issuer_chain"] = tcb_issuer_chain;
  collateral["tcb_info"] = tcb_info;
  collateral["tcb_info_signature"] = capsule::ToHex(tcb_info_signature);
  collateral["qe_identity_issuer_chain"] = tcb_issuer_chain;
  collateral["qe_identity"] = qe_identity;
  collateral["qe_identity_signature"] = capsule::ToHex(qe_identity_signature);
  s.collateral_json = collateral.dump();

  // The QE half of every quote: its report binds the attestation key and auth data, and is
  // signed by the PCK leaf key.
  MLC_ASSIGN_OR_RETURN(auto attestation_public, RawPublicKey(s.attestation_key.get()));
  std::array<uint8_t, 64> qe_report_data{};
  {
    std::vector<uint8_t> bound(attestation_public.begin(), attestation_public.end());
    bound.insert(bound.end(), options.qe_auth_data.begin(), options.qe_auth_data.end());
    SHA256(bound.data(), bound.size(), qe_report_data.data());
  }
  const std::array<uint8_t, kReportBodyBytes> qe_report =
      ReportBody(options.pck_cpu_svn, kQeAttributeFlags, kQeXfrm, options.qe_mr_enclave,
                 options.qe_mr_signer, options.qe_isv_prod_id, options.qe_isv_svn, qe_report_data);
  MLC_ASSIGN_OR_RETURN(auto qe_signature, SignRaw(s.pck_key.get(), qe_report));
  MLC_ASSIGN_OR_RETURN(std::string quote_chain,
                       PemChain({s.pck_leaf.get(), s.processor_ca.get(), s.root.get()}));
  quote_chain.push_back('\0');  // the real quote counts a trailing NUL in the size

  std::vector<uint8_t>& tail = s.signature_tail;
  auto append = [&tail](const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    tail.insert(tail.end(), p, p + n);
  };
  uint8_t u16[2], u32[4];
  append(attestation_public.data(), attestation_public.size());
  append(qe_report.data(), qe_report.size());
  append(qe_signature.data(), qe_signature.size());
  PutLe<uint16_t>(u16, static_cast<uint16_t>(options.qe_auth_data.size()));
  append(u16, 2);
  append(options.qe_auth_data.data(), options.qe_auth_data.size());
  PutLe<uint16_t>(u16, 5);  // certification data type 5: PCK chain, PEM
  append(u16, 2);
  PutLe<uint32_t>(u32, static_cast<uint32_t>(quote_chain.size()));
  append(u32, 4);
  append(quote_chain.data(), quote_chain.size());

  return std::unique_ptr<SyntheticIntelPki>(new SyntheticIntelPki(std::move(impl)));
}

TrustAnchors SyntheticIntelPki::Anchors() const {
  TrustAnchors anchors = TrustAnchors::Pinned();
  anchors.intel_root_der = impl_->root_der;
  return anchors;
}

std::string SyntheticIntelPki::CollateralJson() const { return impl_->collateral_json; }

Result<std::vector<uint8_t>> SyntheticIntelPki::MakeSgxQuote(const SgxEnclaveSpec& enclave) const {
  const SyntheticIntelOptions& o = impl_->options;
  const std::vector<uint8_t>& tail = impl_->signature_tail;
  std::vector<uint8_t> quote(kSgxQuoteSignedBytes + 4 + 64 + tail.size());
  uint8_t* q = quote.data();
  PutLe<uint16_t>(q + 0, 3);  // version
  PutLe<uint16_t>(q + 2, 2);  // att_key_type: ECDSA-256 with P-256
  PutLe<uint32_t>(q + 4, 0);  // tee_type: SGX
  PutLe<uint16_t>(q + 8, o.qe_isv_svn);
  PutLe<uint16_t>(q + 10, o.pck_pce_svn);
  std::memcpy(q + 12, kIntelQeVendorId, sizeof(kIntelQeVendorId));
  const std::array<uint8_t, kReportBodyBytes> body =
      ReportBody(enclave.cpu_svn, enclave.attribute_flags, enclave.xfrm, enclave.mr_enclave,
                 enclave.mr_signer, enclave.isv_prod_id, enclave.isv_svn, enclave.report_data);
  std::memcpy(q + kSgxQuoteReportBodyOffset, body.data(), body.size());
  PutLe<uint32_t>(q + kSgxQuoteSignedBytes, static_cast<uint32_t>(64 + tail.size()));
  MLC_ASSIGN_OR_RETURN(auto signature, SignRaw(impl_->attestation_key.get(),
                                               std::span<const uint8_t>(q, kSgxQuoteSignedBytes)));
  std::memcpy(q + kSgxQuoteSignedBytes + 4, signature.data(), 64);
  std::memcpy(q + kSgxQuoteSignedBytes + 4 + 64, tail.data(), tail.size());
  return quote;
}

const std::vector<uint8_t>& SyntheticIntelPki::root_der() const { return impl_->root_der; }
const std::vector<uint8_t>& SyntheticIntelPki::pck_leaf_der() const { return impl_->pck_leaf_der; }
const SyntheticIntelOptions& SyntheticIntelPki::options() const { return impl_->options; }

}  // namespace mlcapsule::server::evidence::testing
