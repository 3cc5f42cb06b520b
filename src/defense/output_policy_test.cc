// Output policies: exact answers for each mode, ties, softmax (against a double-precision
// reference), NaN and infinities, batches, and the capsule-open-time validation.
#include "defense/output_policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace mlcapsule::defense {
namespace {

using capsule::IoDim;
using capsule::IoTensor;
using capsule::OutputMode;
using capsule::OutputPolicy;
using engine::DType;
using engine::Tensor;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

OutputPolicy MakePolicy(OutputMode mode, int k = 1, bool logits = false, int decimals = 2) {
  OutputPolicy policy;
  policy.mode = mode;
  policy.k = k;
  policy.logits = logits;
  policy.decimals = decimals;
  return policy;
}

IoTensor Output(std::string name, std::vector<IoDim> dims, uint8_t dtype = 1) {
  return IoTensor{std::move(name), dtype, std::move(dims)};
}

// Runs the policy on `values` shaped `dims`; fails the test on error.
std::vector<Tensor> Apply(const OutputPolicy& policy, engine::Dims dims,
                          std::vector<float> values) {
  Tensor scores = Tensor::FromFloats(std::move(dims), std::move(values));
  std::vector<Tensor> client;
  Status status = ApplyOutputPolicy(policy, scores.View(), &client);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return client;
}

std::vector<float> Floats(const Tensor& tensor) {
  EXPECT_EQ(tensor.dtype, DType::kFloat32);
  return std::vector<float>(tensor.Data<float>(), tensor.Data<float>() + tensor.NumElements());
}
std::vector<int64_t> Int64s(const Tensor& tensor) {
  EXPECT_EQ(tensor.dtype, DType::kInt64);
  return std::vector<int64_t>(tensor.Data<int64_t>(),
                              tensor.Data<int64_t>() + tensor.NumElements());
}

// Reference softmax in double: the plain formula, max subtracted.
std::vector<double> ReferenceSoftmax(const std::vector<float>& row) {
  double max = *std::max_element(row.begin(), row.end());
  std::vector<double> out(row.size());
  double sum = 0;
  for (size_t i = 0; i < row.size(); ++i) sum += out[i] = std::exp(row[i] - max);
  for (double& value : out) value /= sum;
  return out;
}

// ---- OutputPolicyIo ----

TEST(OutputPolicyIoTest, TensorsPerMode) {
  std::vector<IoTensor> outputs = {Output("logits", {{1, true}, {10, false}})};
  Result<std::vector<IoTensor>> io =
      OutputPolicyIo(MakePolicy(OutputMode::kProbabilities), outputs);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  EXPECT_EQ(*io, outputs);

  io = OutputPolicyIo(MakePolicy(OutputMode::kRounded), outputs);
  ASSERT_TRUE(io.ok());
  EXPECT_EQ(*io, outputs);

  io = OutputPolicyIo(MakePolicy(OutputMode::kTopK, 3), outputs);
  ASSERT_TRUE(io.ok());
  EXPECT_EQ(*io, (std::vector<IoTensor>{Output("logits.values", {{1, true}, {3, false}}, 1),
                                        Output("logits.indices", {{1, true}, {3, false}}, 7)}));

  io = OutputPolicyIo(MakePolicy(OutputMode::kLabel), outputs);
  ASSERT_TRUE(io.ok());
  EXPECT_EQ(*io, (std::vector<IoTensor>{Output("logits.label", {{1, true}}, 7)}));

  // Rank 1: the label is a scalar; rank 3 keeps both leading dimensions.
  io = OutputPolicyIo(MakePolicy(OutputMode::kLabel), {Output("p", {{4, false}})});
  ASSERT_TRUE(io.ok());
  EXPECT_EQ(*io, (std::vector<IoTensor>{Output("p.label", {}, 7)}));
  io = OutputPolicyIo(MakePolicy(OutputMode::kTopK, 2),
                      {Output("seg", {{1, true}, {7, false}, {5, false}})});
  ASSERT_TRUE(io.ok());
  EXPECT_EQ((*io)[1], Output("seg.indices", {{1, true}, {7, false}, {2, false}}, 7));
}

TEST(OutputPolicyIoTest, OnlyTheSelectedOutputReachesTheClient) {
  std::vector<IoTensor> outputs = {Output("features", {{1, true}, {512, false}}),
                                   Output("probs", {{1, true}, {10, false}}),
                                   Output("ids", {{1, true}}, 7)};
  OutputPolicy policy = MakePolicy(OutputMode::kProbabilities);
  policy.tensor = "probs";
  Result<std::vector<IoTensor>> io = OutputPolicyIo(policy, outputs);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  EXPECT_EQ(*io, std::vector<IoTensor>{outputs[1]});
  std::vector<std::string> names = {"features", "probs", "ids"};
  Result<int> index = FindPolicyOutput(policy, names);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(*index, 1);
  policy.tensor = "";
  index = FindPolicyOutput(policy, names);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(*index, 0);  // "" is the first output
}

TEST(OutputPolicyIoTest, ValidationErrors) {
  auto error = [](const OutputPolicy& policy, const std::vector<IoTensor>& outputs) {
    Result<std::vector<IoTensor>> io = OutputPolicyIo(policy, outputs);
    EXPECT_FALSE(io.ok());
    return io.ok() ? std::string() : io.status().message();
  };
  std::vector<IoTensor> two = {Output("logits", {{1, true}, {3, false}}),
                               Output("features", {{1, true}, {64, false}})};
  OutputPolicy named = MakePolicy(OutputMode::kLabel);
  named.tensor = "probs";
  EXPECT_EQ(error(named, two),
            "output.tensor 'probs' is not an output of the model (outputs: 'logits', 'features')");
  EXPECT_EQ(error(MakePolicy(OutputMode::kLabel), {}), "the model has no outputs");

  EXPECT_EQ(error(MakePolicy(OutputMode::kTopK, 5), two),
            "output.k 5 is larger than the model's 3 classes");
  EXPECT_EQ(error(MakePolicy(OutputMode::kTopK, 4), two),
            "output.k 4 is larger than the model's 3 classes");
  EXPECT_TRUE(OutputPolicyIo(MakePolicy(OutputMode::kTopK, 3), two).ok());  // k == C
  // k only matters to top_k.
  EXPECT_TRUE(OutputPolicyIo(MakePolicy(OutputMode::kLabel, 5), two).ok());

  EXPECT_EQ(error(MakePolicy(OutputMode::kLabel), {Output("ids", {{1, true}, {3, false}}, 7)}),
            "model output 'ids' is int64; the output policy (label) needs float32 scores");
  EXPECT_EQ(error(MakePolicy(OutputMode::kRounded), {Output("x", {{1, true}}, 42)}),
            "model output 'x' is dtype code 42; the output policy (rounded) needs float32 scores");
  EXPECT_EQ(error(MakePolicy(OutputMode::kLabel), {Output("score", {})}),
            "model output 'score' is a scalar; the output policy needs rank >= 1 (the last "
            "dimension holds the classes)");
  EXPECT_EQ(error(MakePolicy(OutputMode::kLabel), {Output("tokens", {{1, false}, {3, true}})}),
            "the last dimension of model output 'tokens' [1,3N] scales with the batch size; the "
            "output policy needs a fixed class count");
  EXPECT_EQ(error(MakePolicy(OutputMode::kLabel), {Output("empty", {{1, true}, {0, false}})}),
            "model output 'empty' [N,0] has 0 classes; the output policy needs at least 1");
}

// ---- ApplyOutputPolicy ----

TEST(OutputPolicyTest, ProbabilitiesPassThrough) {
  std::vector<float> values = {0.1f, 0.7f, 0.2f, 0.25f, 0.25f, 0.5f};
  std::vector<Tensor> client = Apply(MakePolicy(OutputMode::kProbabilities), {2, 3}, values);
  ASSERT_EQ(client.size(), 1u);
  EXPECT_EQ(client[0].dims, (engine::Dims{2, 3}));
  EXPECT_EQ(Floats(client[0]), values);
}

TEST(OutputPolicyTest, SoftmaxOfLogits) {
  // softmax(0, ln 2, ln 3) = (1, 2, 3) / 6.
  std::vector<Tensor> client = Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {1, 3},
                                     {0.0f, std::log(2.0f), std::log(3.0f)});
  std::vector<float> probabilities = Floats(client[0]);
  ASSERT_EQ(probabilities.size(), 3u);
  EXPECT_NEAR(probabilities[0], 1.0 / 6, 1e-7);
  EXPECT_NEAR(probabilities[1], 2.0 / 6, 1e-7);
  EXPECT_NEAR(probabilities[2], 3.0 / 6, 1e-7);
  // Stable for huge logits: no overflow, no NaN.
  client = Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {3, 2},
                 {1000.0f, 1000.0f, -1000.0f, 0.0f, 88.0f, -88.0f});
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.5f, 0.5f, 0.0f, 1.0f, 1.0f, 0.0f}));
}

