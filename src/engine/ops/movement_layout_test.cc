// Tests for the layout Movement ops (movement_layout.cc): Transpose (the blocked fast path against
// the reference odometer and a naive index computation), DepthToSpace, SpaceToDepth, Expand and
// Tile, with hand-computed values, symbolic batch shapes and invalid parameters.
#include <algorithm>
#include <numeric>

#include "engine/ops/movement_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

Tensor Iota(Dims dims, DType dtype = DType::kFloat32) {
  Tensor t = Tensor::Make(dtype, std::move(dims));
  for (int64_t i = 0; i < t.NumElements(); ++i) {
    if (dtype == DType::kFloat32) {
      t.Data<float>()[i] = static_cast<float>(i);
    } else {
      t.Data<int64_t>()[i] = i * 1000003 - 7;
    }
  }
  return t;
}

Tensor Ints(std::vector<int64_t> values) {
  const int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, std::move(values));
}

// out[i] = in[j] where out index i and in index j agree after permuting: out dim k is in dim p[k].
Tensor NaiveTranspose(const Tensor& in, const std::vector<int64_t>& perm) {
  Dims out_dims;
  for (int64_t p : perm) out_dims.push_back(in.dims[p]);
  Tensor out = Tensor::Make(in.dtype, out_dims);
  const size_t size = DTypeSize(in.dtype);
  const int rank = static_cast<int>(perm.size());
  std::vector<int64_t> index(rank, 0);
  for (int64_t o = 0; o < out.NumElements(); ++o) {
    int64_t rest = o;
    for (int k = rank - 1; k >= 0; --k) {
      index[perm[k]] = rest % out_dims[k];
      rest /= out_dims[k];
    }
    int64_t src = 0;
    for (int a = 0; a < rank; ++a) src = src * in.dims[a] + index[a];
    std::memcpy(out.bytes.data() + o * size, in.bytes.data() + src * size, size);
  }
  return out;
}

PlanNode TransposeNode(std::vector<int64_t> perm) {
  return MakeNode(OpType::kTranspose, 1, 1, {IntsAttr("perm", std::move(perm))});
}

TEST(MovementTransposeTest, DefaultReversesAndPermHandValues) {
  Tensor x = Iota({2, 3});
  auto out = Eval(MakeNode(OpType::kTranspose, 1, 1), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({3, 2}, {0, 3, 1, 4, 2, 5}));
  Tensor y = Iota({2, 2, 2});
  out = Eval(TransposeNode({1, 0, 2}), {&y});
  ExpectNear(out[0], Tensor::FromFloats({2, 2, 2}, {0, 1, 4, 5, 2, 3, 6, 7}));
  out = Eval(TransposeNode({2, 0, 1}), {&y}, /*fast=*/true);
  ExpectNear(out[0], Tensor::FromFloats({2, 2, 2}, {0, 2, 4, 6, 1, 3, 5, 7}));
}

TEST(MovementTransposeTest, AllPermutationsFastAndReferenceMatchNaive) {
  for (DType dtype : {DType::kFloat32, DType::kInt64}) {
    Tensor x = Iota({2, 3, 1, 5}, dtype);
    std::vector<int64_t> perm = {0, 1, 2, 3};
    do {
      Tensor expected = NaiveTranspose(x, perm);
      for (bool fast : {false, true}) {
        auto out = Eval(TransposeNode(perm), {&x}, fast);
        ASSERT_EQ(out.size(), 1u);
        ExpectNear(out[0], expected);
      }
    } while (std::next_permutation(perm.begin(), perm.end()));
  }
}

TEST(MovementTransposeTest, NchwNhwcBlockedPathMatchesReference) {
  const RunContext threaded{2};
  for (DType dtype : {DType::kFloat32, DType::kInt64}) {
    for (Dims dims :
         {Dims{2, 5, 7, 9}, Dims{3, 33, 17, 19}, Dims{1, 64, 32, 32}, Dims{2, 3, 1, 1}}) {
      Tensor x = Iota(dims, dtype);
      for (std::vector<int64_t> perm :
           {std::vector<int64_t>{0, 2, 3, 1}, {0, 3, 1, 2}, {1, 0, 2, 3}}) {
        const Shape shape = FixedShape(dims);
        auto reference = RunNode(TransposeNode(perm), {Runtime(x, shape)}, 1, false);
        auto fast = RunNode(TransposeNode(perm), {Runtime(x, shape)}, 1, true);
        auto parallel = RunNode(TransposeNode(perm), {Runtime(x, shape)}, 1, true, threaded);
        ASSERT_TRUE(reference.ok() && fast.ok() && parallel.ok());
        ExpectNear(reference.value()[0], NaiveTranspose(x, perm));
        ExpectNear(fast.value()[0], reference.value()[0]);
        ExpectNear(parallel.value()[0], reference.value()[0]);
      }
    }
  }
}

