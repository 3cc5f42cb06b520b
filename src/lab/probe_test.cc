// Tests of the KENNEN-style probe on a tiny zoo over the real Fashion-MNIST: the shape and sanity
// of its results (not their science), its configuration checks, and that it is deterministic.
#include "lab/probe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "lab/nets.h"

namespace mlcapsule::lab {
namespace {

const std::map<std::string, int> kValuesPerAttribute = {
    {"activation", 2}, {"depth", 3}, {"width", 2}, {"optimizer", 2}};

// Loaded once for the whole binary: reading the gzipped IDX files is the slow part of setup.
const Splits* SmallSplits() {
  static const std::optional<Splits> splits = []() -> std::optional<Splits> {
    Result<FashionMnist> data = LoadFashionMnist(kFashionMnistDir);
    if (!data.ok()) return std::nullopt;
    SplitSizes sizes{.victim_train = 100,
                     .victim_heldout = 100,
                     .defender_nonmember = 100,
                     .attacker_pool = 500,
                     .shadow = 2000,
                     .test = 500};
    Result<Splits> made = MakeSplits(*data, sizes, 7);
    if (!made.ok()) return std::nullopt;
    return std::move(made).value();
  }();
  return splits ? &*splits : nullptr;
}

ProbeConfig SmallConfig() {
  ProbeConfig config;
  config.models = 12;
  config.epochs = 2;
  config.train_samples = 1000;
  config.queries = 30;
  config.output_policies = {R"({"mode":"probabilities","logits":true})", R"({"mode":"label"})"};
  config.seed = 3;
  return config;
}

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::is_directory(kFashionMnistDir))
      GTEST_SKIP() << kFashionMnistDir << " is absent (Debian package dataset-fashion-mnist)";
    InitTorchForLab();
    splits_ = SmallSplits();
    ASSERT_NE(splits_, nullptr) << "cannot load Fashion-MNIST from " << kFashionMnistDir;
  }
  const Splits* splits_ = nullptr;
};

TEST_F(ProbeTest, ResultsAreSaneAndDeterministic) {
  const ProbeConfig config = SmallConfig();
  Result<std::vector<ProbeResult>> first = RunKennenProbe(config, *splits_, "kennen-test");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->size(), config.output_policies.size() * kValuesPerAttribute.size());

  std::set<std::pair<std::string, std::string>> seen;
  for (const ProbeResult& r : *first) {
    SCOPED_TRACE(r.policy + " / " + r.attribute);
    EXPECT_TRUE(r.policy == "probabilities" || r.policy == "label");
    ASSERT_TRUE(kValuesPerAttribute.contains(r.attribute));
    EXPECT_TRUE(seen.insert({r.policy, r.attribute}).second) << "duplicate row";
    EXPECT_EQ(r.models, config.models);
    for (double v : {r.accuracy, r.ci_low, r.ci_high, r.majority}) {
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    EXPECT_LE(r.ci_low, r.accuracy);
    EXPECT_LE(r.accuracy, r.ci_high);
    EXPECT_LT(r.ci_low, r.ci_high);
    EXPECT_GE(r.majority, 1.0 / kValuesPerAttribute.at(r.attribute) - 1e-12);
  }
  // The 12-model zoo is a balanced half of the 24 combinations: every value equally often.
  for (const ProbeResult& r : *first)
    EXPECT_DOUBLE_EQ(r.majority, 1.0 / kValuesPerAttribute.at(r.attribute)) << r.attribute;

  Result<std::vector<ProbeResult>> second = RunKennenProbe(config, *splits_, "kennen-test");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_EQ(second->size(), first->size());
  for (size_t i = 0; i < first->size(); ++i) {
    EXPECT_EQ((*second)[i].policy, (*first)[i].policy);
    EXPECT_EQ((*second)[i].attribute, (*first)[i].attribute);
    EXPECT_EQ((*second)[i].accuracy, (*first)[i].accuracy) << (*first)[i].policy;
  }
}

TEST_F(ProbeTest, PolicyNamesCarryTheirParameter) {
  ProbeConfig config = SmallConfig();
  config.models = 2;
  config.epochs = 1;
  config.train_samples = 100;
  config.queries = 5;
  config.output_policies = {R"({"mode":"rounded","decimals":1,"logits":true})",
                            R"({"mode":"top_k","k":1,"logits":true})",
                            R"({"mode":"reverse_sigmoid","logits":true})",
                            R"({"mode":"gaussian","sigma":0.05,"logits":true})"};
  Result<std::vector<ProbeResult>> results = RunKennenProbe(config, *splits_, "kennen-test");
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  std::set<std::string> names;
  for (const ProbeResult& r : *results) names.insert(r.policy);
  EXPECT_EQ(names,
            (std::set<std::string>{"rounded(1)", "top_k(1)", "reverse_sigmoid", "gaussian(0.05)"}));
}

TEST_F(ProbeTest, RejectsBadConfigurations) {
  ProbeConfig config = SmallConfig();
  config.models = 1;
  EXPECT_EQ(RunKennenProbe(config, *splits_, "t").status().code(), StatusCode::kInvalidArgument);
  config = SmallConfig();
  config.queries = 501;  // more than the attacker pool
  EXPECT_EQ(RunKennenProbe(config, *splits_, "t").status().code(), StatusCode::kInvalidArgument);
  config = SmallConfig();
  config.output_policies = {R"({"mode":"top_k","k":0})"};
  Result<std::vector<ProbeResult>> bad = RunKennenProbe(config, *splits_, "t");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("output.k"), std::string::npos) << bad.status().message();
  config.output_policies = {R"({"mode":"top_k","k":11,"logits":true})"};  // more than 10 classes
  EXPECT_EQ(RunKennenProbe(config, *splits_, "t").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mlcapsule::lab
