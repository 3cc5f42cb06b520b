// AMD SEV-SNP guest pieces shared by the SNP platform and the attester: the ATTESTATION_REPORT
// checks the platform applies to every report it is handed, the GHCB certificate table (the
// configfs-tsm auxblob) that carries the VCEK, and the legacy /dev/sev-guest ioctls
// (include/uapi/linux/sev-guest.h; AMD SEV-SNP Firmware ABI, pub. 56860): SNP_GET_REPORT (the
// fallback when configfs-tsm has no provider) and SNP_GET_DERIVED_KEY (the sealing key).
//
//   snp_guest_request_ioctl := msg_version:u8 (=1) pad:u8[7] req_data:u64 resp_data:u64
//                              fw_error:u32 vmm_error:u32                         ; 32 bytes
//   snp_report_req          := user_data:u8[64] vmpl:u32 reserved:u8[28]          ; 96 bytes
//   MSG_REPORT_RSP          := status:u32 report_size:u32 reserved:u8[24]
//                              report:u8[report_size = 1184]   (in a 4000-byte buffer)
//   snp_derived_key_req     := root_key_select:u32 reserved:u32 guest_field_select:u64
//                              vmpl:u32 guest_svn:u32 tcb_version:u64              ; 32 bytes
//   MSG_KEY_RSP             := status:u32 reserved:u8[28] derived_key:u8[32]       ; 64 bytes
//   status: 0 success, 0x16 INVALID_PARAM, 0x27 INVALID_KEY. vmm_error 2 (BUSY) is retried.
//
//   cert_table := entry* terminator          ; the configfs-tsm auxblob, GHCB spec (pub. 56421)
//   entry      := guid:u8[16] offset:u32 length:u32   ; offset from the start of the table
//   terminator := 24 zero bytes
//   GUIDs are in the byte order of libuuid's uuid_parse (the bytes read as the text is written),
//   as AMD's sev-guest tools (cert-table.c) and virtee/sev write them: VCEK
//   63da758d-e664-4564-adc5-f4b93be8accd, VLEK a8074bc2-a25a-483e-aae6-39c045a0b8a1, ASK
//   4ab7b379-bbac-4fe4-a02f-05aef327c782, ARK c0b406a4-a803-4952-9743-3fb6014cd0ae.
//
// Everything a device, a table or a reporter returns is untrusted and checked here; the license
// server verifies the signatures (server/evidence/snp.cc).
//
//   MLC_ASSIGN_OR_RETURN(auto device, SevGuestDevice::Open("/dev/sev-guest"));
//   MLC_ASSIGN_OR_RETURN(capsule::SecretBytes key,
//                        device->GetDerivedKey(kDerivedKeyPolicyAndMeasurement, 0));
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"

