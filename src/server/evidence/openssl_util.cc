// OpenSSL 3.0 helpers of the evidence verifiers (see openssl_util.h). Every return value of an
// OpenSSL call is checked, a verify call counts as success only when it returns exactly 1, and
// the thread's error queue is drained before returning so one failure never leaks into the next
// call's message. Inputs are untrusted: lengths are bounded before they reach OpenSSL's `long`.
#include "server/evidence/openssl_util.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <climits>
#include <cstring>

namespace mlcapsule::server::evidence {
namespace {

// Certificates, CRLs and extensions of the vendors are a few KiB; anything far larger is hostile.
constexpr size_t kMaxDerBytes = size_t{1} << 20;

using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, OpenSslFree<ECDSA_SIG_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpenSslFree<BN_free>>;
using Asn1ObjectPtr = std::unique_ptr<ASN1_OBJECT, OpenSslFree<ASN1_OBJECT_free>>;
struct X509StackFree {
  void operator()(STACK_OF(X509) * stack) const { sk_X509_free(stack); }
};
struct CrlStackFree {
  void operator()(STACK_OF(X509_CRL) * stack) const { sk_X509_CRL_free(stack); }
};

int64_t UnixFromCivil(int year, unsigned month, unsigned day, int hour, int minute, int second) {
  using namespace std::chrono;
  const sys_days days{std::chrono::year{year} / std::chrono::month{month} / std::chrono::day{day}};
  return static_cast<int64_t>(days.time_since_epoch().count()) * 86400 + hour * 3600 + minute * 60 +
         second;
}

std::string CertLabel(X509* cert) {
  std::string cn = CommonName(cert);
  return cn.empty() ? NameText(X509_get_subject_name(cert)) : cn;
}

Status CheckWindow(const ValidityWindow& window, int64_t now, std::string_view check,
                   std::string_view what) {
  if (now < window.not_before || now > window.not_after)
    return InvalidArgument("{}: {} is not valid at {} (valid {} .. {})", check, what,
                           FormatUtc(now), FormatUtc(window.not_before),
                           FormatUtc(window.not_after));
  return Status::Ok();
}

}  // namespace

std::string OpenSslErrors() {
  std::string out;
  for (unsigned long code = ERR_get_error(); code != 0; code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!out.empty()) out += "; ";
    out += buffer;
  }
  return out;
}

Result<X509Ptr> ParseDerCertificate(std::span<const uint8_t> der, std::string_view what) {
  if (der.empty() || der.size() > kMaxDerBytes)
    return InvalidArgument("{}: certificate size {} is out of range 1..{}", what, der.size(),
                           kMaxDerBytes);
  const uint8_t* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return InvalidArgument("{}: not a DER certificate ({})", what, OpenSslErrors());
  if (p != der.data() + der.size()) {
    ERR_clear_error();
    return InvalidArgument("{}: {} trailing bytes after the certificate", what,
                           der.data() + der.size() - p);
  }
  return cert;
}

Result<std::vector<X509Ptr>> ParsePemCertificates(std::string_view pem, std::string_view what) {
  while (!pem.empty() && pem.back() == '\0') pem.remove_suffix(1);
  if (pem.empty() || pem.size() > kMaxDerBytes)
    return InvalidArgument("{}: PEM size {} is out of range 1..{}", what, pem.size(), kMaxDerBytes);
  if (pem.find('\0') != std::string_view::npos)
    return InvalidArgument("{}: PEM text contains a NUL byte before its end", what);
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return InternalError("{}: BIO_new_mem_buf failed ({})", what, OpenSslErrors());
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    certs.push_back(std::move(cert));
    if (certs.size() > 16) {
      ERR_clear_error();
      return InvalidArgument("{}: more than 16 certificates", what);
    }
  }
  // The loop ends with "no start line" at the end of the data; anything else is a broken entry.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE))
    return InvalidArgument("{}: malformed PEM certificate after {} good ones ({})", what,
                           certs.size(), OpenSslErrors());
  ERR_clear_error();
  if (certs.empty()) return InvalidArgument("{}: no PEM certificate found", what);
  return certs;
}

