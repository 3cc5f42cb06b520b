// Default (heap) sensitive-memory provider and the dispatch to an installed one.
#include "base/sensitive_memory.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace mlcapsule {
namespace {

// Each allocation remembers the provider that made it, so a later switch cannot free memory
// through the wrong provider: the 64-byte prefix holds the provider pointer.
constexpr size_t kPrefix = 64;

void* HeapAllocate(size_t bytes) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); }
void HeapRelease(void* pointer, size_t) { std::free(pointer); }

constexpr SensitiveMemoryProvider kHeap{HeapAllocate, HeapRelease, "heap"};
std::atomic<const SensitiveMemoryProvider*> g_provider{&kHeap};

}  // namespace

void SetSensitiveMemoryProvider(const SensitiveMemoryProvider* provider) {
  g_provider.store(provider == nullptr ? &kHeap : provider);
}

const SensitiveMemoryProvider& CurrentSensitiveMemoryProvider() { return *g_provider.load(); }

void WipeMemory(void* pointer, size_t bytes) {
  if (pointer == nullptr || bytes == 0) return;
  std::memset(pointer, 0, bytes);
  // The asm statement makes the stores observable, so they are not removed as dead.
  __asm__ __volatile__("" : : "r"(pointer) : "memory");
}

void* AllocateSensitive(size_t bytes) {
  const SensitiveMemoryProvider* provider = g_provider.load();
  auto* base = static_cast<uint8_t*>(provider->allocate(bytes + kPrefix));
  if (base == nullptr) {
    std::fprintf(stderr, "mlcapsule: fatal: cannot allocate %zu bytes of %s memory\n", bytes,
                 provider->name);
    std::abort();
  }
  std::memcpy(base, &provider, sizeof(provider));
  return base + kPrefix;
}

void ReleaseSensitive(void* pointer, size_t bytes) {
  if (pointer == nullptr) return;
  auto* base = static_cast<uint8_t*>(pointer) - kPrefix;
  const SensitiveMemoryProvider* provider = nullptr;
  std::memcpy(&provider, base, sizeof(provider));
  WipeMemory(pointer, bytes);
  provider->release(base, bytes + kPrefix);
}

}  // namespace mlcapsule
