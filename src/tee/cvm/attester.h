// Where a CVM platform's evidence comes from. The confined core cannot do configfs-tsm's work
// itself: every report needs mkdir, openat and rmdir, which its seccomp filter kills. So before
// seccomp the core spawns itself as a small helper, the attester (`mlcapsule-core --attester snp
// ...`), on a socketpair, and asks it for reports (docs/dev/tee-backends-plan.md §3.4). The
// attester holds no keys and is trusted for nothing: the platform validates every answer exactly
// as it validates an in-process one. Without seccomp (tests, tools) MakeInProcessReporter does
// the same work in the calling process.
//
// The attester's socket carries, after one hello reply, strictly alternating frames (all
// integers little-endian):
//
//   request := kind:u8 (1 snp, 2 tdx) report_data:u8[64]
//   reply   := status:u32 (0 ok, else a StatusCode) first:blob second:blob
//              ; ok:    first = outblob (<= kMaxOutblobBytes), second = auxblob (<=
//              kMaxAuxblobBytes) ; error: first = the message (<= kMaxAttesterMessageBytes), second
//              empty ; hello: status 0, first = "mlcapsule-attester/1 snp|tdx", second empty
//   blob    := length:u32 bytes:u8[length]
//
// The client checks every length against its limit before it reads the bytes. A helper that
// dies, closes its socket, says something malformed or oversize, or does not answer within the
// timeout (SO_RCVTIMEO, set before seccomp) makes the client answer Unavailable, close its end
// and refuse every later request; the caller (the core) keeps running. The client uses only
// read, sendto and close after it is made, all of which the core's filter allows; it never
// reconnects (a new attester needs a new core).
//
//   cvm::ReporterOptions reporter;                  // kind, configfs root, device, VMPL
//   reporter.kind = cvm::CvmKind::kSnp;
//   MLC_ASSIGN_OR_RETURN(auto attester, cvm::SpawnAttester("/proc/self/exe",
//                                                          cvm::AttesterArguments(reporter)));
//   // ... enter seccomp; later: MLC_ASSIGN_OR_RETURN(auto blobs, attester->Request(rd));
//
// and in the helper's main(): if (cvm::IsAttesterInvocation(argc, argv))
//                               return cvm::AttesterMain(argc, argv);
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tee/cvm/sev_guest.h"
#include "tee/cvm/tsm_report.h"

namespace mlcapsule::tee::cvm {

enum class CvmKind : uint8_t { kSnp = 1, kTdx = 2 };
const char* CvmKindName(CvmKind kind);  // "snp" / "tdx"

struct ReporterOptions {
  CvmKind kind = CvmKind::kSnp;
  TsmOptions tsm;
  // SNP only: the legacy device used when configfs-tsm has no provider, and the VMPL written to
  // privlevel (and asked of the ioctl). The platform refuses a report of any other VMPL.
  std::string sev_guest_device = std::string(kDefaultSevGuestDevice);
  uint32_t vmpl = 0;
};
using AttesterOptions = ReporterOptions;

// configfs-tsm in this process; SNP falls back to SNP_GET_REPORT on `sev_guest_device` when the
// configfs root has no provider (IsNoTsmProvider), giving the report with an empty auxblob.
std::unique_ptr<TsmReporter> MakeInProcessReporter(ReporterOptions options);

inline constexpr size_t kAttesterRequestBytes = 1 + 64;
inline constexpr size_t kMaxAttesterMessageBytes = 4096;
inline constexpr std::string_view kAttesterHelloPrefix = "mlcapsule-attester/1 ";
inline constexpr std::chrono::seconds kDefaultAttesterTimeout{120};

// The core's end of an attester socket.
class AttesterClient final : public TsmReporter {
 public:
  // Owns `fd` (a connected stream socket) and, when `pid` > 0, the child to reap. Sets the
  // socket's receive and send timeouts to `timeout`.
  AttesterClient(int fd, pid_t pid, CvmKind kind, std::chrono::seconds timeout);
  ~AttesterClient() override;
  AttesterClient(const AttesterClient&) = delete;
  AttesterClient& operator=(const AttesterClient&) = delete;

  Result<TsmBlobs> Request(const capsule::ReportData& report_data) override;
  // Reads the hello (SpawnAttester does this once).
  Status ReadHello();
  pid_t pid() const { return pid_; }

 private:
  struct Reply {
    uint32_t code = 0;
    std::vector<uint8_t> first, second;
  };
  Status ReadReply(Reply* reply);
  Status ReadExactly(uint8_t* data, size_t size);
  Status Fail(std::string reason);  // closes the socket; every later request is refused

  std::mutex mutex_;
  int fd_ = -1;
  pid_t pid_ = -1;
  CvmKind kind_;
  std::chrono::seconds timeout_;
  std::string gone_;  // why the attester is no longer usable
};

// The arguments that make `mlcapsule-core` an attester for `options` (without --attester-fd,
// which SpawnAttester adds): {"--attester", "snp", "--tsm-root", R, "--sev-guest", D, "--vmpl",
// "0"} (+ "--tsm-entry", E for prepared directories).
std::vector<std::string> AttesterArguments(const ReporterOptions& options);

// posix_spawn(core_binary, args + {"--attester-fd", "3"}) on a socketpair whose child end is the
// child's descriptor 3 (every other descriptor above 2 is closed in the child; signal
// dispositions and mask are reset), then waits up to `timeout` for its hello. Must run before
// seccomp (socketpair and posix_spawn are killed after it). Errors: InvalidArgument for args
// without "--attester snp|tdx"; IoError when the spawn fails; Unavailable when the helper exits
// or does not say hello.
Result<std::unique_ptr<AttesterClient>> SpawnAttester(
    const std::string& core_binary, std::vector<std::string> args,
    std::chrono::seconds timeout = kDefaultAttesterTimeout);

// The attester's loop on `fd`: hello, then one reply per request until the peer closes the
// socket. Returns the process exit status: 0 at the end of the stream, 4 on a malformed request,
// 5 when a reply cannot be written.
int RunAttester(int fd, const AttesterOptions& options);

// `argv[1] == "--attester"`.
bool IsAttesterInvocation(int argc, char** argv);
// The attester's main: parses
//   --attester snp|tdx --attester-fd N [--tsm-root DIR] [--tsm-entry NAME] [--sev-guest PATH]
//   [--vmpl N]
// (each at most once; N >= 3), ignores SIGPIPE and runs RunAttester. Exit status 2 on a usage
// error (the reason on stderr).
int AttesterMain(int argc, char** argv);

}  // namespace mlcapsule::tee::cvm
