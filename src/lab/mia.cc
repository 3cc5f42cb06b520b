// Membership inference against a capsule (mia.h): the shadow models, the attacks on the capsule's
// answers, and MemGuard's defender classifier. The capsule is reached only through the oracle,
// that is through the real client and trusted core; everything it returns is treated as an
// attacker would (clamped before every log). Shadow models and the attack MLPs are libtorch models
// whose randomness comes from lab::Rng and MakeNet, never from torch's global generator, because
// jobs run concurrently in threads.
#include "lab/mia.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <span>
#include <utility>

#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

using Clock = std::chrono::steady_clock;

// ShadowSet file: a list of tensors, the first one [kShadowSetMagic, kShadowSetVersion].
constexpr int64_t kShadowSetMagic = 0x4d4c4353484457;  // "MLCSHDW"
constexpr int64_t kShadowSetVersion = 1;
constexpr size_t kShadowSetTensors = 9;

// Rows per oracle call: bounds the answer buffer, not the core's batch (OracleOptions.batch).
constexpr int64_t kQueryChunk = 4096;
// Probabilities are clamped before logs: the threshold attacks at 1e-30, LiRA at 1e-45 as the
// reference score.py does (the smallest float subnormal, so no float answer is changed).
constexpr double kThresholdFloor = 1e-30;
constexpr double kLiraFloor = 1e-45;
// The ML-Leaks attack MLP (adversary 1) is cheap: a few thousand rows of 3 features.
constexpr int kAttackEpochs = 100;
constexpr int kDefenderEpochs = 200;
constexpr int kTopK = 3;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Members then non-members, the first n of each (n = the smaller split), as one set.
int64_t TargetsPerSide(const Splits& splits) {
  return std::min(splits.victim_train.count, splits.victim_heldout.count);
}
ImageSet TargetPool(const Splits& splits, int64_t n) {
  ImageSet pool = splits.victim_train.Slice(0, n);
  pool.Append(splits.victim_heldout.Slice(0, n));
  return pool;
}

Status CheckLabels(const torch::Tensor& labels, int classes, const std::string& what) {
  if (labels.numel() == 0) return Status::Ok();
  const int64_t low = labels.min().item<int64_t>(), high = labels.max().item<int64_t>();
  if (low < 0 || high >= classes)
    return InvalidArgument("{}: labels span [{}, {}], outside [0, {})", what, low, high, classes);
  return Status::Ok();
}

// LiRA's phi = z_y - logsumexp_{j != y} z_j on logits [N, C], in double: the logit of p_y without
// ever forming 1 - p_y, which cancels for confident members.
torch::Tensor PhiFromLogits(const torch::Tensor& logits, const torch::Tensor& labels) {
  torch::Tensor z = logits.to(torch::kDouble);
  torch::Tensor y = labels.unsqueeze(1);
  torch::Tensor zy = z.gather(1, y).squeeze(1);
  torch::Tensor others = z.scatter(1, y, -std::numeric_limits<double>::infinity());
  return zy - torch::logsumexp(others, 1);
}

// The 4d+1 label-only translations: identity, then +-k px along x and y for k = 1..d.
std::vector<std::pair<int, int>> Translations(int d) {
  std::vector<std::pair<int, int>> shifts = {{0, 0}};
  for (int k = 1; k <= d; ++k) {
    shifts.insert(shifts.end(), {{k, 0}, {-k, 0}, {0, k}, {0, -k}});
  }
  return shifts;
}

// Images [N,1,28,28] moved by (dx, dy) pixels (content moves right / down for positive values),
// zero fill.
torch::Tensor Translate(const torch::Tensor& images, int dx, int dy) {
  if (dx == 0 && dy == 0) return images;
  torch::Tensor out = torch::zeros_like(images);
  if (std::abs(dx) >= kImageSide || std::abs(dy) >= kImageSide) return out;
  const int64_t dst_row = std::max(0, dy), src_row = std::max(0, -dy);
  const int64_t dst_col = std::max(0, dx), src_col = std::max(0, -dx);
  const int64_t rows = kImageSide - std::abs(dy), cols = kImageSide - std::abs(dx);
  out.slice(2, dst_row, dst_row + rows)
      .slice(3, dst_col, dst_col + cols)
      .copy_(images.slice(2, src_row, src_row + rows).slice(3, src_col, src_col + cols));
  return out;
}

