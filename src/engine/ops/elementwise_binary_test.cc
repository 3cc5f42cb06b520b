// Tests for the binary and variadic elementwise ops (broadcasting, int64 semantics, NaN, errors)
// against hand-computed values.
#include <cmath>
#include <limits>

#include "engine/ops/elementwise_test_util.h"
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

Tensor Floats(std::vector<float> values) {
  int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromFloats({n}, std::move(values));
}
Tensor Int64s(std::vector<int64_t> values) {
  int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, std::move(values));
}

// Evaluates a node with the reference and the fast kernel; both must give `expected`.
void ExpectOp(const PlanNode& node, std::vector<const Tensor*> inputs, const Tensor& expected) {
  for (bool fast : {false, true}) {
    auto out = Eval(node, inputs, fast);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected);
  }
}

void ExpectBinary(OpType op, const Tensor& a, const Tensor& b, const Tensor& expected,
                  std::vector<Attribute> attrs = {}) {
  ExpectOp(MakeNode(op, 2, 1, std::move(attrs)), {&a, &b}, expected);
}

TEST(BinaryTest, SameShape) {
  Tensor a = Floats({1, 2, 3}), b = Floats({4, -5, 0.5f});
  ExpectBinary(OpType::kAdd, a, b, Floats({5, -3, 3.5f}));
  ExpectBinary(OpType::kSub, a, b, Floats({-3, 7, 2.5f}));
  ExpectBinary(OpType::kMul, a, b, Floats({4, -10, 1.5f}));
  ExpectBinary(OpType::kDiv, a, b, Floats({0.25f, -0.4f, 6}));
}

TEST(BinaryTest, BroadcastsTrailingAndBothSides) {
  Tensor a = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor row = Floats({10, 20, 30});
  ExpectBinary(OpType::kAdd, a, row, Tensor::FromFloats({2, 3}, {11, 22, 33, 14, 25, 36}));
  ExpectBinary(OpType::kSub, row, a, Tensor::FromFloats({2, 3}, {9, 18, 27, 6, 15, 24}));
  Tensor column = Tensor::FromFloats({2, 1}, {1, 2});
  Tensor across = Tensor::FromFloats({1, 3}, {1, 10, 100});
  ExpectBinary(OpType::kMul, column, across, Tensor::FromFloats({2, 3}, {1, 10, 100, 2, 20, 200}));
  Tensor scalar = Tensor::FromFloats({}, {2});
  ExpectBinary(OpType::kDiv, a, scalar, Tensor::FromFloats({2, 3}, {0.5f, 1, 1.5f, 2, 2.5f, 3}));
  ExpectBinary(OpType::kDiv, scalar, scalar, Tensor::FromFloats({}, {1}));
}

