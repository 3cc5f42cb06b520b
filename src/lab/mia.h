// Membership inference against a capsule (libtorch). The targets are the victim's training split
// (members) and its held-out split (non-members), balanced. The attacker queries the capsule for
// each target (and, for the label-only attack, for shifted copies of it) and scores membership:
//   - threshold attacks on the answer: loss, confidence, entropy, modified entropy (Song & Mittal);
//   - the shadow-model attack (Shokri et al.; ML-Leaks adversary 1: an MLP on the sorted top-3);
//   - LiRA (Carlini et al. 2022), online and offline, fixed variance, N shadows on random halves;
//   - a label-only augmentation attack (Choquette-Choo et al. 2021): correctness on translations.
// Shadow models do not depend on the capsule's policy, so they are trained once per victim
// (TrainShadows) and reused for every capsule. This file also trains the defender's membership
// classifier that MemGuard ships inside the capsule.
//
//   MLC_ASSIGN_OR_RETURN(lab::ShadowSet shadows, lab::TrainShadows(config, splits, "mlp"));
//   MLC_ASSIGN_OR_RETURN(auto results, lab::RunMembershipAttacks(config, shadows, splits, *oracle,
//                                                                "mlp/probabilities"));
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "lab/data.h"
#include "lab/metrics.h"
#include "lab/nets.h"
#include "lab/oracle.h"

namespace mlcapsule::lab {

struct MiaConfig {
  ArchSpec victim_arch;       // shadows copy the victim's architecture ...
  TrainOptions victim_train;  // ... and its recipe (seeds differ)
  int lira_shadows = 16;      // models on random halves of victim_train + victim_heldout
  int mlleaks_shadows = 1;    // models on halves of the shadow split
  int label_only_shift = 1;   // d: the 4d+1 translations by up to d pixels along x or y
  uint64_t seed = 1;
};

// What the attacks need from the shadow models, as tensors (so the runner can cache them).
struct ShadowSet {
  // LiRA: [S, T] membership of each target in each shadow's training set (T = members +
  // non-members, members first), and [S, T] the shadow's logit-scaled confidence phi on the
  // target's true label.
  torch::Tensor lira_in;   // bool
  torch::Tensor lira_phi;  // double
  // ML-Leaks: probability vectors of the shadow models on their own members / non-members, and
  // the true labels, [M, C] / [M].
  torch::Tensor shadow_member_probs, shadow_nonmember_probs;
  torch::Tensor shadow_member_labels, shadow_nonmember_labels;
  // Label-only calibration: the per-sample count of correct translations on the shadow's
  // members / non-members (float [M]).
  torch::Tensor shadow_member_correct, shadow_nonmember_correct;
};
// Trains the shadow models (progress on stderr, one line per model) and computes ShadowSet.
Result<ShadowSet> TrainShadows(const MiaConfig& config, const Splits& splits,
                               const std::string& label);
Status SaveShadowSet(const ShadowSet& set, const std::string& path);
Result<ShadowSet> LoadShadowSet(const std::string& path);

struct MiaResult {
  std::string attack;  // "loss", "confidence", "entropy", "mentr", "ml-leaks", "lira-online",
                       // "lira-offline", "label-only"
  double auc = 0;
  double balanced_accuracy_best = 0;         // at the best threshold on the target (oracle)
  double balanced_accuracy_calibrated = -1;  // at a threshold chosen on a shadow; -1 if none
  double tpr_at_1pct = 0, tpr_at_01pct = 0;
  int64_t members = 0, nonmembers = 0;
  int64_t queries = 0;  // capsule queries this attack needed
  RocCurve roc;
};
// Queries `oracle` (the victim's capsule under some policy) for every target and runs every
// attack. Label-only runs on the top-1 of the answers, so it works on any policy.
Result<std::vector<MiaResult>> RunMembershipAttacks(const MiaConfig& config,
                                                    const ShadowSet& shadows, const Splits& splits,
                                                    CapsuleOracle& oracle,
                                                    const std::string& label);

// The MemGuard defender's classifier g: trained on the victim's softmax outputs for victim_train
// (members) and defender_nonmember (non-members), which is disjoint from the evaluation
// non-members. heldout_auc is g's AUC on a held-out fifth of those.
struct DefenderClassifier {
  Net net{nullptr};
  double heldout_auc = 0;
};
Result<DefenderClassifier> TrainDefenderClassifier(Net& victim, const Splits& splits, uint64_t seed,
                                                   const std::string& label);

}  // namespace mlcapsule::lab
