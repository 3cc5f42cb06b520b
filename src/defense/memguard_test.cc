// MemGuard: against small hand-built membership classifiers run by the engine (no ONNX needed).
// Checks that g is driven to ~1/2, that the label and the probability-vector form always survive,
// that the L1 change stays within the budget in expectation, determinism per seed, the checks on
// classifier plans, the output-policy wiring, and prints the per-query cost.
#include "defense/memguard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>

#include "defense/output_policy.h"
#include "engine/session.h"

namespace mlcapsule::defense {
namespace {

using engine::Attribute;
using engine::AttrKind;
using engine::Dim;
using engine::DType;
using engine::OpType;
using engine::Plan;
using engine::PlanNode;
using engine::Shape;
using engine::TensorKind;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Builds small plans tensor by tensor.
class PlanBuilder {
 public:
  int32_t Tensor(std::string name, Shape shape, TensorKind kind = TensorKind::kIntermediate,
                 DType dtype = DType::kFloat32) {
    engine::PlanTensor t;
    t.name = std::move(name);
    t.type = engine::TensorType{dtype, std::move(shape)};
    t.kind = kind;
    plan_.tensors.push_back(t);
    int32_t index = static_cast<int32_t>(plan_.tensors.size() - 1);
    if (kind == TensorKind::kInput) plan_.inputs.push_back(index);
    if (kind == TensorKind::kOutput) plan_.outputs.push_back(index);
    return index;
  }
  int32_t Floats(std::string name, std::vector<int64_t> dims, const std::vector<float>& values) {
    return plan_.AddConstant(std::move(name), DType::kFloat32, engine::FixedShape(dims),
                             values.data());
  }
  int32_t Int64s(std::string name, std::vector<int64_t> dims, const std::vector<int64_t>& values) {
    return plan_.AddConstant(std::move(name), DType::kInt64, engine::FixedShape(dims),
                             values.data());
  }
  void Node(OpType op, std::vector<int32_t> inputs, std::vector<int32_t> outputs,
            std::vector<Attribute> attrs = {}) {
    plan_.nodes.push_back(PlanNode{op, fmt::format("n{}", plan_.nodes.size()), std::move(inputs),
                                   std::move(outputs), std::move(attrs)});
  }
  Plan Take() { return std::move(plan_); }

