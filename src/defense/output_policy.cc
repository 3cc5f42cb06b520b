// Output policies (see output_policy.h). OutputPolicyIo validates once when a capsule is opened;
// ApplyOutputPolicy runs on every query and trusts only what OutputPolicyIo checked, re-checking
// the few shape facts it relies on because that costs nothing next to the model.
#include "defense/output_policy.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "defense/memguard.h"
#include "defense/rng.h"

namespace mlcapsule::defense {
namespace {

using capsule::IoDim;
using capsule::IoTensor;
using capsule::OutputMode;
using capsule::OutputPolicy;
using engine::DType;

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// The ranking every mode uses: higher score first, NaN below everything, ties to the lower index.
// A strict total order on indices, so partial sorts and heaps are well defined even with NaN.
struct RanksHigher {
  const float* row;
  bool operator()(int64_t a, int64_t b) const {
    float x = row[a], y = row[b];
    bool x_nan = std::isnan(x), y_nan = std::isnan(y);
    if (x_nan != y_nan) return y_nan;
    if (!x_nan && x != y) return x > y;
    return a < b;
  }
};

// Softmax of one row, in the form needed to evaluate it at any entry. Ordinary rows subtract the
// row maximum before exp (no overflow; the largest term is exactly 1, so sum >= 1). Degenerate
// rows: when the maximum is infinite (+inf, or -inf with nothing larger) the mass is shared by the
// entries equal to it; when every entry is NaN the row is uniform.
struct SoftmaxRowStats {
  enum class Kind { kFinite, kShared, kUniform } kind = Kind::kUniform;
  float max = -kInfinity;
  double inverse_sum = 0;   // kFinite
  float shared_value = 0;   // kShared: 1 / number of entries equal to max
  float uniform_value = 0;  // kUniform: 1 / n
};

SoftmaxRowStats SoftmaxMaxAndKind(const float* row, int64_t n) {
  SoftmaxRowStats stats;
  bool any_number = false;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(row[i])) continue;
    any_number = true;
    stats.max = std::max(stats.max, row[i]);
  }
  if (!any_number) {
    stats.kind = SoftmaxRowStats::Kind::kUniform;
    stats.uniform_value = 1.0f / static_cast<float>(n);
  } else if (std::isinf(stats.max)) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += row[i] == stats.max;
    stats.kind = SoftmaxRowStats::Kind::kShared;
    stats.shared_value = 1.0f / static_cast<float>(count);
  } else {
    stats.kind = SoftmaxRowStats::Kind::kFinite;
  }
  return stats;
}

SoftmaxRowStats SoftmaxStats(const float* row, int64_t n) {
  SoftmaxRowStats stats = SoftmaxMaxAndKind(row, n);
  if (stats.kind == SoftmaxRowStats::Kind::kFinite) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isnan(row[i])) sum += std::exp(row[i] - stats.max);
    }
    stats.inverse_sum = 1.0 / sum;
  }
  return stats;
}

float SoftmaxAt(const SoftmaxRowStats& stats, float x) {
  switch (stats.kind) {
    case SoftmaxRowStats::Kind::kFinite:
      return std::isnan(x) ? 0.0f : static_cast<float>(std::exp(x - stats.max) * stats.inverse_sum);
    case SoftmaxRowStats::Kind::kShared:
      return x == stats.max ? stats.shared_value : 0.0f;
    case SoftmaxRowStats::Kind::kUniform:
      return stats.uniform_value;
  }
  return 0.0f;
}

// The whole row: exp is computed once per entry (stored, then scaled).
void SoftmaxRow(const float* row, int64_t n, float* out) {
  SoftmaxRowStats stats = SoftmaxMaxAndKind(row, n);
  if (stats.kind != SoftmaxRowStats::Kind::kFinite) {
    for (int64_t i = 0; i < n; ++i) out[i] = SoftmaxAt(stats, row[i]);
    return;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    float e = std::isnan(row[i]) ? 0.0f : std::exp(row[i] - stats.max);
    out[i] = e;
    sum += e;
  }
  double inverse_sum = 1.0 / sum;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(out[i] * inverse_sum);
}