// How many of the translations `net` classifies correctly, per image (float [N]).
torch::Tensor CorrectTranslations(Net& net, const torch::Tensor& images,
                                  const torch::Tensor& labels, int d) {
  torch::Tensor correct = torch::zeros({images.size(0)}, torch::kFloat);
  for (const auto& [dx, dy] : Translations(d)) {
    correct += Predict(net, Translate(images, dx, dy)).argmax(1).eq(labels).to(torch::kFloat);
  }
  return correct;
}

// A sigmoid model's pre-sigmoid output in double: the same ranking as its probability, without
// the ties where float sigmoids saturate at 1.
torch::Tensor MemberLogits(Net& net, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  net->eval();
  auto params = net->named_parameters();
  const size_t last = net->spec().hidden.size() + 1;
  const torch::Tensor& weight = params[fmt::format("fc{}.weight", last)];
  const torch::Tensor& bias = params[fmt::format("fc{}.bias", last)];
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += 1000) {
    torch::Tensor f = net->features(x.slice(0, b, std::min<int64_t>(x.size(0), b + 1000)));
    parts.push_back(torch::nn::functional::linear(f, weight, bias).squeeze(1));
  }
  if (parts.empty()) return torch::empty({0}, torch::kDouble);
  return torch::cat(parts).to(torch::kDouble);
}

std::string Shape(const torch::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += fmt::format("{}{}", i ? ", " : "", t.size(i));
  return out + "]";
}