 private:
  Plan plan_;
};

Attribute Ints(std::string name, std::vector<int64_t> values) {
  return Attribute{std::move(name), AttrKind::kInts, std::move(values), {}};
}

const Dim kN{1, true};

// g(s) = sigmoid(weight * max_i s_i + bias) as [N,1] (or [N] when `flat`): a membership
// classifier that calls confident answers members (with 20, -15: members above 0.75).
Plan MaxConfidenceClassifier(int64_t classes, float weight = 20.0f, float bias = -15.0f,
                             bool flat = false) {
  PlanBuilder b;
  int32_t x = b.Tensor("confidences", {kN, {classes, false}}, TensorKind::kInput);
  int32_t max = b.Tensor("max", {kN, {1, false}});
  b.Node(OpType::kReduceMax, {x}, {max}, {Ints("axes", {1}), Ints("keepdims", {1})});
  int32_t w = b.Floats("w", {1, 1}, {weight});
  int32_t bias_tensor = b.Floats("b", {1}, {bias});
  int32_t score = b.Tensor("score", {kN, {1, false}});
  b.Node(OpType::kFullyConnected, {max, w, bias_tensor}, {score});
  if (!flat) {
    int32_t g = b.Tensor("member", {kN, {1, false}}, TensorKind::kOutput);
    b.Node(OpType::kSigmoid, {score}, {g});
  } else {
    int32_t g2 = b.Tensor("member2", {kN, {1, false}});
    b.Node(OpType::kSigmoid, {score}, {g2});
    int32_t axes = b.Int64s("axes", {1}, {1});
    int32_t g = b.Tensor("member", {kN}, TensorKind::kOutput);
    b.Node(OpType::kSqueeze, {g2, axes}, {g});
  }
  return b.Take();
}

// A linear two-column classifier: logits (0, w . s + bias), optionally through Softmax.
Plan TwoColumnClassifier(int64_t classes, const std::vector<float>& w, float bias, bool softmax) {
  PlanBuilder b;
  int32_t x = b.Tensor("confidences", {kN, {classes, false}}, TensorKind::kInput);
  std::vector<float> weights(2 * classes, 0.0f);
  std::copy(w.begin(), w.end(), weights.begin() + classes);
  int32_t wt = b.Floats("w", {2, classes}, weights);
  int32_t bt = b.Floats("b", {2}, {0.0f, bias});
  if (!softmax) {
    int32_t y = b.Tensor("logits", {kN, {2, false}}, TensorKind::kOutput);
    b.Node(OpType::kFullyConnected, {x, wt, bt}, {y});
  } else {
    int32_t logits = b.Tensor("logits", {kN, {2, false}});
    b.Node(OpType::kFullyConnected, {x, wt, bt}, {logits});
    int32_t y = b.Tensor("probs", {kN, {2, false}}, TensorKind::kOutput);
    b.Node(OpType::kSoftmax, {logits}, {y}, {Ints("axis", {1})});
  }
  return b.Take();
}

// A membership classifier of the paper's kind, for timing: an MLP C -> 64 -> 64 -> 1 (ReLU,
// sigmoid) with fixed pseudo-random weights.
Plan MlpClassifier(int64_t classes) {
  PlanBuilder b;
  auto pattern = [](size_t n, float scale, float phase) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.7f * static_cast<float>(i) + phase);
    return v;
  };
  int32_t x = b.Tensor("confidences", {kN, {classes, false}}, TensorKind::kInput);
  int32_t w1 = b.Floats("w1", {64, classes}, pattern(64 * classes, 2.0f, 0.1f));
  int32_t b1 = b.Floats("b1", {64}, pattern(64, 0.5f, 0.2f));
  int32_t w2 = b.Floats("w2", {64, 64}, pattern(64 * 64, 0.3f, 0.3f));
  int32_t b2 = b.Floats("b2", {64}, pattern(64, 0.1f, 0.4f));
  int32_t w3 = b.Floats("w3", {1, 64}, pattern(64, 0.3f, 0.5f));
  int32_t b3 = b.Floats("b3", {1}, {0.0f});
  int32_t a1 = b.Tensor("a1", {kN, {64, false}}), r1 = b.Tensor("r1", {kN, {64, false}});
  int32_t a2 = b.Tensor("a2", {kN, {64, false}}), r2 = b.Tensor("r2", {kN, {64, false}});
  int32_t a3 = b.Tensor("a3", {kN, {1, false}});
  int32_t g = b.Tensor("member", {kN, {1, false}}, TensorKind::kOutput);
  b.Node(OpType::kFullyConnected, {x, w1, b1}, {a1});
  b.Node(OpType::kRelu, {a1}, {r1});
  b.Node(OpType::kFullyConnected, {r1, w2, b2}, {a2});
  b.Node(OpType::kRelu, {a2}, {r2});
  b.Node(OpType::kFullyConnected, {r2, w3, b3}, {a3});
  b.Node(OpType::kSigmoid, {a3}, {g});
  return b.Take();
}

std::unique_ptr<engine::Session> MakeSession(Plan plan) {
  Result<std::unique_ptr<engine::Session>> session = engine::Session::Create(std::move(plan));
  EXPECT_TRUE(session.ok()) << session.status().ToString();
  return session.ok() ? std::move(session).value() : nullptr;
}

std::array<uint8_t, Rng::kSeedBytes> Seed(uint8_t value) {
  std::array<uint8_t, Rng::kSeedBytes> seed{};
  seed.fill(value);
  seed[0] = 0x4d;
  return seed;
}

