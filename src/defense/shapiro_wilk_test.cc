// Shapiro-Wilk against published reference values, exact small-sample identities and the
// properties the test must have (invariances, bounds, errors, power on clearly non-normal data).
//
// Where the reference values come from (all are outputs of R's shapiro.test, which implements the
// same AS R94 algorithm, or of SciPy's Fortran AS R94 code; each printed with 4-5 significant
// digits, so we compare to within half a unit of the last printed digit, never looser than 1e-4):
//   [mtcars]  R datasets::mtcars (Henderson & Velleman 1981), columns mpg and wt, n = 32.
//             mpg: W = 0.94756, p = 0.1229; wt: W = 0.94326, p = 0.09265. Printed in STHDA's
//             "Correlation Test Between Two Variables in R" and in RPubs 222982
//             (rstudio-pubs-static .../222982_d47a487411fb45b5b0634f391abcda0c.html, wt).
//   [tooth]   R datasets::ToothGrowth$len (Crampton 1947), n = 60: W = 0.96743, p = 0.1091
//             (r-stats-lightbridge.netlify.app/stats/normality-test.html, STHDA "Normality Test
//             in R"); its supp == "OJ" half, n = 30: W = 0.91784, p = 0.02359.
//   [sleep]   R datasets::sleep$extra (Cushny & Peebles 1905, Student 1908), n = 10 per group:
//             group 1 W = 0.92581, p = 0.4079; group 2 W = 0.9193, p = 0.3511 (R output in a
//             public R tutorial script). These exercise the small-sample (4..11) p-value branch.
//   [ties]    d = (0 0 20 15 9 40 0 0 0 18 0 23 8 0 0 12 0 7 0 17), n = 20, nine tied zeros:
//             W = 0.78822, p = 0.0005795 (same R script as [sleep]).
//   [scipy]   SciPy's scipy/stats/tests/test_morestats.py, TestShapiro.test_basic: x1 (n = 20)
//             W = 0.90047299861907959, p = 0.042089745402336121 (SciPy computes in single
//             precision, so only ~6 digits are meaningful); x2 (n = 20) W = 0.9590270,
//             p = 0.52460; x4 (n = 25, "extracted from original paper") W = 0.83467,
//             p = 0.000914 (SciPy asserts this p to 5 decimals; we get 0.00091349, so 1e-6).
//   [1965]    Shapiro & Wilk (1965), Biometrika 52, 591-611, worked example, the weights of 11
//             men: W = 0.79 (two places only; checked to 0.005).
// n = 3 is additionally checked against the exact closed forms: a = (-1/sqrt2, 0, 1/sqrt2), so
// W = (x3 - x1)^2 / (2 SS), and p = 6/pi (asin(sqrt W) - asin(sqrt 3/4)).
#include "defense/shapiro_wilk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace mlcapsule::defense {
namespace {

struct Reference {
  const char* name;
  std::vector<double> sample;
  double w, w_tolerance;
  double p, p_tolerance;
};

// Tolerances: half a unit in the last printed digit (rounding), capped at 1e-4.
std::vector<Reference> References() {
  const std::vector<double> mpg = {21.0, 21.0, 22.8, 21.4, 18.7, 18.1, 14.3, 24.4, 22.8, 19.2, 17.8,
                                   16.4, 17.3, 15.2, 10.4, 10.4, 14.7, 32.4, 30.4, 33.9, 21.5, 15.5,
                                   15.2, 13.3, 19.2, 27.3, 26.0, 30.4, 15.8, 19.7, 15.0, 21.4};
  const std::vector<double> wt = {2.620, 2.875, 2.320, 3.215, 3.440, 3.460, 3.570, 3.190,
                                  3.150, 3.440, 3.440, 4.070, 3.730, 3.780, 5.250, 5.424,
                                  5.345, 2.200, 1.615, 1.835, 2.465, 3.520, 3.435, 3.840,
                                  3.845, 1.935, 2.140, 1.513, 3.170, 2.770, 3.570, 2.780};
  const std::vector<double> tooth_vc = {4.2,  11.5, 7.3,  5.8,  6.4,  10,   11.2, 11.2, 5.2,  7,
                                        16.5, 16.5, 15.2, 17.3, 22.5, 17.3, 13.6, 14.5, 18.8, 15.5,
                                        23.6, 18.5, 33.9, 25.5, 26.4, 32.5, 26.7, 21.5, 23.3, 29.5};
  const std::vector<double> tooth_oj = {15.2, 21.5, 17.6, 9.7,  14.5, 10,   8.2,  9.4,  16.5, 9.7,
                                        19.7, 23.3, 23.6, 26.4, 20,   25.2, 25.8, 21.2, 14.5, 27.3,
                                        25.5, 26.4, 22.4, 24.5, 24.8, 30.9, 26.4, 27.3, 29.4, 23};
  std::vector<double> tooth = tooth_vc;
  tooth.insert(tooth.end(), tooth_oj.begin(), tooth_oj.end());
  return {
      {"mtcars mpg", mpg, 0.94756, 5e-6, 0.1229, 5e-5},
      {"mtcars wt", wt, 0.94326, 5e-6, 0.09265, 5e-6},
      {"ToothGrowth len", tooth, 0.96743, 5e-6, 0.1091, 5e-5},
      {"ToothGrowth OJ", tooth_oj, 0.91784, 5e-6, 0.02359, 5e-6},
      {"sleep group 1",
       {0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0},
       0.92581,
       5e-6,
       0.4079,
       5e-5},
      {"sleep group 2",
       {1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4},
       0.9193,
       5e-5,
       0.3511,
       5e-5},
      {"ties",
       {0, 0, 20, 15, 9, 40, 0, 0, 0, 18, 0, 23, 8, 0, 0, 12, 0, 7, 0, 17},
       0.78822,
       5e-6,
       0.0005795,
       5e-8},
      {"scipy x1",
       {0.11, 7.87, 4.61, 10.14, 7.95, 3.14, 0.46, 4.43, 0.21, 4.75,
        0.71, 1.52, 3.24, 0.93,  0.42, 4.97, 9.53, 4.55, 0.47, 6.66},
       0.90047299861907959,
       1e-6,
       0.042089745402336121,
       1e-6},
      {"scipy x2",
       {1.36, 1.14,  2.92, 2.55, 1.46, 1.06, 5.27, -1.11, 3.48, 1.10,
        0.88, -0.51, 1.46, 0.52, 6.20, 1.69, 0.08, 3.67,  2.81, 3.49},
       0.9590270,
       1e-6,
       0.52460,
       5e-6},
      {"scipy x4 (Royston)",
       {0.139, 0.157, 0.175, 0.256, 0.344, 0.413, 0.503, 0.577, 0.614, 0.655, 0.954, 1.392, 1.557,
        1.648, 1.690, 1.994, 2.174, 2.206, 3.245, 3.510, 3.571, 4.354, 4.980, 6.084, 8.351},
       0.83467,
       5e-6,
       0.000914,
       1e-6},
  };
}

TEST(ShapiroWilkTest, MatchesPublishedReferenceValues) {
  for (const Reference& reference : References()) {
    SCOPED_TRACE(reference.name);
    Result<ShapiroWilkResult> result = ShapiroWilk(reference.sample);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_NEAR(result->w, reference.w, reference.w_tolerance);
    EXPECT_NEAR(result->p, reference.p, reference.p_tolerance);
  }
}

TEST(ShapiroWilkTest, ShapiroWilk1965WorkedExample) {
  const std::vector<double> weights = {148, 154, 158, 160, 161, 162, 166, 170, 182, 195, 236};
  Result<ShapiroWilkResult> result = ShapiroWilk(weights);
  ASSERT_TRUE(result.ok());
  EXPECT_NEAR(result->w, 0.79, 0.005);
  EXPECT_LT(result->p, 0.01);  // the paper: significant at the 1% level
}

TEST(ShapiroWilkTest, SizeThreeIsExact) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> uniform(-10, 10);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> x = {uniform(rng), uniform(rng), uniform(rng)};
    std::vector<double> sorted = x;
    std::sort(sorted.begin(), sorted.end());
    const double mean = (x[0] + x[1] + x[2]) / 3;
    double ss = 0;
    for (double v : x) ss += (v - mean) * (v - mean);
    const double w = (sorted[2] - sorted[0]) * (sorted[2] - sorted[0]) / (2 * ss);
    const double p = 6 / std::numbers::pi * (std::asin(std::sqrt(w)) - std::asin(std::sqrt(0.75)));
    Result<ShapiroWilkResult> result = ShapiroWilk(x);
    ASSERT_TRUE(result.ok());
    EXPECT_NEAR(result->w, w, 1e-12);
    EXPECT_NEAR(result->p, std::max(p, 0.0), 1e-9);
  }
  // Evenly spaced: the least normal-looking three points there are not; W = 1, p = 1.
  Result<ShapiroWilkResult> even = ShapiroWilk(std::vector<double>{1, 2, 3});
  ASSERT_TRUE(even.ok());
  EXPECT_NEAR(even->w, 1.0, 1e-12);
  EXPECT_NEAR(even->p, 1.0, 1e-9);
  // Two equal and one apart: W = 3/4, its minimum, p = 0.
  Result<ShapiroWilkResult> lopsided = ShapiroWilk(std::vector<double>{5, 5, 9});
  ASSERT_TRUE(lopsided.ok());
  EXPECT_NEAR(lopsided->w, 0.75, 1e-12);
  EXPECT_NEAR(lopsided->p, 0.0, 1e-7);
}

