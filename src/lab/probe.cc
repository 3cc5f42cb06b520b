// The KENNEN-style reverse-engineering probe (see probe.h): trains the MLP zoo, answers the fixed
// queries through defense::ApplyOutputPolicy exactly as the trusted core would, and scores a
// logistic-regression meta-classifier per output policy and attribute by leave-one-out accuracy.
// Trusts its splits (data.cc validated them); checks the configuration and the policies.
#include "lab/probe.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <exception>

#include "capsule/policy.h"
#include "defense/output_policy.h"
#include "defense/rng.h"
#include "engine/tensor.h"
#include "lab/nets.h"
#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

// The zoo's attributes (KENNEN's "act", "#layers", "#units", "opt"), each value an index.
struct Attribute {
  const char* name;
  std::vector<const char*> values;
};
const std::array<Attribute, 4>& Attributes() {
  static const std::array<Attribute, 4> kAttributes = {{
      {"activation", {"relu", "tanh"}},
      {"depth", {"1", "2", "3"}},
      {"width", {"64", "256"}},
      {"optimizer", {"sgd", "adam"}},
  }};
  return kAttributes;
}
enum AttributeIndex { kActivation = 0, kDepth = 1, kWidth = 2, kOptimizer = 3 };
constexpr int kCombinations = 2 * 3 * 2 * 2;
constexpr std::array<int, 2> kWidths = {64, 256};

constexpr double kSgdLr = 0.05;
constexpr double kSgdMomentum = 0.9;
constexpr double kAdamLr = 1e-3;
constexpr int64_t kTestImages = 1000;  // enough for the progress line's sanity check

// The meta-classifier: full-batch Adam on standardised features. The problem is convex and starts
// from zero weights, so no random initialisation (and no torch generator) is involved.
constexpr int kMetaEpochs = 200;
constexpr double kMetaLr = 0.01;
constexpr double kMetaWeightDecay = 1e-3;
// Leave-one-out folds are trained side by side as one batched problem ([folds, models, features]);
// this bounds that tensor (256 MiB of float32), larger zoos train their folds in chunks.
constexpr int64_t kMaxBatchedElements = int64_t{1} << 26;

constexpr double kWilsonZ = 1.959963984540054;  // the 97.5% normal quantile

// Attribute values of zoo member i. Within each cycle of 24 the first 12 are a balanced half
// fraction (optimizer = activation xor width): every attribute value appears equally often, so a
// small zoo (the quick config's 12 models) still varies all four attributes. The second 12 are
// the complementary half, so each full cycle is every combination once and 48 models are each
// combination twice with no attribute confounded with another.
std::array<int, 4> Combination(int model) {
  const int j = model % kCombinations;
  const int half = j / (kCombinations / 2);
  const int r = j % (kCombinations / 2);
  std::array<int, 4> values{};
  values[kDepth] = r % 3;
  values[kActivation] = (r / 3) & 1;
  values[kWidth] = (r / 3) >> 1;
  values[kOptimizer] = values[kActivation] ^ values[kWidth] ^ half;
  return values;
}

ArchSpec ZooSpec(const std::array<int, 4>& values) {
  ArchSpec spec;
  spec.kind = ArchSpec::Kind::kMlp;
  spec.tanh = values[kActivation] == 1;
  spec.hidden.assign(static_cast<size_t>(values[kDepth] + 1), kWidths[values[kWidth]]);
  return spec;
}

std::string PolicyName(const capsule::OutputPolicy& policy) {
  const char* mode = capsule::OutputModeName(policy.mode);
  switch (policy.mode) {
    case capsule::OutputMode::kRounded:
      return fmt::format("{}({})", mode, policy.decimals);
    case capsule::OutputMode::kTopK:
      return fmt::format("{}({})", mode, policy.k);
    case capsule::OutputMode::kGaussian:
      return fmt::format("{}({:g})", mode, policy.sigma);
    default:
      return mode;
  }
}

// The output object is parsed the way pack parses it: inside a whole (otherwise minimal) policy.
Result<capsule::OutputPolicy> ParseOutputPolicy(const std::string& output_json) {
  const std::string whole =
      fmt::format(R"({{"version":1,"tee":{{"accept":["software"]}},)"
                  R"("lease":{{"max_queries":1000,"max_days":30,"seal_every":10}},"output":{}}})",
                  output_json);
  Result<capsule::Policy> policy = capsule::ParsePolicy(whole);
  if (!policy.ok()) return policy.status().WithContext(fmt::format("policy {}", output_json));
  // And checked against the zoo's one output, logits [batch, 10], as opening a capsule would.
  const std::vector<capsule::IoTensor> model_outputs = {
      {"logits",
       static_cast<uint8_t>(engine::DType::kFloat32),
       {{1, true}, {kFashionClasses, false}}}};
  Result<std::vector<capsule::IoTensor>> client_io =
      defense::OutputPolicyIo(policy->output, model_outputs);
  if (!client_io.ok()) return client_io.status().WithContext(fmt::format("policy {}", output_json));
  return policy->output;
}

