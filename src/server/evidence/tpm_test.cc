// The server's TPM verifier and credential maker (tpm.h) against the synthetic TPM: a good quote
// is accepted with every verdict field; each corruption fails at its named check; the policy
// layer accepts tpm verdicts only as a policy says; MakeTpmCredential's output opens with
// TPM2_ActivateCredential's math written here independently (OpenSSL's SP 800-108 KBKDF for
// KDFa) and only for the right name. One test verifies a real swtpm EK certificate chain
// (skipped when swtpm_setup is not installed).
#include "server/evidence/tpm.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "base/bytes.h"
#include "capsule/crypto.h"
#include "capsule/policy.h"
#include "capsule/tpm_evidence.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/expect_check.h"
#include "server/evidence/testing/synthetic_tpm.h"

namespace mlcapsule::server::evidence {
namespace {

using capsule::EvidenceType;
using testing::SyntheticTpm;
using testing::TpmQuoteSpec;

constexpr int64_t kNow = 1751328000;  // 2025-07-01, inside the synthetic certificates' window

class TpmVerifier : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    auto tpm = SyntheticTpm::Create({});
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = std::move(tpm).value().release();
    verifier_ = new Verifier(tpm_->Anchors());
  }
  static void TearDownTestSuite() {
    delete verifier_;
    delete tpm_;
  }

  static TpmQuoteSpec GoodSpec() {
    TpmQuoteSpec spec;
    for (size_t i = 0; i < spec.measurement.size(); ++i)
      spec.measurement[i] = static_cast<uint8_t>(0x40 + i);
    for (size_t i = 0; i < spec.report_data.size(); ++i)
      spec.report_data[i] = static_cast<uint8_t>(7 * i);
    return spec;
  }
  static std::vector<uint8_t> Evidence(const TpmQuoteSpec& spec) {
    auto evidence = tpm_->MakeEvidence(spec);
    EXPECT_TRUE(evidence.ok()) << evidence.status().ToString();
    return evidence.ok() ? *evidence : std::vector<uint8_t>();
  }
  static Result<Verdict> Verify(std::span<const uint8_t> evidence, int64_t now = kNow) {
    return verifier_->Verify(EvidenceType::kTpm, evidence, nullptr, now);
  }
  static Result<Verdict> VerifyParts(const capsule::TpmEvidence& parts) {
    return Verify(capsule::EncodeTpmEvidence(parts));
  }
  static capsule::TpmEvidence GoodParts() {
    auto parts = tpm_->MakeEvidenceParts(GoodSpec());
    EXPECT_TRUE(parts.ok()) << parts.status().ToString();
    return parts.ok() ? std::move(parts).value() : capsule::TpmEvidence{};
  }
  static void ExpectMessage(const Result<Verdict>& result, const std::string& fragment) {
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.status().message().find(fragment), std::string::npos)
        << result.status().ToString();
  }

  static SyntheticTpm* tpm_;
  static Verifier* verifier_;
};
SyntheticTpm* TpmVerifier::tpm_ = nullptr;
Verifier* TpmVerifier::verifier_ = nullptr;

std::string Sha256Hex(std::span<const uint8_t> bytes) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(bytes.data(), bytes.size(), digest);
  return capsule::ToHex(std::span<const uint8_t>(digest, sizeof(digest)));
}

std::vector<uint8_t> Be16(uint16_t value) {
  return {static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value)};
}

TEST_F(TpmVerifier, AcceptsAGoodQuote) {
  const TpmQuoteSpec spec = GoodSpec();
  const std::vector<uint8_t> evidence = Evidence(spec);
  Result<Verdict> verdict = Verify(evidence);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->type, EvidenceType::kTpm);
  EXPECT_EQ(verdict->measurement,
            std::vector<uint8_t>(spec.measurement.begin(), spec.measurement.end()));
  EXPECT_EQ(verdict->report_data, spec.report_data);
  EXPECT_FALSE(verdict->debug);
  EXPECT_EQ(verdict->ek_fingerprint, Sha256Hex(tpm_->ek_cert_der()));
  EXPECT_EQ(verdict->ak_name, tpm_->AkName());
  ASSERT_EQ(verdict->ak_name.size(), 34u);
  EXPECT_EQ(verdict->ak_name[0], 0x00);
  EXPECT_EQ(verdict->ak_name[1], 0x0B);
  EXPECT_EQ(verdict->reset_count, 7u);
  EXPECT_EQ(verdict->restart_count, 2u);
  EXPECT_EQ(verdict->firmware_version, 0x2000000000000001u);
  EXPECT_EQ(verdict->tpm_ek_cert_der, tpm_->ek_cert_der());

  const std::string summary = verdict->Summary();
  EXPECT_TRUE(summary.starts_with("tpm, measurement 40414243..., ek " +
                                  verdict->ek_fingerprint.substr(0, 8)))
      << summary;
  const std::string json = verdict->ToJson();
  EXPECT_NE(json.find("\"type\":\"tpm\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"ek_fingerprint\":\"" + verdict->ek_fingerprint + "\""), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"ak_name\":\"" + capsule::ToHex(verdict->ak_name) + "\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"reset_count\":7,\"restart_count\":2,\"firmware_version\":"
                      "\"2000000000000001\""),
            std::string::npos)
      << json;

  // The synthetic layout is the measured one: a 145-byte TPMS_ATTEST, a 72-byte signature.
  auto parts = capsule::ParseTpmEvidence(evidence);
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ(parts->attest.size(), 145u);
  EXPECT_EQ(parts->signature.size(), 72u);
  EXPECT_EQ(TpmObjectName(parts->ak_public), tpm_->AkName());
}