capsule::MemGuardPolicy Policy(double budget, uint32_t steps) {
  capsule::MemGuardPolicy policy;
  policy.enabled = true;
  policy.budget = budget;
  policy.steps = steps;
  return policy;
}

std::vector<float> RandomDistribution(std::mt19937& rng, int classes, float scale) {
  std::normal_distribution<double> logit(0.0, scale);
  std::vector<double> z(classes);
  for (double& v : z) v = logit(rng);
  double max = *std::max_element(z.begin(), z.end()), sum = 0;
  for (double& v : z) sum += v = std::exp(v - max);
  std::vector<float> p(classes);
  for (int i = 0; i < classes; ++i) p[i] = static_cast<float>(z[i] / sum);
  return p;
}

int ArgMax(const std::vector<float>& row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

// A MemGuard over a session-backed classifier, keeping the session alive.
struct Guard {
  std::unique_ptr<engine::Session> session;
  MembershipClassifier classifier;
  std::unique_ptr<MemGuard> memguard;

  double Score(const std::vector<float>& row) {
    float g = 0;
    Status status = classifier(row, 1, std::span<float>(&g, 1));
    EXPECT_TRUE(status.ok()) << status.ToString();
    return g;
  }
};

Guard MakeGuard(Plan plan, int classes, double budget, uint32_t steps) {
  Guard guard;
  guard.session = MakeSession(std::move(plan));
  Result<MembershipClassifier> classifier = ClassifierFromSession(guard.session.get(), classes);
  EXPECT_TRUE(classifier.ok()) << classifier.status().ToString();
  guard.classifier = *classifier;
  Result<MemGuard> memguard = MemGuard::Create(Policy(budget, steps), classes, *classifier);
  EXPECT_TRUE(memguard.ok()) << memguard.status().ToString();
  guard.memguard = std::make_unique<MemGuard>(std::move(memguard).value());
  return guard;
}

// Checks the guarantees on one output row against its (probability-vector) input.
void ExpectValid(const std::vector<float>& in, const std::vector<float>& out) {
  double sum = 0;
  for (float v : out) {
    ASSERT_TRUE(std::isfinite(v));
    ASSERT_GE(v, 0.0f);
    sum += v;
  }
  ASSERT_NEAR(sum, 1.0, 1e-5);
  ASSERT_EQ(ArgMax(out), ArgMax(in));
}

// ---- Classifier plans ----

TEST(MemGuardClassifierTest, ReadsEveryOutputForm) {
  const int classes = 4;
  std::vector<float> rows = {0.7f, 0.1f, 0.1f, 0.1f, 0.25f, 0.25f, 0.25f, 0.25f};
  auto score = [&](Plan plan) {
    std::unique_ptr<engine::Session> session = MakeSession(std::move(plan));
    Result<MembershipClassifier> classifier = ClassifierFromSession(session.get(), classes);
    EXPECT_TRUE(classifier.ok()) << classifier.status().ToString();
    std::vector<float> member(2);
    Status status = (*classifier)(rows, 2, member);
    EXPECT_TRUE(status.ok()) << status.ToString();
    return member;
  };
  auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  for (bool flat : {false, true}) {
    std::vector<float> member = score(MaxConfidenceClassifier(classes, 20.0f, -15.0f, flat));
    EXPECT_NEAR(member[0], sigmoid(20 * 0.7 - 15), 1e-6);
    EXPECT_NEAR(member[1], sigmoid(20 * 0.25 - 15), 1e-6);
  }
  std::vector<float> w = {3.0f, -1.0f, 0.0f, 2.0f};
  for (bool softmax : {false, true}) {
    std::vector<float> member = score(TwoColumnClassifier(classes, w, -0.5f, softmax));
    EXPECT_NEAR(member[0], sigmoid(3 * 0.7 - 0.1 + 0.2 - 0.5), 1e-6);
    EXPECT_NEAR(member[1], sigmoid(0.25 * 4 - 0.5), 1e-6);
  }
}

TEST(MemGuardClassifierTest, RejectsPlansThatDoNotFit) {
  auto error = [](Plan plan, int classes) {
    std::unique_ptr<engine::Session> session = MakeSession(std::move(plan));
    Result<MembershipClassifier> classifier = ClassifierFromSession(session.get(), classes);
    EXPECT_FALSE(classifier.ok());
    return classifier.ok() ? std::string() : classifier.status().message();
  };
  EXPECT_EQ(error(MaxConfidenceClassifier(5), 10),
            "membership classifier input 'confidences' is float32 [N,5]; it must be float32 "
            "[N,10] (the model's classes)");
  {
    PlanBuilder b;  // three columns
    int32_t x = b.Tensor("confidences", {kN, {4, false}}, TensorKind::kInput);
    int32_t w = b.Floats("w", {3, 4}, std::vector<float>(12, 0.1f));
    int32_t y = b.Tensor("scores", {kN, {3, false}}, TensorKind::kOutput);
    b.Node(OpType::kFullyConnected, {x, w}, {y});
    EXPECT_EQ(error(b.Take(), 4),
              "membership classifier output 'scores' is float32 [N,3]; it must be float32 [N] or "
              "[N,1] (member probability) or [N,2] (column 1 = member)");
  }
  {
    PlanBuilder b;  // an int64 output
    int32_t x = b.Tensor("confidences", {kN, {4, false}}, TensorKind::kInput);
    int32_t y = b.Tensor("label", {kN, {1, false}}, TensorKind::kOutput, DType::kInt64);
    b.Node(OpType::kArgMax, {x}, {y}, {Ints("axis", {1}), Ints("keepdims", {1})});
    EXPECT_EQ(error(b.Take(), 4),
              "membership classifier output 'label' is int64 [N,1]; it must be float32 [N] or "
              "[N,1] (member probability) or [N,2] (column 1 = member)");
  }
  {
    PlanBuilder b;  // two outputs
    int32_t x = b.Tensor("confidences", {kN, {4, false}}, TensorKind::kInput);
    int32_t y = b.Tensor("a", {kN, {4, false}}, TensorKind::kOutput);
    int32_t z = b.Tensor("b", {kN, {4, false}}, TensorKind::kOutput);
    b.Node(OpType::kRelu, {x}, {y});
    b.Node(OpType::kRelu, {x}, {z});
    EXPECT_EQ(error(b.Take(), 4),
              "membership classifier plan has 2 outputs; it must have one, float32 [N], [N,1] or "
              "[N,2]");
  }
  {
    PlanBuilder b;  // fixed batch
    int32_t x = b.Tensor("confidences", {{1, false}, {4, false}}, TensorKind::kInput);
    int32_t y = b.Tensor("a", {{1, false}, {4, false}}, TensorKind::kOutput);
    b.Node(OpType::kRelu, {x}, {y});
    EXPECT_EQ(error(b.Take(), 4),
              "membership classifier input 'confidences' is float32 [1,4]; it must be float32 "
              "[N,4] (the model's classes)");
  }
  Result<MembershipClassifier> none = ClassifierFromSession(nullptr, 4);
  EXPECT_EQ(none.status().message(), "membership classifier: no session");
}

TEST(MemGuardTest, CreateChecksItsArguments) {
  MembershipClassifier constant = [](std::span<const float>, int rows, std::span<float> member) {
    std::fill(member.begin(), member.begin() + rows, 0.9f);
    return Status::Ok();
  };
  auto error = [&](capsule::MemGuardPolicy policy, int classes, MembershipClassifier classifier) {
    Result<MemGuard> guard = MemGuard::Create(policy, classes, std::move(classifier));
    EXPECT_FALSE(guard.ok());
    return guard.ok() ? std::string() : guard.status().message();
  };
  EXPECT_EQ(error(Policy(0.5, 10), 1, constant),
            "memguard: the model has 1 classes; MemGuard needs 2..4096");
  EXPECT_EQ(error(Policy(0.0, 10), 3, constant),
            "defenses.memguard.budget: 0 is out of range (0, 2]");
  EXPECT_EQ(error(Policy(2.5, 10), 3, constant),
            "defenses.memguard.budget: 2.5 is out of range (0, 2]");
  EXPECT_EQ(error(Policy(0.5, 0), 3, constant),
            "defenses.memguard.steps: 0 is out of range 1..10000");
  EXPECT_EQ(error(Policy(0.5, 10), 3, nullptr), "memguard: no membership classifier");
  EXPECT_TRUE(MemGuard::Create(Policy(2.0, 10000), 2, constant).ok());
}

// ---- Perturb ----

// With the whole budget (2 bounds any L1 change, so the noise is always released), vectors the
// classifier calls members come out scored ~1/2, just across the boundary.
TEST(MemGuardTest, DrivesTheClassifierToOneHalf) {
  const int classes = 10;
  Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 2.0, 300);
  Rng rng(Seed(1));
  std::mt19937 vectors(3);
  int members = 0, found = 0, near_half = 0;
  double steps = 0, l1 = 0, lower_bound = 0;
  while (members < 300) {
    std::vector<float> p = RandomDistribution(vectors, classes, 4.0f);
    if (guard.Score(p) <= 0.6) continue;
    ++members;
    std::vector<float> out = p;
    MemGuardStats stats;
    ASSERT_TRUE(guard.memguard->Perturb(out, rng, &stats).ok());
    ExpectValid(p, out);
    EXPECT_NEAR(stats.g_before, guard.Score(p), 1e-6);  // batch of 11 vs 1: float rounding
    steps += stats.steps;
    if (!stats.found) continue;
    ++found;
    ASSERT_TRUE(stats.applied);  // budget 2: always released
    const double g = guard.Score(out);
    EXPECT_NEAR(stats.g_after, g, 1e-6);  // the g the search saw is the g of the output
    EXPECT_LE(g, 0.5 + 1e-6);             // across the boundary
    near_half += g > 0.45;
    double distance = 0;
    for (int i = 0; i < classes; ++i) distance += std::abs(out[i] - p[i]);
    EXPECT_NEAR(stats.l1, distance, 1e-6);
    l1 += distance;
    // g < 1/2 needs max < 0.75: the least L1 change that does it moves max - 0.75 of mass.
    lower_bound += 2 * (*std::max_element(p.begin(), p.end()) - 0.75);
  }
  std::printf(
      "members %d: noise found for %d, g in (0.45, 0.5] for %d; mean L1 %.3f (least "
      "possible %.3f), mean classifier calls %.1f\n",
      members, found, near_half, l1 / std::max(found, 1), lower_bound / std::max(found, 1),
      steps / members);
  EXPECT_GE(found, 290);
  EXPECT_GE(near_half, found * 9 / 10);
}

