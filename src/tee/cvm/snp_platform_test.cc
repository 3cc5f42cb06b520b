// SnpPlatform (snp_platform.h) end to end on the go-sev-guest vector: a prepared configfs-tsm
// entry (provider sev_guest, the vector report as outblob, a certificate table around the vector
// VCEK as auxblob) -> Evidence -> the license server's Verifier and CheckPolicy. Then the bad
// inputs of docs/dev/tee-backends-plan.md §5, each refused in the platform with its code and a
// distinctive message, the counter untouched; and the sealing key's sources. The vector tests
// skip when ../shared/attest-vectors is absent.
#include "tee/cvm/snp_platform.h"
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
#include "tee/cvm/attester.h"

namespace mlcapsule::tee::cvm {
namespace {

using namespace ::mlcapsule::tee::cvm::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;
namespace evidence = server::evidence;

constexpr int64_t kNow = 1751328000;  // 2025-07-01T00:00:00Z, inside the VCEK's validity

void PutLe32(std::vector<uint8_t>* bytes, size_t offset, uint32_t value) {
  std::memcpy(bytes->data() + offset, &value, 4);
}

// A reporter that answers whatever the test says (a hostile helper or host).
class ScriptedReporter final : public TsmReporter {
 public:
  explicit ScriptedReporter(TsmBlobs* blobs) : blobs_(blobs) {}
  Result<TsmBlobs> Request(const capsule::ReportData&) override { return *blobs_; }

 private:
  TsmBlobs* blobs_;
};

class SnpPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (VectorsDir().empty() || !fs::exists(VectorsDir() / "go-sev-guest_snp_attestation.bin"))
      GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS); run through "
                      "ctest with ../shared/attest-vectors present";
    report_ = ReadBytes(VectorsDir() / "go-sev-guest_snp_attestation.bin");
    vcek_ = ReadBytes(VectorsDir() / "go-sev-guest_vcek_milan.der");
    ASSERT_EQ(report_.size(), kSnpReportBytes);
    std::memcpy(rd_.data(), report_.data() + kSnpReportDataOffset, rd_.size());
    const std::vector<std::pair<Guid, std::vector<uint8_t>>> certificates = {
        {kVcekGuid, vcek_}, {kAskGuid, {0x30, 0x00}}, {kArkGuid, {0x30, 0x00}}};
    table_ = BuildCertTable(certificates);
    entry_ = fs::path(configfs_.path()) / "entry";
    fs::create_directories(entry_);
    WriteFile(entry_ / "provider", "sev_guest\n");
    WriteFile(entry_ / "generation", "0\n");
    WriteFile(entry_ / "privlevel_floor", "0\n");
    WriteFile(entry_ / "privlevel", "");
    WriteFile(entry_ / "inblob", "");
    WriteFile(entry_ / "outblob", report_);
    WriteFile(entry_ / "auxblob", table_);
  }

  SnpPlatformOptions Options() const {
    SnpPlatformOptions options;
    options.tsm.root = configfs_.path();
    options.tsm.entry_name = "entry";
    options.sev_guest_device = state_.path() + "/no-sev-guest";
    options.state_dir = state_.path() + "/state";
    options.seal_key_file_fallback = true;
    return options;
  }
  std::unique_ptr<SnpPlatform> Make(SnpPlatformOptions options) {
    Result<std::unique_ptr<SnpPlatform>> platform = SnpPlatform::Create(std::move(options));
    EXPECT_TRUE(platform.ok()) << platform.status().ToString();
    return platform.ok() ? std::move(platform).value() : nullptr;
  }

  TempDir configfs_, state_;
  fs::path entry_;
  std::vector<uint8_t> report_, vcek_, table_;
  capsule::ReportData rd_{};
};

TEST(SnpEvidenceContainer, SameBytesAsTheServersEncoder) {
  const std::vector<uint8_t> report(1184, 0x11), vcek = {1, 2, 3}, empty;
  EXPECT_EQ(PackSnpEvidence(report, vcek), evidence::EncodeSnpEvidence(report, vcek));
  EXPECT_EQ(PackSnpEvidence(empty, empty), evidence::EncodeSnpEvidence(empty, empty));
  EXPECT_EQ(PackSnpEvidence(report, vcek).size(), 8 + 4 + 1184 + 4 + 3);
}

