// SEV-SNP report checks, the GHCB certificate table and the /dev/sev-guest ioctls (see
// sev_guest.h). Our own structs mirror the kernel's uapi ones; the static_asserts below hold them
// to the installed <linux/sev-guest.h>, so a layout drift fails the build, not a guest.
#include "tee/cvm/sev_guest.h"

#include <fcntl.h>
#include <linux/sev-guest.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>

#include "base/bytes.h"

namespace mlcapsule::tee::cvm {

static_assert(sizeof(SnpGuestRequestIoctl) == sizeof(snp_guest_request_ioctl));
static_assert(offsetof(SnpGuestRequestIoctl, req_data) ==
              offsetof(snp_guest_request_ioctl, req_data));
static_assert(offsetof(SnpGuestRequestIoctl, fw_error) ==
              offsetof(snp_guest_request_ioctl, fw_error));
static_assert(offsetof(SnpGuestRequestIoctl, vmm_error) ==
              offsetof(snp_guest_request_ioctl, vmm_error));
static_assert(sizeof(SnpReportRequest) == sizeof(snp_report_req));
static_assert(offsetof(SnpReportRequest, vmpl) == offsetof(snp_report_req, vmpl));
static_assert(sizeof(SnpDerivedKeyRequest) == sizeof(snp_derived_key_req));
static_assert(offsetof(SnpDerivedKeyRequest, guest_field_select) ==
              offsetof(snp_derived_key_req, guest_field_select));
static_assert(offsetof(SnpDerivedKeyRequest, tcb_version) ==
              offsetof(snp_derived_key_req, tcb_version));
static_assert(kSnpReportResponseBytes == sizeof(snp_report_resp));
static_assert(kSnpDerivedKeyResponseBytes == sizeof(snp_derived_key_resp));
static_assert(kSnpGetReportIoctl == SNP_GET_REPORT);
static_assert(kSnpGetDerivedKeyIoctl == SNP_GET_DERIVED_KEY);
static_assert(kVmmErrorBusy == SNP_GUEST_VMM_ERR_BUSY);
static_assert(kSnpReportResponseHeaderBytes + kSnpReportBytes <= kSnpReportResponseBytes);

namespace {

uint32_t Le32(std::span<const uint8_t> bytes, size_t offset) {
  uint32_t value = 0;
  std::memcpy(&value, bytes.data() + offset, 4);  // little-endian host (x86-64, as the TEE)
  return value;
}

std::string ShortHex(std::span<const uint8_t> bytes) {
  const std::string hex = capsule::ToHex(bytes.first(std::min<size_t>(bytes.size(), 8)));
  return bytes.size() > 8 ? hex + "..." : hex;
}

std::string FirmwareStatusName(uint32_t status) {
  switch (status) {
    case 0:
      return "0 (SUCCESS)";
    case 0x15:
      return "0x15 (UNSUPPORTED)";
    case kSnpStatusInvalidParameter:
      return "0x16 (INVALID_PARAM)";
    case kSnpStatusInvalidKey:
      return "0x27 (INVALID_KEY)";
    default:
      return fmt::format("0x{:x}", status);
  }
}

std::string VmmErrorName(uint32_t error) {
  switch (error) {
    case 0:
      return "0";
    case kVmmErrorInvalidLength:
      return "1 (INVALID_LEN)";
    case kVmmErrorBusy:
      return "2 (BUSY)";
    default:
      return fmt::format("0x{:x}", error);
  }
}

// The status word at the start of a MSG_REPORT_RSP / MSG_KEY_RSP.
Status ResponseStatus(std::string_view what, uint32_t status) {
  if (status == 0) return Status::Ok();
  const std::string text =
      fmt::format("{}: the firmware answered status {}", what, FirmwareStatusName(status));
  if (status == kSnpStatusInvalidParameter) return Status(StatusCode::kInvalidArgument, text);
  if (status == kSnpStatusInvalidKey) return Status(StatusCode::kFailedPrecondition, text);
  return Status(StatusCode::kIoError, text);
}

bool IsZero(std::span<const uint8_t> bytes) {
  for (uint8_t byte : bytes) {
    if (byte != 0) return false;
  }
  return true;
}

}  // namespace

Status ValidateSnpReport(std::span<const uint8_t> report, const capsule::ReportData& report_data,
                         uint32_t vmpl) {
  if (report.size() != kSnpReportBytes)
    return InvalidArgument("the SNP report is {} bytes, expected exactly {}", report.size(),
                           kSnpReportBytes);
  const uint32_t version = Le32(report, kSnpVersionOffset);
  if (version != kSnpReportVersion)
    return InvalidArgument(
        "the SNP report version is {}: the license server verifies version {} only (newer "
        "firmware writes version 3 and later, which it does not read yet)",
        version, kSnpReportVersion);
  const uint32_t report_vmpl = Le32(report, kSnpVmplOffset);
  if (report_vmpl != vmpl)
    return InvalidArgument("the SNP report's VMPL is {}, not the requested {}", report_vmpl, vmpl);
  const uint32_t signing_key = (Le32(report, kSnpKeyInfoOffset) >> 2) & 7;
  if (signing_key == 1)
    return Unsupported(
        "the SNP report is signed by a VLEK (SIGNING_KEY 1, as some clouds provision): the "
        "license server verifies VCEK-signed reports only");
  if (signing_key != 0)
    return InvalidArgument("the SNP report is not signed by a VCEK (SIGNING_KEY {})", signing_key);
  const auto got = report.subspan(kSnpReportDataOffset, report_data.size());
  if (std::memcmp(got.data(), report_data.data(), report_data.size()) != 0)
    return InvalidArgument(
        "REPORT_DATA in the SNP report ({}) is not the report data asked for ({}): a stale or "
        "substituted report",
        ShortHex(got), ShortHex(report_data));
  return Status::Ok();
}

std::string GuidName(const Guid& guid) {
  const std::string hex = capsule::ToHex(guid);
  std::string text = hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
                     hex.substr(16, 4) + "-" + hex.substr(20);
  if (guid == kVcekGuid) return text + " (VCEK)";
  if (guid == kVlekGuid) return text + " (VLEK)";
  if (guid == kAskGuid) return text + " (ASK)";
  if (guid == kArkGuid) return text + " (ARK)";
  return text;
}

Result<std::vector<CertTableEntry>> ParseCertTable(std::span<const uint8_t> table) {
  struct Raw {
    Guid guid;
    uint32_t offset;
    uint32_t length;
  };
  std::vector<Raw> raw;
  size_t table_bytes = 0;
  for (size_t index = 0;; ++index) {
    const size_t at = index * kCertTableEntryBytes;
    if (at + kCertTableEntryBytes > table.size())
      return InvalidArgument(
          "the SNP certificate table has no terminator (24 zero bytes) within its {} bytes "
          "(entry {} at offset {} runs past the end)",
          table.size(), index, at);
    const auto bytes = table.subspan(at, kCertTableEntryBytes);
    if (IsZero(bytes)) {
      table_bytes = at + kCertTableEntryBytes;
      break;
    }
    Raw entry{};
    std::memcpy(entry.guid.data(), bytes.data(), 16);
    entry.offset = Le32(bytes, 16);
    entry.length = Le32(bytes, 20);
    if (IsZero(entry.guid))
      return InvalidArgument(
          "SNP certificate table entry {} has a zero GUID but offset {} and length {} (a "
          "malformed terminator)",
          index, entry.offset, entry.length);
    raw.push_back(entry);
  }
  std::vector<CertTableEntry> entries;
  for (size_t index = 0; index < raw.size(); ++index) {
    const Raw& entry = raw[index];
    for (size_t other = 0; other < index; ++other) {
      if (raw[other].guid == entry.guid)
        return InvalidArgument("SNP certificate table: {} appears twice (entries {} and {})",
                               GuidName(entry.guid), other, index);
    }
    if (entry.length == 0) continue;
    const uint64_t end = uint64_t{entry.offset} + entry.length;
    if (end > table.size())
      return InvalidArgument(
          "SNP certificate table entry {} ({}): offset {} + length {} = {} lies outside the "
          "{}-byte table",
          index, GuidName(entry.guid), entry.offset, entry.length, end, table.size());
    if (entry.offset < table_bytes)
      return InvalidArgument(
          "SNP certificate table entry {} ({}): offset {} overlaps the table's own {} bytes", index,
          GuidName(entry.guid), entry.offset, table_bytes);
    entries.push_back({entry.guid, table.subspan(entry.offset, entry.length)});
  }
  return entries;
}

Result<std::optional<std::vector<uint8_t>>> FindVcek(std::span<const uint8_t> table) {
  MLC_ASSIGN_OR_RETURN(std::vector<CertTableEntry> entries, ParseCertTable(table));
  bool have_vlek = false;
  for (const CertTableEntry& entry : entries) {
    if (entry.guid == kVcekGuid) {
      if (entry.certificate.size() > kMaxVcekBytes)
        return InvalidArgument("the VCEK in the SNP certificate table is {} bytes, over the {}",
                               entry.certificate.size(), kMaxVcekBytes);
      return std::optional<std::vector<uint8_t>>(
          std::vector<uint8_t>(entry.certificate.begin(), entry.certificate.end()));
    }
    if (entry.guid == kVlekGuid) have_vlek = true;
  }
  if (have_vlek)
    return Unsupported(
        "the SNP certificate table holds a VLEK ({}) and no VCEK: this host signs reports with a "
        "VLEK (some clouds do), and the license server verifies VCEK-signed reports only",
        GuidName(kVlekGuid));
  return std::optional<std::vector<uint8_t>>();
}

std::vector<uint8_t> BuildCertTable(
    std::span<const std::pair<Guid, std::vector<uint8_t>>> certificates) {
  const size_t table_bytes = (certificates.size() + 1) * kCertTableEntryBytes;
  ByteWriter writer;
  uint32_t offset = static_cast<uint32_t>(table_bytes);
  for (const auto& [guid, certificate] : certificates) {
    writer.Bytes(guid.data(), guid.size());
    writer.Pod<uint32_t>(offset);
    writer.Pod<uint32_t>(static_cast<uint32_t>(certificate.size()));
    offset += static_cast<uint32_t>(certificate.size());
  }
  const std::array<uint8_t, kCertTableEntryBytes> terminator{};
  writer.Bytes(terminator);
  for (const auto& [guid, certificate] : certificates) writer.Bytes(certificate);
  const auto bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

SnpReportRequest PackReportRequest(const capsule::ReportData& report_data, uint32_t vmpl) {
  SnpReportRequest request;
  std::memcpy(request.user_data, report_data.data(), report_data.size());
  request.vmpl = vmpl;
  return request;
}

SnpDerivedKeyRequest PackDerivedKeyRequest(uint64_t guest_field_select, uint32_t vmpl) {
  SnpDerivedKeyRequest request;
  request.root_key_select = kRootKeyVcek;
  request.guest_field_select = guest_field_select;
  request.vmpl = vmpl;
  return request;
}

Result<std::vector<uint8_t>> ParseReportResponse(std::span<const uint8_t> response) {
  if (response.size() < kSnpReportResponseHeaderBytes + kSnpReportBytes)
    return DataLoss(
        "the SNP_GET_REPORT response is {} bytes, shorter than its header and report ({})",
        response.size(), kSnpReportResponseHeaderBytes + kSnpReportBytes);
  MLC_RETURN_IF_ERROR(ResponseStatus("SNP_GET_REPORT", Le32(response, 0)));
  const uint32_t report_size = Le32(response, 4);
  if (report_size != kSnpReportBytes)
    return InvalidArgument("SNP_GET_REPORT: the firmware's report_size is {}, expected {}",
                           report_size, kSnpReportBytes);
  const auto report = response.subspan(kSnpReportResponseHeaderBytes, kSnpReportBytes);
  return std::vector<uint8_t>(report.begin(), report.end());
}

Result<capsule::SecretBytes> ParseDerivedKeyResponse(std::span<const uint8_t> response) {
  if (response.size() < kSnpDerivedKeyResponseBytes)
    return DataLoss("the SNP_GET_DERIVED_KEY response is {} bytes, expected {}", response.size(),
                    kSnpDerivedKeyResponseBytes);
  MLC_RETURN_IF_ERROR(ResponseStatus("SNP_GET_DERIVED_KEY", Le32(response, 0)));
  return capsule::SecretBytes(response.data() + kSnpDerivedKeyOffset, kSnpDerivedKeyBytes);
}

Status GuestRequestError(std::string_view request, const std::string& device, int error,
                         uint32_t fw_error, uint32_t vmm_error) {
  if (error == ENOTTY)
    return FailedPrecondition("{} on {} failed: {} ({} is not an SEV-SNP guest device)", request,
                              device, std::strerror(error), device);
  return IoError("{} on {} failed: {}; firmware error {}, VMM error {}", request, device,
                 std::strerror(error), FirmwareStatusName(fw_error), VmmErrorName(vmm_error));
}

Result<std::unique_ptr<SevGuestDevice>> SevGuestDevice::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENXIO || error == ENODEV)
      return NotFound("no SEV-SNP guest device at {}: {}", path, std::strerror(error));
    return IoError("cannot open the SEV-SNP guest device {}: {}", path, std::strerror(error));
  }
  Ioctl ioctl_call = [fd](unsigned long request, SnpGuestRequestIoctl* guest_request) {
    return ioctl(fd, request, guest_request) == 0 ? 0 : errno;
  };
  return std::unique_ptr<SevGuestDevice>(
      new SevGuestDevice(path, fd, std::move(ioctl_call), std::chrono::milliseconds(100)));
}

