// Model extraction against a capsule: the attacker's query strategies, each spending a query
// budget through a CapsuleOracle and training a substitute on the answers, measured at budget
// checkpoints (substitute accuracy, fidelity to the victim, PRADA's alarm, the DAWN watermark
// verdict on the stolen substitute). docs/lab.md describes each attack and its parameters.
//
//   lab::AttackConfig a{.kind = lab::AttackKind::kRandom, .budgets = {100, 1000, 10000}};
//   MLC_ASSIGN_OR_RETURN(auto points, lab::RunExtraction(a, context));
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "lab/data.h"
#include "lab/nets.h"
#include "lab/oracle.h"

namespace mlcapsule::lab {

enum class AttackKind {
  kRandom,            // Copycat-style: random in-distribution pool images
  kKnockoffRandom,    // Knockoff Nets, random sampling from the out-of-distribution pool
  kKnockoffAdaptive,  // Knockoff Nets, gradient-bandit sampling over the pool's families
  kJbda,              // Papernot et al. 2017: Jacobian-based dataset augmentation
  kFeatureFool,       // CloudLeak: adversarial queries in the substitute's feature space
};
const char* AttackName(AttackKind kind);
Result<AttackKind> ParseAttackKind(const std::string& name);

struct AttackConfig {
  AttackKind kind = AttackKind::kRandom;
  std::vector<int64_t> budgets = {100, 500, 1000, 5000, 10000, 20000};  // increasing checkpoints
  bool soft_labels = true;  // train on probabilities when the capsule returns them
  ArchSpec substitute = CnnB();
  // Snapshot substitutes (fresh at each checkpoint): epochs = clamp(passes / queries, min, max).
  int64_t snapshot_passes = 80000;
  int snapshot_min_epochs = 5, snapshot_max_epochs = 40;
  int64_t sync_every = 1000;  // lease renewals (escrow release) every this many queries
  // Knockoff adaptive
  double bandit_step = 0.1;
  int64_t bandit_batch = 32;      // queries drawn per policy update batch
  int64_t bandit_retrain = 1000;  // working-substitute retrain interval (queries)
  // JbDA
  int64_t jbda_seeds = 150;
  double jbda_lambda = 0.1;
  int jbda_tau = 3;
  int64_t jbda_reservoir = 1600;
  int jbda_epochs = 10;
  int64_t jbda_passes = 40000;  // caps a round's training at this many sample passes
  // FeatureFool
  double ff_epsilon = 0.15, ff_step = 0.02, ff_lambda = 1e-3, ff_alpha = 0.5,
         ff_margin_floor = 0.05;
  int ff_steps = 20;
  int ff_candidates = 2;  // candidates synthesised per query bought
  int64_t ff_passes = 40000;
  uint64_t seed = 1;
};

struct Checkpoint {
  int64_t queries = 0;
  double accuracy = 0;  // substitute on the test split
  double fidelity = 0;  // top-1 agreement with the victim on the test split
  int64_t prada_alarm_at = -1;
  bool watermark_checked = false;
  WatermarkVerdict watermark;
  uint64_t escrowed = 0, escrow_dropped = 0;
  double seconds = 0;  // wall time since the attack began
};

struct AttackContext {
  const Splits* splits = nullptr;
  const ImageSet* ood_pool = nullptr;  // glyphs then transformed Fashion-MNIST (labels = arm)
  int ood_arms = 0;                    // arms in ood_pool's labels
  Net* backbone = nullptr;             // CNN-B pretrained on glyphs (FeatureFool transfer)
  torch::Tensor test_images;           // [N,1,28,28]
  torch::Tensor test_labels;           // int64 [N]
  torch::Tensor victim_test_labels;    // int64 [N]: the victim's top-1 on the test split
  CapsuleOracle* oracle = nullptr;
  std::string work_dir;  // substitutes' ONNX files for `watermark verify`
  std::string label;     // progress prefix
  // false: a checkpoint only syncs and records queries, PRADA's alarm and escrow counts (no
  // snapshot training, no fidelity, no watermark check); `mlcapsule-lab steal` trains its own.
  bool measure = true;
  std::function<void(int64_t queried)> on_query;  // after each oracle batch, when set
  std::function<void(int64_t queried, const OracleSync& sync)> on_sync;  // after each Sync()
  // Outputs, filled when the attack succeeds: every query [N,1,28,28] and its answer [N,C].
  torch::Tensor transcript_x, transcript_y;
};

Result<std::vector<Checkpoint>> RunExtraction(const AttackConfig& config, AttackContext& context);

}  // namespace mlcapsule::lab