Result<std::vector<std::vector<uint8_t>>> PemCertificateBlocks(std::string_view pem,
                                                               std::string_view what) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  static constexpr std::string_view kSpace = " \t\r\n";
  while (!pem.empty() && pem.back() == '\0') pem.remove_suffix(1);
  if (pem.size() > kMaxDerBytes)
    return InvalidArgument("{}: PEM size {} is over the limit {}", what, pem.size(), kMaxDerBytes);
  std::vector<std::vector<uint8_t>> blocks;
  size_t pos = 0;
  while (true) {
    const size_t begin = pem.find(kBegin, pos);
    const std::string_view gap =
        pem.substr(pos, begin == std::string_view::npos ? std::string_view::npos : begin - pos);
    if (gap.find_first_not_of(kSpace) != std::string_view::npos)
      return InvalidArgument("{}: unexpected text outside the PEM certificates at offset {}", what,
                             pos + gap.find_first_not_of(kSpace));
    if (begin == std::string_view::npos) break;
    const size_t body = begin + kBegin.size();
    const size_t end = pem.find(kEnd, body);
    if (end == std::string_view::npos)
      return InvalidArgument("{}: PEM certificate {} has no END line", what, blocks.size());
    if (blocks.size() == 16) return InvalidArgument("{}: more than 16 certificates", what);
    // Base64 with line breaks: EVP_DecodeUpdate skips whitespace and rejects anything else.
    const std::string_view text = pem.substr(body, end - body);
    std::vector<uint8_t> der(text.size() / 4 * 3 + 80);
    std::unique_ptr<EVP_ENCODE_CTX, OpenSslFree<EVP_ENCODE_CTX_free>> ctx(EVP_ENCODE_CTX_new());
    if (!ctx) return InternalError("{}: EVP_ENCODE_CTX_new ({})", what, OpenSslErrors());
    EVP_DecodeInit(ctx.get());
    int size = 0, tail = 0;
    if (EVP_DecodeUpdate(ctx.get(), der.data(), &size,
                         reinterpret_cast<const unsigned char*>(text.data()),
                         static_cast<int>(text.size())) < 0 ||
        EVP_DecodeFinal(ctx.get(), der.data() + size, &tail) != 1) {
      ERR_clear_error();
      return InvalidArgument("{}: PEM certificate {} is not valid base64", what, blocks.size());
    }
    der.resize(static_cast<size_t>(size + tail));
    if (der.empty()) return InvalidArgument("{}: PEM certificate {} is empty", what, blocks.size());
    blocks.push_back(std::move(der));
    pos = end + kEnd.size();
  }
  if (blocks.empty()) return InvalidArgument("{}: no PEM certificate found", what);
  return blocks;
}

Result<X509Ptr> ParseCertificate(std::span<const uint8_t> bytes, std::string_view what) {
  if (!bytes.empty() && bytes[0] == DerReader::kSequence) return ParseDerCertificate(bytes, what);
  MLC_ASSIGN_OR_RETURN(
      std::vector<X509Ptr> certs,
      ParsePemCertificates(
          std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), what));
  if (certs.size() != 1)
    return InvalidArgument("{}: {} PEM certificates where one was expected", what, certs.size());
  return std::move(certs[0]);
}

Result<X509CrlPtr> ParseDerCrl(std::span<const uint8_t> der, std::string_view what) {
  if (der.empty() || der.size() > kMaxDerBytes)
    return InvalidArgument("{}: CRL size {} is out of range 1..{}", what, der.size(), kMaxDerBytes);
  const uint8_t* p = der.data();
  X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (!crl) return InvalidArgument("{}: not a DER CRL ({})", what, OpenSslErrors());
  if (p != der.data() + der.size()) {
    ERR_clear_error();
    return InvalidArgument("{}: {} trailing bytes after the CRL", what,
                           der.data() + der.size() - p);
  }
  return crl;
}

std::vector<uint8_t> CertificateDer(X509* cert) {
  const int size = i2d_X509(cert, nullptr);
  if (size <= 0) {
    ERR_clear_error();
    return {};
  }
  std::vector<uint8_t> der(static_cast<size_t>(size));
  uint8_t* p = der.data();
  if (i2d_X509(cert, &p) != size) {
    ERR_clear_error();
    return {};
  }
  return der;
}

