// Tests of the synthetic Intel PKI against the real SGX verifier: a synthetic quote bound to a
// fresh report data verifies with the synthetic anchors and collateral (and only with them), and
// the cases no genuine Intel vector can produce (attestation-plan.md §9 row 14, §11) fail where
// they must: a revoked PCK, TCB levels with Revoked / OutOfDate statuses (returned, then refused
// by CheckPolicy), collateral signed by the wrong key, a stale or mismatched collateral.
#include "server/evidence/testing/synthetic_intel.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "capsule/crypto.h"
#include "capsule/policy.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/expect_check.h"

namespace mlcapsule::server::evidence::testing {
namespace {

constexpr int64_t kNow = 1751328000;  // 2025-07-01T00:00:00Z, inside the default windows

std::array<uint8_t, 32> Filled(uint8_t value) {
  std::array<uint8_t, 32> out;
  out.fill(value);
  return out;
}

SgxEnclaveSpec Enclave() {
  SgxEnclaveSpec enclave;
  enclave.mr_enclave = Filled(0xa1);
  enclave.mr_signer = Filled(0x5e);
  enclave.isv_prod_id = 7;
  enclave.isv_svn = 3;
  for (size_t i = 0; i < enclave.report_data.size(); ++i) {
    enclave.report_data[i] = static_cast<uint8_t>(i * 3 + 1);
  }
  return enclave;
}

// Makes a PKI with `options`, one quote for Enclave(), and verifies it with the PKI's anchors
// and collateral at `now`.
Result<Verdict> VerifyWith(const SyntheticIntelOptions& options, int64_t now = kNow,
                           SgxEnclaveSpec enclave = Enclave()) {
  MLC_ASSIGN_OR_RETURN(auto pki, SyntheticIntelPki::Create(options));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> quote, pki->MakeSgxQuote(enclave));
  MLC_ASSIGN_OR_RETURN(IntelCollateral collateral, ParseIntelCollateral(pki->CollateralJson()));
  Verifier verifier(pki->Anchors());
  return verifier.Verify(capsule::EvidenceType::kSgx, quote, &collateral, now);
}

capsule::Policy SgxPolicy(const std::string& measurement_hex) {
  auto policy = capsule::ParsePolicy(R"({"version":1,"tee":{"accept":["sgx"],"measurements":)"
                                     R"({"sgx":[")" +
                                     measurement_hex + R"("]}}})");
  EXPECT_TRUE(policy.ok()) << policy.status().ToString();
  return policy.ok() ? policy.value() : capsule::Policy{};
}

class SyntheticIntelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pki = SyntheticIntelPki::Create({});
    ASSERT_TRUE(pki.ok()) << pki.status().ToString();
    pki_ = std::move(pki).value();
    auto collateral = ParseIntelCollateral(pki_->CollateralJson());
    ASSERT_TRUE(collateral.ok()) << collateral.status().ToString();
    collateral_ = collateral.value();
  }
  std::unique_ptr<SyntheticIntelPki> pki_;
  IntelCollateral collateral_;
};

TEST_F(SyntheticIntelTest, QuoteVerifiesWithTheSyntheticAnchors) {
  const SgxEnclaveSpec enclave = Enclave();
  auto quote = pki_->MakeSgxQuote(enclave);
  ASSERT_TRUE(quote.ok()) << quote.status().ToString();
  Verifier verifier(pki_->Anchors());
  auto verdict = verifier.Verify(capsule::EvidenceType::kSgx, quote.value(), &collateral_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->type, capsule::EvidenceType::kSgx);
  EXPECT_EQ(verdict->measurement,
            std::vector<uint8_t>(enclave.mr_enclave.begin(), enclave.mr_enclave.end()));
  EXPECT_EQ(verdict->mr_signer,
            std::vector<uint8_t>(enclave.mr_signer.begin(), enclave.mr_signer.end()));
  EXPECT_EQ(verdict->report_data, enclave.report_data);
  EXPECT_EQ(verdict->isv_prod_id, 7);
  EXPECT_EQ(verdict->isv_svn, 3);
  EXPECT_FALSE(verdict->debug);
  EXPECT_EQ(verdict->tcb_status, "UpToDate");
  EXPECT_EQ(verdict->qe_tcb_status, "UpToDate");
  EXPECT_TRUE(verdict->advisory_ids.empty());
  EXPECT_EQ(verdict->fmspc, "00906EA10000");
}

