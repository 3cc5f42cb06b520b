// sev_guest.h: the report checks on the go-sev-guest vector, the GHCB certificate table, and the
// /dev/sev-guest request packing, response parsing and ioctl loop (BUSY, firmware errors, a
// regular file answering ENOTTY). The vector tests skip when the vectors are absent.
#include "tee/cvm/sev_guest.h"
#include "tee/cvm/cvm_test_util.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mlcapsule::tee::cvm {
namespace {

using namespace ::mlcapsule::tee::cvm::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;

#define REQUIRE_SNP_VECTORS()                                                                    \
  if (VectorsDir().empty() || !fs::exists(VectorsDir() / "go-sev-guest_snp_attestation.bin"))    \
  GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS); run through ctest " \
                  "with ../shared/attest-vectors present"

void PutLe32(std::vector<uint8_t>* bytes, size_t offset, uint32_t value) {
  std::memcpy(bytes->data() + offset, &value, 4);
}

capsule::ReportData VectorReportData(const std::vector<uint8_t>& report) {
  capsule::ReportData rd{};
  std::memcpy(rd.data(), report.data() + kSnpReportDataOffset, rd.size());
  return rd;
}

TEST(SnpReport, VectorPassesTheChecks) {
  REQUIRE_SNP_VECTORS();
  const std::vector<uint8_t> report = ReadBytes(VectorsDir() / "go-sev-guest_snp_attestation.bin");
  const capsule::ReportData rd = VectorReportData(report);
  EXPECT_EQ(capsule::ToHex(std::span<const uint8_t>(rd).first(6)), "010203040500");
  EXPECT_TRUE(ValidateSnpReport(report, rd, 0).ok());

  ExpectError(ValidateSnpReport(std::span<const uint8_t>(report).first(1183), rd, 0),
              StatusCode::kInvalidArgument, "the SNP report is 1183 bytes, expected exactly 1184");
  std::vector<uint8_t> changed = report;
  PutLe32(&changed, kSnpVersionOffset, 3);
  ExpectError(ValidateSnpReport(changed, rd, 0), StatusCode::kInvalidArgument,
              "the SNP report version is 3: the license server verifies version 2 only");
  ExpectError(ValidateSnpReport(report, rd, 1), StatusCode::kInvalidArgument,
              "the SNP report's VMPL is 0, not the requested 1");
  changed = report;
  PutLe32(&changed, kSnpKeyInfoOffset, 1 << 2);
  ExpectError(ValidateSnpReport(changed, rd, 0), StatusCode::kUnsupported, "signed by a VLEK");
  PutLe32(&changed, kSnpKeyInfoOffset, 7 << 2);
  ExpectError(ValidateSnpReport(changed, rd, 0), StatusCode::kInvalidArgument, "SIGNING_KEY 7");
  capsule::ReportData other = rd;
  other[63] ^= 1;
  ExpectError(ValidateSnpReport(report, other, 0), StatusCode::kInvalidArgument,
              "REPORT_DATA in the SNP report (0102030405000000...) is not the report data asked "
              "for");
}

// --- certificate table ---

std::vector<uint8_t> Bytes(std::string_view text) { return {text.begin(), text.end()}; }

TEST(CertTable, GuidBytesArePinned) {
  // uuid_parse order: the bytes as the text reads (AMD sev-guest cert-table.c, virtee/sev).
  EXPECT_EQ(capsule::ToHex(kVcekGuid), "63da758de6644564adc5f4b93be8accd");
  EXPECT_EQ(capsule::ToHex(kVlekGuid), "a8074bc2a25a483eaae639c045a0b8a1");
  EXPECT_EQ(capsule::ToHex(kAskGuid), "4ab7b379bbac4fe4a02f05aef327c782");
  EXPECT_EQ(capsule::ToHex(kArkGuid), "c0b406a4a803495297433fb6014cd0ae");
  EXPECT_EQ(GuidName(kVcekGuid), "63da758d-e664-4564-adc5-f4b93be8accd (VCEK)");
  EXPECT_EQ(GuidName(Guid{}), "00000000-0000-0000-0000-000000000000");
}

