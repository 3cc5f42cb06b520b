// The license server's protocol and admin logic (license_service.h) against a real trusted core
// (in-process test channel) on a real SQLite store: leases, renewals, billing, and every refusal
// the issue names (replayed and foreign nonces, token scope, revocation, quota, forks, rate
// limits, malformed bodies) with nothing written when a request fails.
#include "server/license_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "capsule/messages.h"
#include "host/client.h"
#include "host/in_process_channel.h"
#include "host/test_capsule.h"
#include "server/evidence/testing/synthetic_intel.h"
#include "trusted/test_platform.h"

namespace mlcapsule::server {
namespace {

namespace fs = std::filesystem;
using mlcapsule::testing::TestProvider;

constexpr int64_t kStart = 1'800'000'000;

class LicenseServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    dir_ = fs::temp_directory_path() /
           ("mlc-service-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    provider_ = std::make_unique<TestProvider>(TestProvider::Make(
        mlcapsule::testing::ClassifierPlan(mlcapsule::testing::DefaultClassifierWeights()),
        mlcapsule::testing::kDefaultTestPolicy));
    now_ = kStart;
    platform_.set_now(kStart);
    service_ = MakeService();
    token_ = SetUpLicense("lic-1", 1000, 100);
  }
  void TearDown() override {
    service_.reset();
    fs::remove_all(dir_);
  }

  std::unique_ptr<LicenseService> MakeService() {
    auto store = OpenStore("sqlite:" + (dir_ / "server.db").string());
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->Migrate().ok());
    // The provider runs its own license server: the lease key pinned in the capsule.
    auto signer = capsule::SigningKeyPairFromSecret(provider_->key.secret.span());
    EXPECT_TRUE(signer.ok());
    capsule::SecretBytes master(capsule::kSymmetricKeyBytes);
    std::fill(master.data(), master.data() + master.size(), 7);
    ServiceOptions options;
    options.clock = [this] { return now_.load(); };
    auto service = LicenseService::Create(std::move(store).value(), std::move(master),
                                          std::move(signer).value(), std::move(options));
    EXPECT_TRUE(service.ok()) << service.status().ToString();
    return std::move(service).value();
  }

  // Provider, customer and capsule (once), then a license; returns its token.
  std::string SetUpLicense(const std::string& id, uint64_t quota, uint64_t lease_queries,
                           uint64_t rate = 0) {
    if (!service_->ListProviders()->size()) {
      EXPECT_TRUE(service_->CreateProvider({{"id", "acme"}, {"name", "Acme"}}).ok());
      EXPECT_TRUE(
          service_->CreateCustomer({{"id", "bob"}, {"provider_id", "acme"}, {"name", "Bob"}}).ok());
      auto view = capsule::ParseCapsule(provider_->packed.bytes);
      EXPECT_TRUE(view.ok());
      auto added = service_->CreateCapsule(
          {{"provider_id", "acme"},
           {"header", capsule::ToBase64(view->header_region)},
           {"capsule_key", capsule::ToHex(provider_->packed.capsule_key.span())}});
      EXPECT_TRUE(added.ok()) << added.status().ToString();
    }
    auto license = service_->CreateLicense({{"id", id},
                                            {"customer_id", "bob"},
                                            {"capsule_id", Hex(provider_->header.capsule_id)},
                                            {"query_quota", quota},
                                            {"lease_queries", lease_queries},
                                            {"price_per_query", 0.25},
                                            {"rate_per_minute", rate}});
    EXPECT_TRUE(license.ok()) << license.status().ToString();
    return (*license)["token"].get<std::string>();
  }

  static std::string Hex(std::span<const uint8_t> b) { return capsule::ToHex(b); }

  std::unique_ptr<host::Client> OpenClient(const std::string& name = "state",
                                           trusted::TestPlatform* platform = nullptr) {
    host::ClientOptions options;
    options.state_dir = (dir_ / name).string();
    options.backend = host::Backend::kInProcessInsecureTest;
    auto client = host::Client::OpenWithChannel(
        provider_->packed.bytes, options,
        host::MakeInProcessChannelForTests(platform ? platform : &platform_));
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    return std::move(client).value();
  }

  Result<capsule::Nonce> FreshNonce(const std::string& token) {
    MLC_ASSIGN_OR_RETURN(json answer, service_->Nonce(token));
    capsule::Nonce nonce{};
    MLC_RETURN_IF_ERROR(capsule::FromHex(answer["nonce"].get<std::string>(), nonce, "nonce"));
    return nonce;
  }

  // nonce -> evidence -> attest; installs the lease on success.
  Result<json> Attest(host::Client& client, const std::string& token, bool attach_report,
                      std::vector<uint8_t>* request_out = nullptr) {
    MLC_ASSIGN_OR_RETURN(capsule::Nonce nonce, FreshNonce(token));
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> request,
                         client.MakeEvidenceRequest(nonce, attach_report));
    if (request_out) *request_out = request;
    MLC_ASSIGN_OR_RETURN(
        json answer, service_->Attest(token, {{"evidence_request", capsule::ToBase64(request)}}));
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> lease,
                         capsule::FromBase64(answer["lease"].get<std::string>(), 1 << 16, "lease"));
    MLC_RETURN_IF_ERROR(client.InstallLease(lease));
    return answer;
  }

  static Status Query(host::Client& client, int64_t batch = 1) {
    engine::Tensor x = engine::Tensor::Make(engine::DType::kFloat32, {batch, 8});
    for (int64_t i = 0; i < x.NumElements(); ++i) x.Data<float>()[i] = 0.1f * static_cast<float>(i);
    std::vector<engine::Tensor> out;
    return client.Infer({x.View()}, &out);
  }

  Result<json> Report(host::Client& client, const std::string& token) {
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> report, client.UsageReport());
    return service_->Usage(token, {{"usage_report", capsule::ToBase64(report)}});
  }

  fs::path dir_;
  std::atomic<int64_t> now_{kStart};
  trusted::TestPlatform platform_;
  std::unique_ptr<TestProvider> provider_;
  std::unique_ptr<LicenseService> service_;
  std::string token_;
};

