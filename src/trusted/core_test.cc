// The boundary as the host sees it: call order, limits, malformed payloads and injected platform
// faults, against the real core on the in-memory test platform. Lifecycle tests (leases, quota,
// rollback) are in host/client_test.cc.
#include "trusted/boundary.h"

#include <gtest/gtest.h>

#include <cstring>

#include "base/bytes.h"
#include "capsule/licensing.h"
#include "capsule/tensor_wire.h"
#include "host/test_capsule.h"
#include "trusted/core.h"
#include "trusted/test_platform.h"

namespace mlcapsule::trusted {
namespace {

using testing::TestProvider;

std::vector<uint8_t> OpenMessage(const std::vector<uint8_t>& capsule,
                                 const std::vector<uint8_t>& sealed = {}, uint32_t threads = 1,
                                 const std::vector<uint8_t>& journal = {}) {
  ByteWriter w;
  w.Pod<uint64_t>(capsule.size());
  w.Bytes(capsule);
  w.Blob(sealed);
  w.Pod<uint64_t>(journal.size());
  w.Bytes(journal);
  w.Pod<uint32_t>(threads);
  return {w.span().begin(), w.span().end()};
}

class BoundaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    provider_ = std::make_unique<TestProvider>(TestProvider::Make(
        testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy));
    boundary_ = std::make_unique<Boundary>(&platform_);
  }

  Status Do(Call call, const std::vector<uint8_t>& input, Reply* reply = nullptr) {
    Reply local;
    return boundary_->Call(call, input, reply ? reply : &local);
  }

  // Opens and licenses the core; returns the last sealed state.
  std::vector<uint8_t> OpenLicensed(uint64_t quota = 100) {
    Reply reply;
    EXPECT_TRUE(Do(Call::kOpen, OpenMessage(provider_->packed.bytes), &reply).ok());
    std::vector<uint8_t> nonce(33, 0);
    EXPECT_TRUE(Do(Call::kEvidence, nonce, &reply).ok());
    auto lease = provider_->Lease(reply.output, quota);
    EXPECT_TRUE(lease.ok()) << lease.status().ToString();
    EXPECT_TRUE(Do(Call::kInstallLease, *lease, &reply).ok());
    EXPECT_FALSE(reply.sealed_state.empty());
    auto update = SplitSealedUpdate(reply.sealed_state);
    EXPECT_TRUE(update.ok()) << update.status().ToString();
    if (!update.ok()) return {};
    return {update->state.begin(), update->state.end()};
  }

  static std::vector<uint8_t> Tensors(const std::vector<engine::Tensor>& tensors) {
    std::vector<engine::TensorView> views;
    for (const engine::Tensor& t : tensors) {
      engine::TensorView v;
      v.dtype = t.dtype;
      v.dims = t.dims;
      v.data = const_cast<uint8_t*>(t.bytes.data());
      views.push_back(v);
    }
    std::string out;
    capsule::AppendTensorList(views, &out);
    return {out.begin(), out.end()};
  }

  TestPlatform platform_;
  std::unique_ptr<TestProvider> provider_;
  std::unique_ptr<Boundary> boundary_;
};

// (At most eight calls is a static_assert in boundary.h.)
TEST_F(BoundaryTest, EveryCallHasAName) {
  for (uint32_t c = 1; c <= kMaxCall; ++c) EXPECT_STRNE(CallName(static_cast<Call>(c)), "unknown");
}

TEST_F(BoundaryTest, UnknownCallsAreRefused) {
  for (uint32_t c : {0u, kMaxCall + 1, 0xFFFFFFFFu}) {
    Status s = Do(static_cast<Call>(c), {});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c;
  }
}

TEST_F(BoundaryTest, InputsOverTheirLimitAreRefusedBeforeUse) {
  Status s = Do(Call::kEvidence, std::vector<uint8_t>(kMaxEvidenceInputBytes + 1));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("over the limit"), std::string::npos) << s.message();
  EXPECT_FALSE(Do(Call::kInstallLease, std::vector<uint8_t>(kMaxLeaseInputBytes + 1)).ok());
  EXPECT_FALSE(Do(Call::kUsageReport, std::vector<uint8_t>(1)).ok());
  EXPECT_FALSE(Do(Call::kClose, std::vector<uint8_t>(1)).ok());
}

