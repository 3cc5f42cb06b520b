// Tests for the membership-inference attacks (mia.h) on a tiny, deliberately overfit MLP victim
// packed into real capsules: every answer comes through the client and the mlcapsule-core process,
// as in the lab. Needs Fashion-MNIST (dataset-fashion-mnist) and the core binary beside the build;
// skips with a message when either is absent.
#include "lab/mia.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "compiler/compiler.h"

namespace mlcapsule::lab {
namespace {

constexpr int64_t kSide = 200;  // members and non-members
constexpr int kLiraShadows = 8;
constexpr uint64_t kQuota = 100'000;  // within the policy's lease.max_queries

std::string Policy(const std::string& output) {
  return R"({"version":1,"tee":{"accept":["software"]},)"
         R"("lease":{"max_queries":1000000,"max_days":30,"seal_every":1000},"output":)" +
         output + "}";
}

std::string BinaryDir() {
  const char* dir = std::getenv("MLCAPSULE_BINARY_DIR");
  return dir != nullptr ? dir : "";
}

std::string WorkDir(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) /
          ("mia_test_" + std::to_string(getpid()) + "_" + name))
      .string();
}

// One victim, its shadows and its ONNX, shared by every test (training is the slow part).
struct World {
  Splits splits;
  MiaConfig config;
  Net victim{nullptr};
  std::string onnx;
  ShadowSet shadows;
  double shadow_seconds = 0;
};

class MiaTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    InitTorchForLab();
    if (!std::filesystem::exists(kFashionMnistDir)) {
      skip_ = std::string("Fashion-MNIST is not installed at ") + kFashionMnistDir +
              " (apt-get install dataset-fashion-mnist)";
      return;
    }
    if (BinaryDir().empty() || !std::filesystem::exists(BinaryDir() + "/mlcapsule-core")) {
      skip_ = "mlcapsule-core not found in MLCAPSULE_BINARY_DIR='" + BinaryDir() +
              "' (run the test through ctest)";
      return;
    }
    world_ = new World();
    Result<FashionMnist> data = LoadFashionMnist(kFashionMnistDir);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    SplitSizes sizes{.victim_train = kSide,
                     .victim_heldout = kSide,
                     .defender_nonmember = kSide,
                     .attacker_pool = 0,
                     .shadow = 2 * kSide,
                     .test = 0};
    Result<Splits> splits = MakeSplits(*data, sizes, 20261122);
    ASSERT_TRUE(splits.ok()) << splits.status().ToString();
    world_->splits = std::move(*splits);

    // A small MLP trained long on few images: it memorises them, so membership leaks.
    MiaConfig& config = world_->config;
    config.victim_arch.kind = ArchSpec::Kind::kMlp;
    config.victim_arch.hidden = {64};
    config.victim_train.epochs = 30;
    config.victim_train.batch = 32;
    config.lira_shadows = kLiraShadows;
    config.mlleaks_shadows = 1;
    config.label_only_shift = 1;
    config.seed = 7;
    world_->victim = MakeNet(config.victim_arch, 11);
    ASSERT_TRUE(Train(world_->victim, ImagesTensor(world_->splits.victim_train),
                      LabelsTensor(world_->splits.victim_train), config.victim_train, "victim")
                    .ok());
    std::fprintf(stderr, "victim: train acc %.3f, held-out acc %.3f\n",
                 Accuracy(world_->victim, ImagesTensor(world_->splits.victim_train),
                          LabelsTensor(world_->splits.victim_train)),
                 Accuracy(world_->victim, ImagesTensor(world_->splits.victim_heldout),
                          LabelsTensor(world_->splits.victim_heldout)));
    Result<std::string> onnx = ExportOnnx(world_->victim);
    ASSERT_TRUE(onnx.ok()) << onnx.status().ToString();
    world_->onnx = std::move(*onnx);

    const auto start = std::chrono::steady_clock::now();
    Result<ShadowSet> shadows = TrainShadows(config, world_->splits, "mia-test");
    ASSERT_TRUE(shadows.ok()) << shadows.status().ToString();
    world_->shadows = std::move(*shadows);
    world_->shadow_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete world_;
    world_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(ready_) << "the suite's setup failed (see above)";
  }

  static Result<std::unique_ptr<CapsuleOracle>> MakeOracle(const std::string& name,
                                                           const std::string& output) {
    CapsuleSpec spec{.name = name, .model_onnx = world_->onnx, .policy_json = Policy(output)};
    return CapsuleOracle::Create(
        spec, {.work_dir = WorkDir(name), .bin_dir = BinaryDir(), .quota = kQuota});
  }

  static const MiaResult* Find(const std::vector<MiaResult>& results, const std::string& attack) {
    for (const MiaResult& r : results) {
      if (r.attack == attack) return &r;
    }
    return nullptr;
  }

  static inline World* world_ = nullptr;
  static inline std::string skip_;
  static inline bool ready_ = false;
};