TEST_F(TpmVerifier, NoIntermediateNeededWhenTheRootsHoldIt) {
  // An EK certificate whose issuer is only in the configured bundle (not shipped) also chains.
  TrustAnchors anchors = tpm_->Anchors();
  anchors.tpm_ek_roots.push_back(tpm_->intermediate_der());
  Verifier with_intermediate(anchors);
  TpmQuoteSpec spec = GoodSpec();
  spec.ship_intermediate = false;
  const std::vector<uint8_t> evidence = Evidence(spec);
  EXPECT_TRUE(with_intermediate.Verify(EvidenceType::kTpm, evidence, nullptr, kNow).ok());
  // Without it in either place the chain is incomplete.
  Result<Verdict> missing = Verify(evidence);
  EXPECT_FAILS_AT(missing, "ek_chain");
  ExpectMessage(missing, "unable to get local issuer certificate");
}

TEST_F(TpmVerifier, AttestHeaderChecks) {
  TpmQuoteSpec magic = GoodSpec();
  magic.magic = 0xFF544348;
  Result<Verdict> bad_magic = Verify(Evidence(magic));
  EXPECT_FAILS_AT(bad_magic, "attest_magic");
  ExpectMessage(bad_magic, "0xff544348 is not TPM_GENERATED_VALUE 0xff544347");

  TpmQuoteSpec certify = GoodSpec();
  certify.attest_type = 0x8017;  // TPM_ST_ATTEST_CERTIFY: the body is not a quote's
  Result<Verdict> bad_type = Verify(Evidence(certify));
  EXPECT_FAILS_AT(bad_type, "attest_type");
  ExpectMessage(bad_type, "0x8017 is not TPM_ST_ATTEST_QUOTE 0x8018");
}

TEST_F(TpmVerifier, ExtraDataMustBindTheReportData) {
  TpmQuoteSpec spec = GoodSpec();
  capsule::ReportData other = spec.report_data;
  other[0] ^= 1;
  const std::array<uint8_t, 32> wrong = capsule::TpmQualifyingData(other);
  spec.extra_data = std::vector<uint8_t>(wrong.begin(), wrong.end());
  Result<Verdict> result = Verify(Evidence(spec));
  EXPECT_FAILS_AT(result, "extra_data");
  ExpectMessage(result, "is not SHA-256(\"mlcapsule/v1/tpm-quote\" || report data)");

  TpmQuoteSpec raw = GoodSpec();  // the report data itself, not its domain-separated hash
  raw.extra_data = std::vector<uint8_t>(raw.report_data.begin(), raw.report_data.end());
  EXPECT_FAILS_AT(Verify(Evidence(raw)), "extra_data");

  // Evidence whose report data was swapped after quoting.
  capsule::TpmEvidence parts = GoodParts();
  parts.report_data[63] ^= 0x80;
  EXPECT_FAILS_AT(VerifyParts(parts), "extra_data");
}

TEST_F(TpmVerifier, PcrSelectionMustBeExactlySha256Pcr23) {
  auto selection = [](std::initializer_list<std::pair<uint16_t, std::vector<uint8_t>>> banks) {
    std::vector<uint8_t> out = {0, 0, 0, static_cast<uint8_t>(banks.size())};
    for (const auto& [hash, select] : banks) {
      out.push_back(static_cast<uint8_t>(hash >> 8));
      out.push_back(static_cast<uint8_t>(hash));
      out.push_back(static_cast<uint8_t>(select.size()));
      out.insert(out.end(), select.begin(), select.end());
    }
    return out;
  };
  const std::vector<std::vector<uint8_t>> wrong = {
      selection({{0x0004, {0x00, 0x00, 0x80}}}),                                // sha1 bank
      selection({{0x000B, {0x00, 0x00, 0x81}}}),                                // PCRs 16 and 23
      selection({{0x000B, {0x00, 0x00, 0x40}}}),                                // PCR 22
      selection({{0x000B, {0x00, 0x00, 0x80, 0x00}}}),                          // size 4
      selection({{0x000B, {0x00, 0x00, 0x80}}, {0x000B, {0x00, 0x00, 0x80}}}),  // twice
      selection({}),                                                            // none
  };
  for (const std::vector<uint8_t>& bytes : wrong) {
    TpmQuoteSpec spec = GoodSpec();
    spec.pcr_selection = bytes;
    Result<Verdict> result = Verify(Evidence(spec));
    EXPECT_FAILS_AT(result, "pcr_select");
    ExpectMessage(result, "expected exactly {hash 0x000b (sha256): 000080}");
  }
}

TEST_F(TpmVerifier, PcrDigestMustBeTheReplay) {
  TpmQuoteSpec spec = GoodSpec();
  spec.pcr_digest = std::vector<uint8_t>(32, 0xAB);
  Result<Verdict> result = Verify(Evidence(spec));
  EXPECT_FAILS_AT(result, "pcr_digest");
  ExpectMessage(result, "is not SHA-256 of PCR 23 replayed from measurement 40414243");

  // The PCR value itself instead of its digest.
  TpmQuoteSpec raw = GoodSpec();
  const std::array<uint8_t, 32> pcr = capsule::TpmPcr23(raw.measurement, raw.report_data);
  raw.pcr_digest = std::vector<uint8_t>(pcr.begin(), pcr.end());
  EXPECT_FAILS_AT(Verify(Evidence(raw)), "pcr_digest");

  // Evidence claiming another measurement than the one quoted.
  capsule::TpmEvidence parts = GoodParts();
  parts.measurement[0] ^= 1;
  EXPECT_FAILS_AT(VerifyParts(parts), "pcr_digest");
}