TEST(CertTable, BuildParseAndFind) {
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> certificates = {
      {kArkGuid, Bytes("ark")}, {kAskGuid, Bytes("ask-cert")}, {kVcekGuid, Bytes("the vcek")}};
  const std::vector<uint8_t> table = BuildCertTable(certificates);
  EXPECT_EQ(table.size(), 4 * kCertTableEntryBytes + 3 + 8 + 8);
  Result<std::vector<CertTableEntry>> entries = ParseCertTable(table);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[1].guid, kAskGuid);
  EXPECT_EQ(std::string((*entries)[1].certificate.begin(), (*entries)[1].certificate.end()),
            "ask-cert");
  Result<std::optional<std::vector<uint8_t>>> vcek = FindVcek(table);
  ASSERT_TRUE(vcek.ok()) << vcek.status().ToString();
  ASSERT_TRUE(vcek->has_value());
  EXPECT_EQ(**vcek, Bytes("the vcek"));

  // A table of the chain alone: no VCEK, no error (the platform then uses its VCEK file).
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> chain = {{kAskGuid, Bytes("ask")}};
  vcek = FindVcek(BuildCertTable(chain));
  ASSERT_TRUE(vcek.ok());
  EXPECT_FALSE(vcek->has_value());
  vcek = FindVcek(std::vector<uint8_t>(kCertTableEntryBytes, 0));
  ASSERT_TRUE(vcek.ok());
  EXPECT_FALSE(vcek->has_value());
}

TEST(CertTable, Refusals) {
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> one = {{kVcekGuid, Bytes("vcek")}};
  const std::vector<uint8_t> good = BuildCertTable(one);

  std::vector<uint8_t> table = good;
  PutLe32(&table, 20, 5);  // length 5 from offset 48 in a 52-byte table
  ExpectError(FindVcek(table).status(), StatusCode::kInvalidArgument,
              "entry 0 (63da758d-e664-4564-adc5-f4b93be8accd (VCEK)): offset 48 + length 5 = 53 "
              "lies outside the 52-byte table");
  table = good;
  PutLe32(&table, 16, 0xFFFFFFFF);  // no wrap-around in offset + length
  ExpectError(FindVcek(table).status(), StatusCode::kInvalidArgument, "lies outside");
  table = good;
  PutLe32(&table, 16, 4);  // inside the table itself
  ExpectError(FindVcek(table).status(), StatusCode::kInvalidArgument,
              "offset 4 overlaps the table's own 48 bytes");

  table.assign(good.begin(), good.begin() + kCertTableEntryBytes + 10);  // terminator cut off
  ExpectError(FindVcek(table).status(), StatusCode::kInvalidArgument,
              "has no terminator (24 zero bytes) within its 34 bytes");
  ExpectError(FindVcek(std::vector<uint8_t>(10, 0)).status(), StatusCode::kInvalidArgument,
              "no terminator");
  ExpectError(FindVcek({}).status(), StatusCode::kInvalidArgument, "no terminator");

  table = good;
  PutLe32(&table, kCertTableEntryBytes + 16, 1);  // zero GUID, offset 1: a bad terminator
  ExpectError(FindVcek(table).status(), StatusCode::kInvalidArgument,
              "entry 1 has a zero GUID but offset 1");

  const std::vector<std::pair<Guid, std::vector<uint8_t>>> twice = {{kVcekGuid, Bytes("a")},
                                                                    {kVcekGuid, Bytes("b")}};
  ExpectError(FindVcek(BuildCertTable(twice)).status(), StatusCode::kInvalidArgument,
              "appears twice (entries 0 and 1)");

  const std::vector<std::pair<Guid, std::vector<uint8_t>>> vlek = {{kAskGuid, Bytes("ask")},
                                                                   {kVlekGuid, Bytes("vlek")}};
  ExpectError(FindVcek(BuildCertTable(vlek)).status(), StatusCode::kUnsupported,
              "holds a VLEK (a8074bc2-a25a-483e-aae6-39c045a0b8a1 (VLEK)) and no VCEK");

  const std::vector<std::pair<Guid, std::vector<uint8_t>>> huge = {
      {kVcekGuid, std::vector<uint8_t>(kMaxVcekBytes + 1, 1)}};
  ExpectError(FindVcek(BuildCertTable(huge)).status(), StatusCode::kInvalidArgument,
              "the VCEK in the SNP certificate table is 16385 bytes");
}

// --- ioctl requests and responses ---

