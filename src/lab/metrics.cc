// Membership-inference metrics (see metrics.h). The ROC curve is built once by a sort over all
// scores; every other curve metric reads that curve, so the tie handling lives in one place.
#include "lab/metrics.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>

namespace mlcapsule::lab {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

// NaN counts as the lowest score. Mapping it to -inf (rather than ordering it below -inf) keeps
// "score >= threshold" meaningful for every threshold the curve reports: a NaN score is called
// member exactly when everything is.
double Normalize(double score) { return std::isnan(score) ? -kInfinity : score; }

struct Scored {
  double score;
  bool member;
};

}  // namespace

RocCurve Roc(std::span<const double> member_scores, std::span<const double> nonmember_scores) {
  // Empty sets are a caller bug (rates are undefined). Release builds get the chance diagonal
  // rather than NaN rates, so a report still renders.
  assert(!member_scores.empty() && !nonmember_scores.empty());
  if (member_scores.empty() || nonmember_scores.empty()) {
    return RocCurve{{0, 1}, {0, 1}, {kInfinity, -kInfinity}};
  }

  std::vector<Scored> all;
  all.reserve(member_scores.size() + nonmember_scores.size());
  for (double s : member_scores) all.push_back({Normalize(s), true});
  for (double s : nonmember_scores) all.push_back({Normalize(s), false});
  std::sort(all.begin(), all.end(),
            [](const Scored& a, const Scored& b) { return a.score > b.score; });

  const double positives = static_cast<double>(member_scores.size());
  const double negatives = static_cast<double>(nonmember_scores.size());
  RocCurve roc;
  // The first point calls nothing a member; +inf stands for "above every score".
  roc.fpr.push_back(0);
  roc.tpr.push_back(0);
  roc.threshold.push_back(kInfinity);
  size_t true_positives = 0, false_positives = 0;
  for (size_t i = 0; i < all.size();) {
    // A tie group moves both rates in one step: no threshold can split tied scores, so a
    // staircase through them would report points no attacker can reach.
    const double score = all[i].score;
    for (; i < all.size() && all[i].score == score; ++i) {
      (all[i].member ? true_positives : false_positives) += 1;
    }
    roc.fpr.push_back(static_cast<double>(false_positives) / negatives);
    roc.tpr.push_back(static_cast<double>(true_positives) / positives);
    roc.threshold.push_back(score);
  }
  return roc;
}

double Auc(const RocCurve& roc) {
  double area = 0;
  for (size_t i = 1; i < roc.fpr.size(); ++i) {
    area += (roc.fpr[i] - roc.fpr[i - 1]) * (roc.tpr[i] + roc.tpr[i - 1]) / 2;
  }
  return area;
}

double TprAtFpr(const RocCurve& roc, double fpr) {
  double best = 0;
  for (size_t i = 0; i < roc.fpr.size(); ++i) {
    if (roc.fpr[i] <= fpr) best = std::max(best, roc.tpr[i]);
  }
  return best;
}

double BestBalancedAccuracy(const RocCurve& roc) {
  double best = 0;
  for (size_t i = 0; i < roc.fpr.size(); ++i) {
    best = std::max(best, (roc.tpr[i] + 1 - roc.fpr[i]) / 2);
  }
  return best;
}

double BalancedAccuracyAt(std::span<const double> member_scores,
                          std::span<const double> nonmember_scores, double threshold) {
  assert(!member_scores.empty() && !nonmember_scores.empty());
  if (member_scores.empty() || nonmember_scores.empty()) return 0.5;
  size_t true_positives = 0, true_negatives = 0;
  for (double s : member_scores) true_positives += Normalize(s) >= threshold;
  for (double s : nonmember_scores) true_negatives += !(Normalize(s) >= threshold);
  const double tpr =
      static_cast<double>(true_positives) / static_cast<double>(member_scores.size());
  const double tnr =
      static_cast<double>(true_negatives) / static_cast<double>(nonmember_scores.size());
  return (tpr + tnr) / 2;
}

double BestThreshold(std::span<const double> member_scores,
                     std::span<const double> nonmember_scores) {
  const RocCurve roc = Roc(member_scores, nonmember_scores);
  // Strictly greater keeps the first (highest, most conservative) threshold among equals.
  size_t best = 0;
  double best_accuracy = -1;
  for (size_t i = 0; i < roc.fpr.size(); ++i) {
    const double accuracy = (roc.tpr[i] + 1 - roc.fpr[i]) / 2;
    if (accuracy > best_accuracy) {
      best_accuracy = accuracy;
      best = i;
    }
  }
  return roc.threshold[best];
}

}  // namespace mlcapsule::lab
