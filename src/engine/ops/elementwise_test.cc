// Tests for the unary elementwise ops, Clip and Cast against hand-computed values.
#include <cmath>
#include <limits>

#include "engine/ops/elementwise_test_util.h"
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Runs a one-input node on x with the reference and the fast kernel and checks both.
void ExpectUnary(OpType op, const Tensor& x, const Tensor& expected,
                 std::vector<Attribute> attrs = {}, float atol = 1e-5f) {
  PlanNode node = MakeNode(op, 1, 1, std::move(attrs));
  for (bool fast : {false, true}) {
    auto out = Eval(node, {&x}, fast);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected, atol);
  }
}

Tensor Floats(std::vector<float> values) {
  int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromFloats({n}, std::move(values));
}
Tensor Int64s(std::vector<int64_t> values) {
  int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, std::move(values));
}

TEST(ReluTest, ZeroesNegatives) {
  Tensor x = Tensor::FromFloats({2, 3}, {-1, 0, 2, -3.5f, 4, 0.5f});
  ExpectUnary(OpType::kRelu, x, Tensor::FromFloats({2, 3}, {0, 0, 2, 0, 4, 0.5f}));
}

TEST(ReluTest, PropagatesNaN) { ExpectUnary(OpType::kRelu, Floats({kNaN, -1}), Floats({kNaN, 0})); }

TEST(ReluTest, RejectsInt64) {
  Tensor x = Tensor::FromInt64s({2}, {1, -1});
  Status s = EvalStatus(MakeNode(OpType::kRelu, 1, 1), {&x});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("int64"), std::string::npos) << s.message();
}

TEST(UnaryTest, MathFunctions) {
  ExpectUnary(OpType::kSigmoid, Floats({0, 1, -2, -100, 100}),
              Floats({0.5f, 0.7310586f, 0.11920292f, 0, 1}));
  ExpectUnary(OpType::kTanh, Floats({0, 0.5f, -20}), Floats({0, 0.46211716f, -1}));
  ExpectUnary(OpType::kExp, Floats({0, 1, -1}), Floats({1, 2.7182817f, 0.36787944f}));
  ExpectUnary(OpType::kLog, Floats({1, 2, -1}), Floats({0, 0.6931472f, kNaN}));
  ExpectUnary(OpType::kSqrt, Floats({4, 2, -1}), Floats({2, 1.4142135f, kNaN}));
  ExpectUnary(OpType::kReciprocal, Floats({2, -4}), Floats({0.5f, -0.25f}));
  ExpectUnary(OpType::kFloor, Floats({-1.5f, 1.5f, 2}), Floats({-2, 1, 2}));
  ExpectUnary(OpType::kCeil, Floats({-1.5f, 1.5f, 2}), Floats({-1, 2, 2}));
  ExpectUnary(OpType::kSin, Floats({0, 1.5707964f}), Floats({0, 1}));
  ExpectUnary(OpType::kCos, Floats({0, 3.1415927f}), Floats({1, -1}));
  ExpectUnary(OpType::kErf, Floats({0, 0.5f, -3}), Floats({0, 0.5204999f, -0.9999779f}));
}

TEST(UnaryTest, RoundHalvesToEven) {
  ExpectUnary(OpType::kRound, Floats({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f, 2.6f, -2.6f}),
              Floats({0, 2, 2, 0, -2, 2, 3, -3}));
}

TEST(UnaryTest, NegAbsSignOnFloat) {
  ExpectUnary(OpType::kNeg, Floats({-3, 0, 5.5f}), Floats({3, 0, -5.5f}));
  ExpectUnary(OpType::kAbs, Floats({-1.5f, 2, kNaN}), Floats({1.5f, 2, kNaN}));
  ExpectUnary(OpType::kSign, Floats({-2, 0, 3, kNaN}), Floats({-1, 0, 1, kNaN}));
}

TEST(UnaryTest, NegAbsSignOnInt64) {
  ExpectUnary(OpType::kNeg, Int64s({-3, 0, 5, kInt64Min}), Int64s({3, 0, -5, kInt64Min}));
  ExpectUnary(OpType::kAbs, Int64s({-7, 7, 0}), Int64s({7, 7, 0}));
  ExpectUnary(OpType::kSign, Int64s({-5, 0, 9}), Int64s({-1, 0, 1}));
}