TEST(OutputPolicyTest, SoftmaxMatchesReference) {
  std::mt19937 rng(11);
  std::normal_distribution<float> logit(0.0f, 6.0f);
  for (int64_t classes : {1, 2, 10, 1000}) {
    std::vector<float> values(3 * classes);
    for (float& v : values) v = logit(rng);
    std::vector<Tensor> client =
        Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {3, classes}, values);
    std::vector<float> got = Floats(client[0]);
    for (int64_t r = 0; r < 3; ++r) {
      std::vector<float> row(values.begin() + r * classes, values.begin() + (r + 1) * classes);
      std::vector<double> want = ReferenceSoftmax(row);
      double sum = 0;
      for (int64_t i = 0; i < classes; ++i) {
        // Stated tolerance: 1e-6 relative to the largest probability (which is <= 1).
        EXPECT_NEAR(got[r * classes + i], want[i], 1e-6) << "row " << r << " class " << i;
        sum += got[r * classes + i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  }
}

TEST(OutputPolicyTest, RoundedExact) {
  std::vector<Tensor> client = Apply(MakePolicy(OutputMode::kRounded, 1, false, 2), {2, 3},
                                     {0.123f, 0.456f, 0.421f, 0.994f, 0.006f, 0.004f});
  EXPECT_EQ(client[0].dims, (engine::Dims{2, 3}));
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.12f, 0.46f, 0.42f, 0.99f, 0.01f, 0.0f}));
  // Exact binary halves round to even: 0.125 -> 0.12, 0.375 -> 0.38, 0.5 -> 0 and 1.5 -> 2 at 0
  // decimals.
  client = Apply(MakePolicy(OutputMode::kRounded, 1, false, 2), {2}, {0.125f, 0.375f});
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.12f, 0.38f}));
  client = Apply(MakePolicy(OutputMode::kRounded, 1, false, 0), {4}, {0.5f, 1.5f, 0.49f, 0.51f});
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.0f, 2.0f, 0.0f, 1.0f}));
  client = Apply(MakePolicy(OutputMode::kRounded, 1, false, 8), {2}, {0.123456789f, 0.5f});
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.12345679f, 0.5f}));
  client = Apply(MakePolicy(OutputMode::kRounded, 1, false, 1), {3}, {kNaN, kInf, 0.26f});
  std::vector<float> special = Floats(client[0]);
  EXPECT_TRUE(std::isnan(special[0]));
  EXPECT_EQ(special[1], kInf);
  EXPECT_EQ(special[2], 0.3f);
  // Softmax first, then rounding: (1, 2, 3) / 6 -> 0.167, 0.333, 0.5.
  client = Apply(MakePolicy(OutputMode::kRounded, 1, true, 3), {3},
                 {0.0f, std::log(2.0f), std::log(3.0f)});
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.167f, 0.333f, 0.5f}));
}

