// Membership-inference metrics over attack scores (higher score = "member"): the ROC curve with
// tied scores grouped, its AUC (trapezoid over the full curve), TPR at a fixed FPR (the largest TPR
// whose FPR <= f, as the LiRA reference plots it) and balanced accuracy. No libtorch.
//
//   lab::RocCurve roc = lab::Roc(member_scores, nonmember_scores);
//   double auc = lab::Auc(roc), tpr = lab::TprAtFpr(roc, 0.001);
#pragma once

#include <span>
#include <vector>

namespace mlcapsule::lab {

// Points from (0,0) to (1,1), one per distinct threshold, FPR and TPR both non-decreasing.
struct RocCurve {
  std::vector<double> fpr, tpr;
  std::vector<double> threshold;  // score >= threshold[i] is called member at point i
};
// Both sets must be non-empty; NaN scores count as the lowest score.
RocCurve Roc(std::span<const double> member_scores, std::span<const double> nonmember_scores);
double Auc(const RocCurve& roc);
// The largest TPR among points with FPR <= fpr (0 when none).
double TprAtFpr(const RocCurve& roc, double fpr);
// max over thresholds of (TPR + 1 - FPR) / 2: the "oracle" balanced accuracy.
double BestBalancedAccuracy(const RocCurve& roc);
// (TPR + TNR) / 2 when every score >= threshold is called member.
double BalancedAccuracyAt(std::span<const double> member_scores,
                          std::span<const double> nonmember_scores, double threshold);
// The threshold that maximises balanced accuracy on (members, nonmembers): used to calibrate a
// threshold on a shadow model and apply it to the target.
double BestThreshold(std::span<const double> member_scores,
                     std::span<const double> nonmember_scores);

}  // namespace mlcapsule::lab