TEST_F(SnpPlatformTest, VectorThroughPreparedConfigfsVerifies) {
  auto platform = Make(Options());
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->evidence_type(), capsule::EvidenceType::kSnp);
  EXPECT_FALSE(platform->hardware_sealing_key());
  Result<std::vector<uint8_t>> ev = platform->Evidence(rd_);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ(*ev, evidence::EncodeSnpEvidence(report_, vcek_));
  EXPECT_EQ(ReadBytes(entry_ / "inblob"), std::vector<uint8_t>(rd_.begin(), rd_.end()));
  EXPECT_EQ(ReadBytes(entry_ / "privlevel"), std::vector<uint8_t>({'0', '\n'}));

  evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
  Result<evidence::Verdict> verdict =
      verifier.Verify(capsule::EvidenceType::kSnp, *ev, nullptr, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_TRUE(verdict->debug);
  EXPECT_EQ(verdict->report_data, rd_);

  capsule::Policy policy;
  policy.tee.accept = {"snp"};
  Status refused = evidence::CheckPolicy(
      *verdict, evidence::PolicyFor(policy, capsule::EvidenceType::kSnp), &rd_);
  ExpectError(refused, StatusCode::kPermissionDenied, "policy: debug enclave refused");
  policy.tee.allow_debug = true;
  const evidence::EvidencePolicy allow = evidence::PolicyFor(policy, capsule::EvidenceType::kSnp);
  EXPECT_TRUE(evidence::CheckPolicy(*verdict, allow, &rd_).ok());
  capsule::ReportData other = rd_;
  other[63] ^= 1;
  ExpectError(evidence::CheckPolicy(*verdict, allow, &other), StatusCode::kPermissionDenied,
              "policy: report data does not match the nonce binding");

  // The same entry asked for other report data: refused in the platform already.
  ExpectError(platform->Evidence(other).status(), StatusCode::kInvalidArgument,
              "REPORT_DATA in the SNP report (0102030405000000...) is not the report data asked "
              "for");
}

TEST_F(SnpPlatformTest, VcekFileWhenTheReportComesWithoutCertificates) {
  fs::remove(entry_ / "auxblob");
  const std::string vcek_file = state_.path() + "/vcek.der";
  WriteFile(vcek_file, vcek_);
  SnpPlatformOptions options = Options();
  options.vcek_file = vcek_file;
  auto platform = Make(std::move(options));
  ASSERT_NE(platform, nullptr);
  Result<std::vector<uint8_t>> ev = platform->Evidence(rd_);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
  EXPECT_TRUE(verifier.Verify(capsule::EvidenceType::kSnp, *ev, nullptr, kNow).ok());
  platform.reset();

  platform = Make(Options());  // no VCEK file
  ASSERT_NE(platform, nullptr);
  ExpectError(platform->Evidence(rd_).status(), StatusCode::kFailedPrecondition,
              "no VCEK for the SNP report: the auxblob has no certificate table and no VCEK file "
              "is configured");
  platform.reset();

  options = Options();
  options.vcek_file = state_.path() + "/missing.der";
  ExpectError(SnpPlatform::Create(std::move(options)).status(), StatusCode::kIoError,
              "missing.der");
  WriteFile(vcek_file, std::vector<uint8_t>(kMaxVcekBytes + 1, 0x30));
  options = Options();
  options.vcek_file = vcek_file;
  ExpectError(SnpPlatform::Create(std::move(options)).status(), StatusCode::kResourceExhausted,
              "vcek.der' is 16385 bytes, over the limit of 16384 bytes");
}