TEST(OutputPolicyTest, TopKExact) {
  std::vector<Tensor> client =
      Apply(MakePolicy(OutputMode::kTopK, 2), {1, 5}, {0.1f, 0.3f, 0.05f, 0.3f, 0.25f});
  ASSERT_EQ(client.size(), 2u);
  EXPECT_EQ(client[0].dims, (engine::Dims{1, 2}));
  EXPECT_EQ(client[1].dims, (engine::Dims{1, 2}));
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.3f, 0.3f}));
  EXPECT_EQ(Int64s(client[1]), (std::vector<int64_t>{1, 3}));  // tie: lower index first
}

TEST(OutputPolicyTest, TopKWithKEqualToClassesSortsTheRow) {
  std::vector<Tensor> client =
      Apply(MakePolicy(OutputMode::kTopK, 4), {4}, {0.2f, 0.4f, 0.2f, 0.2f});
  EXPECT_EQ(client[0].dims, (engine::Dims{4}));
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.4f, 0.2f, 0.2f, 0.2f}));
  EXPECT_EQ(Int64s(client[1]), (std::vector<int64_t>{1, 0, 2, 3}));
}

TEST(OutputPolicyTest, TopKBatchOfRows) {
  std::vector<Tensor> client = Apply(MakePolicy(OutputMode::kTopK, 2), {3, 4},
                                     {
                                         0.1f, 0.2f, 0.3f, 0.4f,  //
                                         0.9f, 0.0f, 0.1f, 0.0f,  //
                                         0.0f, 0.5f, 0.0f, 0.5f,  //
                                     });
  EXPECT_EQ(client[0].dims, (engine::Dims{3, 2}));
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.4f, 0.3f, 0.9f, 0.1f, 0.5f, 0.5f}));
  EXPECT_EQ(Int64s(client[1]), (std::vector<int64_t>{3, 2, 0, 2, 1, 3}));
}