TEST(BinaryTest, BroadcastsMiddleDimension) {
  // [2, 1, 2] + [3, 1] -> [2, 3, 2]
  Tensor a = Tensor::FromFloats({2, 1, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::FromFloats({3, 1}, {10, 20, 30});
  ExpectBinary(OpType::kAdd, a, b,
               Tensor::FromFloats({2, 3, 2}, {11, 12, 21, 22, 31, 32, 13, 14, 23, 24, 33, 34}));
}

TEST(BinaryTest, Int64WrapsAndTruncates) {
  ExpectBinary(OpType::kAdd, Int64s({kInt64Max, 1}), Int64s({1, 2}), Int64s({kInt64Min, 3}));
  ExpectBinary(OpType::kSub, Int64s({kInt64Min, 5}), Int64s({1, 7}), Int64s({kInt64Max, -2}));
  ExpectBinary(OpType::kMul, Int64s({3, -4}), Int64s({5, 6}), Int64s({15, -24}));
  ExpectBinary(OpType::kDiv, Int64s({7, -7, 7, -7, 5, kInt64Min}), Int64s({2, 2, -2, -2, 0, -1}),
               Int64s({3, -3, -3, 3, 0, kInt64Min}));
}

TEST(BinaryTest, RejectsMixedTypesAndBadShapes) {
  Tensor f = Floats({1, 2}), i = Int64s({1, 2}), three = Floats({1, 2, 3});
  Status s = EvalStatus(MakeNode(OpType::kAdd, 2, 1), {&f, &i});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(MakeNode(OpType::kMul, 2, 1), {&f, &three});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(BinaryTest, RejectsRankOverLimit) {
  Tensor deep = Tensor::FromFloats(Dims(kMaxRank + 1, 1), {1});
  Status s = EvalStatus(MakeNode(OpType::kAdd, 2, 1), {&deep, &deep});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rank 9"), std::string::npos) << s.message();
}

TEST(PowTest, AllTypeCombinations) {
  ExpectBinary(OpType::kPow, Floats({2, 3, -2}), Floats({3, 0.5f, 2}), Floats({8, 1.7320508f, 4}));
  ExpectBinary(OpType::kPow, Floats({2, -2, 4}), Int64s({3, 3, -1}), Floats({8, -8, 0.25f}));
  ExpectBinary(OpType::kPow, Int64s({1, 2, 3}), Int64s({4, 5, 6}), Int64s({1, 32, 729}));
  ExpectBinary(OpType::kPow, Int64s({2, -1, 1, -1, 0}), Int64s({-1, -3, -5, -2, 0}),
               Int64s({0, -1, 1, 1, 1}));
  ExpectBinary(OpType::kPow, Int64s({1, 2, 3}), Floats({4, 5, 6}), Int64s({1, 32, 729}));
  ExpectBinary(OpType::kPow, Floats({-8}), Floats({1.0f / 3}), Floats({kNaN}));
  Tensor scalar = Tensor::FromFloats({}, {2});
  ExpectBinary(OpType::kPow, Floats({1, 2, 3}), scalar, Floats({1, 4, 9}));
}

TEST(ModTest, Int64FollowsDivisorSign) {
  ExpectBinary(OpType::kMod, Int64s({-4, 7, 5, 4, -7, 8}), Int64s({2, -3, 8, -2, 3, 5}),
               Int64s({0, -2, 5, 0, 2, 3}));
  ExpectBinary(OpType::kMod, Int64s({5, kInt64Min}), Int64s({0, -1}), Int64s({0, 0}));
}

TEST(ModTest, FmodFollowsDividendSign) {
  ExpectBinary(OpType::kMod, Int64s({-4, 7, 5, 4, -7, 8}), Int64s({2, -3, 8, -2, 3, 5}),
               Int64s({0, 1, 5, 0, -1, 3}), {IntsAttr("fmod", {1})});
  ExpectBinary(OpType::kMod, Floats({-4.5f, 7.5f, 5}), Floats({2, -3, 8}), Floats({-0.5f, 1.5f, 5}),
               {IntsAttr("fmod", {1})});
}

TEST(ModTest, RejectsFloatWithoutFmodAndBadFmod) {
  Tensor f = Floats({1}), i = Int64s({1});
  Status s = EvalStatus(MakeNode(OpType::kMod, 2, 1), {&f, &f});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("fmod"), std::string::npos) << s.message();
  s = EvalStatus(MakeNode(OpType::kMod, 2, 1, {IntsAttr("fmod", {2})}), {&i, &i});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("fmod"), std::string::npos) << s.message();
}

TEST(PReluTest, SlopeBroadcastsToInput) {
  Tensor x = Tensor::FromFloats({2, 3}, {-1, 2, -3, 4, -5, kNaN});
  Tensor slope = Floats({0.1f, 0.2f, 0.3f});
  ExpectBinary(OpType::kPRelu, x, slope,
               Tensor::FromFloats({2, 3}, {-0.1f, 2, -0.9f, 4, -1, kNaN}));
  Tensor per_row = Tensor::FromFloats({2, 1}, {0.5f, 2});
  ExpectBinary(OpType::kPRelu, x, per_row,
               Tensor::FromFloats({2, 3}, {-0.5f, 2, -1.5f, 4, -10, kNaN}));
}

TEST(PReluTest, RejectsSlopeThatGrowsTheOutput) {
  Tensor x = Floats({1, 2, 3});
  Tensor slope = Tensor::FromFloats({2, 3}, {1, 1, 1, 1, 1, 1});
  Status s = EvalStatus(MakeNode(OpType::kPRelu, 2, 1), {&x, &slope});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(VariadicTest, SumMeanOfThree) {
  Tensor a = Floats({3, 0, 2}), b = Floats({1, 3, 4}), c = Floats({2, 6, 6});
  ExpectOp(MakeNode(OpType::kSum, 3, 1), {&a, &b, &c}, Floats({6, 9, 12}));
  ExpectOp(MakeNode(OpType::kMean, 3, 1), {&a, &b, &c}, Floats({2, 3, 4}));
  ExpectOp(MakeNode(OpType::kMean, 1, 1), {&a}, a);
  ExpectOp(MakeNode(OpType::kSum, 1, 1), {&a}, a);
}

TEST(VariadicTest, Broadcasts) {
  Tensor column = Tensor::FromFloats({2, 1}, {1, 2});
  Tensor row = Floats({10, 20, 30});
  Tensor scalar = Tensor::FromFloats({}, {100});
  ExpectOp(MakeNode(OpType::kSum, 3, 1), {&scalar, &column, &row},
           Tensor::FromFloats({2, 3}, {111, 121, 131, 112, 122, 132}));
  Tensor values = Floats({1.5f, 0, 3});
  ExpectOp(MakeNode(OpType::kMax, 2, 1), {&column, &values},
           Tensor::FromFloats({2, 3}, {1.5f, 1, 3, 2, 2, 3}));
}

TEST(VariadicTest, MaxMinPropagateNaN) {
  Tensor a = Floats({1, kNaN, 3}), b = Floats({kNaN, 2, 1});
  ExpectOp(MakeNode(OpType::kMax, 2, 1), {&a, &b}, Floats({kNaN, kNaN, 3}));
  ExpectOp(MakeNode(OpType::kMin, 2, 1), {&a, &b}, Floats({kNaN, kNaN, 1}));
}

TEST(VariadicTest, Int64) {
  Tensor a = Int64s({1, -5, 3}), b = Int64s({2, -6, 3}), c = Int64s({0, 0, 4});
  ExpectOp(MakeNode(OpType::kMax, 3, 1), {&a, &b, &c}, Int64s({2, 0, 4}));
  ExpectOp(MakeNode(OpType::kMin, 3, 1), {&a, &b, &c}, Int64s({0, -6, 3}));
  ExpectOp(MakeNode(OpType::kSum, 3, 1), {&a, &b, &c}, Int64s({3, -11, 10}));
  Status s = EvalStatus(MakeNode(OpType::kMean, 2, 1), {&a, &b});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
}

TEST(VariadicTest, RejectsMixedTypes) {
  Tensor f = Floats({1}), i = Int64s({1});
  Status s = EvalStatus(MakeNode(OpType::kMax, 3, 1), {&f, &f, &i});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("input 2"), std::string::npos) << s.message();
}

// Tiles of the thread pool start and end mid-row; the result must not change.
TEST(BinaryTest, ThreadedBroadcastMatchesSingleThreaded) {
  Tensor a = RandomFloats({3, 10007}, 1);
  Tensor column = RandomFloats({3, 1}, 2);
  Tensor row = RandomFloats({10007}, 3);
  Tensor middle = RandomFloats({5, 1, 4099}, 4);
  Tensor other = RandomFloats({7, 1}, 5);
  const std::vector<std::vector<const Tensor*>> cases = {
      {&a, &column}, {&a, &row}, {&column, &row}, {&a, &a}, {&middle, &other}};
  for (const auto& inputs : cases) {
    PlanNode node = MakeNode(OpType::kAdd, 2, 1);
    auto expected = Eval(node, inputs);
    auto actual = EvalThreaded(node, inputs, 4);
    ASSERT_EQ(actual.size(), 1u);
    ExpectNear(actual[0], expected[0], 0, 0);
  }
  PlanNode sum = MakeNode(OpType::kSum, 3, 1);
  auto expected = Eval(sum, {&column, &row, &a});
  ExpectNear(EvalThreaded(sum, {&column, &row, &a}, 4)[0], expected[0], 0, 0);
  // Spot-check one broadcast element by hand.
  auto out = EvalThreaded(MakeNode(OpType::kAdd, 2, 1), {&a, &column}, 4);
  EXPECT_EQ(out[0].Data<float>()[2 * 10007 + 9000],
            a.Data<float>()[2 * 10007 + 9000] + column.Data<float>()[2]);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
