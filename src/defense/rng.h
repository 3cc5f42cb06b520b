// Rng: the trusted core's deterministic random source for output perturbation (gaussian noise,
// MemGuard's randomised release). A ChaCha20 keystream (libsodium) under a 32-byte seed that the
// core draws from its Platform's random source; the same seed gives the same sequence on every
// machine, which is what the tests rely on. Trusts its seed to be secret and uniformly random.
//
//   Rng rng(seed);                 // std::span<const uint8_t, 32>
//   double u = rng.Uniform();      // [0, 1)
//   double n = rng.Normal();       // standard normal
//   uint64_t x = rng.NextUint64();
//
// The keystream is produced in blocks into an internal buffer, so no call allocates. Not
// thread-safe (one Rng per core). Copying is disabled: two copies would repeat each other's noise.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace mlcapsule::defense {

class Rng {
 public:
  static constexpr size_t kSeedBytes = 32;

  explicit Rng(std::span<const uint8_t, kSeedBytes> seed);
  Rng(const Rng&) = delete;
  Rng& operator=(const Rng&) = delete;
  ~Rng();  // wipes the key and the unused keystream

  // 64 uniformly random bits (the next 8 keystream bytes, little-endian).
  uint64_t NextUint64();
  // Uniform on [0, 1): the top 53 bits of NextUint64, so every value is a multiple of 2^-53.
  double Uniform();
  // Standard normal N(0, 1) by the Box-Muller transform: two uniforms give two normals, the second
  // is kept for the next call. No rejection loop, so the cost per call is fixed.
  double Normal();

 private:
  void Refill();

  static constexpr size_t kBufferBytes = 1024;  // 16 ChaCha20 blocks per refill
  std::array<uint8_t, kSeedBytes> key_;
  std::array<uint8_t, kBufferBytes> buffer_;
  size_t position_ = kBufferBytes;  // next unused byte of buffer_
  uint64_t refills_ = 0;            // the ChaCha20 nonce of the next refill
  bool has_spare_normal_ = false;
  double spare_normal_ = 0.0;
};

}  // namespace mlcapsule::defense
