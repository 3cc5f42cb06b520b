// Tests of the SEV-SNP verifier against the go-sev-guest vector (report + VCEK, Milan), and the
// negative rows 20-28 of docs/dev/attestation-plan.md §9: each mutation must fail at the named
// check. The vectors come from $MLCAPSULE_ATTEST_VECTORS (set by CMake); without them the tests
// skip. The few certificates a row needs that no vector has (an unrelated P-384 leaf, a foreign
// RSA root) are made here with OpenSSL.
#include "server/evidence/snp.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "capsule/crypto.h"
#include "capsule/policy.h"
#include "server/evidence/evidence.h"
#include "server/evidence/openssl_util.h"
#include "server/evidence/testing/expect_check.h"

namespace mlcapsule::server::evidence {
namespace {

constexpr int64_t kNow = 1751328000;         // 2025-07-01T00:00:00Z
constexpr int64_t kAfterVcek = 1893456000;   // 2030-01-01: the VCEK expired 2029-09-24
constexpr int64_t kBeforeVcek = 1640995200;  // 2022-01-01: before the VCEK's notBefore
constexpr char kMeasurementHex[] =
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e487"
    "2b01";

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

class SnpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("MLCAPSULE_ATTEST_VECTORS");
    if (dir == nullptr || !std::filesystem::is_directory(dir)) {
      GTEST_SKIP() << "attestation vectors not found (set MLCAPSULE_ATTEST_VECTORS to "
                      "/work/shared/attest-vectors)";
    }
    const std::string base = std::string(dir) + "/";
    auto report = ReadFile(base + "go-sev-guest_snp_attestation.bin", 1 << 20);
    auto vcek = ReadFile(base + "go-sev-guest_vcek_milan.der", 1 << 20);
    auto ask_ark = ReadFile(base + "amd_ask_ark_milan.pem", 1 << 20);
    ASSERT_TRUE(report.ok() && vcek.ok() && ask_ark.ok()) << "unreadable vector in " << dir;
    report_ = Bytes(report.value());
    vcek_ = Bytes(vcek.value());
    auto certs = ParsePemCertificates(ask_ark.value(), "ask_ark_milan.pem");
    ASSERT_TRUE(certs.ok()) << certs.status().ToString();
    ASSERT_EQ(certs->size(), 2u);
    file_ask_der_ = CertificateDer(certs.value()[0].get());
    file_ark_der_ = CertificateDer(certs.value()[1].get());
    anchors_ = TrustAnchors::Pinned();
  }

  // Verifies a copy of the vector report changed by `mutate`.
  Result<Verdict> VerifyMutated(const std::function<void(std::vector<uint8_t>&)>& mutate) {
    std::vector<uint8_t> report = report_;
    mutate(report);
    return VerifySnp(report, vcek_, anchors_, kNow);
  }

  std::vector<uint8_t> report_, vcek_, file_ask_der_, file_ark_der_;
  TrustAnchors anchors_;
};

capsule::Policy SnpPolicy(bool allow_debug, const std::string& measurement) {
  std::string json = R"({"version":1,"tee":{"accept":["snp"],"measurements":{"snp":[")" +
                     measurement + R"("]},"allow_debug":)" + (allow_debug ? "true" : "false") +
                     "}}";
  auto policy = capsule::ParsePolicy(json);
  EXPECT_TRUE(policy.ok()) << policy.status().ToString();
  return policy.ok() ? policy.value() : capsule::Policy{};
}

capsule::ReportData VectorReportData() {
  capsule::ReportData data{};
  for (uint8_t i = 0; i < 5; ++i) data[i] = i + 1;  // 0102030405 + zeros
  return data;
}

using EvpPkeyOwner = EvpPkeyPtr;
using X509NameOwner = std::unique_ptr<X509_NAME, OpenSslFree<X509_NAME_free>>;

// A self-signed certificate for `key` named `name` (a stand-in for certificates no vector has).
std::vector<uint8_t> SelfSigned(EVP_PKEY* key, const X509_NAME* name, const EVP_MD* md) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7) != 1 ||
      X509_set_subject_name(cert.get(), name) != 1 || X509_set_issuer_name(cert.get(), name) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400L * 365 * 5) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * 365 * 20) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1 || X509_sign(cert.get(), key, md) <= 0) {
    ADD_FAILURE() << "could not make a test certificate: " << OpenSslErrors();
    return {};
  }
  return CertificateDer(cert.get());
}

X509NameOwner CommonNameOnly(const char* cn) {
  X509NameOwner name(X509_NAME_new());
  X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  return name;
}

TEST_F(SnpTest, PinnedAnchorsAreTheMilanRoots) {
  EXPECT_EQ(anchors_.amd_ark_der, file_ark_der_);
  EXPECT_EQ(anchors_.amd_ask_der, file_ask_der_);
}

