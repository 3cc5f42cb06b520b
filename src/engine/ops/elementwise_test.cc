// Tests for elementwise ops against hand-computed values.
#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

TEST(ReluTest, ZeroesNegatives) {
  Tensor x = Tensor::FromFloats({2, 3}, {-1, 0, 2, -3.5f, 4, 0.5f});
  auto out = Eval(MakeNode(OpType::kRelu, 1, 1), {&x});
  ASSERT_EQ(out.size(), 1u);
  ExpectNear(out[0], Tensor::FromFloats({2, 3}, {0, 0, 2, 0, 4, 0.5f}));
}

TEST(ReluTest, RejectsInt64) {
  Tensor x = Tensor::FromInt64s({2}, {1, -1});
  Status s = EvalStatus(MakeNode(OpType::kRelu, 1, 1), {&x});
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace mlcapsule::engine::testing