TEST(OutputPolicyTest, TopKOfLogitsReturnsProbabilities) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, 3.0f, 0.0f};
  std::vector<Tensor> full = Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {2, 3}, logits);
  std::vector<Tensor> top = Apply(MakePolicy(OutputMode::kTopK, 2, true), {2, 3}, logits);
  std::vector<float> probabilities = Floats(full[0]);
  EXPECT_EQ(Int64s(top[1]), (std::vector<int64_t>{0, 2, 0, 1}));
  // The same probabilities, bit for bit, as the probabilities mode gives.
  EXPECT_EQ(Floats(top[0]), (std::vector<float>{probabilities[0], probabilities[2],
                                                probabilities[3], probabilities[4]}));
  EXPECT_NEAR(Floats(top[0])[2], std::exp(3.0) / (2 * std::exp(3.0) + 1), 1e-6);
}

TEST(OutputPolicyTest, LabelExact) {
  std::vector<Tensor> client = Apply(MakePolicy(OutputMode::kLabel), {4, 3},
                                     {
                                         0.1f, 0.7f, 0.2f,    //
                                         0.5f, 0.2f, 0.3f,    //
                                         0.4f, 0.2f, 0.4f,    // tie: the lower index
                                         -3.0f, -1.0f, -2.0f  //
                                     });
  ASSERT_EQ(client.size(), 1u);
  EXPECT_EQ(client[0].dims, (engine::Dims{4}));
  EXPECT_EQ(Int64s(client[0]), (std::vector<int64_t>{1, 0, 0, 1}));
  // Rank 1 scores give a scalar label; rank 3 keeps the leading dimensions.
  client = Apply(MakePolicy(OutputMode::kLabel, 1, true), {3}, {1.0f, 5.0f, 2.0f});
  EXPECT_EQ(client[0].dims, (engine::Dims{}));
  EXPECT_EQ(Int64s(client[0]), (std::vector<int64_t>{1}));
  client = Apply(MakePolicy(OutputMode::kLabel), {2, 1, 2}, {0.0f, 1.0f, 1.0f, 0.0f});
  EXPECT_EQ(client[0].dims, (engine::Dims{2, 1}));
  EXPECT_EQ(Int64s(client[0]), (std::vector<int64_t>{1, 0}));
}

