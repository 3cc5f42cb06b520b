// The C API (include/mlcapsule/mlcapsule.h) through libmlcapsule.so, as an application sees it:
// every NULL argument is refused with MLC_ERR_INVALID_ARGUMENT and a message naming it, output
// parameters are cleared on failure, mlc_last_error is per thread. The licensed path runs when the
// software TEE's mlcapsule-core is built beside the library (skipped otherwise).
#include "mlcapsule/mlcapsule.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "host/test_capsule.h"

namespace {

namespace fs = std::filesystem;

std::string LastError() { return mlc_last_error(); }

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class CApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlc-c-api-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    mlc_options_init(&options_);
    state_dir_ = (dir_ / "state").string();
    options_.state_dir = state_dir_.c_str();
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::string state_dir_;
  mlc_options options_;
};

TEST(CApiBasics, VersionNamesAndSizes) {
  EXPECT_EQ(mlc_api_version(), MLCAPSULE_API_VERSION);
  EXPECT_STRNE(mlc_version_string(), "");
  EXPECT_STREQ(mlc_status_name(MLC_OK), "ok");
  EXPECT_STREQ(mlc_status_name(MLC_ERR_INVALID_ARGUMENT), "invalid argument");
  EXPECT_STREQ(mlc_status_name(MLC_ERR_RESOURCE_EXHAUSTED), "resource exhausted");
  EXPECT_STREQ(mlc_status_name(MLC_ERR_INTERNAL), "internal error");
  EXPECT_STREQ(mlc_status_name(MLC_ERR_UNAVAILABLE), "unavailable");
  EXPECT_STREQ(mlc_status_name(static_cast<mlc_status>(14)), "unknown");
  EXPECT_EQ(mlc_dtype_size(MLC_DTYPE_FLOAT32), 4u);
  EXPECT_EQ(mlc_dtype_size(MLC_DTYPE_INT64), 8u);
  EXPECT_EQ(mlc_dtype_size(static_cast<mlc_dtype>(3)), 0u);
  EXPECT_STREQ(mlc_dtype_name(MLC_DTYPE_FLOAT32), "float32");
  EXPECT_STREQ(mlc_dtype_name(static_cast<mlc_dtype>(3)), "unknown");
}

TEST(CApiBasics, OptionsInit) {
  mlc_options options;
  std::memset(&options, 0xAB, sizeof(options));
  mlc_options_init(&options);
  EXPECT_EQ(options.struct_size, sizeof(mlc_options));
  EXPECT_EQ(options.state_dir, nullptr);
  EXPECT_EQ(options.threads, 1);
  EXPECT_EQ(options.core_binary, nullptr);
  mlc_options_init(nullptr);  // allowed, does nothing
}