TEST_F(LicenseServiceTest, LeaseQueriesReportsAndBillAreConsistent) {
  auto client = OpenClient();
  auto lease = Attest(*client, token_, false);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ((*lease)["sequence"], 1);
  EXPECT_EQ((*lease)["query_quota"], 100);
  EXPECT_NE((*lease)["evidence"].get<std::string>().find("software"), std::string::npos);
  ASSERT_TRUE(Query(*client, 3).ok());
  auto report_bytes = client->UsageReport();
  ASSERT_TRUE(report_bytes.ok());
  const json body = {{"usage_report", capsule::ToBase64(*report_bytes)}};
  auto first = service_->Usage(token_, body);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ((*first)["outcome"], "accepted");
  EXPECT_EQ((*first)["billed_queries"], 3);
  auto retry = service_->Usage(token_, body);  // a retry never counts twice
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ((*retry)["outcome"], "duplicate");
  EXPECT_EQ((*retry)["billed_queries"], 0);
  auto bill = service_->Billing("bob", 0, kStart + 10);
  ASSERT_TRUE(bill.ok()) << bill.status().ToString();
  ASSERT_EQ((*bill)["lines"].size(), 1u);
  EXPECT_EQ((*bill)["lines"][0]["queries"], 3);
  EXPECT_EQ((*bill)["lines"][0]["amount_micros"], 750000);  // 3 x 0.25 EUR
  EXPECT_EQ((*bill)["total"]["EUR"], "0.750000");
  auto before = service_->Billing("bob", 0, kStart);  // the period ends before the report
  ASSERT_TRUE(before.ok());
  EXPECT_EQ((*before)["lines"][0]["queries"], 0);
}