TEST(OutputPolicyTest, NaNRanksLowestAndNeverCrashes) {
  std::vector<Tensor> label = Apply(MakePolicy(OutputMode::kLabel), {3, 3},
                                    {kNaN, -5.0f, kNaN, kNaN, kNaN, kNaN, 1.0f, kNaN, 2.0f});
  EXPECT_EQ(Int64s(label[0]), (std::vector<int64_t>{1, 0, 2}));

  std::vector<Tensor> top = Apply(MakePolicy(OutputMode::kTopK, 4), {4}, {kNaN, 0.2f, kNaN, 0.1f});
  EXPECT_EQ(Int64s(top[1]), (std::vector<int64_t>{1, 3, 0, 2}));
  std::vector<float> values = Floats(top[0]);
  EXPECT_EQ(values[0], 0.2f);
  EXPECT_EQ(values[1], 0.1f);
  EXPECT_TRUE(std::isnan(values[2]) && std::isnan(values[3]));

  // Softmax: NaN gets probability 0; an all-NaN row is uniform.
  std::vector<Tensor> soft = Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {2, 3},
                                   {kNaN, 0.0f, 0.0f, kNaN, kNaN, kNaN});
  EXPECT_EQ(Floats(soft[0]), (std::vector<float>{0.0f, 0.5f, 0.5f, 1.0f / 3, 1.0f / 3, 1.0f / 3}));
  std::vector<Tensor> soft_top =
      Apply(MakePolicy(OutputMode::kTopK, 3, true), {3}, {kNaN, 1.0f, 1.0f});
  EXPECT_EQ(Int64s(soft_top[1]), (std::vector<int64_t>{1, 2, 0}));
  EXPECT_EQ(Floats(soft_top[0]), (std::vector<float>{0.5f, 0.5f, 0.0f}));
}

TEST(OutputPolicyTest, InfiniteLogits) {
  // +inf takes all the mass (shared between equal maxima); a row with nothing above -inf shares
  // it among the -inf entries, NaN still ranking below them.
  std::vector<Tensor> soft = Apply(MakePolicy(OutputMode::kProbabilities, 1, true), {3, 3},
                                   {kInf, 0.0f, kInf, -kInf, -kInf, kNaN, -kInf, 5.0f, -kInf});
  EXPECT_EQ(Floats(soft[0]),
            (std::vector<float>{0.5f, 0.0f, 0.5f, 0.5f, 0.5f, 0.0f, 0.0f, 1.0f, 0.0f}));
  std::vector<Tensor> top = Apply(MakePolicy(OutputMode::kTopK, 2, true), {3}, {0.0f, kInf, 7.0f});
  EXPECT_EQ(Int64s(top[1]), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Floats(top[0]), (std::vector<float>{1.0f, 0.0f}));
  std::vector<Tensor> label = Apply(MakePolicy(OutputMode::kLabel), {3}, {kNaN, -kInf, kNaN});
  EXPECT_EQ(Int64s(label[0]), (std::vector<int64_t>{1}));
}

// The heap-based top-k against a stable sort, on rows full of ties and NaNs.
TEST(OutputPolicyTest, TopKMatchesStableSort) {
  std::mt19937 rng(5);
  for (int round = 0; round < 200; ++round) {
    int64_t classes = 1 + rng() % 40;
    int64_t k = 1 + rng() % classes;
    std::vector<float> row(classes);
    for (float& v : row) v = rng() % 7 == 0 ? kNaN : static_cast<float>(rng() % 5);
    std::vector<Tensor> top =
        Apply(MakePolicy(OutputMode::kTopK, static_cast<int>(k)), {classes}, row);
    std::vector<int64_t> want(classes);
    std::iota(want.begin(), want.end(), 0);
    std::stable_sort(want.begin(), want.end(), [&row](int64_t a, int64_t b) {
      if (std::isnan(row[a]) || std::isnan(row[b]))
        return !std::isnan(row[a]) && std::isnan(row[b]);
      return row[a] > row[b];
    });
    want.resize(k);
    EXPECT_EQ(Int64s(top[1]), want) << "round " << round;
    std::vector<Tensor> label = Apply(MakePolicy(OutputMode::kLabel), {classes}, row);
    EXPECT_EQ(Int64s(label[0])[0], want[0]) << "round " << round;
  }
}

