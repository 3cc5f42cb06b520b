// Hand-built test plans (see test_plans.h).
#include "engine/test_plans.h"

#include <cmath>

#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {

namespace {
std::vector<float> Pattern(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(static_cast<float>(i) * 0.7f + 0.3f);
  return v;
}
}  // namespace

Plan SmallConvNet() {
  Plan p;
  p.model_name = "small_conv_net";
  p.producer = "test";
  auto add = [&](std::string name, Shape shape, TensorKind kind) {
    PlanTensor t;
    t.name = std::move(name);
    t.type = TensorType{DType::kFloat32, std::move(shape)};
    t.kind = kind;
    p.tensors.push_back(t);
    return static_cast<int32_t>(p.tensors.size() - 1);
  };
  const Dim n{1, true};
  int32_t x = add("input", {n, {1, false}, {6, false}, {6, false}}, TensorKind::kInput);
  auto w = Pattern(2 * 9, 0.5f);
  int32_t cw = p.AddConstant("conv_w", DType::kFloat32,
                             FixedShape(std::vector<int64_t>{2, 1, 3, 3}), w.data());
  auto b = Pattern(2, 0.1f);
  int32_t cb =
      p.AddConstant("conv_b", DType::kFloat32, FixedShape(std::vector<int64_t>{2}), b.data());
  int32_t conv = add("conv", {n, {2, false}, {6, false}, {6, false}}, TensorKind::kIntermediate);
  int32_t relu = add("relu", {n, {2, false}, {6, false}, {6, false}}, TensorKind::kIntermediate);
  int32_t flat = add("flat", {n, {72, false}}, TensorKind::kIntermediate);
  auto fw = Pattern(3 * 72, 0.2f);
  int32_t fcw =
      p.AddConstant("fc_w", DType::kFloat32, FixedShape(std::vector<int64_t>{3, 72}), fw.data());
  auto fb = Pattern(3, 0.05f);
  int32_t fcb =
      p.AddConstant("fc_b", DType::kFloat32, FixedShape(std::vector<int64_t>{3}), fb.data());
  int32_t y = add("output", {n, {3, false}}, TensorKind::kOutput);
  p.inputs = {x};
  p.outputs = {y};
  PlanNode c{OpType::kConv, "conv", {x, cw, cb}, {conv}, {IntsAttr("pads", {1, 1, 1, 1})}};
  PlanNode r{OpType::kRelu, "relu", {conv}, {relu}, {}};
  PlanNode f{OpType::kFlatten, "flatten", {relu}, {flat}, {IntsAttr("axis", {1})}};
  PlanNode fc{OpType::kFullyConnected, "fc", {flat, fcw, fcb}, {y}, {}};
  p.nodes = {c, r, f, fc};
  return p;
}

}  // namespace mlcapsule::engine::testing