// The core's noise source for one (policy, model) pair, seeded from the configuration so the
// probe is reproducible and independent of the order the pairs are visited in.
std::array<uint8_t, defense::Rng::kSeedBytes> NoiseSeed(uint64_t seed, size_t policy, int model) {
  std::array<uint8_t, defense::Rng::kSeedBytes> bytes{};
  for (size_t word = 0; word < bytes.size() / 8; ++word) {
    const uint64_t v = DeriveSeed(seed, fmt::format("kennen-noise-{}-{}-{}", policy, model, word));
    for (size_t b = 0; b < 8; ++b) bytes[word * 8 + b] = static_cast<uint8_t>(v >> (8 * b));
  }
  return bytes;
}

// What the client sees of one model's answers to the Q queries, as Q x C features: the released
// vector for the probability-like modes, a one-hot row for label, the released values scattered
// to their classes (zeros elsewhere) for top_k.
Status AnswerFeatures(const capsule::OutputPolicy& policy, std::vector<float>& logits, int64_t rows,
                      int64_t classes, defense::Rng& rng, float* features) {
  engine::TensorView scores{engine::DType::kFloat32, engine::Dims{rows, classes}, logits.data()};
  std::vector<engine::Tensor> client;
  MLC_RETURN_IF_ERROR(defense::ApplyOutputPolicy(policy, scores, &rng, nullptr, &client));
  std::fill(features, features + rows * classes, 0.0f);
  switch (policy.mode) {
    case capsule::OutputMode::kLabel: {
      if (client.size() != 1 || client[0].dtype != engine::DType::kInt64 ||
          client[0].NumElements() != rows)
        return InternalError("label policy released an unexpected tensor");
      const int64_t* labels = client[0].Data<int64_t>();
      for (int64_t i = 0; i < rows; ++i) {
        if (labels[i] < 0 || labels[i] >= classes)
          return InternalError("label policy released class {} of {}", labels[i], classes);
        features[i * classes + labels[i]] = 1.0f;
      }
      return Status::Ok();
    }
    case capsule::OutputMode::kTopK: {
      if (client.size() != 2 || client[0].NumElements() != client[1].NumElements() ||
          client[0].NumElements() % rows != 0)
        return InternalError("top_k policy released unexpected tensors");
      const int64_t k = client[0].NumElements() / rows;
      const float* values = client[0].Data<float>();
      const int64_t* indices = client[1].Data<int64_t>();
      for (int64_t i = 0; i < rows * k; ++i) {
        if (indices[i] < 0 || indices[i] >= classes)
          return InternalError("top_k policy released class {} of {}", indices[i], classes);
        features[(i / k) * classes + indices[i]] = values[i];
      }
      return Status::Ok();
    }
    default: {
      if (client.size() != 1 || client[0].dtype != engine::DType::kFloat32 ||
          client[0].NumElements() != rows * classes)
        return InternalError("{} policy released an unexpected tensor", PolicyName(policy));
      std::copy(client[0].Data<float>(), client[0].Data<float>() + rows * classes, features);
      return Status::Ok();
    }
  }
}

