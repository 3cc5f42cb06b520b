// The software TEE's sensitive-memory provider (base/sensitive_memory.h): every allocation of
// keys, decrypted weights, packed weights and activations inside `mlcapsule-core` is backed by
// memfd_secret pages, which the kernel removes from its direct map, so they are absent from
// /proc/PID/mem, process_vm_readv, core dumps, swap and hibernation images. Where the kernel lacks
// memfd_secret the provider falls back to anonymous memory locked with mlock and marked
// MADV_DONTDUMP, after a loud warning on stderr: that keeps the bytes out of swap and core dumps
// only. Trusts nothing; runs inside the core process, and keeps working after EnterSeccomp (the
// filter allows memfd_secret, ftruncate, mmap, munmap, mlock).
//
//   std::string backend;
//   MLC_RETURN_IF_ERROR(InstallSecretMemoryProvider(&backend));  // "memfd_secret" or "mlock"
//   void* key = AllocateSensitive(32);                             // now in secret memory
#pragma once

#include <string>

#include "base/status.h"

namespace mlcapsule::tee {

// memfd_secret's number; glibc has no wrapper. New system calls have one number on every
// architecture (the unified table), so this is not x86-64 specific.
inline constexpr long kMemfdSecretSyscall = 447;

enum class SecretMemoryMode {
  kAuto,        // memfd_secret, else the mlock fallback with a loud warning
  kForceMlock,  // the fallback even where memfd_secret works (tests of the fallback only)
};

// Raises RLIMIT_MEMLOCK's soft limit to the hard limit (memfd_secret pages are charged to it
// unless the process has CAP_IPC_LOCK), probes memfd_secret with a one-page allocation, and
// installs the matching provider for the whole process. `backend_name` receives the provider's
// name. Fails only when neither memfd_secret nor mlock works. Call once, before any sensitive
// allocation; the provider stays installed for the life of the process.
Status InstallSecretMemoryProvider(std::string* backend_name,
                                   SecretMemoryMode mode = SecretMemoryMode::kAuto);

// True when a one-page memfd_secret mapping can be made now (for tests and diagnostics).
bool MemfdSecretAvailable();

}  // namespace mlcapsule::tee
