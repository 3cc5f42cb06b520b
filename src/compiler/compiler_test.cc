// Compiler: small ONNX models built in C++ compile, fuse and run to the values of a plain loop;
// hostile or unsupported models fail with an error that names the node, op or value (and never
// crash); the .npy reader survives hostile headers.
#include "compiler/compiler.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "compiler/onnx_import.h"
#include "engine/session.h"

namespace mlcapsule::compiler {
namespace {

using engine::DType;
using engine::OpType;
using engine::Plan;
using engine::Session;
using engine::Tensor;

// ---- building ONNX models ----

// A dimension of a declared input: a fixed size or a symbolic name ("N").
using OnnxDim = std::variant<int64_t, std::string>;

class ModelBuilder {
 public:
  explicit ModelBuilder(int64_t opset = 13) {
    model_.set_ir_version(8);
    model_.set_producer_name("compiler_test");
    auto* op = model_.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    model_.mutable_graph()->set_name("test_graph");
  }

  onnx::GraphProto* graph() { return model_.mutable_graph(); }
  onnx::ModelProto& model() { return model_; }

  void Input(const std::string& name, std::vector<OnnxDim> dims, int elem_type = 1) {
    Declare(graph()->add_input(), name, dims, elem_type);
  }
  void Output(const std::string& name, int elem_type = 1) {
    auto* v = graph()->add_output();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(elem_type);
  }
  onnx::TensorProto* Floats(const std::string& name, std::vector<int64_t> dims,
                            std::vector<float> values) {
    auto* t = graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
    return t;
  }
  onnx::TensorProto* Int64s(const std::string& name, std::vector<int64_t> dims,
                            std::vector<int64_t> values) {
    auto* t = graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t v : values) t->add_int64_data(v);
    return t;
  }
  onnx::NodeProto* Node(const std::string& op, std::vector<std::string> inputs,
                        std::vector<std::string> outputs, const std::string& name = "") {
    auto* n = graph()->add_node();
    n->set_op_type(op);
    n->set_name(name.empty() ? op + "_" + std::to_string(graph()->node_size()) : name);
    for (auto& i : inputs) n->add_input(i);
    for (auto& o : outputs) n->add_output(o);
    return n;
  }
  std::string Bytes() const { return model_.SerializeAsString(); }

 private:
  static void Declare(onnx::ValueInfoProto* v, const std::string& name,
                      const std::vector<OnnxDim>& dims, int elem_type) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem_type);
    auto* shape = tt->mutable_shape();
    for (const OnnxDim& d : dims) {
      auto* dim = shape->add_dim();
      if (std::holds_alternative<int64_t>(d))
        dim->set_dim_value(std::get<int64_t>(d));
      else
        dim->set_dim_param(std::get<std::string>(d));
    }
  }

  onnx::ModelProto model_;
};

void SetInt(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void SetInts(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void SetFloat(onnx::NodeProto* n, const std::string& name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Tensor RandomTensor(engine::Dims dims, uint32_t seed) {
  Tensor t = Tensor::Make(DType::kFloat32, dims);
  std::vector<float> v = RandomFloats(static_cast<size_t>(t.NumElements()), seed);
  std::copy(v.begin(), v.end(), t.Data<float>());
  return t;
}

Plan MustCompile(const std::string& bytes, const CompileOptions& options,
                 CompileReport* report = nullptr) {
  auto plan = CompileOnnx(bytes, options, report);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return Plan{};
  return std::move(plan).value();
}

std::vector<Tensor> MustRun(Session& session, std::vector<Tensor> inputs) {
  std::vector<engine::TensorView> views;
  for (Tensor& t : inputs) views.push_back(t.View());
  std::vector<Tensor> outputs;
  Status s = session.Run(views, &outputs);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return outputs;
}

bool HasOp(const Plan& plan, OpType op) {
  return std::any_of(plan.nodes.begin(), plan.nodes.end(),
                     [&](const engine::PlanNode& n) { return n.op == op; });
}

std::string OpList(const Plan& plan) {
  std::string s;
  for (const auto& n : plan.nodes) s += std::string(engine::OpTypeName(n.op)) + " ";
  return s;
}

void ExpectAllNear(const Tensor& actual, const std::vector<float>& expected, float tolerance) {
  ASSERT_EQ(actual.NumElements(), static_cast<int64_t>(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i)
    ASSERT_NEAR(actual.Data<float>()[i], expected[i], tolerance) << "element " << i;
}

// Compiles and expects failure with `code`, the message containing every one of `names`.
void ExpectError(const std::string& bytes, StatusCode code, std::vector<std::string> names,
                 const CompileOptions& options = {}) {
  auto plan = CompileOnnx(bytes, options);
  ASSERT_FALSE(plan.ok()) << "compiled, expected " << StatusCodeName(code);
  EXPECT_EQ(plan.status().code(), code) << plan.status().ToString();
  for (const std::string& name : names)
    EXPECT_NE(plan.status().message().find(name), std::string::npos)
        << "'" << name << "' not in: " << plan.status().message();
}

// ExpectError in a child process (a gtest death test), for inputs that once crashed the compiler: a
// new crash fails this test instead of killing the whole test binary. The child prints the status.
void ExpectErrorInChild(const std::string& bytes, StatusCode code, std::vector<std::string> names) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        auto plan = CompileOnnx(bytes, {});
        bool good = !plan.ok() && plan.status().code() == code;
        for (const std::string& name : names)
          good = good && plan.status().message().find(name) != std::string::npos;
        std::fprintf(stderr, "%s\n", plan.ok() ? "compiled" : plan.status().ToString().c_str());
        std::_Exit(good ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "")
      << "expected " << StatusCodeName(code) << " naming " << ::testing::PrintToString(names);
}

// ---- valid models ----

// Y = Relu(X @ W + B), X [N, 4].
std::string MatMulAddReluModel(const std::vector<float>& w, const std::vector<float>& b) {
  ModelBuilder m;
  m.Input("X", {std::string("N"), int64_t{4}});
  m.Floats("W", {4, 3}, w);
  m.Floats("B", {3}, b);
  m.Node("MatMul", {"X", "W"}, {"xw"}, "matmul");
  m.Node("Add", {"xw", "B"}, {"xwb"}, "add");
  m.Node("Relu", {"xwb"}, {"Y"}, "relu");
  m.Output("Y");
  return m.Bytes();
}

TEST(CompilerTest, MatMulAddReluMatchesHandLoop) {
  std::vector<float> w = RandomFloats(12, 1), b = RandomFloats(3, 2);
  std::string bytes = MatMulAddReluModel(w, b);
  CompileReport report;
  Plan plan = MustCompile(bytes, {}, &report);
  EXPECT_EQ(report.onnx_nodes, 3);
  EXPECT_EQ(report.opset, 13);
  EXPECT_GT(report.fused_nodes, 0) << OpList(plan);
  EXPECT_FALSE(HasOp(plan, OpType::kAdd)) << "bias add was not fused: " << OpList(plan);
  auto session = Session::Create(std::move(plan));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  for (int64_t batch : {1, 3}) {
    Tensor x = RandomTensor({batch, 4}, static_cast<uint32_t>(10 + batch));
    std::vector<float> expected(static_cast<size_t>(batch * 3));
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t j = 0; j < 3; ++j) {
        float acc = b[static_cast<size_t>(j)];
        for (int64_t k = 0; k < 4; ++k)
          acc += x.Data<float>()[n * 4 + k] * w[static_cast<size_t>(k * 3 + j)];
        expected[static_cast<size_t>(n * 3 + j)] = std::max(acc, 0.0f);
      }
    auto out = MustRun(**session, {x});
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].dims, (engine::Dims{batch, 3}));
    ExpectAllNear(out[0], expected, 1e-4f);
  }
}

