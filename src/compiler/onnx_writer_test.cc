// ONNX writer: models written from plain structs compile with CompileOnnx and run to the values of
// a hand-written loop; the bytes parse back to exactly the ModelProto torch's exporter would write
// (IR 7, raw little-endian weights, initializers not listed as inputs, a symbolic batch); every bad
// spec is refused with InvalidArgument naming the offending node, initializer or value.
#include "compiler/onnx_writer.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "compiler/compiler.h"
#include "engine/session.h"

namespace mlcapsule::compiler {
namespace {

using engine::DType;
using engine::Plan;
using engine::Session;
using engine::Tensor;

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Tensor FloatTensor(engine::Dims dims, const std::vector<float>& values) {
  Tensor t = Tensor::Make(DType::kFloat32, dims);
  EXPECT_EQ(t.NumElements(), static_cast<int64_t>(values.size()));
  std::copy(values.begin(), values.end(), t.Data<float>());
  return t;
}

// Writes, compiles and runs `spec` on one input; returns the single output.
Tensor WriteCompileRun(const OnnxGraphSpec& spec, Tensor input) {
  Result<std::string> bytes = WriteOnnxModel(spec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  if (!bytes.ok()) return Tensor{};
  Result<Plan> plan = CompileOnnx(*bytes, {});
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return Tensor{};
  auto session = Session::Create(std::move(plan).value());
  EXPECT_TRUE(session.ok()) << session.status().ToString();
  if (!session.ok()) return Tensor{};
  std::vector<engine::TensorView> views = {input.View()};
  std::vector<Tensor> outputs;
  Status s = (*session)->Run(views, &outputs);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(outputs.size(), 1u);
  if (!s.ok() || outputs.size() != 1) return Tensor{};
  return std::move(outputs[0]);
}

void ExpectAllNear(const Tensor& actual, const std::vector<float>& expected, float tolerance) {
  ASSERT_EQ(actual.NumElements(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i)
    ASSERT_NEAR(actual.Data<float>()[i], expected[i], tolerance) << "element " << i;
}

// ---- (a) an MLP: Gemm, Relu, Gemm ----

constexpr int64_t kMlpIn = 4, kMlpHidden = 5, kMlpOut = 3;
constexpr float kMlpAlpha = 0.5f;  // on the second Gemm, so a FLOAT attribute reaches the kernel

struct MlpWeights {
  std::vector<float> w1, b1, w2, b2;  // w1 [hidden, in], w2 [out, hidden] (torch's Linear layout)
};

// Known weights with both signs, so that Relu clips some hidden units.
MlpWeights KnownMlpWeights() {
  MlpWeights m;
  for (int64_t j = 0; j < kMlpHidden; ++j)
    for (int64_t k = 0; k < kMlpIn; ++k)
      m.w1.push_back(0.25f * static_cast<float>(j - 2) + 0.125f * static_cast<float>(k) - 0.3f);
  for (int64_t j = 0; j < kMlpHidden; ++j) m.b1.push_back(0.1f * static_cast<float>(j) - 0.2f);
  for (int64_t o = 0; o < kMlpOut; ++o)
    for (int64_t j = 0; j < kMlpHidden; ++j)
      m.w2.push_back(((o + j) % 2 == 0 ? 0.5f : -0.75f) + 0.0625f * static_cast<float>(o * j));
  m.b2 = {0.3f, -0.1f, 0.05f};
  return m;
}

OnnxGraphSpec MlpSpec(const MlpWeights& m) {
  OnnxGraphSpec g;
  g.inputs = {{"input", {-1, kMlpIn}}};
  g.outputs = {{"logits", {-1, kMlpOut}}};
  g.initializers.push_back({"fc1.weight", {kMlpHidden, kMlpIn}, m.w1});
  g.initializers.push_back({"fc1.bias", {kMlpHidden}, m.b1});
  g.initializers.push_back({"fc2.weight", {kMlpOut, kMlpHidden}, m.w2});
  g.initializers.push_back({"fc2.bias", {kMlpOut}, m.b2});
  g.nodes.push_back({"Gemm",
                     "fc1",
                     {"input", "fc1.weight", "fc1.bias"},
                     {"h1"},
                     {OnnxAttribute::Int("transB", 1)}});
  g.nodes.push_back({"Relu", "relu", {"h1"}, {"h1_relu"}, {}});
  g.nodes.push_back({"Gemm",
                     "fc2",
                     {"h1_relu", "fc2.weight", "fc2.bias"},
                     {"logits"},
                     {OnnxAttribute::Int("transB", 1), OnnxAttribute::Float("alpha", kMlpAlpha),
                      OnnxAttribute::Float("beta", 1.0f)}});
  return g;
}

std::vector<float> MlpReference(const MlpWeights& m, const std::vector<float>& x, int64_t batch) {
  std::vector<float> y;
  for (int64_t n = 0; n < batch; ++n) {
    std::vector<float> h(kMlpHidden);
    for (int64_t j = 0; j < kMlpHidden; ++j) {
      float acc = m.b1[j];
      for (int64_t k = 0; k < kMlpIn; ++k) acc += x[n * kMlpIn + k] * m.w1[j * kMlpIn + k];
      h[j] = std::max(acc, 0.0f);
    }
    for (int64_t o = 0; o < kMlpOut; ++o) {
      float acc = 0;
      for (int64_t j = 0; j < kMlpHidden; ++j) acc += h[j] * m.w2[o * kMlpHidden + j];
      y.push_back(kMlpAlpha * acc + m.b2[o]);
    }
  }
  return y;
}

TEST(OnnxWriterTest, MlpCompilesAndMatchesHandLoop) {
  const MlpWeights weights = KnownMlpWeights();
  const std::vector<float> x = {1.0f, -2.0f, 0.5f, 3.0f, -0.25f, 0.75f, 2.0f, -1.5f};
  Tensor out = WriteCompileRun(MlpSpec(weights), FloatTensor({2, kMlpIn}, x));
  EXPECT_EQ(out.dims, (engine::Dims{2, kMlpOut}));
  ExpectAllNear(out, MlpReference(weights, x, 2), 1e-5f);
}

// ---- (b) a CNN: Conv, Relu, MaxPool, Flatten, Gemm ----

constexpr int64_t kImage = 6, kChannels = 2, kKernel = 3, kConvOut = kImage - kKernel + 1;
constexpr int64_t kPooled = kConvOut / 2, kFeatures = kChannels * kPooled * kPooled, kClasses = 3;

struct CnnWeights {
  std::vector<float> conv_w = RandomFloats(kChannels * kKernel * kKernel, 21);
  std::vector<float> conv_b = RandomFloats(kChannels, 22);
  std::vector<float> fc_w = RandomFloats(kClasses * kFeatures, 23);
  std::vector<float> fc_b = RandomFloats(kClasses, 24);
};

OnnxGraphSpec CnnSpec(const CnnWeights& m) {
  OnnxGraphSpec g;
  g.inputs = {{"image", {-1, 1, kImage, kImage}}};
  g.outputs = {{"logits", {-1, kClasses}}};
  g.initializers.push_back({"conv.weight", {kChannels, 1, kKernel, kKernel}, m.conv_w});
  g.initializers.push_back({"conv.bias", {kChannels}, m.conv_b});
  g.initializers.push_back({"fc.weight", {kClasses, kFeatures}, m.fc_w});
  g.initializers.push_back({"fc.bias", {kClasses}, m.fc_b});
  g.nodes.push_back(
      {"Conv",
       "conv",
       {"image", "conv.weight", "conv.bias"},
       {"conv_out"},
       {OnnxAttribute::Ints("kernel_shape", {kKernel, kKernel}),
        OnnxAttribute::Ints("pads", {0, 0, 0, 0}), OnnxAttribute::Ints("strides", {1, 1})}});
  g.nodes.push_back({"Relu", "relu", {"conv_out"}, {"relu_out"}, {}});
  g.nodes.push_back(
      {"MaxPool",
       "pool",
       {"relu_out"},
       {"pool_out"},
       {OnnxAttribute::Ints("kernel_shape", {2, 2}), OnnxAttribute::Ints("strides", {2, 2})}});
  g.nodes.push_back(
      {"Flatten", "flatten", {"pool_out"}, {"flat"}, {OnnxAttribute::Int("axis", 1)}});
  g.nodes.push_back({"Gemm",
                     "fc",
                     {"flat", "fc.weight", "fc.bias"},
                     {"logits"},
                     {OnnxAttribute::Int("transB", 1)}});
  return g;
}

std::vector<float> CnnReference(const CnnWeights& m, const std::vector<float>& x, int64_t batch) {
  std::vector<float> y;
  for (int64_t n = 0; n < batch; ++n) {
    const float* image = x.data() + n * kImage * kImage;
    float conv[kChannels][kConvOut][kConvOut];
    for (int64_t c = 0; c < kChannels; ++c)
      for (int64_t i = 0; i < kConvOut; ++i)
        for (int64_t j = 0; j < kConvOut; ++j) {
          float acc = m.conv_b[c];
          for (int64_t ki = 0; ki < kKernel; ++ki)
            for (int64_t kj = 0; kj < kKernel; ++kj)
              acc +=
                  image[(i + ki) * kImage + (j + kj)] * m.conv_w[(c * kKernel + ki) * kKernel + kj];
          conv[c][i][j] = std::max(acc, 0.0f);
        }
    std::vector<float> flat;  // NCHW order, as Flatten(axis 1) sees it
    for (int64_t c = 0; c < kChannels; ++c)
      for (int64_t i = 0; i < kPooled; ++i)
        for (int64_t j = 0; j < kPooled; ++j)
          flat.push_back(std::max({conv[c][2 * i][2 * j], conv[c][2 * i][2 * j + 1],
                                   conv[c][2 * i + 1][2 * j], conv[c][2 * i + 1][2 * j + 1]}));
    for (int64_t o = 0; o < kClasses; ++o) {
      float acc = m.fc_b[o];
      for (int64_t f = 0; f < kFeatures; ++f) acc += flat[f] * m.fc_w[o * kFeatures + f];
      y.push_back(acc);
    }
  }
  return y;
}

TEST(OnnxWriterTest, CnnCompilesAndMatchesHandLoop) {
  const CnnWeights weights;
  const int64_t batch = 2;
  const std::vector<float> x = RandomFloats(batch * kImage * kImage, 25);
  Tensor out = WriteCompileRun(CnnSpec(weights), FloatTensor({batch, 1, kImage, kImage}, x));
  EXPECT_EQ(out.dims, (engine::Dims{batch, kClasses}));
  ExpectAllNear(out, CnnReference(weights, x, batch), 1e-4f);
}

// ---- (c) the bytes, parsed back ----

TEST(OnnxWriterTest, BytesParseBackAsTorchWouldWriteThem) {
  const CnnWeights weights;
  Result<std::string> bytes = WriteOnnxModel(CnnSpec(weights));
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));

  EXPECT_EQ(model.ir_version(), 7);
  EXPECT_EQ(model.producer_name(), "mlcapsule-lab");
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 13);
  const onnx::GraphProto& graph = model.graph();
  EXPECT_EQ(graph.name(), "main_graph");

