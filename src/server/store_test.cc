// The storage back ends against the ledger rules of store.h. The suite is written against the
// Store interface so that the PostgreSQL back end runs the same tests when it lands.
#include "server/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <pqxx/pqxx>

#include "capsule/crypto.h"
#include "capsule/messages.h"

namespace mlcapsule::server {
namespace {

namespace fs = std::filesystem;

// Each test runs on both back ends: SQLite always, PostgreSQL when the harness
// (tests/with_postgres.sh) started a throwaway cluster and exported its socket directory.
class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    static int counter = 0;
    const std::string name =
        "mlc_store_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    dir_ = fs::temp_directory_path() / name;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    if (GetParam() == "sqlite") {
      url_ = "sqlite:" + (dir_ / "server.db").string();
    } else {
      const char* host = std::getenv("MLCAPSULE_TEST_POSTGRES_HOST");
      if (host == nullptr)
        GTEST_SKIP() << "no PostgreSQL: run through tests/with_postgres.sh (ctest does)";
      const std::string base = std::string("postgresql:///postgres?user=postgres&host=") + host;
      try {
        pqxx::connection admin(base);
        pqxx::nontransaction tx(admin);
        tx.exec("CREATE DATABASE " + name);
      } catch (const std::exception& e) {
        FAIL() << "creating a test database: " << e.what();
      }
      url_ = std::string("postgresql:///") + name + "?user=postgres&host=" + host;
    }
    store_ = OpenFresh();
    core_ = capsule::GenerateSigningKeyPair();
    lease_.license_id = "license-1";
    capsule::RandomBytes(lease_.lease_id);
    capsule::RandomBytes(lease_.capsule_id);
    lease_.sequence = 1;
    lease_.chain_base_count = 0;
    lease_.chain_base = capsule::ChainGenesis(lease_.capsule_id, core_.public_key);
    lease_.core_signing_key = core_.public_key;
    lease_.query_quota = 100;
    lease_.issued_at = 1000;
    lease_.expires_at = 2000;
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<Store> OpenFresh() {
    auto store = OpenStore(url_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->Migrate().ok());
    return std::move(store).value();
  }

  // A signed report of this lease from `from` to (to_count, a head derived from `branch`).
  std::vector<uint8_t> Report(uint64_t sequence, uint64_t to_count, int branch = 0,
                              int64_t created_at = 1500) {
    capsule::UsageReport r;
    r.capsule_id = lease_.capsule_id;
    r.license_id = lease_.license_id;
    r.lease_id = lease_.lease_id;
    r.report_sequence = sequence;
    r.core_signing_key = core_.public_key;
    r.from_count = lease_.chain_base_count;
    r.from_head = lease_.chain_base;
    r.to_count = to_count;
    const uint8_t tag[2] = {static_cast<uint8_t>(to_count), static_cast<uint8_t>(branch)};
    r.to_head = capsule::Hash({tag});
    r.created_at = created_at;
    return capsule::SignUsageReport(r, core_.secret);
  }
  Result<ReportResult> Record(const std::vector<uint8_t>& bytes) {
    auto parsed = capsule::ParseAndVerifyUsageReport(bytes);
    EXPECT_TRUE(parsed.ok());
    return store_->RecordUsageReport(*parsed, bytes, 1600);
  }

  fs::path dir_;
  std::string url_;
  std::unique_ptr<Store> store_;
  capsule::SigningKeyPair core_;
  LeaseRecord lease_;
};

TEST_P(StoreTest, MigrationsAreVersionedAndIdempotent) {
  auto version = store_->SchemaVersion();
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 1);
  EXPECT_TRUE(store_->Migrate().ok());
  EXPECT_EQ(*store_->SchemaVersion(), 1);
}

