// Membership-inference metrics against hand-computed curves and a brute-force Mann-Whitney U: tie
// groups, NaN scores, TPR at a fixed FPR, balanced accuracy and threshold calibration.
#include "lab/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace mlcapsule::lab {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// P(member > nonmember) + P(tie) / 2 over all pairs: the probabilistic meaning of the AUC.
double MannWhitneyAuc(const std::vector<double>& members, const std::vector<double>& nonmembers) {
  double wins = 0;
  for (double m : members) {
    for (double n : nonmembers) wins += m > n ? 1.0 : m == n ? 0.5 : 0.0;
  }
  return wins / (static_cast<double>(members.size()) * static_cast<double>(nonmembers.size()));
}

TEST(RocTest, PerfectSeparationHasAucOne) {
  std::vector<double> members = {0.9, 0.8, 0.7}, nonmembers = {0.3, 0.2};
  RocCurve roc = Roc(members, nonmembers);
  EXPECT_DOUBLE_EQ(Auc(roc), 1.0);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(BestBalancedAccuracy(roc), 1.0);
}

TEST(RocTest, ReversedScoresHaveAucZero) {
  std::vector<double> members = {0.1, 0.2}, nonmembers = {0.5, 0.6, 0.7};
  RocCurve roc = Roc(members, nonmembers);
  EXPECT_DOUBLE_EQ(Auc(roc), 0.0);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.5), 0.0);
}

TEST(RocTest, AllEqualScoresAreOneTieGroupOnTheDiagonal) {
  std::vector<double> members(4, 0.5), nonmembers(7, 0.5);
  RocCurve roc = Roc(members, nonmembers);
  ASSERT_EQ(roc.fpr.size(), 2u);
  EXPECT_EQ(roc.fpr, (std::vector<double>{0, 1}));
  EXPECT_EQ(roc.tpr, (std::vector<double>{0, 1}));
  EXPECT_EQ(roc.threshold, (std::vector<double>{kInfinity, 0.5}));
  EXPECT_DOUBLE_EQ(Auc(roc), 0.5);
  EXPECT_DOUBLE_EQ(BestBalancedAccuracy(roc), 0.5);
}

TEST(RocTest, HandComputedCurveWithTies) {
  // Descending: 0.9 (m) | 0.8 (m, n) | 0.5 (n) | 0.3 (m, n, n).
  std::vector<double> members = {0.9, 0.8, 0.3}, nonmembers = {0.8, 0.5, 0.3, 0.3};
  RocCurve roc = Roc(members, nonmembers);
  EXPECT_EQ(roc.fpr, (std::vector<double>{0, 0, 0.25, 0.5, 1}));
  EXPECT_EQ(roc.tpr, (std::vector<double>{0, 1.0 / 3, 2.0 / 3, 2.0 / 3, 1}));
  EXPECT_EQ(roc.threshold, (std::vector<double>{kInfinity, 0.9, 0.8, 0.5, 0.3}));
  // Trapezoids: 0.25 * (1/3 + 2/3) / 2 + 0.25 * 2/3 + 0.5 * (2/3 + 1) / 2.
  EXPECT_NEAR(Auc(roc), 0.125 + 1.0 / 6 + 5.0 / 12, 1e-12);
  EXPECT_NEAR(Auc(roc), MannWhitneyAuc(members, nonmembers), 1e-12);
}

TEST(RocTest, NanScoresCountAsLowest) {
  std::vector<double> members = {0.9, kNan}, nonmembers = {0.1, -kInfinity};
  RocCurve roc = Roc(members, nonmembers);
  // 0.9 (m) | 0.1 (n) | NaN and -inf tie at the bottom (m, n).
  EXPECT_EQ(roc.fpr, (std::vector<double>{0, 0, 0.5, 1}));
  EXPECT_EQ(roc.tpr, (std::vector<double>{0, 0.5, 0.5, 1}));
  EXPECT_EQ(roc.threshold.back(), -kInfinity);
  EXPECT_DOUBLE_EQ(Auc(roc), 0.75 - 0.125);
}

TEST(RocTest, CurveIsMonotoneFromOriginToOne) {
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  std::vector<double> members(50), nonmembers(80);
  for (double& s : members) s = normal(rng) + 0.5;
  for (double& s : nonmembers) s = normal(rng);
  RocCurve roc = Roc(members, nonmembers);
  ASSERT_EQ(roc.fpr.size(), roc.tpr.size());
  ASSERT_EQ(roc.fpr.size(), roc.threshold.size());
  EXPECT_EQ(roc.fpr.front(), 0);
  EXPECT_EQ(roc.tpr.front(), 0);
  EXPECT_EQ(roc.fpr.back(), 1);
  EXPECT_EQ(roc.tpr.back(), 1);
  for (size_t i = 1; i < roc.fpr.size(); ++i) {
    EXPECT_GE(roc.fpr[i], roc.fpr[i - 1]);
    EXPECT_GE(roc.tpr[i], roc.tpr[i - 1]);
    EXPECT_LT(roc.threshold[i], roc.threshold[i - 1]);
  }
}