std::string CommonName(X509* cert) {
  const X509_NAME* name = X509_get_subject_name(cert);
  if (name == nullptr) return "";
  const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return "";
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int size = ASN1_STRING_to_UTF8(&utf8, data);
  if (size < 0) {
    ERR_clear_error();
    return "";
  }
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<size_t>(size));
  OPENSSL_free(utf8);
  return out;
}

std::string NameText(const X509_NAME* name) {
  if (name == nullptr) return "";
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    ERR_clear_error();
    return "";
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return size > 0 ? std::string(data, static_cast<size_t>(size)) : std::string();
}

Result<int64_t> Asn1TimeToUnix(const ASN1_TIME* time, std::string_view what) {
  struct tm tm {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    ERR_clear_error();
    return InvalidArgument("{}: malformed time", what);
  }
  return UnixFromCivil(tm.tm_year + 1900, static_cast<unsigned>(tm.tm_mon + 1),
                       static_cast<unsigned>(tm.tm_mday), tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string FormatUtc(int64_t unix_seconds) {
  using namespace std::chrono;
  const sys_seconds t{seconds{unix_seconds}};
  const sys_days day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<seconds> hms{t - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count());
}

Result<int64_t> ParseIntelDate(std::string_view text) {
  auto bad = [&] {
    return InvalidArgument("date '{}' is not of the form YYYY-MM-DDThh:mm:ssZ", text.substr(0, 40));
  };
  if (text.size() != 20) return bad();
  static constexpr char kShape[] = "dddd-dd-ddTdd:dd:ddZ";
  for (size_t i = 0; i < 20; ++i) {
    if (kShape[i] == 'd' ? (text[i] < '0' || text[i] > '9') : text[i] != kShape[i]) return bad();
  }
  auto number = [&](size_t at, size_t digits) {
    int value = 0;
    for (size_t i = 0; i < digits; ++i) value = value * 10 + (text[at + i] - '0');
    return value;
  };
  const int year = number(0, 4), month = number(5, 2), day = number(8, 2);
  const int hour = number(11, 2), minute = number(14, 2), second = number(17, 2);
  const std::chrono::year_month_day ymd{std::chrono::year{year},
                                        std::chrono::month{static_cast<unsigned>(month)},
                                        std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok() || hour > 23 || minute > 59 || second > 59) return bad();
  return UnixFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day), hour, minute,
                       second);
}

Result<ValidityWindow> CertificateValidity(X509* cert) {
  const std::string label = CertLabel(cert);
  MLC_ASSIGN_OR_RETURN(int64_t not_before,
                       Asn1TimeToUnix(X509_get0_notBefore(cert), label + " notBefore"));
  MLC_ASSIGN_OR_RETURN(int64_t not_after,
                       Asn1TimeToUnix(X509_get0_notAfter(cert), label + " notAfter"));
  return ValidityWindow{not_before, not_after};
}

Result<ValidityWindow> CrlValidity(X509_CRL* crl) {
  const std::string label = "CRL of " + NameText(X509_CRL_get_issuer(crl));
  MLC_ASSIGN_OR_RETURN(int64_t this_update,
                       Asn1TimeToUnix(X509_CRL_get0_lastUpdate(crl), label + " thisUpdate"));
  if (X509_CRL_get0_nextUpdate(crl) == nullptr)
    return InvalidArgument("{} has no nextUpdate", label);
  MLC_ASSIGN_OR_RETURN(int64_t next_update,
                       Asn1TimeToUnix(X509_CRL_get0_nextUpdate(crl), label + " nextUpdate"));
  return ValidityWindow{this_update, next_update};
}

Result<EvpPkeyPtr> P256KeyFromRaw(std::span<const uint8_t> xy) {
  if (xy.size() != 64)
    return InvalidArgument("P-256 public key is {} bytes, expected 64 (x||y)", xy.size());
  // EVP_PKEY_fromdata rather than d2i_PUBKEY: OpenSSL 3.0's decoder path costs ~5x more. The
  // point is checked to be on the curve either way.
  uint8_t point[65];
  point[0] = 0x04;  // uncompressed
  std::memcpy(point + 1, xy.data(), 64);
  char group[] = "prime256v1";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)),
      OSSL_PARAM_construct_end()};
  std::unique_ptr<EVP_PKEY_CTX, OpenSslFree<EVP_PKEY_CTX_free>> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, const_cast<OSSL_PARAM*>(params)) !=
          1 ||
      raw == nullptr) {
    EVP_PKEY_free(raw);
    return InvalidArgument("P-256 public key is not a point on the curve ({})", OpenSslErrors());
  }
  return EvpPkeyPtr(raw);
}