// Conv(3->4, 3x3, pad 1) + BatchNormalization + Relu + GlobalAveragePool + Flatten + Gemm(4->2).
struct ConvNetWeights {
  std::vector<float> conv_w = RandomFloats(4 * 3 * 3 * 3, 3, 0.5f);
  std::vector<float> conv_b = RandomFloats(4, 4);
  std::vector<float> scale = {1.5f, 0.5f, -1.0f, 2.0f};
  std::vector<float> shift = RandomFloats(4, 5);
  std::vector<float> mean = RandomFloats(4, 6);
  std::vector<float> var = {0.5f, 1.0f, 2.0f, 0.25f};
  std::vector<float> fc_w = RandomFloats(2 * 4, 7);
  std::vector<float> fc_b = {0.25f, -0.5f};
};

std::string ConvNetModel(const ConvNetWeights& w) {
  ModelBuilder m;
  m.Input("X", {std::string("N"), int64_t{3}, int64_t{8}, int64_t{8}});
  m.Floats("conv_w", {4, 3, 3, 3}, w.conv_w);
  m.Floats("conv_b", {4}, w.conv_b);
  m.Floats("bn_scale", {4}, w.scale);
  m.Floats("bn_shift", {4}, w.shift);
  m.Floats("bn_mean", {4}, w.mean);
  m.Floats("bn_var", {4}, w.var);
  m.Floats("fc_w", {2, 4}, w.fc_w);
  m.Floats("fc_b", {2}, w.fc_b);
  auto* conv = m.Node("Conv", {"X", "conv_w", "conv_b"}, {"c"}, "conv");
  SetInts(conv, "kernel_shape", {3, 3});
  SetInts(conv, "pads", {1, 1, 1, 1});
  auto* bn = m.Node("BatchNormalization", {"c", "bn_scale", "bn_shift", "bn_mean", "bn_var"},
                    {"bn"}, "bn");
  SetFloat(bn, "epsilon", 1e-5f);
  m.Node("Relu", {"bn"}, {"r"}, "relu");
  m.Node("GlobalAveragePool", {"r"}, {"g"}, "gap");
  m.Node("Flatten", {"g"}, {"f"}, "flatten");
  auto* gemm = m.Node("Gemm", {"f", "fc_w", "fc_b"}, {"Y"}, "fc");
  SetInt(gemm, "transB", 1);
  m.Output("Y");
  return m.Bytes();
}