  // Only the image is a graph input; the weights are initializers alone.
  ASSERT_EQ(graph.input_size(), 1);
  EXPECT_EQ(graph.input(0).name(), "image");
  for (const onnx::TensorProto& init : graph.initializer())
    EXPECT_NE(init.name(), graph.input(0).name());
  const auto& input_type = graph.input(0).type().tensor_type();
  EXPECT_EQ(input_type.elem_type(), onnx::TensorProto::FLOAT);
  ASSERT_EQ(input_type.shape().dim_size(), 4);
  EXPECT_EQ(input_type.shape().dim(0).dim_param(), "batch");
  EXPECT_FALSE(input_type.shape().dim(0).has_dim_value());
  EXPECT_EQ(input_type.shape().dim(1).dim_value(), 1);
  EXPECT_EQ(input_type.shape().dim(3).dim_value(), kImage);
  ASSERT_EQ(graph.output_size(), 1);
  EXPECT_EQ(graph.output(0).name(), "logits");
  EXPECT_EQ(graph.output(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(graph.output(0).type().tensor_type().shape().dim(1).dim_value(), kClasses);

  ASSERT_EQ(graph.initializer_size(), 4);
  const onnx::TensorProto& conv_w = graph.initializer(0);
  EXPECT_EQ(conv_w.name(), "conv.weight");
  EXPECT_EQ(conv_w.data_type(), onnx::TensorProto::FLOAT);
  EXPECT_EQ(std::vector<int64_t>(conv_w.dims().begin(), conv_w.dims().end()),
            (std::vector<int64_t>{kChannels, 1, kKernel, kKernel}));
  EXPECT_EQ(conv_w.float_data_size(), 0);
  ASSERT_EQ(conv_w.raw_data().size(), weights.conv_w.size() * sizeof(float));
  std::vector<float> round_trip(weights.conv_w.size());
  std::memcpy(round_trip.data(), conv_w.raw_data().data(), conv_w.raw_data().size());
  EXPECT_EQ(round_trip, weights.conv_w);

  ASSERT_EQ(graph.node_size(), 5);
  const onnx::NodeProto& conv = graph.node(0);
  EXPECT_EQ(conv.op_type(), "Conv");
  EXPECT_EQ(conv.name(), "conv");
  ASSERT_EQ(conv.attribute_size(), 3);
  EXPECT_EQ(conv.attribute(0).name(), "kernel_shape");
  EXPECT_EQ(conv.attribute(0).type(), onnx::AttributeProto::INTS);
  EXPECT_EQ(conv.attribute(0).ints_size(), 2);
  const onnx::NodeProto& flatten = graph.node(3);
  ASSERT_EQ(flatten.attribute_size(), 1);
  EXPECT_EQ(flatten.attribute(0).type(), onnx::AttributeProto::INT);
  EXPECT_EQ(flatten.attribute(0).i(), 1);

  // A FLOAT attribute, from the MLP.
  Result<std::string> mlp_bytes = WriteOnnxModel(MlpSpec(KnownMlpWeights()));
  ASSERT_TRUE(mlp_bytes.ok()) << mlp_bytes.status().ToString();
  onnx::ModelProto mlp;
  ASSERT_TRUE(mlp.ParseFromString(*mlp_bytes));
  const onnx::AttributeProto& alpha = mlp.graph().node(2).attribute(1);
  EXPECT_EQ(alpha.name(), "alpha");
  EXPECT_EQ(alpha.type(), onnx::AttributeProto::FLOAT);
  EXPECT_EQ(alpha.f(), kMlpAlpha);
}

TEST(OnnxWriterTest, OpsetAndNamesAreWrittenAsGiven) {
  OnnxGraphSpec spec = MlpSpec(KnownMlpWeights());
  spec.opset = 17;
  spec.producer = "unit-test";
  spec.graph_name = "mlp";
  Result<std::string> bytes = WriteOnnxModel(spec);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  EXPECT_EQ(model.opset_import(0).version(), 17);
  EXPECT_EQ(model.producer_name(), "unit-test");
  EXPECT_EQ(model.graph().name(), "mlp");
}

TEST(OnnxWriterTest, EmptyOptionalInputIsAllowed) {
  OnnxGraphSpec spec = MlpSpec(KnownMlpWeights());
  spec.nodes[1].inputs.push_back("");
  Result<std::string> bytes = WriteOnnxModel(spec);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  ASSERT_EQ(model.graph().node(1).input_size(), 2);
  EXPECT_EQ(model.graph().node(1).input(1), "");
}

// ---- (d) validation ----

struct BadSpec {
  const char* what;
  std::function<void(OnnxGraphSpec&)> mutate;
  std::vector<std::string> message_contains;
};

TEST(OnnxWriterTest, BadSpecsAreRefusedNamingTheProblem) {
  const std::vector<BadSpec> cases = {
      {"opset too old", [](OnnxGraphSpec& g) { g.opset = 6; }, {"opset 6", "7 to 21"}},
      {"opset too new", [](OnnxGraphSpec& g) { g.opset = 22; }, {"opset 22"}},
      {"empty graph input name",
       [](OnnxGraphSpec& g) { g.inputs[0].name = ""; },
       {"graph input 0", "empty name"}},
      {"input dim below -1",
       [](OnnxGraphSpec& g) {
         g.inputs[0].dims = {-1, -4};
       },
       {"'input'", "-4"}},
      {"empty initializer name",
       [](OnnxGraphSpec& g) { g.initializers[2].name = ""; },
       {"initializer 2", "empty name"}},
      {"empty node name",
       [](OnnxGraphSpec& g) { g.nodes[1].name = ""; },
       {"node 1", "Relu", "empty name"}},
      {"empty op type",
       [](OnnxGraphSpec& g) { g.nodes[1].op_type = ""; },
       {"'relu'", "empty op_type"}},
      {"empty output name",
       [](OnnxGraphSpec& g) { g.outputs[0].name = ""; },
       {"graph output 0", "empty name"}},
      {"empty attribute name",
       [](OnnxGraphSpec& g) { g.nodes[0].attributes[0].name = ""; },
       {"'fc1'", "attribute 0", "empty name"}},
      {"duplicate attribute",
       [](OnnxGraphSpec& g) { g.nodes[2].attributes.push_back(OnnxAttribute::Int("transB", 0)); },
       {"'fc2'", "'transB'", "twice"}},
      {"duplicate initializer",
       [](OnnxGraphSpec& g) {
         g.initializers.push_back({"fc1.bias", {1}, {0.0f}});
       },
       {"'fc1.bias'", "duplicates"}},
      {"initializer shadowing an input",
       [](OnnxGraphSpec& g) {
         g.initializers.push_back({"input", {1}, {0.0f}});
       },
       {"'input'", "duplicates"}},
      {"duplicate node output",
       [](OnnxGraphSpec& g) { g.nodes[1].outputs = {"h1"}; },
       {"'relu'", "'h1'", "duplicates"}},
      {"node output named like an initializer",
       [](OnnxGraphSpec& g) { g.nodes[1].outputs = {"fc2.weight"}; },
       {"'relu'", "'fc2.weight'"}},
      {"duplicate graph output",
       [](OnnxGraphSpec& g) { g.outputs.push_back(g.outputs[0]); },
       {"'logits'", "twice"}},
      {"duplicate node name",
       [](OnnxGraphSpec& g) { g.nodes[1].name = "fc1"; },
       {"'fc1'", "twice"}},
      {"unknown node input",
       [](OnnxGraphSpec& g) { g.nodes[0].inputs[1] = "fc1.weights"; },
       {"'fc1'", "Gemm", "input 1", "'fc1.weights'"}},
      {"input from a later node",
       [](OnnxGraphSpec& g) { std::swap(g.nodes[0], g.nodes[1]); },
       {"'relu'", "'h1'", "earlier node"}},
      {"too few values",
       [](OnnxGraphSpec& g) { g.initializers[0].values.pop_back(); },
       {"'fc1.weight'", "19 values", "need 20"}},
      {"too many values",
       [](OnnxGraphSpec& g) { g.initializers[1].values.push_back(1.0f); },
       {"'fc1.bias'", "6 values", "need 5"}},
      {"negative initializer dim",
       [](OnnxGraphSpec& g) { g.initializers[3].dims = {-3}; },
       {"'fc2.bias'", "-3"}},
      {"initializer -1 dim",
       [](OnnxGraphSpec& g) { g.initializers[3].dims = {-1}; },
       {"'fc2.bias'", "-1"}},
      {"overflowing dims",
       [](OnnxGraphSpec& g) {
         g.initializers[3].dims = {int64_t{1} << 40, int64_t{1} << 40, int64_t{1} << 40};
       },
       {"'fc2.bias'", "overflow"}},
      {"output not produced",
       [](OnnxGraphSpec& g) { g.outputs[0].name = "scores"; },
       {"'scores'", "not produced"}},
      {"graph input as output",
       [](OnnxGraphSpec& g) {
         g.outputs.push_back({"input", {-1, 4}});
       },
       {"'input'", "not produced"}},
      {"no outputs", [](OnnxGraphSpec& g) { g.outputs.clear(); }, {"no outputs"}},
      {"node without outputs",
       [](OnnxGraphSpec& g) { g.nodes[1].outputs.clear(); },
       {"'relu'", "no outputs"}},
  };
  for (const BadSpec& c : cases) {
    SCOPED_TRACE(c.what);
    OnnxGraphSpec spec = MlpSpec(KnownMlpWeights());
    c.mutate(spec);
    Result<std::string> bytes = WriteOnnxModel(spec);
    ASSERT_FALSE(bytes.ok()) << "written, expected InvalidArgument";
    EXPECT_EQ(bytes.status().code(), StatusCode::kInvalidArgument) << bytes.status().ToString();
    for (const std::string& part : c.message_contains)
      EXPECT_NE(bytes.status().message().find(part), std::string::npos)
          << "'" << part << "' not in: " << bytes.status().message();
  }
}

TEST(OnnxWriterTest, OpsetBoundsAreAccepted) {
  for (int64_t opset : {7, 21}) {
    OnnxGraphSpec spec = MlpSpec(KnownMlpWeights());
    spec.opset = opset;
    EXPECT_TRUE(WriteOnnxModel(spec).ok()) << "opset " << opset;
  }
}

}  // namespace
}  // namespace mlcapsule::compiler