TEST(SevGuestIoctl, RequestPacking) {
  capsule::ReportData rd{};
  for (size_t i = 0; i < rd.size(); ++i) rd[i] = static_cast<uint8_t>(i + 1);
  const SnpReportRequest report = PackReportRequest(rd, 2);
  uint8_t bytes[sizeof(report)];
  std::memcpy(bytes, &report, sizeof(bytes));
  EXPECT_EQ(std::memcmp(bytes, rd.data(), 64), 0);
  EXPECT_EQ(bytes[64], 2);
  for (size_t i = 65; i < sizeof(bytes); ++i) EXPECT_EQ(bytes[i], 0) << i;

  const SnpDerivedKeyRequest key = PackDerivedKeyRequest(kDerivedKeyPolicyAndMeasurement, 1);
  uint8_t key_bytes[sizeof(key)];
  std::memcpy(key_bytes, &key, sizeof(key_bytes));
  const uint8_t expected[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0,
                                1, 0, 0, 0, 0, 0, 0, 0, 0,    0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(std::memcmp(key_bytes, expected, sizeof(expected)), 0);
}

std::vector<uint8_t> ReportResponse(uint32_t status, uint32_t size,
                                    std::span<const uint8_t> report) {
  std::vector<uint8_t> response(kSnpReportResponseBytes, 0);
  PutLe32(&response, 0, status);
  PutLe32(&response, 4, size);
  std::memcpy(response.data() + kSnpReportResponseHeaderBytes, report.data(),
              std::min(report.size(), kSnpReportBytes));
  return response;
}

TEST(SevGuestIoctl, ReportResponses) {
  REQUIRE_SNP_VECTORS();
  const std::vector<uint8_t> report = ReadBytes(VectorsDir() / "go-sev-guest_snp_attestation.bin");
  Result<std::vector<uint8_t>> parsed = ParseReportResponse(ReportResponse(0, 1184, report));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, report);
  // Only the header and the report are needed, not the whole 4000-byte buffer.
  std::vector<uint8_t> exact = ReportResponse(0, 1184, report);
  exact.resize(kSnpReportResponseHeaderBytes + kSnpReportBytes);
  EXPECT_TRUE(ParseReportResponse(exact).ok());

  ExpectError(ParseReportResponse(ReportResponse(0x16, 1184, report)).status(),
              StatusCode::kInvalidArgument,
              "SNP_GET_REPORT: the firmware answered status 0x16 (INVALID_PARAM)");
  ExpectError(ParseReportResponse(ReportResponse(0x27, 1184, report)).status(),
              StatusCode::kFailedPrecondition, "status 0x27 (INVALID_KEY)");
  ExpectError(ParseReportResponse(ReportResponse(0x99, 1184, report)).status(),
              StatusCode::kIoError, "status 0x99");
  ExpectError(ParseReportResponse(ReportResponse(0, 1000, report)).status(),
              StatusCode::kInvalidArgument, "the firmware's report_size is 1000, expected 1184");
  exact.pop_back();
  ExpectError(ParseReportResponse(exact).status(), StatusCode::kDataLoss,
              "the SNP_GET_REPORT response is 1215 bytes");
}

TEST(SevGuestIoctl, DerivedKeyResponses) {
  std::vector<uint8_t> response(64, 0);
  for (size_t i = 0; i < 32; ++i) response[0x20 + i] = static_cast<uint8_t>(0xA0 + i);
  Result<capsule::SecretBytes> key = ParseDerivedKeyResponse(response);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  ASSERT_EQ(key->size(), 32u);
  EXPECT_EQ(key->data()[0], 0xA0);
  EXPECT_EQ(key->data()[31], 0xA0 + 31);
  PutLe32(&response, 0, 0x16);
  ExpectError(ParseDerivedKeyResponse(response).status(), StatusCode::kInvalidArgument,
              "SNP_GET_DERIVED_KEY: the firmware answered status 0x16 (INVALID_PARAM)");
  PutLe32(&response, 0, 0x27);
  ExpectError(ParseDerivedKeyResponse(response).status(), StatusCode::kFailedPrecondition,
              "0x27 (INVALID_KEY)");
  ExpectError(ParseDerivedKeyResponse(std::span<const uint8_t>(response).first(63)).status(),
              StatusCode::kDataLoss, "is 63 bytes, expected 64");
}

// A fake device: checks the request the way the kernel does and answers from a script.
struct FakeDevice {
  struct Step {
    int error = 0;
    uint32_t fw_error = 0, vmm_error = 0;
  };
  std::vector<Step> script;
  int calls = 0;
  unsigned long last_request = 0;
  std::vector<uint8_t> answer;  // copied to resp_data on success

