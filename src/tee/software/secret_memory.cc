// memfd_secret-backed sensitive memory (see secret_memory.h).
//
// Large allocations get their own mapping: one memfd_secret file per allocation, sized to whole
// pages, mapped shared and closed at once (the mapping keeps the pages alive); release is munmap.
// Allocations up to 2 KiB (keys, biases, small weight tensors) come from a slab of power-of-two
// blocks carved out of 16 KiB secret chunks, so a hundred keys do not cost a hundred mappings and
// a hundred pages of the RLIMIT_MEMLOCK budget. Slab chunks are never unmapped: there are few.
//
// Every mapping is MADV_DONTFORK: the core never forks (seccomp forbids it), and a child made
// some other way must not inherit the secret pages. A fork handler therefore empties the slab's
// free lists in the child, whose chunks are gone (tests fork; the core does not).
#include "tee/software/secret_memory.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "base/sensitive_memory.h"

namespace mlcapsule::tee {
namespace {

enum class Backend { kMemfdSecret, kMlock };

constexpr size_t kPageBytes = 4096;  // mmap granularity on x86-64 (checked at install)
constexpr size_t kSlabChunkBytes = 4 * kPageBytes;
constexpr size_t kMinBlockBytes = 64;  // also the alignment AllocateSensitive promises
constexpr size_t kMaxBlockBytes = 2048;
constexpr int kSlabClasses = 6;  // 64, 128, ..., 2048

// The system call itself: AddressSanitizer replaces mlock() with a no-op.
int LockPages(void* pointer, size_t bytes) {
  return static_cast<int>(syscall(SYS_mlock, pointer, bytes));
}

size_t RoundUpToPages(size_t bytes) { return (bytes + kPageBytes - 1) / kPageBytes * kPageBytes; }

std::string MemlockDescription() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return "unknown";
  if (limit.rlim_cur == RLIM_INFINITY) return "unlimited";
  return std::to_string(limit.rlim_cur / 1024) + " KiB";
}

// Explains a failed allocation on stderr. AllocateSensitive aborts after a null return, so this
// is the user's only clue to the cause.
void ReportFailure(Backend backend, const char* step, size_t bytes, int error) {
  std::fprintf(stderr, "mlcapsule-core: cannot allocate %zu bytes of %s memory: %s failed: %s\n",
               bytes, backend == Backend::kMemfdSecret ? "memfd_secret" : "mlock-ed", step,
               std::strerror(error));
  if (error == EAGAIN || error == ENOMEM || error == EPERM) {
    std::fprintf(stderr,
                 "mlcapsule-core: secret memory is charged to RLIMIT_MEMLOCK (now %s) unless the "
                 "process has CAP_IPC_LOCK; raise it ('ulimit -l', or memlock in "
                 "/etc/security/limits.conf) to at least the model's size\n",
                 MemlockDescription().c_str());
  }
}

// Maps `bytes` (a multiple of the page size) of fresh secret memory, or returns nullptr after
// saying why on stderr.
void* MapPages(Backend backend, size_t bytes) {
  void* pointer = MAP_FAILED;
  if (backend == Backend::kMemfdSecret) {
    const int fd = static_cast<int>(syscall(kMemfdSecretSyscall, O_CLOEXEC));
    if (fd < 0) {
      ReportFailure(backend, "memfd_secret", bytes, errno);
      return nullptr;
    }
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int error = errno;
      close(fd);
      ReportFailure(backend, "ftruncate", bytes, error);
      return nullptr;
    }
    pointer = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int error = errno;
    close(fd);  // the mapping holds the file
    if (pointer == MAP_FAILED) {
      ReportFailure(backend, "mmap", bytes, error);
      return nullptr;
    }
  } else {
    pointer = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pointer == MAP_FAILED) {
      ReportFailure(backend, "mmap", bytes, errno);
      return nullptr;
    }
    if (LockPages(pointer, bytes) != 0) {
      const int error = errno;
      munmap(pointer, bytes);
      ReportFailure(backend, "mlock", bytes, error);
      return nullptr;
    }
    if (madvise(pointer, bytes, MADV_DONTDUMP) != 0) {
      const int error = errno;
      munmap(pointer, bytes);
      ReportFailure(backend, "madvise(MADV_DONTDUMP)", bytes, error);
      return nullptr;
    }
  }
  // Not fatal: the core cannot fork anyway once seccomp is on.
  (void)madvise(pointer, bytes, MADV_DONTFORK);
  return pointer;
}

