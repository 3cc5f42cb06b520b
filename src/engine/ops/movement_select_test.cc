// Tests for the selecting Movement ops (movement_select.cc): Slice, Gather, Pad, Split, Concat and
// Trilu, with hand-computed values, symbolic batch shapes, runtime Gather indices and invalid
// parameters.
#include <cstdint>

#include "engine/ops/movement_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

// --- Slice ------------------------------------------------------------------------------------

struct SliceCase {
  std::vector<int64_t> starts, ends, axes, steps;  // empty axes/steps: input absent
  Dims dims;
  std::vector<float> expected;
};

std::vector<Tensor> RunSlice(const Tensor& x, const SliceCase& c) {
  Tensor starts = Ints(c.starts), ends = Ints(c.ends), axes = Ints(c.axes), steps = Ints(c.steps);
  std::vector<const Tensor*> inputs = {&x, &starts, &ends};
  if (!c.axes.empty() || !c.steps.empty()) inputs.push_back(c.axes.empty() ? nullptr : &axes);
  if (!c.steps.empty()) inputs.push_back(&steps);
  return Eval(MakeNode(OpType::kSlice, static_cast<int>(inputs.size()), 1), inputs);
}

TEST(MovementSliceTest, HandValues) {
  Tensor x = Iota({3, 4});  // rows 0..3, 4..7, 8..11
  const std::vector<SliceCase> cases = {
      {{1}, {INT64_MAX}, {1}, {}, {3, 3}, {1, 2, 3, 5, 6, 7, 9, 10, 11}},
      {{0, 1}, {2, 3}, {}, {}, {2, 2}, {1, 2, 5, 6}},
      {{-1}, {INT64_MIN}, {1}, {-1}, {3, 4}, {3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8}},
      {{3}, {0}, {-1}, {-2}, {3, 2}, {3, 1, 7, 5, 11, 9}},
      {{-1, 0}, {-4, 4}, {0, 1}, {-2, 3}, {2, 2}, {8, 11, 0, 3}},
      {{1000}, {1000}, {1}, {1}, {3, 0}, {}},
      {{-1000}, {1000}, {0}, {2}, {2, 4}, {0, 1, 2, 3, 8, 9, 10, 11}},
      {{2}, {-1000}, {0}, {INT64_MIN}, {1, 4}, {8, 9, 10, 11}},
      {{1}, {2}, {-2}, {}, {1, 4}, {4, 5, 6, 7}},
  };
  for (const SliceCase& c : cases) {
    auto out = RunSlice(x, c);
    ASSERT_EQ(out.size(), 1u);
    ExpectNear(out[0], Tensor::FromFloats(c.dims, c.expected));
  }
  Tensor y = Tensor::FromInt64s({4}, {10, 20, 30, 40});
  Tensor starts = Ints({-1}), ends = Ints({0}), axes = Ints({0}), steps = Ints({-1});
  auto out = Eval(MakeNode(OpType::kSlice, 5, 1), {&y, &starts, &ends, &axes, &steps});
  ExpectNear(out[0], Tensor::FromInt64s({3}, {40, 30, 20}));
}

TEST(MovementSliceTest, RejectsBadParameters) {
  Tensor x = Iota({3, 4});
  Tensor one = Ints({1}), two = Ints({2}), zero = Ints({0}), pair = Ints({0, 1}),
         twice = Ints({1, 1}), far = Ints({2});
  auto status = [&](std::vector<const Tensor*> inputs) {
    return EvalStatus(MakeNode(OpType::kSlice, static_cast<int>(inputs.size()), 1), inputs).code();
  };
  EXPECT_EQ(status({&x, &one, &two, &one, &zero}), StatusCode::kInvalidArgument);  // step 0
  EXPECT_EQ(status({&x, &pair, &pair, &twice}), StatusCode::kInvalidArgument);     // axis twice
  EXPECT_EQ(status({&x, &one, &two, &far}), StatusCode::kInvalidArgument);         // axis 2
  EXPECT_EQ(status({&x, &pair, &two}), StatusCode::kInvalidArgument);              // lengths
  auto types = InferTypes(MakeNode(OpType::kSlice, 3, 1),
                          {Const(x), Runtime(one, FixedShape(one.dims)), Const(two)});
  EXPECT_EQ(types.status().code(), StatusCode::kInvalidArgument);
}

