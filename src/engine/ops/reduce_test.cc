// Tests for the Reduce* ops: hand-computed values (the ONNX documentation's examples), every axis
// subset against a naive reduction, empty reductions, batch dims, threading and errors.
#include <cmath>
#include <limits>

#include "engine/ops/elementwise_test_util.h"
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

PlanNode ReduceNode(OpType op, std::vector<int64_t> axes, int64_t keepdims = 1) {
  std::vector<Attribute> attrs;
  if (!axes.empty()) attrs.push_back(IntsAttr("axes", std::move(axes)));
  attrs.push_back(IntsAttr("keepdims", {keepdims}));
  return MakeNode(op, 1, 1, std::move(attrs));
}

void ExpectReduce(const PlanNode& node, const Tensor& x, const Tensor& expected) {
  for (bool fast : {false, true}) {
    auto out = Eval(node, {&x}, fast);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected);
  }
}

// The ONNX ReduceMean example data, shape [3, 2, 2].
Tensor Example() {
  return Tensor::FromFloats({3, 2, 2}, {5, 1, 20, 2, 30, 1, 40, 2, 55, 1, 60, 2});
}

TEST(ReduceMeanTest, KeepdimsAndNot) {
  ExpectReduce(ReduceNode(OpType::kReduceMean, {1}), Example(),
               Tensor::FromFloats({3, 1, 2}, {12.5f, 1.5f, 35, 1.5f, 57.5f, 1.5f}));
  ExpectReduce(ReduceNode(OpType::kReduceMean, {1}, 0), Example(),
               Tensor::FromFloats({3, 2}, {12.5f, 1.5f, 35, 1.5f, 57.5f, 1.5f}));
  ExpectReduce(ReduceNode(OpType::kReduceMean, {-2}), Example(),
               Tensor::FromFloats({3, 1, 2}, {12.5f, 1.5f, 35, 1.5f, 57.5f, 1.5f}));
}

TEST(ReduceMeanTest, DefaultAxesReduceEverything) {
  ExpectReduce(MakeNode(OpType::kReduceMean, 1, 1), Example(),
               Tensor::FromFloats({1, 1, 1}, {18.25f}));
  ExpectReduce(ReduceNode(OpType::kReduceMean, {}, 0), Example(), Tensor::FromFloats({}, {18.25f}));
}

TEST(ReduceMeanTest, NonAdjacentAxes) {
  ExpectReduce(ReduceNode(OpType::kReduceMean, {0, 2}), Example(),
               Tensor::FromFloats({1, 2, 1}, {15.5f, 21}));
  ExpectReduce(ReduceNode(OpType::kReduceMean, {2, 0}, 0), Example(),
               Tensor::FromFloats({2}, {15.5f, 21}));
}

TEST(ReduceSumTest, LeadingAxisAndNoop) {
  ExpectReduce(ReduceNode(OpType::kReduceSum, {0}), Example(),
               Tensor::FromFloats({1, 2, 2}, {90, 3, 120, 6}));
  PlanNode noop = MakeNode(OpType::kReduceSum, 1, 1, {IntsAttr("noop_with_empty_axes", {1})});
  ExpectReduce(noop, Example(), Example());
  // noop_with_empty_axes does nothing when axes are given.
  PlanNode with_axes = MakeNode(
      OpType::kReduceSum, 1, 1,
      {IntsAttr("noop_with_empty_axes", {1}), IntsAttr("axes", {2}), IntsAttr("keepdims", {0})});
  ExpectReduce(with_axes, Example(), Tensor::FromFloats({3, 2}, {6, 22, 31, 42, 56, 62}));
}

TEST(ReduceSumTest, Int64) {
  Tensor x = Tensor::FromInt64s({2, 3}, {1, 2, 3, 4, 5, -6});
  ExpectReduce(ReduceNode(OpType::kReduceSum, {1}, 0), x, Tensor::FromInt64s({2}, {6, 3}));
  ExpectReduce(ReduceNode(OpType::kReduceMax, {0}, 0), x, Tensor::FromInt64s({3}, {4, 5, 3}));
  ExpectReduce(ReduceNode(OpType::kReduceMin, {}, 0), x, Tensor::FromInt64s({}, {-6}));
  ExpectReduce(ReduceNode(OpType::kReduceProd, {1}), x, Tensor::FromInt64s({2, 1}, {6, -120}));
}

