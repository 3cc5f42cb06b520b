// How the untrusted host reaches the trusted core: one Call per boundary call (trusted/boundary.h
// defines the calls and payloads). ProcessChannel runs the core as the separate, confined
// `mlcapsule-core` process of the software TEE; InProcessChannel runs it inside the host process
// with the test platform and protects nothing, so it exists for unit tests and is only created
// when the caller asks for it by name (never as a fallback).
#pragma once

#include <sys/types.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "trusted/boundary.h"

namespace mlcapsule::host {

class CoreChannel {
 public:
  virtual ~CoreChannel() = default;
  virtual Status Call(trusted::Call call, std::span<const uint8_t> input,
                      trusted::Reply* reply) = 0;
  // "software (pid 1234, memfd_secret)" / "in-process (INSECURE, tests only)".
  // The input as the concatenation of `pieces` (large tensors are sent from where they are).
  // The default joins them and calls Call.
  virtual Status CallGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                            trusted::Reply* reply);
  virtual std::string Describe() const = 0;
};

struct ProcessChannelOptions {
  std::string core_binary;  // "" = mlcapsule-core beside the running executable
  std::string state_dir;    // the platform's files (sealing key, counter) live here
  // The TEE backend and its options, passed to the core after --state: e.g. {"--platform",
  // "tpm", "--tpm", "tcp:127.0.0.1:2321"} (docs/tee-backends.md; empty: the software TEE).
  std::vector<std::string> platform_args;
  // The core talks over its stdin/stdout instead of descriptor 3 (`--stdio`; Gramine hands the
  // enclave only fds 0-2).
  bool stdio = false;
  // A command that runs the core for us, e.g. {"gramine-sgx", "mlcapsule-core"}: the manifest
  // fixes the core's arguments, so none are added, and stdio is implied. Empty: run core_binary.
  std::vector<std::string> launcher;
  bool quiet = false;  // do not forward the core's stderr warnings
  // Threads the core computes with. While fewer than the machine's CPUs, the host polls for an
  // inference answer for up to about the last answer's time (at most 20 ms) before it blocks:
  // the wake-up of a blocked host costs tens of microseconds per query on a virtual machine, and
  // a CPU the core does not use is free to poll.
  int core_threads = 1;
};

// Starts `mlcapsule-core` on one end of a socketpair and talks to it with the framing of
// docs/core-protocol.md. The destructor sends kClose, waits for the process, and kills it (by its
// PID) if it has not exited within 5 seconds.
Result<std::unique_ptr<CoreChannel>> StartProcessChannel(const ProcessChannelOptions& options);

}  // namespace mlcapsule::host