TEST(MovementTransposeTest, SymbolicBatchAndErrors) {
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(3), Fixed(4), Fixed(5)});
  auto types = InferTypes(TransposeNode({0, 2, 3, 1}), {data});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(4), Fixed(5), Fixed(3)}));
  Tensor x = Iota({2, 3, 4, 5});
  auto out = RunNode(TransposeNode({0, 2, 3, 1}), {Runtime(x, data.type.shape)}, 2, true);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], NaiveTranspose(x, {0, 2, 3, 1}));
  for (std::vector<int64_t> bad :
       std::vector<std::vector<int64_t>>{{0, 1, 2}, {0, 1, 2, 2}, {0, 1, 2, 4}, {-1, 0, 1, 2}}) {
    EXPECT_EQ(EvalStatus(TransposeNode(bad), {&x}).code(), StatusCode::kInvalidArgument)
        << DimsToString(bad);
  }
}

TEST(MovementDepthToSpaceTest, DcrAndCrdHandValues) {
  Tensor x = Iota({1, 8, 1, 1});
  auto out = Eval(MakeNode(OpType::kDepthToSpace, 1, 1, {IntsAttr("blocksize", {2})}), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({1, 2, 2, 2}, {0, 2, 4, 6, 1, 3, 5, 7}));
  out = Eval(
      MakeNode(OpType::kDepthToSpace, 1, 1, {IntsAttr("blocksize", {2}), IntsAttr("mode", {1})}),
      {&x});
  ExpectNear(out[0], Tensor::FromFloats({1, 2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(MovementDepthToSpaceTest, MatchesSpecFormulaOnLargerInput) {
  const int64_t n = 2, c = 8, h = 2, w = 3, b = 2, cb = c / (b * b);
  Tensor x = Iota({n, c, h, w});
  for (int64_t mode : {0, 1}) {
    Tensor expected = Tensor::Make(DType::kFloat32, {n, cb, h * b, w * b});
    for (int64_t in = 0; in < n; ++in)
      for (int64_t ic = 0; ic < cb; ++ic)
        for (int64_t y = 0; y < h * b; ++y)
          for (int64_t z = 0; z < w * b; ++z) {
            const int64_t i = y % b, j = z % b;
            const int64_t channel = mode == 0 ? (i * b + j) * cb + ic : ic * b * b + i * b + j;
            expected.Data<float>()[((in * cb + ic) * h * b + y) * w * b + z] =
                x.Data<float>()[((in * c + channel) * h + y / b) * w + z / b];
          }
    auto out = Eval(MakeNode(OpType::kDepthToSpace, 1, 1,
                             {IntsAttr("blocksize", {b}), IntsAttr("mode", {mode})}),
                    {&x});
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], expected);
    if (mode == 0) {  // SpaceToDepth inverts DCR DepthToSpace.
      auto back =
          Eval(MakeNode(OpType::kSpaceToDepth, 1, 1, {IntsAttr("blocksize", {b})}), {&out[0]});
      ASSERT_EQ(back.size(), 1u);
      ExpectNear(back[0], x);
    }
  }
}

TEST(MovementSpaceToDepthTest, HandValues) {
  Tensor x = Iota({1, 2, 2, 2});
  auto out = Eval(MakeNode(OpType::kSpaceToDepth, 1, 1, {IntsAttr("blocksize", {2})}), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({1, 8, 1, 1}, {0, 4, 1, 5, 2, 6, 3, 7}));
}

TEST(MovementDepthToSpaceTest, SymbolicBatchAndErrors) {
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(8), Fixed(2), Fixed(3)});
  auto types =
      InferTypes(MakeNode(OpType::kDepthToSpace, 1, 1, {IntsAttr("blocksize", {2})}), {data});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(2), Fixed(4), Fixed(6)}));
  types = InferTypes(MakeNode(OpType::kSpaceToDepth, 1, 1, {IntsAttr("blocksize", {2})}),
                     {Symbolic(DType::kFloat32, {Batch(1), Fixed(3), Fixed(4), Fixed(6)})});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(12), Fixed(2), Fixed(3)}));

  Tensor x = Iota({1, 8, 2, 3});
  Tensor rank3 = Iota({8, 2, 3});
  const auto d2s = [](std::vector<Attribute> attrs) {
    return MakeNode(OpType::kDepthToSpace, 1, 1, std::move(attrs));
  };
  EXPECT_EQ(EvalStatus(d2s({}), {&x}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(d2s({IntsAttr("blocksize", {3})}), {&x}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(d2s({IntsAttr("blocksize", {0})}), {&x}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(d2s({IntsAttr("blocksize", {2}), IntsAttr("mode", {2})}), {&x}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(d2s({IntsAttr("blocksize", {2})}), {&rank3}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      EvalStatus(MakeNode(OpType::kSpaceToDepth, 1, 1, {IntsAttr("blocksize", {2})}), {&x}).code(),
      StatusCode::kInvalidArgument);  // width 3 is not a multiple of 2
}

TEST(MovementExpandTest, BroadcastsBothWays) {
  Tensor x = Tensor::FromFloats({3, 1}, {1, 2, 3});
  Tensor shape = Ints({2, 1, 4});
  auto out = Eval(MakeNode(OpType::kExpand, 2, 1), {&x, &shape});
  ASSERT_EQ(out.size(), 1u);
  std::vector<float> expected;
  for (int r = 0; r < 2; ++r)
    for (float v : {1.0f, 2.0f, 3.0f})
      for (int k = 0; k < 4; ++k) expected.push_back(v);
  ExpectNear(out[0], Tensor::FromFloats({2, 3, 4}, expected));
  Tensor smaller = Ints({1});  // the output keeps the input's larger shape
  out = Eval(MakeNode(OpType::kExpand, 2, 1), {&x, &smaller});
  ExpectNear(out[0], x);
  Tensor y = Tensor::FromInt64s({1, 2}, {7, -8});
  Tensor shape2 = Ints({2, 2});
  out = Eval(MakeNode(OpType::kExpand, 2, 1), {&y, &shape2});
  ExpectNear(out[0], Tensor::FromInt64s({2, 2}, {7, -8, 7, -8}));
}

TEST(MovementExpandTest, SymbolicBatchAndErrors) {
  const Shape shape{Batch(1), Fixed(1), Fixed(2)};
  Tensor target = Ints({1, 3, 1});
  auto types = InferTypes(MakeNode(OpType::kExpand, 2, 1),
                          {Symbolic(DType::kFloat32, shape), Const(target)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(3), Fixed(2)}));
  Tensor x = Tensor::FromFloats({2, 1, 2}, {1, 2, 3, 4});
  auto out = RunNode(MakeNode(OpType::kExpand, 2, 1), {Runtime(x, shape), Const(target)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({2, 3, 2}, {1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4}));

  Tensor bad = Ints({2});
  Tensor three = Tensor::FromFloats({3}, {1, 2, 3});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kExpand, 2, 1), {&three, &bad}).code(),
            StatusCode::kInvalidArgument);
  Tensor negative = Ints({-1});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kExpand, 2, 1), {&three, &negative}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(InferTypes(MakeNode(OpType::kExpand, 2, 1),
                       {Const(three), Runtime(target, FixedShape(target.dims))})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(MovementTileTest, HandValues) {
  Tensor x = Tensor::FromFloats({2, 2}, {0, 1, 2, 3});
  Tensor repeats = Ints({2, 3});
  auto out = Eval(MakeNode(OpType::kTile, 2, 1), {&x, &repeats});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({4, 6}, {0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3,
                                                 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3}));
  Tensor y = Tensor::FromInt64s({3}, {5, 6, 7});
  Tensor twice = Ints({2});
  out = Eval(MakeNode(OpType::kTile, 2, 1), {&y, &twice});
  ExpectNear(out[0], Tensor::FromInt64s({6}, {5, 6, 7, 5, 6, 7}));
  Tensor zero = Ints({0, 1});
  out = Eval(MakeNode(OpType::kTile, 2, 1), {&x, &zero});
  EXPECT_EQ(out[0].dims, (Dims{0, 2}));
}

TEST(MovementTileTest, SymbolicBatchAndErrors) {
  const Shape shape{Batch(1), Fixed(2)};
  Tensor repeats = Ints({2, 1});
  auto types =
      InferTypes(MakeNode(OpType::kTile, 2, 1), {Symbolic(DType::kFloat32, shape), Const(repeats)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(2), Fixed(2)}));
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  auto out = RunNode(MakeNode(OpType::kTile, 2, 1), {Runtime(x, shape), Const(repeats)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({4, 2}, {1, 2, 3, 4, 1, 2, 3, 4}));
  Tensor short_repeats = Ints({2});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kTile, 2, 1), {&x, &short_repeats}).code(),
            StatusCode::kInvalidArgument);
  Tensor negative = Ints({1, -1});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kTile, 2, 1), {&x, &negative}).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