TEST(ReduceTest, OtherKinds) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, -2, -3, 4});
  ExpectReduce(ReduceNode(OpType::kReduceL1, {1}, 0), x, Tensor::FromFloats({2}, {3, 7}));
  ExpectReduce(ReduceNode(OpType::kReduceL2, {1}, 0), x, Tensor::FromFloats({2}, {2.236068f, 5}));
  ExpectReduce(ReduceNode(OpType::kReduceSumSquare, {1}, 0), x, Tensor::FromFloats({2}, {5, 25}));
  ExpectReduce(ReduceNode(OpType::kReduceProd, {0}, 0), x, Tensor::FromFloats({2}, {-3, -8}));
  ExpectReduce(ReduceNode(OpType::kReduceMax, {1}, 0), x, Tensor::FromFloats({2}, {1, 4}));
  ExpectReduce(ReduceNode(OpType::kReduceMin, {1}, 0), x, Tensor::FromFloats({2}, {-2, -3}));
  Tensor positive = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  ExpectReduce(ReduceNode(OpType::kReduceLogSum, {1}, 0), positive,
               Tensor::FromFloats({2}, {1.0986123f, 1.9459101f}));
}

TEST(ReduceTest, LogSumExpIsStable) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 1000, 1000});
  ExpectReduce(ReduceNode(OpType::kReduceLogSumExp, {1}, 0), x,
               Tensor::FromFloats({2}, {2.3132617f, 1000.6931472f}));
  // Reduced along the leading axis (the vectorised path across the kept block).
  Tensor t = Tensor::FromFloats({2, 2}, {1, 1000, 2, 1000});
  ExpectReduce(ReduceNode(OpType::kReduceLogSumExp, {0}, 0), t,
               Tensor::FromFloats({2}, {2.3132617f, 1000.6931472f}));
  Tensor minus_inf = Tensor::FromFloats({2}, {-kInf, -kInf});
  auto out = Eval(ReduceNode(OpType::kReduceLogSumExp, {0}, 0), {&minus_inf});
  EXPECT_EQ(out[0].Data<float>()[0], -kInf);
}

TEST(ReduceTest, MaxMinPropagateNaN) {
  Tensor x = Tensor::FromFloats({2, 3}, {1, kNaN, 3, 4, 5, 6});
  ExpectReduce(ReduceNode(OpType::kReduceMax, {1}, 0), x, Tensor::FromFloats({2}, {kNaN, 6}));
  ExpectReduce(ReduceNode(OpType::kReduceMin, {1}, 0), x, Tensor::FromFloats({2}, {kNaN, 4}));
  ExpectReduce(ReduceNode(OpType::kReduceMax, {0}, 0), x, Tensor::FromFloats({3}, {4, kNaN, 6}));
}

TEST(ReduceTest, EmptyReductionGivesIdentity) {
  Tensor x = Tensor::Make(DType::kFloat32, {2, 0});
  ExpectReduce(ReduceNode(OpType::kReduceSum, {1}, 0), x, Tensor::FromFloats({2}, {0, 0}));
  ExpectReduce(ReduceNode(OpType::kReduceProd, {1}, 0), x, Tensor::FromFloats({2}, {1, 1}));
  ExpectReduce(ReduceNode(OpType::kReduceMean, {1}, 0), x, Tensor::FromFloats({2}, {kNaN, kNaN}));
  ExpectReduce(ReduceNode(OpType::kReduceL2, {1}, 0), x, Tensor::FromFloats({2}, {0, 0}));
  for (OpType op : {OpType::kReduceMax, OpType::kReduceLogSum, OpType::kReduceLogSumExp}) {
    auto out = Eval(ReduceNode(op, {1}, 0), {&x});
    ASSERT_EQ(out[0].dims, Dims{2});
    EXPECT_EQ(out[0].Data<float>()[1], -kInf) << OpTypeName(op);
  }
  auto out = Eval(ReduceNode(OpType::kReduceMin, {1}, 0), {&x});
  EXPECT_EQ(out[0].Data<float>()[0], kInf);
  // Kept dim of size 0: an empty output.
  out = Eval(ReduceNode(OpType::kReduceSum, {0}, 0), {&x});
  EXPECT_EQ(out[0].dims, Dims{0});
}

