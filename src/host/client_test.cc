// Lifecycle of a capsule on a client, through host::Client and the in-process test channel:
// licensing, offline restart, quota, expiry, replay, rollback, tampering. The same core code
// runs in the software TEE process (host_process_test.cc covers that path).
#include "host/client.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "base/file_util.h"
#include "capsule/messages.h"
#include "engine/session.h"
#include "host/in_process_channel.h"
#include "host/test_capsule.h"
#include "trusted/test_platform.h"

namespace mlcapsule::host {
namespace {

namespace fs = std::filesystem;
using testing::TestProvider;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    dir_ = fs::temp_directory_path() /
           ("mlc-client-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    provider_ = std::make_unique<TestProvider>(TestProvider::Make(
        testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string State(const std::string& name = "state") { return (dir_ / name).string(); }

  Result<std::unique_ptr<Client>> Open(const std::string& state,
                                       trusted::TestPlatform* platform = nullptr,
                                       const std::vector<uint8_t>* capsule_bytes = nullptr) {
    ClientOptions options;
    options.state_dir = state;
    options.backend = Backend::kInProcessInsecureTest;
    const std::vector<uint8_t>& bytes = capsule_bytes ? *capsule_bytes : provider_->packed.bytes;
    return Client::OpenWithChannel(bytes, options,
                                   MakeInProcessChannelForTests(platform ? platform : &platform_));
  }

  // Opens, asks for evidence, gets a lease for `quota` queries and installs it.
  std::unique_ptr<Client> Licensed(const std::string& state, uint64_t quota = 100) {
    auto client = Open(state);
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    auto request = (*client)->MakeEvidenceRequest(Nonce(), false);
    EXPECT_TRUE(request.ok()) << request.status().ToString();
    auto lease = provider_->Lease(*request, quota);
    EXPECT_TRUE(lease.ok()) << lease.status().ToString();
    Status s = (*client)->InstallLease(*lease);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::move(client).value();
  }

  static capsule::Nonce Nonce() {
    capsule::Nonce n{};
    capsule::RandomBytes(n);
    return n;
  }

  static engine::Tensor Input(int64_t batch, float seed) {
    engine::Tensor t = engine::Tensor::Make(engine::DType::kFloat32, {batch, 8});
    for (int64_t i = 0; i < t.NumElements(); ++i)
      t.Data<float>()[i] = std::sin(seed + 0.37f * static_cast<float>(i));
    return t;
  }

  static Status InferOnce(Client& client, int64_t batch = 1,
                          std::vector<engine::Tensor>* out = nullptr) {
    engine::Tensor x = Input(batch, 0.5f);
    std::vector<engine::Tensor> outputs;
    Status s = client.Infer({x.View()}, &outputs);
    if (out) *out = std::move(outputs);
    return s;
  }

  std::vector<uint8_t> ReadSealed(const std::string& state) {
    auto bytes = ReadFile((fs::path(state) / kSealedStateFile).string(), 1 << 20);
    EXPECT_TRUE(bytes.ok());
    return {bytes->begin(), bytes->end()};
  }
  void WriteSealed(const std::string& state, const std::vector<uint8_t>& bytes) {
    ASSERT_TRUE(
        WriteFile((fs::path(state) / kSealedStateFile).string(),
                  std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()))
            .ok());
  }

  fs::path dir_;
  trusted::TestPlatform platform_;
  std::unique_ptr<TestProvider> provider_;
};

TEST_F(ClientTest, FreshCoreNeedsALeaseAndRefusesQueries) {
  auto client = Open(State());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ((*client)->info().state, CoreStateKind::kNeedsLease);
  Status s = InferOnce(**client);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("no lease"), std::string::npos) << s.message();
}

