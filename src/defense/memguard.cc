// MemGuard (see memguard.h). The search works in double on C-element vectors held in scratch
// buffers sized at Create; the classifier sees float32 rows, always C + 1 of them per call, so an
// engine session behind it never re-plans for a new batch size.
#include "defense/memguard.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "engine/session.h"

namespace mlcapsule::defense {
namespace {

// The largest class count MemGuard takes: a classifier call holds (C + 1) * C floats (64 MiB here).
constexpr int kMaxClasses = 4096;
// log() of a zero probability: a very negative but finite logit, so softmax gives it ~0.
constexpr double kProbabilityFloor = 1e-30;
// g is clamped to [kGClip, 1 - kGClip] before its logit is taken (|h| <= 16.1).
constexpr double kGClip = 1e-7;
// A row whose sum is this close to 1 is kept as it is (bit for bit) rather than rescaled.
constexpr double kSumTolerance = 1e-4;
// Two probabilities closer than this are equal for the distortion term's (sub)gradient.
constexpr double kSameProbability = 1e-12;
// Refinement calls once a step crosses g = 1/2 (each narrows the crossing to 1/(C+1)).
constexpr int kRefinements = 2;

// Decision value: the logit of a member probability. NaN stays NaN.
double DecisionValue(float member_probability) {
  if (std::isnan(member_probability)) return std::numeric_limits<double>::quiet_NaN();
  double g = std::clamp(static_cast<double>(member_probability), kGClip, 1.0 - kGClip);
  return std::log(g) - std::log1p(-g);
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Highest value, ties to the lower index (the output policy's ranking; rows here have no NaN).
int ArgMax(const float* row, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

// softmax(y) into `out` (float), from the row maximum so exp never overflows. Returns the sum of
// exp(y - max) and leaves those terms in `terms`.
double SoftmaxInto(const double* y, int n, double* terms, float* out) {
  double max = y[0];
  for (int i = 1; i < n; ++i) max = std::max(max, y[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += terms[i] = std::exp(y[i] - max);
  const double inverse = 1.0 / sum;
  for (int i = 0; i < n; ++i) out[i] = static_cast<float>(terms[i] * inverse);
  return sum;
}

}  // namespace

Result<MemGuard> MemGuard::Create(const capsule::MemGuardPolicy& policy, int classes,
                                  MembershipClassifier classifier, const MemGuardTuning& tuning) {
  if (classes < 2 || classes > kMaxClasses) {
    return InvalidArgument("memguard: the model has {} classes; MemGuard needs 2..{}", classes,
                           kMaxClasses);
  }
  if (!(policy.budget > 0.0 && policy.budget <= 2.0)) {
    return InvalidArgument("defenses.memguard.budget: {} is out of range (0, 2]", policy.budget);
  }
  if (policy.steps < 1 || policy.steps > 10000) {
    return InvalidArgument("defenses.memguard.steps: {} is out of range 1..10000", policy.steps);
  }
  if (!classifier) return InvalidArgument("memguard: no membership classifier");
  MemGuard guard;
  guard.classes_ = classes;
  guard.budget_ = policy.budget;
  guard.max_steps_ = policy.steps;
  guard.tuning_ = tuning;
  guard.classifier_ = std::move(classifier);
  const size_t c = static_cast<size_t>(classes);
  for (std::vector<double>* v :
       {&guard.s_, &guard.z_, &guard.e_, &guard.e_previous_, &guard.e_best_, &guard.y_,
        &guard.y_try_, &guard.q_, &guard.gradient_, &guard.direction_}) {
    v->assign(c, 0.0);
  }
  guard.h_.assign(c + 1, 0.0);
  guard.batch_.assign((c + 1) * c, 0.0f);
  guard.scores_.assign(c + 1, 0.0f);
  return guard;
}

Status MemGuard::Evaluate(const double* y, double probe, bool* finite) {
  const int n = classes_;
  const double sum = SoftmaxInto(y, n, q_.data(), batch_.data());
  // Row j + 1 is softmax(y + probe * unit_j): only term j and the sum change.
  const double growth = std::expm1(probe);
  for (int j = 0; j < n; ++j) {
    float* row = batch_.data() + static_cast<size_t>(j + 1) * n;
    const double inverse = 1.0 / (sum + q_[j] * growth);
    for (int i = 0; i < n; ++i) row[i] = static_cast<float>(q_[i] * inverse);
    row[j] = static_cast<float>(q_[j] * (1.0 + growth) * inverse);
  }
  MLC_RETURN_IF_ERROR(classifier_(batch_, n + 1, scores_));
  *finite = true;
  for (int r = 0; r <= n; ++r) {
    h_[r] = DecisionValue(scores_[r]);
    *finite = *finite && !std::isnan(h_[r]);
  }
  return Status::Ok();
}

bool MemGuard::LabelKept(const double* y) const {
  for (int j = 0; j < classes_; ++j) {
    if (j != label_ && !(y[label_] > y[j])) return false;
  }
  return true;
}

double MemGuard::DistortionL1(const double* y) const {
  double max = y[0];
  for (int i = 1; i < classes_; ++i) max = std::max(max, y[i]);
  double sum = 0.0;
  for (int i = 0; i < classes_; ++i) sum += std::exp(y[i] - max);
  double distance = 0.0;
  for (int i = 0; i < classes_; ++i) distance += std::abs(std::exp(y[i] - max) / sum - s_[i]);
  return distance;
}

double MemGuard::Loss(const double* y, double h, double c3) const {
  double runner_up = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < classes_; ++j) {
    if (j != label_) runner_up = std::max(runner_up, y[j]);
  }
  const double label_term = std::max(0.0, runner_up - y[label_] + tuning_.label_margin);
  return std::abs(h) + tuning_.c2 * label_term + c3 * DistortionL1(y);
}

bool MemGuard::Gradient(const double* y, double probe, double c3) {
  const int n = classes_;
  // |h|: forward differences from the classifier call on y (h_ holds its C + 1 values).
  const double sign = h_[0] > 0 ? 1.0 : -1.0;
  bool flat = true;
  for (int j = 0; j < n; ++j) {
    const double difference = h_[j + 1] - h_[0];
    flat = flat && difference == 0.0;
    gradient_[j] = sign * difference / probe;
  }
  // Label term: +c2 on the runner-up, -c2 on the label while the margin is not met.
  int runner_up = label_ == 0 ? 1 : 0;
  for (int j = 0; j < n; ++j) {
    if (j != label_ && y[j] > y[runner_up]) runner_up = j;
  }
  if (y[runner_up] - y[label_] + tuning_.label_margin > 0.0) {
    gradient_[runner_up] += tuning_.c2;
    gradient_[label_] -= tuning_.c2;
  }
  // Distortion ||q - s||_1 with q = softmax(y): d/dy_j = q_j (sign_j - sum_i sign_i q_i).
  double max = y[0];
  for (int i = 1; i < n; ++i) max = std::max(max, y[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += q_[i] = std::exp(y[i] - max);
  // Differences below kSameProbability count as none: at e = 0, exp(log s) is s only up to
  // rounding, and that rounding must not become a direction.
  auto sign_of = [this](int i) {
    const double d = q_[i] - s_[i];
    return d > kSameProbability ? 1.0 : d < -kSameProbability ? -1.0 : 0.0;
  };
  double weighted = 0.0;
  for (int i = 0; i < n; ++i) {
    q_[i] /= sum;
    weighted += sign_of(i) * q_[i];
  }
  for (int j = 0; j < n; ++j) gradient_[j] += c3 * q_[j] * (sign_of(j) - weighted);
  return !flat;
}

Status MemGuard::RefineCrossing(double h_input, uint32_t* steps, double* h_success) {
  const int n = classes_;
  const size_t c = static_cast<size_t>(n);
  auto point = [&](int m) {  // y at t = m / (C + 1) along [e_previous_, e_], into y_try_
    const double t = static_cast<double>(m) / (n + 1);
    for (size_t i = 0; i < c; ++i)
      y_try_[i] = z_[i] + e_previous_[i] + t * (e_[i] - e_previous_[i]);
    return t;
  };
  for (int refine = 0; refine < kRefinements && *steps < max_steps_; ++refine) {
    for (int m = 1; m <= n + 1; ++m) {
      point(m);
      SoftmaxInto(y_try_.data(), n, q_.data(), batch_.data() + (m - 1) * c);
    }
    MLC_RETURN_IF_ERROR(classifier_(batch_, n + 1, scores_));
    ++*steps;
    for (int m = 1; m <= n + 1; ++m) {
      const double t = point(m);
      const double h = DecisionValue(scores_[m - 1]);
      const bool crossed = h_input > 0.0 ? h <= 0.0 : h >= 0.0;  // false for NaN
      // The end point (m = C + 1) is e_ itself, a success already.
      if (m == n + 1 || (crossed && LabelKept(y_try_.data()))) {
        const double t_before = static_cast<double>(m - 1) / (n + 1);
        for (size_t i = 0; i < c; ++i) {
          const double delta = e_[i] - e_previous_[i];
          e_[i] = e_previous_[i] + t * delta;
          e_previous_[i] += t_before * delta;
        }
        if (m <= n) *h_success = h;
        break;
      }
    }
  }
  return Status::Ok();
}

Status MemGuard::Perturb(std::span<float> probs, Rng& rng, MemGuardStats* stats) {
  const int n = classes_;
  if (probs.size() != static_cast<size_t>(n)) {
    return InvalidArgument("memguard: a confidence vector of {} values; the model has {} classes",
                           probs.size(), n);
  }
  MemGuardStats local;
  MemGuardStats& st = stats != nullptr ? *stats : local;
  st = MemGuardStats{};

  // The input as a probability vector s.
  double sum = 0.0;
  for (float& p : probs) {
    p = std::isnan(p) ? 0.0f : std::clamp(p, 0.0f, 1.0f);
    sum += p;
  }
  if (!(sum > 0.0)) {
    std::fill(probs.begin(), probs.end(), 1.0f / static_cast<float>(n));
  } else if (std::abs(sum - 1.0) > kSumTolerance) {
    for (float& p : probs) p = static_cast<float>(p / sum);
  }
  // s in double, normalised exactly, so that softmax(z) at e = 0 is s up to rounding.
  double total = 0.0;
  for (float p : probs) total += p;
  for (int i = 0; i < n; ++i) {
    s_[i] = probs[i] / total;
    z_[i] = std::log(std::max(s_[i], kProbabilityFloor));
  }
  label_ = ArgMax(probs.data(), n);

  // ---- Phase I: the noise search. ----
  const size_t c = static_cast<size_t>(n);
  double h_input = std::numeric_limits<double>::quiet_NaN();
  bool have_best = false;
  double best_distortion = std::numeric_limits<double>::infinity();
  double h_best = 0.0;
  double c3 = tuning_.c3;
  bool stop = false;
  for (int round = 0; round < tuning_.max_rounds && !stop && st.steps < max_steps_; ++round) {
    ++st.rounds;
    std::fill(e_.begin(), e_.end(), 0.0);
    double step = tuning_.step;
    double probe = tuning_.probe;
    bool have_previous = false;
    double loss_previous = 0.0;
    bool success = false;
    double h_success = 0.0;
    while (st.steps < max_steps_) {
      for (size_t i = 0; i < c; ++i) y_[i] = z_[i] + e_[i];
      bool finite = false;
      MLC_RETURN_IF_ERROR(Evaluate(y_.data(), probe, &finite));
      ++st.steps;
      if (!finite) {  // the classifier gave NaN: no gradient to follow
        stop = true;
        break;
      }
      const double h = h_[0];
      if (std::isnan(h_input)) {
        h_input = h;
        st.g_before = scores_[0];
        if (h_input == 0.0) {  // g is already exactly 1/2
          stop = true;
          break;
        }
      }
      if ((h_input > 0.0 ? h <= 0.0 : h >= 0.0) && LabelKept(y_.data())) {
        success = true;
        h_success = h;
        if (have_previous) MLC_RETURN_IF_ERROR(RefineCrossing(h_input, &st.steps, &h_success));
        break;
      }
      const double loss = Loss(y_.data(), h, c3);
      if (have_previous && loss >= loss_previous) {
        // Rejected: back to the previous point, half the step along the same direction.
        step *= 0.5;
        if (step < tuning_.min_step) break;
        for (size_t i = 0; i < c; ++i) e_[i] = e_previous_[i] - step * direction_[i];
        continue;
      }
      const bool informative = Gradient(y_.data(), probe, c3);
      if (!informative && probe * 4.0 <= tuning_.max_probe) {
        probe *= 4.0;  // g looks flat here (saturated): probe further at the same point
        continue;
      }
      if (informative) probe = std::max(tuning_.probe, probe / 4.0);
      double norm = 0.0;
      for (double g : gradient_) norm += g * g;
      norm = std::sqrt(norm);
      if (!(norm > 0.0) || !std::isfinite(norm)) break;
      for (size_t i = 0; i < c; ++i) {
        direction_[i] = gradient_[i] / norm;
        e_previous_[i] = e_[i];
        e_[i] -= step * direction_[i];
      }
      loss_previous = loss;
      have_previous = true;
      step = std::min(step * tuning_.step_growth, tuning_.max_step);
    }
    if (!success) break;  // Algorithm 1: a failed round ends the search
    for (size_t i = 0; i < c; ++i) y_[i] = z_[i] + e_[i];
    const double distortion = DistortionL1(y_.data());
    if (distortion < best_distortion) {
      best_distortion = distortion;
      e_best_ = e_;
      h_best = h_success;
      have_best = true;
    }
    c3 *= tuning_.c3_growth;
  }
  st.g_after = st.g_before;

  // ---- Phase II: release the noisy vector with probability min(1, budget / ||noise||_1). ----
  const double coin = rng.Uniform();  // drawn on every call, so the stream does not depend on g
  if (!have_best) return Status::Ok();
  st.found = true;
  float* candidate = batch_.data();  // scratch row
  for (size_t i = 0; i < c; ++i) y_[i] = z_[i] + e_best_[i];
  SoftmaxInto(y_.data(), n, q_.data(), candidate);
  double noise_l1 = 0.0, candidate_sum = 0.0;
  bool valid = true;
  for (size_t i = 0; i < c; ++i) {
    valid = valid && std::isfinite(candidate[i]) && candidate[i] >= 0.0f;
    noise_l1 += std::abs(static_cast<double>(candidate[i]) - s_[i]);
    candidate_sum += candidate[i];
  }
  st.noise_l1 = noise_l1;
  valid = valid && std::abs(candidate_sum - 1.0) <= 1e-5 && ArgMax(candidate, n) == label_;
  const double release = noise_l1 > 0.0 ? std::min(1.0, budget_ / noise_l1) : 1.0;
  if (!valid || !(coin < release)) return Status::Ok();
  std::copy(candidate, candidate + n, probs.begin());
  st.applied = true;
  st.l1 = noise_l1;
  st.g_after = Sigmoid(h_best);
  return Status::Ok();
}

// ---- ClassifierFromSession ----

namespace {

struct SessionClassifier {
  engine::Session* session = nullptr;
  int classes = 0;
  int columns = 1;              // 1: member probability; 2: [non-member, member]
  bool softmax_output = false;  // the output node is Softmax: columns are probabilities
  engine::TensorView input;
  std::vector<engine::Tensor> outputs;

  Status operator()(std::span<const float> vectors, int rows, std::span<float> member) {
    if (rows < 1 || vectors.size() != static_cast<size_t>(rows) * classes ||
        member.size() < static_cast<size_t>(rows)) {
      return InvalidArgument(
          "membership classifier: {} values for {} rows of {} classes, {} results asked",
          vectors.size(), rows, classes, member.size());
    }
    input.dims[0] = rows;
    input.data = const_cast<float*>(vectors.data());  // the session only reads its inputs
    MLC_RETURN_IF_ERROR(session->Run(std::span<const engine::TensorView>(&input, 1), &outputs));
    const engine::Tensor& out = outputs[0];
    if (out.dtype != engine::DType::kFloat32 ||
        out.NumElements() != static_cast<int64_t>(rows) * columns) {
      return InternalError("membership classifier: output of shape {}, expected {} x {} floats",
                           engine::DimsToString(out.dims), rows, columns);
    }
    const float* v = out.Data<float>();
    if (columns == 1) {
      for (int r = 0; r < rows; ++r)
        member[r] = std::isnan(v[r]) ? v[r] : std::clamp(v[r], 0.f, 1.f);
      return Status::Ok();
    }
    // One reading for the whole call, so the rows of a finite difference stay comparable.
    bool distribution = softmax_output;
    if (!distribution) {
      distribution = true;
      for (int r = 0; r < rows && distribution; ++r) {
        const float a = v[2 * r], b = v[2 * r + 1];
        distribution = a >= 0.0f && a <= 1.0f && b >= 0.0f && b <= 1.0f &&
                       std::abs(static_cast<double>(a) + b - 1.0) <= kSumTolerance;
      }
    }
    for (int r = 0; r < rows; ++r) {
      const float a = v[2 * r], b = v[2 * r + 1];
      member[r] = distribution ? (std::isnan(b) ? b : std::clamp(b, 0.0f, 1.0f))
                               : static_cast<float>(Sigmoid(static_cast<double>(b) - a));
    }
    return Status::Ok();
  }
};

}  // namespace

Result<MembershipClassifier> ClassifierFromSession(engine::Session* session, int classes) {
  if (session == nullptr) return InvalidArgument("membership classifier: no session");
  const engine::Plan& plan = session->plan();
  if (plan.inputs.size() != 1) {
    return InvalidArgument(
        "membership classifier plan has {} inputs; it must take one, the confidence vectors "
        "float32 [N,{}]",
        plan.inputs.size(), classes);
  }
  const engine::PlanTensor& in = plan.tensors[static_cast<size_t>(plan.inputs[0])];
  const engine::Shape want_in = {engine::Dim{1, true}, engine::Dim{classes, false}};
  if (in.type.dtype != engine::DType::kFloat32 || in.type.shape != want_in) {
    return InvalidArgument(
        "membership classifier input '{}' is {} {}; it must be float32 [N,{}] (the model's "
        "classes)",
        in.name, engine::DTypeName(in.type.dtype), engine::ShapeToString(in.type.shape), classes);
  }
  if (plan.outputs.size() != 1) {
    return InvalidArgument(
        "membership classifier plan has {} outputs; it must have one, float32 [N], [N,1] or "
        "[N,2]",
        plan.outputs.size());
  }
  const int32_t output_index = plan.outputs[0];
  const engine::PlanTensor& out = plan.tensors[static_cast<size_t>(output_index)];
  const engine::Shape& shape = out.type.shape;
  int columns = 0;
  if (!shape.empty() && shape[0] == engine::Dim{1, true}) {
    if (shape.size() == 1) columns = 1;
    if (shape.size() == 2 && !shape[1].batch && (shape[1].value == 1 || shape[1].value == 2)) {
      columns = static_cast<int>(shape[1].value);
    }
  }
  if (out.type.dtype != engine::DType::kFloat32 || columns == 0) {
    return InvalidArgument(
        "membership classifier output '{}' is {} {}; it must be float32 [N] or [N,1] (member "
        "probability) or [N,2] (column 1 = member)",
        out.name, engine::DTypeName(out.type.dtype), engine::ShapeToString(shape));
  }
  auto state = std::make_shared<SessionClassifier>();
  state->session = session;
  state->classes = classes;
  state->columns = columns;
  for (const engine::PlanNode& node : plan.nodes) {
    if (std::find(node.outputs.begin(), node.outputs.end(), output_index) != node.outputs.end()) {
      state->softmax_output = node.op == engine::OpType::kSoftmax;
    }
  }
  state->input.dtype = engine::DType::kFloat32;
  state->input.dims = {1, classes};
  return MembershipClassifier(
      [state](std::span<const float> vectors, int rows, std::span<float> member) {
        return (*state)(vectors, rows, member);
      });
}

}  // namespace mlcapsule::defense
