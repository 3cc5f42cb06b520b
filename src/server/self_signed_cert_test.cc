// The demo's self-signed certificate: parsed back with OpenSSL, it names the addresses asked for,
// is its own issuer, verifies with its own key, and pairs with the private key written 0600.
#include "server/self_signed_cert.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/file_util.h"

namespace mlcapsule::server {
namespace {

struct Parsed {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  ~Parsed() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

void Parse(const SelfSignedCert& c, Parsed* p) {
  BIO* b = BIO_new_mem_buf(c.certificate_pem.data(), static_cast<int>(c.certificate_pem.size()));
  p->cert = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  b = BIO_new_mem_buf(c.private_key_pem.data(), static_cast<int>(c.private_key_pem.size()));
  p->key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
}

TEST(SelfSignedCert, LoopbackCertificateParsesAndVerifies) {
  auto made =
      MakeSelfSignedCert({.ip_addresses = {"127.0.0.1", "::1"}, .dns_names = {"localhost"}});
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  Parsed p;
  Parse(*made, &p);
  ASSERT_NE(p.cert, nullptr);
  ASSERT_NE(p.key, nullptr);
  EXPECT_EQ(X509_check_private_key(p.cert, p.key), 1);
  EXPECT_EQ(X509_verify(p.cert, X509_get_pubkey(p.cert)), 1);  // self-signed
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(p.cert), X509_get_issuer_name(p.cert)), 0);
  EXPECT_EQ(X509_check_ip_asc(p.cert, "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(p.cert, "::1", 0), 1);
  EXPECT_EQ(X509_check_host(p.cert, "localhost", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_ip_asc(p.cert, "10.0.0.1", 0), 1);
  EXPECT_NE(X509_check_host(p.cert, "example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(EVP_PKEY_get_base_id(p.key), EVP_PKEY_EC);
  EXPECT_EQ(EVP_PKEY_get_bits(p.key), 256);
  EXPECT_EQ(X509_check_ca(p.cert), 1);  // its own trust anchor for --ca-cert
  // Valid now, not after the requested two days.
  EXPECT_LT(X509_cmp_current_time(X509_get0_notBefore(p.cert)), 0);
  EXPECT_GT(X509_cmp_current_time(X509_get0_notAfter(p.cert)), 0);
  time_t in_three_days = time(nullptr) + 3 * 86400;
  EXPECT_LT(X509_cmp_time(X509_get0_notAfter(p.cert), &in_three_days), 0);
  // Two certificates never share a key or a serial.
  auto other = MakeSelfSignedCert({});
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->private_key_pem, made->private_key_pem);
  Parsed q;
  Parse(*other, &q);
  ASSERT_NE(q.cert, nullptr);
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(p.cert), X509_get0_serialNumber(q.cert)), 0);
}

TEST(SelfSignedCert, RefusesBadOptions) {
  auto none = MakeSelfSignedCert({.ip_addresses = {}});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("at least one"), std::string::npos);
  auto days = MakeSelfSignedCert({.valid_days = 0});
  ASSERT_FALSE(days.ok());
  EXPECT_NE(days.status().message().find("validity"), std::string::npos);
  auto ip = MakeSelfSignedCert({.ip_addresses = {"127.0.0.1,DNS:evil"}});
  ASSERT_FALSE(ip.ok());
  EXPECT_NE(ip.status().message().find("not an address"), std::string::npos);
  auto bad_ip = MakeSelfSignedCert({.ip_addresses = {"not-an-ip"}});
  EXPECT_FALSE(bad_ip.ok());  // OpenSSL refuses the SAN value
}

TEST(SelfSignedCert, KeyFileIsPrivate) {
  auto made = MakeSelfSignedCert({});
  ASSERT_TRUE(made.ok());
  const std::filesystem::path dir = testing::TempDir() + "/self_signed_cert_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(
      WriteSelfSignedCert(*made, (dir / "tls.crt").string(), (dir / "tls.key").string()).ok());
  struct stat st {};
  ASSERT_EQ(stat((dir / "tls.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto key = ReadFile((dir / "tls.key").string(), 1 << 16);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, made->private_key_pem);
  auto cert = ReadFile((dir / "tls.crt").string(), 1 << 16);
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(*cert, made->certificate_pem);
  // An existing key is never replaced, and a symlink in place of the key is not followed.
  auto again = WriteSelfSignedCert(*made, (dir / "tls.crt").string(), (dir / "tls.key").string());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  std::filesystem::remove(dir / "tls.key");
  std::filesystem::create_symlink(dir / "elsewhere", dir / "tls.key");
  auto refused = WriteSelfSignedCert(*made, (dir / "tls.crt").string(), (dir / "tls.key").string());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("refusing to overwrite"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "elsewhere"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mlcapsule::server