TEST_F(SnpTest, VectorVerifies) {
  auto verdict = VerifySnp(report_, vcek_, anchors_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->type, capsule::EvidenceType::kSnp);
  EXPECT_EQ(capsule::ToHex(verdict->measurement), kMeasurementHex);
  EXPECT_EQ(verdict->report_data, VectorReportData());
  EXPECT_TRUE(verdict->debug);  // POLICY 0xb0000 has bit 19
  EXPECT_EQ(verdict->guest_policy, 0xb0000u);
  EXPECT_EQ(verdict->vmpl, 0u);
  EXPECT_EQ(verdict->reported_tcb, 0x4405000000000002u);  // bl 2, tee 0, snp 5, ucode 0x44
  ASSERT_EQ(verdict->chip_id.size(), 64u);
  EXPECT_EQ(capsule::ToHex(std::span(verdict->chip_id).first(4)), "3ac3fe21");
}

TEST_F(SnpTest, CachedRootsGiveTheSameVerdict) {
  auto roots = ParseSnpRoots(anchors_);
  ASSERT_TRUE(roots.ok()) << roots.status().ToString();
  auto verdict = VerifySnp(report_, vcek_, roots.value(), kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(capsule::ToHex(verdict->measurement), kMeasurementHex);
}

TEST_F(SnpTest, VcekMayBePem) {
  X509Ptr cert = std::move(ParseDerCertificate(vcek_, "VCEK").value());
  BioPtr bio(BIO_new(BIO_s_mem()));
  ASSERT_EQ(PEM_write_bio_X509(bio.get(), cert.get()), 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  std::vector<uint8_t> pem(data, data + size);
  EXPECT_TRUE(VerifySnp(report_, pem, anchors_, kNow).ok());
}

TEST_F(SnpTest, VerifierDispatchesSnp) {
  Verifier verifier(anchors_);
  auto parts = verifier.VerifySnpParts(report_, vcek_, kNow);
  ASSERT_TRUE(parts.ok()) << parts.status().ToString();
  EXPECT_EQ(capsule::ToHex(parts->measurement), kMeasurementHex);
  auto blob = verifier.Verify(capsule::EvidenceType::kSnp, EncodeSnpEvidence(report_, vcek_),
                              nullptr, kNow);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  EXPECT_EQ(blob->chip_id, parts->chip_id);
}

// §9 row 20: the vector's DEBUG bit is refused by the capsule-derived policy by default.
TEST_F(SnpTest, Row20DebugRefusedByDefault) {
  auto verdict = VerifySnp(report_, vcek_, anchors_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  const capsule::ReportData expected = VectorReportData();
  Status status = CheckPolicy(
      verdict.value(), PolicyFor(SnpPolicy(false, kMeasurementHex), capsule::EvidenceType::kSnp),
      &expected);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(status.message().find("debug"), std::string::npos) << status.ToString();
}

// §9 row 21: with allow_debug and the measurement and report data allow-listed: accepted.
TEST_F(SnpTest, Row21AcceptedWithAllowDebug) {
  auto verdict = VerifySnp(report_, vcek_, anchors_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  const capsule::ReportData expected = VectorReportData();
  Status status = CheckPolicy(
      verdict.value(), PolicyFor(SnpPolicy(true, kMeasurementHex), capsule::EvidenceType::kSnp),
      &expected);
  EXPECT_TRUE(status.ok()) << status.ToString();
}

// §9 row 28: a wrong binding, or a measurement not on the allow-list.
TEST_F(SnpTest, Row28BindingAndMeasurementRefused) {
  auto verdict = VerifySnp(report_, vcek_, anchors_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  capsule::ReportData wrong = VectorReportData();
  wrong[63] ^= 1;
  Status binding =
      CheckPolicy(verdict.value(),
                  PolicyFor(SnpPolicy(true, kMeasurementHex), capsule::EvidenceType::kSnp), &wrong);
  ASSERT_FALSE(binding.ok());
  EXPECT_EQ(binding.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(binding.message().rfind("policy:", 0), 0u) << binding.ToString();

  std::string other_measurement = kMeasurementHex;
  other_measurement[0] = other_measurement[0] == '0' ? '1' : '0';
  const capsule::ReportData expected = VectorReportData();
  Status measurement = CheckPolicy(
      verdict.value(), PolicyFor(SnpPolicy(true, other_measurement), capsule::EvidenceType::kSnp),
      &expected);
  ASSERT_FALSE(measurement.ok());
  EXPECT_EQ(measurement.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(measurement.message().find("measurement"), std::string::npos) << measurement.ToString();
}

// §9 row 22: signed fields changed -> the report signature fails.
TEST_F(SnpTest, Row22SignedFieldsFailTheSignature) {
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpReportDataOffset] ^= 0x01; }),
                  "report_signature");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpMeasurementOffset + 7] ^= 0x80; }),
                  "report_signature");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpPolicyOffset + 2] &= ~0x08; }),  // bit 19
                  "report_signature");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpVmplOffset] = 1; }), "report_signature");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpSignatureROffset] ^= 0x01; }),
                  "report_signature");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpSignatureSOffset + 47] ^= 0x01; }),
                  "report_signature");
}