TEST(UnaryTest, FloatOnlyOpsRejectInt64) {
  Tensor x = Int64s({1});
  for (OpType op : {OpType::kExp, OpType::kSigmoid, OpType::kRound, OpType::kLeakyRelu}) {
    Status s = EvalStatus(MakeNode(op, 1, 1), {&x});
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << OpTypeName(op);
  }
}

TEST(UnaryTest, SoftplusSoftsignMish) {
  ExpectUnary(OpType::kSoftplus, Floats({0, 1, 100, -100}),
              Floats({0.6931472f, 1.3132616f, 100, 0}));
  ExpectUnary(OpType::kSoftsign, Floats({1, -3, 0}), Floats({0.5f, -0.75f, 0}));
  ExpectUnary(OpType::kMish, Floats({1, -1, 0, 50}), Floats({0.86509836f, -0.30340147f, 0, 50}));
}

TEST(ActivationTest, LeakyReluDefaultAndAlpha) {
  ExpectUnary(OpType::kLeakyRelu, Floats({-2, 3}), Floats({-0.02f, 3}));
  ExpectUnary(OpType::kLeakyRelu, Floats({-2, 3, kNaN}), Floats({-0.2f, 3, kNaN}),
              {FloatsAttr("alpha", {0.1f})});
}

TEST(ActivationTest, HardSigmoidAndHardSwish) {
  ExpectUnary(OpType::kHardSigmoid, Floats({-3, 0, 1, 3}), Floats({0, 0.5f, 0.7f, 1}));
  ExpectUnary(OpType::kHardSigmoid, Floats({-1, 0, 1, -2}), Floats({0.1f, 0.6f, 1, 0}),
              {FloatsAttr("alpha", {0.5f}), FloatsAttr("beta", {0.6f})});
  ExpectUnary(OpType::kHardSwish, Floats({-4, -1, 0, 1, 4}),
              Floats({0, -0.33333334f, 0, 0.6666667f, 4}));
}

TEST(ActivationTest, EluSeluCelu) {
  ExpectUnary(OpType::kElu, Floats({-1, 2}), Floats({-0.63212056f, 2}));
  ExpectUnary(OpType::kElu, Floats({-1, 2}), Floats({-1.2642411f, 2}), {FloatsAttr("alpha", {2})});
  ExpectUnary(OpType::kSelu, Floats({-1, 2, 0}), Floats({-1.1113307f, 2.101402f, 0}));
  ExpectUnary(OpType::kSelu, Floats({-1, 2}), Floats({-3.7927234f, 6}),
              {FloatsAttr("alpha", {2}), FloatsAttr("gamma", {3})});
  ExpectUnary(OpType::kCelu, Floats({-1, 3}), Floats({-0.63212056f, 3}));
  ExpectUnary(OpType::kCelu, Floats({-1, 3}), Floats({-0.7869387f, 3}), {FloatsAttr("alpha", {2})});
}

TEST(ActivationTest, ThresholdedRelu) {
  ExpectUnary(OpType::kThresholdedRelu, Floats({0.5f, 1, 2}), Floats({0, 0, 2}));
  ExpectUnary(OpType::kThresholdedRelu, Floats({0.5f, 1, 2, 0.1f}), Floats({0.5f, 1, 2, 0}),
              {FloatsAttr("alpha", {0.2f})});
}

