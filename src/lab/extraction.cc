// Extraction attacks against a capsule (extraction.h). Every query goes through the oracle, that
// is through the real client and trusted core; the substitutes are libtorch models.
#include "lab/extraction.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>

#include "base/file_util.h"
#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

using Clock = std::chrono::steady_clock;

// State every attack shares: the transcript of queries and answers, syncing, and measuring.
class Harness {
 public:
  Harness(const AttackConfig& config, AttackContext& context)
      : config_(config), context_(context), rng_(config.seed), start_(Clock::now()) {}

  const AttackConfig& config() const { return config_; }
  AttackContext& context() { return context_; }
  Rng& rng() { return rng_; }
  int64_t queried() const { return queried_; }
  int64_t max_budget() const { return config_.budgets.back(); }
  bool soft() const { return config_.soft_labels && !context_.oracle->label_only(); }

  // Queries x ([n,1,28,28]); returns the answers [n, C] (probabilities or one-hot labels).
  Result<torch::Tensor> Query(const torch::Tensor& x) {
    torch::Tensor images = x.detach().to(torch::kFloat).clamp(0, 1).contiguous();
    const int64_t n = images.size(0);
    const int classes = context_.oracle->classes();
    // In chunks of the oracle's batch (the same Infer calls as one Query), so that on_query
    // reports progress between them.
    constexpr int64_t kChunk = 256;
    std::vector<float> answers(static_cast<size_t>(n * classes)), part;
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      const int64_t rows = std::min(kChunk, n - begin);
      MLC_RETURN_IF_ERROR(context_.oracle->Query(
          std::span<const float>(images.data_ptr<float>() + begin * kImagePixels,
                                 static_cast<size_t>(rows * kImagePixels)),
          rows, &part));
      std::copy(part.begin(), part.end(), answers.begin() + begin * classes);
      if (context_.on_query) context_.on_query(queried_ + begin + rows);
    }
    torch::Tensor y = torch::from_blob(answers.data(), {n, classes}, torch::kFloat).clone();
    xs_.push_back(images);
    ys_.push_back(y);
    queried_ += n;
    if (queried_ - last_sync_ >= config_.sync_every) MLC_RETURN_IF_ERROR(Sync());
    return y;
  }

  Status Sync() {
    MLC_ASSIGN_OR_RETURN(last_sync_result_, context_.oracle->Sync());
    last_sync_ = queried_;
    ++syncs_;
    if (context_.on_sync) context_.on_sync(queried_, last_sync_result_);
    return Status::Ok();
  }

  torch::Tensor X() {
    Compact();
    return xs_.empty() ? torch::empty({0, 1, kImageSide, kImageSide}) : xs_[0];
  }
  torch::Tensor Y() {
    Compact();
    return ys_.empty() ? torch::empty({0, context_.oracle->classes()}) : ys_[0];
  }
  // Training targets: probabilities, or the answers' top-1 as class labels.
  torch::Tensor Targets(const torch::Tensor& y) const { return soft() ? y : y.argmax(1); }

  // A fresh substitute trained on everything queried so far (the common snapshot recipe).
  Result<Net> Snapshot(const std::string& tag) {
    Net net = MakeNet(config_.substitute, DeriveSeed(config_.seed, tag));
    const int64_t n = std::max<int64_t>(1, queried_);
    TrainOptions t;
    t.epochs = static_cast<int>(std::clamp<int64_t>((config_.snapshot_passes + n - 1) / n,
                                                    config_.snapshot_min_epochs,
                                                    config_.snapshot_max_epochs));
    t.seed = DeriveSeed(config_.seed, tag + "/order");
    torch::Tensor x = X();
    MLC_RETURN_IF_ERROR(Train(net, x, Targets(Y()), t, context_.label + " " + tag));
    return net;
  }

  // A checkpoint without a substitute (AttackContext::measure false): sync and record.
  Result<Checkpoint> Record() {
    // Query() may have just synced at this count; a second renewal would add nothing.
    if (syncs_ == 0 || last_sync_ != queried_) MLC_RETURN_IF_ERROR(Sync());
    Checkpoint c;
    c.queries = queried_;
    c.prada_alarm_at = last_sync_result_.prada_alarm_at;
    c.escrowed = last_sync_result_.escrowed;
    c.escrow_dropped = last_sync_result_.escrow_dropped;
    c.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return c;
  }

  // The checkpoint at `budget`: a fresh snapshot substitute, measured.
  Result<Checkpoint> SnapshotAndMeasure(int64_t budget) {
    if (!context_.measure) return Record();
    MLC_ASSIGN_OR_RETURN(Net sub, Snapshot(fmt::format("snapshot-{}", budget)));
    return Measure(sub, budget);
  }

  Result<Checkpoint> Measure(Net& substitute, int64_t budget) {
    if (!context_.measure) return Record();
    MLC_RETURN_IF_ERROR(Sync());
    Checkpoint c;
    c.queries = queried_;
    torch::Tensor logits = Predict(substitute, context_.test_images);
    torch::Tensor predicted = logits.argmax(1);
    c.accuracy = predicted.eq(context_.test_labels).to(torch::kDouble).mean().item<double>();
    c.fidelity = predicted.eq(context_.victim_test_labels).to(torch::kDouble).mean().item<double>();
    c.prada_alarm_at = last_sync_result_.prada_alarm_at;
    c.escrowed = last_sync_result_.escrowed;
    c.escrow_dropped = last_sync_result_.escrow_dropped;
    if (context_.oracle->has_escrow()) {
      MLC_ASSIGN_OR_RETURN(std::string onnx, ExportOnnx(substitute));
      const std::string path = fmt::format("{}/substitute-{}.onnx", context_.work_dir, budget);
      MLC_RETURN_IF_ERROR(WriteFile(path, onnx));
      MLC_ASSIGN_OR_RETURN(c.watermark, context_.oracle->VerifyWatermark(path));
      c.watermark_checked = true;
    }
    c.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    std::string wm =
        c.watermark_checked
            ? fmt::format(", watermark {} ({}/{} samples, log2 P {:.1f})", c.watermark.verdict,
                          c.watermark.matches, c.watermark.samples, c.watermark.log2_chance)
            : "";
    std::fprintf(
        stderr, "  %s: %lld queries: accuracy %.3f fidelity %.3f%s%s (%.0f s)\n",
        context_.label.c_str(), static_cast<long long>(c.queries), c.accuracy, c.fidelity,
        c.prada_alarm_at >= 0 ? fmt::format(", PRADA alarm at {}", c.prada_alarm_at).c_str() : "",
        wm.c_str(), c.seconds);
    return c;
  }

 private:
  void Compact() {
    if (xs_.size() > 1) {
      xs_ = {torch::cat(xs_, 0)};
      ys_ = {torch::cat(ys_, 0)};
    }
  }

  const AttackConfig& config_;
  AttackContext& context_;
  Rng rng_;
  Clock::time_point start_;
  std::vector<torch::Tensor> xs_, ys_;
  int64_t queried_ = 0, last_sync_ = 0, syncs_ = 0;
  OracleSync last_sync_result_;
};