TEST(MovementSliceTest, SymbolicBatch) {
  const Shape shape{Batch(1), Fixed(4)};
  Tensor starts = Ints({1}), ends = Ints({3}), axis1 = Ints({1}), axis0 = Ints({0});
  PlanNode node = MakeNode(OpType::kSlice, 4, 1);
  auto types = InferTypes(
      node, {Symbolic(DType::kFloat32, shape), Const(starts), Const(ends), Const(axis1)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(2)}));
  Tensor x = Iota({3, 4});
  auto out = RunNode(node, {Runtime(x, shape), Const(starts), Const(ends), Const(axis1)}, 3);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({3, 2}, {1, 2, 5, 6, 9, 10}));

  Tensor whole_start = Ints({0}), whole_end = Ints({INT64_MAX});
  types = InferTypes(
      node, {Symbolic(DType::kFloat32, shape), Const(whole_start), Const(whole_end), Const(axis0)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, shape);
  types = InferTypes(node,
                     {Symbolic(DType::kFloat32, shape), Const(starts), Const(ends), Const(axis0)});
  EXPECT_EQ(types.status().code(), StatusCode::kUnsupported);
}

TEST(MovementSliceTest, ThreadedOdometerMatchesFormula) {
  // Enough rows that ParallelFor splits them, so tiles start mid-odometer.
  Tensor x = Iota({300, 200, 5});
  Tensor starts = Ints({-1, 1}), ends = Ints({INT64_MIN, 5}), axes = Ints({1, 2}),
         steps = Ints({-3, 2});
  auto out = RunNode(
      MakeNode(OpType::kSlice, 5, 1),
      {Runtime(x, FixedShape(x.dims)), Const(starts), Const(ends), Const(axes), Const(steps)}, 1,
      true, RunContext{2});
  ASSERT_TRUE(out.ok());
  Tensor expected = Tensor::Make(DType::kFloat32, {300, 67, 2});
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 67; ++j)
      for (int64_t k = 0; k < 2; ++k)
        expected.Data<float>()[(i * 67 + j) * 2 + k] =
            static_cast<float>((i * 200 + (199 - 3 * j)) * 5 + 1 + 2 * k);
  ExpectNear(out.value()[0], expected);
}

// --- Gather -----------------------------------------------------------------------------------

TEST(MovementGatherTest, HandValues) {
  Tensor x = Iota({3, 2});  // [[0,1],[2,3],[4,5]]
  Tensor rows = Ints({2, 0, -1});
  auto out = Eval(MakeNode(OpType::kGather, 2, 1), {&x, &rows});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({3, 2}, {4, 5, 0, 1, 4, 5}));
  Tensor cols = Tensor::FromInt64s({2, 1}, {1, -2});
  out = Eval(MakeNode(OpType::kGather, 2, 1, {IntsAttr("axis", {-1})}), {&x, &cols});
  ExpectNear(out[0], Tensor::FromFloats({3, 2, 1}, {1, 0, 3, 2, 5, 4}));
  Tensor scalar = Tensor::FromInt64s({}, {1});
  out = Eval(MakeNode(OpType::kGather, 2, 1), {&x, &scalar});
  ExpectNear(out[0], Tensor::FromFloats({2}, {2, 3}));
  Tensor shape = Tensor::FromInt64s({4}, {8, 3, 224, 224});
  Tensor last = Tensor::FromInt64s({}, {-1});
  out = Eval(MakeNode(OpType::kGather, 2, 1), {&shape, &last});
  ExpectNear(out[0], Tensor::FromInt64s({}, {224}));
}

TEST(MovementGatherTest, RejectsBadParameters) {
  Tensor x = Iota({3, 2});
  Tensor out_of_range = Ints({3}), negative = Ints({-4}), zero = Ints({0});
  Tensor float_index = Tensor::FromFloats({1}, {0});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kGather, 2, 1), {&x, &out_of_range}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kGather, 2, 1), {&x, &negative}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      EvalStatus(MakeNode(OpType::kGather, 2, 1, {IntsAttr("axis", {2})}), {&x, &zero}).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kGather, 2, 1), {&x, &float_index}).code(),
            StatusCode::kInvalidArgument);
}