std::vector<float> ConvNetByHand(const ConvNetWeights& w, const Tensor& x) {
  const int64_t batch = x.dims[0], h = 8, width = 8;
  std::vector<float> out;
  for (int64_t n = 0; n < batch; ++n) {
    std::vector<float> pooled(4, 0.0f);
    for (int64_t oc = 0; oc < 4; ++oc) {
      float sum = 0;
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < width; ++xx) {
          float acc = w.conv_b[static_cast<size_t>(oc)];
          for (int64_t ic = 0; ic < 3; ++ic)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                int64_t iy = y + ky - 1, ix = xx + kx - 1;
                if (iy < 0 || iy >= h || ix < 0 || ix >= width) continue;
                acc += x.Data<float>()[((n * 3 + ic) * h + iy) * width + ix] *
                       w.conv_w[static_cast<size_t>(((oc * 3 + ic) * 3 + ky) * 3 + kx)];
              }
          size_t c = static_cast<size_t>(oc);
          float bn = (acc - w.mean[c]) / std::sqrt(w.var[c] + 1e-5f) * w.scale[c] + w.shift[c];
          sum += std::max(bn, 0.0f);
        }
      pooled[static_cast<size_t>(oc)] = sum / static_cast<float>(h * width);
    }
    for (size_t j = 0; j < 2; ++j) {
      float acc = w.fc_b[j];
      for (size_t k = 0; k < 4; ++k) acc += pooled[k] * w.fc_w[j * 4 + k];
      out.push_back(acc);
    }
  }
  return out;
}

TEST(CompilerTest, ConvNetIsFusedAndMatchesUnoptimizedPlanAndHandLoop) {
  ConvNetWeights weights;
  std::string bytes = ConvNetModel(weights);
  CompileReport report;
  Plan optimized = MustCompile(bytes, {}, &report);
  EXPECT_EQ(report.onnx_nodes, 6);
  EXPECT_GT(report.fused_nodes, 0);
  EXPECT_FALSE(HasOp(optimized, OpType::kBatchNormalization)) << OpList(optimized);
  EXPECT_FALSE(HasOp(optimized, OpType::kConv)) << OpList(optimized);
  EXPECT_TRUE(HasOp(optimized, OpType::kConvNhwc)) << OpList(optimized);
  EXPECT_FALSE(HasOp(optimized, OpType::kRelu))
      << "Relu not fused into the convolution: " << OpList(optimized);

  CompileReport plain_report;
  Plan plain = MustCompile(bytes, {.optimize = false, .channels_last = false}, &plain_report);
  EXPECT_EQ(plain_report.fused_nodes, 0);
  EXPECT_TRUE(HasOp(plain, OpType::kBatchNormalization)) << OpList(plain);
  EXPECT_TRUE(HasOp(plain, OpType::kConv)) << OpList(plain);

  // The plan survives serialization (what the consumer side actually loads).
  std::string serialized = engine::SerializePlan(optimized);
  auto loaded = engine::ParsePlan(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(serialized.data()), serialized.size()));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();

  auto fast = Session::Create(std::move(loaded).value(), {.threads = 2});
  auto reference = Session::Create(std::move(plain), {.threads = 1, .fast_kernels = false});
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();
  for (int64_t batch : {1, 3}) {
    Tensor x = RandomTensor({batch, 3, 8, 8}, static_cast<uint32_t>(20 + batch));
    auto a = MustRun(**fast, {x});
    auto b = MustRun(**reference, {x});
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    EXPECT_EQ(a[0].dims, (engine::Dims{batch, 2}));
    EXPECT_EQ(b[0].dims, (engine::Dims{batch, 2}));
    std::vector<float> expected = ConvNetByHand(weights, x);
    ExpectAllNear(a[0], expected, 1e-4f);
    ExpectAllNear(b[0], expected, 1e-4f);
  }
}

// Y = Relu(Reshape(X, Concat(Unsqueeze(Gather(Shape(X), 0)), [24]))), X [N, 2, 3, 4]: the shape
// chain depends on the batch and must be folded into a constant shape parameter.
std::string ShapeChainModel() {
  ModelBuilder m;
  m.Input("X", {std::string("N"), int64_t{2}, int64_t{3}, int64_t{4}});
  m.Int64s("zero", {}, {0});
  m.Int64s("axes0", {1}, {0});
  m.Int64s("rest", {1}, {24});
  m.Node("Shape", {"X"}, {"shape"}, "shape");
  auto* gather = m.Node("Gather", {"shape", "zero"}, {"batch"}, "gather");
  SetInt(gather, "axis", 0);
  m.Node("Unsqueeze", {"batch", "axes0"}, {"batch1"}, "unsqueeze");
  auto* concat = m.Node("Concat", {"batch1", "rest"}, {"new_shape"}, "concat");
  SetInt(concat, "axis", 0);
  m.Node("Reshape", {"X", "new_shape"}, {"flat"}, "reshape");
  m.Node("Relu", {"flat"}, {"Y"}, "relu");
  m.Output("Y");
  return m.Bytes();
}

TEST(CompilerTest, ShapeChainOnDynamicBatchIsFolded) {
  std::string bytes = ShapeChainModel();
  for (CompileOptions options :
       {CompileOptions{}, CompileOptions{.optimize = false, .channels_last = false}}) {
    CompileReport report;
    Plan plan = MustCompile(bytes, options, &report);
    EXPECT_FALSE(HasOp(plan, OpType::kShape)) << OpList(plan);
    EXPECT_FALSE(HasOp(plan, OpType::kGather)) << OpList(plan);
    EXPECT_FALSE(HasOp(plan, OpType::kConcat)) << OpList(plan);
    EXPECT_FALSE(HasOp(plan, OpType::kUnsqueeze)) << OpList(plan);
    // The chain is not counted in report.folded_nodes (it is tracked symbolically and then removed
    // as dead code), so check the node count instead.
    EXPECT_LT(report.plan_nodes, report.onnx_nodes) << OpList(plan);
    auto session = Session::Create(std::move(plan));
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    for (int64_t batch : {1, 5, 2}) {
      Tensor x = RandomTensor({batch, 2, 3, 4}, static_cast<uint32_t>(30 + batch));
      auto out = MustRun(**session, {x});
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].dims, (engine::Dims{batch, 24}));
      std::vector<float> expected(static_cast<size_t>(x.NumElements()));
      for (size_t i = 0; i < expected.size(); ++i) expected[i] = std::max(x.Data<float>()[i], 0.0f);
      ExpectAllNear(out[0], expected, 0.0f);
    }
  }
}