TEST_F(ClientTest, LicensedCoreAnswersLikeThePlainEngineAndRestartsOffline) {
  const std::string state = State();
  {
    auto client = Licensed(state);
    ASSERT_EQ(client->info().state, CoreStateKind::kReady);
    EXPECT_EQ(client->info().license_id, "license-1");
    std::vector<engine::Tensor> out;
    ASSERT_TRUE(InferOnce(*client, 3, &out).ok());
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].dims, (engine::Dims{3, 4}));
    // The reference: the plain engine on the same plan, then softmax (the policy says logits).
    auto session =
        engine::Session::Create(testing::ClassifierPlan(testing::DefaultClassifierWeights()));
    ASSERT_TRUE(session.ok());
    engine::Tensor x = Input(3, 0.5f);
    std::vector<engine::Tensor> ref;
    ASSERT_TRUE((*session)->Run({x.View()}, &ref).ok());
    for (int r = 0; r < 3; ++r) {
      const float* logits = ref[0].Data<float>() + r * 4;
      float m = *std::max_element(logits, logits + 4), sum = 0;
      for (int c = 0; c < 4; ++c) sum += std::exp(logits[c] - m);
      for (int c = 0; c < 4; ++c)
        EXPECT_NEAR(out[0].Data<float>()[r * 4 + c], std::exp(logits[c] - m) / sum, 1e-6);
    }
    ASSERT_TRUE(client->Close().ok());
  }
  // Offline restart: the sealed state carries the lease; no provider needed.
  auto again = Open(state);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->info().state, CoreStateKind::kReady);
  EXPECT_EQ((*again)->info().queries_used, 3u);
  EXPECT_TRUE(InferOnce(**again).ok());
}

TEST_F(ClientTest, QuotaIsEnforcedPerQueryInABatch) {
  auto client = Licensed(State(), /*quota=*/5);
  ASSERT_TRUE(InferOnce(*client, 2).ok());
  ASSERT_TRUE(InferOnce(*client, 2).ok());
  Status s = InferOnce(*client, 2);  // 4 used, 2 asked, quota 5
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("quota exhausted"), std::string::npos) << s.message();
  EXPECT_TRUE(InferOnce(*client, 1).ok());
  EXPECT_EQ(InferOnce(*client, 1).code(), StatusCode::kResourceExhausted);
}

TEST_F(ClientTest, UsageReportIsSignedAndRenewalContinuesTheChain) {
  auto client = Licensed(State(), 4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(InferOnce(*client).ok());
  ASSERT_EQ(InferOnce(*client).code(), StatusCode::kResourceExhausted);
  auto request = client->MakeEvidenceRequest(Nonce(), /*attach_report=*/true);
  ASSERT_TRUE(request.ok()) << request.status().ToString();
  auto parsed = capsule::ParseEvidenceRequest(*request);
  ASSERT_TRUE(parsed.ok());
  ASSERT_TRUE(parsed->usage_report.has_value());
  auto report = capsule::ParseAndVerifyUsageReport(*parsed->usage_report);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->from_count, 0u);
  EXPECT_EQ(report->to_count, 4u);
  EXPECT_EQ(report->core_signing_key, parsed->core_signing_key);
  EXPECT_EQ(report->from_head,
            capsule::ChainGenesis(provider_->header.capsule_id, parsed->core_signing_key));
  auto lease = provider_->Lease(*request, 10);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(client->InstallLease(*lease).ok());
  EXPECT_EQ(client->info().queries_used, 0u);
  EXPECT_TRUE(InferOnce(*client).ok());
  auto second = client->UsageReport();
  ASSERT_TRUE(second.ok());
  auto r2 = capsule::ParseAndVerifyUsageReport(*second);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->from_count, 4u);
  EXPECT_EQ(r2->from_head, report->to_head);
  EXPECT_EQ(r2->to_count, 5u);
  EXPECT_GT(r2->report_sequence, report->report_sequence);
}