Result<std::vector<uint8_t>> EcdsaSignatureToDer(std::span<const uint8_t> r,
                                                 std::span<const uint8_t> s, bool little_endian) {
  if (r.empty() || s.empty() || r.size() > 128 || s.size() > 128)
    return InvalidArgument("ECDSA r/s sizes {}/{} are out of range 1..128", r.size(), s.size());
  auto to_bn = [&](std::span<const uint8_t> bytes) {
    const int size = static_cast<int>(bytes.size());
    return BignumPtr(little_endian ? BN_lebin2bn(bytes.data(), size, nullptr)
                                   : BN_bin2bn(bytes.data(), size, nullptr));
  };
  BignumPtr bn_r = to_bn(r), bn_s = to_bn(s);
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (!bn_r || !bn_s || !sig) return InternalError("ECDSA_SIG allocation ({})", OpenSslErrors());
  if (BN_is_zero(bn_r.get()) || BN_is_zero(bn_s.get()))
    return InvalidArgument("ECDSA signature has a zero r or s");
  if (ECDSA_SIG_set0(sig.get(), bn_r.get(), bn_s.get()) != 1)
    return InternalError("ECDSA_SIG_set0 ({})", OpenSslErrors());
  bn_r.release();  // owned by sig now
  bn_s.release();
  const int size = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (size <= 0) return InternalError("i2d_ECDSA_SIG ({})", OpenSslErrors());
  std::vector<uint8_t> der(static_cast<size_t>(size));
  uint8_t* p = der.data();
  if (i2d_ECDSA_SIG(sig.get(), &p) != size)
    return InternalError("i2d_ECDSA_SIG ({})", OpenSslErrors());
  return der;
}

Status VerifySignature(EVP_PKEY* key, const EVP_MD* md, std::span<const uint8_t> der_signature,
                       std::span<const uint8_t> message, std::string_view check) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return InternalError("{}: EVP_MD_CTX_new ({})", check, OpenSslErrors());
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) != 1)
    return InvalidArgument("{}: the key cannot verify this signature type ({})", check,
                           OpenSslErrors());
  const int result = EVP_DigestVerify(ctx.get(), der_signature.data(), der_signature.size(),
                                      message.data(), message.size());
  ERR_clear_error();
  if (result != 1)
    return InvalidArgument("{}: signature over {} bytes does not verify", check, message.size());
  return Status::Ok();
}