// Rounds to `decimals` places: nearbyint in the current rounding mode (ties to even by default),
// in double so that 10^8 * x is still exact enough to round. NaN and infinities pass through.
void RoundInPlace(float* values, int64_t n, int decimals) {
  static constexpr double kPowersOfTen[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
  assert(decimals >= 0 && decimals <= 8);  // ParsePolicy enforces 0..8
  double scale = kPowersOfTen[std::clamp(decimals, 0, 8)];
  for (int64_t i = 0; i < n; ++i) {
    values[i] = static_cast<float>(std::nearbyint(static_cast<double>(values[i]) * scale) / scale);
  }
}

// The k best indices of `row`, best first, written to `out` (k entries): a heap of the k best
// seen so far whose top is the worst of them, O(n log k), no scratch memory.
void TopKIndices(const float* row, int64_t n, int64_t k, int64_t* out) {
  RanksHigher higher{row};
  for (int64_t i = 0; i < k; ++i) out[i] = i;
  std::make_heap(out, out + k, higher);
  for (int64_t i = k; i < n; ++i) {
    if (higher(i, out[0])) {
      std::pop_heap(out, out + k, higher);
      out[k - 1] = i;
      std::push_heap(out, out + k, higher);
    }
  }
  std::sort_heap(out, out + k, higher);
}

int64_t ArgMax(const float* row, int64_t n) {
  RanksHigher higher{row};
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (higher(i, best)) best = i;
  }
  return best;
}

// One row as probabilities for the perturbing modes: softmax of logits, or the scores read as
// probabilities (NaN counts as 0, values clamped to [0, 1], so +inf is 1 and -inf is 0).
void ProbabilityRow(const float* row, int64_t n, bool logits, float* out) {
  if (logits) {
    SoftmaxRow(row, n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    out[i] = std::isnan(row[i]) ? 0.0f : std::clamp(row[i], 0.0f, 1.0f);
}

// Scales a row of finite, non-negative values to sum 1; a row summing to 0 becomes uniform (it
// carries no ranking to keep, and uniform reveals nothing about the unperturbed vector).
void Renormalise(float* row, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += row[i];
  if (!(sum > 0)) {
    std::fill(row, row + n, 1.0f / static_cast<float>(n));
    return;
  }
  const double inverse_sum = 1.0 / sum;
  for (int64_t i = 0; i < n; ++i) row[i] = static_cast<float>(row[i] * inverse_sum);
}

// Reverse sigmoid (Lee et al. 2019) of one probability row, in place:
// p' = clip(p - beta * (sigmoid(gamma * logit(clip(p, 1e-9, 1 - 1e-9))) - 1/2), 0, 1),
// renormalised. In double; exp overflows to inf, never to NaN, for any beta, gamma in range.
void ReverseSigmoidRow(float* row, int64_t n, double beta, double gamma) {
  constexpr double kClip = 1e-9;
  const int64_t top = ArgMax(row, n);
  for (int64_t i = 0; i < n; ++i) {
    const double p = row[i];
    const double clipped = std::clamp(p, kClip, 1.0 - kClip);
    const double logit = std::log(clipped / (1.0 - clipped));
    const double sigmoid = 1.0 / (1.0 + std::exp(-gamma * logit));
    row[i] = static_cast<float>(std::clamp(p - beta * (sigmoid - 0.5), 0.0, 1.0));
  }
  Renormalise(row, n);
  // When the transform is increasing (docs/defenses.md gives the condition) the top class stays
  // strictly above every class it was above, but rounding to float can turn a gap of less than an
  // ulp into a tie, which the ranking would give to a lower index. Keep such a tie with the old
  // top class; a real reversal (the transform not increasing) is left as it is.
  const float best = row[ArgMax(row, n)];
  if (row[top] == best) {
    for (int64_t i = 0; i < top; ++i) {
      if (row[i] == best) {
        row[top] = std::nextafter(best, 2.0f);
        break;
      }
    }
  }
}

// Gaussian noise on one probability row, in place: max(p + N(0, sigma^2), 0), renormalised.
void GaussianRow(float* row, int64_t n, double sigma, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) {
    row[i] = static_cast<float>(std::max(row[i] + sigma * rng.Normal(), 0.0));
  }
  Renormalise(row, n);
}

// Shapes `tensor` in place, keeping its buffer's capacity.
template <typename T>
T* Reshape(engine::Tensor* tensor, DType dtype, const engine::Dims& dims) {
  tensor->dtype = dtype;
  tensor->dims = dims;
  tensor->bytes.resize(static_cast<size_t>(tensor->NumElements()) * sizeof(T));
  return tensor->Data<T>();
}

std::string DTypeCodeName(uint8_t code) {
  return engine::IsKnownDType(code) ? engine::DTypeName(static_cast<DType>(code))
                                    : fmt::format("dtype code {}", code);
}

std::string DimsText(const std::vector<IoDim>& dims) {
  engine::Shape shape;
  for (const IoDim& dim : dims) shape.push_back(engine::Dim{dim.value, dim.batch});
  return engine::ShapeToString(shape);
}

}  // namespace