// Non-members are pushed across too (towards g = 1/2 from below): g's output no longer separates.
TEST(MemGuardTest, NonMembersAreMovedAcrossToo) {
  const int classes = 10;
  Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 2.0, 300);
  Rng rng(Seed(2));
  std::mt19937 vectors(4);
  int non_members = 0, crossed = 0;
  while (non_members < 100) {
    std::vector<float> p = RandomDistribution(vectors, classes, 1.5f);
    if (guard.Score(p) >= 0.4) continue;
    ++non_members;
    std::vector<float> out = p;
    MemGuardStats stats;
    ASSERT_TRUE(guard.memguard->Perturb(out, rng, &stats).ok());
    ExpectValid(p, out);
    crossed += stats.found && guard.Score(out) >= 0.5 - 1e-6;
  }
  std::printf("non-members %d: moved to g >= 1/2 for %d\n", non_members, crossed);
  EXPECT_GE(crossed, 90);
}

TEST(MemGuardTest, LabelAndFormSurviveOnManyVectors) {
  Rng rng(Seed(3));
  std::mt19937 vectors(5);
  int total = 0;
  for (int classes : {2, 3, 10}) {
    Guard guard = MakeGuard(MaxConfidenceClassifier(classes, 12.0f, -8.0f), classes, 1.0, 60);
    for (int round = 0; round < 1500; ++round) {
      float scale = std::vector<float>{0.3f, 1.0f, 3.0f, 8.0f}[round % 4];
      std::vector<float> p = RandomDistribution(vectors, classes, scale);
      std::vector<float> out = p;
      ASSERT_TRUE(guard.memguard->Perturb(out, rng, nullptr).ok());
      ExpectValid(p, out);
      ++total;
    }
  }
  EXPECT_EQ(total, 4500);
}