TEST_F(SyntheticIntelTest, TheLayoutIsTheRealOne) {
  auto quote = pki_->MakeSgxQuote(Enclave());
  ASSERT_TRUE(quote.ok());
  const std::vector<uint8_t>& q = quote.value();
  ASSERT_GT(q.size(), 1020u);
  EXPECT_EQ(q[0] | q[1] << 8, 3);  // version
  EXPECT_EQ(q[2] | q[3] << 8, 2);  // ECDSA P-256
  const uint32_t sig_data_len = q[432] | q[433] << 8 | q[434] << 16 | uint32_t(q[435]) << 24;
  EXPECT_EQ(436 + sig_data_len, q.size());
  const size_t auth = q[1012] | q[1013] << 8;
  EXPECT_EQ(auth, 32u);
  EXPECT_EQ(q[1014 + auth] | q[1015 + auth] << 8, 5);  // cert data type: PEM chain
  EXPECT_EQ(q.back(), 0);                              // trailing NUL of the chain
  const SgxEnclaveSpec enclave = Enclave();
  EXPECT_EQ(std::vector<uint8_t>(q.begin() + kSgxQuoteReportDataOffset,
                                 q.begin() + kSgxQuoteReportDataOffset + 64),
            std::vector<uint8_t>(enclave.report_data.begin(), enclave.report_data.end()));
}

TEST_F(SyntheticIntelTest, PinnedIntelRootRefusesIt) {
  auto quote = pki_->MakeSgxQuote(Enclave());
  ASSERT_TRUE(quote.ok());
  Verifier verifier(TrustAnchors::Pinned());
  EXPECT_FAILS_AT(verifier.Verify(capsule::EvidenceType::kSgx, quote.value(), &collateral_, kNow),
                  "root_mismatch");
}

