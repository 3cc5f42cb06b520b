// Tests for the shape-only Movement ops (movement.cc): Identity, Reshape, Flatten, Squeeze,
// Unsqueeze, Shape, ConstantOfShape and Range, against hand-computed values, on symbolic batch
// shapes, and with invalid parameters.
#include "engine/ops/movement_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

Shape ShapeOf(const Result<std::vector<TensorType>>& types, size_t i = 0) {
  EXPECT_TRUE(types.ok()) << types.status().ToString();
  if (!types.ok() || types.value().size() <= i) return {};
  return types.value()[i].shape;
}

TEST(MovementIdentityTest, CopiesFloatAndInt64) {
  Tensor x = Iota({2, 3});
  auto out = Eval(MakeNode(OpType::kIdentity, 1, 1), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], x);
  Tensor y = Tensor::FromInt64s({2}, {-5, int64_t{1} << 40});
  auto run = RunNode(MakeNode(OpType::kIdentity, 1, 1), {Runtime(y, FixedShape(y.dims))}, 1);
  ASSERT_TRUE(run.ok());
  ExpectNear(run.value()[0], y);
  EXPECT_TRUE(FindSchema(OpType::kIdentity)->output_aliases_input);
}

TEST(MovementReshapeTest, ZeroCopiesAndMinusOneInfers) {
  Tensor x = Iota({2, 3, 4});
  Tensor shape = Ints({0, -1});
  auto out = Eval(MakeNode(OpType::kReshape, 2, 1), {&x, &shape});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Iota({2, 12}));
  Tensor shape2 = Ints({4, 0, 2});  // 0 copies input dim 1 (3)
  out = Eval(MakeNode(OpType::kReshape, 2, 1), {&x, &shape2});
  ExpectNear(out[0], Iota({4, 3, 2}));
  Tensor scalar_shape = Tensor::Make(DType::kInt64, {0});
  Tensor one = Iota({1, 1});
  out = Eval(MakeNode(OpType::kReshape, 2, 1), {&one, &scalar_shape});
  EXPECT_EQ(out[0].dims, Dims{});
  EXPECT_TRUE(FindSchema(OpType::kReshape)->output_aliases_input);
}

TEST(MovementReshapeTest, AllowZeroKeepsZero) {
  Tensor x = Tensor::Make(DType::kFloat32, {0, 3, 4});
  Tensor shape = Ints({3, 4, 0});
  auto out = Eval(MakeNode(OpType::kReshape, 2, 1, {IntsAttr("allowzero", {1})}), {&x, &shape});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].dims, (Dims{3, 4, 0}));
  Tensor bad = Ints({0, -1});
  EXPECT_EQ(
      EvalStatus(MakeNode(OpType::kReshape, 2, 1, {IntsAttr("allowzero", {1})}), {&x, &bad}).code(),
      StatusCode::kInvalidArgument);
}

TEST(MovementReshapeTest, RejectsBadShapes) {
  Tensor x = Iota({2, 3});
  for (std::vector<int64_t> s :
       std::vector<std::vector<int64_t>>{{-1, -1}, {4, 2}, {-2, 3}, {0, 0, 0, 6}, {4, -1}}) {
    Tensor shape = Ints(s);
    EXPECT_EQ(EvalStatus(MakeNode(OpType::kReshape, 2, 1), {&x, &shape}).code(),
              StatusCode::kInvalidArgument)
        << DimsToString(s);
  }
  Tensor shape = Ints({6});
  auto types = InferTypes(MakeNode(OpType::kReshape, 2, 1),
                          {Const(x), Runtime(shape, FixedShape(shape.dims))});
  ASSERT_FALSE(types.ok());
  EXPECT_NE(types.status().message().find("must be a constant"), std::string::npos);
}

