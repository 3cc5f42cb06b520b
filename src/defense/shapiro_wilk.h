// The Shapiro-Wilk W test of normality, our own implementation of Royston's algorithm (Algorithm
// AS R94: Royston, Applied Statistics 44 (1995) 547-551, building on Royston 1992 "Approximating
// the Shapiro-Wilk W-test for non-normality", Statistics and Computing 2, 117-119). Valid for
// 3 <= n <= 5000, the range in which Royston's approximations were fitted. PRADA
// (defense/prada.h) runs it on its pooled distance history; it trusts nothing about the values it
// is given (it checks n, finiteness and a non-zero range).
//
//   MLC_ASSIGN_OR_RETURN(ShapiroWilkResult r, ShapiroWilk(values));   // any order
//   if (r.w < 0.9) ...                                                // r.p: the p-value
//
//   ShapiroWilkTester tester;                 // keeps coefficients of recently used sample sizes
//   Result<ShapiroWilkResult> r = tester.TestSorted(sorted_values);   // no copy, no sort
//
// What is computed (Royston 1992/1995):
//   - coefficients: m_i = Phi^-1((i - 3/8) / (n + 1/4)); the two largest a_n, a_{n-1} are
//     m/|m| plus Royston's polynomials in 1/sqrt(n) (a_{n-1} corrected only for n > 5), the rest
//     m_i/sqrt(phi) so that sum a_i^2 = 1; for n = 3 a = (-1/sqrt2, 0, 1/sqrt2) exactly.
//   - W: the squared correlation between the sorted sample and a, computed as 1 - W without
//     cancellation so that W near 1 keeps its digits in large samples.
//   - p: exact for n = 3 (p = 6/pi (asin(sqrt W) - asin(sqrt 3/4))); otherwise the upper normal
//     tail of a normalising transformation of log(1 - W): for 4 <= n <= 11,
//     -log(gamma - log(1 - W)) with gamma = -2.273 + 0.459 n (p = 0 beyond gamma), for
//     12 <= n <= 5000 log(1 - W) itself, each with Royston's mean and log-sd polynomials.
// The inverse normal CDF is our own double-precision rational approximation of the AS 241
// (PPND16) kind, relative error about 1e-16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"

namespace mlcapsule::defense {

inline constexpr size_t kShapiroWilkMinSize = 3;
inline constexpr size_t kShapiroWilkMaxSize = 5000;

struct ShapiroWilkResult {
  double w = 0;  // in (0, 1]; small means far from normal
  double p = 0;  // the p-value of the null hypothesis "the sample is normal"
};

// Errors (InvalidArgument): n outside [3, 5000], a NaN or infinite value, or all values equal
// (the range is zero, W is undefined). `x` need not be sorted; it is copied.
Result<ShapiroWilkResult> ShapiroWilk(std::span<const double> x);

// A reusable tester: caches the coefficients of the few sample sizes used most recently, so a
// caller that tests samples of the same (or nearly the same) size repeatedly pays for the n/2
// inverse-normal evaluations once. Not thread-safe.
class ShapiroWilkTester {
 public:
  // Sorts `values` in place, then as TestSorted.
  Result<ShapiroWilkResult> Test(std::span<double> values);
  // `sorted` must be in ascending order (checked, InvalidArgument otherwise).
  Result<ShapiroWilkResult> TestSorted(std::span<const double> sorted);

 private:
  struct Coefficients {
    size_t n = 0;
    std::vector<double> a;  // a[i] for i < n/2: the weight of x_(n-i) - x_(i+1), positive
    uint64_t last_used = 0;
  };
  const Coefficients& CoefficientsFor(size_t n);

  static constexpr size_t kCachedSizes = 4;
  Coefficients cache_[kCachedSizes];
  uint64_t clock_ = 0;
};

// The standard normal quantile Phi^-1(p) for p in (0, 1); -inf at 0, +inf at 1, NaN outside.
double NormalQuantile(double p);
// The standard normal upper tail 1 - Phi(z), accurate in the far tail (no 1 - Phi cancellation).
double NormalUpperTail(double z);

}  // namespace mlcapsule::defense