std::vector<double> ToVector(const torch::Tensor& t) {
  torch::Tensor d = t.to(torch::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// Answers [N, C] of the oracle for images [N,1,28,28], queried in chunks.
Result<torch::Tensor> QueryAll(CapsuleOracle& oracle, const torch::Tensor& images) {
  torch::Tensor x = images.to(torch::kFloat).contiguous();
  const int64_t n = x.size(0), classes = oracle.classes();
  torch::Tensor answers = torch::empty({n, classes}, torch::kFloat);
  std::vector<float> chunk;
  for (int64_t begin = 0; begin < n; begin += kQueryChunk) {
    const int64_t rows = std::min(kQueryChunk, n - begin);
    std::span<const float> pixels(x.data_ptr<float>() + begin * kImagePixels,
                                  static_cast<size_t>(rows * kImagePixels));
    MLC_RETURN_IF_ERROR(oracle.Query(pixels, rows, &chunk));
    std::copy(chunk.begin(), chunk.end(), answers.data_ptr<float>() + begin * classes);
  }
  return answers;
}

// The threshold attacks' scores, higher = member, from probabilities [N, C] and true labels.
enum class ThresholdKind { kLoss, kConfidence, kEntropy, kModifiedEntropy };

std::vector<double> ThresholdScores(ThresholdKind kind, const torch::Tensor& probabilities,
                                    const torch::Tensor& labels) {
  torch::Tensor p = probabilities.to(torch::kDouble).contiguous();
  torch::Tensor y = labels.to(torch::kLong).contiguous();
  const int64_t n = p.size(0), classes = p.size(1);
  const double* rows = p.data_ptr<double>();
  const int64_t* label = y.data_ptr<int64_t>();
  auto safe_log = [](double v) { return std::log(std::max(v, kThresholdFloor)); };
  std::vector<double> scores(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double* row = rows + i * classes;
    const int64_t true_class = label[i];
    double score = 0;
    switch (kind) {
      case ThresholdKind::kLoss:  // minus the cross-entropy loss
        score = safe_log(row[true_class]);
        break;
      case ThresholdKind::kConfidence:
        score = *std::max_element(row, row + classes);
        break;
      case ThresholdKind::kEntropy:  // -H(p)
        for (int64_t j = 0; j < classes; ++j) score += row[j] * safe_log(row[j]);
        break;
      case ThresholdKind::kModifiedEntropy: {
        // Song & Mittal 2021: Mentr = -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j); it is
        // small for confident correct answers, so members score high on -Mentr.
        double mentr = -(1 - row[true_class]) * safe_log(row[true_class]);
        for (int64_t j = 0; j < classes; ++j) {
          if (j != true_class) mentr -= row[j] * safe_log(1 - row[j]);
        }
        score = -mentr;
        break;
      }
    }
    scores[static_cast<size_t>(i)] = score;
  }
  return scores;
}

// ML-Leaks adversary 1's features: the three largest probabilities, sorted, zero-padded.
torch::Tensor TopThree(const torch::Tensor& probabilities) {
  torch::Tensor p = probabilities.to(torch::kFloat);
  const int64_t k = std::min<int64_t>(kTopK, p.size(1));
  torch::Tensor top = std::get<0>(torch::topk(p, k, 1, /*largest=*/true, /*sorted=*/true));
  if (k == kTopK) return top.contiguous();
  return torch::cat({top, torch::zeros({p.size(0), kTopK - k})}, 1);
}

double Median(std::vector<double> values) {
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  return (upper + *std::max_element(values.begin(), values.begin() + mid)) / 2;
}

struct LiraScores {
  std::vector<double> online, offline;
};

// LiRA with fixed variance (Carlini et al. 2022, section 4.2; plan 3.4). Per target the median of
// the IN and OUT shadows' phi; one sigma per side, pooled over targets from the residuals around
// those medians (targets with a single shadow on a side add a zero residual by construction and
// are left out of the pool).
LiraScores Lira(const torch::Tensor& in_mask, const torch::Tensor& shadow_phi,
                const std::vector<double>& target_phi) {
  torch::Tensor in = in_mask.to(torch::kBool).contiguous();
  torch::Tensor phi = shadow_phi.to(torch::kDouble).contiguous();
  const int64_t shadows = phi.size(0), targets = phi.size(1);
  const bool* in_data = in.data_ptr<bool>();
  const double* phi_data = phi.data_ptr<double>();
  constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> mu_in(static_cast<size_t>(targets), kMissing), mu_out = mu_in;
  double squares[2] = {0, 0};
  int64_t counted[2] = {0, 0};
  std::vector<double> side[2];
  for (int64_t t = 0; t < targets; ++t) {
    side[0].clear();
    side[1].clear();
    for (int64_t s = 0; s < shadows; ++s)
      side[in_data[s * targets + t] ? 1 : 0].push_back(phi_data[s * targets + t]);
    for (int k = 0; k < 2; ++k) {
      if (side[k].empty()) continue;
      const double median = Median(side[k]);
      (k == 1 ? mu_in : mu_out)[static_cast<size_t>(t)] = median;
      if (side[k].size() < 2) continue;
      for (double v : side[k]) squares[k] += (v - median) * (v - median);
      counted[k] += static_cast<int64_t>(side[k].size());
    }
  }
  // Targets never IN (or never OUT) a shadow take the mean over the others' medians.
  auto fill = [](std::vector<double>& mu) {
    double sum = 0;
    int64_t known = 0;
    for (double v : mu) {
      if (std::isnan(v)) continue;
      sum += v;
      ++known;
    }
    const double mean = known > 0 ? sum / static_cast<double>(known) : 0;
    for (double& v : mu) {
      if (std::isnan(v)) v = mean;
    }
  };
  fill(mu_in);
  fill(mu_out);
  // A floor keeps degenerate shadows (identical phi everywhere) from dividing by zero.
  constexpr double kMinSigma = 1e-6;
  auto sigma = [&](int k) {
    return counted[k] > 0
               ? std::max(kMinSigma, std::sqrt(squares[k] / static_cast<double>(counted[k])))
               : 1.0;
  };
  const double sigma_out = sigma(0), sigma_in = sigma(1);
  // log N(x; mu, sigma) up to the constant, which cancels in the online ratio.
  auto log_normal = [](double x, double mu, double s) {
    const double z = (x - mu) / s;
    return -0.5 * z * z - std::log(s);
  };
  LiraScores scores;
  for (int64_t t = 0; t < targets; ++t) {
    const double x = target_phi[static_cast<size_t>(t)];
    const double in_mu = mu_in[static_cast<size_t>(t)], out_mu = mu_out[static_cast<size_t>(t)];
    scores.online.push_back(log_normal(x, in_mu, sigma_in) - log_normal(x, out_mu, sigma_out));
    // One-sided: how far above the OUT distribution the target sits.
    scores.offline.push_back((x - out_mu) / sigma_out);
  }
  return scores;
}

// phi from a capsule answer: log p_y - log sum_{j != y} p_j in double, summing the other
// probabilities (1 - p_y cancels in float32 for confident members), clamped like score.py.
std::vector<double> PhiFromAnswers(const torch::Tensor& answers, const torch::Tensor& labels) {
  torch::Tensor p = answers.to(torch::kDouble).contiguous();
  torch::Tensor y = labels.to(torch::kLong).contiguous();
  const int64_t n = p.size(0), classes = p.size(1);
  std::vector<double> phi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double* row = p.data_ptr<double>() + i * classes;
    const int64_t true_class = y.data_ptr<int64_t>()[i];
    double others = 0;
    for (int64_t j = 0; j < classes; ++j) {
      if (j != true_class) others += row[j];
    }
    phi[static_cast<size_t>(i)] =
        std::log(std::max(row[true_class], kLiraFloor)) - std::log(std::max(others, kLiraFloor));
  }
  return phi;
}

MiaResult Evaluate(std::string attack, const std::vector<double>& scores, int64_t members,
                   int64_t queries) {
  std::span<const double> all(scores);
  std::span<const double> member_scores = all.first(static_cast<size_t>(members));
  std::span<const double> nonmember_scores = all.subspan(static_cast<size_t>(members));
  MiaResult r;
  r.attack = std::move(attack);
  r.roc = Roc(member_scores, nonmember_scores);
  r.auc = Auc(r.roc);
  r.balanced_accuracy_best = BestBalancedAccuracy(r.roc);
  r.tpr_at_1pct = TprAtFpr(r.roc, 0.01);
  r.tpr_at_01pct = TprAtFpr(r.roc, 0.001);
  r.members = static_cast<int64_t>(member_scores.size());
  r.nonmembers = static_cast<int64_t>(nonmember_scores.size());
  r.queries = queries;
  return r;
}

// Balanced accuracy on the target at a threshold chosen on shadow scores (members first).
double Calibrated(const std::vector<double>& shadow_members,
                  const std::vector<double>& shadow_nonmembers, const std::vector<double>& scores,
                  int64_t members) {
  const double threshold = BestThreshold(shadow_members, shadow_nonmembers);
  std::span<const double> all(scores);
  return BalancedAccuracyAt(all.first(static_cast<size_t>(members)),
                            all.subspan(static_cast<size_t>(members)), threshold);
}

Status CheckShadowSet(const ShadowSet& s) {
  const torch::Tensor* all[] = {&s.lira_in,
                                &s.lira_phi,
                                &s.shadow_member_probs,
                                &s.shadow_nonmember_probs,
                                &s.shadow_member_labels,
                                &s.shadow_nonmember_labels,
                                &s.shadow_member_correct,
                                &s.shadow_nonmember_correct};
  for (const torch::Tensor* t : all) {
    if (!t->defined()) return DataLoss("shadow set: a tensor is missing");
  }
  if (s.lira_in.dim() != 2 || s.lira_in.scalar_type() != torch::kBool ||
      s.lira_phi.scalar_type() != torch::kDouble || !s.lira_phi.sizes().equals(s.lira_in.sizes()))
    return DataLoss("shadow set: lira_in {} and lira_phi {} must be bool and double [S, T]",
                    Shape(s.lira_in), Shape(s.lira_phi));
  const std::pair<const torch::Tensor*, const torch::Tensor*> sides[] = {
      {&s.shadow_member_probs, &s.shadow_member_labels},
      {&s.shadow_nonmember_probs, &s.shadow_nonmember_labels}};
  const torch::Tensor* corrects[] = {&s.shadow_member_correct, &s.shadow_nonmember_correct};
  for (int k = 0; k < 2; ++k) {
    const torch::Tensor& probs = *sides[k].first;
    const torch::Tensor& labels = *sides[k].second;
    const torch::Tensor& correct = *corrects[k];
    if (probs.dim() != 2 || probs.scalar_type() != torch::kFloat || probs.size(0) == 0 ||
        probs.size(1) != s.shadow_member_probs.size(1) || labels.dim() != 1 ||
        labels.scalar_type() != torch::kLong || labels.size(0) != probs.size(0) ||
        correct.dim() != 1 || correct.scalar_type() != torch::kFloat ||
        correct.size(0) != probs.size(0))
      return DataLoss("shadow set: ML-Leaks probabilities {}, labels {} and counts {} disagree",
                      Shape(probs), Shape(labels), Shape(correct));
    MLC_RETURN_IF_ERROR(CheckLabels(labels, static_cast<int>(probs.size(1)), "shadow set"));
  }
  return Status::Ok();
}

}  // namespace