TEST_P(StoreTest, NoncesAreSingleUseAndShortLived) {
  capsule::Nonce a{}, b{}, unknown{};
  capsule::RandomBytes(a);
  capsule::RandomBytes(b);
  capsule::RandomBytes(unknown);
  ASSERT_TRUE(store_->IssueNonce(a, 100).ok());
  ASSERT_TRUE(store_->IssueNonce(b, 100).ok());
  EXPECT_FALSE(store_->IssueNonce(a, 200).ok());  // a nonce is issued once
  EXPECT_TRUE(store_->ConsumeNonce(a, 50).ok());
  EXPECT_EQ(store_->ConsumeNonce(a, 50).code(), StatusCode::kPermissionDenied);   // replayed
  EXPECT_EQ(store_->ConsumeNonce(b, 100).code(), StatusCode::kPermissionDenied);  // expired
  EXPECT_EQ(store_->ConsumeNonce(unknown, 50).code(), StatusCode::kPermissionDenied);
}

TEST_P(StoreTest, ReportsAreBilledOnceAndRetriesAreDuplicates) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  auto first = Record(Report(1, 10));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->outcome, ReportOutcome::kAccepted);
  EXPECT_EQ(first->billed_queries, 10u);
  auto retry = Record(Report(1, 10));  // the same bytes: Ed25519 signatures are deterministic
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->outcome, ReportOutcome::kDuplicate);
  auto second = Record(Report(2, 25));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->outcome, ReportOutcome::kAccepted);
  EXPECT_EQ(second->billed_queries, 15u);  // cumulative reports: only the new queries
  EXPECT_EQ(*store_->BilledQueries("license-1"), 25u);
  EXPECT_FALSE(*store_->HasFork("license-1"));
}

TEST_P(StoreTest, LateOlderReportIsStaleNotBilledAgain) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  const auto older = Report(1, 10);
  ASSERT_EQ(Record(Report(2, 20))->billed_queries, 20u);
  auto late = Record(older);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->outcome, ReportOutcome::kStale);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 20u);
}

TEST_P(StoreTest, ForksAreAlertsAndNeverBilled) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  ASSERT_EQ(Record(Report(1, 10))->outcome, ReportOutcome::kAccepted);
  // Another report with the same sequence (a restored state that went on differently).
  auto same_sequence = Record(Report(1, 12, /*branch=*/1));
  ASSERT_TRUE(same_sequence.ok());
  EXPECT_EQ(same_sequence->outcome, ReportOutcome::kFork);
  // The same count reached on another chain.
  auto other_head = Record(Report(2, 10, /*branch=*/1));
  ASSERT_TRUE(other_head.ok());
  EXPECT_EQ(other_head->outcome, ReportOutcome::kFork);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 10u);
  EXPECT_TRUE(*store_->HasFork("license-1"));
  auto alerts = store_->Alerts("license-1");
  ASSERT_TRUE(alerts.ok());
  ASSERT_EQ(alerts->size(), 2u);
  EXPECT_EQ((*alerts)[0].kind, "fork");
  EXPECT_NE((*alerts)[0].detail.find("sequence 1"), std::string::npos) << (*alerts)[0].detail;
}

TEST_P(StoreTest, ReportNotStartingAtTheLeasesChainPointIsAFork) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  lease_.chain_base_count = 5;  // the report claims another starting point than the stored lease
  auto moved = Record(Report(1, 10));
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->outcome, ReportOutcome::kFork);
  EXPECT_NE(moved->detail.find("chain point"), std::string::npos) << moved->detail;
}

TEST_P(StoreTest, UnknownLeaseIsNotFound) {
  auto result = Record(Report(1, 10));
  EXPECT_EQ(result.status().code(), StatusCode::kNotFound);
}

TEST_P(StoreTest, AcknowledgedReportsSurviveReopening) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  ASSERT_EQ(Record(Report(1, 7))->billed_queries, 7u);
  store_ = OpenFresh();  // a restarted server on the same file
  EXPECT_EQ(*store_->BilledQueries("license-1"), 7u);
  EXPECT_EQ(Record(Report(1, 7))->outcome, ReportOutcome::kDuplicate);
  EXPECT_EQ(Record(Report(2, 9))->billed_queries, 2u);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values("sqlite", "postgresql"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST(StoreUrlTest, UnsupportedAndBadUrlsAreErrors) {
  EXPECT_EQ(OpenStore("mysql://x").status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(OpenStore("sqlite:").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(OpenStore("sqlite:/nonexistent-dir/x/y.db").ok());
}

}  // namespace
}  // namespace mlcapsule::server