  SevGuestDevice::Ioctl Ioctl() {
    return [this](unsigned long request, SnpGuestRequestIoctl* guest) {
      last_request = request;
      EXPECT_EQ(guest->msg_version, 1);
      EXPECT_NE(guest->req_data, 0u);
      EXPECT_NE(guest->resp_data, 0u);
      const Step step = calls < static_cast<int>(script.size()) ? script[calls] : script.back();
      ++calls;
      guest->fw_error = step.fw_error;
      guest->vmm_error = step.vmm_error;
      if (step.error == 0)
        std::memcpy(reinterpret_cast<void*>(guest->resp_data), answer.data(), answer.size());
      return step.error;
    };
  }
};

TEST(SevGuestDevice, BusyIsRetriedABoundedNumberOfTimes) {
  FakeDevice fake;
  fake.answer.assign(64, 0);
  fake.answer[0x20] = 0x5A;
  fake.script = {{EIO, 0, kVmmErrorBusy}, {EAGAIN, 0, 0}, {0, 0, 0}};
  auto device = SevGuestDevice::ForTesting("fake", fake.Ioctl(), std::chrono::milliseconds(0));
  Result<capsule::SecretBytes> key = device->GetDerivedKey(kDerivedKeyPolicyAndMeasurement, 0);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->data()[0], 0x5A);
  EXPECT_EQ(fake.calls, 3);
  EXPECT_EQ(fake.last_request, kSnpGetDerivedKeyIoctl);

  fake.calls = 0;
  fake.script = {{EIO, 0, kVmmErrorBusy}};
  ExpectError(device->GetDerivedKey(kDerivedKeyPolicyAndMeasurement, 0).status(),
              StatusCode::kIoError,
              "still busy after 6 attempts: SNP_GET_DERIVED_KEY on fake failed: Input/output "
              "error; firmware error 0 (SUCCESS), VMM error 2 (BUSY)");
  EXPECT_EQ(fake.calls, SevGuestDevice::kMaxBusyRetries + 1);
}

TEST(SevGuestDevice, FirmwareAndVmmErrorsAreNamed) {
  FakeDevice fake;
  fake.script = {{EIO, kSnpStatusInvalidParameter, 0}};
  auto device = SevGuestDevice::ForTesting("fake", fake.Ioctl(), std::chrono::milliseconds(0));
  capsule::ReportData rd{};
  ExpectError(device->GetReport(rd, 0).status(), StatusCode::kIoError,
              "SNP_GET_REPORT on fake failed: Input/output error; firmware error 0x16 "
              "(INVALID_PARAM), VMM error 0");
  EXPECT_EQ(fake.calls, 1) << "only BUSY is retried";
  EXPECT_EQ(fake.last_request, kSnpGetReportIoctl);
  fake.script = {{EIO, 0, kVmmErrorInvalidLength}};
  ExpectError(device->GetReport(rd, 0).status(), StatusCode::kIoError, "VMM error 1 (INVALID_LEN)");
  ExpectError(device->GetReport(rd, 4).status(), StatusCode::kInvalidArgument,
              "VMPL 4 is out of range");

  // The call succeeds but the firmware's own status refuses: parsed from the response.
  fake.script = {{0, 0, 0}};
  fake.answer.assign(kSnpReportResponseBytes, 0);
  PutLe32(&fake.answer, 0, kSnpStatusInvalidKey);
  ExpectError(device->GetReport(rd, 0).status(), StatusCode::kFailedPrecondition,
              "0x27 (INVALID_KEY)");
}

TEST(SevGuestDevice, RegularFileAnswersEnotty) {
  const std::string path =
      (fs::temp_directory_path() / ("mlc-sev-guest-" + std::to_string(getpid()))).string();
  std::ofstream(path) << "not a device";
  Result<std::unique_ptr<SevGuestDevice>> device = SevGuestDevice::Open(path);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  capsule::ReportData rd{};
  ExpectError((*device)->GetReport(rd, 0).status(), StatusCode::kFailedPrecondition,
              "SNP_GET_REPORT on " + path + " failed: Inappropriate ioctl for device (" + path +
                  " is not an SEV-SNP guest device)");
  ExpectError((*device)->GetDerivedKey(kDerivedKeyPolicyAndMeasurement, 0).status(),
              StatusCode::kFailedPrecondition, "SNP_GET_DERIVED_KEY on " + path);
  fs::remove(path);

  ExpectError(SevGuestDevice::Open(path).status(), StatusCode::kNotFound,
              "no SEV-SNP guest device at " + path + ": No such file or directory");
}

}  // namespace
}  // namespace mlcapsule::tee::cvm
