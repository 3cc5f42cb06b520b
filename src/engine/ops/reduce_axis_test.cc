// Tests for ArgMax, ArgMin and CumSum against hand-computed values (mostly the ONNX
// documentation's examples), including NaN, int64, select_last_index and errors.
#include <limits>

#include "engine/ops/elementwise_test_util.h"
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

PlanNode ArgNode(OpType op, int64_t axis, int64_t keepdims = 1, int64_t last = 0) {
  return MakeNode(op, 1, 1,
                  {IntsAttr("axis", {axis}), IntsAttr("keepdims", {keepdims}),
                   IntsAttr("select_last_index", {last})});
}

void ExpectOne(const PlanNode& node, std::vector<const Tensor*> inputs, const Tensor& expected) {
  for (bool fast : {false, true}) {
    auto out = Eval(node, inputs, fast);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected);
  }
}

TEST(ArgMaxTest, AxesAndKeepdims) {
  Tensor x = Tensor::FromFloats({2, 2}, {2, 1, 3, 10});
  ExpectOne(ArgNode(OpType::kArgMax, 0), {&x}, Tensor::FromInt64s({1, 2}, {1, 1}));
  ExpectOne(ArgNode(OpType::kArgMax, 1), {&x}, Tensor::FromInt64s({2, 1}, {0, 1}));
  ExpectOne(ArgNode(OpType::kArgMax, -1, 0), {&x}, Tensor::FromInt64s({2}, {0, 1}));
  ExpectOne(MakeNode(OpType::kArgMax, 1, 1), {&x}, Tensor::FromInt64s({1, 2}, {1, 1}));  // defaults
  ExpectOne(ArgNode(OpType::kArgMin, 1, 0), {&x}, Tensor::FromInt64s({2}, {1, 0}));
}

TEST(ArgMaxTest, SelectLastIndex) {
  Tensor x = Tensor::FromFloats({2, 2}, {2, 2, 3, 10});
  ExpectOne(ArgNode(OpType::kArgMax, 1, 0), {&x}, Tensor::FromInt64s({2}, {0, 1}));
  ExpectOne(ArgNode(OpType::kArgMax, 1, 0, 1), {&x}, Tensor::FromInt64s({2}, {1, 1}));
  ExpectOne(ArgNode(OpType::kArgMin, 1, 0, 1), {&x}, Tensor::FromInt64s({2}, {1, 0}));
}

TEST(ArgMaxTest, NaNWinsLikeNumpy) {
  Tensor x = Tensor::FromFloats({4}, {1, kNaN, 3, kNaN});
  ExpectOne(ArgNode(OpType::kArgMax, 0, 0), {&x}, Tensor::FromInt64s({}, {1}));
  ExpectOne(ArgNode(OpType::kArgMin, 0, 0), {&x}, Tensor::FromInt64s({}, {1}));
  ExpectOne(ArgNode(OpType::kArgMax, 0, 0, 1), {&x}, Tensor::FromInt64s({}, {3}));
}

TEST(ArgMaxTest, Int64AndMiddleAxis) {
  // [2, 3, 2]: argmax along axis 1.
  Tensor x = Tensor::FromInt64s({2, 3, 2}, {1, 9, 5, 2, 3, 7, -1, -2, -3, -4, -1, -2});
  ExpectOne(ArgNode(OpType::kArgMax, 1), {&x}, Tensor::FromInt64s({2, 1, 2}, {1, 0, 0, 0}));
  ExpectOne(ArgNode(OpType::kArgMin, -2, 0), {&x}, Tensor::FromInt64s({2, 2}, {0, 1, 1, 1}));
}

