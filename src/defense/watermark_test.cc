// DAWN watermarking: selection rate within binomial tolerance, determinism, the in-place and the
// byte-span paths agreeing, labels never the true label and uniform over the others, keys
// independent, escrow records round-tripping and every tampered, truncated, oversized or
// wrongly keyed record rejected, and the chance bound against hand-computed values.
#include "defense/watermark.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "base/bytes.h"

namespace mlcapsule::defense {
namespace {

using engine::DType;
using engine::Tensor;
using engine::TensorView;

class WatermarkTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(capsule::InitCrypto().ok()); }
  capsule::SecretBytes NewKey() { return capsule::RandomSecret(kWatermarkKeyBytes); }
};

std::vector<uint8_t> RandomSample(std::mt19937_64& rng, size_t size = 32) {
  std::vector<uint8_t> sample(size);
  for (uint8_t& b : sample) b = static_cast<uint8_t>(rng());
  return sample;
}

// A two-input batch: float32 [batch, 2, 3] and int64 [batch, 4].
struct Batch {
  Tensor images;
  Tensor ids;
  std::vector<TensorView> views;
  explicit Batch(int64_t batch, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<float> floats(static_cast<size_t>(batch) * 6);
    for (float& f : floats) f = std::uniform_real_distribution<float>(-1, 1)(rng);
    std::vector<int64_t> ints(static_cast<size_t>(batch) * 4);
    for (int64_t& v : ints) v = static_cast<int64_t>(rng() % 1000);
    images = Tensor::FromFloats({batch, 2, 3}, floats);
    ids = Tensor::FromInt64s({batch, 4}, ints);
    views = {images.View(), ids.View()};
  }
};

TEST_F(WatermarkTest, SelectionRateIsRateWithinBinomialTolerance) {
  std::mt19937_64 rng(1);
  const capsule::SecretBytes key = NewKey();
  constexpr int kSamples = 100000;
  for (double rate : {0.01, 0.1, 0.5}) {
    int selected = 0;
    for (int i = 0; i < kSamples; ++i) selected += WatermarkSelects(key, rate, RandomSample(rng));
    const double mean = kSamples * rate;
    const double sigma = std::sqrt(kSamples * rate * (1 - rate));
    EXPECT_NEAR(selected, mean, 5 * sigma) << "rate " << rate;
  }
}

TEST_F(WatermarkTest, RateBoundsSelectNothingOrEverything) {
  std::mt19937_64 rng(2);
  const capsule::SecretBytes key = NewKey();
  for (int i = 0; i < 1000; ++i) {
    const std::vector<uint8_t> sample = RandomSample(rng);
    EXPECT_FALSE(WatermarkSelects(key, 0.0, sample));
    EXPECT_FALSE(WatermarkSelects(key, -1.0, sample));
    EXPECT_FALSE(WatermarkSelects(key, std::numeric_limits<double>::quiet_NaN(), sample));
    EXPECT_TRUE(WatermarkSelects(key, 1.0, sample));
    // Monotone in the rate: what 0.1 selects, 0.5 selects too.
    if (WatermarkSelects(key, 0.1, sample)) {
      EXPECT_TRUE(WatermarkSelects(key, 0.5, sample));
    }
  }
}

TEST_F(WatermarkTest, DeterministicAndTheInPlacePathMatchesTheBytes) {
  const capsule::SecretBytes key = NewKey();
  Batch batch(64, 3);
  std::vector<uint8_t> sample;
  int selected = 0;
  for (int64_t row = 0; row < 64; ++row) {
    SampleBytes(batch.views, row, &sample);
    ASSERT_EQ(sample.size(), SampleByteCount(batch.views));
    // dtype, rank, dims, data for each input.
    ASSERT_EQ(sample.size(), (2 + 16 + 24) + (2 + 8 + 32));
    EXPECT_EQ(sample[0], 1);
    EXPECT_EQ(sample[1], 2);
    EXPECT_EQ(std::memcmp(sample.data() + 18, batch.images.Data<float>() + row * 6, 24), 0);
    EXPECT_EQ(sample[42], 7);
    EXPECT_EQ(sample[43], 1);
    EXPECT_EQ(std::memcmp(sample.data() + 52, batch.ids.Data<int64_t>() + row * 4, 32), 0);
    const bool by_bytes = WatermarkSelects(key, 0.5, sample);
    EXPECT_EQ(by_bytes, WatermarkSelects(key, 0.5, batch.views, row));
    EXPECT_EQ(by_bytes, WatermarkSelects(key, 0.5, sample));
    selected += by_bytes;
    for (uint32_t true_label : {0u, 4u, 9u}) {
      const uint32_t label = WatermarkLabel(key, sample, true_label, 10);
      EXPECT_EQ(label, WatermarkLabel(key, batch.views, row, true_label, 10));
      EXPECT_EQ(label, WatermarkLabel(key, sample, true_label, 10));
    }
  }
  EXPECT_GT(selected, 10);
  EXPECT_LT(selected, 54);
  // One changed byte of the row is another sample.
  SampleBytes(batch.views, 0, &sample);
  std::vector<uint8_t> changed = sample;
  int differ = 0;
  for (size_t i = 0; i < changed.size(); ++i) {
    changed[i] ^= 1;
    differ += WatermarkLabel(key, changed, 0, 1000) != WatermarkLabel(key, sample, 0, 1000);
    changed[i] ^= 1;
  }
  EXPECT_GT(differ, static_cast<int>(changed.size()) * 9 / 10);
}