TEST_F(MiaTest, ShadowSetShapes) {
  const ShadowSet& s = world_->shadows;
  EXPECT_EQ(s.lira_in.sizes(), (std::vector<int64_t>{kLiraShadows, 2 * kSide}));
  EXPECT_EQ(s.lira_phi.sizes(), s.lira_in.sizes());
  // Every LiRA shadow trains on exactly half of the targets.
  for (int i = 0; i < kLiraShadows; ++i) EXPECT_EQ(s.lira_in[i].sum().item<int64_t>(), kSide);
  EXPECT_EQ(s.shadow_member_probs.sizes(), (std::vector<int64_t>{kSide, kFashionClasses}));
  EXPECT_EQ(s.shadow_nonmember_probs.sizes(), (std::vector<int64_t>{kSide, kFashionClasses}));
  EXPECT_EQ(s.shadow_member_correct.size(0), kSide);
  EXPECT_LE(s.shadow_member_correct.max().item<float>(), 5.0f);  // 4d+1 translations, d = 1
  EXPECT_TRUE(torch::isfinite(s.lira_phi).all().item<bool>());
  // The shadows memorise their members as the victim does: members score higher on average.
  const torch::Tensor in = s.lira_in, phi = s.lira_phi;
  EXPECT_GT(phi.masked_select(in).mean().item<double>(),
            phi.masked_select(in.logical_not()).mean().item<double>());
  std::fprintf(stderr, "shadow training: %.2f s for %d shadows (%.3f s each)\n",
               world_->shadow_seconds, kLiraShadows + 1,
               world_->shadow_seconds / (kLiraShadows + 1));
}

TEST_F(MiaTest, AttacksOnProbabilitiesCapsule) {
  auto oracle = MakeOracle("probabilities", R"({"mode":"probabilities","logits":true})");
  ASSERT_TRUE(oracle.ok()) << oracle.status().ToString();
  Result<std::vector<MiaResult>> results = RunMembershipAttacks(
      world_->config, world_->shadows, world_->splits, **oracle, "mia-test/probabilities");
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  const std::vector<std::string> expected = {"loss",         "confidence", "entropy",
                                             "mentr",        "ml-leaks",   "lira-online",
                                             "lira-offline", "label-only"};
  ASSERT_EQ(results->size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const MiaResult& r = (*results)[i];
    EXPECT_EQ(r.attack, expected[i]);
    EXPECT_GE(r.auc, 0.0) << r.attack;
    EXPECT_LE(r.auc, 1.0) << r.attack;
    EXPECT_EQ(r.members, kSide) << r.attack;
    EXPECT_EQ(r.nonmembers, kSide) << r.attack;
    EXPECT_GE(r.balanced_accuracy_best, 0.5) << r.attack;
    EXPECT_LE(r.tpr_at_01pct, r.tpr_at_1pct) << r.attack;
    const bool lira = r.attack.rfind("lira", 0) == 0;
    if (lira) {
      EXPECT_EQ(r.balanced_accuracy_calibrated, -1) << r.attack;
    } else {
      EXPECT_GE(r.balanced_accuracy_calibrated, 0.0) << r.attack;
      EXPECT_LE(r.balanced_accuracy_calibrated, 1.0) << r.attack;
    }
    EXPECT_EQ(r.queries, r.attack == "label-only" ? 5 * 2 * kSide : 2 * kSide) << r.attack;
  }
  // The victim memorised its 200 images: LiRA sees it.
  const MiaResult* online = Find(*results, "lira-online");
  ASSERT_NE(online, nullptr);
  EXPECT_GT(online->auc, 0.55);
  // Identity answers are reused, so the capsule answered 4d*T + T rows in all.
  EXPECT_EQ((*oracle)->queries(), 5 * 2 * kSide);
}