// §9 row 23: CHIP_ID or REPORTED_TCB changed -> the VCEK no longer matches (before the
// signature).
TEST_F(SnpTest, Row23ChipIdAndTcbFailTheVcekMatch) {
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpChipIdOffset + 10] ^= 0x01; }),
                  "vcek_mismatch");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[0x187] ^= 0x01; }), "vcek_mismatch");  // ucode
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpReportedTcbOffset] ^= 0x01; }),
                  "vcek_mismatch");  // boot loader
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpReportedTcbOffset + 6] ^= 0x01; }),
                  "vcek_mismatch");  // snp
}

// §9 row 24: a non-zero byte in the signature padding.
TEST_F(SnpTest, Row24SignaturePaddingIsAParseError) {
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[0x2E7] = 1; }), "parse_error");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpSignatureROffset + 48] = 1; }), "parse_error");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpSignatureSOffset + 71] = 1; }), "parse_error");
}

// §9 row 25: other algorithms, signing keys, versions and sizes.
TEST_F(SnpTest, Row25UnsupportedFormatsAndSizes) {
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpSignatureAlgoOffset] = 2; }),
                  "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpKeyInfoOffset] |= 1 << 2; }),  // VLEK
                  "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpKeyInfoOffset] |= 7 << 2; }),  // none
                  "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpKeyInfoOffset] |= 1 << 1; }),  // masked
                  "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpVersionOffset] = 3; }), "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r[kSnpVersionOffset] = 1; }), "unsupported_format");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r.pop_back(); }), "parse_error");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r.push_back(0); }), "parse_error");
  EXPECT_FAILS_AT(VerifyMutated([](auto& r) { r.clear(); }), "parse_error");
  EXPECT_FAILS_AT(VerifySnp(report_, std::vector<uint8_t>{0x30, 0x03, 1, 2, 3}, anchors_, kNow),
                  "parse_error");
  EXPECT_FAILS_AT(VerifySnp(report_, {}, anchors_, kNow), "parse_error");
}

// §9 row 26: the VCEK replaced by the ASK or by an unrelated P-384 certificate; the ARK replaced
// by another RSA root.
TEST_F(SnpTest, Row26WrongCertificates) {
  EXPECT_FAILS_AT(VerifySnp(report_, anchors_.amd_ask_der, anchors_, kNow), "chain_invalid");
  EXPECT_FAILS_AT(VerifySnp(report_, anchors_.amd_ark_der, anchors_, kNow), "chain_invalid");

  EvpPkeyOwner p384(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
  ASSERT_TRUE(p384);
  X509NameOwner vcek_name = CommonNameOnly("SEV-VCEK");
  const std::vector<uint8_t> unrelated = SelfSigned(p384.get(), vcek_name.get(), EVP_sha384());
  EXPECT_FAILS_AT(VerifySnp(report_, unrelated, anchors_, kNow), "chain_invalid");

  EvpPkeyOwner rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  ASSERT_TRUE(rsa);
  TrustAnchors foreign = anchors_;
  X509NameOwner other_name = CommonNameOnly("Some Other Root");
  foreign.amd_ark_der = SelfSigned(rsa.get(), other_name.get(), EVP_sha384());
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, foreign, kNow), "root_mismatch");

  // Same subject as ARK-Milan, other key: the names chain, the ASK's signature does not.
  X509Ptr ark = std::move(ParseDerCertificate(file_ark_der_, "ARK").value());
  TrustAnchors impostor = anchors_;
  impostor.amd_ark_der = SelfSigned(rsa.get(), X509_get_subject_name(ark.get()), EVP_sha384());
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, impostor, kNow), "chain_invalid");

  TrustAnchors garbage = anchors_;
  garbage.amd_ark_der = {1, 2, 3};
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, garbage, kNow), "root_mismatch");
}

// §9 row 27: outside the VCEK's validity.
TEST_F(SnpTest, Row27ExpiredOrNotYetValidVcek) {
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, anchors_, kAfterVcek), "chain_invalid");
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, anchors_, kBeforeVcek), "chain_invalid");
  // The last second of validity still passes (inclusive, plan §1).
  EXPECT_TRUE(VerifySnp(report_, vcek_, anchors_, 1884905728).ok());  // 2029-09-24T00:55:28Z
  EXPECT_FAILS_AT(VerifySnp(report_, vcek_, anchors_, 1884905729), "chain_invalid");
}

}  // namespace
}  // namespace mlcapsule::server::evidence