TEST(ShapiroWilkTest, InvariantToOrderShiftAndScale) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0, 1);
  for (size_t n : {4, 5, 6, 11, 12, 50, 777}) {
    std::vector<double> x(n);
    for (double& v : x) v = normal(rng);
    Result<ShapiroWilkResult> base = ShapiroWilk(x);
    ASSERT_TRUE(base.ok());
    std::vector<double> shuffled = x;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    std::vector<double> affine = x;
    for (double& v : affine) v = 1e6 + 123.5 * v;
    std::vector<double> tiny = x;
    for (double& v : tiny) v = -1e-200 * v;  // a negative scale mirrors the sample: same W
    for (const auto* other : {&shuffled, &affine, &tiny}) {
      Result<ShapiroWilkResult> result = ShapiroWilk(*other);
      ASSERT_TRUE(result.ok());
      EXPECT_NEAR(result->w, base->w, 1e-9) << n;
      EXPECT_NEAR(result->p, base->p, 1e-7) << n;
    }
  }
}

TEST(ShapiroWilkTest, RejectsBadSamples) {
  EXPECT_FALSE(ShapiroWilk(std::vector<double>{}).ok());
  EXPECT_FALSE(ShapiroWilk(std::vector<double>{1, 2}).ok());
  EXPECT_TRUE(ShapiroWilk(std::vector<double>(5000, 0.0)).status().code() ==
              StatusCode::kInvalidArgument);  // range zero
  std::vector<double> big(5001);
  for (size_t i = 0; i < big.size(); ++i) big[i] = std::sin(static_cast<double>(i));
  EXPECT_FALSE(ShapiroWilk(big).ok());
  big.pop_back();
  EXPECT_TRUE(ShapiroWilk(big).ok());
  EXPECT_FALSE(ShapiroWilk(std::vector<double>{1, 2, std::nan("")}).ok());
  EXPECT_FALSE(
      ShapiroWilk(std::vector<double>{1, 2, std::numeric_limits<double>::infinity()}).ok());
  EXPECT_FALSE(ShapiroWilk(std::vector<double>{7, 7, 7}).ok());
  // Extreme but finite magnitudes do not overflow.
  Result<ShapiroWilkResult> huge = ShapiroWilk(std::vector<double>{-1e308, 0, 1e308, 5e307});
  ASSERT_TRUE(huge.ok());
  EXPECT_GT(huge->w, 0);
  EXPECT_LE(huge->w, 1);
}

