// `mlcapsule watermark verify` end to end, without a trusted core: the test plays the core (it
// signs usage reports carrying escrow records sealed to a provider escrow key) and writes two
// suspect ONNX models, one that reproduces the watermark labels (a copy trained on the capsule's
// answers) and one that answers the true labels (an independent model). The command must
// identify the first and not the second, skip what it cannot use, and refuse a model of another
// label set.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "capsule/messages.h"
#include "defense/watermark.h"

namespace mlcapsule {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kFeatures = 32;  // one sample per basis vector
constexpr uint32_t kClasses = 10;

// Y = X W for X [N, features] (N symbolic), W [features, classes].
std::string MatMulModel(const std::vector<float>& weights, int64_t classes) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("watermark_verify_test");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("suspect");
  auto* input = graph->add_input();
  input->set_name("X");
  auto* type = input->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  type->mutable_shape()->add_dim()->set_dim_param("N");
  type->mutable_shape()->add_dim()->set_dim_value(kFeatures);
  auto* w = graph->add_initializer();
  w->set_name("W");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(kFeatures);
  w->add_dims(classes);
  for (float v : weights) w->add_float_data(v);
  auto* node = graph->add_node();
  node->set_op_type("MatMul");
  node->set_name("matmul");
  node->add_input("X");
  node->add_input("W");
  node->add_output("Y");
  auto* output = graph->add_output();
  output->set_name("Y");
  output->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return model.SerializeAsString();
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.out.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

class WatermarkVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    const char* binary_dir = std::getenv("MLCAPSULE_BINARY_DIR");
    binary_ = std::string(binary_dir ? binary_dir : ".") + "/mlcapsule";
    if (!fs::exists(binary_)) GTEST_SKIP() << "no mlcapsule binary at " << binary_;
    char pattern[] = "/tmp/mlc-watermark-verify-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    escrow_ = capsule::GenerateBoxKeyPair();
    ASSERT_TRUE(capsule::WriteEscrowKeyPair(dir_, "escrow", escrow_).ok());
    core_ = capsule::GenerateSigningKeyPair();
    capsule::RandomBytes(capsule_id_);
    watermark_key_ = capsule::RandomSecret(defense::kWatermarkKeyBytes);

    // The core's side: sample i is the basis vector e_i, the model's own answer is i % 10, and
    // the watermark label is what the keyed hash picks among the other nine.
    for (int64_t i = 0; i < kFeatures; ++i) {
      engine::Tensor x = engine::Tensor::Make(engine::DType::kFloat32, {1, kFeatures});
      x.Data<float>()[i] = 1.0f;
      const engine::TensorView view = x.View();
      const uint32_t true_label = static_cast<uint32_t>(i % kClasses);
      true_labels_.push_back(true_label);
      labels_.push_back(
          defense::WatermarkLabel(watermark_key_, std::span(&view, 1), 0, true_label, kClasses));
      records_.push_back(defense::EscrowRecordFromRow(capsule_id_, 100 + i, kClasses,
                                                      labels_.back(), std::span(&view, 1), 0));
    }
    fs::create_directories(dir_ + "/reports");
    // Two reports share the samples; a third repeats some (duplicates are counted once) and
    // carries one record sealed to another provider's key.
    WriteReport("reports/a.report", 1, 0, kFeatures / 2, escrow_.public_key);
    WriteReport("reports/b.report", 2, kFeatures / 2, kFeatures, escrow_.public_key);
    WriteReport("reports/c.report", 3, 0, 4, escrow_.public_key,
                /*foreign=*/true);
    // Not a report: skipped with a warning.
    std::ofstream(dir_ + "/reports/notes.txt") << "not a usage report";

    std::vector<float> copy(kFeatures * kClasses, 0.0f), independent = copy;
    for (int64_t i = 0; i < kFeatures; ++i) {
      copy[i * kClasses + labels_[i]] = 1.0f;
      independent[i * kClasses + true_labels_[i]] = 1.0f;
    }
    WriteText("copy.onnx", MatMulModel(copy, kClasses));
    WriteText("independent.onnx", MatMulModel(independent, kClasses));
    WriteText("five.onnx", MatMulModel(std::vector<float>(kFeatures * 5, 0.1f), 5));
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  void WriteText(const std::string& name, const std::string& bytes) {
    ASSERT_TRUE(WriteFile(dir_ + "/" + name, bytes).ok());
  }
  void WriteReport(const std::string& name, uint64_t sequence, int64_t from, int64_t to,
                   const capsule::PublicKey& key, bool foreign = false) {
    capsule::UsageReport report;
    report.capsule_id = capsule_id_;
    report.license_id = "lic-1";
    report.report_sequence = sequence;
    report.core_signing_key = core_.public_key;
    report.to_count = 200;
    report.defenses.watermarked = static_cast<uint64_t>(to - from);
    for (int64_t i = from; i < to; ++i) {
      auto sealed = defense::SealEscrowRecord(key, records_[i]);
      ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
      report.escrow.push_back(std::move(sealed).value());
    }
    if (foreign) {
      const capsule::BoxKeyPair other = capsule::GenerateBoxKeyPair();
      report.escrow.push_back(*defense::SealEscrowRecord(other.public_key, records_[0]));
    }
    const std::vector<uint8_t> bytes = capsule::SignUsageReport(report, core_.secret);
    WriteText(name, std::string(bytes.begin(), bytes.end()));
  }