int SlabClass(size_t bytes) {
  int index = 0;
  for (size_t block = kMinBlockBytes; block < bytes; block *= 2) ++index;
  return index;
}

// Free blocks of one backend, one list per size class; the link lives in the free block itself.
struct Slab {
  struct FreeBlock {
    FreeBlock* next;
  };
  std::mutex mutex;
  FreeBlock* free[kSlabClasses] = {};
};

template <Backend kBackend>
Slab& SlabFor() {
  static Slab slab;
  return slab;
}

template <Backend kBackend>
void* Allocate(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxBlockBytes) return MapPages(kBackend, RoundUpToPages(bytes));
  const int index = SlabClass(bytes);
  const size_t block = kMinBlockBytes << index;
  Slab& slab = SlabFor<kBackend>();
  std::lock_guard lock(slab.mutex);
  if (slab.free[index] == nullptr) {
    auto* chunk = static_cast<uint8_t*>(MapPages(kBackend, kSlabChunkBytes));
    if (chunk == nullptr) return nullptr;
    for (size_t offset = kSlabChunkBytes; offset > 0; offset -= block) {
      auto* free_block = reinterpret_cast<Slab::FreeBlock*>(chunk + offset - block);
      free_block->next = slab.free[index];
      slab.free[index] = free_block;
    }
  }
  Slab::FreeBlock* result = slab.free[index];
  slab.free[index] = result->next;
  result->next = nullptr;
  return result;
}

template <Backend kBackend>
void Release(void* pointer, size_t bytes) {
  if (pointer == nullptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxBlockBytes) {
    munmap(pointer, RoundUpToPages(bytes));  // unmapping also unlocks and frees the pages
    return;
  }
  const int index = SlabClass(bytes);
  Slab& slab = SlabFor<kBackend>();
  std::lock_guard lock(slab.mutex);
  auto* free_block = static_cast<Slab::FreeBlock*>(pointer);
  free_block->next = slab.free[index];
  slab.free[index] = free_block;
}

// Fork handlers: hold both slabs' locks across fork; the child drops the free blocks, which live
// in chunks it did not inherit.
void LockSlabs() {
  SlabFor<Backend::kMemfdSecret>().mutex.lock();
  SlabFor<Backend::kMlock>().mutex.lock();
}
void UnlockSlabs() {
  SlabFor<Backend::kMlock>().mutex.unlock();
  SlabFor<Backend::kMemfdSecret>().mutex.unlock();
}
void ForgetSlabsInChild() {
  for (Slab* slab : {&SlabFor<Backend::kMemfdSecret>(), &SlabFor<Backend::kMlock>()}) {
    for (auto& list : slab->free) list = nullptr;
  }
  UnlockSlabs();
}

constexpr SensitiveMemoryProvider kMemfdSecretProvider{
    Allocate<Backend::kMemfdSecret>, Release<Backend::kMemfdSecret>, "memfd_secret"};
constexpr SensitiveMemoryProvider kMlockProvider{Allocate<Backend::kMlock>,
                                                 Release<Backend::kMlock>, "mlock"};

