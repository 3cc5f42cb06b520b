// Where secret bytes live: decrypted weights (plan constants, kernels' packed weights) and keys.
// By default this is the ordinary heap. The trusted process of the software TEE installs a
// provider that backs every such allocation with memfd_secret pages (or mlock + MADV_DONTDUMP
// where the kernel lacks it), so the bytes are absent from the kernel's direct map, from core
// dumps and from swap. The engine and the capsule library allocate secrets only through here.
//
//   void* p = AllocateSensitive(bytes);  // 64-byte aligned, never null (aborts when out of memory)
//   ...
//   ReleaseSensitive(p, bytes);          // wipes, then frees
#pragma once

#include <cstddef>

namespace mlcapsule {

struct SensitiveMemoryProvider {
  // Returns 64-byte aligned memory of at least `bytes` bytes, or nullptr.
  void* (*allocate)(size_t bytes);
  // Frees what allocate returned; `bytes` is the size asked for. The caller has wiped it.
  void (*release)(void* pointer, size_t bytes);
  const char* name;  // "heap", "memfd_secret", "mlock"
};

// Installs `provider` for all later allocations; call once at process start, before any
// sensitive allocation (memory allocated earlier is still released through the provider that
// allocated it, so switching is safe but pointless). nullptr restores the heap.
void SetSensitiveMemoryProvider(const SensitiveMemoryProvider* provider);
const SensitiveMemoryProvider& CurrentSensitiveMemoryProvider();

// 64-byte aligned; aborts when the provider cannot allocate (secrets never fall back silently).
void* AllocateSensitive(size_t bytes);
// Wipes `bytes` bytes at `pointer` and releases them; nullptr is ignored.
void ReleaseSensitive(void* pointer, size_t bytes);
// Overwrites memory in a way the compiler does not remove.
void WipeMemory(void* pointer, size_t bytes);

}  // namespace mlcapsule
