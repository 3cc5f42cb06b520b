// The Linux configfs-tsm report interface (Documentation/ABI/testing/configfs-tsm,
// drivers/virt/coco/guest/report.c), through which an SEV-SNP guest (provider "sev_guest") or a
// TDX guest (provider "tdx_guest") asks its TEE for evidence bound to 64 bytes of report data.
// One request is one entry directory:
//
//   ROOT/ENTRY/provider          read: "sev_guest\n" | "tdx_guest\n" (must be the one expected)
//   ROOT/ENTRY/privlevel_floor   read (SNP): the lowest VMPL the guest may ask for, decimal
//   ROOT/ENTRY/privlevel         write (SNP): the VMPL to report, decimal (bumps generation)
//   ROOT/ENTRY/generation        read: decimal, incremented by every write to the entry
//   ROOT/ENTRY/inblob            write: the 64 bytes of report data, in one write, then close
//   ROOT/ENTRY/outblob           read to EOF (<= kMaxOutblobBytes): the SNP report / TDX quote
//   ROOT/ENTRY/auxblob           read to EOF (<= kMaxAuxblobBytes): SNP's GHCB certificate table
//
// Protocol (docs/dev/tee-backends-plan.md §3.1): mkdir ROOT/mlcapsule-<pid>-<16 hex> (a new name
// on EEXIST; ENOENT or ENXIO mean no provider: Unavailable starting with kNoTsmProvider), check
// the provider, write privlevel (SNP), read generation g0, write inblob and close (configfs
// commits a binary attribute on close and ignores a refused write, so only the generation shows
// it), read g1, read outblob and auxblob, read g2, rmdir on every path. It requires g1 == g0 + 1
// (the write took effect) and g2 == g1 (nobody wrote between our write and our read); on a
// mismatch it retries once with a new entry, then answers Aborted naming g0/g1/g2.
//
// Real configfs is recognised by statfs magic 0x62656570 (CONFIGFS_MAGIC). Any other root is a
// prepared directory (tests, emulators) and drives the same code with two differences:
//   - with TsmOptions::entry_name set, the entry ROOT/entry_name must already exist and is
//     neither made nor removed (a plain directory cannot create attribute files by itself);
//     entry_name is refused on a real configfs. Without it, mkdir/rmdir run as on configfs (and
//     the read of `provider` in the new, empty directory fails, naming the path);
//   - the generation checks apply only when ROOT/ENTRY/generation is a FIFO (an emulator that
//     counts, as the kernel does); a regular file cannot count, so its value is read and parsed
//     but not compared. A retry on a prepared entry uses the same entry again.
// Nothing read here is trusted: every read is bounded, and the callers (snp_platform,
// tdx_platform) validate the blobs; the license server checks every signature.
//
//   MLC_ASSIGN_OR_RETURN(TsmBlobs blobs,
//                        RequestTsmReport(TsmOptions{}, kProviderSevGuest, report_data, 0));
//   // blobs.outblob: the 1184-byte SNP report; blobs.auxblob: the certificate table
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"

namespace mlcapsule::tee::cvm {

inline constexpr std::string_view kDefaultTsmRoot = "/sys/kernel/config/tsm/report";
inline constexpr long kConfigfsMagic = 0x62656570;  // fs/configfs/mount.c
inline constexpr std::string_view kProviderSevGuest = "sev_guest";
inline constexpr std::string_view kProviderTdxGuest = "tdx_guest";
// TSM_OUTBLOB_MAX (include/linux/tsm.h) bounds both binary attributes in the kernel.
inline constexpr size_t kMaxOutblobBytes = 32 << 10;
inline constexpr size_t kMaxAuxblobBytes = 32 << 10;
// provider, generation and privlevel_floor are one short line each.
inline constexpr size_t kMaxAttributeTextBytes = 64;
// Every "there is no configfs-tsm provider here" error starts with this (the SNP reporter then
// falls back to the /dev/sev-guest ioctl; IsNoTsmProvider tests for it).
inline constexpr std::string_view kNoTsmProvider = "no configfs-tsm provider";

struct TsmOptions {
  std::string root = std::string(kDefaultTsmRoot);
  // Prepared directories only (see above): use the existing entry ROOT/entry_name.
  std::string entry_name;
};

struct TsmBlobs {
  std::vector<uint8_t> outblob;
  std::vector<uint8_t> auxblob;  // empty when the provider gave none
};

// One report for `report_data`. `expected_provider` is kProviderSevGuest or kProviderTdxGuest;
// `privlevel` is written to the entry when set (SNP's VMPL; TDX has none). Errors name the path
// and the errno: Unavailable (kNoTsmProvider...) when the root or the provider is missing,
// FailedPrecondition for another provider or a privlevel below the floor, PermissionDenied when
// the entry cannot be made for lack of rights, IoError for a failed read or write (the provider's
// own error surfaces as the errno of the outblob read), InvalidArgument for an empty or oversize
// blob or an unreadable number, Aborted when the generation shows another writer twice.
Result<TsmBlobs> RequestTsmReport(const TsmOptions& options, std::string_view expected_provider,
                                  const capsule::ReportData& report_data,
                                  std::optional<uint32_t> privlevel);

// True for the Unavailable error RequestTsmReport gives when there is no configfs-tsm provider.
bool IsNoTsmProvider(const Status& status);

// Where a CVM platform gets its blobs: in this process (MakeInProcessReporter, attester.h) or
// from the attester helper (SpawnAttester). The platform validates every answer; a reporter is
// trusted for nothing.
class TsmReporter {
 public:
  virtual ~TsmReporter() = default;
  virtual Result<TsmBlobs> Request(const capsule::ReportData& report_data) = 0;
};

}  // namespace mlcapsule::tee::cvm