TEST(ArgMaxTest, RejectsBadAxis) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Status s = EvalStatus(ArgNode(OpType::kArgMax, 2), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("axis 2"), std::string::npos) << s.message();
  s = EvalStatus(ArgNode(OpType::kArgMin, 0, 3), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Tensor scalar = Tensor::FromFloats({}, {1});
  s = EvalStatus(ArgNode(OpType::kArgMax, 0), {&scalar});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Tensor empty = Tensor::Make(DType::kFloat32, {2, 0});
  s = EvalStatus(ArgNode(OpType::kArgMax, 1), {&empty});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

// ---- CumSum ----

PlanNode CumSumNode(int64_t exclusive = 0, int64_t reverse = 0) {
  return MakeNode(OpType::kCumSum, 2, 1,
                  {IntsAttr("exclusive", {exclusive}), IntsAttr("reverse", {reverse})});
}

TEST(CumSumTest, OneDimensionalVariants) {
  Tensor x = Tensor::FromFloats({5}, {1, 2, 3, 4, 5});
  Tensor axis = Tensor::FromInt64s({}, {0});
  ExpectOne(CumSumNode(), {&x, &axis}, Tensor::FromFloats({5}, {1, 3, 6, 10, 15}));
  ExpectOne(CumSumNode(1, 0), {&x, &axis}, Tensor::FromFloats({5}, {0, 1, 3, 6, 10}));
  ExpectOne(CumSumNode(0, 1), {&x, &axis}, Tensor::FromFloats({5}, {15, 14, 12, 9, 5}));
  ExpectOne(CumSumNode(1, 1), {&x, &axis}, Tensor::FromFloats({5}, {14, 12, 9, 5, 0}));
  ExpectOne(MakeNode(OpType::kCumSum, 2, 1), {&x, &axis},
            Tensor::FromFloats({5}, {1, 3, 6, 10, 15}));
}

TEST(CumSumTest, TwoDimensionalAndInt64) {
  Tensor x = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor axis0 = Tensor::FromInt64s({1}, {0});
  Tensor axis1 = Tensor::FromInt64s({}, {1});
  Tensor minus1 = Tensor::FromInt64s({}, {-1});
  ExpectOne(CumSumNode(), {&x, &axis0}, Tensor::FromFloats({2, 3}, {1, 2, 3, 5, 7, 9}));
  ExpectOne(CumSumNode(), {&x, &axis1}, Tensor::FromFloats({2, 3}, {1, 3, 6, 4, 9, 15}));
  ExpectOne(CumSumNode(), {&x, &minus1}, Tensor::FromFloats({2, 3}, {1, 3, 6, 4, 9, 15}));
  ExpectOne(CumSumNode(1, 1), {&x, &axis0}, Tensor::FromFloats({2, 3}, {4, 5, 6, 0, 0, 0}));
  Tensor ints = Tensor::FromInt64s({2, 3}, {1, 2, 3, 4, 5, 6});
  ExpectOne(CumSumNode(0, 1), {&ints, &axis1}, Tensor::FromInt64s({2, 3}, {6, 5, 3, 15, 11, 6}));
}

TEST(CumSumTest, ThreadedMatchesSingleThreaded) {
  Tensor x = RandomFloats({300, 7, 20}, 4);
  Tensor axis = Tensor::FromInt64s({}, {1});
  PlanNode node = CumSumNode(1, 1);
  auto expected = Eval(node, {&x, &axis});
  ExpectNear(EvalThreaded(node, {&x, &axis}, 4)[0], expected[0], 0, 0);
}

TEST(CumSumTest, RejectsBadAxisInput) {
  Tensor x = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor axis2 = Tensor::FromInt64s({}, {2});
  Status s = EvalStatus(CumSumNode(), {&x, &axis2});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("axis 2"), std::string::npos) << s.message();
  Tensor two_axes = Tensor::FromInt64s({2}, {0, 1});
  EXPECT_EQ(EvalStatus(CumSumNode(), {&x, &two_axes}).code(), StatusCode::kInvalidArgument);
  Tensor float_axis = Tensor::FromFloats({}, {0});
  EXPECT_EQ(EvalStatus(CumSumNode(), {&x, &float_axis}).code(), StatusCode::kUnsupported);
  EXPECT_EQ(EvalStatus(CumSumNode(2, 0), {&x, &axis2}).code(), StatusCode::kInvalidArgument);
  // A run-time (non-constant) axis is rejected at inference.
  TensorType x_type{DType::kFloat32, {Dim{1, true}, Dim{3, false}}};
  TensorType axis_type{DType::kInt64, {}};
  std::vector<TensorType> out;
  s = InferTypes(CumSumNode(), {&x_type, &axis_type}, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("constant"), std::string::npos) << s.message();
  const int64_t one = 1;
  out.clear();
  ASSERT_TRUE(InferTypes(CumSumNode(), {&x_type, &axis_type}, &out, {nullptr, &one}).ok());
  EXPECT_EQ(out[0], x_type);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