Status VerifyChain(X509* leaf, std::span<X509* const> intermediates, X509* pinned_root,
                   const ChainCheck& options, std::string_view check) {
  if (leaf == nullptr || pinned_root == nullptr)
    return InvalidArgument("{}: missing leaf or root certificate", check);
  // The chain's own copy of the root, if it carries one, must be the pinned root itself.
  size_t untrusted_count = intermediates.size();
  if (untrusted_count > 0) {
    X509* last = intermediates[untrusted_count - 1];
    if (X509_NAME_cmp(X509_get_subject_name(last), X509_get_issuer_name(last)) == 0) {
      if (CertificateDer(last) != CertificateDer(pinned_root))
        return InvalidArgument(
            "root_mismatch: the chain's root '{}' is not the pinned root '{}' (bytes differ)",
            CertLabel(last), CertLabel(pinned_root));
      --untrusted_count;
    }
  }
  if (options.check_time) {
    auto check_cert = [&](X509* cert) -> Status {
      MLC_ASSIGN_OR_RETURN(ValidityWindow window, CertificateValidity(cert));
      return CheckWindow(window, options.now, check, "certificate '" + CertLabel(cert) + "'");
    };
    MLC_RETURN_IF_ERROR(check_cert(leaf));
    for (size_t i = 0; i < untrusted_count; ++i) MLC_RETURN_IF_ERROR(check_cert(intermediates[i]));
    MLC_RETURN_IF_ERROR(check_cert(pinned_root));
    for (X509_CRL* crl : options.crls) {
      MLC_ASSIGN_OR_RETURN(ValidityWindow window, CrlValidity(crl));
      MLC_RETURN_IF_ERROR(CheckWindow(window, options.now, check,
                                      "CRL of '" + NameText(X509_CRL_get_issuer(crl)) + "'"));
    }
  }

  X509StorePtr store(X509_STORE_new());
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  std::unique_ptr<STACK_OF(X509), X509StackFree> untrusted(sk_X509_new_null());
  std::unique_ptr<STACK_OF(X509_CRL), CrlStackFree> crls(sk_X509_CRL_new_null());
  if (!store || !ctx || !untrusted || !crls || X509_STORE_add_cert(store.get(), pinned_root) != 1)
    return InternalError("{}: X509 store setup ({})", check, OpenSslErrors());
  for (size_t i = 0; i < untrusted_count; ++i) {
    if (sk_X509_push(untrusted.get(), intermediates[i]) <= 0)
      return InternalError("{}: sk_X509_push ({})", check, OpenSslErrors());
  }
  for (X509_CRL* crl : options.crls) {
    if (sk_X509_CRL_push(crls.get(), crl) <= 0)
      return InternalError("{}: sk_X509_CRL_push ({})", check, OpenSslErrors());
  }
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1)
    return InternalError("{}: X509_STORE_CTX_init ({})", check, OpenSslErrors());
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  unsigned long flags = 0;
  if (options.strict) flags |= X509_V_FLAG_X509_STRICT;
  // OpenSSL reads a set time (USE_CHECK_TIME) before NO_CHECK_TIME, so set only one of them.
  if (options.check_time) {
    X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(options.now));
  } else {
    flags |= X509_V_FLAG_NO_CHECK_TIME;
  }
  if (!options.crls.empty()) {
    flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
    X509_STORE_CTX_set0_crls(ctx.get(), crls.get());
  }
  X509_VERIFY_PARAM_set_flags(param, flags);
  const int result = X509_verify_cert(ctx.get());
  if (result != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    X509* current = X509_STORE_CTX_get_current_cert(ctx.get());
    const std::string label = current != nullptr ? CertLabel(current) : std::string("?");
    ERR_clear_error();
    const std::string_view name = error == X509_V_ERR_CERT_REVOKED && !options.revoked_check.empty()
                                      ? options.revoked_check
                                      : check;
    return InvalidArgument("{}: certificate '{}' (depth {}): {} (X509 error {})", name, label,
                           depth, X509_verify_cert_error_string(error), error);
  }
  ERR_clear_error();
  return Status::Ok();
}

Result<std::vector<uint8_t>> ExtensionContents(X509* cert, const char* oid_text) {
  Asn1ObjectPtr oid(OBJ_txt2obj(oid_text, 1));
  if (!oid) return InternalError("bad OID text {} ({})", oid_text, OpenSslErrors());
  const int index = X509_get_ext_by_OBJ(cert, oid.get(), -1);
  if (index < 0) {
    ERR_clear_error();
    return NotFound("certificate '{}' has no extension {}", CertLabel(cert), oid_text);
  }
  if (X509_get_ext_by_OBJ(cert, oid.get(), index) >= 0)
    return InvalidArgument("certificate '{}' has extension {} twice", CertLabel(cert), oid_text);
  ERR_clear_error();
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509_get_ext(cert, index));
  if (data == nullptr) return InvalidArgument("extension {} has no value", oid_text);
  const uint8_t* bytes = ASN1_STRING_get0_data(data);
  return std::vector<uint8_t>(bytes, bytes + ASN1_STRING_length(data));
}

// --- DerReader ---