TEST(MovementGatherTest, RuntimeIndicesOutOfRangeGiveZeros) {
  Tensor x = Tensor::FromFloats({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor indices = Ints({5, -1, -7, 0});
  auto out = RunNode(MakeNode(OpType::kGather, 2, 1),
                     {Const(x), Runtime(indices, FixedShape(indices.dims))}, 1);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ExpectNear(out.value()[0], Tensor::FromFloats({4, 2}, {0, 0, 5, 6, 0, 0, 1, 2}));
}

TEST(MovementGatherTest, SymbolicBatch) {
  // Token ids [N, 3] gathered from a [5, 2] table.
  Tensor table = Iota({5, 2});
  const Shape ids_shape{Batch(1), Fixed(3)};
  Tensor ids = Tensor::FromInt64s({2, 3}, {0, 4, 1, 2, 2, 3});
  PlanNode node = MakeNode(OpType::kGather, 2, 1);
  auto types = InferTypes(node, {Const(table), Symbolic(DType::kInt64, ids_shape)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(3), Fixed(2)}));
  auto out = RunNode(node, {Const(table), Runtime(ids, ids_shape)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({2, 3, 2}, {0, 1, 8, 9, 2, 3, 4, 5, 4, 5, 6, 7}));
  Tensor zero = Ints({0});
  EXPECT_EQ(InferTypes(node, {Symbolic(DType::kFloat32, {Batch(1), Fixed(2)}), Const(zero)})
                .status()
                .code(),
            StatusCode::kUnsupported);
}

// --- Pad --------------------------------------------------------------------------------------

std::vector<Tensor> RunPad(const Tensor& x, std::vector<int64_t> pads, int64_t mode,
                           const Tensor* value = nullptr) {
  Tensor p = Ints(std::move(pads));
  std::vector<const Tensor*> inputs = {&x, &p};
  if (value != nullptr) inputs.push_back(value);
  return Eval(
      MakeNode(OpType::kPad, static_cast<int>(inputs.size()), 1, {IntsAttr("mode", {mode})}),
      inputs);
}

TEST(MovementPadTest, ConstantMode) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Tensor nine = Tensor::FromFloats({}, {9});
  auto out = RunPad(x, {1, 0, 0, 1}, 0, &nine);
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({3, 3}, {9, 9, 9, 1, 2, 9, 3, 4, 9}));
  out = RunPad(x, {0, 1, 0, 0}, 0);  // default value 0
  ExpectNear(out[0], Tensor::FromFloats({2, 3}, {0, 1, 2, 0, 3, 4}));
  Tensor y = Tensor::FromInt64s({4}, {1, 2, 3, 4});
  Tensor minus = Tensor::FromInt64s({}, {-5});
  out = RunPad(y, {-1, 1}, 0, &minus);  // crop one at the front, pad one at the back
  ExpectNear(out[0], Tensor::FromInt64s({4}, {2, 3, 4, -5}));
}

TEST(MovementPadTest, EdgeAndReflectModes) {
  Tensor x = Tensor::FromFloats({3}, {1, 2, 3});
  auto out = RunPad(x, {2, 1}, 2);
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({6}, {1, 1, 1, 2, 3, 3}));
  out = RunPad(x, {2, 2}, 1);
  ExpectNear(out[0], Tensor::FromFloats({7}, {3, 2, 1, 2, 3, 2, 1}));
  out = RunPad(x, {5, 0}, 1);  // wider than the axis: numpy repeats the reflection
  ExpectNear(out[0], Tensor::FromFloats({8}, {2, 1, 2, 3, 2, 1, 2, 3}));
  Tensor four = Tensor::FromFloats({4}, {1, 2, 3, 4});
  out = RunPad(four, {2, -2}, 1);  // crop to [1, 2] first, then reflect it
  ExpectNear(out[0], Tensor::FromFloats({4}, {1, 2, 1, 2}));
  out = RunPad(four, {-1, 1}, 2);
  ExpectNear(out[0], Tensor::FromFloats({4}, {2, 3, 4, 4}));
  Tensor grid = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  out = RunPad(grid, {1, 1, 0, 0}, 1);
  ExpectNear(out[0], Tensor::FromFloats({3, 3}, {4, 3, 4, 2, 1, 2, 4, 3, 4}));
}

