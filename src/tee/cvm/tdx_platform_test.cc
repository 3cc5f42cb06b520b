// TdxPlatform (tdx_platform.h) end to end on the dcap-qvl TDX quote v4: a prepared configfs-tsm
// entry (provider tdx_guest, the quote as outblob, no auxblob) -> Evidence -> the license
// server's Verifier with the vector's collateral and CheckPolicy; the quote checks of §5 and the
// key file. The vector tests skip when ../shared/attest-vectors is absent.
#include "tee/cvm/tdx_platform.h"
#include "tee/cvm/cvm_test_util.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "capsule/policy.h"
#include "server/evidence/evidence.h"
#include "tee/cvm/snp_platform.h"

namespace mlcapsule::tee::cvm {
namespace {

using namespace ::mlcapsule::tee::cvm::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;
namespace evidence = server::evidence;

constexpr int64_t kNow = 1751328000;  // inside the collateral's window

class TdxPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (VectorsDir().empty() || !fs::exists(VectorsDir() / "dcap-qvl_tdx_quote_v4.bin"))
      GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS); run through "
                      "ctest with ../shared/attest-vectors present";
    quote_ = ReadBytes(VectorsDir() / "dcap-qvl_tdx_quote_v4.bin");
    std::memcpy(rd_.data(), quote_.data() + kTdxQuoteReportDataOffset, rd_.size());
    entry_ = fs::path(configfs_.path()) / "entry";
    fs::create_directories(entry_);
    WriteFile(entry_ / "provider", "tdx_guest\n");
    WriteFile(entry_ / "generation", "0\n");
    WriteFile(entry_ / "inblob", "");
    WriteFile(entry_ / "outblob", quote_);
  }
  TdxPlatformOptions Options() const {
    TdxPlatformOptions options;
    options.tsm.root = configfs_.path();
    options.tsm.entry_name = "entry";
    options.state_dir = state_.path() + "/state";
    return options;
  }
  std::unique_ptr<TdxPlatform> Make() {
    Result<std::unique_ptr<TdxPlatform>> platform = TdxPlatform::Create(Options());
    EXPECT_TRUE(platform.ok()) << platform.status().ToString();
    return platform.ok() ? std::move(platform).value() : nullptr;
  }

  TempDir configfs_, state_;
  fs::path entry_;
  std::vector<uint8_t> quote_;
  capsule::ReportData rd_{};
};

TEST_F(TdxPlatformTest, VectorThroughPreparedConfigfsVerifies) {
  auto platform = Make();
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->evidence_type(), capsule::EvidenceType::kTdx);
  EXPECT_EQ(capsule::ToHex(std::span<const uint8_t>(rd_).first(4)), "9a9d48e7");
  Result<std::vector<uint8_t>> ev = platform->Evidence(rd_);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ(*ev, quote_);
  EXPECT_EQ(ReadBytes(entry_ / "inblob"), std::vector<uint8_t>(rd_.begin(), rd_.end()));

  Result<evidence::IntelCollateral> collateral =
      evidence::ParseIntelCollateral(ReadText(VectorsDir() / "dcap-qvl_tdx_quote_collateral.json"));
  ASSERT_TRUE(collateral.ok()) << collateral.status().ToString();
  evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
  Result<evidence::Verdict> verdict =
      verifier.Verify(capsule::EvidenceType::kTdx, *ev, &*collateral, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->tcb_status, "UpToDate");

  capsule::Policy policy;
  policy.tee.accept = {"tdx"};
  const evidence::EvidencePolicy tdx = evidence::PolicyFor(policy, capsule::EvidenceType::kTdx);
  EXPECT_TRUE(evidence::CheckPolicy(*verdict, tdx, &rd_).ok());
  capsule::ReportData other = rd_;
  other[0] ^= 1;
  ExpectError(evidence::CheckPolicy(*verdict, tdx, &other), StatusCode::kPermissionDenied,
              "policy: report data does not match the nonce binding");
  ExpectError(platform->Evidence(other).status(), StatusCode::kInvalidArgument,
              "REPORTDATA in the TDX quote (9a9d48e7");
}