TEST_F(LicenseServiceTest, NextLeaseOnlyAfterTheReportForTheCurrentOne) {
  auto client = OpenClient();
  ASSERT_TRUE(Attest(*client, token_, false).ok());
  ASSERT_TRUE(Query(*client, 2).ok());
  // A second core (another install) under the same license, before any report: refused.
  trusted::TestPlatform other_platform;
  other_platform.set_now(kStart);
  auto other = OpenClient("other", &other_platform);
  auto refused = Attest(*other, token_, false);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("no usage report yet"), std::string::npos)
      << refused.status().message();
  // The renewal carries the report: recorded and billed first, then the lease continues the chain.
  auto renewed = Attest(*client, token_, true);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  EXPECT_EQ((*renewed)["sequence"], 2);
  EXPECT_EQ((*renewed)["chain_base_count"], 2);
  auto status = service_->GetLicense("lic-1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)["billed_queries"], 2);
  ASSERT_TRUE(Query(*client).ok());
  auto report = Report(*client, token_);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ((*report)["billed_queries"], 1);
}

TEST_F(LicenseServiceTest, ReplayedForeignAndExpiredNoncesAreRefused) {
  auto client = OpenClient();
  std::vector<uint8_t> request;
  ASSERT_TRUE(Attest(*client, token_, false, &request).ok());
  // The same evidence again (a captured request replayed): refused, nothing issued, alerted.
  auto replay = service_->Attest(token_, {{"evidence_request", capsule::ToBase64(request)}});
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.status().code(), StatusCode::kFailedPrecondition)
      << "the current lease has no report yet, so the renewal rule answers first: "
      << replay.status().message();
  ASSERT_TRUE(Report(*client, token_).ok());
  replay = service_->Attest(token_, {{"evidence_request", capsule::ToBase64(request)}});
  EXPECT_EQ(replay.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(replay.status().message().find("replayed"), std::string::npos)
      << replay.status().message();
  auto alerts = service_->Alerts("lic-1", 0);
  ASSERT_TRUE(alerts.ok());
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0]["kind"], "replay");
  EXPECT_EQ((*service_->GetLicense("lic-1"))["current_lease"]["sequence"], 1);

  // A nonce this server never made.
  capsule::Nonce forged{};
  capsule::RandomBytes(forged);
  auto forged_request = client->MakeEvidenceRequest(forged, true);
  ASSERT_TRUE(forged_request.ok());
  auto refused =
      service_->Attest(token_, {{"evidence_request", capsule::ToBase64(*forged_request)}});
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("did not issue"), std::string::npos);

  // A real nonce that expired.
  auto nonce = FreshNonce(token_);
  ASSERT_TRUE(nonce.ok());
  auto late_request = client->MakeEvidenceRequest(*nonce, true);
  ASSERT_TRUE(late_request.ok());
  now_ += 121;
  auto late = service_->Attest(token_, {{"evidence_request", capsule::ToBase64(*late_request)}});
  EXPECT_EQ(late.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(late.status().message().find("expired"), std::string::npos);
}

