// Tests for Softmax, LogSoftmax and Hardmax: hand-computed values, every axis of a rank-3 tensor
// against a naive implementation, coerce_2d, large inputs, threading and errors.
#include <cmath>
#include <limits>

#include "engine/ops/elementwise_test_util.h"
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

PlanNode SoftmaxNode(OpType op, int64_t axis, int64_t coerce_2d = 0) {
  return MakeNode(op, 1, 1, {IntsAttr("axis", {axis}), IntsAttr("coerce_2d", {coerce_2d})});
}

void ExpectSoftmax(const PlanNode& node, const Tensor& x, const Tensor& expected) {
  for (bool fast : {false, true}) {
    auto out = Eval(node, {&x}, fast);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected);
  }
}

TEST(SoftmaxTest, LastAxis) {
  Tensor x = Tensor::FromFloats({1, 3}, {-1, 0, 1});
  ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, -1), x,
                Tensor::FromFloats({1, 3}, {0.09003057f, 0.24472847f, 0.66524096f}));
  ExpectSoftmax(MakeNode(OpType::kSoftmax, 1, 1), x,  // attribute defaults: axis -1
                Tensor::FromFloats({1, 3}, {0.09003057f, 0.24472847f, 0.66524096f}));
  ExpectSoftmax(SoftmaxNode(OpType::kLogSoftmax, 1), x,
                Tensor::FromFloats({1, 3}, {-2.4076059f, -1.4076059f, -0.4076059f}));
}

TEST(SoftmaxTest, LargeNumbersAreStable) {
  Tensor x = Tensor::FromFloats({2, 4}, {0, 1, 2, 3, 10000, 10001, 10002, 10003});
  const std::vector<float> row = {0.0320586f, 0.08714432f, 0.23688284f, 0.64391428f};
  std::vector<float> both = row;
  both.insert(both.end(), row.begin(), row.end());
  ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, -1), x, Tensor::FromFloats({2, 4}, both));
  const std::vector<float> log_row = {-3.4401897f, -2.4401897f, -1.4401897f, -0.4401897f};
  both = log_row;
  both.insert(both.end(), log_row.begin(), log_row.end());
  ExpectSoftmax(SoftmaxNode(OpType::kLogSoftmax, -1), x, Tensor::FromFloats({2, 4}, both));
}

TEST(SoftmaxTest, LeadingAxis) {
  Tensor x = Tensor::FromFloats({2, 3}, {1, 2, 3, 3, 2, 1});
  ExpectSoftmax(
      SoftmaxNode(OpType::kSoftmax, 0), x,
      Tensor::FromFloats({2, 3}, {0.11920292f, 0.5f, 0.88079708f, 0.88079708f, 0.5f, 0.11920292f}));
  ExpectSoftmax(SoftmaxNode(OpType::kHardmax, 0), x,
                Tensor::FromFloats({2, 3}, {0, 1, 1, 1, 0, 0}));
}

TEST(SoftmaxTest, Coerce2dFlattensTrailingDims) {
  Tensor x = Tensor::FromFloats({2, 2, 2}, {0, 1, 2, 3, 0, 0, 0, 0});
  ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, 1, 1), x,
                Tensor::FromFloats({2, 2, 2}, {0.0320586f, 0.08714432f, 0.23688284f, 0.64391428f,
                                               0.25f, 0.25f, 0.25f, 0.25f}));
  ExpectSoftmax(SoftmaxNode(OpType::kHardmax, 1, 1), x,
                Tensor::FromFloats({2, 2, 2}, {0, 0, 0, 1, 1, 0, 0, 0}));
  // Axis 0 with coerce_2d: one row of all 8 elements.
  auto out = Eval(SoftmaxNode(OpType::kSoftmax, 0, 1), {&x});
  float total = 0;
  for (int i = 0; i < 8; ++i) total += out[0].Data<float>()[i];
  EXPECT_NEAR(total, 1.0f, 1e-6f);
  EXPECT_NEAR(
      out[0].Data<float>()[3],
      std::exp(3.0f) / (std::exp(0.0f) * 5 + std::exp(1.0f) + std::exp(2.0f) + std::exp(3.0f)),
      1e-6f);
}