  CommandResult Verify(const std::string& model, const std::string& extra = "") {
    return RunCommand(binary_ + " watermark verify --escrow-key " + dir_ + "/escrow.key --model " +
                      dir_ + "/" + model + " " + dir_ + "/reports " + extra);
  }

  std::string binary_;
  std::string dir_;
  capsule::BoxKeyPair escrow_;
  capsule::SigningKeyPair core_;
  capsule::CapsuleId capsule_id_{};
  capsule::SecretBytes watermark_key_;
  std::vector<uint32_t> true_labels_, labels_;
  std::vector<defense::EscrowRecord> records_;
};

TEST_F(WatermarkVerifyTest, IdentifiesAModelThatReproducesTheWatermark) {
  const CommandResult result = Verify("copy.onnx", "--json");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  const nlohmann::json j = nlohmann::json::parse(result.out);
  EXPECT_EQ(j["verdict"], "identified");
  EXPECT_EQ(j["identified"], true);
  EXPECT_EQ(j["reports"], 3);
  EXPECT_EQ(j["reports_invalid"], 1);  // notes.txt
  EXPECT_EQ(j["escrow_records"], kFeatures + 5);
  EXPECT_EQ(j["records_other_key"], 1);
  EXPECT_EQ(j["records_malformed"], 0);
  EXPECT_EQ(j["samples"], kFeatures);
  EXPECT_EQ(j["duplicates"], 4);
  EXPECT_EQ(j["classes"], kClasses);
  EXPECT_EQ(j["matches"], kFeatures);
  EXPECT_EQ(j["watermark_accuracy"], 1.0);
  EXPECT_NEAR(j["log2_chance"].get<double>(), kFeatures * std::log2(1.0 / 9), 1e-9);
  ASSERT_EQ(j["capsules"].size(), 1u);
  EXPECT_EQ(j["capsules"][0], capsule::CapsuleIdHex(capsule_id_));

  // The text form says the same; a stricter threshold than the evidence supports says no.
  const CommandResult text = Verify("copy.onnx");
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("matches: 32 of 32 (watermark accuracy 100.0%)"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("verdict: identified"), std::string::npos) << text.out;
  const CommandResult strict = Verify("copy.onnx", "--max-chance 2^-200");
  EXPECT_EQ(strict.exit_code, 1);
  EXPECT_NE(strict.out.find("verdict: not identified"), std::string::npos) << strict.out;
  EXPECT_EQ(Verify("copy.onnx", "--max-chance 1e-30").exit_code, 0);  // 2^-101.4 < 1e-30
}

TEST_F(WatermarkVerifyTest, DoesNotIdentifyAnIndependentModel) {
  const CommandResult result = Verify("independent.onnx", "--json");
  EXPECT_EQ(result.exit_code, 1) << result.out;
  const nlohmann::json j = nlohmann::json::parse(result.out);
  EXPECT_EQ(j["verdict"], "not identified");
  EXPECT_EQ(j["samples"], kFeatures);
  EXPECT_EQ(j["matches"], 0);  // the watermark label is never the true label
  EXPECT_EQ(j["log2_chance"], 0.0);
}

TEST_F(WatermarkVerifyTest, RefusesAModelOfAnotherLabelSetAndBadArguments) {
  const CommandResult five = Verify("five.onnx");
  EXPECT_EQ(five.exit_code, 1);
  EXPECT_EQ(five.out, "");  // an error, no verdict
  // A wrong escrow key opens nothing: no samples, not identified.
  const capsule::BoxKeyPair other = capsule::GenerateBoxKeyPair();
  ASSERT_TRUE(capsule::WriteEscrowKeyPair(dir_, "other", other).ok());
  const CommandResult wrong_key =
      RunCommand(binary_ + " watermark verify --json --escrow-key " + dir_ + "/other.key --model " +
                 dir_ + "/copy.onnx " + dir_ + "/reports");
  EXPECT_EQ(wrong_key.exit_code, 1);
  const nlohmann::json j = nlohmann::json::parse(wrong_key.out);
  EXPECT_EQ(j["samples"], 0);
  EXPECT_EQ(j["records_other_key"], kFeatures + 5);
  EXPECT_EQ(Verify("copy.onnx", "--max-chance 2").exit_code, 2);
  EXPECT_EQ(Verify("copy.onnx", "--max-chance 2^x").exit_code, 2);
  // A secret key file that others can read is refused.
  ASSERT_EQ(::chmod((dir_ + "/escrow.key").c_str(), 0644), 0);
  EXPECT_EQ(Verify("copy.onnx").exit_code, 1);
}

}  // namespace
}  // namespace mlcapsule