TEST_F(TpmVerifier, QuoteSignatureChecks) {
  TpmQuoteSpec flipped = GoodSpec();
  flipped.flip_signature_bit = true;
  Result<Verdict> bad = Verify(Evidence(flipped));
  EXPECT_FAILS_AT(bad, "quote_signature");
  ExpectMessage(bad, "does not verify");

  TpmQuoteSpec rsa = GoodSpec();
  rsa.signature_alg = 0x0014;  // TPM_ALG_RSASSA
  Result<Verdict> wrong_scheme = Verify(Evidence(rsa));
  EXPECT_FAILS_AT(wrong_scheme, "quote_signature");
  ExpectMessage(wrong_scheme, "0x0014/0x0000 is not ECDSA (0x0018) with SHA-256");

  // A signature by the right key over other attest bytes: change the clock after signing.
  capsule::TpmEvidence parts = GoodParts();
  parts.attest[6 + 36 + 34 + 7] ^= 1;  // low byte of clockInfo.clock
  Result<Verdict> tampered = VerifyParts(parts);
  EXPECT_FAILS_AT(tampered, "quote_signature");

  // A signature hash other than SHA-256.
  capsule::TpmEvidence sha384 = GoodParts();
  sha384.signature[3] = 0x0C;
  EXPECT_FAILS_AT(VerifyParts(sha384), "quote_signature");

  // r longer than a P-256 scalar.
  capsule::TpmEvidence long_r = GoodParts();
  std::vector<uint8_t> signature = {0x00, 0x18, 0x00, 0x0B, 0x00, 33};
  signature.insert(signature.end(), 33, 0x11);
  signature.insert(signature.end(), {0x00, 32});
  signature.insert(signature.end(), 32, 0x22);
  long_r.signature = signature;
  Result<Verdict> long_result = VerifyParts(long_r);
  EXPECT_FAILS_AT(long_result, "quote_signature");
  ExpectMessage(long_result, "r and s are 33 and 32 bytes");
}

TEST_F(TpmVerifier, AkAttributesChecks) {
  struct Case {
    uint32_t attributes;
    const char* why;
  };
  const Case cases[] = {
      {0x00040072, "not restricted"}, {0x00060072, "decrypt too"},
      {0x00050070, "not fixedTPM"},   {0x00050032, "not sensitiveDataOrigin"},
      {0x00050472, "noDA added"},
  };
  for (const Case& c : cases) {
    TpmQuoteSpec spec = GoodSpec();
    spec.ak_object_attributes = c.attributes;
    Result<Verdict> result = Verify(Evidence(spec));
    EXPECT_FAILS_AT(result, "ak_attributes");
    ExpectMessage(
        result, fmt::format("objectAttributes 0x{:08x} are not exactly 0x00050072", c.attributes));
  }
  // Patch single fields of the TPMT_PUBLIC (type 0, nameAlg 2, attributes 4, authPolicy 8,
  // symmetric 10, scheme 12, hash 14, curve 16, kdf 18, x 20).
  struct Patch {
    size_t offset;
    std::vector<uint8_t> bytes;
    const char* fragment;
  };
  const Patch patches[] = {
      {2, Be16(0x000C), "nameAlg 0x000c is not SHA-256"},
      {12, Be16(0x001A), "scheme 0x001a/0x000b"},  // ECDAA (with its count: parses, refused)
      {14, Be16(0x0004), "scheme 0x0018/0x0004 is not ECDSA"},
      {16, Be16(0x0004), "curve 0x0004 is not NIST P-256"},
  };
  for (const Patch& patch : patches) {
    capsule::TpmEvidence parts = GoodParts();
    std::copy(patch.bytes.begin(), patch.bytes.end(), parts.ak_public.begin() + patch.offset);
    if (patch.offset == 12) parts.ak_public.insert(parts.ak_public.begin() + 16, {0x00, 0x01});
    Result<Verdict> result = VerifyParts(parts);
    EXPECT_FAILS_AT(result, "ak_attributes");
    ExpectMessage(result, patch.fragment);
  }
  // An RSA AK: only the common fields are read, then it is refused.
  capsule::TpmEvidence rsa = GoodParts();
  rsa.ak_public[1] = 0x01;
  Result<Verdict> rsa_result = VerifyParts(rsa);
  EXPECT_FAILS_AT(rsa_result, "ak_attributes");
  ExpectMessage(rsa_result, "AK type 0x0001 is not ECC (0x0023)");
  // A symmetric algorithm (the AK would be a storage key).
  capsule::TpmEvidence storage = GoodParts();
  storage.ak_public[11] = 0x06;  // AES
  storage.ak_public.insert(storage.ak_public.begin() + 12, {0x00, 0x80, 0x00, 0x43});
  Result<Verdict> storage_result = VerifyParts(storage);
  EXPECT_FAILS_AT(storage_result, "ak_attributes");
  ExpectMessage(storage_result, "symmetric algorithm 0x0006 is not NULL");
  // 31-byte coordinates.
  capsule::TpmEvidence short_point = GoodParts();
  short_point.ak_public[21] = 31;
  short_point.ak_public.erase(short_point.ak_public.begin() + 22);
  Result<Verdict> short_result = VerifyParts(short_point);
  EXPECT_FAILS_AT(short_result, "ak_attributes");
  ExpectMessage(short_result, "coordinates are 31 and 32 bytes");
  // A point not on the curve is refused when the signature is checked.
  capsule::TpmEvidence off_curve = GoodParts();
  off_curve.ak_public[30] ^= 1;
  Result<Verdict> off_result = VerifyParts(off_curve);
  EXPECT_FAILS_AT(off_result, "quote_signature");
  ExpectMessage(off_result, "not a point on the curve");
}