TEST_F(WatermarkTest, LabelIsNeverTheTrueLabelAndUniformOverTheOthers) {
  std::mt19937_64 rng(4);
  const capsule::SecretBytes key = NewKey();
  constexpr uint32_t kClasses = 10;
  constexpr int kSamples = 90000;
  for (uint32_t true_label : {0u, 3u, 9u}) {
    std::vector<int> counts(kClasses, 0);
    for (int i = 0; i < kSamples; ++i) {
      const uint32_t label = WatermarkLabel(key, RandomSample(rng), true_label, kClasses);
      ASSERT_LT(label, kClasses);
      ASSERT_NE(label, true_label);
      ++counts[label];
    }
    // Chi-square with 8 degrees of freedom: 40 is far beyond its 99.999th percentile (~37).
    const double expected = kSamples / double(kClasses - 1);
    double chi2 = 0;
    for (uint32_t c = 0; c < kClasses; ++c)
      if (c != true_label) chi2 += (counts[c] - expected) * (counts[c] - expected) / expected;
    EXPECT_LT(chi2, 40) << "true label " << true_label;
  }
  // Two classes: the only wrong label.
  for (int i = 0; i < 100; ++i) {
    const std::vector<uint8_t> sample = RandomSample(rng);
    EXPECT_EQ(WatermarkLabel(key, sample, 0, 2), 1u);
    EXPECT_EQ(WatermarkLabel(key, sample, 1, 2), 0u);
  }
}

TEST_F(WatermarkTest, DifferentKeysSelectAndLabelDifferently) {
  std::mt19937_64 rng(5);
  const capsule::SecretBytes a = NewKey();
  const capsule::SecretBytes b = NewKey();
  int both = 0, only_a = 0, only_b = 0, same_label = 0;
  constexpr int kSamples = 20000;
  for (int i = 0; i < kSamples; ++i) {
    const std::vector<uint8_t> sample = RandomSample(rng);
    const bool sa = WatermarkSelects(a, 0.5, sample), sb = WatermarkSelects(b, 0.5, sample);
    both += sa && sb;
    only_a += sa && !sb;
    only_b += !sa && sb;
    same_label += WatermarkLabel(a, sample, 0, 10) == WatermarkLabel(b, sample, 0, 10);
  }
  // Independent keys: each combination about a quarter, labels agree about 1/9 of the time.
  EXPECT_NEAR(both, kSamples / 4, 500);
  EXPECT_NEAR(only_a, kSamples / 4, 500);
  EXPECT_NEAR(only_b, kSamples / 4, 500);
  EXPECT_NEAR(same_label, kSamples / 9, 400);
}

// ---- escrow ----