TEST(MovementReshapeTest, SymbolicBatch) {
  PlanNode node = MakeNode(OpType::kReshape, 2, 1);
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(512), Fixed(1), Fixed(1)});
  Tensor flat = Ints({-1, 512});
  EXPECT_EQ(ShapeOf(InferTypes(node, {data, Const(flat)})), (Shape{Batch(1), Fixed(512)}));
  Tensor copy = Ints({0, -1});
  EXPECT_EQ(ShapeOf(InferTypes(node, {data, Const(copy)})), (Shape{Batch(1), Fixed(512)}));
  Tensor all = Ints({-1});
  EXPECT_EQ(ShapeOf(InferTypes(node, {data, Const(all)})), (Shape{Batch(512)}));
  Tensor split = Ints({2, -1, 64});
  EXPECT_EQ(ShapeOf(InferTypes(node, {data, Const(split)})),
            (Shape{Fixed(2), Batch(4), Fixed(64)}));
  Tensor fixed = Ints({1, 512});
  EXPECT_EQ(InferTypes(node, {data, Const(fixed)}).status().code(), StatusCode::kUnsupported);
  Tensor odd = Ints({-1, 3});
  EXPECT_EQ(InferTypes(node, {data, Const(odd)}).status().code(), StatusCode::kInvalidArgument);

  // The kernel copies when the executor cannot alias.
  Tensor x = Iota({3, 512, 1, 1});
  auto out = RunNode(node, {Runtime(x, data.type.shape), Const(flat)}, 3);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ExpectNear(out.value()[0], Iota({3, 512}));
}

TEST(MovementFlattenTest, Axes) {
  Tensor x = Iota({2, 3, 4});
  struct Case {
    int64_t axis;
    Dims dims;
  };
  for (const Case& c : {Case{0, {1, 24}}, Case{1, {2, 12}}, Case{2, {6, 4}}, Case{3, {24, 1}},
                        Case{-1, {6, 4}}, Case{-3, {1, 24}}}) {
    auto out = Eval(MakeNode(OpType::kFlatten, 1, 1, {IntsAttr("axis", {c.axis})}), {&x});
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], Iota(c.dims));
  }
  auto out = Eval(MakeNode(OpType::kFlatten, 1, 1), {&x});  // default axis 1
  ExpectNear(out[0], Iota({2, 12}));
  for (int64_t axis : {4, -4})
    EXPECT_EQ(EvalStatus(MakeNode(OpType::kFlatten, 1, 1, {IntsAttr("axis", {axis})}), {&x}).code(),
              StatusCode::kInvalidArgument);
}

TEST(MovementFlattenTest, SymbolicBatch) {
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(512), Fixed(1), Fixed(1)});
  EXPECT_EQ(ShapeOf(InferTypes(MakeNode(OpType::kFlatten, 1, 1), {data})),
            (Shape{Batch(1), Fixed(512)}));
  EXPECT_EQ(ShapeOf(InferTypes(MakeNode(OpType::kFlatten, 1, 1, {IntsAttr("axis", {0})}), {data})),
            (Shape{Fixed(1), Batch(512)}));
  const TestInput square = Symbolic(DType::kFloat32, {Batch(1), Batch(1)});
  EXPECT_EQ(InferTypes(MakeNode(OpType::kFlatten, 1, 1, {IntsAttr("axis", {0})}), {square})
                .status()
                .code(),
            StatusCode::kUnsupported);
}

TEST(MovementSqueezeTest, WithAndWithoutAxes) {
  Tensor x = Iota({1, 3, 1, 2});
  auto out = Eval(MakeNode(OpType::kSqueeze, 1, 1), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Iota({3, 2}));
  Tensor axes = Ints({-2});
  out = Eval(MakeNode(OpType::kSqueeze, 2, 1), {&x, &axes});
  ExpectNear(out[0], Iota({1, 3, 2}));
  for (std::vector<int64_t> bad : std::vector<std::vector<int64_t>>{{1}, {0, -4}, {4}}) {
    Tensor b = Ints(bad);
    EXPECT_EQ(EvalStatus(MakeNode(OpType::kSqueeze, 2, 1), {&x, &b}).code(),
              StatusCode::kInvalidArgument)
        << DimsToString(bad);
  }
}