TEST_F(TpmVerifier, EkChainChecks) {
  const std::vector<uint8_t> evidence = Evidence(GoodSpec());

  // Another CA (same names, different keys).
  auto other = SyntheticTpm::Create({.key_set = 1});
  ASSERT_TRUE(other.ok());
  Verifier other_verifier((*other)->Anchors());
  Result<Verdict> unknown = other_verifier.Verify(EvidenceType::kTpm, evidence, nullptr, kNow);
  EXPECT_FAILS_AT(unknown, "ek_chain");
  ExpectMessage(unknown, "(X509 error");

  // Expired, and not yet valid.
  const int64_t not_after = testing::SyntheticTpmOptions{}.cert_not_after;
  EXPECT_TRUE(Verify(evidence, not_after - 1).ok());
  Result<Verdict> expired = Verify(evidence, not_after + 1);
  EXPECT_FAILS_AT(expired, "ek_chain");
  ExpectMessage(expired, "certificate has expired");
  Result<Verdict> early = Verify(evidence, testing::SyntheticTpmOptions{}.cert_not_before - 1);
  EXPECT_FAILS_AT(early, "ek_chain");
  ExpectMessage(early, "certificate is not yet valid");

  // No roots configured (the pinned anchors have none).
  Verifier pinned(TrustAnchors::Pinned());
  Result<Verdict> no_roots = pinned.Verify(EvidenceType::kTpm, evidence, nullptr, kNow);
  EXPECT_FAILS_AT(no_roots, "ek_chain");
  EXPECT_EQ(no_roots.status().code(), StatusCode::kFailedPrecondition);
  ExpectMessage(no_roots, "the server has no TPM EK CA configured (--tpm-ek-ca)");
  EXPECT_TRUE(TrustAnchors::Pinned().tpm_ek_roots.empty());

  // A configured root that is not a certificate.
  TrustAnchors garbage = tpm_->Anchors();
  garbage.tpm_ek_roots.push_back({0x30, 0x03, 0x02, 0x01, 0x01});
  Verifier garbage_verifier(garbage);
  Result<Verdict> bad_root = garbage_verifier.Verify(EvidenceType::kTpm, evidence, nullptr, kNow);
  EXPECT_FAILS_AT(bad_root, "ek_chain");
  ExpectMessage(bad_root, "TPM EK CA certificate 2 of 2");

  // The EK certificate's extended key usage must name tcg-kp-EKCertificate when present.
  testing::SyntheticTpmOptions client_auth;
  client_auth.ek_eku = {"1.3.6.1.5.5.7.3.2"};
  auto tls_tpm = SyntheticTpm::Create(client_auth);
  ASSERT_TRUE(tls_tpm.ok());
  Verifier tls_verifier((*tls_tpm)->Anchors());
  auto tls_evidence = (*tls_tpm)->MakeEvidence(GoodSpec());
  ASSERT_TRUE(tls_evidence.ok());
  Result<Verdict> wrong_eku = tls_verifier.Verify(EvidenceType::kTpm, *tls_evidence, nullptr, kNow);
  EXPECT_FAILS_AT(wrong_eku, "ek_chain");
  ExpectMessage(wrong_eku, "extended key usage (1.3.6.1.5.5.7.3.2) does not name 2.23.133.8.1");

  testing::SyntheticTpmOptions no_eku;
  no_eku.ek_eku.clear();
  no_eku.ek_rsa_bits = 3072;  // and a key size the verifier does not take
  auto big_tpm = SyntheticTpm::Create(no_eku);
  ASSERT_TRUE(big_tpm.ok());
  Verifier big_verifier((*big_tpm)->Anchors());
  auto big_evidence = (*big_tpm)->MakeEvidence(GoodSpec());
  ASSERT_TRUE(big_evidence.ok());
  Result<Verdict> big = big_verifier.Verify(EvidenceType::kTpm, *big_evidence, nullptr, kNow);
  EXPECT_FAILS_AT(big, "ek_chain");
  ExpectMessage(big, "key is RSA 3072 bits; only RSA 2048 EKs are supported");
}

TEST_F(TpmVerifier, EkCertificateWithoutEkuIsAccepted) {
  testing::SyntheticTpmOptions options;
  options.ek_eku.clear();
  auto tpm = SyntheticTpm::Create(options);
  ASSERT_TRUE(tpm.ok());
  Verifier verifier((*tpm)->Anchors());
  auto evidence = (*tpm)->MakeEvidence(GoodSpec());
  ASSERT_TRUE(evidence.ok());
  Result<Verdict> verdict = verifier.Verify(EvidenceType::kTpm, *evidence, nullptr, kNow);
  EXPECT_TRUE(verdict.ok()) << verdict.status().ToString();
}

