// Rng (see rng.h). Each refill is the ChaCha20 keystream (original construction: 64-bit nonce,
// 64-bit block counter) for nonce = the refill number, from block 0. Nonces never repeat under one
// key, so the stream never repeats either (2^64 refills of 1 KiB).
#include "defense/rng.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/sensitive_memory.h"

namespace mlcapsule::defense {

static_assert(Rng::kSeedBytes == crypto_stream_chacha20_KEYBYTES);

Rng::Rng(std::span<const uint8_t, kSeedBytes> seed) {
  std::copy(seed.begin(), seed.end(), key_.begin());
}

Rng::~Rng() {
  WipeMemory(key_.data(), key_.size());
  WipeMemory(buffer_.data(), buffer_.size());
  spare_normal_ = 0.0;
}

void Rng::Refill() {
  std::array<uint8_t, crypto_stream_chacha20_NONCEBYTES> nonce;
  for (size_t i = 0; i < nonce.size(); ++i) nonce[i] = static_cast<uint8_t>(refills_ >> (8 * i));
  ++refills_;
  crypto_stream_chacha20(buffer_.data(), buffer_.size(), nonce.data(), key_.data());
  position_ = 0;
}

uint64_t Rng::NextUint64() {
  if (position_ + 8 > buffer_.size()) Refill();
  uint64_t value = 0;
  for (size_t i = 0; i < 8; ++i) value |= uint64_t{buffer_[position_ + i]} << (8 * i);
  position_ += 8;
  return value;
}

double Rng::Uniform() { return static_cast<double>(NextUint64() >> 11) * 0x1.0p-53; }

double Rng::Normal() {
  if (has_spare_normal_) {
    has_spare_normal_ = false;
    return spare_normal_;
  }
  // 1 - u is in (0, 1], so the logarithm is finite; the radius is at most sqrt(2 * 53 ln 2).
  double radius = std::sqrt(-2.0 * std::log(1.0 - Uniform()));
  double angle = 2.0 * std::numbers::pi * Uniform();
  spare_normal_ = radius * std::sin(angle);
  has_spare_normal_ = true;
  return radius * std::cos(angle);
}

}  // namespace mlcapsule::defense