// Regression: ImportGraph's graph-output loop once held `Value& v` across graph_.AddConstant (a
// reallocation): heap-use-after-free under ASan for a constant graph output ('K' here, or any
// constant-folded output; fuzz/crashes/fuzz_onnx_compile-uaf-constant-output.onnx). Only the
// ASan build catches a regression; a release build usually passes by chance.
TEST(CompilerTest, OutputsThatAreInputsConstantsOrRepeatedAreCopies) {
  ModelBuilder m;
  m.Input("X", {std::string("N"), int64_t{3}});
  m.Floats("K", {2}, {1.5f, -2.5f});
  m.Node("Relu", {"X"}, {"R"}, "relu");
  m.Output("X");
  m.Output("K");
  m.Output("R");
  m.Output("R");
  Plan plan = MustCompile(m.Bytes(), {});
  ASSERT_EQ(plan.outputs.size(), 4u);
  auto session = Session::Create(std::move(plan));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  for (int64_t batch : {1, 3}) {
    Tensor x = RandomTensor({batch, 3}, static_cast<uint32_t>(40 + batch));
    auto out = MustRun(**session, {x});
    ASSERT_EQ(out.size(), 4u);
    std::vector<float> xs(x.Data<float>(), x.Data<float>() + x.NumElements()), relu = xs;
    for (float& v : relu) v = std::max(v, 0.0f);
    ExpectAllNear(out[0], xs, 0.0f);
    ExpectAllNear(out[1], {1.5f, -2.5f}, 0.0f);
    ExpectAllNear(out[2], relu, 0.0f);
    ExpectAllNear(out[3], relu, 0.0f);
  }
}

TEST(CompilerTest, FixedBatchPlanRunsThatBatchOnly) {
  ConvNetWeights weights;
  Plan plan = MustCompile(ConvNetModel(weights), {.fixed_batch = 3});
  for (int32_t input : plan.inputs)
    EXPECT_FALSE(engine::HasBatchDim(plan.tensors[static_cast<size_t>(input)].type.shape));
  auto session = Session::Create(std::move(plan));
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  Tensor x = RandomTensor({3, 3, 8, 8}, 50);
  auto out = MustRun(**session, {x});
  ASSERT_EQ(out.size(), 1u);
  ExpectAllNear(out[0], ConvNetByHand(weights, x), 1e-4f);
  Tensor one = RandomTensor({1, 3, 8, 8}, 51);
  std::vector<Tensor> outputs;
  EXPECT_FALSE((*session)->Run({one.View()}, &outputs).ok());
}

TEST(CompilerTest, InputNamesSkipInitializers) {
  std::string bytes = MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2));
  auto names = OnnxInputNames(bytes);
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, std::vector<std::string>{"X"});
}

// ---- malformed and unsupported models ----

TEST(CompilerErrorTest, EveryTruncationIsAnErrorNotACrash) {
  std::string bytes = MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2));
  for (size_t size = 0; size < bytes.size(); ++size) {
    auto plan = CompileOnnx(std::string_view(bytes).substr(0, size), {});
    ASSERT_FALSE(plan.ok()) << "prefix of " << size << " of " << bytes.size() << " bytes compiled";
    StatusCode code = plan.status().code();
    EXPECT_TRUE(code == StatusCode::kInvalidArgument || code == StatusCode::kDataLoss)
        << "prefix " << size << ": " << plan.status().ToString();
  }
  EXPECT_TRUE(CompileOnnx(bytes, {}).ok());
}

TEST(CompilerErrorTest, RandomGarbageIsAnError) {
  std::mt19937 rng(42);
  for (int trial = 0; trial < 300; ++trial) {
    std::string garbage(static_cast<size_t>(rng() % 512), '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    auto plan = CompileOnnx(garbage, {});
    EXPECT_FALSE(plan.ok()) << "trial " << trial;
  }
  // Garbage after a valid model, and a valid model with single bytes flipped.
  std::string bytes = MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2));
  EXPECT_FALSE(CompileOnnx(bytes + "\xff\xff\xff", {}).ok());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
    auto plan = CompileOnnx(flipped, {});  // may compile (a changed weight); must not crash
    if (plan.ok()) {
      EXPECT_TRUE(engine::ValidatePlan(*plan).ok());
    }
  }
}

TEST(CompilerErrorTest, DanglingInputNamesTheNodeAndTheValue) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X"}, {"a"}, "first");
  m.Node("Add", {"a", "ghost"}, {"Y"}, "adder");
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'adder'", "'ghost'", "Add"});
}

TEST(CompilerErrorTest, CycleIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Add", {"X", "b"}, {"a"}, "node_a");
  m.Node("Relu", {"a"}, {"b"}, "node_b");
  m.Output("b");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'node_a'", "'b'", "cyclic"});
}

TEST(CompilerErrorTest, SelfLoopIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Add", {"X", "Y"}, {"Y"}, "self");
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'self'", "'Y'"});
}