torch::Tensor Rows(const ImageSet& set, std::span<const int64_t> indices) {
  ImageSet part = set.Gather(indices);
  return ImagesTensor(part);
}

// Random sampling without replacement from a pool (Copycat with in-distribution data; Knockoff's
// random adversary with the out-of-distribution pool); a fresh substitute at each checkpoint.
Result<std::vector<Checkpoint>> RunPoolSampling(Harness& h, const ImageSet& pool) {
  std::vector<Checkpoint> out;
  const int64_t total = std::min(h.max_budget(), pool.count);
  std::vector<int64_t> order = h.rng().Sample(pool.count, total);
  for (int64_t budget : h.config().budgets) {
    const int64_t end = std::min(budget, total);
    if (end > h.queried()) {
      std::span<const int64_t> next(order.data() + h.queried(),
                                    static_cast<size_t>(end - h.queried()));
      MLC_RETURN_IF_ERROR(h.Query(Rows(pool, next)).status());
    }
    MLC_ASSIGN_OR_RETURN(Checkpoint c, h.SnapshotAndMeasure(budget));
    out.push_back(c);
    if (end < budget) break;  // the pool ran out
  }
  return out;
}

// Knockoff Nets' adaptive adversary: a gradient bandit (Sutton & Barto 2.8) over the pool's arms
// (glyph classes and Fashion-MNIST transformations), rewarded for certainty, diversity and the
// working substitute's loss, each rescaled to [0, 1] by its running range (Orekondy et al. 2019,
// section 4.1.2). Arms are drawn for a batch of queries at a time, then updated one by one.
Result<std::vector<Checkpoint>> RunKnockoffAdaptive(Harness& h, const ImageSet& pool, int arms) {
  const AttackConfig& cfg = h.config();
  std::vector<std::vector<int64_t>> by_arm(static_cast<size_t>(arms));
  for (int64_t i = 0; i < pool.count; ++i) {
    const int32_t a = pool.labels[static_cast<size_t>(i)];
    if (a >= 0 && a < arms) by_arm[static_cast<size_t>(a)].push_back(i);
  }
  for (auto& list : by_arm) h.rng().Shuffle(list);
  std::vector<size_t> next(static_cast<size_t>(arms), 0);
  std::vector<double> preference(static_cast<size_t>(arms), 0.0);
  double mean_reward = 0;
  int64_t steps = 0;
  struct Range {
    double lo = INFINITY, hi = -INFINITY;
    double Scale(double v) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      return hi > lo ? (v - lo) / (hi - lo) : 0.5;
    }
  } certainty_range, diversity_range, loss_range;
  std::deque<torch::Tensor> window;  // the last 50 answers (diversity reward)
  Net working = MakeNet(cfg.substitute, DeriveSeed(cfg.seed, "working"));
  int64_t last_retrain = 0;
  std::vector<Checkpoint> out;
  std::vector<int64_t> arm_counts(static_cast<size_t>(arms), 0);
  for (int64_t budget : cfg.budgets) {
    while (h.queried() < budget) {
      int64_t unqueried = 0;
      for (int a = 0; a < arms; ++a)
        unqueried += static_cast<int64_t>(by_arm[static_cast<size_t>(a)].size() -
                                          next[static_cast<size_t>(a)]);
      // Never draw more than the pool has left (the arm search below needs an open arm).
      const int64_t n = std::min({cfg.bandit_batch, budget - h.queried(), unqueried});
      std::vector<double> pi(static_cast<size_t>(arms));
      double z = 0, top = *std::max_element(preference.begin(), preference.end());
      for (int a = 0; a < arms; ++a) {
        const bool open = next[static_cast<size_t>(a)] < by_arm[static_cast<size_t>(a)].size();
        pi[static_cast<size_t>(a)] = open ? std::exp(preference[static_cast<size_t>(a)] - top) : 0;
        z += pi[static_cast<size_t>(a)];
      }
      if (z <= 0) break;  // pool exhausted
      for (double& p : pi) p /= z;
      std::vector<int64_t> picks, chosen_arms;
      for (int64_t i = 0; i < n; ++i) {
        double u = h.rng().Uniform(), acc = 0;
        int a = 0;
        for (; a < arms - 1; ++a) {
          acc += pi[static_cast<size_t>(a)];
          if (u < acc) break;
        }
        while (next[static_cast<size_t>(a)] >= by_arm[static_cast<size_t>(a)].size())
          a = (a + 1) % arms;
        picks.push_back(by_arm[static_cast<size_t>(a)][next[static_cast<size_t>(a)]++]);
        chosen_arms.push_back(a);
      }
      torch::Tensor x = Rows(pool, picks);
      MLC_ASSIGN_OR_RETURN(torch::Tensor y, h.Query(x));
      torch::Tensor q = torch::softmax(Predict(working, x), 1);
      for (int64_t i = 0; i < static_cast<int64_t>(picks.size()); ++i) {
        torch::Tensor yi = y[i];
        torch::Tensor top2 = std::get<0>(yi.topk(2));
        const double certainty = (top2[0] - top2[1]).item<double>();
        double diversity = 0;
        if (!window.empty()) {
          torch::Tensor mean =
              torch::stack(std::vector<torch::Tensor>(window.begin(), window.end())).mean(0);
          diversity = torch::clamp_min(yi - mean, 0).sum().item<double>();
        }
        window.push_back(yi);
        if (window.size() > 50) window.pop_front();
        const double loss = -(yi * torch::log(q[i].clamp_min(1e-8))).sum().item<double>();
        const double reward = certainty_range.Scale(certainty) + diversity_range.Scale(diversity) +
                              loss_range.Scale(loss);
        ++steps;
        mean_reward += (reward - mean_reward) / static_cast<double>(steps);
        const int a = static_cast<int>(chosen_arms[static_cast<size_t>(i)]);
        ++arm_counts[static_cast<size_t>(a)];
        for (int b = 0; b < arms; ++b) {
          const double delta = cfg.bandit_step * (reward - mean_reward);
          preference[static_cast<size_t>(b)] += b == a ? delta * (1 - pi[static_cast<size_t>(b)])
                                                       : -delta * pi[static_cast<size_t>(b)];
        }
      }
      if (h.queried() - last_retrain >= cfg.bandit_retrain) {
        working =
            MakeNet(cfg.substitute, DeriveSeed(cfg.seed, fmt::format("working-{}", h.queried())));
        TrainOptions t;
        t.epochs =
            static_cast<int>(std::clamp<int64_t>(20000 / std::max<int64_t>(1, h.queried()), 3, 20));
        t.seed = DeriveSeed(cfg.seed, fmt::format("working-order-{}", h.queried()));
        MLC_RETURN_IF_ERROR(
            Train(working, h.X(), h.Targets(h.Y()), t, h.context().label + " working"));
        last_retrain = h.queried();
      }
    }
    MLC_ASSIGN_OR_RETURN(Checkpoint c, h.SnapshotAndMeasure(budget));
    out.push_back(c);
    if (h.queried() < budget) break;
  }
  std::string favoured;
  for (int a = 0; a < arms; ++a)
    if (arm_counts[static_cast<size_t>(a)] > 0)
      favoured += fmt::format(" {}:{}", a, arm_counts[static_cast<size_t>(a)]);
  std::fprintf(stderr, "  %s: queries per arm:%s\n", h.context().label.c_str(), favoured.c_str());
  return out;
}