// Phase II: E[L1 change] <= budget. Per vector the expectation is min(||noise||_1, budget);
// measured over many vectors and coin draws.
TEST(MemGuardTest, ExpectedL1WithinTheBudget) {
  const int classes = 10;
  for (double budget : {0.05, 0.2}) {
    Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, budget, 200);
    Rng rng(Seed(4));
    std::mt19937 vectors(6);
    double l1 = 0, expected = 0;
    int draws = 0, applied = 0;
    for (int v = 0; v < 200; ++v) {
      std::vector<float> p = RandomDistribution(vectors, classes, 4.0f);
      for (int repeat = 0; repeat < 20; ++repeat) {
        std::vector<float> out = p;
        MemGuardStats stats;
        ASSERT_TRUE(guard.memguard->Perturb(out, rng, &stats).ok());
        double distance = 0;
        for (int i = 0; i < classes; ++i) distance += std::abs(out[i] - p[i]);
        l1 += distance;
        expected += std::min(stats.noise_l1, budget);
        applied += stats.applied;
        ++draws;
      }
    }
    std::printf("budget %.2f: mean L1 %.4f (expected %.4f), noise released %.1f%%\n", budget,
                l1 / draws, expected / draws, 100.0 * applied / draws);
    EXPECT_LE(l1 / draws, budget * 1.05);
    EXPECT_NEAR(l1 / draws, expected / draws, 0.1 * budget);
  }
}

