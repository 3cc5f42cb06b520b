// Shapiro-Wilk W test (see shapiro_wilk.h): Royston's coefficient and p-value approximations,
// written from the published formulas.
#include "defense/shapiro_wilk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

namespace mlcapsule::defense {
namespace {

// p(x) = c[0] + c[1] x + ... + c[N-1] x^(N-1), Horner.
template <size_t N>
double Polynomial(const double (&c)[N], double x) {
  double result = c[N - 1];
  for (size_t i = N - 1; i-- > 0;) result = result * x + c[i];
  return result;
}

// Royston (1992), corrections of the two largest coefficients, in powers of u = 1/sqrt(n).
constexpr double kLargestCorrection[6] = {0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056};
constexpr double kSecondCorrection[6] = {0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633};
// Royston (1992), the normalising transformation of log(1 - W). Small samples (4..11), in n:
constexpr double kSmallGamma[2] = {-2.273, 0.459};
constexpr double kSmallMean[4] = {0.5440, -0.39978, 0.025054, -6.714e-4};
constexpr double kSmallLogSd[4] = {1.3822, -0.77857, 0.062767, -0.0020322};
// Large samples (12..5000), in log(n):
constexpr double kLargeMean[4] = {-1.5861, -0.31082, -0.083751, 0.0038915};
constexpr double kLargeLogSd[3] = {-0.4803, -0.082676, 0.0030302};

// The positive coefficients a[i] weighting x_(n-i) - x_(i+1), i < n/2 (the full vector is
// antisymmetric; the middle one of an odd sample is 0).
std::vector<double> ComputeCoefficients(size_t n) {
  std::vector<double> a(n / 2);
  if (n == 3) {
    a[0] = std::sqrt(0.5);
    return a;
  }
  const double count = static_cast<double>(n);
  // m[i]: the approximate expected normal order statistic of x_(n-i), positive.
  std::vector<double> m(n / 2);
  double sum_squares = 0;  // m'm over the whole antisymmetric vector
  for (size_t i = 0; i < n / 2; ++i) {
    m[i] = -NormalQuantile((static_cast<double>(i + 1) - 0.375) / (count + 0.25));
    sum_squares += 2 * m[i] * m[i];
  }
  const double norm = std::sqrt(sum_squares);
  const double u = 1.0 / std::sqrt(count);
  const double largest = m[0] / norm + Polynomial(kLargestCorrection, u);
  double phi;
  size_t first_plain;
  if (n > 5) {
    const double second = m[1] / norm + Polynomial(kSecondCorrection, u);
    phi = (sum_squares - 2 * m[0] * m[0] - 2 * m[1] * m[1]) /
          (1 - 2 * largest * largest - 2 * second * second);
    a[1] = second;
    first_plain = 2;
  } else {
    phi = (sum_squares - 2 * m[0] * m[0]) / (1 - 2 * largest * largest);
    first_plain = 1;
  }
  a[0] = largest;
  const double scale = 1.0 / std::sqrt(phi);
  for (size_t i = first_plain; i < n / 2; ++i) a[i] = m[i] * scale;
  return a;
}

Status CheckSize(size_t n) {
  if (n < kShapiroWilkMinSize || n > kShapiroWilkMaxSize)
    return InvalidArgument("Shapiro-Wilk sample size {} is outside [{}, {}]", n,
                           kShapiroWilkMinSize, kShapiroWilkMaxSize);
  return Status::Ok();
}

Result<ShapiroWilkResult> WAndP(std::span<const double> x, std::span<const double> a) {
  const size_t n = x.size();
  // Scale by the largest magnitude first so that neither the range nor the sums can overflow.
  double largest = 0;
  for (double v : x) largest = std::max(largest, std::fabs(v));
  const double range = x[n - 1] / largest - x[0] / largest;
  if (!(range > 0)) return InvalidArgument("Shapiro-Wilk sample has range zero (all values equal)");
  // Every value is used as (v / largest) / range, within [-1, 1] / range: no overflow, and no
  // subnormal intermediate (1 / largest would be one for largest > 2^1022).
  auto scaled = [largest, range](double v) { return v / largest / range; };

  double mean = 0;
  for (double v : x) mean += scaled(v);
  mean /= static_cast<double>(n);
  double sum_squares = 0;
  for (double v : x) {
    const double c = scaled(v) - mean;
    sum_squares += c * c;
  }
  double weighted = 0, a_squares = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    weighted += a[i] * (scaled(x[n - 1 - i]) - scaled(x[i]));
    a_squares += 2 * a[i] * a[i];
  }
  // 1 - W = 1 - weighted^2 / (a_squares * sum_squares), written as a product of two factors so
  // that W close to 1 keeps its low digits (Royston 1995).
  const double root = std::sqrt(a_squares * sum_squares);
  double one_minus_w = (root - weighted) * (root + weighted) / (a_squares * sum_squares);
  one_minus_w = std::clamp(one_minus_w, 0.0, 1.0);
  ShapiroWilkResult result;
  result.w = 1.0 - one_minus_w;

  if (n == 3) {
    // Exact: W is distributed as sin^2 of a uniform angle on [pi/3, pi/2].
    const double p =
        6.0 / std::numbers::pi * (std::asin(std::sqrt(result.w)) - std::asin(std::sqrt(0.75)));
    result.p = std::clamp(p, 0.0, 1.0);
    return result;
  }
  double y = std::log(one_minus_w);  // -inf when W == 1: p = 1 below
  double mean_y, sd_y;
  const double count = static_cast<double>(n);
  if (n <= 11) {
    const double gamma = Polynomial(kSmallGamma, count);
    if (y >= gamma) {  // beyond the support of the transformation: W is as small as it gets
      result.p = 0;
      return result;
    }
    y = -std::log(gamma - y);
    mean_y = Polynomial(kSmallMean, count);
    sd_y = std::exp(Polynomial(kSmallLogSd, count));
  } else {
    const double log_n = std::log(count);
    mean_y = Polynomial(kLargeMean, log_n);
    sd_y = std::exp(Polynomial(kLargeLogSd, log_n));
  }
  result.p = NormalUpperTail((y - mean_y) / sd_y);
  return result;
}

}  // namespace