TEST_F(ClientTest, ReplayedOrOlderLeaseIsRefused) {
  auto client = Open(State());
  ASSERT_TRUE(client.ok());
  auto request = (*client)->MakeEvidenceRequest(Nonce(), false);
  ASSERT_TRUE(request.ok());
  auto first = provider_->Lease(*request, 10);
  auto second = provider_->Lease(*request, 10);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE((*client)->InstallLease(*first).ok());
  Status replay = (*client)->InstallLease(*first);
  EXPECT_EQ(replay.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(replay.message().find("replayed"), std::string::npos) << replay.message();
  ASSERT_TRUE((*client)->InstallLease(*second).ok());
  EXPECT_EQ((*client)->InstallLease(*first).code(), StatusCode::kPermissionDenied);
}

TEST_F(ClientTest, LeaseForAnotherCoreKeyIsRefused) {
  auto a = Open(State("a"));
  auto b = Open(State("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto request_a = (*a)->MakeEvidenceRequest(Nonce(), false);
  ASSERT_TRUE((*b)->MakeEvidenceRequest(Nonce(), false).ok());
  auto lease_a = provider_->Lease(*request_a, 10);
  ASSERT_TRUE(lease_a.ok());
  Status s = (*b)->InstallLease(*lease_a);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("another core key"), std::string::npos) << s.message();
  EXPECT_TRUE((*a)->InstallLease(*lease_a).ok());
}

TEST_F(ClientTest, LeaseForAnotherCapsuleIsRefused) {
  TestProvider other = TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy);
  auto client = Open(State());
  ASSERT_TRUE(client.ok());
  auto request = (*client)->MakeEvidenceRequest(Nonce(), false);
  ASSERT_TRUE(request.ok());
  // The other provider cannot even accept the request (wrong capsule id) ...
  EXPECT_FALSE(other.Lease(*request, 10).ok());
  // ... and a lease it issues for its own capsule is refused by this core.
  auto other_client = Open(State("other"), nullptr, &other.packed.bytes);
  ASSERT_TRUE(other_client.ok());
  auto other_request = (*other_client)->MakeEvidenceRequest(Nonce(), false);
  auto other_lease = other.Lease(*other_request, 10);
  ASSERT_TRUE(other_lease.ok());
  Status s = (*client)->InstallLease(*other_lease);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ((*client)->info().state, CoreStateKind::kNeedsLease);
}

TEST_F(ClientTest, ExpiredLeaseStopsQueries) {
  auto client = Licensed(State());
  ASSERT_TRUE(InferOnce(*client).ok());
  platform_.set_now(platform_.Now().unix_seconds + 2 * 86400);
  Status s = InferOnce(*client);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("expired"), std::string::npos) << s.message();
}

TEST_F(ClientTest, ClockMovedBackDoesNotRevive) {
  auto client = Licensed(State());
  const int64_t now = platform_.Now().unix_seconds;
  platform_.set_now(now + 2 * 86400);
  EXPECT_FALSE(InferOnce(*client).ok());
  platform_.set_now(now);  // the core remembers the latest time it saw
  EXPECT_FALSE(InferOnce(*client).ok());
}

TEST_F(ClientTest, RestoredOlderSealedStateIsRefused) {
  const std::string state = State();
  std::vector<uint8_t> old_state;
  uint64_t old_counter = 0;
  {
    auto client = Licensed(state, 100);
    old_state = ReadSealed(state);
    old_counter = platform_.counter();
    for (int i = 0; i < 12; ++i) ASSERT_TRUE(InferOnce(*client).ok());  // seal_every is 10
    ASSERT_TRUE(client->Close().ok());
  }
  WriteSealed(state, old_state);
  auto reopened = Open(state);
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(reopened.status().message().find("rollback"), std::string::npos)
      << reopened.status().message();
  // Rolling the counter back too (what root can do to the software backend's counter file) is
  // the attack DESIGN.md bounds: the old state opens, with the old lease and its old count, so
  // at most that lease's quota can be replayed.
  platform_.set_counter(old_counter);
  auto rolled = Open(state);
  ASSERT_TRUE(rolled.ok()) << rolled.status().ToString();
  EXPECT_EQ((*rolled)->info().queries_used, 0u);
  EXPECT_LE((*rolled)->info().query_quota, 100u);
}

TEST_F(ClientTest, KilledCoreIsChargedForItsWholeReservedBlock) {
  const std::string state = State();
  std::vector<uint8_t> at_crash;
  uint64_t counter_at_crash = 0;
  {
    auto client = Licensed(state, 100);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(InferOnce(*client).ok());
    // What a host that kills the core now would have on disk: the seal made before query 1,
    // which reserved queries 1..11 (seal_every is 10).
    at_crash = ReadSealed(state);
    counter_at_crash = platform_.counter();
    ASSERT_TRUE(client->Close().ok());
  }
  WriteSealed(state, at_crash);
  platform_.set_counter(counter_at_crash);
  auto reopened = Open(state);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->info().queries_used, 11u);  // 3 answered + 8 reserved, all charged
  EXPECT_EQ((*reopened)->info().total_queries, 11u);
}