Result<int> FindPolicyOutput(const OutputPolicy& policy,
                             std::span<const std::string> output_names) {
  if (output_names.empty()) return InvalidArgument("the model has no outputs");
  if (policy.tensor.empty()) return 0;
  for (size_t i = 0; i < output_names.size(); ++i) {
    if (output_names[i] == policy.tensor) return static_cast<int>(i);
  }
  std::string available;
  for (const std::string& name : output_names) {
    available += available.empty() ? "" : ", ";
    available += "'" + name + "'";
  }
  return InvalidArgument("output.tensor '{}' is not an output of the model (outputs: {})",
                         policy.tensor, available);
}

Result<std::vector<IoTensor>> OutputPolicyIo(const OutputPolicy& policy,
                                             const std::vector<IoTensor>& model_outputs) {
  std::vector<std::string> names;
  names.reserve(model_outputs.size());
  for (const IoTensor& output : model_outputs) names.push_back(output.name);
  MLC_ASSIGN_OR_RETURN(int selected, FindPolicyOutput(policy, names));
  const IoTensor& scores = model_outputs[selected];

  if (scores.dtype != static_cast<uint8_t>(DType::kFloat32)) {
    return InvalidArgument("model output '{}' is {}; the output policy ({}) needs float32 scores",
                           scores.name, DTypeCodeName(scores.dtype),
                           capsule::OutputModeName(policy.mode));
  }
  if (scores.dims.empty()) {
    return InvalidArgument(
        "model output '{}' is a scalar; the output policy needs rank >= 1 "
        "(the last dimension holds the classes)",
        scores.name);
  }
  const IoDim& classes = scores.dims.back();
  if (classes.batch) {
    return InvalidArgument(
        "the last dimension of model output '{}' {} scales with the batch "
        "size; the output policy needs a fixed class count",
        scores.name, DimsText(scores.dims));
  }
  if (classes.value < 1) {
    return InvalidArgument(
        "model output '{}' {} has {} classes; the output policy needs at "
        "least 1",
        scores.name, DimsText(scores.dims), classes.value);
  }
  if (policy.mode == OutputMode::kTopK && policy.k > classes.value) {
    return InvalidArgument("output.k {} is larger than the model's {} classes", policy.k,
                           classes.value);
  }

  std::vector<IoDim> leading(scores.dims.begin(), scores.dims.end() - 1);
  std::vector<IoTensor> client;
  switch (policy.mode) {
    case OutputMode::kProbabilities:
    case OutputMode::kRounded:
    case OutputMode::kReverseSigmoid:
    case OutputMode::kGaussian:
      client.push_back(scores);
      break;
    case OutputMode::kTopK: {
      std::vector<IoDim> dims = leading;
      dims.push_back(IoDim{policy.k, false});
      client.push_back(
          IoTensor{scores.name + ".values", static_cast<uint8_t>(DType::kFloat32), dims});
      client.push_back(
          IoTensor{scores.name + ".indices", static_cast<uint8_t>(DType::kInt64), dims});
      break;
    }
    case OutputMode::kLabel:
      client.push_back(
          IoTensor{scores.name + ".label", static_cast<uint8_t>(DType::kInt64), leading});
      break;
  }
  return client;
}