TEST(MemGuardTest, DeterministicPerSeed) {
  const int classes = 6;
  Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 0.3, 100);
  std::mt19937 vectors(7);
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < 50; ++i) inputs.push_back(RandomDistribution(vectors, classes, 4.0f));
  auto run = [&](uint8_t seed) {
    Rng rng(Seed(seed));
    std::vector<std::vector<float>> outputs;
    for (std::vector<float> row : inputs) {
      EXPECT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
      outputs.push_back(row);
    }
    return outputs;
  };
  std::vector<std::vector<float>> a = run(1), b = run(1), c = run(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);  // the release coins differ
}

TEST(MemGuardTest, OddInputsAndClassifiers) {
  const int classes = 4;
  Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 1.0, 50);
  Rng rng(Seed(5));
  // NaN counts as 0, values are clamped to [0, 1], then normalised.
  std::vector<float> row = {kNaN, kInf, -kInf, 1e30f};
  ASSERT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
  ExpectValid({0.0f, 0.5f, 0.0f, 0.5f}, row);
  row = {kNaN, kNaN, kNaN, kNaN};  // uniform, label 0
  ASSERT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
  ExpectValid({0.25f, 0.25f, 0.25f, 0.25f}, row);
  row = {1.0f, 0.0f, 0.0f, 0.0f};  // one-hot: zeros are handled (log floor)
  ASSERT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
  ExpectValid({1.0f, 0.0f, 0.0f, 0.0f}, row);
  row = {0.3f, 0.3f, 0.2f, 0.2f};  // a tie at the top stays with the lower index
  ASSERT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
  EXPECT_EQ(ArgMax(row), 0);
  std::vector<float> wrong(5, 0.2f);
  EXPECT_EQ(guard.memguard->Perturb(wrong, rng, nullptr).message(),
            "memguard: a confidence vector of 5 values; the model has 4 classes");

  // A classifier that answers NaN: no noise, the input comes back.
  MembershipClassifier nan = [](std::span<const float>, int rows, std::span<float> member) {
    std::fill(member.begin(), member.begin() + rows, kNaN);
    return Status::Ok();
  };
  Result<MemGuard> nan_guard = MemGuard::Create(Policy(1.0, 50), classes, nan);
  ASSERT_TRUE(nan_guard.ok());
  row = {0.7f, 0.1f, 0.1f, 0.1f};
  MemGuardStats stats;
  ASSERT_TRUE(nan_guard->Perturb(row, rng, &stats).ok());
  EXPECT_EQ(row, (std::vector<float>{0.7f, 0.1f, 0.1f, 0.1f}));
  EXPECT_FALSE(stats.found);
  EXPECT_EQ(stats.steps, 1u);
  // A flat classifier (no gradient even with the widest probe): no noise.
  MembershipClassifier flat = [](std::span<const float>, int rows, std::span<float> member) {
    std::fill(member.begin(), member.begin() + rows, 0.9f);
    return Status::Ok();
  };
  Result<MemGuard> flat_guard = MemGuard::Create(Policy(1.0, 50), classes, flat);
  ASSERT_TRUE(flat_guard->Perturb(row, rng, &stats).ok());
  EXPECT_EQ(row, (std::vector<float>{0.7f, 0.1f, 0.1f, 0.1f}));
  EXPECT_FALSE(stats.found);
  EXPECT_LE(stats.steps, 5u);  // probe 0.01 -> 0.04 -> 0.16 -> 0.64 -> 2.56, then give up
  // A failing classifier fails the call.
  MembershipClassifier failing = [](std::span<const float>, int, std::span<float>) {
    return InternalError("classifier down");
  };
  Result<MemGuard> failing_guard = MemGuard::Create(Policy(1.0, 50), classes, failing);
  EXPECT_EQ(failing_guard->Perturb(row, rng, nullptr).message(), "classifier down");
}