Result<ShadowSet> TrainShadows(const MiaConfig& config, const Splits& splits,
                               const std::string& label) {
  if (config.lira_shadows < 1 || config.mlleaks_shadows < 1 || config.label_only_shift < 0)
    return InvalidArgument(
        "{}: lira_shadows {} and mlleaks_shadows {} must be >= 1, label_only_shift {} >= 0", label,
        config.lira_shadows, config.mlleaks_shadows, config.label_only_shift);
  const int64_t n = TargetsPerSide(splits);
  if (n < 1)
    return InvalidArgument("{}: no membership targets (victim_train or heldout empty)", label);
  // Each ML-Leaks shadow trains on as many images as the victim (overfitting depends on the
  // training-set size, which is part of the recipe the attacker copies; plan 3.3), from disjoint
  // slices of the shadow split: shadow k trains on slice 2k and takes slice 2k+1 as non-members.
  // With one shadow and a shadow split of twice the victim's size this is the split's two halves.
  const int64_t slice = std::min(n, splits.shadow.count / (2 * config.mlleaks_shadows));
  if (slice < 1)
    return InvalidArgument("{}: the shadow split has {} images, too few for {} ML-Leaks shadows",
                           label, splits.shadow.count, config.mlleaks_shadows);
  try {
    const int classes = config.victim_arch.classes;
    const int total = config.lira_shadows + config.mlleaks_shadows;
    ShadowSet set;

    // LiRA: shadow s trains on an independent uniformly random half of the target pool.
    const ImageSet pool = TargetPool(splits, n);
    const torch::Tensor pool_x = ImagesTensor(pool);
    const torch::Tensor pool_y = LabelsTensor(pool);
    MLC_RETURN_IF_ERROR(CheckLabels(pool_y, classes, label + " targets"));
    const int64_t targets = 2 * n;
    set.lira_in = torch::zeros({config.lira_shadows, targets}, torch::kBool);
    set.lira_phi = torch::zeros({config.lira_shadows, targets}, torch::kDouble);
    Rng halves(DeriveSeed(config.seed, "lira-halves"));
    for (int s = 0; s < config.lira_shadows; ++s) {
      const auto start = Clock::now();
      std::vector<int64_t> half = halves.Sample(targets, n);
      std::sort(half.begin(), half.end());
      torch::Tensor index = torch::tensor(half, torch::kLong);
      set.lira_in[s].index_fill_(0, index, true);
      const uint64_t seed = DeriveSeed(config.seed, fmt::format("lira-{}", s));
      Net net = MakeNet(config.victim_arch, seed);
      TrainOptions recipe = config.victim_train;
      recipe.seed = seed;
      recipe.progress = false;
      const torch::Tensor x = pool_x.index_select(0, index);
      const torch::Tensor y = pool_y.index_select(0, index);
      const std::string name = fmt::format("{} lira shadow {}", label, s + 1);
      MLC_RETURN_IF_ERROR(Train(net, x, y, recipe, name));
      const torch::Tensor logits = Predict(net, pool_x);
      set.lira_phi[s].copy_(PhiFromLogits(logits, pool_y));
      const double train_accuracy =
          logits.index_select(0, index).argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
      fmt::print(stderr, "  {}: shadow {}/{} trained (lira, train acc {:.3f}, {:.1f} s)\n", label,
                 s + 1, total, train_accuracy, SecondsSince(start));
    }

    // ML-Leaks (and the label-only calibration) on disjoint slices of the shadow split.
    std::vector<torch::Tensor> member_probs, nonmember_probs, member_labels, nonmember_labels,
        member_correct, nonmember_correct;
    for (int k = 0; k < config.mlleaks_shadows; ++k) {
      const auto start = Clock::now();
      const ImageSet members = splits.shadow.Slice(2 * k * slice, slice);
      const ImageSet nonmembers = splits.shadow.Slice((2 * k + 1) * slice, slice);
      const torch::Tensor member_x = ImagesTensor(members), nonmember_x = ImagesTensor(nonmembers);
      const torch::Tensor member_y = LabelsTensor(members), nonmember_y = LabelsTensor(nonmembers);
      MLC_RETURN_IF_ERROR(CheckLabels(member_y, classes, label + " shadow split"));
      MLC_RETURN_IF_ERROR(CheckLabels(nonmember_y, classes, label + " shadow split"));
      const uint64_t seed = DeriveSeed(config.seed, fmt::format("mlleaks-{}", k));
      Net net = MakeNet(config.victim_arch, seed);
      TrainOptions recipe = config.victim_train;
      recipe.seed = seed;
      recipe.progress = false;
      MLC_RETURN_IF_ERROR(Train(net, member_x, member_y, recipe,
                                fmt::format("{} ml-leaks shadow {}", label, k + 1)));
      const torch::Tensor member_logits = Predict(net, member_x);
      member_probs.push_back(torch::softmax(member_logits, 1).to(torch::kFloat));
      nonmember_probs.push_back(torch::softmax(Predict(net, nonmember_x), 1).to(torch::kFloat));
      member_labels.push_back(member_y);
      nonmember_labels.push_back(nonmember_y);
      member_correct.push_back(
          CorrectTranslations(net, member_x, member_y, config.label_only_shift));
      nonmember_correct.push_back(
          CorrectTranslations(net, nonmember_x, nonmember_y, config.label_only_shift));
      const double train_accuracy =
          member_logits.argmax(1).eq(member_y).to(torch::kDouble).mean().item<double>();
      fmt::print(stderr, "  {}: shadow {}/{} trained (ml-leaks, train acc {:.3f}, {:.1f} s)\n",
                 label, config.lira_shadows + k + 1, total, train_accuracy, SecondsSince(start));
    }
    set.shadow_member_probs = torch::cat(member_probs);
    set.shadow_nonmember_probs = torch::cat(nonmember_probs);
    set.shadow_member_labels = torch::cat(member_labels);
    set.shadow_nonmember_labels = torch::cat(nonmember_labels);
    set.shadow_member_correct = torch::cat(member_correct);
    set.shadow_nonmember_correct = torch::cat(nonmember_correct);
    return set;
  } catch (const std::exception& e) {
    return InternalError("{}: shadow training failed in libtorch: {}", label, e.what());
  }
}