TEST_F(WatermarkTest, EscrowRecordRoundTrip) {
  const capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
  Batch batch(8, 6);
  capsule::CapsuleId id{};
  capsule::RandomBytes(id);
  const EscrowRecord record = EscrowRecordFromRow(id, 12345, 10, 7, batch.views, 5);
  ASSERT_EQ(record.inputs.size(), 2u);
  EXPECT_EQ(record.inputs[0].dims, (engine::Dims{1, 2, 3}));
  EXPECT_EQ(record.inputs[1].dims, (engine::Dims{1, 4}));
  auto sealed = SealEscrowRecord(escrow.public_key, record);
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  EXPECT_EQ(sealed->size(), SealedEscrowRecordBytes(batch.views));
  auto opened = OpenEscrowRecord(escrow, *sealed);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->capsule_id, id);
  EXPECT_EQ(opened->query_count, 12345u);
  EXPECT_EQ(opened->classes, 10u);
  EXPECT_EQ(opened->label, 7u);
  ASSERT_EQ(opened->inputs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(opened->inputs[i].dtype, record.inputs[i].dtype);
    EXPECT_EQ(opened->inputs[i].dims, record.inputs[i].dims);
    EXPECT_EQ(opened->inputs[i].bytes, record.inputs[i].bytes);
  }
  // The record's sample is the row's sample: the verifier de-duplicates what the core hashed.
  std::vector<uint8_t> from_record, from_row;
  EscrowSampleBytes(*opened, &from_record);
  SampleBytes(batch.views, 5, &from_row);
  EXPECT_EQ(from_record, from_row);
  // Sealing is randomized (a fresh ephemeral key each time).
  EXPECT_NE(*SealEscrowRecord(escrow.public_key, record), *sealed);
}

TEST_F(WatermarkTest, TamperedTruncatedOversizedAndWrongKeyRecordsAreRejected) {
  const capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
  Batch batch(2, 7);
  capsule::CapsuleId id{};
  const std::vector<uint8_t> sealed =
      *SealEscrowRecord(escrow.public_key, EscrowRecordFromRow(id, 1, 10, 2, batch.views, 1));
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::vector<uint8_t> changed = sealed;
    changed[i] ^= 0x20;
    EXPECT_FALSE(OpenEscrowRecord(escrow, changed).ok()) << "byte " << i;
  }
  for (size_t n = 0; n < sealed.size(); ++n)
    EXPECT_FALSE(OpenEscrowRecord(escrow, std::span(sealed).first(n)).ok()) << "length " << n;
  std::vector<uint8_t> longer = sealed;
  longer.push_back(0);
  EXPECT_FALSE(OpenEscrowRecord(escrow, longer).ok());
  const std::vector<uint8_t> huge(kMaxSealedEscrowRecordBytes + 1);
  auto oversized = OpenEscrowRecord(escrow, huge);
  ASSERT_FALSE(oversized.ok());
  EXPECT_NE(oversized.status().message().find("over the limit"), std::string::npos);

  const capsule::BoxKeyPair other = capsule::GenerateBoxKeyPair();
  auto wrong = OpenEscrowRecord(other, sealed);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kPermissionDenied);

  // A record too large to escrow, and a key no one holds, are refused when sealing.
  EscrowRecord big = EscrowRecordFromRow(id, 1, 10, 2, batch.views, 0);
  big.inputs[0] = Tensor::Make(DType::kFloat32, {1, 512, 512});
  EXPECT_FALSE(SealEscrowRecord(escrow.public_key, big).ok());
  EXPECT_FALSE(
      SealEscrowRecord(capsule::PublicKey{}, EscrowRecordFromRow(id, 1, 10, 2, batch.views, 0))
          .ok());
}

TEST_F(WatermarkTest, MalformedPlaintextsAreRejectedWithTheirReason) {
  Batch batch(1, 8);
  capsule::CapsuleId id{};
  const EscrowRecord good = EscrowRecordFromRow(id, 1, 10, 2, batch.views, 0);
  ASSERT_TRUE(ParseEscrowRecord(SerializeEscrowRecord(good)).ok());
  auto reason = [](const EscrowRecord& record) {
    return ParseEscrowRecord(SerializeEscrowRecord(record)).status().message();
  };
  EscrowRecord bad = good;
  bad.label = 10;
  EXPECT_NE(reason(bad).find("label 10 is not below classes 10"), std::string::npos);
  bad = good;
  bad.classes = 1;
  bad.label = 0;
  EXPECT_NE(reason(bad).find("classes 1 is below 2"), std::string::npos);
  bad = good;
  bad.inputs[0].dims[0] = 2;
  EXPECT_NE(reason(bad).find("batch dim 2"), std::string::npos);
  bad = good;
  bad.inputs.clear();
  EXPECT_NE(reason(bad).find("no inputs"), std::string::npos);

  std::vector<uint8_t> bytes = SerializeEscrowRecord(good);
  // The first input's dtype sits after magic, version, id, count, classes, label, input count.
  const size_t dtype_at = 8 + 4 + 16 + 8 + 4 + 4 + 2;
  std::vector<uint8_t> edited = bytes;
  edited[dtype_at] = 3;
  EXPECT_NE(ParseEscrowRecord(edited).status().message().find("element type 3"), std::string::npos);
  edited = bytes;
  edited[dtype_at + 1] = 0;
  EXPECT_NE(ParseEscrowRecord(edited).status().message().find("rank 0"), std::string::npos);
  // Dims whose product overflows are an error, never an allocation.
  edited = bytes;
  const uint64_t big = uint64_t{1} << 30;
  std::memcpy(edited.data() + dtype_at + 2 + 8, &big, 8);
  std::memcpy(edited.data() + dtype_at + 2 + 16, &big, 8);
  EXPECT_FALSE(ParseEscrowRecord(edited).ok());
  edited = bytes;
  edited.push_back(0);
  EXPECT_NE(ParseEscrowRecord(edited).status().message().find("trailing"), std::string::npos);
  edited = bytes;
  edited[8] = 2;  // version
  EXPECT_EQ(ParseEscrowRecord(edited).status().code(), StatusCode::kUnsupported);
}