TEST(CompilerErrorTest, DuplicateOutputNameIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X"}, {"Y"}, "first");
  m.Node("Sigmoid", {"X"}, {"Y"}, "second");
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'second'", "'Y'", "already defined"});
}

TEST(CompilerErrorTest, OutputShadowingAnInputIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X"}, {"X"}, "overwrite");
  m.Output("X");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'overwrite'", "'X'"});
}

TEST(CompilerErrorTest, DuplicateInitializerIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{2}});
  m.Floats("W", {2}, {1, 2});
  m.Floats("W", {2}, {3, 4});
  m.Node("Add", {"X", "W"}, {"Y"});
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'W'"});
}

TEST(CompilerErrorTest, UnknownGraphOutputIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X"}, {"Y"});
  m.Output("Z");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'Z'"});
}

TEST(CompilerErrorTest, UnsupportedOpIsNamed) {
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{4}});
    m.Node("FrobnicateTensor", {"X"}, {"Y"}, "weird");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"FrobnicateTensor", "'weird'"});
  }
  {
    ModelBuilder m;  // a real ONNX op the engine does not implement
    m.Input("X", {int64_t{1}, int64_t{4}});
    m.Node("NonZero", {"X"}, {"Y"}, "nz");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"NonZero", "'nz'"});
  }
  {
    ModelBuilder m;  // engine-internal ops are not accepted from ONNX files
    m.Input("X", {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{4}});
    m.Node("ConvNhwc", {"X"}, {"Y"}, "internal");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"ConvNhwc"});
  }
  {
    ModelBuilder m;  // a custom domain
    m.Input("X", {int64_t{1}, int64_t{4}});
    auto* n = m.Node("Relu", {"X"}, {"Y"}, "custom");
    n->set_domain("com.example");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"com.example", "'custom'"});
  }
}

TEST(CompilerErrorTest, UnsupportedAttributeIsNamed) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  auto* n = m.Node("Relu", {"X"}, {"Y"}, "relu");
  SetInt(n, "frobnication_level", 3);
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kUnsupported, {"frobnication_level", "'relu'"});
}

TEST(CompilerErrorTest, WrongElementTypeIsUnsupported) {
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{4}}, onnx::TensorProto::INT32);
    m.Node("Relu", {"X"}, {"Y"});
    m.Output("Y", onnx::TensorProto::INT32);
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"int32", "'X'"});
  }
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{2}});
    auto* w = m.graph()->add_initializer();
    w->set_name("W");
    w->set_data_type(onnx::TensorProto::DOUBLE);
    w->add_dims(2);
    w->add_double_data(1.0);
    w->add_double_data(2.0);
    m.Node("Add", {"X", "W"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"float64", "'W'"});
  }
}

TEST(CompilerErrorTest, HugeInitializerDimsAreRefusedWithoutAllocating) {
  for (std::vector<int64_t> dims :
       {std::vector<int64_t>{int64_t{1} << 40}, std::vector<int64_t>{1 << 20, 1 << 20},
        std::vector<int64_t>{int64_t{1} << 62, int64_t{1} << 62, 4},
        std::vector<int64_t>{INT64_MAX, 2}}) {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{2}});
    auto* w = m.graph()->add_initializer();
    w->set_name("huge");
    w->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) w->add_dims(d);
    m.Node("Add", {"X", "huge"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kResourceExhausted, {"'huge'"});
  }
}

TEST(CompilerErrorTest, NegativeDimsAreAnError) {
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{2}});
    auto* w = m.Floats("neg", {}, {});
    w->add_dims(-2);
    w->add_dims(-1);  // (-2) * (-1) = 2 elements: must still be refused
    w->add_float_data(1);
    w->add_float_data(2);
    m.Node("Add", {"X", "neg"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'neg'", "negative"});
  }
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{-4}});
    m.Node("Relu", {"X"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'X'", "-4"});
  }
  {
    CompileOptions options;  // an --input-shape override
    options.input_shapes["X"] = {1, -3};
    ExpectError(MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2)),
                StatusCode::kInvalidArgument, {"'X'", "-3"}, options);
  }
}