// Every subset of axes of a rank-4 tensor against a naive reduction (ReduceSum and ReduceMax).
TEST(ReduceTest, AllAxisSubsetsMatchNaive) {
  const Dims dims = {3, 1, 4, 5};
  Tensor x = RandomFloats(dims, 11);
  for (int mask = 0; mask < 16; ++mask) {
    std::vector<int64_t> axes;
    for (int d = 0; d < 4; ++d)
      if (mask & (1 << d)) axes.push_back(d);
    if (axes.empty()) continue;
    Dims out_dims = dims;
    for (int64_t a : axes) out_dims[a] = 1;
    Tensor sum = Tensor::Make(DType::kFloat32, out_dims);
    Tensor max = Tensor::Make(DType::kFloat32, out_dims);
    for (int64_t i = 0; i < max.NumElements(); ++i) max.Data<float>()[i] = -kInf;
    for (int64_t a = 0; a < 3; ++a)
      for (int64_t b = 0; b < 1; ++b)
        for (int64_t c = 0; c < 4; ++c)
          for (int64_t d = 0; d < 5; ++d) {
            int64_t idx[4] = {a, b, c, d};
            for (int64_t ax : axes) idx[ax] = 0;
            int64_t o =
                ((idx[0] * out_dims[1] + idx[1]) * out_dims[2] + idx[2]) * out_dims[3] + idx[3];
            float v = x.Data<float>()[((a * 1 + b) * 4 + c) * 5 + d];
            sum.Data<float>()[o] += v;
            max.Data<float>()[o] = std::max(max.Data<float>()[o], v);
          }
    SCOPED_TRACE(mask);
    ExpectReduce(ReduceNode(OpType::kReduceSum, axes), x, sum);
    ExpectReduce(ReduceNode(OpType::kReduceMax, axes), x, max);
  }
}

TEST(ReduceTest, ThreadedMatchesSingleThreaded) {
  Tensor x = RandomFloats({40, 33, 70}, 5);
  for (std::vector<int64_t> axes : {std::vector<int64_t>{2}, {1}, {0}, {0, 2}, {}}) {
    for (OpType op : {OpType::kReduceMean, OpType::kReduceLogSumExp}) {
      PlanNode node = ReduceNode(op, axes);
      auto expected = Eval(node, {&x});
      auto actual = EvalThreaded(node, {&x}, 4);
      ASSERT_EQ(actual.size(), 1u);
      ExpectNear(actual[0], expected[0], 0, 0);
    }
  }
  // A kept block longer than the accumulator chunk.
  Tensor wide = RandomFloats({5, 3000}, 6);
  PlanNode node = ReduceNode(OpType::kReduceSum, {0}, 0);
  auto expected = Eval(node, {&wide});
  ExpectNear(EvalThreaded(node, {&wide}, 4)[0], expected[0], 0, 0);
  float by_hand = 0;
  for (int r = 0; r < 5; ++r) by_hand += wide.Data<float>()[r * 3000 + 2999];
  EXPECT_NEAR(expected[0].Data<float>()[2999], by_hand, 1e-5f);
}

TEST(ReduceTest, BatchDimensionsReduceSymbolically) {
  TensorType in{DType::kFloat32, {Dim{1, true}, Dim{8, false}, Dim{4, true}}};
  std::vector<TensorType> out;
  ASSERT_TRUE(InferTypes(ReduceNode(OpType::kReduceMean, {0, 1}), {&in}, &out).ok());
  EXPECT_EQ(out[0].shape, (Shape{Dim{1, false}, Dim{1, false}, Dim{4, true}}));
  out.clear();
  ASSERT_TRUE(InferTypes(ReduceNode(OpType::kReduceSum, {-1}, 0), {&in}, &out).ok());
  EXPECT_EQ(out[0].shape, (Shape{Dim{1, true}, Dim{8, false}}));
}

TEST(ReduceTest, RejectsBadAttributesAndTypes) {
  Tensor x = Example();
  Status s = EvalStatus(ReduceNode(OpType::kReduceSum, {3}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("axis 3"), std::string::npos) << s.message();
  s = EvalStatus(ReduceNode(OpType::kReduceSum, {-4}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(ReduceNode(OpType::kReduceSum, {1, -2}), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("twice"), std::string::npos) << s.message();
  s = EvalStatus(ReduceNode(OpType::kReduceSum, {1}, 2), {&x});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("keepdims"), std::string::npos) << s.message();
  Tensor ints = Tensor::FromInt64s({2}, {1, 2});
  s = EvalStatus(ReduceNode(OpType::kReduceMean, {0}), {&ints});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("int64"), std::string::npos) << s.message();
  s = EvalStatus(ReduceNode(OpType::kReduceLogSumExp, {0}), {&ints});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