TEST(MovementPadTest, RejectsBadParameters) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Tensor short_pads = Ints({1, 1}), pads = Ints({0, 0, 0, 1}), crop = Ints({-2, 0, -1, 0});
  Tensor int_value = Tensor::FromInt64s({}, {1});
  auto status = [](std::vector<const Tensor*> inputs, int64_t mode = 0) {
    return EvalStatus(MakeNode(OpType::kPad, static_cast<int>(inputs.size()), 1,
                               {IntsAttr("mode", {mode})}),
                      inputs)
        .code();
  };
  EXPECT_EQ(status({&x, &short_pads}), StatusCode::kInvalidArgument);
  EXPECT_EQ(status({&x, &pads}, 3), StatusCode::kInvalidArgument);
  EXPECT_EQ(status({&x, &crop}), StatusCode::kInvalidArgument);
  EXPECT_EQ(status({&x, &pads, &int_value}), StatusCode::kInvalidArgument);
  Tensor empty = Tensor::Make(DType::kFloat32, {0, 2});
  Tensor grow = Ints({1, 0, 0, 0});
  EXPECT_EQ(status({&empty, &grow}, 2), StatusCode::kInvalidArgument);
  Tensor value = Tensor::FromFloats({}, {1});
  EXPECT_EQ(InferTypes(MakeNode(OpType::kPad, 3, 1), {Const(x), Const(pads), Runtime(value, {})})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(MovementPadTest, SymbolicBatch) {
  const Shape shape{Batch(1), Fixed(2)};
  Tensor pads = Ints({0, 1, 0, 1});
  PlanNode node = MakeNode(OpType::kPad, 2, 1, {IntsAttr("mode", {2})});
  auto types = InferTypes(node, {Symbolic(DType::kFloat32, shape), Const(pads)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(4)}));
  Tensor x = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  auto out = RunNode(node, {Runtime(x, shape), Const(pads)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({2, 4}, {1, 1, 2, 2, 3, 3, 4, 4}));
  Tensor batch_pads = Ints({1, 0, 0, 0});
  EXPECT_EQ(InferTypes(node, {Symbolic(DType::kFloat32, shape), Const(batch_pads)}).status().code(),
            StatusCode::kUnsupported);
}

// --- Split ------------------------------------------------------------------------------------

TEST(MovementSplitTest, EqualAndVariableParts) {
  Tensor x = Tensor::FromFloats({6}, {1, 2, 3, 4, 5, 6});
  auto out = Eval(MakeNode(OpType::kSplit, 1, 3), {&x});
  ASSERT_EQ(out.size(), 3u);
  ExpectNear(out[0], Tensor::FromFloats({2}, {1, 2}));
  ExpectNear(out[1], Tensor::FromFloats({2}, {3, 4}));
  ExpectNear(out[2], Tensor::FromFloats({2}, {5, 6}));
  Tensor split = Ints({2, 4});
  out = Eval(MakeNode(OpType::kSplit, 2, 2), {&x, &split});
  ASSERT_EQ(out.size(), 2u);
  ExpectNear(out[0], Tensor::FromFloats({2}, {1, 2}));
  ExpectNear(out[1], Tensor::FromFloats({4}, {3, 4, 5, 6}));
  Tensor grid = Iota({2, 4});
  Tensor split2 = Ints({1, 3});
  out = Eval(MakeNode(OpType::kSplit, 2, 2, {IntsAttr("axis", {-1})}), {&grid, &split2});
  ASSERT_EQ(out.size(), 2u);
  ExpectNear(out[0], Tensor::FromFloats({2, 1}, {0, 4}));
  ExpectNear(out[1], Tensor::FromFloats({2, 3}, {1, 2, 3, 5, 6, 7}));
  Tensor zeros = Ints({0, 6, 0});
  out = Eval(MakeNode(OpType::kSplit, 2, 3), {&x, &zeros});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].dims, Dims{0});
  ExpectNear(out[1], x);
  EXPECT_EQ(out[2].dims, Dims{0});
}

