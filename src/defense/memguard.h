// MemGuard (Jia et al., "MemGuard: Defending against Black-Box Membership Inference Attacks via
// Adversarial Examples", CCS 2019) at run time: each confidence vector the client would see is
// perturbed so that the provider's own membership classifier g (a second compiled plan in the
// capsule) can no longer tell members from non-members, while the top-1 label is unchanged and the
// expected L1 change stays within policy.budget. Runs inside the trusted core; trusts the
// classifier plan (it is signed with the capsule), not the vectors it is given.
//
//   MLC_ASSIGN_OR_RETURN(MembershipClassifier g, ClassifierFromSession(g_session.get(), classes));
//   MLC_ASSIGN_OR_RETURN(MemGuard memguard, MemGuard::Create(policy.defenses.memguard, classes,
//   g));
//   ...  // per query, per row of probabilities:
//   MLC_RETURN_IF_ERROR(memguard.Perturb(row, rng, /*stats=*/nullptr));
//
// Phase I searches noise e in logit space (z = log s) that drives g(softmax(z + e)) across 1/2
// with the label kept, by normalised gradient descent on
//   L(e) = |h(softmax(z + e))| + c2 * ReLU(max_{j != l}(z + e)_j - (z + e)_l + margin)
//          + c3 * ||softmax(z + e) - s||_1,        h = logit of g,  l = the top-1 label,
// restarting with c3 ten times larger after each success (a smaller-distortion solution) until a
// round fails; the least-distortion success is kept. The engine has no autodiff and g is a black
// box, so h's gradient is a forward finite difference: the C + 1 vectors softmax(z + e) and
// softmax(z + e + delta * unit_j) are scored in ONE classifier call of C + 1 rows per step (the
// other two terms are differentiated exactly). Phase II releases the noisy vector with probability
// min(1, budget / ||noise||_1), else the vector unchanged, so the expected L1 change is at most the
// budget. docs/defenses.md has the details and the measured costs.
//
// Guarantees, checked on the final float vector: non-negative, sums to 1 within float rounding,
// never NaN, the same top-1 label (ties to the lower index) as the input; a candidate that fails
// any check is dropped and the input is returned. Perturb allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/status.h"
#include "capsule/policy.h"
#include "defense/rng.h"

namespace mlcapsule::engine {
class Session;
}

namespace mlcapsule::defense {

// Scores `rows` confidence vectors (row-major, rows * C floats) with the membership classifier:
// writes one member probability in [0, 1] per row. MemGuard always calls it with C + 1 rows.
using MembershipClassifier = std::function<Status(std::span<const float> vectors, int rows,
                                                  std::span<float> member_probability)>;

struct MemGuardStats {
  uint32_t steps = 0;     // classifier calls spent (each on C + 1 rows)
  uint32_t rounds = 0;    // c3 rounds started
  bool found = false;     // phase I found noise that crosses g = 1/2 with the label kept
  bool applied = false;   // phase II released the noisy vector
  double noise_l1 = 0.0;  // ||noise||_1 of the noise found (0 when none)
  double l1 = 0.0;        // ||returned - input||_1 (input after sanitising)
  double g_before = 0.0;  // g on the input
  double g_after = 0.0;   // g on the returned vector
};

// The search's constants (Jia et al. use c2 = 10, c3 from 0.1 growing x10, step 0.1). Exposed
// for tests and measurements; the policy sets only the budget and the step count.
struct MemGuardTuning {
  double c2 = 10.0;            // weight of the label term
  double c3 = 0.1;             // initial weight of the distortion term
  double c3_growth = 10.0;     // c3 multiplier after a successful round
  int max_rounds = 8;          // c3 rounds at most
  double step = 0.1;           // initial step length in logit space
  double step_growth = 1.25;   // after an accepted step
  double max_step = 2.0;       // step length cap
  double min_step = 1e-3;      // a round stops when rejections shrink the step below this
  double label_margin = 0.01;  // logit margin the label term keeps between l and the rest
  double probe = 1e-2;         // finite-difference step in logit space
  double max_probe = 4.0;      // the probe grows x4 up to this while g looks flat (saturated)
};

class MemGuard {
 public:
  // `classes` >= 2; policy.budget in (0, 2] and policy.steps >= 1 (ParsePolicy's ranges).
  static Result<MemGuard> Create(const capsule::MemGuardPolicy& policy, int classes,
                                 MembershipClassifier classifier,
                                 const MemGuardTuning& tuning = {});

  // Perturbs one confidence vector (probs.size() == classes) in place. The row is first read as
  // a probability vector: NaN counts as 0, values are clamped to [0, 1], a row not summing to 1
  // is normalised (uniform when it sums to 0). Uses `policy.steps` classifier calls at most, and
  // exactly one rng.Uniform(). Errors when the size is wrong or the classifier fails (the row is
  // then left as sanitised, unperturbed: the caller must not release it).
  Status Perturb(std::span<float> probs, Rng& rng, MemGuardStats* stats);

  int classes() const { return classes_; }

 private:
  MemGuard() = default;

  // Fills batch_ with softmax(y) and softmax(y + probe * unit_j), runs the classifier, and sets
  // h_[0..C] (decision values, logit of g). False when g returned NaN.
  Status Evaluate(const double* y, double probe, bool* finite);
  // A step from e_previous_ (no success) to e_ crossed g = 1/2: scores C + 1 points along it in
  // one call, moves [e_previous_, e_] to the sub-segment ending at the first success, twice (each
  // call counted in *steps, within the budget). *h_success gets h at the new e_.
  Status RefineCrossing(double h_input, uint32_t* steps, double* h_success);
  double Loss(const double* y, double h, double c3) const;
  // Sets gradient_ to dL/de at y with h's gradient from h_; false when it is zero.
  bool Gradient(const double* y, double probe, double c3);
  bool LabelKept(const double* y) const;
  double DistortionL1(const double* y) const;

  int classes_ = 0;
  double budget_ = 0.0;
  uint32_t max_steps_ = 0;
  MemGuardTuning tuning_;
  MembershipClassifier classifier_;
  int label_ = 0;
  // Scratch, sized at Create.
  std::vector<double> s_, z_, e_, e_previous_, e_best_, y_, y_try_, q_, gradient_, direction_;
  std::vector<double> h_;      // C + 1 decision values of the last classifier call
  std::vector<float> batch_;   // (C + 1) x C rows for the classifier
  std::vector<float> scores_;  // C + 1 member probabilities
};

// A MembershipClassifier backed by an engine session whose plan takes one float32 input [N, C]
// and has one float32 output: [N] or [N, 1] member probabilities (clamped to [0, 1]), or [N, 2]
// where column 1 is "member" (read as probabilities when the output node is Softmax or every row
// of a call is a distribution, else as logits and passed through softmax). Shapes are checked
// here, with errors naming what the plan has. The session must outlive the classifier and is used
// only through it (a Session is not thread-safe).
Result<MembershipClassifier> ClassifierFromSession(engine::Session* session, int classes);

}  // namespace mlcapsule::defense