TEST_F(TpmVerifier, MalformedStructuresAreParseErrors) {
  const capsule::TpmEvidence good = GoodParts();
  // Overlong TPM2B sizes: extraData (offset 6 + 2 + 34), unique.x, signatureR.
  capsule::TpmEvidence extra = good;
  extra.attest[42] = 0xFF;
  extra.attest[43] = 0xFF;
  Result<Verdict> extra_result = VerifyParts(extra);
  EXPECT_FAILS_AT(extra_result, "parse_error");
  ExpectMessage(extra_result, "attest (TPMS_ATTEST) extraData size 65535 is over the limit 64");

  capsule::TpmEvidence signer = good;
  signer.attest[6] = 0x00;
  signer.attest[7] = 67;
  ExpectMessage(VerifyParts(signer), "qualifiedSigner size 67 is over the limit 66");

  capsule::TpmEvidence point = good;
  point.ak_public[20] = 0x01;  // unique.x size 0x0120
  Result<Verdict> point_result = VerifyParts(point);
  EXPECT_FAILS_AT(point_result, "parse_error");
  ExpectMessage(point_result, "ak_public (TPMT_PUBLIC) unique.x size 288 is over the limit 66");

  capsule::TpmEvidence r = good;
  r.signature[4] = 0x00;
  r.signature[5] = 67;
  Result<Verdict> r_result = VerifyParts(r);
  EXPECT_FAILS_AT(r_result, "parse_error");
  ExpectMessage(r_result, "signatureR size 67 is over the limit 66");

  capsule::TpmEvidence count = good;  // pcrSelect.count at 6+36+34+17+8 = 101
  count.attest[104] = 17;
  ExpectMessage(VerifyParts(count), "pcrSelect.count 17 is over the limit 16");

  capsule::TpmEvidence select = good;
  select.attest[107] = 5;
  ExpectMessage(VerifyParts(select), "pcrSelect.sizeofSelect 5 is over the limit 4");

  // Every truncation of each TPM structure, and trailing bytes after it.
  for (auto member : {&capsule::TpmEvidence::ak_public, &capsule::TpmEvidence::attest,
                      &capsule::TpmEvidence::signature}) {
    for (size_t n = 0; n < (good.*member).size(); ++n) {
      capsule::TpmEvidence truncated = good;
      (truncated.*member).resize(n);
      Result<Verdict> result = VerifyParts(truncated);
      EXPECT_FAILS_AT(result, "parse_error");
      ExpectMessage(result, "truncated reading");
    }
    capsule::TpmEvidence trailing = good;
    (trailing.*member).push_back(0);
    Result<Verdict> result = VerifyParts(trailing);
    EXPECT_FAILS_AT(result, "parse_error");
    ExpectMessage(result, "1 unexpected trailing bytes");
  }

  // The container truncated, and certificates that are not DER.
  const std::vector<uint8_t> evidence = capsule::EncodeTpmEvidence(good);
  for (size_t n : {size_t{0}, size_t{7}, size_t{100}, evidence.size() / 2, evidence.size() - 1})
    EXPECT_FAILS_AT(Verify(std::span<const uint8_t>(evidence).first(n)), "parse_error");
  capsule::TpmEvidence bad_ek = good;
  bad_ek.ek_cert.resize(bad_ek.ek_cert.size() - 1);
  ExpectMessage(VerifyParts(bad_ek), "EK certificate");
  EXPECT_FAILS_AT(VerifyParts(bad_ek), "parse_error");
  capsule::TpmEvidence bad_chain = good;
  bad_chain.ek_chain[0].push_back(0);
  EXPECT_FAILS_AT(VerifyParts(bad_chain), "parse_error");
  ExpectMessage(VerifyParts(bad_chain), "EK chain certificate 1");
}

TEST_F(TpmVerifier, ChecksRunInTheDocumentedOrder) {
  // Everything wrong at once fails at the first check; fixing each in turn moves to the next.
  auto other = SyntheticTpm::Create({.key_set = 1});
  ASSERT_TRUE(other.ok());
  TpmQuoteSpec spec = GoodSpec();
  spec.magic = 0;
  spec.attest_type = 0x8014;
  spec.ak_object_attributes = 0x00040072;
  spec.flip_signature_bit = true;
  const char* expected[] = {"ek_chain",   "ak_attributes", "attest_magic", "attest_type",
                            "extra_data", "pcr_select",    "pcr_digest",   "quote_signature"};
  spec.extra_data = std::vector<uint8_t>(32, 0);
  spec.pcr_selection = std::vector<uint8_t>{0, 0, 0, 0};
  spec.pcr_digest = std::vector<uint8_t>(32, 0);
  for (const char* check : expected) {
    const SyntheticTpm* maker = std::string(check) == "ek_chain" ? other->get() : tpm_;
    auto evidence = maker->MakeEvidence(spec);
    ASSERT_TRUE(evidence.ok());
    EXPECT_FAILS_AT(Verify(*evidence), check);
    const std::string name = check;
    if (name == "ak_attributes") spec.ak_object_attributes = kTpmAkAttributes;
    if (name == "attest_magic") spec.magic = kTpmGeneratedValue;
    if (name == "attest_type") spec.attest_type = kTpmStAttestQuote;
    if (name == "extra_data") spec.extra_data.reset();
    if (name == "pcr_select") spec.pcr_selection.reset();
    if (name == "pcr_digest") spec.pcr_digest.reset();
  }
  spec.flip_signature_bit = false;
  EXPECT_TRUE(Verify(Evidence(spec)).ok());
}