TEST_F(ClientTest, SameSealedStateCannotBeOpenedTwice) {
  const std::string state = State();
  { auto client = Licensed(state); }
  std::vector<uint8_t> sealed = ReadSealed(state);
  { ASSERT_TRUE(Open(state).ok()); }  // reseals under a new counter value
  WriteSealed(state, sealed);
  EXPECT_FALSE(Open(state).ok());
}

TEST_F(ClientTest, EveryByteFlipOfTheLeaseIsRefused) {
  auto client = Open(State());
  ASSERT_TRUE(client.ok());
  auto request = (*client)->MakeEvidenceRequest(Nonce(), false);
  auto lease = provider_->Lease(*request, 10);
  ASSERT_TRUE(lease.ok());
  for (size_t i = 0; i < lease->size(); ++i) {
    std::vector<uint8_t> bad = *lease;
    bad[i] ^= 0x01;
    Status s = (*client)->InstallLease(bad);
    ASSERT_FALSE(s.ok()) << "flipped lease byte " << i << " was accepted";
    ASSERT_FALSE(s.message().empty());
  }
  for (size_t cut = 0; cut < lease->size(); cut += 7)
    ASSERT_FALSE((*client)->InstallLease(std::span(*lease).first(cut)).ok());
  EXPECT_TRUE((*client)->InstallLease(*lease).ok());
}

TEST_F(ClientTest, EveryByteFlipOfTheSealedStateIsRefused) {
  const std::string state = State();
  { auto client = Licensed(state); }
  const std::vector<uint8_t> sealed = ReadSealed(state);
  const uint64_t counter = platform_.counter();
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::vector<uint8_t> bad = sealed;
    bad[i] ^= 0x20;
    WriteSealed(state, bad);
    platform_.set_counter(counter);
    auto client = Open(state);
    ASSERT_FALSE(client.ok()) << "flipped sealed-state byte " << i << " was accepted";
  }
  WriteSealed(state, sealed);
  platform_.set_counter(counter);
  EXPECT_TRUE(Open(state).ok());
}

TEST_F(ClientTest, TruncatedOrTamperedCapsuleIsRejectedAtOpen) {
  std::vector<uint8_t> truncated(provider_->packed.bytes.begin(),
                                 provider_->packed.bytes.end() - 100);
  auto a = Open(State("a"), nullptr, &truncated);
  EXPECT_FALSE(a.ok());
  std::vector<uint8_t> tampered = provider_->packed.bytes;
  tampered[tampered.size() / 2] ^= 1;
  auto b = Open(State("b"), nullptr, &tampered);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("signature"), std::string::npos) << b.status().message();
}

TEST_F(ClientTest, StateDirectoryIsBoundToOneCapsule) {
  const std::string state = State();
  { ASSERT_TRUE(Open(state).ok()); }
  TestProvider other = TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy);
  auto client = Open(state, nullptr, &other.packed.bytes);
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("one directory per capsule"), std::string::npos);
}

TEST_F(ClientTest, LabelPolicyReturnsOnlyLabels) {
  provider_ = std::make_unique<TestProvider>(TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()),
      R"({"version":1,"tee":{"accept":["software"]},"output":{"mode":"label","logits":true}})"));
  auto client = Licensed(State());
  std::vector<engine::Tensor> out;
  ASSERT_TRUE(InferOnce(*client, 2, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].dtype, engine::DType::kInt64);
  EXPECT_EQ(out[0].dims, (engine::Dims{2}));
  for (int64_t i = 0; i < 2; ++i) {
    EXPECT_GE(out[0].Data<int64_t>()[i], 0);
    EXPECT_LT(out[0].Data<int64_t>()[i], 4);
  }
}

TEST_F(ClientTest, PolicyNotAcceptingSoftwareGetsNoLease) {
  provider_ = std::make_unique<TestProvider>(TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()),
      R"({"version":1,"tee":{"accept":["sgx"]},"output":{"mode":"probabilities"}})"));
  auto client = Open(State());
  ASSERT_TRUE(client.ok());
  auto request = (*client)->MakeEvidenceRequest(Nonce(), false);
  ASSERT_TRUE(request.ok());
  auto lease = provider_->Lease(*request, 10);
  ASSERT_FALSE(lease.ok());
  EXPECT_NE(lease.status().message().find("does not accept 'software'"), std::string::npos)
      << lease.status().message();
}

}  // namespace
}  // namespace mlcapsule::host