// Tries one page of memfd_secret; on failure returns the errno and the step that failed.
bool ProbeMemfdSecret(int* error, const char** step) {
  const int fd = static_cast<int>(syscall(kMemfdSecretSyscall, O_CLOEXEC));
  if (fd < 0) {
    *error = errno;
    *step = "memfd_secret";
    return false;
  }
  bool ok = ftruncate(fd, kPageBytes) == 0;
  if (!ok) {
    *error = errno;
    *step = "ftruncate";
  } else {
    void* pointer = mmap(nullptr, kPageBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (pointer == MAP_FAILED) {
      ok = false;
      *error = errno;
      *step = "mmap";
    } else {
      // The first touch is what removes the page from the direct map; make sure it works.
      static_cast<volatile uint8_t*>(pointer)[0] = 1;
      munmap(pointer, kPageBytes);
    }
  }
  close(fd);
  return ok;
}

void WarnFallback(const char* reason) {
  static const char* const kLines[] = {
      "************************************************************************************",
      "WARNING: memfd_secret is not available, so the software TEE holds its keys and",
      "decrypted model weights in ordinary memory, locked with mlock (kept out of swap) and",
      "marked MADV_DONTDUMP (kept out of core dumps).",
      "LOST: the pages stay in the kernel's direct map, so root can read them through",
      "/proc/PID/mem, process_vm_readv, /dev/mem, a kernel module or a hibernation image.",
      "memfd_secret needs Linux >= 5.14 (and secretmem.enable=1 on the kernel command line",
      "before 6.5). The host shows the memory backend in its description of the core.",
      "************************************************************************************",
  };
  std::fprintf(stderr, "mlcapsule-core: WARNING: memfd_secret unavailable: %s\n", reason);
  for (const char* line : kLines) std::fprintf(stderr, "mlcapsule-core: %s\n", line);
}

}  // namespace

bool MemfdSecretAvailable() {
  int error = 0;
  const char* step = "";
  return ProbeMemfdSecret(&error, &step);
}

Status InstallSecretMemoryProvider(std::string* backend_name, SecretMemoryMode mode) {
  if (sysconf(_SC_PAGESIZE) != static_cast<long>(kPageBytes))
    return Unsupported("page size {} is not the {} bytes the secret allocator assumes",
                       sysconf(_SC_PAGESIZE), kPageBytes);
  // Secret pages count against RLIMIT_MEMLOCK (unless CAP_IPC_LOCK): take all we may have.
  struct rlimit limit {};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    (void)setrlimit(RLIMIT_MEMLOCK, &limit);  // best effort; failures show up at allocation
  }

  static const int fork_handlers = pthread_atfork(LockSlabs, UnlockSlabs, ForgetSlabsInChild);
  if (fork_handlers != 0)
    return InternalError("pthread_atfork failed: {}", std::strerror(fork_handlers));

  int error = 0;
  const char* step = "";
  if (mode == SecretMemoryMode::kAuto && ProbeMemfdSecret(&error, &step)) {
    SetSensitiveMemoryProvider(&kMemfdSecretProvider);
    *backend_name = kMemfdSecretProvider.name;
    return Status::Ok();
  }
  char reason[160];
  if (mode == SecretMemoryMode::kForceMlock) {
    std::snprintf(reason, sizeof(reason), "the caller asked for the mlock fallback (tests)");
  } else {
    std::snprintf(reason, sizeof(reason), "%s failed: %s", step, std::strerror(error));
  }

  // The fallback: check that mlock works at all before promising it.
  void* probe =
      mmap(nullptr, kPageBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe == MAP_FAILED) return ResourceExhausted("cannot map a page: {}", std::strerror(errno));
  const bool locked = LockPages(probe, kPageBytes) == 0;
  const int lock_error = errno;
  munmap(probe, kPageBytes);
  if (!locked)
    return FailedPrecondition(
        "no secret memory: {}, and mlock of one page failed too: {} (RLIMIT_MEMLOCK is {})", reason,
        std::strerror(lock_error), MemlockDescription());
  WarnFallback(reason);
  SetSensitiveMemoryProvider(&kMlockProvider);
  *backend_name = kMlockProvider.name;
  return Status::Ok();
}

}  // namespace mlcapsule::tee