// ApplyOutputPolicy's outputs have exactly the shapes OutputPolicyIo promised, at any batch size.
TEST(OutputPolicyTest, OutputsMatchOutputPolicyIo) {
  std::vector<IoTensor> outputs = {Output("logits", {{1, true}, {6, false}})};
  for (OutputMode mode :
       {OutputMode::kProbabilities, OutputMode::kTopK, OutputMode::kRounded, OutputMode::kLabel}) {
    OutputPolicy policy = MakePolicy(mode, 4, true);
    Result<std::vector<IoTensor>> io = OutputPolicyIo(policy, outputs);
    ASSERT_TRUE(io.ok());
    for (int64_t batch : {0, 1, 5}) {
      std::vector<Tensor> client =
          Apply(policy, {batch, 6}, std::vector<float>(static_cast<size_t>(batch * 6), 1.0f));
      ASSERT_EQ(client.size(), io->size());
      for (size_t i = 0; i < client.size(); ++i) {
        EXPECT_EQ(static_cast<uint8_t>(client[i].dtype), (*io)[i].dtype);
        engine::Dims want;
        for (const IoDim& dim : (*io)[i].dims)
          want.push_back(dim.batch ? dim.value * batch : dim.value);
        EXPECT_EQ(client[i].dims, want) << capsule::OutputModeName(mode) << " batch " << batch;
        EXPECT_EQ(client[i].bytes.size(), static_cast<size_t>(client[i].NumElements()) *
                                              engine::DTypeSize(client[i].dtype));
      }
    }
  }
}

TEST(OutputPolicyTest, ReusesTheCallersTensorsAcrossModes) {
  Tensor scores = Tensor::FromFloats({2, 3}, {0.1f, 0.6f, 0.3f, 0.5f, 0.4f, 0.1f});
  std::vector<Tensor> client;
  ASSERT_TRUE(ApplyOutputPolicy(MakePolicy(OutputMode::kTopK, 3), scores.View(), &client).ok());
  ASSERT_EQ(client.size(), 2u);
  ASSERT_TRUE(ApplyOutputPolicy(MakePolicy(OutputMode::kLabel), scores.View(), &client).ok());
  ASSERT_EQ(client.size(), 1u);
  EXPECT_EQ(client[0].dims, (engine::Dims{2}));
  EXPECT_EQ(Int64s(client[0]), (std::vector<int64_t>{1, 0}));
  ASSERT_TRUE(
      ApplyOutputPolicy(MakePolicy(OutputMode::kProbabilities), scores.View(), &client).ok());
  EXPECT_EQ(Floats(client[0]), (std::vector<float>{0.1f, 0.6f, 0.3f, 0.5f, 0.4f, 0.1f}));
}

TEST(OutputPolicyTest, RejectsScoresOutsideWhatWasValidated) {
  std::vector<Tensor> client;
  Tensor ids = Tensor::FromInt64s({1, 3}, {1, 2, 3});
  Status status = ApplyOutputPolicy(MakePolicy(OutputMode::kLabel), ids.View(), &client);
  EXPECT_EQ(status.message(), "output policy: scores are int64, expected float32");
  Tensor scalar = Tensor::FromFloats({}, {1.0f});
  status = ApplyOutputPolicy(MakePolicy(OutputMode::kLabel), scalar.View(), &client);
  EXPECT_EQ(status.message(), "output policy: scores of shape [] have no class dimension");
  Tensor no_classes = Tensor::FromFloats({2, 0}, {});
  status = ApplyOutputPolicy(MakePolicy(OutputMode::kLabel), no_classes.View(), &client);
  EXPECT_EQ(status.message(), "output policy: scores of shape [2,0] have no class dimension");
  Tensor three = Tensor::FromFloats({1, 3}, {1.0f, 2.0f, 3.0f});
  status = ApplyOutputPolicy(MakePolicy(OutputMode::kTopK, 4), three.View(), &client);
  EXPECT_EQ(status.message(), "output.k 4 is out of range 1..3 (the model's classes)");
}

}  // namespace
}  // namespace mlcapsule::defense