// Every row: what the reporter answers -> the refusal; nothing crashes, the counter stays.
TEST_F(SnpPlatformTest, BadAnswersAreRefusedInThePlatform) {
  TsmBlobs answer;
  SnpPlatformOptions options = Options();
  options.reporter = std::make_unique<ScriptedReporter>(&answer);
  auto platform = Make(std::move(options));
  ASSERT_NE(platform, nullptr);
  ASSERT_TRUE(platform->IncrementCounter().ok());
  const uint64_t counter = *platform->ReadCounter();

  auto with_report = [&](std::function<void(std::vector<uint8_t>*)> change) {
    TsmBlobs blobs{report_, table_};
    change(&blobs.outblob);
    return blobs;
  };
  auto with_table = [&](std::vector<uint8_t> table) { return TsmBlobs{report_, std::move(table)}; };
  std::vector<uint8_t> out_of_bounds = table_;
  PutLe32(&out_of_bounds, 20, static_cast<uint32_t>(table_.size()));  // VCEK length
  std::vector<uint8_t> no_terminator(table_.begin(), table_.begin() + 3 * kCertTableEntryBytes);
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> chain_only = {{kAskGuid, {0x30}}};
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> vlek_only = {{kVlekGuid, vcek_}};
  std::vector<uint8_t> garbage(kSnpReportBytes);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 37 + 5);

  struct Row {
    const char* name;
    TsmBlobs blobs;
    StatusCode code;
    std::string part;
  };
  const Row rows[] = {
      {"short report", with_report([](auto* r) { r->pop_back(); }), StatusCode::kInvalidArgument,
       "the SNP report is 1183 bytes, expected exactly 1184"},
      {"long report", with_report([](auto* r) { r->push_back(0); }), StatusCode::kInvalidArgument,
       "the SNP report is 1185 bytes"},
      {"garbage", TsmBlobs{garbage, table_}, StatusCode::kInvalidArgument,
       "the SNP report version is"},
      {"version 3", with_report([](auto* r) { PutLe32(r, kSnpVersionOffset, 3); }),
       StatusCode::kInvalidArgument, "version is 3: the license server verifies version 2 only"},
      {"VMPL 2", with_report([](auto* r) { PutLe32(r, kSnpVmplOffset, 2); }),
       StatusCode::kInvalidArgument, "the SNP report's VMPL is 2, not the requested 0"},
      {"other report data", with_report([](auto* r) { (*r)[kSnpReportDataOffset + 63] ^= 1; }),
       StatusCode::kInvalidArgument, "REPORT_DATA in the SNP report"},
      {"VLEK-signed", with_report([](auto* r) { PutLe32(r, kSnpKeyInfoOffset, 1 << 2); }),
       StatusCode::kUnsupported, "signed by a VLEK"},
      {"table out of bounds", with_table(out_of_bounds), StatusCode::kInvalidArgument,
       "the report's auxblob: SNP certificate table entry 0 (63da758d-e664-4564-adc5-"
       "f4b93be8accd (VCEK))"},
      {"table without terminator", with_table(no_terminator), StatusCode::kInvalidArgument,
       "has no terminator"},
      {"table without VCEK", with_table(BuildCertTable(chain_only)),
       StatusCode::kFailedPrecondition, "a certificate table without a VCEK"},
      {"VLEK only", with_table(BuildCertTable(vlek_only)), StatusCode::kUnsupported,
       "holds a VLEK (a8074bc2-a25a-483e-aae6-39c045a0b8a1 (VLEK)) and no VCEK"},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    answer = row.blobs;
    ExpectError(platform->Evidence(rd_).status(), row.code, row.part);
    EXPECT_EQ(*platform->ReadCounter(), counter);
  }
  answer = TsmBlobs{report_, table_};
  EXPECT_TRUE(platform->Evidence(rd_).ok()) << "the platform still works after the refusals";
}

TEST_F(SnpPlatformTest, ConfigfsRefusalsThroughThePlatform) {
  SnpPlatformOptions options = Options();
  auto platform = Make(std::move(options));
  ASSERT_NE(platform, nullptr);
  const uint64_t counter = *platform->ReadCounter();

  WriteFile(entry_ / "provider", "tdx_guest\n");
  ExpectError(platform->Evidence(rd_).status(), StatusCode::kFailedPrecondition,
              "is 'tdx_guest', not 'sev_guest'");
  WriteFile(entry_ / "provider", "sev_guest\n");
  WriteFile(entry_ / "outblob", std::string(100, 'x'));
  ExpectError(platform->Evidence(rd_).status(), StatusCode::kInvalidArgument,
              "the SNP report is 100 bytes");
  WriteFile(entry_ / "privlevel_floor", "1\n");
  ExpectError(platform->Evidence(rd_).status(), StatusCode::kFailedPrecondition,
              "privlevel 0 is below the provider's floor 1");
  EXPECT_EQ(*platform->ReadCounter(), counter);
}

