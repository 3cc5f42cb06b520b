// Rng: the keystream it draws from (checked against libsodium's ChaCha20 directly, across refill
// boundaries), determinism per seed, and the moments of its uniform and normal draws.
#include "defense/rng.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <array>
#include <cmath>
#include <vector>

namespace mlcapsule::defense {
namespace {

std::array<uint8_t, Rng::kSeedBytes> Seed(uint8_t first) {
  std::array<uint8_t, Rng::kSeedBytes> seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(first + 7 * i);
  return seed;
}

TEST(RngTest, IsTheChaCha20KeystreamOfItsSeed) {
  std::array<uint8_t, Rng::kSeedBytes> seed = Seed(3);
  // Refill r is the keystream for nonce r (little-endian), 1024 bytes = 128 words each.
  std::vector<uint8_t> stream(4 * 1024);
  for (uint64_t refill = 0; refill < 4; ++refill) {
    std::array<uint8_t, crypto_stream_chacha20_NONCEBYTES> nonce{};
    nonce[0] = static_cast<uint8_t>(refill);
    crypto_stream_chacha20(stream.data() + refill * 1024, 1024, nonce.data(), seed.data());
  }
  Rng rng(seed);
  for (size_t word = 0; word < stream.size() / 8; ++word) {
    uint64_t want = 0;
    for (size_t i = 0; i < 8; ++i) want |= uint64_t{stream[word * 8 + i]} << (8 * i);
    ASSERT_EQ(rng.NextUint64(), want) << "word " << word;
  }
}

TEST(RngTest, DeterministicPerSeed) {
  Rng a(Seed(1)), b(Seed(1)), c(Seed(2));
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    double x = a.Normal(), y = b.Normal(), z = c.Normal();
    EXPECT_EQ(x, y);
    differs = differs || x != z;
  }
  EXPECT_TRUE(differs);
}

TEST(RngTest, UniformMoments) {
  Rng rng(Seed(9));
  constexpr int kDraws = 200000;
  double sum = 0, sum_squares = 0;
  for (int i = 0; i < kDraws; ++i) {
    double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_squares += u * u;
  }
  double mean = sum / kDraws;
  EXPECT_NEAR(mean, 0.5, 0.005);  // sd of the mean ~0.00065
  EXPECT_NEAR(sum_squares / kDraws - mean * mean, 1.0 / 12, 0.002);
}

TEST(RngTest, NormalMoments) {
  Rng rng(Seed(5));
  constexpr int kDraws = 200000;
  double sum = 0, sum_squares = 0, sum_fourth = 0;
  int inside = 0;
  for (int i = 0; i < kDraws; ++i) {
    double x = rng.Normal();
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum_squares += x * x;
    sum_fourth += x * x * x * x;
    inside += std::abs(x) < 1.959964;
  }
  EXPECT_NEAR(sum / kDraws, 0.0, 0.01);  // sd of the mean ~0.0022
  EXPECT_NEAR(sum_squares / kDraws, 1.0, 0.02);
  EXPECT_NEAR(sum_fourth / kDraws, 3.0, 0.1);  // kurtosis of N(0, 1)
  EXPECT_NEAR(static_cast<double>(inside) / kDraws, 0.95, 0.003);
}

}  // namespace
}  // namespace mlcapsule::defense