TEST_F(BoundaryTest, CallsBeforeOpenFailCleanly) {
  for (Call c : {Call::kEvidence, Call::kInstallLease, Call::kInfer, Call::kUsageReport}) {
    std::vector<uint8_t> input = c == Call::kEvidence      ? std::vector<uint8_t>(33)
                                 : c == Call::kUsageReport ? std::vector<uint8_t>{}
                                                           : std::vector<uint8_t>(16);
    Status s = Do(c, input);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << CallName(c) << ": " << s.ToString();
  }
  EXPECT_TRUE(Do(Call::kClose, {}).ok());
}

TEST_F(BoundaryTest, MalformedOpenRequestsAreRefused) {
  std::vector<uint8_t> good = OpenMessage(provider_->packed.bytes);
  for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{100}, good.size() - 1})
    EXPECT_FALSE(Do(Call::kOpen, std::vector<uint8_t>(good.begin(), good.begin() + cut)).ok());
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  EXPECT_FALSE(Do(Call::kOpen, trailing).ok());
  Status threads = Do(Call::kOpen, OpenMessage(provider_->packed.bytes, {}, 0));
  EXPECT_NE(threads.message().find("threads"), std::string::npos) << threads.message();
  std::vector<uint8_t> huge_length = good;
  const uint64_t lie = uint64_t{1} << 40;
  std::memcpy(huge_length.data(), &lie, sizeof(lie));
  EXPECT_EQ(Do(Call::kOpen, huge_length).code(), StatusCode::kDataLoss);
  // After all that, a good open still works, and a second one is refused.
  EXPECT_TRUE(Do(Call::kOpen, good).ok());
  EXPECT_EQ(Do(Call::kOpen, good).code(), StatusCode::kFailedPrecondition);
}

TEST_F(BoundaryTest, BadInferInputsAreNotCounted) {
  OpenLicensed(/*quota=*/2);
  engine::Tensor wrong_width = engine::Tensor::Make(engine::DType::kFloat32, {1, 7});
  engine::Tensor wrong_type = engine::Tensor::Make(engine::DType::kInt64, {1, 8});
  engine::Tensor good = engine::Tensor::Make(engine::DType::kFloat32, {1, 8});
  EXPECT_EQ(Do(Call::kInfer, Tensors({wrong_width})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(Call::kInfer, Tensors({wrong_type})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(Call::kInfer, Tensors({good, good})).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(Do(Call::kInfer, {1, 2, 3}).ok());
  // The quota of 2 is untouched by the refused calls.
  EXPECT_TRUE(Do(Call::kInfer, Tensors({good})).ok());
  EXPECT_TRUE(Do(Call::kInfer, Tensors({good})).ok());
  EXPECT_EQ(Do(Call::kInfer, Tensors({good})).code(), StatusCode::kResourceExhausted);
}

TEST_F(BoundaryTest, ReplyOnErrorCarriesNoOutput) {
  OpenLicensed();
  Reply reply;
  reply.output = {1, 2, 3};
  EXPECT_FALSE(boundary_->Call(Call::kInfer, std::vector<uint8_t>{9}, &reply).ok());
  EXPECT_TRUE(reply.output.empty());
}

TEST_F(BoundaryTest, CounterFailureIsAnErrorNotACrash) {
  Reply reply;
  ASSERT_TRUE(Do(Call::kOpen, OpenMessage(provider_->packed.bytes), &reply).ok());
  platform_.set_fail_counter(true);
  Status s = Do(Call::kEvidence, std::vector<uint8_t>(33), &reply);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_NE(s.message().find("injected"), std::string::npos);
}

TEST_F(BoundaryTest, SealedStateOfAnotherCapsuleIsRefused) {
  std::vector<uint8_t> sealed = OpenLicensed();
  ASSERT_TRUE(Do(Call::kClose, {}).ok());
  TestProvider other = TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy);
  Boundary fresh(&platform_);
  Reply reply;
  Status s = fresh.Call(Call::kOpen, OpenMessage(other.packed.bytes, sealed), &reply);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("belongs to capsule"), std::string::npos) << s.message();
}

TEST_F(BoundaryTest, CloseWipesAndEndsTheSession) {
  OpenLicensed();
  engine::Tensor good = engine::Tensor::Make(engine::DType::kFloat32, {1, 8});
  ASSERT_TRUE(Do(Call::kInfer, Tensors({good})).ok());
  Reply reply;
  ASSERT_TRUE(Do(Call::kClose, {}, &reply).ok());
  EXPECT_FALSE(reply.sealed_state.empty());  // the count since the last seal is kept
  EXPECT_EQ(Do(Call::kInfer, Tensors({good})).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace mlcapsule::trusted