Status ApplyOutputPolicy(const OutputPolicy& policy, const engine::TensorView& scores, Rng* rng,
                         MemGuard* memguard, std::vector<engine::Tensor>* client_outputs,
                         uint64_t* memguard_released) {
  if (scores.dtype != DType::kFloat32) {
    return InvalidArgument("output policy: scores are {}, expected float32",
                           engine::DTypeName(scores.dtype));
  }
  if (scores.rank() < 1 || scores.dims.back() < 1) {
    return InvalidArgument("output policy: scores of shape {} have no class dimension",
                           engine::DimsToString(scores.dims));
  }
  const int64_t classes = scores.dims.back();
  const int64_t rows = scores.NumElements() / classes;
  const float* in = scores.As<const float>();
  if (rows > 0 && in == nullptr) return InvalidArgument("output policy: scores have no data");
  if (memguard != nullptr) {
    if (policy.mode != OutputMode::kProbabilities && policy.mode != OutputMode::kRounded) {
      return FailedPrecondition(
          "output policy: MemGuard perturbs the confidence vector, so the mode must be "
          "probabilities or rounded (it is {})",
          capsule::OutputModeName(policy.mode));
    }
    if (memguard->classes() != classes) {
      return FailedPrecondition("output policy: MemGuard was set up for {} classes, scores have {}",
                                memguard->classes(), classes);
    }
  }
  if (rng == nullptr && (policy.mode == OutputMode::kGaussian || memguard != nullptr)) {
    return FailedPrecondition("output policy: {} needs a random source",
                              memguard != nullptr ? "MemGuard" : "gaussian");
  }
  engine::Dims leading(scores.dims.begin(), scores.dims.end() - 1);

  switch (policy.mode) {
    case OutputMode::kProbabilities:
    case OutputMode::kRounded: {
      client_outputs->resize(1);
      float* out = Reshape<float>(&(*client_outputs)[0], DType::kFloat32, scores.dims);
      if (policy.logits) {
        for (int64_t r = 0; r < rows; ++r) SoftmaxRow(in + r * classes, classes, out + r * classes);
      } else if (rows > 0) {
        std::memcpy(out, in, static_cast<size_t>(rows * classes) * sizeof(float));
      }
      if (memguard != nullptr) {
        for (int64_t r = 0; r < rows; ++r) {
          MemGuardStats stats;
          MLC_RETURN_IF_ERROR(memguard->Perturb(
              std::span<float>(out + r * classes, static_cast<size_t>(classes)), *rng, &stats));
          if (memguard_released != nullptr && stats.applied) ++*memguard_released;
        }
      }
      if (policy.mode == OutputMode::kRounded) RoundInPlace(out, rows * classes, policy.decimals);
      return Status::Ok();
    }
    case OutputMode::kReverseSigmoid:
    case OutputMode::kGaussian: {
      client_outputs->resize(1);
      float* out = Reshape<float>(&(*client_outputs)[0], DType::kFloat32, scores.dims);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = out + r * classes;
        ProbabilityRow(in + r * classes, classes, policy.logits, row);
        if (policy.mode == OutputMode::kReverseSigmoid) {
          ReverseSigmoidRow(row, classes, policy.beta, policy.gamma);
        } else {
          GaussianRow(row, classes, policy.sigma, *rng);
        }
      }
      return Status::Ok();
    }
    case OutputMode::kTopK: {
      const int64_t k = policy.k;
      if (k < 1 || k > classes) {
        return InvalidArgument("output.k {} is out of range 1..{} (the model's classes)", k,
                               classes);
      }
      engine::Dims dims = leading;
      dims.push_back(k);
      client_outputs->resize(2);
      float* values = Reshape<float>(&(*client_outputs)[0], DType::kFloat32, dims);
      int64_t* indices = Reshape<int64_t>(&(*client_outputs)[1], DType::kInt64, dims);
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = in + r * classes;
        // Ranked on the raw scores: softmax is monotone, and ranking before it keeps logits that
        // exp() would round to the same probability in their true order.
        TopKIndices(row, classes, k, indices + r * k);
        if (policy.logits) {
          SoftmaxRowStats stats = SoftmaxStats(row, classes);
          for (int64_t j = 0; j < k; ++j) {
            values[r * k + j] = SoftmaxAt(stats, row[indices[r * k + j]]);
          }
        } else {
          for (int64_t j = 0; j < k; ++j) values[r * k + j] = row[indices[r * k + j]];
        }
      }
      return Status::Ok();
    }
    case OutputMode::kLabel: {
      // Softmax cannot change the argmax, so `logits` is irrelevant here.
      client_outputs->resize(1);
      int64_t* labels = Reshape<int64_t>(&(*client_outputs)[0], DType::kInt64, leading);
      for (int64_t r = 0; r < rows; ++r) labels[r] = ArgMax(in + r * classes, classes);
      return Status::Ok();
    }
  }
  return InternalError("output policy: unknown mode {}", static_cast<int>(policy.mode));
}

}  // namespace mlcapsule::defense