Status SaveShadowSet(const ShadowSet& set, const std::string& path) {
  MLC_RETURN_IF_ERROR(CheckShadowSet(set).WithContext("cannot save an incomplete shadow set"));
  // Written beside the destination and renamed, so a crash never leaves a half-written cache file.
  const std::string temporary = path + ".tmp";
  try {
    std::vector<torch::Tensor> tensors = {torch::tensor({kShadowSetMagic, kShadowSetVersion}),
                                          set.lira_in,
                                          set.lira_phi,
                                          set.shadow_member_probs,
                                          set.shadow_nonmember_probs,
                                          set.shadow_member_labels,
                                          set.shadow_nonmember_labels,
                                          set.shadow_member_correct,
                                          set.shadow_nonmember_correct};
    torch::save(tensors, temporary);
  } catch (const std::exception& e) {
    return IoError("{}: cannot save the shadow set: {}", path, e.what());
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) return IoError("{}: cannot save the shadow set: {}", path, ec.message());
  return Status::Ok();
}

Result<ShadowSet> LoadShadowSet(const std::string& path) {
  std::vector<torch::Tensor> tensors;
  try {
    torch::load(tensors, path);
  } catch (const std::exception& e) {
    return DataLoss("{}: cannot load the shadow set: {}", path, e.what());
  }
  if (tensors.size() != kShadowSetTensors)
    return DataLoss("{}: {} tensors in a shadow set, expected {}", path, tensors.size(),
                    kShadowSetTensors);
  const torch::Tensor& header = tensors[0];
  if (!header.defined() || header.scalar_type() != torch::kLong || header.numel() != 2 ||
      header[0].item<int64_t>() != kShadowSetMagic)
    return DataLoss("{}: not a shadow set", path);
  if (const int64_t version = header[1].item<int64_t>(); version != kShadowSetVersion)
    return DataLoss("{}: shadow set version {}, this build reads {}", path, version,
                    kShadowSetVersion);
  ShadowSet set;
  set.lira_in = tensors[1];
  set.lira_phi = tensors[2];
  set.shadow_member_probs = tensors[3];
  set.shadow_nonmember_probs = tensors[4];
  set.shadow_member_labels = tensors[5];
  set.shadow_nonmember_labels = tensors[6];
  set.shadow_member_correct = tensors[7];
  set.shadow_nonmember_correct = tensors[8];
  MLC_RETURN_IF_ERROR(CheckShadowSet(set).WithContext(path));
  return set;
}