TEST_F(TpmVerifier, PolicyAcceptsTpmOnlyAsThePolicySays) {
  const TpmQuoteSpec spec = GoodSpec();
  Result<Verdict> verdict = Verify(Evidence(spec));
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  const std::string measurement = capsule::ToHex(verdict->measurement);

  capsule::Policy policy;
  policy.tee.accept = {"tpm"};
  policy.tee.measurements = {{"tpm", {measurement}}};
  // The policy as a provider writes it parses (tpm, a 64-hex measurement).
  Result<capsule::Policy> reparsed = capsule::ParsePolicy(capsule::PolicyToJson(policy));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status().ToString();
  const EvidencePolicy rules = PolicyFor(*reparsed, EvidenceType::kTpm);
  EXPECT_TRUE(rules.type_accepted);
  const capsule::ReportData expected = spec.report_data;
  EXPECT_TRUE(CheckPolicy(*verdict, rules, &expected).ok());
  EXPECT_TRUE(CheckPolicy(*verdict, rules, nullptr).ok());

  capsule::Policy other_measurement = policy;
  other_measurement.tee.measurements[0].allowed = {std::string(64, 'a')};
  Status refused = CheckPolicy(*verdict, PolicyFor(other_measurement, EvidenceType::kTpm), nullptr);
  EXPECT_EQ(refused.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(refused.message(),
            "policy: measurement " + measurement + " is not on the allow-list for tpm");

  capsule::Policy sgx_only;
  sgx_only.tee.accept = {"sgx"};
  Status not_accepted = CheckPolicy(*verdict, PolicyFor(sgx_only, EvidenceType::kTpm), nullptr);
  EXPECT_EQ(not_accepted.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(not_accepted.message(), "policy: evidence type tpm is not accepted by the policy");

  capsule::ReportData other = expected;
  other[5] ^= 1;
  Status unbound = CheckPolicy(*verdict, rules, &other);
  EXPECT_EQ(unbound.code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(unbound.message().starts_with("policy: report data does not match"))
      << unbound.ToString();

  // Another TEE's allow-list does not apply to tpm.
  capsule::Policy sgx_list = policy;
  sgx_list.tee.accept = {"tpm", "sgx"};
  sgx_list.tee.measurements = {{"sgx", {std::string(64, 'b')}}};
  EXPECT_TRUE(CheckPolicy(*verdict, PolicyFor(sgx_list, EvidenceType::kTpm), nullptr).ok());
}

TEST_F(TpmVerifier, OneVerifierServesConcurrentCalls) {
  // The roots' X509 store is shared by every call; each call has its own X509_STORE_CTX.
  const std::vector<uint8_t> good = Evidence(GoodSpec());
  TpmQuoteSpec bad_spec = GoodSpec();
  bad_spec.flip_signature_bit = true;
  const std::vector<uint8_t> bad = Evidence(bad_spec);
  std::atomic<int> accepted{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (Verify(good).ok()) accepted++;
        if (!Verify(bad).ok()) refused++;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(accepted.load(), 100);
  EXPECT_EQ(refused.load(), 100);
}

// ---- MakeTpmCredential: TPM2_ActivateCredential's math, independently ----

// KDFa as NIST SP 800-108 counter mode with HMAC-SHA256 (OpenSSL's KBKDF: counter || label ||
// 0x00 || context || L), which is what TPM 2.0 Part 1 specifies.
std::vector<uint8_t> Kbkdf(std::span<const uint8_t> key, std::string_view label,
                           std::span<const uint8_t> context, size_t bytes) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "KBKDF", nullptr);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  std::vector<uint8_t> out(bytes);
  std::string label_copy(label);
  std::vector<uint8_t> context_copy(context.begin(), context.end());
  std::vector<uint8_t> key_copy(key.begin(), key.end());
  char mode[] = "COUNTER", mac[] = "HMAC", digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, mode, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, mac, 0),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, key_copy.data(), key_copy.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, label_copy.data(), label_copy.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, context_copy.data(),
                                        context_copy.size()),
      OSSL_PARAM_construct_end()};
  const int ok = ctx != nullptr && EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  EXPECT_TRUE(ok) << "KBKDF";
  return out;
}

uint16_t ReadBe16(std::span<const uint8_t> bytes, size_t offset) {
  return static_cast<uint16_t>((bytes[offset] << 8) | bytes[offset + 1]);
}