std::unique_ptr<SevGuestDevice> SevGuestDevice::ForTesting(std::string name, Ioctl ioctl,
                                                           std::chrono::milliseconds busy_delay) {
  return std::unique_ptr<SevGuestDevice>(
      new SevGuestDevice(std::move(name), -1, std::move(ioctl), busy_delay));
}

SevGuestDevice::SevGuestDevice(std::string path, int fd, Ioctl ioctl,
                               std::chrono::milliseconds busy_delay)
    : path_(std::move(path)), fd_(fd), ioctl_(std::move(ioctl)), busy_delay_(busy_delay) {}

SevGuestDevice::~SevGuestDevice() {
  if (fd_ >= 0) close(fd_);
}

Status SevGuestDevice::Request(std::string_view name, unsigned long request, void* request_data,
                               void* response_data) {
  SnpGuestRequestIoctl guest_request;
  for (int attempt = 0;; ++attempt) {
    guest_request.msg_version = 1;
    guest_request.req_data = reinterpret_cast<uintptr_t>(request_data);
    guest_request.resp_data = reinterpret_cast<uintptr_t>(response_data);
    guest_request.fw_error = 0;
    guest_request.vmm_error = 0;
    const int error = ioctl_(request, &guest_request);
    if (error == 0) return Status::Ok();
    const bool busy = guest_request.vmm_error == kVmmErrorBusy || error == EAGAIN;
    if ((busy || error == EINTR) && attempt < kMaxBusyRetries) {
      if (busy) std::this_thread::sleep_for(busy_delay_);
      continue;
    }
    Status status =
        GuestRequestError(name, path_, error, guest_request.fw_error, guest_request.vmm_error);
    if (busy)
      return status.WithContext(fmt::format("still busy after {} attempts", kMaxBusyRetries + 1));
    return status;
  }
}

