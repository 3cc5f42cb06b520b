// Process confinement for `mlcapsule-core`, the software TEE. HardenProcess makes the process
// non-dumpable (other processes of the same user can no longer ptrace it, read /proc/PID/mem or
// use process_vm_readv on it, and it never writes a core dump) and sets no_new_privs. EnterSeccomp
// then installs an allow-list system-call filter on every thread of the process: once it is on,
// the core can only compute, allocate (secret) memory, use the file descriptors it already has,
// and create threads. docs/core-protocol.md lists what is allowed and why. Trusts nothing.
//
//   MLC_RETURN_IF_ERROR(HardenProcess());
//   ... open files, read keys, create the platform ...
//   MLC_RETURN_IF_ERROR(WarmUpRuntimes());
//   MLC_RETURN_IF_ERROR(EnterSeccomp());  // from here on: no open, exec, socket, fork, ptrace
#pragma once

#include "base/status.h"

namespace mlcapsule::tee {

// prctl(PR_SET_DUMPABLE, 0), RLIMIT_CORE = 0, prctl(PR_SET_NO_NEW_PRIVS, 1).
Status HardenProcess();

// Runs, once, the lazy initialisation of the engine's runtimes that needs system calls the filter
// forbids: oneDNN opens a profiling library (dlopen, so open) the first time it generates a
// kernel. Turns oneDNN's JIT profiling hooks off (the core announces no code to profilers), then
// creates and runs a small convolution and inner product, which also starts OpenMP's threads.
Status WarmUpRuntimes();

// Installs the filter on all threads (SECCOMP_FILTER_FLAG_TSYNC). Not reversible. A system call
// outside the allow-list fails with EPERM; the dangerous ones (exec, ptrace, process_vm_*,
// sockets, opening files, fork, clone without CLONE_THREAD, kernel modules, kexec, ...) kill
// the whole process with SIGSYS. clone3 fails with ENOSYS so that glibc falls back to clone,
// whose flags the filter can check. The filter does not enforce W^X: oneDNN generates kernels at
// run time and needs executable mappings.
Status EnterSeccomp();

}  // namespace mlcapsule::tee