// ---- chance bound ----

double Log2Direct(uint64_t n, uint64_t k, uint32_t classes) {
  // Exact tail for small n in long double: sum_{i >= k} C(n, i) p^i q^(n-i).
  const long double p = 1.0L / (classes - 1), q = 1 - p;
  long double total = 0;
  for (uint64_t i = k; i <= n; ++i) {
    long double choose = 1;
    for (uint64_t j = 1; j <= i; ++j) choose = choose * (n - i + j) / j;
    total += choose * std::pow(p, static_cast<long double>(i)) *
             std::pow(q, static_cast<long double>(n - i));
  }
  return static_cast<double>(std::log2(total));
}

TEST(WatermarkChanceTest, MatchesHandValues) {
  EXPECT_NEAR(Log2ChanceProbability(20, 20, 10), 20 * std::log2(1.0 / 9), 1e-12);
  EXPECT_NEAR(Log2ChanceProbability(1, 1, 10), std::log2(1.0 / 9), 1e-12);
  // P[X >= 1] for n = 2, p = 1/9: 1 - (8/9)^2 = 17/81.
  EXPECT_NEAR(Log2ChanceProbability(2, 1, 10), std::log2(17.0 / 81), 1e-12);
  // n = 3, k = 2, C = 3 (p = 1/2): (3 + 1) / 8.
  EXPECT_NEAR(Log2ChanceProbability(3, 2, 3), std::log2(0.5), 1e-12);
  EXPECT_EQ(Log2ChanceProbability(100, 0, 10), 0.0);
  EXPECT_EQ(Log2ChanceProbability(0, 0, 10), 0.0);
  EXPECT_EQ(Log2ChanceProbability(100, 100, 2), 0.0);  // one wrong label: no evidence
  EXPECT_EQ(Log2ChanceProbability(5, 6, 10), -std::numeric_limits<double>::infinity());
  for (auto [n, k, c] : std::vector<std::tuple<uint64_t, uint64_t, uint32_t>>{
           {50, 10, 10}, {50, 3, 10}, {60, 30, 4}, {40, 40, 1000}, {30, 1, 3}})
    EXPECT_NEAR(Log2ChanceProbability(n, k, c), Log2Direct(n, k, c), 1e-9)
        << n << " " << k << " " << c;
}

TEST(WatermarkChanceTest, LargeNIsAccurateAndMonotone) {
  // At the mean the tail is about one half; far above it the bound is tiny, and more matches
  // always mean a smaller chance.
  const uint64_t n = 1000000;
  const double at_mean = Log2ChanceProbability(n, n / 9, 10);
  EXPECT_GT(at_mean, -1.1);
  EXPECT_LT(at_mean, -0.9);
  EXPECT_NEAR(Log2ChanceProbability(n, 1, 10), 0.0, 1e-12);
  double previous = 0;
  for (uint64_t k : {n / 9 + 1000, n / 9 + 5000, n / 5, n / 2, n}) {
    const double value = Log2ChanceProbability(n, k, 10);
    EXPECT_LT(value, previous) << k;
    EXPECT_TRUE(std::isfinite(value)) << k;
    previous = value;
  }
  EXPECT_NEAR(Log2ChanceProbability(n, n, 10), n * std::log2(1.0 / 9), 1e-6 * n);
  // A normal approximation agrees to first order 5 sigma above the mean.
  const double sigma = std::sqrt(n * (1.0 / 9) * (8.0 / 9));
  const double five_sigma =
      Log2ChanceProbability(n, static_cast<uint64_t>(n / 9.0 + 5 * sigma), 10);
  EXPECT_NEAR(five_sigma, std::log2(2.87e-7), 0.3);
}

}  // namespace
}  // namespace mlcapsule::defense