TEST_F(LicenseServiceTest, TokensAreScopedAndChecked) {
  const std::string other_token = SetUpLicense("lic-2", 1000, 100);
  auto client = OpenClient();
  ASSERT_TRUE(Attest(*client, token_, false).ok());
  ASSERT_TRUE(Query(*client).ok());
  auto report = client->UsageReport();
  ASSERT_TRUE(report.ok());
  const json body = {{"usage_report", capsule::ToBase64(*report)}};
  auto foreign = service_->Usage(other_token, body);  // lic-2's token, lic-1's report
  EXPECT_EQ(foreign.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(service_->Usage("mlclic_" + std::string(64, '0'), body).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(service_->Usage("", body).status().code(), StatusCode::kUnauthenticated);
  auto admin = service_->CreateAdminToken("ops");
  ASSERT_TRUE(admin.ok());
  EXPECT_TRUE(service_->CheckAdmin(*admin).ok());
  EXPECT_EQ(service_->Usage(*admin, body).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(service_->CheckAdmin(token_).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(service_->CheckAdmin("mlcadm_" + std::string(64, 'f')).code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ((*service_->GetLicense("lic-1"))["billed_queries"], 0);
}

TEST_F(LicenseServiceTest, RevokedOrExhaustedLicensesGetNoLease) {
  const std::string small = SetUpLicense("lic-small", 3, 3);
  auto client = OpenClient();
  ASSERT_TRUE(Attest(*client, small, false).ok());
  ASSERT_TRUE(Query(*client, 3).ok());
  auto renewal = Attest(*client, small, true);
  EXPECT_EQ(renewal.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(renewal.status().message().find("used its quota"), std::string::npos);
  EXPECT_EQ((*service_->GetLicense("lic-small"))["billed_queries"], 3);  // the report counted

  auto second = OpenClient("second");
  ASSERT_TRUE(Attest(*second, token_, false).ok());
  ASSERT_TRUE(service_->RevokeLicense("lic-1").ok());
  ASSERT_TRUE(Query(*second).ok());  // offline within its lease: the core does not know
  auto refused = Attest(*second, token_, true);
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("revoked"), std::string::npos);
  auto report = Report(*second, token_);  // usage is still recorded and billed
  ASSERT_TRUE(report.ok());
  EXPECT_EQ((*service_->GetLicense("lic-1"))["billed_queries"], 1);
}

TEST_F(LicenseServiceTest, ClonedClientForksTheChainAndBlocksRenewal) {
  auto client = OpenClient("state");
  ASSERT_TRUE(Attest(*client, token_, false).ok());
  ASSERT_TRUE(Query(*client).ok());
  ASSERT_TRUE(client->Close().ok());
  // The owner copies the sealed state and runs both copies, rolling the platform counter back
  // for the second (what a TEE without a hardware monotonic counter cannot prevent).
  fs::copy(dir_ / "state", dir_ / "clone", fs::copy_options::recursive);
  const uint64_t counter = platform_.counter();
  auto original = OpenClient("state");
  platform_.set_counter(counter);
  auto clone = OpenClient("clone");
  ASSERT_TRUE(Query(*original, 2).ok());
  ASSERT_TRUE(Query(*clone, 5).ok());
  auto first = Report(*original, token_);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto forked = Report(*clone, token_);
  EXPECT_EQ(forked.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(forked.status().message().find("forks"), std::string::npos);
  auto renewal = Attest(*original, token_, true);
  EXPECT_EQ(renewal.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(renewal.status().message().find("fork"), std::string::npos);
  auto alerts = service_->Alerts("", 0);
  ASSERT_TRUE(alerts.ok());
  ASSERT_FALSE(alerts->empty());
  EXPECT_EQ(alerts->back()["kind"], "fork");
  EXPECT_EQ((*service_->GetLicense("lic-1"))["billed_queries"], 3);  // the clone's 5 not billed
  ASSERT_TRUE(service_->ResolveForks("lic-1").ok());
  EXPECT_TRUE(Attest(*original, token_, true).ok());
}

TEST_F(LicenseServiceTest, RateLimitPerLicense) {
  const std::string limited = SetUpLicense("lic-rate", 1000, 100, /*rate=*/5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(service_->Nonce(limited).ok()) << i;
  auto over = service_->Nonce(limited);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(HttpStatusFor(over.status()), 429);
  EXPECT_TRUE(service_->Nonce(token_).ok());  // other licenses are not affected
}

TEST_F(LicenseServiceTest, MalformedRequestsWriteNothing) {
  auto client = OpenClient();
  auto nonce = FreshNonce(token_);
  ASSERT_TRUE(nonce.ok());
  auto request = client->MakeEvidenceRequest(*nonce, false);
  ASSERT_TRUE(request.ok());
  const std::string good = capsule::ToBase64(*request);
  std::vector<uint8_t> truncated(request->begin(), request->end() - 7);
  std::vector<uint8_t> flipped = *request;
  flipped[20] ^= 1;  // inside the capsule id
  const json bad_bodies[] = {
      json::array(),
      {{"evidence_request", good}, {"extra", 1}},
      {{"evidence_request", 42}},
      {{"evidence_request", "not base64!"}},
      {{"evidence_request", capsule::ToBase64(truncated)}},
      {{"evidence_request", capsule::ToBase64(flipped)}},
      {{"evidence_request", std::string(400000, 'A')}},
      json::object(),
  };
  for (const json& body : bad_bodies) {
    auto answer = service_->Attest(token_, body);
    ASSERT_FALSE(answer.ok()) << body.dump().substr(0, 80);
    const int http = HttpStatusFor(answer.status());
    EXPECT_GE(http, 400) << answer.status().message();
    EXPECT_LT(http, 500) << answer.status().message();
  }
  EXPECT_EQ(HttpStatusFor(service_->Usage(token_, {{"usage_report", "AAAA"}}).status()), 400);
  EXPECT_FALSE(
      (*service_->GetLicense("lic-1")).contains("current_lease"));  // no lease was recorded
  // Admin input: unknown fields, wrong types, unknown references, duplicates.
  EXPECT_EQ(service_->CreateProvider({{"name", "x"}, {"colour", "red"}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->CreateProvider({{"name", 5}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->CreateProvider({{"id", "bad id!"}, {"name", "x"}}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->CreateProvider({{"id", "acme"}, {"name", "again"}}).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(service_->CreateCustomer({{"provider_id", "nobody"}, {"name", "x"}}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(
      service_
          ->CreateLicense(
              {{"customer_id", "bob"}, {"capsule_id", std::string(32, '0')}, {"query_quota", 10}})
          .status()
          .code(),
      StatusCode::kNotFound);
  EXPECT_EQ(service_
                ->CreateLicense({{"customer_id", "bob"},
                                 {"capsule_id", Hex(provider_->header.capsule_id)},
                                 {"query_quota", -1}})
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_F(LicenseServiceTest, RecordedReportsAreListedWithTheirExactBytes) {
  auto client = OpenClient();
  ASSERT_TRUE(Attest(*client, token_, false).ok());
  ASSERT_TRUE(Query(*client, 2).ok());
  auto first = client->UsageReport();
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(service_->Usage(token_, {{"usage_report", capsule::ToBase64(*first)}}).ok());
  ASSERT_TRUE(Attest(*client, token_, true).ok());  // the renewal records the same report again
  ASSERT_TRUE(Query(*client).ok());
  auto second = client->UsageReport();
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(service_->Usage(token_, {{"usage_report", capsule::ToBase64(*second)}}).ok());

  auto page = service_->UsageReports("lic-1", 0, 10);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ((*page)["license_id"], "lic-1");
  const json& reports = (*page)["reports"];
  // The first report, the one the renewal carried (a newer one, or the same bytes recorded once)
  // and the last, in recording order.
  ASSERT_GE(reports.size(), 2u);
  ASSERT_LE(reports.size(), 3u);
  EXPECT_EQ(reports[0]["bytes"], capsule::ToBase64(*first));
  EXPECT_EQ(reports[0]["outcome"], "accepted");
  EXPECT_EQ(reports[0]["to_count"], 2);
  EXPECT_EQ(reports[0]["billed_queries"], 2);
  EXPECT_EQ(reports[0]["created_at"], kStart);
  EXPECT_EQ(reports[0]["escrow_records"], 0);
  EXPECT_EQ(reports.back()["bytes"], capsule::ToBase64(*second));
  EXPECT_EQ(reports.back()["to_count"], 3);
  EXPECT_EQ((*page)["next_after"], reports.back()["id"]);
  for (size_t i = 1; i < reports.size(); ++i)
    EXPECT_LT(reports[i - 1]["id"].get<int64_t>(), reports[i]["id"].get<int64_t>());

  // One at a time, the same reports; then an empty page.
  int64_t after = 0;
  for (const json& expected : reports) {
    auto one = service_->UsageReports("lic-1", after, 1);
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    ASSERT_EQ((*one)["reports"].size(), 1u);
    EXPECT_EQ((*one)["reports"][0]["bytes"], expected["bytes"]);
    after = (*one)["next_after"].get<int64_t>();
  }
  auto end = service_->UsageReports("lic-1", after, 1);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE((*end)["reports"].empty());
  EXPECT_EQ((*end)["next_after"], after);

  EXPECT_EQ(service_->UsageReports("lic-9", 0, 10).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(service_->UsageReports("lic-1", 0, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->UsageReports("lic-1", 0, 101).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(service_->UsageReports("lic-1", -1, 10).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LicenseServiceTest, AOneMebibyteUsageReportFitsTheJsonLimits) {
  // The body's field limits admit the base64 of the largest report and evidence request: what
  // stops these is the message itself (bad magic), not the JSON size.
  const std::vector<uint8_t> report(capsule::kMaxUsageReportBytes, 0x01);
  auto usage = service_->Usage(token_, {{"usage_report", capsule::ToBase64(report)}});
  ASSERT_FALSE(usage.ok());
  EXPECT_NE(usage.status().message().find("bad magic"), std::string::npos)
      << usage.status().message();
  const std::vector<uint8_t> over(capsule::kMaxUsageReportBytes + 1, 0x01);
  usage = service_->Usage(token_, {{"usage_report", capsule::ToBase64(over)}});
  ASSERT_FALSE(usage.ok());
  EXPECT_NE(usage.status().message().find("over the limit"), std::string::npos);
  const std::vector<uint8_t> request(capsule::kMaxEvidenceRequestBytes, 0x01);
  auto attest = service_->Attest(token_, {{"evidence_request", capsule::ToBase64(request)}});
  ASSERT_FALSE(attest.ok());
  EXPECT_NE(attest.status().message().find("bad magic"), std::string::npos)
      << attest.status().message();
}

TEST_F(LicenseServiceTest, CapsuleMustPinThisServersLeaseKey) {
  TestProvider other = TestProvider::Make(
      mlcapsule::testing::ClassifierPlan(mlcapsule::testing::DefaultClassifierWeights()),
      mlcapsule::testing::kDefaultTestPolicy);
  auto view = capsule::ParseCapsule(other.packed.bytes);
  ASSERT_TRUE(view.ok());
  auto added =
      service_->CreateCapsule({{"provider_id", "acme"},
                               {"header", capsule::ToBase64(view->header_region)},
                               {"capsule_key", capsule::ToHex(other.packed.capsule_key.span())}});
  EXPECT_EQ(added.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(added.status().message().find("--lease-signer"), std::string::npos);
}

TEST_F(LicenseServiceTest, StateSurvivesARestartOfTheServer) {
  auto client = OpenClient();
  ASSERT_TRUE(Attest(*client, token_, false).ok());
  ASSERT_TRUE(Query(*client, 4).ok());
  ASSERT_TRUE(Report(*client, token_).ok());
  service_ = MakeService();  // same database, same master key: the wrapped capsule key opens
  ASSERT_TRUE(Query(*client).ok());
  auto renewed = Attest(*client, token_, true);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  EXPECT_EQ((*service_->GetLicense("lic-1"))["billed_queries"], 5);
}

// Hardware evidence through the whole attest path: SGX quotes from a synthetic Intel PKI (the
// server trusts its root only because this test says so), verified by the real verifier code with
// the PKI's collateral, bound to the server's nonce and the core keys in the request.
class SgxAttestTest : public LicenseServiceTest {
 protected:
  void SetUp() override {
    evidence::testing::SyntheticIntelOptions options;
    options.collateral_issue_date = kStart - 86400;
    options.collateral_next_update = kStart + 30 * 86400;
    auto pki = evidence::testing::SyntheticIntelPki::Create(options);
    ASSERT_TRUE(pki.ok()) << pki.status().ToString();
    pki_ = std::move(pki).value();
    mr_enclave_.fill(0x5a);
    policy_ = std::string(R"({"version":1,"tee":{"accept":["sgx"],"measurements":{"sgx":[")") +
              Hex(mr_enclave_) +
              R"("]}},"lease":{"max_queries":1000,"max_days":30,"seal_every":10},)"
              R"("output":{"mode":"probabilities","logits":true}})";
    LicenseServiceTest::SetUp();
  }
  // An evidence request as an SGX core would make it; `mutate` spoils one aspect.
  Result<json> AttestSgx(const std::string& token, int mutate = 0) {
    MLC_ASSIGN_OR_RETURN(capsule::Nonce nonce, FreshNonce(token));
    capsule::EvidenceRequest request;
    request.capsule_id = provider_->header.capsule_id;
    request.nonce = nonce;
    capsule::BoxKeyPair box = capsule::GenerateBoxKeyPair();
    capsule::SigningKeyPair signing = capsule::GenerateSigningKeyPair();
    request.core_box_key = box.public_key;
    request.core_signing_key = signing.public_key;
    request.evidence_type = capsule::EvidenceType::kSgx;
    evidence::testing::SgxEnclaveSpec enclave;
    enclave.mr_enclave = mr_enclave_;
    enclave.report_data =
        capsule::ComputeReportData(nonce, request.capsule_id, box.public_key, signing.public_key);
    if (mutate == 1) enclave.report_data[0] ^= 1;      // bound to something else
    if (mutate == 2) enclave.mr_enclave[0] ^= 1;       // an enclave not on the allow-list
    if (mutate == 3) enclave.attribute_flags |= 0x02;  // a debug enclave
    MLC_ASSIGN_OR_RETURN(request.evidence, pki_->MakeSgxQuote(enclave));
    if (mutate == 4) request.evidence[kQuoteSignatureByte] ^= 1;  // a forged quote
    return service_->Attest(
        token,
        {{"evidence_request", capsule::ToBase64(capsule::SerializeEvidenceRequest(request))}});
  }

  static constexpr size_t kQuoteSignatureByte = 436;
  std::unique_ptr<evidence::testing::SyntheticIntelPki> pki_;
  std::array<uint8_t, 32> mr_enclave_{};
  std::string policy_;
};

TEST_F(SgxAttestTest, QuoteBoundToTheNonceGetsALeaseAndEveryFlawIsRefused) {
  // A provider whose capsule accepts only SGX with this MRENCLAVE, served with the PKI's root.
  provider_ = std::make_unique<TestProvider>(TestProvider::Make(
      mlcapsule::testing::ClassifierPlan(mlcapsule::testing::DefaultClassifierWeights()), policy_));
  service_.reset();
  fs::remove(dir_ / "server.db");
  auto store = OpenStore("sqlite:" + (dir_ / "server.db").string());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Migrate().ok());
  auto signer = capsule::SigningKeyPairFromSecret(provider_->key.secret.span());
  ASSERT_TRUE(signer.ok());
  ServiceOptions options;
  options.clock = [this] { return now_.load(); };
  options.anchors = pki_->Anchors();
  auto collateral = evidence::ParseIntelCollateral(pki_->CollateralJson());
  ASSERT_TRUE(collateral.ok()) << collateral.status().ToString();
  options.intel_collateral.push_back(*collateral);
  auto service = LicenseService::Create(std::move(store).value(),
                                        capsule::RandomSecret(capsule::kSymmetricKeyBytes),
                                        std::move(signer).value(), std::move(options));
  ASSERT_TRUE(service.ok()) << service.status().ToString();
  service_ = std::move(service).value();
  const std::string token = SetUpLicense("lic-sgx", 1000, 100);

  const std::pair<int, const char*> refused[] = {
      {1, "report data"}, {2, "allow-list"}, {3, "debug"}, {4, "quote_signature"}};
  for (const auto& [mutate, reason] : refused) {
    auto answer = AttestSgx(token, mutate);
    ASSERT_FALSE(answer.ok()) << mutate;
    EXPECT_EQ(HttpStatusFor(answer.status()) / 100, 4) << answer.status().ToString();
    EXPECT_NE(answer.status().message().find(reason), std::string::npos)
        << mutate << ": " << answer.status().message();
  }
  auto lease = AttestSgx(token);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ((*lease)["sequence"], 1);
  EXPECT_NE((*lease)["evidence"].get<std::string>().find("sgx"), std::string::npos);
  // Software evidence is refused where the policy names only SGX.
  auto client = OpenClient();
  auto software = Attest(*client, token, false);
  EXPECT_EQ(software.status().code(), StatusCode::kFailedPrecondition)
      << "the SGX lease has no report yet: " << software.status().message();
}

}  // namespace
}  // namespace mlcapsule::server