TEST(MemGuardTest, StepBudgetIsRespected) {
  const int classes = 10;
  std::mt19937 vectors(8);
  for (uint32_t steps : {1u, 2u, 7u, 40u}) {
    Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 1.0, steps);
    Rng rng(Seed(6));
    int calls = 0;
    MembershipClassifier counting = [&](std::span<const float> v, int rows, std::span<float> m) {
      ++calls;
      return guard.classifier(v, rows, m);
    };
    Result<MemGuard> counted = MemGuard::Create(Policy(1.0, steps), classes, counting);
    ASSERT_TRUE(counted.ok());
    for (int i = 0; i < 50; ++i) {
      std::vector<float> p = RandomDistribution(vectors, classes, 4.0f);
      calls = 0;
      MemGuardStats stats;
      ASSERT_TRUE(counted->Perturb(p, rng, &stats).ok());
      EXPECT_LE(calls, static_cast<int>(steps));
      EXPECT_EQ(static_cast<uint32_t>(calls), stats.steps);
    }
  }
}

// ---- Wiring through ApplyOutputPolicy ----

TEST(MemGuardTest, AppliedByTheOutputPolicy) {
  const int classes = 5;
  Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 2.0, 200);
  Rng rng(Seed(7));
  capsule::OutputPolicy policy;
  policy.mode = capsule::OutputMode::kRounded;
  policy.decimals = 3;
  policy.logits = true;
  std::vector<float> logits = {4.0f, 0.5f, 0.0f, -1.0f, 0.2f, 0.0f, 0.0f, 3.0f, 0.0f, 0.0f};
  engine::Tensor scores = engine::Tensor::FromFloats({2, classes}, logits);
  std::vector<engine::Tensor> client;
  uint64_t released = 0;
  Status status =
      ApplyOutputPolicy(policy, scores.View(), &rng, guard.memguard.get(), &client, &released);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(released, 2u);  // budget 2: both rows' noise released
  ASSERT_EQ(client.size(), 1u);
  const float* out = client[0].Data<float>();
  for (int r = 0; r < 2; ++r) {
    std::vector<float> row(out + r * classes, out + (r + 1) * classes);
    EXPECT_EQ(ArgMax(row), r == 0 ? 0 : 2);
    EXPECT_LE(guard.Score(row), 0.52);  // rounded to 3 decimals after the perturbation
    for (float v : row) EXPECT_EQ(v, static_cast<float>(std::nearbyint(v * 1000.0) / 1000.0));
  }

  policy.mode = capsule::OutputMode::kLabel;
  EXPECT_EQ(ApplyOutputPolicy(policy, scores.View(), &rng, guard.memguard.get(), &client).message(),
            "output policy: MemGuard perturbs the confidence vector, so the mode must be "
            "probabilities or rounded (it is label)");
  policy.mode = capsule::OutputMode::kProbabilities;
  EXPECT_EQ(
      ApplyOutputPolicy(policy, scores.View(), nullptr, guard.memguard.get(), &client).message(),
      "output policy: MemGuard needs a random source");
  engine::Tensor three = engine::Tensor::FromFloats({1, 3}, {1.0f, 2.0f, 3.0f});
  EXPECT_EQ(ApplyOutputPolicy(policy, three.View(), &rng, guard.memguard.get(), &client).message(),
            "output policy: MemGuard was set up for 5 classes, scores have 3");
}