TEST(ShapiroWilkTest, TesterSortsAndChecksOrder) {
  ShapiroWilkTester tester;
  std::vector<double> values = {3, 1, 2, 10};
  Result<ShapiroWilkResult> sorted_first = tester.Test(values);
  ASSERT_TRUE(sorted_first.ok());
  EXPECT_TRUE(std::is_sorted(values.begin(), values.end()));
  std::vector<double> unsorted = {3, 1, 2, 10};
  EXPECT_FALSE(tester.TestSorted(unsorted).ok());
  // The cache returns the same coefficients as a fresh computation, across many sizes.
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(0, 1);
  for (int round = 0; round < 3; ++round) {
    for (size_t n : {20, 21, 22, 23, 24, 20, 3, 4000}) {
      std::vector<double> x(n);
      for (double& v : x) v = normal(rng);
      std::vector<double> copy = x;
      Result<ShapiroWilkResult> cached = tester.Test(copy);
      Result<ShapiroWilkResult> fresh = ShapiroWilk(x);
      ASSERT_TRUE(cached.ok() && fresh.ok());
      EXPECT_EQ(cached->w, fresh->w);
      EXPECT_EQ(cached->p, fresh->p);
    }
  }
}

TEST(ShapiroWilkTest, NormalSamplesLookNormalOthersDoNot) {
  std::mt19937_64 rng(2024);
  std::normal_distribution<double> normal(5, 3);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::exponential_distribution<double> exponential(1);
  std::vector<double> x(500);
  for (double& v : x) v = normal(rng);
  Result<ShapiroWilkResult> gaussian = ShapiroWilk(x);
  ASSERT_TRUE(gaussian.ok());
  EXPECT_GT(gaussian->w, 0.99);
  EXPECT_GT(gaussian->p, 0.01);
  for (double& v : x) v = uniform(rng);
  Result<ShapiroWilkResult> flat = ShapiroWilk(x);
  ASSERT_TRUE(flat.ok());
  EXPECT_LT(flat->p, 1e-6);
  for (double& v : x) v = exponential(rng);
  Result<ShapiroWilkResult> skewed = ShapiroWilk(x);
  ASSERT_TRUE(skewed.ok());
  EXPECT_LT(skewed->w, 0.9);
  EXPECT_LT(skewed->p, 1e-10);
  // A large normal sample: W very close to 1 keeps its digits (computed as 1 - W).
  std::vector<double> large(5000);
  for (double& v : large) v = normal(rng);
  Result<ShapiroWilkResult> big = ShapiroWilk(large);
  ASSERT_TRUE(big.ok());
  EXPECT_GT(big->w, 0.999);
  EXPECT_LT(big->w, 1.0);
  EXPECT_GT(big->p, 0.001);
}

TEST(ShapiroWilkTest, NormalQuantileInvertsTheTail) {
  // Phi(Phi^-1(p)) = p through std::erfc, an independent implementation; the relative error
  // allowed grows with z^2 because p's sensitivity to z does.
  for (int i = 1; i < 2000; ++i) {
    const double p = i / 2000.0;
    const double z = NormalQuantile(p);
    EXPECT_NEAR(NormalUpperTail(-z), p, 1e-14 * std::max(1.0, z * z)) << p;
  }
  for (int e = 1; e <= 300; ++e) {
    const double p = std::pow(10.0, -e);
    const double z = NormalQuantile(p);
    EXPECT_NEAR(NormalUpperTail(-z) / p, 1.0, 1e-14 * std::max(1.0, z * z)) << p;
  }
  EXPECT_EQ(NormalQuantile(0.5), 0.0);
  EXPECT_TRUE(std::isinf(NormalQuantile(0)) && NormalQuantile(0) < 0);
  EXPECT_TRUE(std::isinf(NormalQuantile(1)) && NormalQuantile(1) > 0);
  EXPECT_TRUE(std::isnan(NormalQuantile(1.5)));
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-15);
}

}  // namespace
}  // namespace mlcapsule::defense