Result<std::vector<uint8_t>> SevGuestDevice::GetReport(const capsule::ReportData& report_data,
                                                       uint32_t vmpl) {
  if (vmpl > kMaxVmpl) return InvalidArgument("VMPL {} is out of range 0..{}", vmpl, kMaxVmpl);
  SnpReportRequest request = PackReportRequest(report_data, vmpl);
  std::vector<uint8_t> response(kSnpReportResponseBytes);
  MLC_RETURN_IF_ERROR(Request("SNP_GET_REPORT", kSnpGetReportIoctl, &request, response.data()));
  return ParseReportResponse(response);
}

Result<capsule::SecretBytes> SevGuestDevice::GetDerivedKey(uint64_t guest_field_select,
                                                           uint32_t vmpl) {
  if (vmpl > kMaxVmpl) return InvalidArgument("VMPL {} is out of range 0..{}", vmpl, kMaxVmpl);
  SnpDerivedKeyRequest request = PackDerivedKeyRequest(guest_field_select, vmpl);
  capsule::SecretBytes response(kSnpDerivedKeyResponseBytes);  // wiped on every path
  MLC_RETURN_IF_ERROR(
      Request("SNP_GET_DERIVED_KEY", kSnpGetDerivedKeyIoctl, &request, response.data()));
  return ParseDerivedKeyResponse(response.span());
}

}  // namespace mlcapsule::tee::cvm