TEST_F(CApiTest, OpenRefusesNullArguments) {
  mlc_client* client = reinterpret_cast<mlc_client*>(0x1);
  EXPECT_EQ(mlc_client_open("x.capsule", &options_, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "out is NULL")) << LastError();

  EXPECT_EQ(mlc_client_open(nullptr, &options_, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(client, nullptr);
  EXPECT_TRUE(Contains(LastError(), "capsule_path is NULL")) << LastError();

  EXPECT_EQ(mlc_client_open("x.capsule", nullptr, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "options is NULL")) << LastError();

  EXPECT_EQ(mlc_client_open("", &options_, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "capsule_path is empty")) << LastError();
}

TEST_F(CApiTest, OpenChecksOptions) {
  mlc_client* client = nullptr;
  mlc_options options = options_;
  options.struct_size = 0;
  EXPECT_EQ(mlc_client_open("x.capsule", &options, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "mlc_options_init")) << LastError();

  options = options_;
  options.state_dir = nullptr;
  EXPECT_EQ(mlc_client_open("x.capsule", &options, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "state_dir")) << LastError();
  options.state_dir = "";
  EXPECT_EQ(mlc_client_open("x.capsule", &options, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "state_dir")) << LastError();

  options = options_;
  options.threads = 0;
  EXPECT_EQ(mlc_client_open("x.capsule", &options, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "threads is 0")) << LastError();
  options.threads = 100000;
  EXPECT_EQ(mlc_client_open("x.capsule", &options, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(client, nullptr);
}

TEST_F(CApiTest, OpenMissingFileNamesThePath) {
  const std::string path = (dir_ / "no-such-model.capsule").string();
  mlc_client* client = reinterpret_cast<mlc_client*>(0x1);
  EXPECT_EQ(mlc_client_open(path.c_str(), &options_, &client), MLC_ERR_NOT_FOUND);
  EXPECT_EQ(client, nullptr);
  EXPECT_TRUE(Contains(LastError(), path)) << LastError();
  EXPECT_FALSE(fs::exists(state_dir_)) << "nothing is created for a capsule that is not there";
}

TEST_F(CApiTest, OpenDirectoryOrGarbageFails) {
  mlc_client* client = nullptr;
  const std::string directory = dir_.string();
  EXPECT_EQ(mlc_client_open(directory.c_str(), &options_, &client), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), directory)) << LastError();

  const std::string garbage = (dir_ / "garbage.capsule").string();
  std::ofstream(garbage) << "this is not a capsule";
  mlc_status status = mlc_client_open(garbage.c_str(), &options_, &client);
  EXPECT_NE(status, MLC_OK);
  EXPECT_EQ(client, nullptr);
  EXPECT_TRUE(Contains(LastError(), garbage)) << LastError();
}

TEST(CApiBasics, EveryClientCallRefusesNullClient) {
  mlc_state state = MLC_STATE_READY;
  EXPECT_EQ(mlc_client_state(nullptr, &state), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(state, MLC_STATE_NEEDS_LEASE);
  EXPECT_TRUE(Contains(LastError(), "mlc_client_state: client is NULL")) << LastError();

  mlc_quota quota;
  std::memset(&quota, 0xAB, sizeof(quota));
  EXPECT_EQ(mlc_client_quota(nullptr, &quota), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(quota.query_quota, 0u);
  EXPECT_EQ(quota.queries_left, 0u);

  const char* text = "untouched";
  EXPECT_EQ(mlc_client_capsule_id(nullptr, &text), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(text, nullptr);
  EXPECT_EQ(mlc_client_model_name(nullptr, &text), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_license_id(nullptr, &text), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_policy_json(nullptr, &text), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_backend(nullptr, &text), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "mlc_client_backend: client is NULL")) << LastError();

  size_t count = 5;
  EXPECT_EQ(mlc_client_input_count(nullptr, &count), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(count, 0u);
  EXPECT_EQ(mlc_client_output_count(nullptr, &count), MLC_ERR_INVALID_ARGUMENT);
  mlc_tensor_info info;
  std::memset(&info, 0xAB, sizeof(info));
  EXPECT_EQ(mlc_client_input_info(nullptr, 0, &info), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(info.name, nullptr);
  EXPECT_EQ(info.rank, 0u);
  EXPECT_EQ(mlc_client_output_info(nullptr, 0, &info), MLC_ERR_INVALID_ARGUMENT);

  uint8_t nonce[MLC_NONCE_BYTES] = {};
  mlc_buffer buffer = {reinterpret_cast<uint8_t*>(0x1), 7};
  EXPECT_EQ(mlc_client_evidence_request(nullptr, nonce, 0, &buffer), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(buffer.data, nullptr);
  EXPECT_EQ(buffer.size, 0u);
  uint8_t lease[16] = {};
  EXPECT_EQ(mlc_client_install_lease(nullptr, lease, sizeof(lease)), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_usage_report(nullptr, &buffer), MLC_ERR_INVALID_ARGUMENT);

  float data[8] = {};
  mlc_tensor input = {MLC_DTYPE_FLOAT32, 2, {1, 8}, data, sizeof(data), nullptr};
  mlc_tensor* outputs = reinterpret_cast<mlc_tensor*>(0x1);
  EXPECT_EQ(mlc_client_infer(nullptr, &input, 1, &outputs, &count), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(outputs, nullptr);
  EXPECT_TRUE(Contains(LastError(), "mlc_client_infer: client is NULL")) << LastError();
}

TEST(CApiBasics, NullOutputParameters) {
  // A NULL `out` is reported before the (also NULL) client: the message names it.
  EXPECT_EQ(mlc_client_state(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "mlc_client_state: out is NULL")) << LastError();
  EXPECT_EQ(mlc_client_quota(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_capsule_id(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_input_count(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_input_info(nullptr, 0, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_evidence_request(nullptr, nullptr, 0, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_usage_report(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  size_t count = 0;
  EXPECT_EQ(mlc_client_infer(nullptr, nullptr, 0, nullptr, &count), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "outputs is NULL")) << LastError();
  mlc_tensor* outputs = nullptr;
  EXPECT_EQ(mlc_client_infer(nullptr, nullptr, 0, &outputs, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "output_count is NULL")) << LastError();
}

TEST(CApiBasics, FreeFunctionsTolerateNullAndForeignPointers) {
  mlc_buffer_free(nullptr);
  mlc_buffer buffer = {nullptr, 0};
  mlc_buffer_free(&buffer);
  EXPECT_EQ(buffer.data, nullptr);
  mlc_tensors_free(nullptr);
  mlc_tensor not_ours[1] = {};
  mlc_tensors_free(not_ours);
  EXPECT_TRUE(Contains(LastError(), "not an array returned by mlc_client_infer")) << LastError();
  EXPECT_EQ(mlc_client_close(nullptr), MLC_OK);
}

TEST(CApiBasics, LastErrorIsClearedOnSuccessAndPerThread) {
  EXPECT_EQ(mlc_client_state(nullptr, nullptr), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(LastError().empty());
  std::string other_thread = "unset";
  std::thread([&] { other_thread = mlc_last_error(); }).join();
  EXPECT_EQ(other_thread, "");
  EXPECT_FALSE(LastError().empty()) << "another thread's call does not touch this thread's";
  EXPECT_EQ(mlc_client_close(nullptr), MLC_OK);
  EXPECT_EQ(LastError(), "");
}

// The whole path through the software TEE process: needs build/mlcapsule-core.
TEST_F(CApiTest, LicensedCapsuleThroughTheCoreProcess) {
  const char* binary_dir = std::getenv("MLCAPSULE_BINARY_DIR");
  const fs::path core = fs::path(binary_dir ? binary_dir : ".") / "mlcapsule-core";
  if (!fs::exists(core)) GTEST_SKIP() << core << " is not built";
  const std::string core_path = core.string();
  options_.core_binary = core_path.c_str();

  using mlcapsule::testing::TestProvider;
  TestProvider provider = TestProvider::Make(
      mlcapsule::testing::ClassifierPlan(mlcapsule::testing::DefaultClassifierWeights()),
      mlcapsule::testing::kDefaultTestPolicy);
  const std::string capsule_path = (dir_ / "model.capsule").string();
  std::ofstream(capsule_path, std::ios::binary)
      .write(reinterpret_cast<const char*>(provider.packed.bytes.data()),
             static_cast<std::streamsize>(provider.packed.bytes.size()));

  mlc_client* client = nullptr;
  ASSERT_EQ(mlc_client_open(capsule_path.c_str(), &options_, &client), MLC_OK) << LastError();
  mlc_state state = MLC_STATE_READY;
  ASSERT_EQ(mlc_client_state(client, &state), MLC_OK);
  EXPECT_EQ(state, MLC_STATE_NEEDS_LEASE);
  const char* text = nullptr;
  ASSERT_EQ(mlc_client_model_name(client, &text), MLC_OK);
  EXPECT_STREQ(text, "test_classifier");
  ASSERT_EQ(mlc_client_capsule_id(client, &text), MLC_OK);
  EXPECT_EQ(std::strlen(text), 32u);
  size_t count = 0;
  ASSERT_EQ(mlc_client_input_count(client, &count), MLC_OK);
  ASSERT_EQ(count, 1u);
  mlc_tensor_info info{};
  ASSERT_EQ(mlc_client_input_info(client, 0, &info), MLC_OK);
  EXPECT_STREQ(info.name, "input");
  EXPECT_EQ(info.rank, 2u);
  EXPECT_EQ(info.batch_mask, 1u);
  EXPECT_EQ(info.dims[1], mlcapsule::testing::kClassifierInputs);
  EXPECT_EQ(mlc_client_input_info(client, 1, &info), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "input index 1 is out of range")) << LastError();

  float data[mlcapsule::testing::kClassifierInputs] = {1, 0, 0, 0, 0, 0, 0, 0};
  mlc_tensor input = {MLC_DTYPE_FLOAT32, 2, {1, 8}, data, sizeof(data), nullptr};
  mlc_tensor* outputs = nullptr;
  EXPECT_EQ(mlc_client_infer(client, &input, 1, &outputs, &count), MLC_ERR_FAILED_PRECONDITION);
  EXPECT_TRUE(Contains(LastError(), "lease")) << LastError();

  uint8_t nonce[MLC_NONCE_BYTES] = {1, 2, 3};
  mlc_buffer request{};
  ASSERT_EQ(mlc_client_evidence_request(client, nonce, 0, &request), MLC_OK) << LastError();
  auto lease = provider.Lease(std::span<const uint8_t>(request.data, request.size), 2);
  mlc_buffer_free(&request);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_EQ(mlc_client_install_lease(client, lease->data(), lease->size()), MLC_OK) << LastError();
  ASSERT_EQ(mlc_client_state(client, &state), MLC_OK);
  EXPECT_EQ(state, MLC_STATE_READY);
  ASSERT_EQ(mlc_client_license_id(client, &text), MLC_OK);
  EXPECT_STREQ(text, "license-1");

  // Every field of a caller's tensor is checked before anything reaches the core.
  struct BadInput {
    mlc_tensor tensor;
    std::string message;
  };
  const mlc_tensor good = input;
  std::vector<BadInput> bad(5, BadInput{good, ""});
  bad[0].tensor.byte_size = 4;
  bad[0].message = "byte_size is 4";
  bad[1].tensor.dtype = static_cast<mlc_dtype>(3);
  bad[1].message = "dtype 3 is not";
  bad[2].tensor.rank = MLC_MAX_RANK + 1;
  bad[2].message = "rank 9 is over the limit 8";
  bad[3].tensor.dims[1] = -8;
  bad[3].message = "dimension 1 is -8";
  bad[4].tensor.data = nullptr;
  bad[4].message = "data is NULL";
  for (const BadInput& b : bad) {
    EXPECT_EQ(mlc_client_infer(client, &b.tensor, 1, &outputs, &count), MLC_ERR_INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(LastError(), b.message)) << LastError();
    EXPECT_TRUE(Contains(LastError(), "input 0 ('input')")) << LastError();
  }
  EXPECT_EQ(mlc_client_infer(client, nullptr, 1, &outputs, &count), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "inputs is NULL")) << LastError();
  std::vector<mlc_tensor> too_many(65, good);
  EXPECT_EQ(mlc_client_infer(client, too_many.data(), too_many.size(), &outputs, &count),
            MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "input_count 65 is over the limit 64")) << LastError();
  EXPECT_EQ(mlc_client_install_lease(client, lease->data(), 0), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(mlc_client_evidence_request(client, nullptr, 0, &request), MLC_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(LastError(), "nonce is NULL")) << LastError();

  for (int query = 0; query < 2; ++query) {
    ASSERT_EQ(mlc_client_infer(client, &input, 1, &outputs, &count), MLC_OK) << LastError();
    ASSERT_GE(count, 1u);
    EXPECT_EQ(outputs[0].dtype, MLC_DTYPE_FLOAT32);
    EXPECT_EQ(outputs[0].rank, 2u);
    EXPECT_EQ(outputs[0].dims[1], mlcapsule::testing::kClassifierClasses);
    EXPECT_EQ(outputs[0].byte_size, 4u * mlcapsule::testing::kClassifierClasses);
    EXPECT_NE(outputs[0].name, nullptr);
    mlc_tensors_free(outputs);
  }
  mlc_quota quota{};
  ASSERT_EQ(mlc_client_quota(client, &quota), MLC_OK);
  EXPECT_EQ(quota.query_quota, 2u);
  EXPECT_EQ(quota.queries_left, 0u);
  EXPECT_EQ(mlc_client_infer(client, &input, 1, &outputs, &count), MLC_ERR_RESOURCE_EXHAUSTED);
  EXPECT_EQ(outputs, nullptr);

  mlc_buffer report{};
  ASSERT_EQ(mlc_client_usage_report(client, &report), MLC_OK) << LastError();
  EXPECT_GT(report.size, 0u);
  mlc_buffer_free(&report);
  EXPECT_EQ(mlc_client_close(client), MLC_OK) << LastError();
}

}  // namespace