Status DerReader::Next(uint8_t* tag, std::span<const uint8_t>* contents) {
  const size_t left = bytes_.size() - pos_;
  if (left < 2) return InvalidArgument("{}: truncated DER element at offset {}", what_, pos_);
  const uint8_t t = bytes_[pos_];
  if ((t & 0x1f) == 0x1f) return Unsupported("{}: multi-byte DER tag at offset {}", what_, pos_);
  const uint8_t first = bytes_[pos_ + 1];
  size_t header = 2;
  size_t length = 0;
  if (first < 0x80) {
    length = first;
  } else {
    const size_t count = first & 0x7f;
    if (count == 0 || count > 4)
      return InvalidArgument("{}: DER length form 0x{:02x} at offset {} is not supported", what_,
                             first, pos_);
    if (left < 2 + count)
      return InvalidArgument("{}: truncated DER length at offset {}", what_, pos_);
    for (size_t i = 0; i < count; ++i) length = (length << 8) | bytes_[pos_ + 2 + i];
    header += count;
  }
  if (length > left - header)
    return InvalidArgument("{}: DER length {} at offset {} runs past the {} bytes left", what_,
                           length, pos_, left - header);
  *tag = t;
  *contents = bytes_.subspan(pos_ + header, length);
  pos_ += header + length;
  return Status::Ok();
}

Status DerReader::Expect(uint8_t tag, std::span<const uint8_t>* contents, std::string_view field) {
  const size_t at = pos_;
  uint8_t actual = 0;
  MLC_RETURN_IF_ERROR(Next(&actual, contents));
  if (actual != tag) {
    pos_ = at;
    return InvalidArgument("{}: {} has DER tag 0x{:02x} at offset {}, expected 0x{:02x}", what_,
                           field, actual, at, tag);
  }
  return Status::Ok();
}

Status DerReader::Sequence(DerReader* inner, std::string_view field) {
  std::span<const uint8_t> contents;
  MLC_RETURN_IF_ERROR(Expect(kSequence, &contents, field));
  *inner = DerReader(contents, what_);
  return Status::Ok();
}

Status DerReader::IntegerWithTag(uint8_t tag, int64_t* value, std::string_view field) {
  std::span<const uint8_t> contents;
  MLC_RETURN_IF_ERROR(Expect(tag, &contents, field));
  if (contents.empty() || contents.size() > 8)
    return InvalidArgument("{}: {} is a {}-byte integer, expected 1..8 bytes", what_, field,
                           contents.size());
  uint64_t bits = (contents[0] & 0x80) ? ~uint64_t{0} : 0;  // sign extension
  for (uint8_t byte : contents) bits = (bits << 8) | byte;
  *value = static_cast<int64_t>(bits);
  return Status::Ok();
}

Status DerReader::Integer(int64_t* value, std::string_view field) {
  return IntegerWithTag(kInteger, value, field);
}

Status DerReader::Enumerated(int64_t* value, std::string_view field) {
  return IntegerWithTag(kEnumerated, value, field);
}

Status DerReader::Boolean(bool* value, std::string_view field) {
  std::span<const uint8_t> contents;
  MLC_RETURN_IF_ERROR(Expect(kBoolean, &contents, field));
  if (contents.size() != 1)
    return InvalidArgument("{}: {} BOOLEAN has {} bytes, expected 1", what_, field,
                           contents.size());
  *value = contents[0] != 0;
  return Status::Ok();
}

Status DerReader::OctetString(std::span<const uint8_t>* value, std::string_view field) {
  return Expect(kOctetString, value, field);
}

Status DerReader::Oid(std::string* dotted, std::string_view field) {
  std::span<const uint8_t> contents;
  MLC_RETURN_IF_ERROR(Expect(kOid, &contents, field));
  if (contents.empty() || (contents.back() & 0x80))
    return InvalidArgument("{}: {} is a malformed OBJECT IDENTIFIER", what_, field);
  std::string out;
  uint64_t arc = 0;
  int arc_bytes = 0;
  bool first = true;
  for (uint8_t byte : contents) {
    if (++arc_bytes > 9) return InvalidArgument("{}: {} has an OID arc over 63 bits", what_, field);
    arc = (arc << 7) | (byte & 0x7f);
    if (byte & 0x80) continue;
    if (first) {
      const uint64_t top = arc < 80 ? arc / 40 : 2;
      out = fmt::format("{}.{}", top, arc - top * 40);
      first = false;
    } else {
      out += fmt::format(".{}", arc);
    }
    arc = 0;
    arc_bytes = 0;
  }
  *dotted = std::move(out);
  return Status::Ok();
}

Status DerReader::ExpectEnd() const {
  if (!empty())
    return InvalidArgument("{}: {} unexpected bytes at offset {}", what_, bytes_.size() - pos_,
                           pos_);
  return Status::Ok();
}

}  // namespace mlcapsule::server::evidence