TEST(ActivationTest, RejectsBadAttributes) {
  Tensor x = Floats({1});
  Status s = EvalStatus(MakeNode(OpType::kLeakyRelu, 1, 1, {IntsAttr("alpha", {1})}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("alpha"), std::string::npos) << s.message();
  s = EvalStatus(MakeNode(OpType::kElu, 1, 1, {FloatsAttr("alpha", {1, 2})}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(MakeNode(OpType::kCelu, 1, 1, {FloatsAttr("alpha", {0})}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

TEST(UnaryTest, ThreadedMatchesSingleThreaded) {
  Tensor x = RandomFloats({3, 50001}, 7, -5, 5);
  for (OpType op : {OpType::kSigmoid, OpType::kHardSwish, OpType::kRelu}) {
    PlanNode node = MakeNode(op, 1, 1);
    auto expected = Eval(node, {&x});
    auto actual = EvalThreaded(node, {&x}, 3);
    ASSERT_EQ(actual.size(), 1u);
    ExpectNear(actual[0], expected[0], 0, 0);
  }
}

// ---- Clip ----

TEST(ClipTest, BothBounds) {
  Tensor x = Floats({-2, -0.5f, 0.5f, 2, kNaN});
  Tensor low = Tensor::FromFloats({}, {-1});
  Tensor high = Tensor::FromFloats({1}, {1});
  auto out = Eval(MakeNode(OpType::kClip, 3, 1), {&x, &low, &high});
  ExpectNear(out[0], Floats({-1, -0.5f, 0.5f, 1, kNaN}));
}

TEST(ClipTest, AbsentBounds) {
  Tensor x = Floats({-2, 0, 2});
  Tensor low = Tensor::FromFloats({}, {-1});
  Tensor high = Tensor::FromFloats({}, {1});
  ExpectNear(Eval(MakeNode(OpType::kClip, 2, 1), {&x, &low})[0], Floats({-1, 0, 2}));
  ExpectNear(Eval(MakeNode(OpType::kClip, 3, 1), {&x, nullptr, &high})[0], Floats({-2, 0, 1}));
  ExpectNear(Eval(MakeNode(OpType::kClip, 1, 1), {&x})[0], Floats({-2, 0, 2}));
}

TEST(ClipTest, LowAboveHighGivesHigh) {  // numpy's clip (and ONNX's reference)
  Tensor x = Floats({-2, 0, 2});
  Tensor low = Tensor::FromFloats({}, {1});
  Tensor high = Tensor::FromFloats({}, {0});
  ExpectNear(Eval(MakeNode(OpType::kClip, 3, 1), {&x, &low, &high})[0], Floats({0, 0, 0}));
}

TEST(ClipTest, Int64) {
  Tensor x = Int64s({-20, 5, 20, kInt64Min});
  Tensor low = Tensor::FromInt64s({}, {-10});
  Tensor high = Tensor::FromInt64s({1, 1}, {10});
  ExpectNear(Eval(MakeNode(OpType::kClip, 3, 1), {&x, &low, &high})[0], Int64s({-10, 5, 10, -10}));
  ExpectNear(Eval(MakeNode(OpType::kClip, 3, 1), {&x, nullptr, &high})[0],
             Int64s({-20, 5, 10, kInt64Min}));
}

TEST(ClipTest, RejectsNonScalarOrMismatchedBounds) {
  Tensor x = Floats({1, 2});
  Tensor two = Tensor::FromFloats({2}, {0, 1});
  Status s = EvalStatus(MakeNode(OpType::kClip, 2, 1), {&x, &two});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("min"), std::string::npos) << s.message();
  Tensor int_bound = Tensor::FromInt64s({}, {1});
  s = EvalStatus(MakeNode(OpType::kClip, 3, 1), {&x, nullptr, &int_bound});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max"), std::string::npos) << s.message();
}

// ---- Cast ----

TEST(CastTest, FloatToInt64TruncatesAndSaturates) {
  Tensor x = Floats({1.9f, -1.9f, 0, 3e19f, -3e19f, kNaN});
  auto out = Eval(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {7})}), {&x});
  ExpectNear(out[0], Int64s({1, -1, 0, kInt64Max, kInt64Min, kInt64Min}));
}

TEST(CastTest, Int64ToFloatAndSameType) {
  Tensor x = Tensor::FromInt64s({2, 2}, {1, -2, 1 << 20, 0});
  auto out = Eval(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {1})}), {&x});
  ExpectNear(out[0], Tensor::FromFloats({2, 2}, {1, -2, 1 << 20, 0}));
  out = Eval(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {7})}), {&x});
  ExpectNear(out[0], x);
  Tensor f = Floats({1.5f, kNaN});
  out = Eval(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {1})}), {&f});
  ExpectNear(out[0], f);
}

TEST(CastTest, RejectsOtherTypes) {
  Tensor x = Floats({1});
  Status s = EvalStatus(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {6})}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("6"), std::string::npos) << s.message();
  s = EvalStatus(MakeNode(OpType::kCast, 1, 1, {IntsAttr("to", {99})}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(MakeNode(OpType::kCast, 1, 1), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
