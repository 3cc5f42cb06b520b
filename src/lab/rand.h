// The lab's random numbers: std::mt19937_64 with our own bounded and real draws, because the
// standard distributions are implementation-defined and the lab's splits, query streams and
// shuffles must be the same on every standard library.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

namespace mlcapsule::lab {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  uint64_t Next() { return engine_(); }
  // Uniform in [0, n), unbiased (rejection of the short last interval). n > 0.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
      v = engine_();
    } while (v >= limit);
    return v % n;
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Standard normal (Box-Muller; the second value is dropped for simplicity).
  double Normal() {
    double u = Uniform();
    while (u <= 0) u = Uniform();
    return std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * Uniform());
  }
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[Below(i)]);
  }
  // k distinct indices of [0, n) in random order (k <= n).
  std::vector<int64_t> Sample(int64_t n, int64_t k) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
    for (int64_t i = 0; i < k; ++i)
      std::swap(
          all[static_cast<size_t>(i)],
          all[static_cast<size_t>(i + static_cast<int64_t>(Below(static_cast<uint64_t>(n - i))))]);
    all.resize(static_cast<size_t>(k));
    return all;
  }

 private:
  std::mt19937_64 engine_;
};

// A per-job seed from the configuration's seed and the job's name (FNV-1a, then mixed).
inline uint64_t DeriveSeed(uint64_t seed, std::string_view name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

}  // namespace mlcapsule::lab