TEST(MovementSplitTest, RejectsBadParameters) {
  Tensor x = Iota({4});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kSplit, 1, 3), {&x}).code(), StatusCode::kInvalidArgument);
  Tensor wrong_sum = Ints({1, 2}), negative = Ints({-1, 5}), count = Ints({4});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kSplit, 2, 2), {&x, &wrong_sum}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kSplit, 2, 2), {&x, &negative}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kSplit, 2, 2), {&x, &count}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kSplit, 1, 2, {IntsAttr("axis", {1})}), {&x}).code(),
            StatusCode::kInvalidArgument);
}

TEST(MovementSplitTest, SymbolicBatch) {
  const Shape shape{Batch(2), Fixed(2)};
  PlanNode node = MakeNode(OpType::kSplit, 1, 2);
  auto types = InferTypes(node, {Symbolic(DType::kFloat32, shape)});
  ASSERT_TRUE(types.ok());
  ASSERT_EQ(types.value().size(), 2u);
  EXPECT_EQ(types.value()[1].shape, (Shape{Batch(1), Fixed(2)}));
  Tensor x = Iota({4, 2});
  auto out = RunNode(node, {Runtime(x, shape)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({2, 2}, {0, 1, 2, 3}));
  ExpectNear(out.value()[1], Tensor::FromFloats({2, 2}, {4, 5, 6, 7}));
  EXPECT_EQ(
      InferTypes(MakeNode(OpType::kSplit, 1, 2), {Symbolic(DType::kFloat32, {Batch(1), Fixed(2)})})
          .status()
          .code(),
      StatusCode::kUnsupported);
  Tensor split = Ints({1, 1});
  types = InferTypes(MakeNode(OpType::kSplit, 2, 2, {IntsAttr("axis", {1})}),
                     {Symbolic(DType::kFloat32, shape), Const(split)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(2), Fixed(1)}));
}

// --- Concat -----------------------------------------------------------------------------------

TEST(MovementConcatTest, Axes) {
  Tensor a = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::FromFloats({2, 1}, {5, 6});
  auto out = Eval(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {1})}), {&a, &b});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({2, 3}, {1, 2, 5, 3, 4, 6}));
  out = Eval(MakeNode(OpType::kConcat, 3, 1, {IntsAttr("axis", {-2})}), {&a, &a, &a});
  ExpectNear(out[0], Tensor::FromFloats({6, 2}, {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
  Tensor i = Tensor::FromInt64s({1}, {7}), j = Tensor::FromInt64s({2}, {8, 9});
  Tensor empty = Tensor::Make(DType::kInt64, {0});
  out = Eval(MakeNode(OpType::kConcat, 3, 1, {IntsAttr("axis", {0})}), {&i, &empty, &j});
  ExpectNear(out[0], Tensor::FromInt64s({3}, {7, 8, 9}));
}

TEST(MovementConcatTest, RejectsBadInputs) {
  Tensor a = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::FromFloats({2, 1}, {5, 6});
  Tensor c = Tensor::FromInt64s({2, 2}, {1, 2, 3, 4});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {0})}), {&a, &b}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {0})}), {&a, &c}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {2})}), {&a, &a}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kConcat, 2, 1), {&a, &a}).code(),
            StatusCode::kInvalidArgument);
}