// Leave-one-out predictions of a multinomial logistic regression from x [M, D] to labels (values
// in [0, classes)). Fold f holds out model f; its features are standardised with the mean and
// standard deviation of the other M - 1 models only. All folds of a chunk train at once: Adam and
// the L2 penalty act elementwise and each fold's weights see only its own loss, so the batched
// run is exactly M separate fits. Exact leave-one-out is affordable: for 48 models and 1,000
// features one (policy, attribute) takes about 1 s on one core, against about 70 s for the zoo.
std::vector<int> LeaveOneOutPredictions(const torch::Tensor& x, const std::vector<int>& labels,
                                        int classes) {
  const int64_t m = x.size(0), d = x.size(1);
  torch::Tensor xd = x.to(torch::kDouble);
  torch::Tensor target = torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()));
  const torch::Tensor sum = xd.sum(0), square_sum = (xd * xd).sum(0);
  const int64_t chunk = std::max<int64_t>(1, std::min(m, kMaxBatchedElements / (m * d)));
  std::vector<int> predicted(static_cast<size_t>(m));
  for (int64_t begin = 0; begin < m; begin += chunk) {
    const int64_t folds = std::min(chunk, m - begin);
    torch::Tensor held = xd.slice(0, begin, begin + folds);  // [F, D]
    torch::Tensor mean = (sum - held) / static_cast<double>(m - 1);
    torch::Tensor variance =
        ((square_sum - held * held) / static_cast<double>(m - 1) - mean * mean).clamp_min(0);
    // A constant feature (a one-hot column no model ever sets) carries nothing: centre it to 0.
    torch::Tensor scale = variance.sqrt();
    scale = torch::where(scale > 1e-6, scale, torch::ones_like(scale));
    torch::Tensor xs =
        ((xd.unsqueeze(0) - mean.unsqueeze(1)) / scale.unsqueeze(1)).to(torch::kFloat);
    torch::Tensor train_mask =
        torch::ones({folds, m}, torch::kFloat)
            .index_put_({torch::arange(folds), torch::arange(begin, begin + folds)}, 0.0f);
    torch::Tensor fold_target = target.unsqueeze(0).expand({folds, m}).unsqueeze(2);

    torch::Tensor weight = torch::zeros({folds, d, classes}, torch::kFloat).requires_grad_(true);
    torch::Tensor bias = torch::zeros({folds, 1, classes}, torch::kFloat).requires_grad_(true);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<torch::Tensor>{weight},
                        std::make_unique<torch::optim::AdamOptions>(
                            torch::optim::AdamOptions(kMetaLr).weight_decay(kMetaWeightDecay)));
    groups.emplace_back(std::vector<torch::Tensor>{bias},
                        std::make_unique<torch::optim::AdamOptions>(kMetaLr));
    torch::optim::Adam optimizer(std::move(groups), torch::optim::AdamOptions(kMetaLr));
    for (int epoch = 0; epoch < kMetaEpochs; ++epoch) {
      torch::Tensor log_probs = torch::log_softmax(torch::bmm(xs, weight) + bias, 2);
      torch::Tensor nll = -log_probs.gather(2, fold_target).squeeze(2);  // [F, M]
      torch::Tensor loss = (nll * train_mask).sum() / static_cast<double>(m - 1);
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    torch::NoGradGuard no_grad;
    torch::Tensor rows = torch::arange(folds);
    torch::Tensor own = torch::bmm(xs.index({rows, torch::arange(begin, begin + folds)})
                                       .unsqueeze(1),  // each fold's held-out model, [F,1,D]
                                   weight) +
                        bias;
    torch::Tensor choice = own.squeeze(1).argmax(1).contiguous();
    for (int64_t f = 0; f < folds; ++f)
      predicted[static_cast<size_t>(begin + f)] = static_cast<int>(choice[f].item<int64_t>());
  }
  return predicted;
}

void WilsonInterval(int64_t successes, int64_t n, double* low, double* high) {
  const double p = static_cast<double>(successes) / static_cast<double>(n);
  const double z2 = kWilsonZ * kWilsonZ, nn = static_cast<double>(n);
  const double denominator = 1 + z2 / nn;
  const double centre = (p + z2 / (2 * nn)) / denominator;
  const double half = kWilsonZ * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denominator;
  *low = std::max(0.0, centre - half);
  *high = std::min(1.0, centre + half);
}

