// A TPM Command Transmission Interface (TCTI, tss2_tcti.h) over one file descriptor that is
// already open: the TPM 2.0 platform's only way to its TPM. `mlcapsule-core` connects to the TPM
// before it enters seccomp (socket, connect and open are then fatal), so the TCTI must never
// reconnect, which tss2's own swtpm TCTI does for every command. After OpenTpmTransport the TCTI
// uses only write/sendto, read, poll and the monotonic clock on its descriptor.
//
// Protocol (TPM 2.0 Part 3 command/response framing, no extra framing):
//   transmit  writes the whole command (10 <= size <= 4096 bytes) in one go.
//   receive   reads the 10-byte response header, checks its size field (10..kMaxResponseBytes,
//             anything else is a malformed response and breaks the transport), then reads the
//             rest into an internal buffer and copies it out. A call with a null response
//             buffer only reads the header and reports the size (tss2's SAPI asks that way).
//             A finite `timeout` (ms) is honoured with poll: TSS2_TCTI_RC_TRY_AGAIN keeps the
//             partial response for the next call. TSS2_TCTI_TIMEOUT_BLOCK waits at most
//             `response_timeout_ms` (a hung TPM must not hang the core forever), then the
//             transport is broken.
//   A broken transport (a read or write error, EOF, a malformed response, a protocol misuse)
//   answers every later call with TSS2_TCTI_RC_IO_ERROR; last_error() says what happened.
//
// Device specs: "tcp:HOST:PORT" (swtpm's TCP data channel; HOST numeric or resolvable before
// seccomp) or an absolute path ("/dev/tpmrm0", the kernel resource manager; "/dev/tpm0" works
// but leaves flushing transient objects to us).
//
// Ownership: an FdTcti owns its descriptor and closes it in its destructor. The TCTI finalize
// callback (Tss2_Tcti_Finalize) closes nothing: ESYS never finalizes a TCTI it was handed, and
// the descriptor's life is the FdTcti's. The context() pointer stays valid while the FdTcti
// lives (moves keep it: the context is on the heap).
//
//   MLC_ASSIGN_OR_RETURN(FdTcti transport, OpenTpmTransport("tcp:127.0.0.1:2321"));
//   ESYS_CONTEXT* esys = nullptr;
//   Esys_Initialize(&esys, transport.context(), nullptr);
#pragma once

#include <tss2/tss2_tcti.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace mlcapsule::tee {

class FdTcti {
 public:
  // TPM2_PT_MAX_RESPONSE_SIZE of the TPMs we know (swtpm, PC client TPMs) and tss2's buffer.
  static constexpr size_t kMaxResponseBytes = 4096;
  static constexpr size_t kHeaderBytes = 10;
  static constexpr int kDefaultResponseTimeoutMs = 120000;

  // Takes ownership of `fd` (a connected stream socket or a TPM character device);
  // `description` names it in errors ("tcp:127.0.0.1:2321").
  static FdTcti Adopt(int fd, std::string description,
                      int response_timeout_ms = kDefaultResponseTimeoutMs);

  FdTcti(FdTcti&& other) noexcept;
  FdTcti& operator=(FdTcti&& other) noexcept;
  FdTcti(const FdTcti&) = delete;
  FdTcti& operator=(const FdTcti&) = delete;
  ~FdTcti();

  // For Esys_Initialize. Valid while this FdTcti lives.
  TSS2_TCTI_CONTEXT* context();
  const std::string& description() const;
  bool broken() const;
  // What broke the transport, in words; empty while it works.
  const std::string& last_error() const;

  struct State;

 private:
  explicit FdTcti(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Connects to (or opens) the TPM named by `spec` (see above). InvalidArgument for a malformed
// spec, IoError naming the spec and errno when the TPM cannot be reached.
Result<FdTcti> OpenTpmTransport(std::string_view spec,
                                int response_timeout_ms = FdTcti::kDefaultResponseTimeoutMs);

}  // namespace mlcapsule::tee