double NormalQuantile(double p) {
  if (std::isnan(p) || p < 0 || p > 1) return std::numeric_limits<double>::quiet_NaN();
  if (p == 0) return -std::numeric_limits<double>::infinity();
  if (p == 1) return std::numeric_limits<double>::infinity();
  // Three rational approximations of degree 7/7, as in Wichura's AS 241 (PPND16): a central one
  // in r = 0.180625 - q^2, and two tail ones in r = sqrt(-log(min(p, 1 - p))).
  static constexpr double kCentralNumerator[8] = {3.3871328727963666080e0, 1.3314166789178437745e2,
                                                  1.9715909503065514427e3, 1.3731693765509461125e4,
                                                  4.5921953931549871457e4, 6.7265770927008700853e4,
                                                  3.3430575583588128105e4, 2.5090809287301226727e3};
  static constexpr double kCentralDenominator[8] = {1.0,
                                                    4.2313330701600911252e1,
                                                    6.8718700749205790830e2,
                                                    5.3941960214247511077e3,
                                                    2.1213794301586595867e4,
                                                    3.9307895800092710610e4,
                                                    2.8729085735721942674e4,
                                                    5.2264952788528545610e3};
  static constexpr double kNearNumerator[8] = {
      1.42343711074968357734e0,  4.63033784615654529590e0, 5.76949722146069140550e0,
      3.64784832476320460504e0,  1.27045825245236838258e0, 2.41780725177450611770e-1,
      2.27238449892691845833e-2, 7.74545014278341407640e-4};
  static constexpr double kNearDenominator[8] = {1.0,
                                                 2.05319162663775882187e0,
                                                 1.67638483018380384940e0,
                                                 6.89767334985100004550e-1,
                                                 1.48103976427480074590e-1,
                                                 1.51986665636164571966e-2,
                                                 5.47593808499534494600e-4,
                                                 1.05075007164441684324e-9};
  static constexpr double kFarNumerator[8] = {6.65790464350110377720e0,  5.46378491116411436990e0,
                                              1.78482653991729133580e0,  2.96560571828504891230e-1,
                                              2.65321895265761230930e-2, 1.24266094738807843860e-3,
                                              2.71155556874348757815e-5, 2.01033439929228813265e-7};
  static constexpr double kFarDenominator[8] = {1.0,
                                                5.99832206555887937690e-1,
                                                1.36929880922735805310e-1,
                                                1.48753612908506148525e-2,
                                                7.86869131145613259100e-4,
                                                1.84631831751005468180e-5,
                                                1.42151175831644588870e-7,
                                                2.04426310338993978564e-15};
  const double q = p - 0.5;
  if (std::fabs(q) <= 0.425) {
    const double r = 0.180625 - q * q;
    return q * Polynomial(kCentralNumerator, r) / Polynomial(kCentralDenominator, r);
  }
  double r = std::sqrt(-std::log(q < 0 ? p : 1 - p));
  double value;
  if (r <= 5) {
    r -= 1.6;
    value = Polynomial(kNearNumerator, r) / Polynomial(kNearDenominator, r);
  } else {
    r -= 5;
    value = Polynomial(kFarNumerator, r) / Polynomial(kFarDenominator, r);
  }
  return q < 0 ? -value : value;
}

double NormalUpperTail(double z) { return 0.5 * std::erfc(z / std::numbers::sqrt2); }

Result<ShapiroWilkResult> ShapiroWilk(std::span<const double> x) {
  MLC_RETURN_IF_ERROR(CheckSize(x.size()));
  std::vector<double> sorted(x.begin(), x.end());
  ShapiroWilkTester tester;
  return tester.Test(sorted);
}

Result<ShapiroWilkResult> ShapiroWilkTester::Test(std::span<double> values) {
  MLC_RETURN_IF_ERROR(CheckSize(values.size()));
  for (double v : values)
    if (!std::isfinite(v)) return InvalidArgument("Shapiro-Wilk sample has a value {}", v);
  std::sort(values.begin(), values.end());
  return TestSorted(values);
}

Result<ShapiroWilkResult> ShapiroWilkTester::TestSorted(std::span<const double> sorted) {
  MLC_RETURN_IF_ERROR(CheckSize(sorted.size()));
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (!std::isfinite(sorted[i]))
      return InvalidArgument("Shapiro-Wilk sample has a value {}", sorted[i]);
    if (i > 0 && sorted[i] < sorted[i - 1])
      return InvalidArgument("Shapiro-Wilk sample is not sorted at index {}", i);
  }
  return WAndP(sorted, CoefficientsFor(sorted.size()).a);
}

const ShapiroWilkTester::Coefficients& ShapiroWilkTester::CoefficientsFor(size_t n) {
  ++clock_;
  Coefficients* victim = &cache_[0];
  for (Coefficients& entry : cache_) {
    if (entry.n == n) {
      entry.last_used = clock_;
      return entry;
    }
    if (entry.last_used < victim->last_used) victim = &entry;
  }
  victim->n = n;
  victim->a = ComputeCoefficients(n);
  victim->last_used = clock_;
  return *victim;
}

}  // namespace mlcapsule::defense