// TPM2_ActivateCredential on the synthetic EK: the secret, or an error naming the failed step.
Result<std::vector<uint8_t>> Activate(EVP_PKEY* ek, const TpmCredential& credential,
                                      std::span<const uint8_t> name) {
  // TPM2B_ENCRYPTED_SECRET -> seed.
  const std::vector<uint8_t>& encrypted = credential.encrypted_secret;
  if (encrypted.size() < 2 || ReadBe16(encrypted, 0) != encrypted.size() - 2)
    return DataLoss("encrypted_secret size prefix");
  std::unique_ptr<EVP_PKEY_CTX, OpenSslFree<EVP_PKEY_CTX_free>> rsa(
      EVP_PKEY_CTX_new_from_pkey(nullptr, ek, nullptr));
  char label[] = "IDENTITY";  // with its NUL: 9 bytes
  void* label_copy = OPENSSL_memdup(label, sizeof(label));
  std::vector<uint8_t> seed(256);
  size_t seed_size = seed.size();
  if (!rsa || EVP_PKEY_decrypt_init(rsa.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(rsa.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(rsa.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set0_rsa_oaep_label(rsa.get(), label_copy, sizeof(label)) != 1 ||
      EVP_PKEY_decrypt(rsa.get(), seed.data(), &seed_size, encrypted.data() + 2,
                       encrypted.size() - 2) != 1)
    return PermissionDenied("RSA-OAEP decryption of the seed failed");
  seed.resize(seed_size);
  if (seed.size() != 32) return DataLoss("seed is {} bytes", seed.size());

  // TPM2B_ID_OBJECT -> integrity HMAC and encIdentity.
  const std::vector<uint8_t>& id = credential.id_object;
  if (id.size() < 4 || ReadBe16(id, 0) != id.size() - 2 || ReadBe16(id, 2) != 32 ||
      id.size() < 4 + 32)
    return DataLoss("id_object layout");
  std::span<const uint8_t> integrity(id.data() + 4, 32);
  std::span<const uint8_t> enc_identity(id.data() + 36, id.size() - 36);
  const std::vector<uint8_t> hmac_key = Kbkdf(seed, "INTEGRITY", {}, 32);
  std::vector<uint8_t> message(enc_identity.begin(), enc_identity.end());
  message.insert(message.end(), name.begin(), name.end());
  uint8_t hmac[32];
  unsigned int hmac_size = 0;
  HMAC(EVP_sha256(), hmac_key.data(), static_cast<int>(hmac_key.size()), message.data(),
       message.size(), hmac, &hmac_size);
  if (!capsule::ConstantTimeEqual(integrity, std::span<const uint8_t>(hmac, 32)))
    return PermissionDenied("integrity HMAC mismatch (TPM_RC_INTEGRITY)");

  const std::vector<uint8_t> sym_key = Kbkdf(seed, "STORAGE", name, 16);
  std::vector<uint8_t> plain(enc_identity.size());
  const uint8_t iv[16] = {};
  EVP_CIPHER_CTX* cipher = EVP_CIPHER_CTX_new();
  int written = 0;
  const bool ok =
      EVP_DecryptInit_ex(cipher, EVP_aes_128_cfb128(), nullptr, sym_key.data(), iv) == 1 &&
      EVP_DecryptUpdate(cipher, plain.data(), &written, enc_identity.data(),
                        static_cast<int>(enc_identity.size())) == 1;
  EVP_CIPHER_CTX_free(cipher);
  if (!ok || static_cast<size_t>(written) != plain.size()) return InternalError("AES-CFB");
  if (plain.size() < 2 || ReadBe16(plain, 0) != plain.size() - 2)
    return DataLoss("decrypted TPM2B_DIGEST size");
  return std::vector<uint8_t>(plain.begin() + 2, plain.end());
}

TEST_F(TpmVerifier, KdfaMatchesSp800108CounterMode) {
  const std::vector<uint8_t> key(32, 0x5C);
  const std::vector<uint8_t> name = tpm_->AkName();
  for (uint32_t bits : {128u, 256u, 264u, 1024u}) {
    capsule::SecretBytes ours = TpmKdfaSha256(key, "STORAGE", name, {}, bits);
    EXPECT_EQ(std::vector<uint8_t>(ours.span().begin(), ours.span().end()),
              Kbkdf(key, "STORAGE", name, bits / 8))
        << bits;
  }
  // contextU || contextV is the context.
  const std::vector<uint8_t> u = {1, 2, 3}, v = {4, 5};
  capsule::SecretBytes split = TpmKdfaSha256(key, "DUPLICATE", u, v, 256);
  EXPECT_EQ(std::vector<uint8_t>(split.span().begin(), split.span().end()),
            Kbkdf(key, "DUPLICATE", std::vector<uint8_t>{1, 2, 3, 4, 5}, 32));
}

TEST_F(TpmVerifier, CredentialOpensOnlyForTheRightNameAndEk) {
  const std::vector<uint8_t> name = tpm_->AkName();
  const std::vector<uint8_t> secret = {0xDE, 0xAD, 0xBE, 0xEF, 1,  2,  3,  4,  5,  6,  7,
                                       8,    9,    10,   11,   12, 13, 14, 15, 16, 17, 18,
                                       19,   20,   21,   22,   23, 24, 25, 26, 27, 28};
  ASSERT_EQ(secret.size(), 32u);
  Result<TpmCredential> credential = MakeTpmCredential(tpm_->ek_cert_der(), name, secret);
  ASSERT_TRUE(credential.ok()) << credential.status().ToString();

  // Structure: TPM2B_ENCRYPTED_SECRET of an RSA-2048 block; TPM2B_ID_OBJECT = size ||
  // TPM2B_DIGEST(32-byte HMAC) || encIdentity (2 + 32 bytes).
  ASSERT_EQ(credential->encrypted_secret.size(), 2u + 256);
  EXPECT_EQ(ReadBe16(credential->encrypted_secret, 0), 256);
  ASSERT_EQ(credential->id_object.size(), 2u + 2 + 32 + 2 + 32);
  EXPECT_EQ(ReadBe16(credential->id_object, 0), 68);
  EXPECT_EQ(ReadBe16(credential->id_object, 2), 32);

  Result<std::vector<uint8_t>> opened = Activate(tpm_->ek_private_key(), *credential, name);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(*opened, secret);

  // Another AK name: the integrity check fails, as TPM_RC_INTEGRITY on a TPM.
  std::vector<uint8_t> other_name = name;
  other_name[33] ^= 1;
  Result<std::vector<uint8_t>> wrong_name =
      Activate(tpm_->ek_private_key(), *credential, other_name);
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_NE(wrong_name.status().message().find("integrity HMAC mismatch"), std::string::npos);

  // Another TPM's EK cannot decrypt the seed.
  auto other = SyntheticTpm::Create({.key_set = 1});
  ASSERT_TRUE(other.ok());
  Result<std::vector<uint8_t>> wrong_ek = Activate((*other)->ek_private_key(), *credential, name);
  ASSERT_FALSE(wrong_ek.ok());
  EXPECT_NE(wrong_ek.status().message().find("RSA-OAEP decryption"), std::string::npos);

  // A fresh seed every time: two credentials for the same inputs differ, both open.
  Result<TpmCredential> again = MakeTpmCredential(tpm_->ek_cert_der(), name, secret);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->encrypted_secret, credential->encrypted_secret);
  EXPECT_NE(again->id_object, credential->id_object);
  EXPECT_TRUE(Activate(tpm_->ek_private_key(), *again, name).ok());

  // A one-byte secret.
  Result<TpmCredential> small =
      MakeTpmCredential(tpm_->ek_cert_der(), name, std::span<const uint8_t>(secret).first(1));
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->id_object.size(), 2u + 2 + 32 + 2 + 1);
  Result<std::vector<uint8_t>> small_opened = Activate(tpm_->ek_private_key(), *small, name);
  ASSERT_TRUE(small_opened.ok());
  EXPECT_EQ(*small_opened, std::vector<uint8_t>{0xDE});
}

TEST_F(TpmVerifier, CredentialInputsAreChecked) {
  const std::vector<uint8_t> name = tpm_->AkName();
  const std::vector<uint8_t> secret(32, 1);
  auto expect = [](const Result<TpmCredential>& result, const std::string& fragment) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find(fragment), std::string::npos)
        << result.status().ToString();
  };
  expect(MakeTpmCredential(tpm_->ek_cert_der(), name, std::vector<uint8_t>(33, 1)),
         "secret is 33 bytes, expected 1..32");
  expect(MakeTpmCredential(tpm_->ek_cert_der(), name, {}), "secret is 0 bytes");
  expect(MakeTpmCredential(tpm_->ek_cert_der(), {}, secret), "AK name is 0 bytes");
  expect(MakeTpmCredential(tpm_->ek_cert_der(), std::vector<uint8_t>(67, 0), secret),
         "AK name is 67 bytes, expected 1..66");
  expect(MakeTpmCredential(std::vector<uint8_t>{0x30, 0x00}, name, secret), "EK certificate");
  // An EK certificate whose key is not RSA-2048.
  testing::SyntheticTpmOptions big;
  big.ek_rsa_bits = 3072;
  auto big_tpm = SyntheticTpm::Create(big);
  ASSERT_TRUE(big_tpm.ok());
  expect(MakeTpmCredential((*big_tpm)->ek_cert_der(), name, secret), "not RSA 2048");
}

