// Self-signed loopback TLS certificates with OpenSSL 3 (self_signed_cert.h).
#include "server/self_signed_cert.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <functional>
#include <memory>

#include "base/file_util.h"

namespace mlcapsule::server {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

Status AddExtension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  Ext ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    return InternalError("certificate extension {} = {}: {}", OBJ_nid2sn(nid), value,
                         OpenSslError());
  return Status::Ok();
}

Result<std::string> ToPem(const std::function<int(BIO*)>& write) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return InternalError("PEM encoding: {}", OpenSslError());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

Result<SelfSignedCert> MakeSelfSignedCert(const SelfSignedCertOptions& options) {
  if (options.ip_addresses.empty() && options.dns_names.empty())
    return InvalidArgument("a self-signed certificate needs at least one IP address or DNS name");
  if (options.valid_days < 1 || options.valid_days > 825)
    return InvalidArgument("certificate validity {} days: must be 1..825", options.valid_days);
  PKey key(EVP_EC_gen("P-256"));
  if (!key) return InternalError("P-256 key generation: {}", OpenSslError());
  Cert cert(X509_new());
  if (!cert) return InternalError("X509_new: {}", OpenSslError());
  // Version 3, a random positive 127-bit serial.
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1)
    return InternalError("serial: {}", OpenSslError());
  serial_bytes[0] &= 0x7f;
  std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>> serial(
      BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr));
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 || !serial ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), int64_t{options.valid_days} * 86400) ==
          nullptr ||
      X509_set_pubkey(cert.get(), key.get()) != 1)
    return InternalError("certificate fields: {}", OpenSslError());
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>(options.common_name.c_str()), -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), name) != 1)
    return InternalError("certificate name {}: {}", options.common_name, OpenSslError());
  std::string san;
  for (const std::string& ip : options.ip_addresses) {
    if (ip.empty() || ip.find_first_of(",\n") != std::string::npos)
      return InvalidArgument("certificate IP address '{}' is not an address", ip);
    san += (san.empty() ? "IP:" : ",IP:") + ip;
  }
  for (const std::string& dns : options.dns_names) {
    if (dns.empty() || dns.find_first_of(",\n: ") != std::string::npos)
      return InvalidArgument("certificate DNS name '{}' is not a host name", dns);
    san += (san.empty() ? "DNS:" : ",DNS:") + dns;
  }
  MLC_RETURN_IF_ERROR(AddExtension(cert.get(), NID_subject_alt_name, san));
  MLC_RETURN_IF_ERROR(AddExtension(cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  MLC_RETURN_IF_ERROR(
      AddExtension(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign"));
  MLC_RETURN_IF_ERROR(AddExtension(cert.get(), NID_ext_key_usage, "serverAuth"));
  MLC_RETURN_IF_ERROR(AddExtension(cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return InternalError("certificate signature: {}", OpenSslError());
  SelfSignedCert out;
  MLC_ASSIGN_OR_RETURN(out.certificate_pem,
                       ToPem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }));
  MLC_ASSIGN_OR_RETURN(out.private_key_pem, ToPem([&](BIO* b) {
                         return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr,
                                                         nullptr);
                       }));
  return out;
}

Status WriteSelfSignedCert(const SelfSignedCert& cert, const std::string& cert_path,
                           const std::string& key_path) {
  MLC_RETURN_IF_ERROR(CreateNewFile(key_path, cert.private_key_pem, 0600));
  return WriteFile(cert_path, cert.certificate_pem);
}

}  // namespace mlcapsule::server