// ---- Cost ----

// Per-query cost on C = 10 with the default step budget (100) and a larger one, against the
// session-backed max-confidence classifier (one thread). Printed for bench/README.md.
TEST(MemGuardTest, PerQueryCost) {
  const int classes = 10;
  for (uint32_t steps : {100u, 300u}) {
    Guard guard = MakeGuard(MaxConfidenceClassifier(classes), classes, 0.5, steps);
    Rng rng(Seed(8));
    std::mt19937 vectors(9);
    std::vector<std::vector<float>> rows;
    for (int i = 0; i < 500; ++i) rows.push_back(RandomDistribution(vectors, classes, 4.0f));
    for (std::vector<float> row : rows)
      ASSERT_TRUE(guard.memguard->Perturb(row, rng, nullptr).ok());
    double calls = 0;
    auto start = std::chrono::steady_clock::now();
    for (std::vector<float> row : rows) {
      MemGuardStats stats;
      ASSERT_TRUE(guard.memguard->Perturb(row, rng, &stats).ok());
      calls += stats.steps;
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // The classifier alone, on 11 rows: the rest of a call's share is the search's own work.
    std::vector<float> batch(11 * classes, 0.1f), member(11);
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < 10000; ++i) ASSERT_TRUE(guard.classifier(batch, 11, member).ok());
    double classifier_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 10000;
    if (steps == 100) {
      Guard mlp = MakeGuard(MlpClassifier(classes), classes, 0.5, steps);
      ASSERT_TRUE(mlp.classifier(batch, 11, member).ok());
      start = std::chrono::steady_clock::now();
      for (int i = 0; i < 10000; ++i) ASSERT_TRUE(mlp.classifier(batch, 11, member).ok());
      std::printf(
          "MLP 10-64-64-1 classifier on 11 rows: %.2f us per call\n",
          1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
              10000);
    }
    std::printf(
        "memguard C=10 steps<=%u: %.1f us per query, %.1f classifier calls (11 rows) per "
        "query, %.2f us per call (classifier alone %.2f us)\n",
        steps, 1e6 * seconds / rows.size(), calls / rows.size(), 1e6 * seconds / calls,
        1e6 * classifier_seconds);
  }
}

}  // namespace
}  // namespace mlcapsule::defense