TEST(MovementConcatTest, SymbolicBatch) {
  const Shape n3{Batch(1), Fixed(3)};
  auto types = InferTypes(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {0})}),
                          {Symbolic(DType::kFloat32, n3), Symbolic(DType::kFloat32, n3)});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(2), Fixed(3)}));
  EXPECT_EQ(
      InferTypes(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {0})}),
                 {Symbolic(DType::kFloat32, n3), Symbolic(DType::kFloat32, {Fixed(2), Fixed(3)})})
          .status()
          .code(),
      StatusCode::kUnsupported);
  const Shape n1{Batch(1), Fixed(1)};
  Tensor a = Iota({2, 3});
  Tensor b = Tensor::FromFloats({2, 1}, {-1, -2});
  auto out = RunNode(MakeNode(OpType::kConcat, 2, 1, {IntsAttr("axis", {1})}),
                     {Runtime(a, n3), Runtime(b, n1)}, 2);
  ASSERT_TRUE(out.ok());
  ExpectNear(out.value()[0], Tensor::FromFloats({2, 4}, {0, 1, 2, -1, 3, 4, 5, -2}));
}

// --- Trilu ------------------------------------------------------------------------------------

std::vector<Tensor> RunTrilu(const Tensor& x, int64_t upper, const Tensor* k = nullptr) {
  std::vector<const Tensor*> inputs = {&x};
  if (k != nullptr) inputs.push_back(k);
  return Eval(
      MakeNode(OpType::kTrilu, static_cast<int>(inputs.size()), 1, {IntsAttr("upper", {upper})}),
      inputs);
}

TEST(MovementTriluTest, UpperAndLower) {
  Tensor x = Tensor::FromFloats({3, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  auto out = RunTrilu(x, 1);
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({3, 4}, {1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 11, 12}));
  out = RunTrilu(x, 0);
  ExpectNear(out[0], Tensor::FromFloats({3, 4}, {1, 0, 0, 0, 5, 6, 0, 0, 9, 10, 11, 0}));
  Tensor one = Tensor::FromInt64s({}, {1}), minus_one = Tensor::FromInt64s({}, {-1});
  out = RunTrilu(x, 1, &one);
  ExpectNear(out[0], Tensor::FromFloats({3, 4}, {0, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 12}));
  out = RunTrilu(x, 0, &minus_one);
  ExpectNear(out[0], Tensor::FromFloats({3, 4}, {0, 0, 0, 0, 5, 0, 0, 0, 9, 10, 0, 0}));
  Tensor huge = Tensor::FromInt64s({}, {INT64_MAX}), tiny = Tensor::FromInt64s({}, {INT64_MIN});
  out = RunTrilu(x, 1, &huge);
  ExpectNear(out[0], Tensor::FromFloats({3, 4}, std::vector<float>(12, 0.0f)));
  out = RunTrilu(x, 1, &tiny);
  ExpectNear(out[0], x);
  Tensor stack = Tensor::FromInt64s({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  out = RunTrilu(stack, 0);
  ExpectNear(out[0], Tensor::FromInt64s({2, 2, 2}, {1, 0, 3, 4, 5, 0, 7, 8}));
  Tensor empty = Tensor::Make(DType::kFloat32, {3, 0, 5});
  Tensor six = Tensor::FromInt64s({}, {6});
  out = RunTrilu(empty, 0, &six);
  EXPECT_EQ(out[0].dims, (Dims{3, 0, 5}));
}

TEST(MovementTriluTest, RejectsBadParameters) {
  Tensor vector = Tensor::FromFloats({3}, {1, 2, 3});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kTrilu, 1, 1), {&vector}).code(),
            StatusCode::kInvalidArgument);
  Tensor x = Iota({2, 2});
  EXPECT_EQ(EvalStatus(MakeNode(OpType::kTrilu, 1, 1, {IntsAttr("upper", {2})}), {&x}).code(),
            StatusCode::kInvalidArgument);
  Tensor k = Tensor::FromInt64s({}, {0});
  EXPECT_EQ(InferTypes(MakeNode(OpType::kTrilu, 2, 1), {Const(x), Runtime(k, {})}).status().code(),
            StatusCode::kInvalidArgument);
  auto types = InferTypes(MakeNode(OpType::kTrilu, 1, 1),
                          {Symbolic(DType::kFloat32, {Batch(1), Fixed(4), Fixed(4)})});
  ASSERT_TRUE(types.ok());
  EXPECT_EQ(types.value()[0].shape, (Shape{Batch(1), Fixed(4), Fixed(4)}));
}

}  // namespace
}  // namespace mlcapsule::engine::testing