TEST(MovementSqueezeTest, SymbolicBatch) {
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(1), Fixed(4)});
  EXPECT_EQ(ShapeOf(InferTypes(MakeNode(OpType::kSqueeze, 1, 1), {data})),
            (Shape{Batch(1), Fixed(4)}));
  Tensor axes = Ints({0});
  EXPECT_EQ(InferTypes(MakeNode(OpType::kSqueeze, 2, 1), {data, Const(axes)}).status().code(),
            StatusCode::kUnsupported);
  EXPECT_EQ(
      InferTypes(MakeNode(OpType::kSqueeze, 2, 1), {data, Runtime(axes, FixedShape(axes.dims))})
          .status()
          .code(),
      StatusCode::kInvalidArgument);
}

TEST(MovementUnsqueezeTest, Axes) {
  Tensor x = Iota({3, 4, 5});
  struct Case {
    std::vector<int64_t> axes;
    Dims dims;
  };
  for (const Case& c : {Case{{0}, {1, 3, 4, 5}}, Case{{3}, {3, 4, 5, 1}}, Case{{-1}, {3, 4, 5, 1}},
                        Case{{3, 1}, {3, 1, 4, 1, 5}}, Case{{0, 4, 2}, {1, 3, 1, 4, 1, 5}}}) {
    Tensor axes = Ints(c.axes);
    auto out = Eval(MakeNode(OpType::kUnsqueeze, 2, 1), {&x, &axes});
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], Iota(c.dims));
  }
  for (std::vector<int64_t> bad : std::vector<std::vector<int64_t>>{{4}, {-5}, {1, 1}}) {
    Tensor b = Ints(bad);
    EXPECT_EQ(EvalStatus(MakeNode(OpType::kUnsqueeze, 2, 1), {&x, &b}).code(),
              StatusCode::kInvalidArgument)
        << DimsToString(bad);
  }
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kUnsqueeze, 1, 1), {&x}).code(),
            StatusCode::kInvalidArgument);
  const TestInput data = Symbolic(DType::kFloat32, {Batch(1), Fixed(8)});
  Tensor axes = Ints({1});
  EXPECT_EQ(ShapeOf(InferTypes(MakeNode(OpType::kUnsqueeze, 2, 1), {data, Const(axes)})),
            (Shape{Batch(1), Fixed(1), Fixed(8)}));
}

TEST(MovementShapeTest, StartEnd) {
  Tensor x = Iota({2, 3, 4});
  struct Case {
    std::vector<Attribute> attrs;
    std::vector<int64_t> expected;
  };
  const std::vector<Case> cases = {
      {{}, {2, 3, 4}},
      {{IntsAttr("start", {1})}, {3, 4}},
      {{IntsAttr("end", {-1})}, {2, 3}},
      {{IntsAttr("start", {-1})}, {4}},
      {{IntsAttr("start", {1}), IntsAttr("end", {2})}, {3}},
      {{IntsAttr("start", {-10})}, {2, 3, 4}},
      {{IntsAttr("end", {10})}, {2, 3, 4}},
      {{IntsAttr("start", {2}), IntsAttr("end", {1})}, {}},
  };
  for (const Case& c : cases) {
    auto out = Eval(MakeNode(OpType::kShape, 1, 1, c.attrs), {&x});
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], Tensor::FromInt64s({static_cast<int64_t>(c.expected.size())}, c.expected));
  }
}

TEST(MovementShapeTest, BatchDimsResolveAtRunTime) {
  const Shape shape{Batch(1), Fixed(3)};
  Tensor x = Iota({5, 3});
  PlanNode node = MakeNode(OpType::kShape, 1, 1);
  auto types = InferTypes(node, {Symbolic(DType::kFloat32, shape)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0], (TensorType{DType::kInt64, {Fixed(2)}}));
  auto out = RunNode(node, {Runtime(x, shape)}, 5);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromInt64s({2}, {5, 3}));
}