namespace mlcapsule::tee::cvm {

// ATTESTATION_REPORT (the same offsets as server/evidence/snp.h, which the trusted side cannot
// link). The license server verifies version 2 only, so the platform refuses anything else.
inline constexpr size_t kSnpReportBytes = 0x4A0;  // 1184
inline constexpr uint32_t kSnpReportVersion = 2;
inline constexpr size_t kSnpVersionOffset = 0x000;
inline constexpr size_t kSnpVmplOffset = 0x030;
inline constexpr size_t kSnpKeyInfoOffset = 0x048;
inline constexpr size_t kSnpReportDataOffset = 0x050;
inline constexpr uint32_t kMaxVmpl = 3;
// The largest VCEK the server's evidence container accepts (evidence.cc kMaxVcekBytes).
inline constexpr size_t kMaxVcekBytes = 16 << 10;

// Checks a report from any source before it becomes evidence: exactly 1184 bytes, VERSION 2,
// VMPL equal to `vmpl`, REPORT_DATA equal to `report_data`, signed by a VCEK (SIGNING_KEY 0).
// InvalidArgument naming the field and both values; Unsupported for a VLEK-signed report.
Status ValidateSnpReport(std::span<const uint8_t> report, const capsule::ReportData& report_data,
                         uint32_t vmpl);

// --- GHCB certificate table ---

using Guid = std::array<uint8_t, 16>;
inline constexpr Guid kVcekGuid = {0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
                                   0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd};
inline constexpr Guid kVlekGuid = {0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e,
                                   0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1};
inline constexpr Guid kAskGuid = {0x4a, 0xb7, 0xb3, 0x79, 0xbb, 0xac, 0x4f, 0xe4,
                                  0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82};
inline constexpr Guid kArkGuid = {0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52,
                                  0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae};
inline constexpr size_t kCertTableEntryBytes = 24;

struct CertTableEntry {
  Guid guid{};
  std::span<const uint8_t> certificate;  // a view into the table's bytes
};
// "63da758d-e664-4564-adc5-f4b93be8accd (VCEK)".
std::string GuidName(const Guid& guid);
// Every entry up to the terminator. InvalidArgument when the table has no terminator inside the
// blob, an entry's offset + length leaves the blob or overlaps the table, a GUID appears twice,
// or an entry has a zero GUID but a non-zero offset or length. Entries of length 0 are skipped.
Result<std::vector<CertTableEntry>> ParseCertTable(std::span<const uint8_t> table);
// The VCEK (DER) in a certificate table: its bytes, or nullopt when the table has none (then the
// platform uses its configured VCEK file). A table with a VLEK and no VCEK is refused
// (Unsupported: the license server verifies VCEK-signed reports only); a VCEK over
// kMaxVcekBytes is InvalidArgument.
Result<std::optional<std::vector<uint8_t>>> FindVcek(std::span<const uint8_t> table);
// Builds a table (tests, emulators): entries in order, certificates after the terminator.
std::vector<uint8_t> BuildCertTable(
    std::span<const std::pair<Guid, std::vector<uint8_t>>> certificates);

// --- /dev/sev-guest ---

inline constexpr std::string_view kDefaultSevGuestDevice = "/dev/sev-guest";

struct SnpGuestRequestIoctl {
  uint8_t msg_version = 1;
  uint64_t req_data = 0;
  uint64_t resp_data = 0;
  uint32_t fw_error = 0;
  uint32_t vmm_error = 0;
};
struct SnpReportRequest {
  uint8_t user_data[64] = {};
  uint32_t vmpl = 0;
  uint8_t reserved[28] = {};
};
struct SnpDerivedKeyRequest {
  uint32_t root_key_select = 0;  // 0: the VCEK, 1: the VM root key
  uint32_t reserved = 0;
  uint64_t guest_field_select = 0;
  uint32_t vmpl = 0;
  uint32_t guest_svn = 0;
  uint64_t tcb_version = 0;
};
static_assert(sizeof(SnpGuestRequestIoctl) == 32);
static_assert(sizeof(SnpReportRequest) == 96);
static_assert(sizeof(SnpDerivedKeyRequest) == 32);
inline constexpr size_t kSnpReportResponseBytes = 4000;
inline constexpr size_t kSnpDerivedKeyResponseBytes = 64;
inline constexpr size_t kSnpReportResponseHeaderBytes = 0x20;
inline constexpr size_t kSnpDerivedKeyOffset = 0x20;
inline constexpr size_t kSnpDerivedKeyBytes = 32;
inline constexpr unsigned long kSnpGetReportIoctl = 0xC0205300;      // _IOWR('S', 0, 32 bytes)
inline constexpr unsigned long kSnpGetDerivedKeyIoctl = 0xC0205301;  // _IOWR('S', 1, 32 bytes)
inline constexpr uint32_t kSnpStatusInvalidParameter = 0x16;
inline constexpr uint32_t kSnpStatusInvalidKey = 0x27;
inline constexpr uint32_t kVmmErrorInvalidLength = 1;
inline constexpr uint32_t kVmmErrorBusy = 2;
// guest_field_select bits: 0 policy, 1 image id, 2 family id, 3 measurement, 4 guest SVN, 5 TCB
// version. The sealing key mixes in the policy and the measurement; binding the TCB version too
// would lose sealed state at every firmware update.
inline constexpr uint64_t kDerivedKeyPolicyAndMeasurement = 0x9;
inline constexpr uint32_t kRootKeyVcek = 0;

// Pure packing and parsing (unit-tested without a device).
SnpReportRequest PackReportRequest(const capsule::ReportData& report_data, uint32_t vmpl);
SnpDerivedKeyRequest PackDerivedKeyRequest(uint64_t guest_field_select, uint32_t vmpl);
// `response`: the MSG_REPORT_RSP buffer. Returns the 1184-byte report; a non-zero status or a
// report_size other than 1184 is an error naming it (InvalidArgument for INVALID_PARAM,
// FailedPrecondition for INVALID_KEY, IoError otherwise), a short buffer DataLoss.
Result<std::vector<uint8_t>> ParseReportResponse(std::span<const uint8_t> response);
// `response`: the 64-byte MSG_KEY_RSP. Returns the 32-byte key (errors as above).
Result<capsule::SecretBytes> ParseDerivedKeyResponse(std::span<const uint8_t> response);
// The error for a failed guest request ("SNP_GET_REPORT on /dev/sev-guest failed: firmware error
// 0x16 (INVALID_PARAM), VMM error 0").
Status GuestRequestError(std::string_view request, const std::string& device, int error,
                         uint32_t fw_error, uint32_t vmm_error);

class SevGuestDevice {
 public:
  // The ioctl itself: returns 0 or the errno, and fills fw_error/vmm_error as the kernel does.
  // Replaced in tests to drive BUSY, firmware errors and short answers.
  using Ioctl = std::function<int(unsigned long request, SnpGuestRequestIoctl* guest_request)>;
  static constexpr int kMaxBusyRetries = 5;

  // NotFound when the device does not exist (no SEV guest driver: the caller may fall back),
  // IoError otherwise, both naming the path.
  static Result<std::unique_ptr<SevGuestDevice>> Open(const std::string& path);
  static std::unique_ptr<SevGuestDevice> ForTesting(std::string name, Ioctl ioctl,
                                                    std::chrono::milliseconds busy_delay);
  ~SevGuestDevice();
  SevGuestDevice(const SevGuestDevice&) = delete;
  SevGuestDevice& operator=(const SevGuestDevice&) = delete;

  // SNP_GET_REPORT: the 1184-byte report for `report_data` at `vmpl` (not validated against the
  // request here: the platform does that for every source alike).
  Result<std::vector<uint8_t>> GetReport(const capsule::ReportData& report_data, uint32_t vmpl);
  // SNP_GET_DERIVED_KEY with the VCEK as root key.
  Result<capsule::SecretBytes> GetDerivedKey(uint64_t guest_field_select, uint32_t vmpl);

 private:
  SevGuestDevice(std::string path, int fd, Ioctl ioctl, std::chrono::milliseconds busy_delay);
  Status Request(std::string_view name, unsigned long request, void* request_data,
                 void* response_data);

  std::string path_;
  int fd_ = -1;
  Ioctl ioctl_;
  std::chrono::milliseconds busy_delay_;
};

}  // namespace mlcapsule::tee::cvm