Result<std::vector<MiaResult>> RunMembershipAttacks(const MiaConfig& config,
                                                    const ShadowSet& shadows, const Splits& splits,
                                                    CapsuleOracle& oracle,
                                                    const std::string& label) {
  MLC_RETURN_IF_ERROR(CheckShadowSet(shadows).WithContext(label));
  const int64_t n = TargetsPerSide(splits);
  if (n < 1) return InvalidArgument("{}: no membership targets", label);
  if (shadows.lira_phi.size(1) != 2 * n)
    return InvalidArgument("{}: the shadow set has {} LiRA targets, the splits give {}", label,
                           shadows.lira_phi.size(1), 2 * n);
  const int classes = oracle.classes();
  if (shadows.shadow_member_probs.size(1) != classes)
    return InvalidArgument("{}: the shadows have {} classes, the capsule {}", label,
                           shadows.shadow_member_probs.size(1), classes);
  if (config.label_only_shift < 0)
    return InvalidArgument("{}: label_only_shift {} must be >= 0", label, config.label_only_shift);
  try {
    const ImageSet pool = TargetPool(splits, n);
    const torch::Tensor x = ImagesTensor(pool);
    const torch::Tensor y = LabelsTensor(pool);
    MLC_RETURN_IF_ERROR(CheckLabels(y, classes, label + " targets"));
    const int64_t targets = 2 * n;
    MLC_ASSIGN_OR_RETURN(torch::Tensor answers, QueryAll(oracle, x));

    std::vector<MiaResult> results;
    auto report = [&](MiaResult r) {
      fmt::print(stderr, "  {}: {} AUC {:.3f} TPR@0.1% {:.1f}% ({} members, {} non-members)\n",
                 label, r.attack, r.auc, 100 * r.tpr_at_01pct, r.members, r.nonmembers);
      results.push_back(std::move(r));
    };

    // Threshold attacks, calibrated on the ML-Leaks shadows' own members and non-members.
    const std::pair<const char*, ThresholdKind> thresholds[] = {
        {"loss", ThresholdKind::kLoss},
        {"confidence", ThresholdKind::kConfidence},
        {"entropy", ThresholdKind::kEntropy},
        {"mentr", ThresholdKind::kModifiedEntropy}};
    for (const auto& [name, kind] : thresholds) {
      const std::vector<double> scores = ThresholdScores(kind, answers, y);
      MiaResult r = Evaluate(name, scores, n, targets);
      r.balanced_accuracy_calibrated = Calibrated(
          ThresholdScores(kind, shadows.shadow_member_probs, shadows.shadow_member_labels),
          ThresholdScores(kind, shadows.shadow_nonmember_probs, shadows.shadow_nonmember_labels),
          scores, n);
      report(std::move(r));
    }

    // ML-Leaks adversary 1: an MLP on the sorted top-3, trained on the shadows.
    {
      ArchSpec spec;
      spec.kind = ArchSpec::Kind::kMlp;
      spec.inputs = kTopK;
      spec.hidden = {64};
      spec.classes = 1;
      spec.sigmoid_output = true;
      spec.log_input = false;
      const uint64_t seed = DeriveSeed(config.seed, "mlleaks-attack");
      Net attack = MakeNet(spec, seed);
      const torch::Tensor features = torch::cat(
          {TopThree(shadows.shadow_member_probs), TopThree(shadows.shadow_nonmember_probs)});
      const torch::Tensor is_member =
          torch::cat({torch::ones({shadows.shadow_member_probs.size(0), 1}),
                      torch::zeros({shadows.shadow_nonmember_probs.size(0), 1})});
      TrainOptions recipe;
      recipe.epochs = kAttackEpochs;
      recipe.batch = 128;
      recipe.lr = 1e-3;
      recipe.seed = seed;
      MLC_RETURN_IF_ERROR(Train(attack, features, is_member, recipe, label + " ml-leaks attack"));
      const std::vector<double> scores = ToVector(MemberLogits(attack, TopThree(answers)));
      MiaResult r = Evaluate("ml-leaks", scores, n, targets);
      // The attack model's own decision: probability 0.5, logit 0.
      std::span<const double> all(scores);
      r.balanced_accuracy_calibrated = BalancedAccuracyAt(all.first(static_cast<size_t>(n)),
                                                          all.subspan(static_cast<size_t>(n)), 0.0);
      report(std::move(r));
    }

    // LiRA online and offline.
    {
      LiraScores lira = Lira(shadows.lira_in, shadows.lira_phi, PhiFromAnswers(answers, y));
      report(Evaluate("lira-online", lira.online, n, targets));
      report(Evaluate("lira-offline", lira.offline, n, targets));
    }

    // Label-only: how many translations the capsule labels correctly. The identity's answers are
    // already in hand; the attack still costs 4d+1 queries per target on its own.
    {
      const auto shifts = Translations(config.label_only_shift);
      torch::Tensor correct = answers.argmax(1).eq(y).to(torch::kDouble);
      for (size_t i = 1; i < shifts.size(); ++i) {
        MLC_ASSIGN_OR_RETURN(torch::Tensor shifted,
                             QueryAll(oracle, Translate(x, shifts[i].first, shifts[i].second)));
        correct += shifted.argmax(1).eq(y).to(torch::kDouble);
      }
      const std::vector<double> scores = ToVector(correct);
      MiaResult r =
          Evaluate("label-only", scores, n, static_cast<int64_t>(shifts.size()) * targets);
      r.balanced_accuracy_calibrated =
          Calibrated(ToVector(shadows.shadow_member_correct),
                     ToVector(shadows.shadow_nonmember_correct), scores, n);
      report(std::move(r));
    }
    return results;
  } catch (const std::exception& e) {
    return InternalError("{}: membership attacks failed in libtorch: {}", label, e.what());
  }
}