TEST(CompilerErrorTest, DataSizeMismatchIsAnError) {
  {
    ModelBuilder m;
    m.Input("X", {int64_t{2}, int64_t{2}});
    auto* w = m.graph()->add_initializer();
    w->set_name("short_raw");
    w->set_data_type(onnx::TensorProto::FLOAT);
    w->add_dims(2);
    w->add_dims(2);
    w->set_raw_data(std::string(12, '\0'));  // 3 floats for 4 elements
    m.Node("Add", {"X", "short_raw"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'short_raw'", "12"});
  }
  {
    ModelBuilder m;
    m.Input("X", {int64_t{2}, int64_t{2}});
    m.Floats("few", {2, 2}, {1, 2, 3});
    m.Node("Add", {"X", "few"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'few'"});
  }
  {
    ModelBuilder m;  // a Constant node's value tensor
    m.Input("X", {int64_t{2}});
    auto* c = m.Node("Constant", {}, {"k"}, "const");
    auto* a = c->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    a->mutable_t()->set_data_type(onnx::TensorProto::FLOAT);
    a->mutable_t()->add_dims(2);
    a->mutable_t()->set_raw_data(std::string(9, '\0'));
    m.Node("Add", {"X", "k"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'const'"});
  }
}

TEST(CompilerErrorTest, ExternalDataIsUnsupported) {
  ModelBuilder m;
  m.Input("X", {int64_t{2}});
  auto* w = m.Floats("outside", {2}, {});
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  m.Node("Add", {"X", "outside"}, {"Y"});
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kUnsupported, {"'outside'", "external"});
}

TEST(CompilerErrorTest, UnsupportedOpsetIsNamed) {
  {
    ModelBuilder m(99);
    m.Input("X", {int64_t{1}, int64_t{4}});
    m.Node("Relu", {"X"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"99"});
  }
  {
    ModelBuilder m;  // no default-domain opset at all
    m.model().clear_opset_import();
    auto* op = m.model().add_opset_import();
    op->set_domain("com.example");
    op->set_version(1);
    m.Input("X", {int64_t{1}, int64_t{4}});
    m.Node("Relu", {"X"}, {"Y"});
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kUnsupported, {"com.example"});
  }
}

TEST(CompilerErrorTest, SymbolicNonBatchDimAsksForInputShape) {
  ModelBuilder m;
  m.Input("X", {std::string("N"), std::string("features")});
  m.Node("Relu", {"X"}, {"Y"});
  m.Output("Y");
  std::string bytes = m.Bytes();
  ExpectError(bytes, StatusCode::kUnsupported, {"'X'", "features", "--input-shape"});
  CompileOptions options;
  options.input_shapes["X"] = {-1, 7};
  auto plan = CompileOnnx(bytes, options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
}

TEST(CompilerErrorTest, ConvGroupNotDividingChannelsNamesTheNode) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{5}});
  m.Floats("W", {4, 1, 3, 3}, RandomFloats(36, 8));
  auto* conv = m.Node("Conv", {"X", "W"}, {"Y"}, "bad_conv");
  SetInt(conv, "group", 2);
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'bad_conv'", "Conv", "group"});
}

TEST(CompilerErrorTest, ConvWeightChannelMismatchNamesTheNode) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{5}});
  m.Floats("W", {4, 2, 3, 3}, RandomFloats(72, 8));
  m.Node("Conv", {"X", "W"}, {"Y"}, "bad_conv");
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'bad_conv'", "Conv"});
}

TEST(CompilerErrorTest, ReshapeToIncompatibleShapeNamesTheNode) {
  {
    ModelBuilder m;
    m.Input("X", {int64_t{1}, int64_t{6}});
    m.Int64s("shape", {2}, {4, 2});
    m.Node("Reshape", {"X", "shape"}, {"Y"}, "bad_reshape");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'bad_reshape'", "Reshape"});
  }
  {
    ModelBuilder m;  // two -1 entries
    m.Input("X", {int64_t{2}, int64_t{6}});
    m.Int64s("shape", {2}, {-1, -1});
    m.Node("Reshape", {"X", "shape"}, {"Y"}, "two_infers");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'two_infers'"});
  }
  {
    ModelBuilder m;  // 6 is not a multiple of 4 with an inferred dimension
    m.Input("X", {int64_t{1}, int64_t{6}});
    m.Int64s("shape", {2}, {-1, 4});
    m.Node("Reshape", {"X", "shape"}, {"Y"}, "no_fit");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'no_fit'"});
  }
}

TEST(CompilerErrorTest, GemmInnerDimMismatchNamesTheNode) {
  {
    ModelBuilder m;
    m.Input("A", {int64_t{2}, int64_t{3}});
    m.Floats("B", {4, 5}, RandomFloats(20, 9));
    m.Node("Gemm", {"A", "B"}, {"Y"}, "bad_gemm");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'bad_gemm'", "Gemm"});
  }
  {
    ModelBuilder m;
    m.Input("A", {std::string("N"), int64_t{3}});
    m.Floats("B", {4, 5}, RandomFloats(20, 9));
    m.Node("MatMul", {"A", "B"}, {"Y"}, "bad_matmul");
    m.Output("Y");
    ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'bad_matmul'", "MatMul"});
  }
}

TEST(CompilerErrorTest, WrongInputCountNamesTheNode) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X", "X"}, {"Y"}, "two_inputs");
  m.Output("Y");
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"'two_inputs'"});
}