// Papernot et al. 2017: a seed set labelled by the victim, then rounds of "train the substitute,
// step every known point along the sign of the substitute's Jacobian row for the victim's label".
// The step alternates sign every tau rounds; past `reservoir` points a round augments only a random
// reservoir of that many (Papernot, McDaniel, Goodfellow 2016), so large budgets stay reachable.
Result<std::vector<Checkpoint>> RunJbda(Harness& h) {
  const AttackConfig& cfg = h.config();
  AttackContext& ctx = h.context();
  std::vector<Checkpoint> out;
  std::vector<int64_t> seeds = h.rng().Sample(
      ctx.splits->attacker_pool.count, std::min(cfg.jbda_seeds, ctx.splits->attacker_pool.count));
  torch::Tensor pending = Rows(ctx.splits->attacker_pool, seeds);
  size_t next_budget = 0;
  for (int round = 0; next_budget < cfg.budgets.size(); ++round) {
    // Query the pending points, stopping at each checkpoint on the way.
    int64_t offset = 0;
    while (offset < pending.size(0) && next_budget < cfg.budgets.size()) {
      const int64_t budget = cfg.budgets[next_budget];
      const int64_t n = std::min(pending.size(0) - offset, budget - h.queried());
      if (n > 0) {
        MLC_RETURN_IF_ERROR(h.Query(pending.slice(0, offset, offset + n)).status());
        offset += n;
      }
      if (h.queried() >= budget) {
        MLC_ASSIGN_OR_RETURN(Checkpoint c, h.SnapshotAndMeasure(budget));
        out.push_back(c);
        ++next_budget;
      }
    }
    if (next_budget >= cfg.budgets.size()) break;
    // Train this round's substitute on everything known, then augment.
    Net working = MakeNet(cfg.substitute, DeriveSeed(cfg.seed, fmt::format("jbda-{}", round)));
    TrainOptions t;
    t.epochs = static_cast<int>(std::clamp<int64_t>(
        cfg.jbda_passes / std::max<int64_t>(1, h.queried()), 2, cfg.jbda_epochs));
    t.sgd = true;
    t.lr = 1e-2;
    t.seed = DeriveSeed(cfg.seed, fmt::format("jbda-order-{}", round));
    torch::Tensor x = h.X(), y = h.Y();
    MLC_RETURN_IF_ERROR(Train(working, x, h.Targets(y), t, ctx.label + " round"));
    torch::Tensor base = x, labels = y.argmax(1);
    if (x.size(0) > cfg.jbda_reservoir) {
      std::vector<int64_t> pick = h.rng().Sample(x.size(0), cfg.jbda_reservoir);
      torch::Tensor idx =
          torch::from_blob(pick.data(), {static_cast<int64_t>(pick.size())}, torch::kLong).clone();
      base = x.index_select(0, idx);
      labels = labels.index_select(0, idx);
    }
    const double lambda = cfg.jbda_lambda * (((round / cfg.jbda_tau) % 2 == 0) ? 1.0 : -1.0);
    std::vector<torch::Tensor> fresh;
    for (auto& p : working->parameters()) p.set_requires_grad(false);
    for (int64_t b = 0; b < base.size(0); b += 256) {
      torch::Tensor xb =
          base.slice(0, b, std::min<int64_t>(base.size(0), b + 256)).clone().requires_grad_(true);
      torch::Tensor lb = labels.slice(0, b, std::min<int64_t>(base.size(0), b + 256));
      torch::Tensor p = torch::softmax(working->forward(xb), 1).gather(1, lb.unsqueeze(1)).sum();
      torch::Tensor g = torch::autograd::grad({p}, {xb})[0];
      fresh.push_back((xb.detach() + lambda * g.sign()).clamp(0, 1));
    }
    pending = torch::cat(fresh, 0);
  }
  return out;
}