// ---- A real EK certificate chain from swtpm (tee-backends-plan.md §4.4, §4.6) ----

std::vector<uint8_t> ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> PemToDer(const std::filesystem::path& path) {
  const std::vector<uint8_t> pem = ReadAll(path);
  auto certs = ParsePemCertificates(
      std::string_view(reinterpret_cast<const char*>(pem.data()), pem.size()), path.string());
  EXPECT_TRUE(certs.ok()) << certs.status().ToString();
  if (!certs.ok() || certs->size() != 1) return {};
  return CertificateDer((*certs)[0].get());
}

TEST_F(TpmVerifier, RealSwtpmEkChainVerifies) {
  if (access("/usr/bin/swtpm_setup", X_OK) != 0 || access("/usr/bin/swtpm_localca", X_OK) != 0)
    GTEST_SKIP() << "swtpm_setup / swtpm_localca not installed (apt install swtpm-tools)";
  char dir_template[] = "/tmp/mlcapsule-tpm-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::filesystem::path dir = dir_template;
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};
  for (const char* sub : {"state", "ca", "ek"}) std::filesystem::create_directory(dir / sub);
  {
    std::ofstream(dir / "swtpm-localca.conf")
        << "statedir = " << (dir / "ca").string() << "\n"
        << "signingkey = " << (dir / "ca/signkey.pem").string() << "\n"
        << "issuercert = " << (dir / "ca/issuercert.pem").string() << "\n"
        << "certserial = " << (dir / "ca/certserial").string() << "\n";
    std::ofstream(dir / "swtpm-localca.options") << "--platform-manufacturer Debian\n"
                                                 << "--platform-version 2.1\n"
                                                 << "--platform-model QEMU\n";
    std::ofstream(dir / "swtpm_setup.conf")
        << "create_certs_tool = /usr/bin/swtpm_localca\n"
        << "create_certs_tool_config = " << (dir / "swtpm-localca.conf").string() << "\n"
        << "create_certs_tool_options = " << (dir / "swtpm-localca.options").string() << "\n"
        << "active_pcr_banks = sha256\n";
  }
  const std::string command = "/usr/bin/swtpm_setup --tpm2 --tpmstate '" +
                              (dir / "state").string() + "' --create-ek-cert --config '" +
                              (dir / "swtpm_setup.conf").string() + "' --write-ek-cert-files '" +
                              (dir / "ek").string() + "' --logfile '" +
                              (dir / "setup.log").string() + "' >/dev/null 2>&1";
  const int rc = std::system(command.c_str());
  const std::vector<uint8_t> log = ReadAll(dir / "setup.log");
  ASSERT_EQ(rc, 0) << std::string(log.begin(), log.end());

  const std::vector<uint8_t> ek_der = ReadAll(dir / "ek/ek-rsa2048.crt");
  const std::vector<uint8_t> issuer_der = PemToDer(dir / "ca/issuercert.pem");
  const std::vector<uint8_t> root_der = PemToDer(dir / "ca/swtpm-localca-rootca-cert.pem");
  ASSERT_FALSE(ek_der.empty());
  ASSERT_FALSE(issuer_der.empty());
  ASSERT_FALSE(root_der.empty());

  // swtpm's EK certificate and intermediate, with a synthetic AK and quote (the AK is not bound
  // to the EK by the quote; credential activation does that).
  capsule::TpmEvidence parts = GoodParts();
  parts.ek_cert = ek_der;
  parts.ek_chain = {issuer_der};
  TrustAnchors anchors;
  anchors.tpm_ek_roots = {root_der};
  Verifier verifier(anchors);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  Result<Verdict> verdict =
      verifier.Verify(EvidenceType::kTpm, capsule::EncodeTpmEvidence(parts), nullptr, now);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->ek_fingerprint, Sha256Hex(ek_der));

  // Not against the synthetic CA, and not without swtpm's intermediate.
  EXPECT_FAILS_AT(
      verifier_->Verify(EvidenceType::kTpm, capsule::EncodeTpmEvidence(parts), nullptr, now),
      "ek_chain");
  parts.ek_chain.clear();
  EXPECT_FAILS_AT(
      verifier.Verify(EvidenceType::kTpm, capsule::EncodeTpmEvidence(parts), nullptr, now),
      "ek_chain");

  // A credential for swtpm's EK has the RSA-2048 shape.
  Result<TpmCredential> credential =
      MakeTpmCredential(ek_der, tpm_->AkName(), std::vector<uint8_t>(32, 7));
  ASSERT_TRUE(credential.ok()) << credential.status().ToString();
  EXPECT_EQ(credential->encrypted_secret.size(), 258u);
}

}  // namespace
}  // namespace mlcapsule::server::evidence