TEST(RocTest, AucMatchesBruteForceMannWhitneyWithTies) {
  std::mt19937 rng(42);
  std::normal_distribution<double> normal;
  std::vector<double> members(200), nonmembers(300);
  // Rounding to one decimal makes many ties, inside and across the two sets.
  for (double& s : members) s = std::round((normal(rng) + 0.7) * 10) / 10;
  for (double& s : nonmembers) s = std::round(normal(rng) * 10) / 10;
  RocCurve roc = Roc(members, nonmembers);
  const double auc = Auc(roc);
  EXPECT_NEAR(auc, MannWhitneyAuc(members, nonmembers), 1e-12);
  EXPECT_GT(auc, 0.6);  // a shift of 0.7 sigma
  EXPECT_LT(auc, 0.8);
}

TEST(TprAtFprTest, LargestTprWithFprAtMost) {
  RocCurve roc;
  roc.fpr = {0, 0, 0.001, 0.01, 0.1, 1};
  roc.tpr = {0, 0.05, 0.2, 0.3, 0.6, 1};
  roc.threshold = {kInfinity, 5, 4, 3, 2, 1};
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.0), 0.05);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.0005), 0.05);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.001), 0.2);  // FPR equal to the bound counts
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.05), 0.3);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.999), 0.6);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, -1.0), 0.0);  // no point qualifies
}

TEST(TprAtFprTest, ExactFractionOfNonmembers) {
  // 1000 nonmembers 0..999 and 10 members above all but the top nonmember: one false positive
  // (FPR 0.001) buys every member.
  std::vector<double> nonmembers(1000), members(10, 998.5);
  for (size_t i = 0; i < nonmembers.size(); ++i) nonmembers[i] = static_cast<double>(i);
  RocCurve roc = Roc(members, nonmembers);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(TprAtFpr(roc, 0.001), 1.0);
}

TEST(BalancedAccuracyTest, AtThreshold) {
  std::vector<double> members = {0.9, 0.8, 0.3}, nonmembers = {0.8, 0.5, 0.3, 0.3};
  // >= 0.8: TPR 2/3, TNR 3/4.
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, 0.8), (2.0 / 3 + 0.75) / 2);
  // >= 0.85: TPR 1/3, TNR 1.
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, 0.85), (1.0 / 3 + 1) / 2);
  // Everything or nothing is a member: chance.
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, -kInfinity), 0.5);
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, kInfinity), 0.5);
  EXPECT_DOUBLE_EQ(BestBalancedAccuracy(Roc(members, nonmembers)), (2.0 / 3 + 0.75) / 2);
}

TEST(BalancedAccuracyTest, NanIsCalledMemberOnlyAtMinusInfinity) {
  std::vector<double> members = {kNan}, nonmembers = {0.0};
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, -kInfinity), 0.5);
}

TEST(BestThresholdTest, PicksTheBestPoint) {
  std::vector<double> members = {0.9, 0.8, 0.3}, nonmembers = {0.8, 0.5, 0.3, 0.3};
  EXPECT_EQ(BestThreshold(members, nonmembers), 0.8);
  std::vector<double> separable_members = {5, 6, 7}, separable_nonmembers = {1, 2};
  EXPECT_EQ(BestThreshold(separable_members, separable_nonmembers), 5);
}

TEST(BestThresholdTest, TiesKeepTheFirstPoint) {
  // 0.9 (m) | 0.7 (n) | 0.5 (m) | 0.1 (n): balanced accuracy per point is 0.5, 0.75, 0.5, 0.75,
  // 0.5; the first of the two best (the higher threshold) wins.
  std::vector<double> members = {0.9, 0.5}, nonmembers = {0.7, 0.1};
  EXPECT_EQ(BestThreshold(members, nonmembers), 0.9);
  // All-equal scores: every point is chance; the first one (call nothing a member) is kept.
  std::vector<double> same(3, 1.0);
  EXPECT_EQ(BestThreshold(same, same), kInfinity);
}

TEST(BestThresholdTest, ThresholdReproducesBestBalancedAccuracy) {
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> members(120), nonmembers(90);
  for (double& s : members) s = std::round((normal(rng) + 1.0) * 4) / 4;
  for (double& s : nonmembers) s = std::round(normal(rng) * 4) / 4;
  const double threshold = BestThreshold(members, nonmembers);
  EXPECT_DOUBLE_EQ(BalancedAccuracyAt(members, nonmembers, threshold),
                   BestBalancedAccuracy(Roc(members, nonmembers)));
}

}  // namespace
}  // namespace mlcapsule::lab