TEST_F(SyntheticIntelTest, BindingAndPolicyThroughCheckPolicy) {
  const SgxEnclaveSpec enclave = Enclave();
  auto quote = pki_->MakeSgxQuote(enclave);
  ASSERT_TRUE(quote.ok());
  Verifier verifier(pki_->Anchors());
  auto verdict = verifier.Verify(capsule::EvidenceType::kSgx, quote.value(), &collateral_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  const EvidencePolicy policy =
      PolicyFor(SgxPolicy(capsule::ToHex(enclave.mr_enclave)), capsule::EvidenceType::kSgx);
  EXPECT_TRUE(CheckPolicy(verdict.value(), policy, &enclave.report_data).ok());

  capsule::ReportData wrong = enclave.report_data;
  wrong[0] ^= 1;
  Status binding = CheckPolicy(verdict.value(), policy, &wrong);
  EXPECT_EQ(binding.code(), StatusCode::kPermissionDenied) << binding.ToString();

  const EvidencePolicy other =
      PolicyFor(SgxPolicy(capsule::ToHex(Filled(0xb2))), capsule::EvidenceType::kSgx);
  Status measurement = CheckPolicy(verdict.value(), other, &enclave.report_data);
  EXPECT_EQ(measurement.code(), StatusCode::kPermissionDenied) << measurement.ToString();
}

TEST_F(SyntheticIntelTest, DebugEnclaveIsRefusedByPolicy) {
  SgxEnclaveSpec enclave = Enclave();
  enclave.attribute_flags |= 0x02;
  auto quote = pki_->MakeSgxQuote(enclave);
  ASSERT_TRUE(quote.ok());
  Verifier verifier(pki_->Anchors());
  auto verdict = verifier.Verify(capsule::EvidenceType::kSgx, quote.value(), &collateral_, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_TRUE(verdict->debug);
  Status status = CheckPolicy(
      verdict.value(),
      PolicyFor(SgxPolicy(capsule::ToHex(enclave.mr_enclave)), capsule::EvidenceType::kSgx),
      &enclave.report_data);
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(status.message().find("debug"), std::string::npos) << status.ToString();
}

TEST_F(SyntheticIntelTest, MutatedQuoteFailsTheSignature) {
  auto quote = pki_->MakeSgxQuote(Enclave());
  ASSERT_TRUE(quote.ok());
  std::vector<uint8_t> mutated = quote.value();
  mutated[kSgxQuoteReportDataOffset] ^= 1;
  Verifier verifier(pki_->Anchors());
  EXPECT_FAILS_AT(verifier.Verify(capsule::EvidenceType::kSgx, mutated, &collateral_, kNow),
                  "quote_signature");
}

// §9 row 14 end to end: the PCK leaf's serial on the PCK CRL.
TEST(SyntheticIntelRevocation, RevokedPckLeaf) {
  SyntheticIntelOptions options;
  options.pck_revoked_serials = {3, options.pck_serial, 0x99};  // others around it too
  EXPECT_FAILS_AT(VerifyWith(options), "pck_revoked");
}

TEST(SyntheticIntelRevocation, OtherSerialsOnTheCrlDoNotMatter) {
  SyntheticIntelOptions options;
  options.pck_revoked_serials = {3, options.pck_serial + 1, 0x99};
  auto verdict = VerifyWith(options);
  EXPECT_TRUE(verdict.ok()) << verdict.status().ToString();
}

TEST(SyntheticIntelRevocation, RevokedTcbSigningCertificate) {
  SyntheticIntelOptions options;
  options.root_revoked_serials = {kSyntheticTcbSigningSerial};
  EXPECT_FAILS_AT(VerifyWith(options), "collateral_signature");
}

TEST(SyntheticIntelRevocation, RevokedProcessorCa) {
  SyntheticIntelOptions options;
  options.root_revoked_serials = {kSyntheticProcessorCaSerial};
  EXPECT_FAILS_AT(VerifyWith(options), "pck_revoked");
}

// §11: TCB levels the genuine collateral cannot give. The verifier reports the status; the
// provider's policy (the §11 default set) refuses it.
void ExpectStatusRefused(const std::string& status, const std::vector<std::string>& advisories) {
  SCOPED_TRACE(status);
  SyntheticIntelOptions options;
  SyntheticTcbLevel level;
  level.sgx_components = options.pck_components;
  level.pce_svn = options.pck_pce_svn;
  level.status = status;
  level.advisory_ids = advisories;
  options.tcb_levels = {level};
  const SgxEnclaveSpec enclave = Enclave();
  auto verdict = VerifyWith(options, kNow, enclave);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->tcb_status, status);
  EXPECT_EQ(verdict->advisory_ids, advisories);
  Status policy = CheckPolicy(
      verdict.value(),
      PolicyFor(SgxPolicy(capsule::ToHex(enclave.mr_enclave)), capsule::EvidenceType::kSgx),
      &enclave.report_data);
  EXPECT_EQ(policy.code(), StatusCode::kPermissionDenied) << policy.ToString();
  EXPECT_NE(policy.message().find(status), std::string::npos) << policy.ToString();
}

TEST(SyntheticIntelTcb, RevokedLevelIsReportedAndRefused) {
  ExpectStatusRefused("Revoked", {"INTEL-SA-00001"});
}

TEST(SyntheticIntelTcb, OutOfDateLevelIsReportedAndRefused) {
  ExpectStatusRefused("OutOfDate", {"INTEL-SA-00615", "INTEL-SA-00828"});
}

TEST(SyntheticIntelTcb, ConfigurationNeededIsAcceptedWithAdvisories) {
  SyntheticIntelOptions options;
  SyntheticTcbLevel higher;  // the PCK is below this one (component 7)
  higher.sgx_components = options.pck_components;
  higher.sgx_components[6] = 12;
  higher.pce_svn = options.pck_pce_svn;
  SyntheticTcbLevel matched = higher;
  matched.sgx_components[6] = 0;
  matched.status = "ConfigurationAndSWHardeningNeeded";
  matched.advisory_ids = {"INTEL-SA-00289", "INTEL-SA-00615"};
  options.tcb_levels = {higher, matched};
  const SgxEnclaveSpec enclave = Enclave();
  auto verdict = VerifyWith(options, kNow, enclave);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->tcb_status, "ConfigurationAndSWHardeningNeeded");
  EXPECT_EQ(verdict->advisory_ids, matched.advisory_ids);
  EXPECT_TRUE(CheckPolicy(verdict.value(),
                          PolicyFor(SgxPolicy(capsule::ToHex(enclave.mr_enclave)),
                                    capsule::EvidenceType::kSgx),
                          &enclave.report_data)
                  .ok());
}