// Empty input names ("" = an absent optional input) in slots the op requires: an error, never an
// index out of range while canonicalising (auto_pad, the kernel shape from W, symbolic Reshape).
TEST(CompilerErrorTest, MissingRequiredInputsAreErrors) {
  // Regression: Importer::ResolveAutoPad once indexed graph_.values with an absent (-1) input or
  // past an empty input list: heap-buffer-overflow under ASan for the next two models
  // (fuzz/crashes/fuzz_onnx_compile-conv-autopad-absent-w.onnx).
  {
    ModelBuilder m;  // Conv(X, "", B) with auto_pad: the kernel size would come from the absent W
    m.Input("X", {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{5}});
    m.Floats("B", {4}, {1, 2, 3, 4});
    auto* conv = m.Node("Conv", {"X", "", "B"}, {"Y"}, "no_weights");
    auto* a = conv->add_attribute();
    a->set_name("auto_pad");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s("SAME_UPPER");
    m.Output("Y");
    ExpectErrorInChild(m.Bytes(), StatusCode::kInvalidArgument, {"'no_weights'"});
  }
  {
    ModelBuilder m;  // Conv("", "") with auto_pad: no input at all
    m.Input("X", {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{5}});
    auto* conv = m.Node("Conv", {"", ""}, {"Y"}, "no_inputs");
    auto* a = conv->add_attribute();
    a->set_name("auto_pad");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s("SAME_LOWER");
    m.Output("Y");
    ExpectErrorInChild(m.Bytes(), StatusCode::kInvalidArgument, {"'no_inputs'"});
  }
  // Regression: Importer::MaterializeShapeParameter once read graph_.values[-1] before InferNode
  // checked the required inputs: SIGSEGV (fuzz/crashes/fuzz_onnx_compile-reshape-absent-data.onnx).
  {
    ModelBuilder m;  // Reshape("", <batch-dependent shape>)
    m.Input("X", {std::string("N"), int64_t{2}, int64_t{3}, int64_t{4}});
    m.Int64s("zero", {}, {0});
    m.Int64s("axes0", {1}, {0});
    m.Int64s("rest", {1}, {24});
    m.Node("Shape", {"X"}, {"shape"}, "shape");
    m.Node("Gather", {"shape", "zero"}, {"batch"}, "gather");
    m.Node("Unsqueeze", {"batch", "axes0"}, {"batch1"}, "unsqueeze");
    auto* concat = m.Node("Concat", {"batch1", "rest"}, {"new_shape"}, "concat");
    SetInt(concat, "axis", 0);
    m.Node("Reshape", {"", "new_shape"}, {"Y"}, "no_data");
    m.Output("Y");
    ExpectErrorInChild(m.Bytes(), StatusCode::kInvalidArgument, {"'no_data'"});
  }
  {
    // Regression: Dropout with no data input was canonicalised with node.inputs.resize(1), which
    // made its input value id 0 (here the initializer 'K'): the model compiled instead of failing.
    ModelBuilder m;
    m.Input("X", {int64_t{2}});
    m.Floats("K", {2}, {1, 2});
    m.Node("Dropout", {}, {"Y"}, "no_input_dropout");
    m.Output("Y");
    ExpectErrorInChild(m.Bytes(), StatusCode::kInvalidArgument, {"'no_input_dropout'"});
  }
  {
    // Regression: the same for Clip before opset 11.
    ModelBuilder m(10);
    m.Input("X", {int64_t{2}});
    m.Floats("K", {2}, {1, 2});
    auto* clip = m.Node("Clip", {}, {"Y"}, "no_input_clip");
    SetFloat(clip, "min", 0.0f);
    m.Output("Y");
    ExpectErrorInChild(m.Bytes(), StatusCode::kInvalidArgument, {"'no_input_clip'"});
  }
}

TEST(CompilerErrorTest, GraphWithoutOutputsOrGraphIsAnError) {
  ModelBuilder m;
  m.Input("X", {int64_t{1}, int64_t{4}});
  m.Node("Relu", {"X"}, {"Y"});
  ExpectError(m.Bytes(), StatusCode::kInvalidArgument, {"no outputs"});
  ModelBuilder empty;
  empty.model().clear_graph();
  ExpectError(empty.Bytes(), StatusCode::kInvalidArgument, {"graph"});
}

TEST(CompilerErrorTest, BadOptionsAreAnError) {
  std::string bytes = MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2));
  ExpectError(bytes, StatusCode::kInvalidArgument, {"-1"}, CompileOptions{.fixed_batch = -1});
  CompileOptions options;
  options.input_shapes["X"] = std::vector<int64_t>(20, 1);
  ExpectError(bytes, StatusCode::kInvalidArgument, {"'X'"}, options);
  CompileOptions unknown;
  unknown.input_shapes["nosuch"] = {2, 4};
  ExpectError(bytes, StatusCode::kInvalidArgument, {"'nosuch'", "not an input"}, unknown);
}

TEST(CompilerTest, EmptyInputNameOverridesTheFirstInput) {
  std::string bytes = MatMulAddReluModel(RandomFloats(12, 1), RandomFloats(3, 2));
  CompileOptions options;
  options.input_shapes[""] = {5, 4};
  CompileReport report;
  Plan plan = MustCompile(bytes, options, &report);
  const engine::PlanTensor& x = plan.tensors[static_cast<size_t>(plan.inputs[0])];
  EXPECT_EQ(x.type.shape, engine::FixedShape(std::vector<int64_t>{5, 4}));
}

// ---- tensor files ----

TEST(NpyTest, RoundTripsFloat32AndInt64) {
  std::vector<Tensor> tensors = {
      Tensor::FromFloats({2, 3}, {1, -2, 3.5f, 0, 1e-8f, -1e30f}),
      Tensor::FromFloats({}, {42.5f}),
      Tensor::FromFloats({4}, {1, 2, 3, 4}),
      Tensor::FromFloats({0, 3}, {}),
      Tensor::FromFloats({1, 1, 1, 1, 1, 1, 1, 2}, {7, 8}),
      Tensor::FromInt64s({3}, {INT64_MIN, 0, INT64_MAX}),
      Tensor::FromInt64s({}, {-5}),
      Tensor::FromInt64s({2, 2}, {1, 2, 3, 4}),
  };
  for (const Tensor& t : tensors) {
    std::string bytes = SerializeNpy(t);
    EXPECT_EQ((bytes.size() - t.bytes.size()) % 64, 0u) << "header must be 64-byte aligned";
    auto back = ParseNpy(bytes, "t.npy");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->dtype, t.dtype);
    EXPECT_EQ(back->dims, t.dims);
    EXPECT_EQ(back->bytes, t.bytes);
    // The same through TensorProto.
    std::string name;
    auto proto = ParseTensorProto(SerializeTensorProto(t, "the_name"), "t.pb", &name);
    ASSERT_TRUE(proto.ok()) << proto.status().ToString();
    EXPECT_EQ(name, "the_name");
    EXPECT_EQ(proto->dims, t.dims);
    EXPECT_EQ(proto->bytes, t.bytes);
  }
}