TEST_F(SnpPlatformTest, LegacyFallbackWhenThereIsNoConfigfs) {
  // No configfs-tsm at the root: the reporter falls back to SNP_GET_REPORT on the device.
  const std::string regular_file = state_.path() + "/not-a-device";
  WriteFile(regular_file, "x");
  ReporterOptions reporter;
  reporter.kind = CvmKind::kSnp;
  reporter.tsm.root = configfs_.path() + "/absent";
  reporter.sev_guest_device = regular_file;
  SnpPlatformOptions options = Options();
  options.reporter = MakeInProcessReporter(reporter);
  auto platform = Make(std::move(options));
  ASSERT_NE(platform, nullptr);
  ExpectError(platform->Evidence(rd_).status(), StatusCode::kFailedPrecondition,
              "SNP_GET_REPORT on " + regular_file + " failed: Inappropriate ioctl for device");
  platform.reset();

  reporter.sev_guest_device = state_.path() + "/absent-device";
  options = Options();
  options.reporter = MakeInProcessReporter(reporter);
  platform = Make(std::move(options));
  ASSERT_NE(platform, nullptr);
  const Status status = platform->Evidence(rd_).status();
  ExpectError(status, StatusCode::kUnavailable, "no configfs-tsm provider at " + reporter.tsm.root);
  EXPECT_NE(status.message().find("the legacy fallback failed: no SEV-SNP guest device at " +
                                  reporter.sev_guest_device),
            std::string::npos)
      << status.message();
}

TEST_F(SnpPlatformTest, SealingKeySources) {
  SnpPlatformOptions options = Options();
  options.seal_key_file_fallback = false;
  ExpectError(SnpPlatform::Create(std::move(options)).status(), StatusCode::kFailedPrecondition,
              "no SEV-SNP sealing key: no SEV-SNP guest device at " + state_.path() +
                  "/no-sev-guest: No such file or directory");
  EXPECT_FALSE(fs::exists(state_.path() + "/state/core-seal.key"));

  // A device that exists but fails is an error even with the fallback allowed.
  const std::string regular_file = state_.path() + "/not-a-device";
  WriteFile(regular_file, "x");
  options = Options();
  options.sev_guest_device = regular_file;
  ExpectError(SnpPlatform::Create(std::move(options)).status(), StatusCode::kFailedPrecondition,
              "SNP_GET_DERIVED_KEY on " + regular_file);

  options = Options();
  options.vmpl = 4;
  ExpectError(SnpPlatform::Create(std::move(options)).status(), StatusCode::kInvalidArgument,
              "VMPL 4 is out of range");

  // The fallback: a key file, stable across restarts, as is the counter.
  auto platform = Make(Options());
  ASSERT_NE(platform, nullptr);
  Result<capsule::SecretBytes> first = platform->SealingKey();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 32u);
  ASSERT_EQ(*platform->IncrementCounter(), 1u);
  ASSERT_EQ(*platform->IncrementCounter(), 2u);
  ExpectError(SnpPlatform::Create(Options()).status(), StatusCode::kFailedPrecondition,
              "in use by another");
  platform.reset();
  EXPECT_EQ(fs::status(state_.path() + "/state/core-seal.key").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  platform = Make(Options());
  ASSERT_NE(platform, nullptr);
  Result<capsule::SecretBytes> second = platform->SealingKey();
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(capsule::ConstantTimeEqual(first->span(), second->span()));
  EXPECT_EQ(*platform->ReadCounter(), 2u);
  uint8_t random[32] = {};
  ASSERT_TRUE(platform->Random(random).ok());
  EXPECT_NE(std::vector<uint8_t>(random, random + 32), std::vector<uint8_t>(32, 0));
  EXPECT_FALSE(platform->Now().trusted);
  EXPECT_GT(platform->Now().unix_seconds, kNow);
}

}  // namespace
}  // namespace mlcapsule::tee::cvm