// CloudLeak's FeatureFool (Yu et al., NDSS 2020). The substitute starts from a backbone
// pretrained on another labelled domain (glyphs) with a new 10-way head. Round 0 buys natural
// pool images and trains the head; each later round synthesises candidates from unqueried
// source images x_s by minimising
//   lambda * ||x' - x_s||^2 + max(D(phi(x'), phi(x_t)) - D(phi(x'), phi(x_s)) + M, 0)
// over the box [0,1] intersected with the L-infinity ball of radius epsilon around x_s, where phi
// are the substitute's L2-normalised penultimate features, D the squared distance, x_t a guide
// image of the source's runner-up class and M = alpha - (mean intra-class feature distance of
// that class), floored. The optimiser is projected sign-gradient descent (the constrained problem
// the paper solves with box-constrained L-BFGS). Candidates are ranked by the substitute's
// uncertainty (smallest top-2 margin), the most uncertain are queried, and the whole substitute
// is fine-tuned on everything bought so far.
Result<std::vector<Checkpoint>> RunFeatureFool(Harness& h) {
  const AttackConfig& cfg = h.config();
  AttackContext& ctx = h.context();
  if (ctx.backbone == nullptr) return InvalidArgument("featurefool needs the pretrained backbone");
  const ImageSet& pool = ctx.splits->attacker_pool;
  const int classes = ctx.oracle->classes();
  // The working substitute: the backbone's weights with a fresh head.
  Net working = CloneWithNewHead(*ctx.backbone, classes, DeriveSeed(cfg.seed, "ff-head"));
  std::vector<int64_t> rounds = {100, 250, 500, 1000, 2000, 5000, 10000, 15000, 20000};
  for (int64_t b : cfg.budgets) rounds.push_back(b);
  std::sort(rounds.begin(), rounds.end());
  rounds.erase(std::unique(rounds.begin(), rounds.end()), rounds.end());
  std::erase_if(rounds, [&](int64_t r) { return r > h.max_budget(); });
  std::vector<int64_t> sources = h.rng().Sample(pool.count, pool.count);
  size_t source_next = 0;
  std::vector<Checkpoint> out;
  auto fine_tune = [&](bool head_only, const std::string& tag) -> Status {
    TrainOptions t;
    const int64_t n = std::max<int64_t>(1, h.queried());
    t.epochs = static_cast<int>(std::clamp<int64_t>((cfg.ff_passes + n - 1) / n, 3, 40));
    t.lr = 1e-3;
    t.body_lr = head_only ? 0.0 : 1e-4;
    t.seed = DeriveSeed(cfg.seed, tag);
    return Train(working, h.X(), h.Targets(h.Y()), t, ctx.label + " " + tag);
  };
  for (size_t r = 0; r < rounds.size(); ++r) {
    const int64_t want = rounds[r] - h.queried();
    if (want <= 0) continue;
    if (r == 0) {
      std::span<const int64_t> pick(sources.data(), static_cast<size_t>(want));
      source_next = static_cast<size_t>(want);
      MLC_RETURN_IF_ERROR(h.Query(Rows(pool, pick)).status());
      MLC_RETURN_IF_ERROR(fine_tune(true, "ff-round-0"));
    } else {
      const int64_t candidates = std::min<int64_t>(want * cfg.ff_candidates,
                                                   pool.count - static_cast<int64_t>(source_next));
      if (candidates < want) break;  // pool exhausted
      std::span<const int64_t> pick(sources.data() + source_next, static_cast<size_t>(candidates));
      source_next += static_cast<size_t>(candidates);
      torch::Tensor xs = Rows(pool, pick);
      // The guide bank: queried images, the substitute's features and top-1 and confidence.
      torch::Tensor bank_x = h.X();
      torch::Tensor bank_feat, bank_pred, bank_conf;
      {
        torch::NoGradGuard no_grad;
        working->eval();
        bank_feat = torch::nn::functional::normalize(
            working->features(bank_x), torch::nn::functional::NormalizeFuncOptions().dim(1));
        torch::Tensor prob = torch::softmax(working->head(working->features(bank_x)), 1);
        std::tie(bank_conf, bank_pred) = prob.max(1);
      }
      // Margins per class (Eq. 11): alpha - mean pairwise squared distance within the class.
      std::vector<double> margin(static_cast<size_t>(classes), cfg.ff_alpha);
      std::vector<std::vector<int64_t>> members(static_cast<size_t>(classes));
      std::vector<std::vector<int64_t>> confident(static_cast<size_t>(classes));
      auto pred_acc = bank_pred.accessor<int64_t, 1>();
      auto conf_acc = bank_conf.accessor<float, 1>();
      for (int64_t i = 0; i < bank_x.size(0); ++i) {
        members[static_cast<size_t>(pred_acc[i])].push_back(i);
        if (conf_acc[i] >= 0.9) confident[static_cast<size_t>(pred_acc[i])].push_back(i);
      }
      for (int c = 0; c < classes; ++c) {
        auto& m = members[static_cast<size_t>(c)];
        if (m.size() < 2) continue;
        std::vector<int64_t> sample = m;
        if (sample.size() > 200) {
          h.rng().Shuffle(sample);
          sample.resize(200);
        }
        torch::Tensor idx =
            torch::from_blob(sample.data(), {static_cast<int64_t>(sample.size())}, torch::kLong)
                .clone();
        torch::Tensor f = bank_feat.index_select(0, idx);
        torch::Tensor d = torch::cdist(f, f).pow(2);
        const double k = static_cast<double>(sample.size());
        const double mean = d.sum().item<double>() / (k * (k - 1));
        margin[static_cast<size_t>(c)] = std::max(cfg.ff_margin_floor, cfg.ff_alpha - mean);
      }
      for (auto& p : working->parameters()) p.set_requires_grad(false);
      std::vector<torch::Tensor> synthesised;
      std::vector<torch::Tensor> uncertainty;
      for (int64_t b = 0; b < xs.size(0); b += 256) {
        torch::Tensor source = xs.slice(0, b, std::min<int64_t>(xs.size(0), b + 256));
        const int64_t n = source.size(0);
        torch::Tensor guide_idx = torch::empty({n}, torch::kLong);
        torch::Tensor m = torch::empty({n}, torch::kFloat);
        torch::Tensor phi_s;
        {
          torch::NoGradGuard no_grad;
          torch::Tensor feat = working->features(source);
          phi_s = torch::nn::functional::normalize(
              feat, torch::nn::functional::NormalizeFuncOptions().dim(1));
          torch::Tensor runner_up = std::get<1>(working->head(feat).topk(2, 1)).select(1, 1);
          auto ru = runner_up.accessor<int64_t, 1>();
          for (int64_t i = 0; i < n; ++i) {
            const int c = static_cast<int>(ru[i]);
            const auto& pool_c = !confident[static_cast<size_t>(c)].empty()
                                     ? confident[static_cast<size_t>(c)]
                                     : members[static_cast<size_t>(c)];
            // No image of that class yet: any bought image guides (the hinge still pushes away
            // from the source's features).
            const int64_t g =
                pool_c.empty()
                    ? static_cast<int64_t>(h.rng().Below(static_cast<uint64_t>(bank_x.size(0))))
                    : pool_c[h.rng().Below(pool_c.size())];
            guide_idx[i] = g;
            m[i] = static_cast<float>(margin[static_cast<size_t>(c)]);
          }
        }
        torch::Tensor phi_t = bank_feat.index_select(0, guide_idx);
        torch::Tensor lower = (source - cfg.ff_epsilon).clamp(0, 1);
        torch::Tensor upper = (source + cfg.ff_epsilon).clamp(0, 1);
        torch::Tensor x = source.clone();
        for (int step = 0; step < cfg.ff_steps; ++step) {
          x.requires_grad_(true);
          torch::Tensor phi = torch::nn::functional::normalize(
              working->features(x), torch::nn::functional::NormalizeFuncOptions().dim(1));
          torch::Tensor d_t = (phi - phi_t).pow(2).sum(1);
          torch::Tensor d_s = (phi - phi_s).pow(2).sum(1);
          torch::Tensor loss = cfg.ff_lambda * (x - source).pow(2).flatten(1).sum(1) +
                               torch::clamp_min(d_t - d_s + m, 0);
          torch::Tensor g = torch::autograd::grad({loss.sum()}, {x})[0];
          x = torch::min(torch::max(x.detach() - cfg.ff_step * g.sign(), lower), upper);
        }
        {
          torch::NoGradGuard no_grad;
          torch::Tensor top2 = std::get<0>(torch::softmax(working->forward(x), 1).topk(2, 1));
          uncertainty.push_back(top2.select(1, 0) - top2.select(1, 1));
        }
        synthesised.push_back(x.detach());
      }
      for (auto& p : working->parameters()) p.set_requires_grad(true);
      torch::Tensor all = torch::cat(synthesised, 0);
      torch::Tensor order = torch::cat(uncertainty, 0).argsort();  // most uncertain first
      MLC_RETURN_IF_ERROR(h.Query(all.index_select(0, order.slice(0, 0, want))).status());
      MLC_RETURN_IF_ERROR(fine_tune(false, fmt::format("ff-round-{}", r)));
    }
    if (std::find(cfg.budgets.begin(), cfg.budgets.end(), rounds[r]) != cfg.budgets.end()) {
      MLC_ASSIGN_OR_RETURN(Checkpoint c, h.Measure(working, rounds[r]));
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

const char* AttackName(AttackKind kind) {
  switch (kind) {
    case AttackKind::kRandom:
      return "random";
    case AttackKind::kKnockoffRandom:
      return "knockoff-random";
    case AttackKind::kKnockoffAdaptive:
      return "knockoff-adaptive";
    case AttackKind::kJbda:
      return "jbda";
    case AttackKind::kFeatureFool:
      return "featurefool";
  }
  return "?";
}

Result<AttackKind> ParseAttackKind(const std::string& name) {
  for (AttackKind k : {AttackKind::kRandom, AttackKind::kKnockoffRandom,
                       AttackKind::kKnockoffAdaptive, AttackKind::kJbda, AttackKind::kFeatureFool})
    if (name == AttackName(k)) return k;
  return InvalidArgument(
      "unknown attack \"{}\" (random, knockoff-random, knockoff-adaptive, jbda, featurefool)",
      name);
}

Result<std::vector<Checkpoint>> RunExtraction(const AttackConfig& config, AttackContext& context) {
  if (config.budgets.empty() || !std::is_sorted(config.budgets.begin(), config.budgets.end()))
    return InvalidArgument("attack budgets must be a non-empty increasing list");
  std::error_code ec;
  std::filesystem::create_directories(context.work_dir, ec);
  try {
    Harness h(config, context);
    Result<std::vector<Checkpoint>> points = InternalError("unhandled attack");
    switch (config.kind) {
      case AttackKind::kRandom:
        points = RunPoolSampling(h, context.splits->attacker_pool);
        break;
      case AttackKind::kKnockoffRandom:
        points = RunPoolSampling(h, *context.ood_pool);
        break;
      case AttackKind::kKnockoffAdaptive:
        points = RunKnockoffAdaptive(h, *context.ood_pool, context.ood_arms);
        break;
      case AttackKind::kJbda:
        points = RunJbda(h);
        break;
      case AttackKind::kFeatureFool:
        points = RunFeatureFool(h);
        break;
    }
    if (points.ok()) {
      context.transcript_x = h.X();
      context.transcript_y = h.Y();
    }
    return points;
  } catch (const std::exception& e) {
    return InternalError("{}: libtorch failed: {}", context.label, e.what());
  }
}

}  // namespace mlcapsule::lab