Result<std::vector<ProbeResult>> RunProbe(const ProbeConfig& config, const Splits& splits,
                                          const std::string& label) {
  if (config.models < 2)
    return InvalidArgument("{}: models = {} must be at least 2 (leave-one-out)", label,
                           config.models);
  if (config.queries < 1 || config.queries > splits.attacker_pool.count)
    return InvalidArgument("{}: queries = {} is outside [1, {}] (the attacker pool)", label,
                           config.queries, splits.attacker_pool.count);
  if (config.train_samples < 1 || config.train_samples > splits.shadow.count)
    return InvalidArgument("{}: train_samples = {} is outside [1, {}] (the shadow split)", label,
                           config.train_samples, splits.shadow.count);
  if (config.epochs < 1)
    return InvalidArgument("{}: epochs = {} must be >= 1", label, config.epochs);
  if (config.output_policies.empty()) return InvalidArgument("{}: no output policies", label);
  std::vector<capsule::OutputPolicy> policies;
  for (const std::string& json : config.output_policies) {
    MLC_ASSIGN_OR_RETURN(capsule::OutputPolicy policy, ParseOutputPolicy(json));
    policies.push_back(policy);
  }

  const int models = config.models;
  const int64_t queries = config.queries;
  const int64_t classes = kFashionClasses;
  const int64_t feature_count = queries * classes;
  Rng query_rng(DeriveSeed(config.seed, "kennen-queries"));
  const std::vector<int64_t> query_index =
      query_rng.Sample(splits.attacker_pool.count, config.queries);
  const torch::Tensor query_images = ImagesTensor(splits.attacker_pool.Gather(query_index));
  const ImageSet test_set = splits.test.Slice(0, std::min<int64_t>(kTestImages, splits.test.count));
  const torch::Tensor test_images = ImagesTensor(test_set);
  const torch::Tensor test_labels = LabelsTensor(test_set);

  // features[p] is [models, Q * C], row-major, for policy p.
  std::vector<std::vector<float>> features(
      policies.size(), std::vector<float>(static_cast<size_t>(models * feature_count)));
  std::vector<std::array<int, 4>> truth(static_cast<size_t>(models));
  for (int i = 0; i < models; ++i) {
    truth[static_cast<size_t>(i)] = Combination(i);
    const std::array<int, 4>& values = truth[static_cast<size_t>(i)];
    const ArchSpec spec = ZooSpec(values);
    Rng rng(DeriveSeed(config.seed, fmt::format("kennen-{}", i)));
    const ImageSet subset =
        splits.shadow.Gather(rng.Sample(splits.shadow.count, config.train_samples));
    Net net = MakeNet(spec, DeriveSeed(config.seed, fmt::format("kennen-{}-init", i)));
    TrainOptions options;
    options.epochs = config.epochs;
    options.sgd = values[kOptimizer] == 0;
    options.lr = options.sgd ? kSgdLr : kAdamLr;
    options.momentum = kSgdMomentum;
    options.seed = rng.Next();
    const std::string optimizer = Attributes()[kOptimizer].values[values[kOptimizer]];
    MLC_RETURN_IF_ERROR(
        Train(net, ImagesTensor(subset), LabelsTensor(subset), options,
              fmt::format("{} model {} ({} {})", label, i + 1, spec.Name(), optimizer)));
    const double accuracy = test_set.count > 0 ? Accuracy(net, test_images, test_labels) : 0;
    std::fprintf(stderr, "  %s: model %d/%d (%s %s, test acc %.2f)\n", label.c_str(), i + 1, models,
                 spec.Name().c_str(), optimizer.c_str(), accuracy);

    const torch::Tensor logits = Predict(net, query_images).to(torch::kFloat).contiguous();
    const std::vector<float> raw(logits.data_ptr<float>(),
                                 logits.data_ptr<float>() + logits.numel());
    for (size_t p = 0; p < policies.size(); ++p) {
      std::vector<float> scores = raw;  // ApplyOutputPolicy reads through a mutable view
      defense::Rng noise(NoiseSeed(config.seed, p, i));
      Status status = AnswerFeatures(policies[p], scores, queries, classes, noise,
                                     features[p].data() + static_cast<size_t>(i) * feature_count);
      if (!status.ok())
        return status.WithContext(fmt::format("{}: policy {}", label, config.output_policies[p]));
    }
  }

  std::vector<ProbeResult> results;
  for (size_t p = 0; p < policies.size(); ++p) {
    const torch::Tensor x =
        torch::from_blob(features[p].data(), {models, feature_count}, torch::kFloat);
    for (size_t a = 0; a < Attributes().size(); ++a) {
      const Attribute& attribute = Attributes()[a];
      const int values = static_cast<int>(attribute.values.size());
      std::vector<int> labels(static_cast<size_t>(models));
      std::vector<int> counts(static_cast<size_t>(values), 0);
      for (int i = 0; i < models; ++i) {
        labels[static_cast<size_t>(i)] = truth[static_cast<size_t>(i)][a];
        ++counts[static_cast<size_t>(labels[static_cast<size_t>(i)])];
      }
      const std::vector<int> predicted = LeaveOneOutPredictions(x, labels, values);
      int64_t correct = 0;
      for (int i = 0; i < models; ++i)
        correct += predicted[static_cast<size_t>(i)] == labels[static_cast<size_t>(i)];
      ProbeResult r;
      r.attribute = attribute.name;
      r.policy = PolicyName(policies[p]);
      r.models = models;
      r.accuracy = static_cast<double>(correct) / models;
      WilsonInterval(correct, models, &r.ci_low, &r.ci_high);
      r.majority = static_cast<double>(*std::max_element(counts.begin(), counts.end())) / models;
      std::fprintf(stderr, "  %s: %s / %s: accuracy %.3f [%.3f, %.3f], majority %.3f (%d models)\n",
                   label.c_str(), r.policy.c_str(), r.attribute.c_str(), r.accuracy, r.ci_low,
                   r.ci_high, r.majority, models);
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace

Result<std::vector<ProbeResult>> RunKennenProbe(const ProbeConfig& config, const Splits& splits,
                                                const std::string& label) {
  try {
    return RunProbe(config, splits, label);
  } catch (const std::exception& e) {
    return InternalError("{}: the probe failed in libtorch: {}", label, e.what());
  }
}

}  // namespace mlcapsule::lab