TEST(SyntheticIntelTcb, NoMatchingLevelIsNotSupported) {
  SyntheticIntelOptions options;
  SyntheticTcbLevel level;
  level.sgx_components = options.pck_components;
  level.pce_svn = options.pck_pce_svn + 1;
  options.tcb_levels = {level};
  EXPECT_FAILS_AT(VerifyWith(options), "tcb_not_supported");
}

TEST(SyntheticIntelTcb, OutOfDateQeConverges) {
  SyntheticIntelOptions options;
  SyntheticQeLevel newer;
  newer.isv_svn = options.qe_isv_svn + 1;
  SyntheticQeLevel current;
  current.isv_svn = options.qe_isv_svn;
  current.status = "OutOfDate";
  current.advisory_ids = {"INTEL-SA-00615"};
  options.qe_levels = {newer, current};
  auto verdict = VerifyWith(options);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->qe_tcb_status, "OutOfDate");
  EXPECT_EQ(verdict->tcb_status, "OutOfDate");  // UpToDate platform + OutOfDate QE (§5.6)
}

// Collateral signed by a key other than the TCB Signing certificate's.
TEST(SyntheticIntelCollateral, TcbInfoSignedByWrongKey) {
  SyntheticIntelOptions options;
  options.tcb_info_signed_by_wrong_key = true;
  EXPECT_FAILS_AT(VerifyWith(options), "collateral_signature");
}

TEST(SyntheticIntelCollateral, QeIdentitySignedByWrongKey) {
  SyntheticIntelOptions options;
  options.qe_identity_signed_by_wrong_key = true;
  EXPECT_FAILS_AT(VerifyWith(options), "collateral_signature");
}

TEST(SyntheticIntelCollateral, ExpiredCollateral) {
  SyntheticIntelOptions options;
  EXPECT_FAILS_AT(VerifyWith(options, options.collateral_next_update + 1), "collateral_expired");
  EXPECT_TRUE(VerifyWith(options, options.collateral_next_update).ok());  // inclusive
}

TEST(SyntheticIntelCollateral, FmspcMismatch) {
  SyntheticIntelOptions options;
  options.tcb_info_fmspc = std::array<uint8_t, 6>{0x00, 0xa0, 0x67, 0x11, 0x00, 0x00};
  EXPECT_FAILS_AT(VerifyWith(options), "collateral_mismatch");
}

TEST(SyntheticIntelCollateral, ExpiredCertificates) {
  SyntheticIntelOptions options;
  options.cert_not_after = kNow - 1;
  auto verdict = VerifyWith(options);
  ASSERT_FALSE(verdict.ok());
}

// ~10^4 quotes in a few seconds is what the load generator needs: keys are made once, a quote
// costs one signature. The time is printed, not asserted (shared build machines are noisy).
TEST_F(SyntheticIntelTest, ManyQuotesQuicklyAndFromSeveralThreads) {
  constexpr int kQuotes = 2000;
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint8_t> last;
  for (int i = 0; i < kQuotes; ++i) {
    SgxEnclaveSpec enclave = Enclave();
    enclave.report_data[0] = static_cast<uint8_t>(i);
    auto quote = pki_->MakeSgxQuote(enclave);
    ASSERT_TRUE(quote.ok());
    last = std::move(quote).value();
  }
  const double per_quote_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      kQuotes;
  std::printf("synthetic SGX quote: %.1f us each (%d quotes)\n", per_quote_us, kQuotes);

  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  Verifier verifier(pki_->Anchors());
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        SgxEnclaveSpec enclave = Enclave();
        enclave.report_data[1] = static_cast<uint8_t>(t);
        auto quote = pki_->MakeSgxQuote(enclave);
        if (!quote.ok() ||
            !verifier.Verify(capsule::EvidenceType::kSgx, quote.value(), &collateral_, kNow).ok()) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace mlcapsule::server::evidence::testing