TEST_F(TdxPlatformTest, BadQuotesAndEntries) {
  auto platform = Make();
  ASSERT_NE(platform, nullptr);
  ASSERT_TRUE(platform->IncrementCounter().ok());
  const uint64_t counter = *platform->ReadCounter();
  struct Row {
    const char* name;
    std::vector<uint8_t> outblob;
    std::string provider;
    StatusCode code;
    std::string part;
  };
  std::vector<uint8_t> version5 = quote_, sgx = quote_, big = quote_;
  version5[0] = 5;
  sgx[4] = 0;
  big.resize(kMaxTdxQuoteBytes + 1);
  const std::vector<Row> rows = {
      {"version 5", version5, "tdx_guest", StatusCode::kInvalidArgument,
       "the TDX quote version is 5: the license server verifies version 4 only"},
      {"tee_type 0", sgx, "tdx_guest", StatusCode::kInvalidArgument,
       "the quote's tee_type is 0x0, not TDX (0x81)"},
      {"short", std::vector<uint8_t>(quote_.begin(), quote_.begin() + 635), "tdx_guest",
       StatusCode::kInvalidArgument, "the TDX quote is 635 bytes, shorter than"},
      {"over 16 KiB", big, "tdx_guest", StatusCode::kInvalidArgument,
       "the TDX quote is 16385 bytes, over the limit 16384"},
      {"garbage", std::vector<uint8_t>(4000, 0xEE), "tdx_guest", StatusCode::kInvalidArgument,
       "the TDX quote version is 61166"},
      {"SNP provider", quote_, "sev_guest", StatusCode::kFailedPrecondition,
       "is 'sev_guest', not 'tdx_guest'"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    WriteFile(entry_ / "outblob", row.outblob);
    WriteFile(entry_ / "provider", row.provider + "\n");
    ExpectError(platform->Evidence(rd_).status(), row.code, row.part);
    EXPECT_EQ(*platform->ReadCounter(), counter);
  }
}

TEST(TdxPlatform, NoConfigfsIsUnavailableNamingThePath) {
  TempDir dir;
  TdxPlatformOptions options;
  options.tsm.root = dir.path() + "/no/tsm/report";
  options.state_dir = dir.path() + "/state";
  Result<std::unique_ptr<TdxPlatform>> platform = TdxPlatform::Create(std::move(options));
  ASSERT_TRUE(platform.ok()) << platform.status().ToString();
  capsule::ReportData rd{};
  ExpectError(
      (*platform)->Evidence(rd).status(), StatusCode::kUnavailable,
      "no configfs-tsm provider at " + dir.path() + "/no/tsm/report: No such file or directory");
}

TEST(TdxPlatform, KeyFileSealingKeyAndCounter) {
  TempDir dir;
  TdxPlatformOptions options;
  options.state_dir = dir.path() + "/state";
  capsule::SecretBytes first;
  {
    Result<std::unique_ptr<TdxPlatform>> platform = TdxPlatform::Create(std::move(options));
    ASSERT_TRUE(platform.ok()) << platform.status().ToString();
    Result<capsule::SecretBytes> key = (*platform)->SealingKey();
    ASSERT_TRUE(key.ok());
    first = std::move(key).value();
    EXPECT_EQ(*(*platform)->IncrementCounter(), 1u);
    EXPECT_FALSE((*platform)->Now().trusted);
  }
  const fs::path key_file = dir.path() + "/state/core-seal.key";
  ASSERT_TRUE(fs::exists(key_file));
  EXPECT_EQ(fs::file_size(key_file), 32u);
  EXPECT_EQ(fs::status(key_file).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  options.state_dir = dir.path() + "/state";
  Result<std::unique_ptr<TdxPlatform>> again = TdxPlatform::Create(std::move(options));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(capsule::ConstantTimeEqual(first.span(), (*again)->SealingKey()->span()));
  EXPECT_EQ(*(*again)->ReadCounter(), 1u);

  // The SNP fallback reads the same file name with another label: another key.
  const capsule::SecretBytes snp = capsule::KeyedHash(
      capsule::SecretBytes(ReadBytes(key_file).data(), 32), {AsBytes(kSnpSealDomain)});
  const capsule::SecretBytes tdx = capsule::KeyedHash(
      capsule::SecretBytes(ReadBytes(key_file).data(), 32), {AsBytes(kTdxSealDomain)});
  EXPECT_TRUE(capsule::ConstantTimeEqual(tdx.span(), first.span()));
  EXPECT_FALSE(capsule::ConstantTimeEqual(snp.span(), first.span()));

  TdxPlatformOptions empty;
  ExpectError(TdxPlatform::Create(std::move(empty)).status(), StatusCode::kInvalidArgument,
              "state directory is not set");
}

}  // namespace
}  // namespace mlcapsule::tee::cvm