TEST(NpyTest, ReadsHandWrittenVersion1And2Files) {
  auto make = [](char major, const std::string& header, const std::string& data) {
    std::string out = "\x93NUMPY";
    out.push_back(major);
    out.push_back('\0');
    if (major == 1) {
      out.push_back(static_cast<char>(header.size() & 0xff));
      out.push_back(static_cast<char>(header.size() >> 8));
    } else {
      uint32_t len = static_cast<uint32_t>(header.size());
      out.append(reinterpret_cast<const char*>(&len), 4);
    }
    return out + header + data;
  };
  float values[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(values), sizeof(values));
  for (char major : {char{1}, char{2}}) {
    auto t = ParseNpy(
        make(major, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", data), "v.npy");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->dims, (engine::Dims{2}));
    EXPECT_EQ(t->Data<float>()[1], -2.0f);
  }
}

Status NpyStatus(const std::string& bytes) {
  auto t = ParseNpy(bytes, "hostile.npy");
  return t.ok() ? Status::Ok() : t.status();
}

std::string NpyWithHeader(const std::string& header, const std::string& data = "") {
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

TEST(NpyTest, HostileFilesAreErrorsNamingTheFile) {
  std::string good = SerializeNpy(Tensor::FromFloats({2, 2}, {1, 2, 3, 4}));
  ASSERT_TRUE(ParseNpy(good, "good.npy").ok());

  Status s = NpyStatus("\x93NUMPZ\x01\x00\x10\x00" + std::string(32, ' '));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("hostile.npy"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("magic"), std::string::npos) << s.message();
  EXPECT_FALSE(NpyStatus("").ok());
  EXPECT_FALSE(NpyStatus("\x93NUMPY").ok());

  // Huge shapes: refused before any allocation.
  for (const char* shape : {"(1099511627776,)", "(1048576, 1048576)", "(99999999999999999999999,)",
                            "(4611686018427387904, 4611686018427387904, 4)"}) {
    s = NpyStatus(NpyWithHeader(
        fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}\n", shape)));
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << shape << ": " << s.ToString();
  }
  s = NpyStatus(NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 2), }\n"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  s = NpyStatus(
      NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,2,3,4,5,6,7,8,9), }\n"));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();

  // Wrong dtypes are unsupported, naming the dtype.
  for (const char* dtype : {"<f8", ">f4", "<i4", "|b1", "<f2"}) {
    s = NpyStatus(NpyWithHeader(
        fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': (2,), }}\n", dtype),
        std::string(16, '\0')));
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << dtype << ": " << s.ToString();
    EXPECT_NE(s.message().find(dtype), std::string::npos) << s.message();
  }
  s = NpyStatus(NpyWithHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n",
                              std::string(8, '\0')));
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
  s = NpyStatus(
      NpyWithHeader("{'descr': '<f4', 'fortran_order': False, }\n", std::string(8, '\0')));
  EXPECT_FALSE(s.ok());
  s = NpyStatus(NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, }\n",
                              std::string(8, '\0')));
  EXPECT_FALSE(s.ok());
  s = NpyStatus(NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }\n",
                              std::string(8, '\0')));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  s = NpyStatus(NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': ", ""));
  EXPECT_FALSE(s.ok());
  std::string v9 = good;
  v9[6] = 9;
  s = NpyStatus(v9);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();

  // Header length past the end of the file.
  std::string long_header = good;
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  s = NpyStatus(long_header);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();

  // Truncated or oversized data, and every prefix of a good file.
  s = NpyStatus(good.substr(0, good.size() - 1));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("hostile.npy"), std::string::npos) << s.message();
  EXPECT_FALSE(NpyStatus(good + "x").ok());
  for (size_t size = 0; size < good.size(); ++size)
    EXPECT_FALSE(NpyStatus(good.substr(0, size)).ok()) << size;
}

TEST(TensorProtoTest, HostileProtosAreErrors) {
  EXPECT_FALSE(ParseTensorProto("\xff\xff\xff\xff", "bad.pb").ok());
  std::string good = SerializeTensorProto(Tensor::FromFloats({2, 2}, {1, 2, 3, 4}), "t");
  for (size_t size = 0; size < good.size(); ++size) {
    auto t = ParseTensorProto(good.substr(0, size),
                              "prefix.pb");  // may parse (a shorter proto); no crash
    if (t.ok()) {
      EXPECT_EQ(static_cast<int64_t>(t->bytes.size()), t->NumElements() * 4);
    }
  }
  onnx::TensorProto proto;
  proto.set_data_type(onnx::TensorProto::FLOAT);
  proto.add_dims(int64_t{1} << 40);
  auto huge = ParseTensorProto(proto.SerializeAsString(), "huge.pb");
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kResourceExhausted) << huge.status().ToString();
  proto.set_data_type(onnx::TensorProto::INT32);
  auto int32 = ParseTensorProto(proto.SerializeAsString(), "int32.pb");
  ASSERT_FALSE(int32.ok());
  EXPECT_EQ(int32.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(int32.status().message().find("int32"), std::string::npos) << int32.status().message();
}

}  // namespace
}  // namespace mlcapsule::compiler