TEST(HardmaxTest, FirstMaximumWins) {
  Tensor x = Tensor::FromFloats({2, 4}, {3, 1, 3, 0, 0, 2, 2, 1});
  ExpectSoftmax(SoftmaxNode(OpType::kHardmax, -1), x,
                Tensor::FromFloats({2, 4}, {1, 0, 0, 0, 0, 1, 0, 0}));
}

// Every axis of [3, 4, 70] (70 > the kernel's column block) against a naive softmax.
TEST(SoftmaxTest, EveryAxisMatchesNaive) {
  const Dims dims = {3, 4, 70};
  Tensor x = RandomFloats(dims, 3, -4, 4);
  for (int axis = 0; axis < 3; ++axis) {
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= dims[d];
    for (int d = axis + 1; d < 3; ++d) inner *= dims[d];
    const int64_t n = dims[axis];
    Tensor soft = Tensor::Make(DType::kFloat32, dims);
    Tensor log_soft = Tensor::Make(DType::kFloat32, dims);
    Tensor hard = Tensor::Make(DType::kFloat32, dims);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        auto at = [&](int64_t k) { return (o * n + k) * inner + i; };
        double total = 0;
        int64_t best = 0;
        for (int64_t k = 0; k < n; ++k) {
          total += std::exp(static_cast<double>(x.Data<float>()[at(k)]));
          if (x.Data<float>()[at(k)] > x.Data<float>()[at(best)]) best = k;
        }
        for (int64_t k = 0; k < n; ++k) {
          double v = x.Data<float>()[at(k)];
          soft.Data<float>()[at(k)] = static_cast<float>(std::exp(v) / total);
          log_soft.Data<float>()[at(k)] = static_cast<float>(v - std::log(total));
          hard.Data<float>()[at(k)] = k == best ? 1.0f : 0.0f;
        }
      }
    SCOPED_TRACE(axis);
    ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, axis), x, soft);
    ExpectSoftmax(SoftmaxNode(OpType::kLogSoftmax, axis - 3), x, log_soft);
    ExpectSoftmax(SoftmaxNode(OpType::kHardmax, axis), x, hard);
  }
}

TEST(SoftmaxTest, ScalarAndNaN) {
  Tensor scalar = Tensor::FromFloats({}, {5});
  ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, -1), scalar, Tensor::FromFloats({}, {1}));
  ExpectSoftmax(SoftmaxNode(OpType::kLogSoftmax, 0), scalar, Tensor::FromFloats({}, {0}));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::FromFloats({2, 2}, {1, nan, 1, 1});
  ExpectSoftmax(SoftmaxNode(OpType::kSoftmax, -1), x,
                Tensor::FromFloats({2, 2}, {nan, nan, 0.5f, 0.5f}));
}

TEST(SoftmaxTest, ThreadedMatchesSingleThreaded) {
  Tensor x = RandomFloats({8, 50, 130}, 9, -3, 3);
  for (int64_t axis : {0, 1, 2}) {
    PlanNode node = SoftmaxNode(OpType::kSoftmax, axis);
    auto expected = Eval(node, {&x});
    auto actual = EvalThreaded(node, {&x}, 4);
    ASSERT_EQ(actual.size(), 1u);
    ExpectNear(actual[0], expected[0], 0, 0);
  }
}

TEST(SoftmaxTest, RejectsBadAxisAndTypes) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Status s = EvalStatus(SoftmaxNode(OpType::kSoftmax, 2), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("axis 2"), std::string::npos) << s.message();
  s = EvalStatus(SoftmaxNode(OpType::kLogSoftmax, -3), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(SoftmaxNode(OpType::kSoftmax, 0, 2), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("coerce_2d"), std::string::npos) << s.message();
  Tensor ints = Tensor::FromInt64s({2}, {1, 2});
  s = EvalStatus(SoftmaxNode(OpType::kHardmax, 0), {&ints});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
