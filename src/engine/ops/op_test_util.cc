// Op test helpers (see op_test_util.h).
#include "engine/ops/op_test_util.h"

#include <cmath>

namespace mlcapsule::engine::testing {

PlanNode MakeNode(OpType op, int num_inputs, int num_outputs, std::vector<Attribute> attrs) {
  PlanNode node;
  node.op = op;
  node.name = std::string("test_") + OpTypeName(op);
  for (int i = 0; i < num_inputs; ++i) node.inputs.push_back(i);
  for (int i = 0; i < num_outputs; ++i) node.outputs.push_back(num_inputs + i);
  node.attrs = std::move(attrs);
  return node;
}

Attribute IntsAttr(std::string name, std::vector<int64_t> values) {
  Attribute a;
  a.name = std::move(name);
  a.kind = AttrKind::kInts;
  a.ints = std::move(values);
  return a;
}

Attribute FloatsAttr(std::string name, std::vector<float> values) {
  Attribute a;
  a.name = std::move(name);
  a.kind = AttrKind::kFloats;
  a.floats = std::move(values);
  return a;
}

Status EvalStatus(const PlanNode& node, std::vector<const Tensor*> inputs, bool fast) {
  std::vector<Tensor> outputs;
  return EvaluateNode(node, inputs, &outputs, KernelOptions{fast});
}

std::vector<Tensor> Eval(const PlanNode& node, std::vector<const Tensor*> inputs, bool fast) {
  std::vector<Tensor> outputs;
  Status s = EvaluateNode(node, inputs, &outputs, KernelOptions{fast});
  EXPECT_TRUE(s.ok()) << s.ToString();
  return outputs;
}

Tensor RandomFloats(Dims dims, uint32_t seed, float low, float high) {
  Tensor t = Tensor::Make(DType::kFloat32, std::move(dims));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(low, high);
  float* p = t.Data<float>();
  for (int64_t i = 0; i < t.NumElements(); ++i) p[i] = dist(rng);
  return t;
}

void ExpectNear(const Tensor& actual, const Tensor& expected, float atol, float rtol) {
  ASSERT_EQ(actual.dtype, expected.dtype);
  ASSERT_EQ(actual.dims, expected.dims);
  if (actual.dtype == DType::kInt64) {
    for (int64_t i = 0; i < actual.NumElements(); ++i)
      ASSERT_EQ(actual.Data<int64_t>()[i], expected.Data<int64_t>()[i]) << "at element " << i;
    return;
  }
  for (int64_t i = 0; i < actual.NumElements(); ++i) {
    float a = actual.Data<float>()[i], e = expected.Data<float>()[i];
    if (std::isnan(e)) {
      ASSERT_TRUE(std::isnan(a)) << "at element " << i;
      continue;
    }
    ASSERT_LE(std::fabs(a - e), atol + rtol * std::fabs(e))
        << "at element " << i << ": " << a << " vs " << e;
  }
}

}  // namespace mlcapsule::engine::testing