Result<DefenderClassifier> TrainDefenderClassifier(Net& victim, const Splits& splits, uint64_t seed,
                                                   const std::string& label) {
  const int64_t members = splits.victim_train.count, nonmembers = splits.defender_nonmember.count;
  if (members < 2 || nonmembers < 2)
    return InvalidArgument("{}: {} members and {} non-members; the defender needs >= 2 of each",
                           label, members, nonmembers);
  try {
    const auto start = Clock::now();
    const int classes = victim->spec().classes;
    const torch::Tensor member_p =
        torch::softmax(Predict(victim, ImagesTensor(splits.victim_train)), 1);
    const torch::Tensor nonmember_p =
        torch::softmax(Predict(victim, ImagesTensor(splits.defender_nonmember)), 1);
    // A deterministic 80/20 split of each side; the fifth held out measures g.
    Rng rng(DeriveSeed(seed, "defender-split"));
    auto split = [&rng](int64_t count) {
      std::vector<int64_t> order = rng.Sample(count, count);
      const int64_t train = std::clamp<int64_t>(count * 4 / 5, 1, count - 1);
      return std::pair{torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + train)),
                       torch::tensor(std::vector<int64_t>(order.begin() + train, order.end()))};
    };
    const auto [member_train, member_test] = split(members);
    const auto [nonmember_train, nonmember_test] = split(nonmembers);
    const torch::Tensor x = torch::cat(
        {member_p.index_select(0, member_train), nonmember_p.index_select(0, nonmember_train)});
    const torch::Tensor target = torch::cat(
        {torch::ones({member_train.size(0), 1}), torch::zeros({nonmember_train.size(0), 1})});
    DefenderClassifier defender;
    defender.net = MakeNet(MembershipClassifier(classes), seed);
    TrainOptions recipe;
    recipe.epochs = kDefenderEpochs;
    recipe.batch = 128;
    recipe.lr = 1e-3;
    recipe.seed = DeriveSeed(seed, "defender-order");
    MLC_RETURN_IF_ERROR(Train(defender.net, x, target, recipe, label + " defender classifier"));
    const std::vector<double> member_scores =
        ToVector(MemberLogits(defender.net, member_p.index_select(0, member_test)));
    const std::vector<double> nonmember_scores =
        ToVector(MemberLogits(defender.net, nonmember_p.index_select(0, nonmember_test)));
    defender.heldout_auc = Auc(Roc(member_scores, nonmember_scores));
    fmt::print(stderr,
               "  {}: defender classifier held-out AUC {:.3f} ({} members, {} non-members held "
               "out, {:.1f} s)\n",
               label, defender.heldout_auc, member_scores.size(), nonmember_scores.size(),
               SecondsSince(start));
    return defender;
  } catch (const std::exception& e) {
    return InternalError("{}: defender classifier failed in libtorch: {}", label, e.what());
  }
}

}  // namespace mlcapsule::lab