TEST(MovementConstantOfShapeTest, Values) {
  Tensor shape = Ints({2, 3});
  auto out = Eval(MakeNode(OpType::kConstantOfShape, 1, 1), {&shape});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({2, 3}, std::vector<float>(6, 0.0f)));
  out = Eval(MakeNode(OpType::kConstantOfShape, 1, 1, {FloatsAttr("value", {1.5f})}), {&shape});
  ExpectNear(out[0], Tensor::FromFloats({2, 3}, std::vector<float>(6, 1.5f)));
  out = Eval(
      MakeNode(OpType::kConstantOfShape, 1, 1, {IntsAttr("dtype", {7}), IntsAttr("value", {-7})}),
      {&shape});
  ExpectNear(out[0], Tensor::FromInt64s({2, 3}, std::vector<int64_t>(6, -7)));
  Tensor empty_dim = Ints({0});
  out = Eval(MakeNode(OpType::kConstantOfShape, 1, 1, {IntsAttr("value", {1})}), {&empty_dim});
  EXPECT_EQ(out[0].dims, Dims{0});
  EXPECT_EQ(out[0].dtype, DType::kInt64);
}

TEST(MovementConstantOfShapeTest, RejectsBadInput) {
  Tensor negative = Ints({2, -1});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConstantOfShape, 1, 1), {&negative}).code(),
            StatusCode::kInvalidArgument);
  Tensor shape = Ints({2});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConstantOfShape, 1, 1, {IntsAttr("dtype", {5})}), {&shape})
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConstantOfShape, 1, 1,
                                {IntsAttr("dtype", {1}), IntsAttr("value", {3})}),
                       {&shape})
                .code(),
            StatusCode::kInvalidArgument);
  Tensor huge = Ints({1 << 20, 1 << 20});
  EXPECT_FALSE(EvalStatus(MakeNode(OpType::kConstantOfShape, 1, 1), {&huge}).ok());
}

TEST(MovementRangeTest, IntAndFloat) {
  Tensor start = Tensor::FromInt64s({}, {10}), limit = Tensor::FromInt64s({}, {4}),
         delta = Tensor::FromInt64s({}, {-3});
  auto out = Eval(MakeNode(OpType::kRange, 3, 1), {&start, &limit, &delta});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromInt64s({2}, {10, 7}));
  Tensor fs = Tensor::FromFloats({}, {0.0f}), fl = Tensor::FromFloats({}, {1.0f}),
         fd = Tensor::FromFloats({}, {0.3f});
  out = Eval(MakeNode(OpType::kRange, 3, 1), {&fs, &fl, &fd});
  ExpectNear(out[0], Tensor::FromFloats({4}, {0.0f, 0.3f, 0.6f, 0.9f}));
  // Wrong direction: empty.
  out = Eval(MakeNode(OpType::kRange, 3, 1), {&limit, &start, &delta});
  EXPECT_EQ(out[0].dims, Dims{0});
  Tensor big_start = Tensor::FromInt64s({}, {INT64_MIN}),
         big_limit = Tensor::FromInt64s({}, {INT64_MAX}),
         big_delta = Tensor::FromInt64s({}, {int64_t{1} << 62});
  out = Eval(MakeNode(OpType::kRange, 3, 1), {&big_start, &big_limit, &big_delta});
  ExpectNear(out[0],
             Tensor::FromInt64s({4}, {INT64_MIN, -(int64_t{1} << 62), 0, int64_t{1} << 62}));
}

TEST(MovementRangeTest, RejectsBadInput) {
  Tensor start = Tensor::FromInt64s({}, {0}), limit = Tensor::FromInt64s({}, {4}),
         zero = Tensor::FromInt64s({}, {0});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kRange, 3, 1), {&start, &limit, &zero}).code(),
            StatusCode::kInvalidArgument);
  Tensor fdelta = Tensor::FromFloats({}, {1.0f});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kRange, 3, 1), {&start, &limit, &fdelta}).code(),
            StatusCode::kInvalidArgument);
  Tensor one = Tensor::FromInt64s({}, {1});
  EXPECT_EQ(
      InferTypes(MakeNode(OpType::kRange, 3, 1), {Const(start), Runtime(limit, {}), Const(one)})
          .status()
          .code(),
      StatusCode::kInvalidArgument);
  Tensor huge_limit = Tensor::FromInt64s({}, {INT64_MAX});
  EXPECT_FALSE(EvalStatus(MakeNode(OpType::kRange, 3, 1), {&start, &huge_limit, &one}).ok());
}

}  // namespace
}  // namespace mlcapsule::engine::testing