TEST_F(MiaTest, LabelCapsuleLeavesOnlyCorrectness) {
  auto oracle = MakeOracle("label", R"({"mode":"label","logits":true})");
  ASSERT_TRUE(oracle.ok()) << oracle.status().ToString();
  ASSERT_TRUE((*oracle)->label_only());
  Result<std::vector<MiaResult>> results = RunMembershipAttacks(
      world_->config, world_->shadows, world_->splits, **oracle, "mia-test/label");
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  for (const MiaResult& r : *results) {
    EXPECT_GE(r.auc, 0.0) << r.attack;
    EXPECT_LE(r.auc, 1.0) << r.attack;
    // One ROC point per distinct score, after the (0,0) point.
    const size_t distinct = r.roc.threshold.size() - 1;
    if (r.attack == "loss" || r.attack == "mentr") {
      // A one-hot answer says only "correct" or "wrong". (LiRA still ranks finely: its 2-valued
      // phi is compared with each target's own shadow statistics.)
      EXPECT_LE(distinct, 2u) << r.attack;
    } else if (r.attack == "confidence" || r.attack == "entropy" || r.attack == "ml-leaks") {
      EXPECT_EQ(distinct, 1u) << r.attack;
      EXPECT_DOUBLE_EQ(r.auc, 0.5) << r.attack;
    } else if (r.attack == "label-only") {
      EXPECT_LE(distinct, 6u) << r.attack;  // 0..5 correct translations
    }
  }
}

TEST_F(MiaTest, ShadowSetRoundTrip) {
  const std::string path = WorkDir("shadows.pt");
  ASSERT_TRUE(SaveShadowSet(world_->shadows, path).ok());
  Result<ShadowSet> loaded = LoadShadowSet(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const ShadowSet& a = world_->shadows;
  const ShadowSet& b = *loaded;
  EXPECT_TRUE(torch::equal(a.lira_in, b.lira_in));
  EXPECT_TRUE(torch::equal(a.lira_phi, b.lira_phi));
  EXPECT_TRUE(torch::equal(a.shadow_member_probs, b.shadow_member_probs));
  EXPECT_TRUE(torch::equal(a.shadow_nonmember_probs, b.shadow_nonmember_probs));
  EXPECT_TRUE(torch::equal(a.shadow_member_labels, b.shadow_member_labels));
  EXPECT_TRUE(torch::equal(a.shadow_nonmember_labels, b.shadow_nonmember_labels));
  EXPECT_TRUE(torch::equal(a.shadow_member_correct, b.shadow_member_correct));
  EXPECT_TRUE(torch::equal(a.shadow_nonmember_correct, b.shadow_nonmember_correct));

  // A missing, truncated or foreign file is a DataLoss error, never an exception.
  EXPECT_EQ(LoadShadowSet(path + ".missing").status().code(), StatusCode::kDataLoss);
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  EXPECT_EQ(LoadShadowSet(path).status().code(), StatusCode::kDataLoss);
  std::ofstream(path, std::ios::trunc) << "not a shadow set";
  EXPECT_EQ(LoadShadowSet(path).status().code(), StatusCode::kDataLoss);
  std::vector<torch::Tensor> foreign = {torch::ones({3})};
  torch::save(foreign, path);
  EXPECT_EQ(LoadShadowSet(path).status().code(), StatusCode::kDataLoss);
  std::filesystem::remove(path);
}

TEST_F(MiaTest, RejectsMismatchedShadows) {
  ShadowSet other = world_->shadows;
  other.lira_in = other.lira_in.slice(1, 0, kSide);
  other.lira_phi = other.lira_phi.slice(1, 0, kSide);
  auto oracle = MakeOracle("mismatch", R"({"mode":"probabilities","logits":true})");
  ASSERT_TRUE(oracle.ok()) << oracle.status().ToString();
  EXPECT_EQ(RunMembershipAttacks(world_->config, other, world_->splits, **oracle, "mismatch")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  MiaConfig bad = world_->config;
  bad.lira_shadows = 0;
  EXPECT_EQ(TrainShadows(bad, world_->splits, "bad").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MiaTest, DefenderClassifier) {
  const auto start = std::chrono::steady_clock::now();
  Result<DefenderClassifier> defender =
      TrainDefenderClassifier(world_->victim, world_->splits, 5, "mia-test");
  ASSERT_TRUE(defender.ok()) << defender.status().ToString();
  std::fprintf(stderr, "defender classifier: %.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_GE(defender->heldout_auc, 0.0);
  EXPECT_LE(defender->heldout_auc, 1.0);
  Result<std::string> onnx = ExportOnnx(defender->net);
  ASSERT_TRUE(onnx.ok()) << onnx.status().ToString();
  Result<engine::Plan> plan = compiler::CompileOnnx(*onnx, compiler::CompileOptions{});
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
}

}  // namespace
}  // namespace mlcapsule::lab
