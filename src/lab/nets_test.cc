// The lab's models: ONNX export through our own writer compiles and computes what libtorch
// computes (every architecture the lab packs into capsules), save/load round trips, and training
// fits a small set.
#include "lab/nets.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "compiler/compiler.h"
#include "engine/session.h"

namespace mlcapsule::lab {
namespace {

// Runs the exported model in our engine on x and returns the first output.
torch::Tensor EngineForward(Net& net, const torch::Tensor& x) {
  Result<std::string> onnx = ExportOnnx(net);
  EXPECT_TRUE(onnx.ok()) << onnx.status().ToString();
  Result<engine::Plan> plan = compiler::CompileOnnx(*onnx, compiler::CompileOptions{});
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  auto session = engine::Session::Create(std::move(plan).value());
  EXPECT_TRUE(session.ok());
  torch::Tensor input = x.contiguous();
  engine::Dims dims(input.sizes().begin(), input.sizes().end());
  engine::TensorView view{engine::DType::kFloat32, dims, input.data_ptr<float>()};
  std::vector<engine::Tensor> outputs;
  Status s = (*session)->Run({view}, &outputs);
  EXPECT_TRUE(s.ok()) << s.ToString();
  const engine::Tensor& out = outputs.at(0);
  std::vector<int64_t> shape(out.dims.begin(), out.dims.end());
  return torch::from_blob(const_cast<float*>(out.Data<float>()), shape, torch::kFloat).clone();
}

class NetsTest : public ::testing::Test {
 protected:
  void SetUp() override { InitTorchForLab(); }
};

TEST_F(NetsTest, ExportedImageModelsMatchLibtorch) {
  torch::Tensor x =
      torch::rand({7, 1, 28, 28}, torch::Generator(at::detail::createCPUGenerator(3)));
  for (const ArchSpec& spec : {CnnA(), CnnB(), Mlp()}) {
    Net net = MakeNet(spec, 11);
    torch::Tensor want = Predict(net, x);
    torch::Tensor got = EngineForward(net, x);
    ASSERT_EQ(got.sizes(), want.sizes()) << spec.Name();
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-4) << spec.Name();
    EXPECT_TRUE(got.argmax(1).equal(want.argmax(1))) << spec.Name();
  }
}

TEST_F(NetsTest, ExportedMembershipClassifierMatchesLibtorch) {
  Net net = MakeNet(MembershipClassifier(10), 5);
  torch::Tensor p = torch::softmax(
      torch::randn({9, 10}, torch::Generator(at::detail::createCPUGenerator(4))) * 4, 1);
  p[0].fill_(0);
  p[0][3] = 1;  // zeros go through the Clip before the Log
  torch::Tensor want = Predict(net, p);
  torch::Tensor got = EngineForward(net, p);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(((want >= 0) & (want <= 1)).all().item<bool>());
}

TEST_F(NetsTest, TanhMlpExports) {
  ArchSpec spec = Mlp();
  spec.tanh = true;
  spec.hidden = {64, 64, 64};
  Net net = MakeNet(spec, 2);
  torch::Tensor x =
      torch::rand({3, 1, 28, 28}, torch::Generator(at::detail::createCPUGenerator(1)));
  EXPECT_LT((EngineForward(net, x) - Predict(net, x)).abs().max().item<double>(), 1e-4);
}

TEST_F(NetsTest, SameSeedSameWeightsAndSaveLoadRoundTrip) {
  Net a = MakeNet(CnnB(), 42), b = MakeNet(CnnB(), 42), c = MakeNet(CnnB(), 43);
  torch::Tensor x =
      torch::rand({2, 1, 28, 28}, torch::Generator(at::detail::createCPUGenerator(9)));
  EXPECT_TRUE(Predict(a, x).equal(Predict(b, x)));
  EXPECT_FALSE(Predict(a, x).equal(Predict(c, x)));
  const std::string path = ::testing::TempDir() + "/nets_test_model.pt";
  ASSERT_TRUE(SaveNet(a, path).ok());
  ASSERT_TRUE(LoadNet(c, path).ok());
  EXPECT_TRUE(Predict(a, x).equal(Predict(c, x)));
  // A corrupt file is an error, not an exception.
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    std::fputs("not a model", f);
    std::fclose(f);
  }
  Status bad = LoadNet(c, path);
  EXPECT_EQ(bad.code(), StatusCode::kDataLoss) << bad.ToString();
  std::filesystem::remove(path);
}

TEST_F(NetsTest, TrainingFitsHardAndSoftTargets) {
  auto gen = torch::Generator(at::detail::createCPUGenerator(7));
  torch::Tensor x = torch::rand({64, 1, 28, 28}, gen);
  torch::Tensor y = torch::randint(0, 10, {64}, gen);
  Net net = MakeNet(Mlp(), 1);
  TrainOptions t;
  t.epochs = 60;
  t.batch = 16;
  ASSERT_TRUE(Train(net, x, y, t, "test").ok());
  EXPECT_GT(Accuracy(net, x, y), 0.95);  // memorises 64 random labels
  // Soft targets: the model's argmax follows the targets' argmax.
  torch::Tensor soft = torch::one_hot(y, 10).to(torch::kFloat) * 0.7 + 0.03;
  Net student = MakeNet(CnnB(), 2);
  ASSERT_TRUE(Train(student, x, soft, t, "test").ok());
  EXPECT_GT(Agreement(Predict(student, x), soft), 0.9);
  // Mismatched targets are refused.
  EXPECT_FALSE(Train(net, x, y.slice(0, 0, 10), t, "test").ok());
}

TEST_F(NetsTest, CloneWithNewHeadKeepsTheBody) {
  ArchSpec glyphs = CnnB();
  glyphs.classes = 62;
  Net backbone = MakeNet(glyphs, 3);
  Net clone = CloneWithNewHead(backbone, 10, 4);
  torch::Tensor x =
      torch::rand({2, 1, 28, 28}, torch::Generator(at::detail::createCPUGenerator(2)));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(backbone->features(x).equal(clone->features(x)));
  EXPECT_EQ(clone->forward(x).size(1), 10);
  EXPECT_EQ(backbone->forward(x).size(1), 62);
}

}  // namespace
}  // namespace mlcapsule::lab
