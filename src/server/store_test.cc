// The storage back ends against the rules of store.h. Every test runs on both back ends, written
// against the Store interface only; the raw SQL here builds fixtures a Store cannot (a version-1
// database, a revoked admin token).
#include "server/store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <pqxx/pqxx>
#include <thread>

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
    name_ = "mlc_store_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    dir_ = fs::temp_directory_path() / name_;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    if (GetParam() == "postgresql") {
      const char* host = std::getenv("MLCAPSULE_TEST_POSTGRES_HOST");
      if (host == nullptr)
        GTEST_SKIP() << "no PostgreSQL: run through tests/with_postgres.sh (ctest does)";
      pg_host_ = host;
    }
    url_ = NewDatabase("main");
    store_ = OpenFresh();
    core_ = capsule::GenerateSigningKeyPair();
    capsule::RandomBytes(capsule_id_);
    lease_ = MakeLease("license-1", 1);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  bool postgres() const { return GetParam() == "postgresql"; }

  // An empty database of this test's back end; returns its URL.
  std::string NewDatabase(const std::string& suffix) {
    if (!postgres()) return "sqlite:" + (dir_ / (suffix + ".db")).string();
    const std::string name = name_ + "_" + suffix;
    try {
      pqxx::connection admin("postgresql:///postgres?user=postgres&host=" + pg_host_);
      pqxx::nontransaction tx(admin);
      tx.exec("CREATE DATABASE " + name);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "creating a test database: " << e.what();
    }
    return "postgresql:///" + name + "?user=postgres&host=" + pg_host_;
  }
  // Runs SQL on a database behind the Store's back.
  void RawSql(const std::string& url, const std::string& sql) {
    if (postgres()) {
      try {
        pqxx::connection connection(url);
        pqxx::work tx(connection);
        tx.exec(sql);
        tx.commit();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "raw SQL failed: " << e.what();
      }
      return;
    }
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(url.substr(std::strlen("sqlite:")).c_str(), &db), SQLITE_OK);
    char* message = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message), SQLITE_OK)
        << (message ? message : "");
    sqlite3_free(message);
    sqlite3_close(db);
  }
  // A bytes literal in the back end's SQL.
  std::string BlobLiteral(std::span<const uint8_t> bytes) const {
    return postgres() ? "decode('" + capsule::ToHex(bytes) + "', 'hex')"
                      : "X'" + capsule::ToHex(bytes) + "'";
  }

  std::unique_ptr<Store> Open(const std::string& url) {
    auto store = OpenStore(url);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }
  std::unique_ptr<Store> OpenFresh() {
    auto store = Open(url_);
    if (store) {
      EXPECT_TRUE(store->Migrate().ok());
    }
    return store;
  }

  // A lease of this test's capsule and core key, starting at the genesis chain point.
  LeaseRecord MakeLease(const std::string& license_id, uint64_t sequence) {
    LeaseRecord lease;
    lease.license_id = license_id;
    capsule::RandomBytes(lease.lease_id);
    capsule::RandomBytes(lease.nonce);
    lease.capsule_id = capsule_id_;
    lease.sequence = sequence;
    lease.chain_base_count = 0;
    lease.chain_base = capsule::ChainGenesis(capsule_id_, core_.public_key);
    lease.core_signing_key = core_.public_key;
    lease.query_quota = 100000;
    lease.issued_at = 1000;
    lease.expires_at = 2000;
    return lease;
  }

  // A signed report of `lease` from its chain base to (to_count, a head derived from `branch`).
  std::vector<uint8_t> ReportFor(const LeaseRecord& lease, uint64_t sequence, uint64_t to_count,
                                 int branch = 0, std::vector<capsule::Alert> alerts = {}) {
    capsule::UsageReport r;
    r.capsule_id = lease.capsule_id;
    r.license_id = lease.license_id;
    r.lease_id = lease.lease_id;
    r.report_sequence = sequence;
    r.core_signing_key = core_.public_key;
    r.from_count = lease.chain_base_count;
    r.from_head = lease.chain_base;
    r.to_count = to_count;
    const uint64_t tag[2] = {to_count, static_cast<uint64_t>(branch)};
    r.to_head = capsule::Hash({{reinterpret_cast<const uint8_t*>(tag), sizeof(tag)}});
    r.created_at = 1500;
    r.alerts = std::move(alerts);
    return capsule::SignUsageReport(r, core_.secret);
  }
  std::vector<uint8_t> Report(uint64_t sequence, uint64_t to_count, int branch = 0) {
    return ReportFor(lease_, sequence, to_count, branch);
  }
  Result<ReportResult> Record(const std::vector<uint8_t>& bytes, int64_t now = 1600) {
    auto parsed = capsule::ParseAndVerifyUsageReport(bytes);
    EXPECT_TRUE(parsed.ok());
    return store_->RecordUsageReport(*parsed, bytes, now);
  }
  static std::vector<Result<ReportResult>> RecordBatch(
      Store& store, const std::vector<std::vector<uint8_t>>& reports, int64_t now = 1600) {
    std::vector<capsule::UsageReport> parsed;
    parsed.reserve(reports.size());
    std::vector<PendingReport> batch;
    for (const auto& bytes : reports) {
      auto report = capsule::ParseAndVerifyUsageReport(bytes);
      EXPECT_TRUE(report.ok());
      parsed.push_back(std::move(report).value());
      batch.push_back({&parsed.back(), bytes});
    }
    return store.RecordUsageReports(batch, now);
  }

  // A provider, a customer, a capsule (this test's) and licenses of it at these prices.
  void CreateCustomerWithLicenses(const std::vector<std::pair<std::string, int64_t>>& licenses) {
    ASSERT_TRUE(store_->CreateProvider({"prov", "Provider", 10}).ok());
    ASSERT_TRUE(store_->CreateCustomer({"cust", "prov", "Customer", 11}).ok());
    CapsuleRecord capsule{capsule_id_, "prov", "model", {1, 2, 3}, {4, 5}, 12};
    ASSERT_TRUE(store_->CreateCapsule(capsule).ok());
    for (const auto& [id, price] : licenses) {
      LicenseRecord license = MakeLicense(id, "cust");
      license.price_micros = price;
      ASSERT_TRUE(store_->CreateLicense(license).ok());
    }
  }
  LicenseRecord MakeLicense(const std::string& id, const std::string& customer_id) {
    LicenseRecord license;
    license.id = id;
    license.customer_id = customer_id;
    license.capsule_id = capsule_id_;
    capsule::RandomBytes(license.token_hash);
    license.query_quota = 1000;
    license.lease_queries = 100;
    license.lease_seconds = 3600;
    license.expires_at = 99999;
    license.price_micros = 2500;
    license.currency = "EUR";
    license.rate_per_minute = 60;
    license.created_at = 13;
    return license;
  }

  std::string name_;
  std::string pg_host_;
  fs::path dir_;
  std::string url_;
  std::unique_ptr<Store> store_;
  capsule::SigningKeyPair core_;
  capsule::CapsuleId capsule_id_{};
  LeaseRecord lease_;
};

TEST_P(StoreTest, MigrationsAreVersionedAndIdempotent) {
  auto version = store_->SchemaVersion();
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 3);
  EXPECT_TRUE(store_->Migrate().ok());
  EXPECT_EQ(*store_->SchemaVersion(), 3);
  auto reopened = OpenFresh();
  EXPECT_EQ(*reopened->SchemaVersion(), 3);
}

// The schema of version 1, as it shipped (a database written by that server).
constexpr const char* kSqliteVersion1 = R"sql(
CREATE TABLE nonces (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE leases (lease_id BLOB PRIMARY KEY, license_id TEXT NOT NULL,
  capsule_id BLOB NOT NULL, sequence INTEGER NOT NULL, chain_base_count INTEGER NOT NULL,
  chain_base BLOB NOT NULL, core_key BLOB NOT NULL, query_quota INTEGER NOT NULL,
  issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, recorded_count INTEGER NOT NULL,
  recorded_head BLOB NOT NULL);
CREATE INDEX leases_license ON leases(license_id);
CREATE TABLE usage_reports (digest BLOB PRIMARY KEY, lease_id BLOB NOT NULL,
  license_id TEXT NOT NULL, report_sequence INTEGER NOT NULL, to_count INTEGER NOT NULL,
  to_head BLOB NOT NULL, outcome TEXT NOT NULL, billed INTEGER NOT NULL,
  created_at INTEGER NOT NULL, bytes BLOB NOT NULL);
CREATE INDEX usage_reports_lease ON usage_reports(lease_id, report_sequence);
CREATE INDEX usage_reports_license ON usage_reports(license_id);
CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, license_id TEXT NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL, created_at INTEGER NOT NULL,
  resolved INTEGER NOT NULL DEFAULT 0);
CREATE INDEX alerts_license ON alerts(license_id);
PRAGMA user_version=1;
)sql";
constexpr const char* kPostgresVersion1 = R"sql(
CREATE TABLE nonces (nonce BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL,
  used BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE leases (lease_id BYTEA PRIMARY KEY, license_id TEXT NOT NULL,
  capsule_id BYTEA NOT NULL, sequence BIGINT NOT NULL, chain_base_count BIGINT NOT NULL,
  chain_base BYTEA NOT NULL, core_key BYTEA NOT NULL, query_quota BIGINT NOT NULL,
  issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, recorded_count BIGINT NOT NULL,
  recorded_head BYTEA NOT NULL);
CREATE INDEX leases_license ON leases(license_id);
CREATE TABLE usage_reports (digest BYTEA PRIMARY KEY, lease_id BYTEA NOT NULL,
  license_id TEXT NOT NULL, report_sequence BIGINT NOT NULL, to_count BIGINT NOT NULL,
  to_head BYTEA NOT NULL, outcome TEXT NOT NULL, billed BIGINT NOT NULL,
  created_at BIGINT NOT NULL, bytes BYTEA NOT NULL);
CREATE INDEX usage_reports_lease ON usage_reports(lease_id, report_sequence);
CREATE INDEX usage_reports_license ON usage_reports(license_id);
CREATE TABLE alerts (id BIGSERIAL PRIMARY KEY, license_id TEXT NOT NULL, kind TEXT NOT NULL,
  detail TEXT NOT NULL, created_at BIGINT NOT NULL, resolved BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX alerts_license ON alerts(license_id);
CREATE TABLE mlcapsule_schema (version INTEGER NOT NULL);
INSERT INTO mlcapsule_schema VALUES (1);
)sql";

TEST_P(StoreTest, VersionOneDatabaseMigratesKeepingLeasesAndReports) {
  const std::string url = NewDatabase("v1");
  RawSql(url, postgres() ? kPostgresVersion1 : kSqliteVersion1);
  // A lease and an accepted report up to query 10, as the version-1 server stored them.
  const auto first = Report(1, 10);
  auto parsed = capsule::ParseAndVerifyUsageReport(first);
  ASSERT_TRUE(parsed.ok());
  const std::string base = BlobLiteral(lease_.chain_base);
  const std::string head = BlobLiteral(parsed->to_head);
  RawSql(url, "INSERT INTO leases VALUES(" + BlobLiteral(lease_.lease_id) + ", 'license-1', " +
                  BlobLiteral(lease_.capsule_id) + ", 1, 0, " + base + ", " +
                  BlobLiteral(lease_.core_signing_key) + ", 100, 1000, 2000, 10, " + head + ")");
  RawSql(url, "INSERT INTO usage_reports VALUES(" + BlobLiteral(capsule::Hash({first})) + ", " +
                  BlobLiteral(lease_.lease_id) + ", 'license-1', 1, 10, " + head +
                  ", 'accepted', 10, 1600, " + BlobLiteral(first) + ")");

  store_ = Open(url);
  ASSERT_TRUE(store_);
  EXPECT_EQ(*store_->SchemaVersion(), 1);
  ASSERT_TRUE(store_->Migrate().ok());
  EXPECT_EQ(*store_->SchemaVersion(), 3);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 10u);
  EXPECT_EQ(Record(first)->outcome, ReportOutcome::kDuplicate);
  EXPECT_EQ(Record(Report(2, 25))->billed_queries, 15u);
  auto latest = store_->LatestLease("license-1");
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->lease.lease_id, lease_.lease_id);
  EXPECT_EQ((*latest)->lease.nonce, capsule::Nonce{});  // recorded before nonces were
  EXPECT_EQ((*latest)->recorded_count, 25u);
  EXPECT_EQ((*latest)->reports, 2u);
  // The old lease's NULL nonce does not collide with new leases.
  EXPECT_TRUE(store_->RecordLease(MakeLease("license-1", 2)).ok());
  EXPECT_TRUE(store_->RecordLease(MakeLease("license-2", 1)).ok());
  EXPECT_TRUE(store_->Migrate().ok());
  // The report stored before ids existed got one, and lists before the one recorded after.
  auto listed = store_->ListUsageReports("license-1", 0, 10, 1 << 20);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].bytes, first);
  EXPECT_EQ((*listed)[0].created_at, 1600);
  EXPECT_LT((*listed)[0].id, (*listed)[1].id);
  EXPECT_EQ((*listed)[1].to_count, 25u);
}

TEST_P(StoreTest, AdminEntitiesAreCreatedListedAndChecked) {
  EXPECT_TRUE(store_->ListProviders()->empty());
  ASSERT_TRUE(store_->CreateProvider({"prov-a", "Provider A", 10}).ok());
  ASSERT_TRUE(store_->CreateProvider({"prov-b", "Provider B", 11}).ok());
  EXPECT_EQ(store_->CreateProvider({"prov-a", "again", 12}).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(store_->CreateProvider({"bad id", "x", 12}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateProvider({"", "x", 12}).code(), StatusCode::kInvalidArgument);
  auto providers = store_->ListProviders();
  ASSERT_TRUE(providers.ok());
  ASSERT_EQ(providers->size(), 2u);
  EXPECT_EQ((*providers)[0].id, "prov-a");
  EXPECT_EQ((*providers)[0].name, "Provider A");
  EXPECT_EQ((*providers)[1].created_at, 11);

  EXPECT_EQ(store_->CreateCustomer({"cust-1", "nobody", "C", 20}).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->CreateCustomer({"cust-1", "prov-a", "Customer 1", 20}).ok());
  ASSERT_TRUE(store_->CreateCustomer({"cust-2", "prov-b", "Customer 2", 21}).ok());
  EXPECT_EQ(store_->CreateCustomer({"cust-1", "prov-b", "C", 22}).code(),
            StatusCode::kAlreadyExists);
  auto customer = store_->GetCustomer("cust-1");
  ASSERT_TRUE(customer.ok());
  EXPECT_EQ(customer->provider_id, "prov-a");
  EXPECT_EQ(customer->name, "Customer 1");
  EXPECT_EQ(customer->created_at, 20);
  EXPECT_EQ(store_->GetCustomer("cust-9").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ListCustomers("")->size(), 2u);
  ASSERT_EQ(store_->ListCustomers("prov-b")->size(), 1u);
  EXPECT_EQ((*store_->ListCustomers("prov-b"))[0].id, "cust-2");
  EXPECT_TRUE(store_->ListCustomers("prov-x")->empty());

  CapsuleRecord capsule{capsule_id_, "prov-a", "mobilenet", {1, 2, 3, 4}, {9, 8, 7}, 30};
  CapsuleRecord orphan = capsule;
  orphan.provider_id = "nobody";
  EXPECT_EQ(store_->CreateCapsule(orphan).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->CreateCapsule(capsule).ok());
  EXPECT_EQ(store_->CreateCapsule(capsule).code(), StatusCode::kAlreadyExists);
  auto stored = store_->GetCapsule(capsule_id_);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(stored->capsule_id, capsule_id_);
  EXPECT_EQ(stored->provider_id, "prov-a");
  EXPECT_EQ(stored->name, "mobilenet");
  EXPECT_EQ(stored->header, capsule.header);
  EXPECT_EQ(stored->wrapped_key, capsule.wrapped_key);
  EXPECT_EQ(stored->created_at, 30);
  capsule::CapsuleId other{};
  capsule::RandomBytes(other);
  EXPECT_EQ(store_->GetCapsule(other).status().code(), StatusCode::kNotFound);
  ASSERT_EQ(store_->ListCapsules()->size(), 1u);

  LicenseRecord license = MakeLicense("lic-1", "cust-1");
  license.query_quota = 5000;
  license.price_micros = 1234;
  license.currency = "USD";
  license.rate_per_minute = 90;
  LicenseRecord bad = license;
  bad.customer_id = "cust-9";
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kNotFound);
  bad = license;
  bad.capsule_id = other;
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kNotFound);
  bad = license;
  bad.query_quota = (uint64_t{1} << 62) + 1;
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kInvalidArgument);
  bad = license;
  bad.price_micros = -1;
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(store_->CreateLicense(license).ok());
  bad = license;
  capsule::RandomBytes(bad.token_hash);
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kAlreadyExists);  // the same id
  bad = license;
  bad.id = "lic-2";
  EXPECT_EQ(store_->CreateLicense(bad).code(), StatusCode::kAlreadyExists);  // the same token
  ASSERT_TRUE(store_->CreateLicense(MakeLicense("lic-3", "cust-2")).ok());

  auto got = store_->GetLicense("lic-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->customer_id, "cust-1");
  EXPECT_EQ(got->capsule_id, capsule_id_);
  EXPECT_EQ(got->token_hash, license.token_hash);
  EXPECT_EQ(got->query_quota, 5000u);
  EXPECT_EQ(got->lease_queries, 100u);
  EXPECT_EQ(got->lease_seconds, 3600);
  EXPECT_EQ(got->expires_at, 99999);
  EXPECT_EQ(got->price_micros, 1234);
  EXPECT_EQ(got->currency, "USD");
  EXPECT_EQ(got->rate_per_minute, 90u);
  EXPECT_FALSE(got->revoked);
  EXPECT_EQ(got->created_at, 13);
  EXPECT_EQ(store_->GetLicense("lic-9").status().code(), StatusCode::kNotFound);
  auto by_token = store_->FindLicenseByToken(license.token_hash);
  ASSERT_TRUE(by_token.ok());
  EXPECT_EQ(by_token->id, "lic-1");
  capsule::Digest unknown_token{};
  capsule::RandomBytes(unknown_token);
  EXPECT_EQ(store_->FindLicenseByToken(unknown_token).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->ListLicenses("")->size(), 2u);
  ASSERT_EQ(store_->ListLicenses("cust-2")->size(), 1u);
  EXPECT_EQ((*store_->ListLicenses("cust-2"))[0].id, "lic-3");

  ASSERT_TRUE(store_->RevokeLicense("lic-1", 500).ok());
  ASSERT_TRUE(store_->RevokeLicense("lic-1", 600).ok());  // idempotent: keeps the first time
  EXPECT_EQ(store_->RevokeLicense("lic-9", 500).code(), StatusCode::kNotFound);
  got = store_->GetLicense("lic-1");
  EXPECT_TRUE(got->revoked);
  EXPECT_EQ(got->revoked_at, 500);
  EXPECT_TRUE(store_->FindLicenseByToken(license.token_hash)->revoked);
  EXPECT_FALSE(store_->GetLicense("lic-3")->revoked);
}

TEST_P(StoreTest, AdminTokensAreFoundByHashUnlessRevoked) {
  EXPECT_EQ(*store_->CountAdminTokens(), 0);
  AdminTokenRecord token{"root", "first admin", {}, 40};
  capsule::RandomBytes(token.token_hash);
  ASSERT_TRUE(store_->CreateAdminToken(token).ok());
  EXPECT_EQ(*store_->CountAdminTokens(), 1);
  auto found = store_->FindAdminToken(token.token_hash);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->id, "root");
  EXPECT_EQ(found->name, "first admin");
  EXPECT_EQ(found->token_hash, token.token_hash);
  EXPECT_EQ(found->created_at, 40);
  capsule::Digest unknown{};
  capsule::RandomBytes(unknown);
  EXPECT_EQ(store_->FindAdminToken(unknown).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->CreateAdminToken(token).code(), StatusCode::kAlreadyExists);
  AdminTokenRecord same_hash{"other", "x", token.token_hash, 41};
  EXPECT_EQ(store_->CreateAdminToken(same_hash).code(), StatusCode::kAlreadyExists);

  RawSql(url_, postgres() ? "UPDATE admin_tokens SET revoked = TRUE"
                          : "UPDATE admin_tokens SET revoked = 1");
  EXPECT_EQ(store_->FindAdminToken(token.token_hash).status().code(), StatusCode::kNotFound);
}

TEST_P(StoreTest, ReplayedNonceAndConcurrentRenewalAreAlreadyExists) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  LeaseRecord replay = MakeLease("license-1", 2);
  replay.nonce = lease_.nonce;
  Status s = store_->RecordLease(replay);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(s.message().find("already used (a replayed attestation)"), std::string::npos)
      << s.message();
  replay.license_id = "license-2";  // the nonce is unique over every license's leases
  EXPECT_EQ(store_->RecordLease(replay).code(), StatusCode::kAlreadyExists);

  LeaseRecord concurrent = MakeLease("license-1", 1);
  s = store_->RecordLease(concurrent);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(s.message().find("license license-1 already has lease sequence 1 (a concurrent "
                             "renewal)"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(store_->RecordLease(MakeLease("license-2", 1)).ok());
  EXPECT_TRUE(store_->RecordLease(MakeLease("license-1", 2)).ok());

  LeaseRecord huge = MakeLease("license-1", (uint64_t{1} << 62) + 1);
  EXPECT_EQ(store_->RecordLease(huge).code(), StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, LatestLeaseIsTheHighestSequenceWithItsRecordedPoint) {
  auto none = store_->LatestLease("license-1");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  ASSERT_EQ(Record(Report(1, 10))->billed_queries, 10u);
  LeaseRecord second = MakeLease("license-1", 2);
  second.chain_base_count = 10;
  auto parsed = capsule::ParseAndVerifyUsageReport(Report(1, 10));
  second.chain_base = parsed->to_head;
  ASSERT_TRUE(store_->RecordLease(second).ok());
  ASSERT_TRUE(store_->RecordLease(MakeLease("license-2", 7)).ok());

  auto latest = store_->LatestLease("license-1");
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  ASSERT_TRUE(latest->has_value());
  const LeaseState& state = **latest;
  EXPECT_EQ(state.lease.lease_id, second.lease_id);
  EXPECT_EQ(state.lease.license_id, "license-1");
  EXPECT_EQ(state.lease.capsule_id, capsule_id_);
  EXPECT_EQ(state.lease.sequence, 2u);
  EXPECT_EQ(state.lease.chain_base_count, 10u);
  EXPECT_EQ(state.lease.chain_base, second.chain_base);
  EXPECT_EQ(state.lease.core_signing_key, core_.public_key);
  EXPECT_EQ(state.lease.query_quota, second.query_quota);
  EXPECT_EQ(state.lease.issued_at, 1000);
  EXPECT_EQ(state.lease.expires_at, 2000);
  EXPECT_EQ(state.lease.nonce, second.nonce);
  EXPECT_EQ(state.recorded_count, 10u);  // its chain base: nothing reported on it yet
  EXPECT_EQ(state.recorded_head, second.chain_base);
  EXPECT_EQ(state.reports, 0u);

  const auto on_second = ReportFor(second, 1, 14);
  ASSERT_EQ(Record(on_second)->billed_queries, 4u);
  ASSERT_EQ(Record(on_second)->outcome, ReportOutcome::kDuplicate);  // not counted
  ASSERT_EQ(Record(ReportFor(second, 2, 12))->outcome, ReportOutcome::kStale);
  latest = store_->LatestLease("license-1");
  EXPECT_EQ((*latest)->recorded_count, 14u);
  EXPECT_EQ((*latest)->recorded_head, capsule::ParseAndVerifyUsageReport(on_second)->to_head);
  EXPECT_EQ((*latest)->reports, 2u);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 14u);

  // The attestation's one read agrees with the three it stands for.
  auto renewal = store_->LicenseRenewalState("license-1");
  ASSERT_TRUE(renewal.ok()) << renewal.status().ToString();
  EXPECT_FALSE(renewal->fork);
  EXPECT_EQ(renewal->billed, 14u);
  ASSERT_TRUE(renewal->latest.has_value());
  EXPECT_EQ(renewal->latest->lease.lease_id, second.lease_id);
  EXPECT_EQ(renewal->latest->lease.nonce, second.nonce);
  EXPECT_EQ(renewal->latest->recorded_count, 14u);
  EXPECT_EQ(renewal->latest->reports, 2u);
  ASSERT_TRUE(store_->RaiseAlert("license-1", "fork", "a test fork", 1700).ok());
  EXPECT_TRUE(store_->LicenseRenewalState("license-1")->fork);
  auto fresh = store_->LicenseRenewalState("license-9");  // no lease, nothing billed
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_FALSE(fresh->fork);
  EXPECT_FALSE(fresh->latest.has_value());
  EXPECT_EQ(fresh->billed, 0u);
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

TEST_P(StoreTest, RecordedReportsListInOrderWithTheirExactBytesAndPage) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  const LeaseRecord other = MakeLease("license-2", 1);
  ASSERT_TRUE(store_->RecordLease(other).ok());
  EXPECT_TRUE(store_->ListUsageReports("license-1", 0, 10, 1 << 20)->empty());
  const auto first = Report(1, 10);
  const auto second = Report(2, 25);
  const auto fork = Report(2, 25, /*branch=*/1);
  ASSERT_EQ(Record(first, 1601)->outcome, ReportOutcome::kAccepted);
  ASSERT_EQ(Record(ReportFor(other, 1, 5), 1602)->outcome, ReportOutcome::kAccepted);
  ASSERT_EQ(Record(second, 1603)->outcome, ReportOutcome::kAccepted);
  ASSERT_EQ(Record(first, 1604)->outcome, ReportOutcome::kDuplicate);  // not recorded again
  ASSERT_EQ(Record(fork, 1605)->outcome, ReportOutcome::kFork);

  auto all = store_->ListUsageReports("license-1", 0, 10, 1 << 20);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].bytes, first);
  EXPECT_EQ((*all)[0].lease_id, lease_.lease_id);
  EXPECT_EQ((*all)[0].report_sequence, 1u);
  EXPECT_EQ((*all)[0].to_count, 10u);
  EXPECT_EQ((*all)[0].outcome, ReportOutcome::kAccepted);
  EXPECT_EQ((*all)[0].billed_queries, 10u);
  EXPECT_EQ((*all)[0].created_at, 1601);
  EXPECT_EQ((*all)[1].bytes, second);
  EXPECT_EQ((*all)[1].billed_queries, 15u);
  EXPECT_EQ((*all)[2].bytes, fork);
  EXPECT_EQ((*all)[2].outcome, ReportOutcome::kFork);
  EXPECT_EQ((*all)[2].billed_queries, 0u);
  EXPECT_EQ((*all)[2].created_at, 1605);
  EXPECT_LT((*all)[0].id, (*all)[1].id);
  EXPECT_LT((*all)[1].id, (*all)[2].id);
  ASSERT_EQ(store_->ListUsageReports("license-2", 0, 10, 1 << 20)->size(), 1u);
  EXPECT_TRUE(store_->ListUsageReports("license-9", 0, 10, 1 << 20)->empty());

  // Paging by id and count.
  auto page = store_->ListUsageReports("license-1", 0, 2, 1 << 20);
  ASSERT_EQ(page->size(), 2u);
  page = store_->ListUsageReports("license-1", (*page)[1].id, 2, 1 << 20);
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].bytes, fork);
  EXPECT_TRUE(store_->ListUsageReports("license-1", (*page)[0].id, 2, 1 << 20)->empty());
  // Paging by bytes: the first report always comes, then only what fits.
  page = store_->ListUsageReports("license-1", 0, 10, 1);
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].bytes, first);
  page = store_->ListUsageReports("license-1", 0, 10, first.size() + second.size());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[1].bytes, second);
  // Ids keep growing after a restart.
  store_ = OpenFresh();
  ASSERT_EQ(Record(Report(3, 30), 1606)->outcome, ReportOutcome::kAccepted);
  all = store_->ListUsageReports("license-1", (*all)[2].id, 10, 1 << 20);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].to_count, 30u);
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

TEST_P(StoreTest, ResolvedForksNoLongerBlock) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  ASSERT_EQ(Record(Report(1, 10))->outcome, ReportOutcome::kAccepted);
  ASSERT_EQ(Record(Report(1, 12, /*branch=*/1))->outcome, ReportOutcome::kFork);
  ASSERT_TRUE(store_->RaiseAlert("license-1", "replay", "a replayed attestation", 1700).ok());
  EXPECT_TRUE(*store_->HasFork("license-1"));
  EXPECT_EQ(*store_->ResolveForks("license-1"), 1);
  EXPECT_FALSE(*store_->HasFork("license-1"));
  EXPECT_EQ(*store_->ResolveForks("license-1"), 0);
  auto alerts = store_->Alerts("license-1");
  ASSERT_EQ(alerts->size(), 2u);
  EXPECT_TRUE((*alerts)[0].resolved);
  EXPECT_EQ((*alerts)[1].kind, "replay");
  EXPECT_FALSE((*alerts)[1].resolved);  // only forks are resolved
  // A new fork blocks again.
  ASSERT_EQ(Record(Report(2, 10, /*branch=*/2))->outcome, ReportOutcome::kFork);
  EXPECT_TRUE(*store_->HasFork("license-1"));
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

TEST_P(StoreTest, MixedBatchGetsOneResultPerReportInOrder) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  const LeaseRecord other = MakeLease("license-2", 1);
  ASSERT_TRUE(store_->RecordLease(other).ok());
  const LeaseRecord unknown = MakeLease("license-3", 1);  // never recorded
  const auto first = Report(1, 10);
  auto results =
      RecordBatch(*store_, {
                               first,
                               first,                        // a duplicate in the batch
                               ReportFor(unknown, 1, 5),     // an unknown lease
                               Report(1, 12, /*branch=*/1),  // a fork of `first`
                               ReportFor(other, 1, 4), Report(2, 20), Report(3, 15),  // stale
                           });
  ASSERT_EQ(results.size(), 7u);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[0]->outcome, ReportOutcome::kAccepted);
  EXPECT_EQ(results[0]->billed_queries, 10u);
  ASSERT_TRUE(results[1].ok());
  EXPECT_EQ(results[1]->outcome, ReportOutcome::kDuplicate);
  EXPECT_EQ(results[2].status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(results[3].ok());
  EXPECT_EQ(results[3]->outcome, ReportOutcome::kFork);
  ASSERT_TRUE(results[4].ok());
  EXPECT_EQ(results[4]->billed_queries, 4u);
  ASSERT_TRUE(results[5].ok());
  EXPECT_EQ(results[5]->outcome, ReportOutcome::kAccepted);
  EXPECT_EQ(results[5]->billed_queries, 10u);
  ASSERT_TRUE(results[6].ok());
  EXPECT_EQ(results[6]->outcome, ReportOutcome::kStale);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 20u);
  EXPECT_EQ(*store_->BilledQueries("license-2"), 4u);
  EXPECT_TRUE(*store_->HasFork("license-1"));
  EXPECT_FALSE(*store_->HasFork("license-2"));
  EXPECT_EQ((*store_->LatestLease("license-1"))->reports, 4u);  // accepted, fork, 2, stale

  // The same batch again (a lost response): every report is a duplicate but the unknown lease.
  results = RecordBatch(*store_, {first, Report(2, 20), ReportFor(unknown, 1, 5)});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0]->outcome, ReportOutcome::kDuplicate);
  EXPECT_EQ(results[1]->outcome, ReportOutcome::kDuplicate);
  EXPECT_EQ(results[2].status().code(), StatusCode::kNotFound);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 20u);
  EXPECT_TRUE(RecordBatch(*store_, {}).empty());
}

// A statement that fails inside the group commit (injected here by a trigger) rolls the batch
// back; the reports are then recorded one per transaction, so only the failing one fails.
TEST_P(StoreTest, AFailingStatementFallsBackToOneTransactionPerReport) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  RawSql(url_, postgres() ? R"sql(
CREATE FUNCTION mlc_test_fail() RETURNS trigger AS $$
BEGIN
  IF NEW.report_sequence = 666 THEN RAISE EXCEPTION 'injected failure'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER mlc_test_fail BEFORE INSERT ON usage_reports FOR EACH ROW
  EXECUTE FUNCTION mlc_test_fail();
)sql"
                          : R"sql(
CREATE TRIGGER mlc_test_fail BEFORE INSERT ON usage_reports WHEN NEW.report_sequence = 666
BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
)sql");
  auto results = RecordBatch(*store_, {Report(1, 10), Report(666, 15), Report(2, 20)});
  ASSERT_EQ(results.size(), 3u);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[0]->billed_queries, 10u);
  EXPECT_EQ(results[1].status().code(), StatusCode::kIoError);
  EXPECT_NE(results[1].status().message().find("injected failure"), std::string::npos)
      << results[1].status().ToString();
  ASSERT_TRUE(results[2].ok()) << results[2].status().ToString();
  EXPECT_EQ(results[2]->billed_queries, 10u);
  EXPECT_EQ(*store_->BilledQueries("license-1"), 20u);
  EXPECT_EQ((*store_->LatestLease("license-1"))->reports, 2u);
}

TEST_P(StoreTest, AlertsCarriedInAcceptedReportsAreStored) {
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  const LeaseRecord other = MakeLease("license-2", 1);
  ASSERT_TRUE(store_->RecordLease(other).ok());
  ASSERT_TRUE(store_->RaiseAlert("license-2", "replay", "a replayed attestation", 1550).ok());
  const std::vector<capsule::Alert> alarms = {{"prada", 7, "query distribution looks synthetic"},
                                              {"rate-limit", 9, "over 100 queries per second"}};
  ASSERT_EQ(RecordBatch(*store_, {ReportFor(lease_, 1, 10, 0, alarms)}, 1600)[0]->outcome,
            ReportOutcome::kAccepted);
  // Not stored again from a duplicate, a stale report or a fork.
  ASSERT_EQ(Record(ReportFor(lease_, 1, 10, 0, alarms))->outcome, ReportOutcome::kDuplicate);
  ASSERT_EQ(Record(ReportFor(lease_, 2, 20))->outcome, ReportOutcome::kAccepted);
  ASSERT_EQ(Record(ReportFor(lease_, 3, 15, 0, alarms))->outcome, ReportOutcome::kStale);

  auto alerts = store_->Alerts("license-1");
  ASSERT_TRUE(alerts.ok()) << alerts.status().ToString();
  ASSERT_EQ(alerts->size(), 2u);
  EXPECT_EQ((*alerts)[0].kind, "prada");
  EXPECT_EQ((*alerts)[0].license_id, "license-1");
  EXPECT_NE((*alerts)[0].detail.find("at query 7"), std::string::npos) << (*alerts)[0].detail;
  EXPECT_NE((*alerts)[0].detail.find("synthetic"), std::string::npos);
  EXPECT_EQ((*alerts)[0].created_at, 1600);
  EXPECT_EQ((*alerts)[1].kind, "rate-limit");
  EXPECT_NE((*alerts)[1].detail.find("at query 9"), std::string::npos);
  EXPECT_FALSE(*store_->HasFork("license-1"));  // alarms are not forks

  auto all = store_->Alerts("");
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].kind, "replay");
  EXPECT_EQ((*all)[0].license_id, "license-2");
  auto after = store_->Alerts("", (*all)[1].id);
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].kind, "rate-limit");
  EXPECT_TRUE(store_->Alerts("license-1", (*all)[2].id)->empty());

  // A later cumulative report repeats the core's alarms: only the one raised since is new.
  std::vector<capsule::Alert> more = alarms;
  more.push_back({"prada", 25, "again"});
  ASSERT_EQ(Record(ReportFor(lease_, 4, 30, 0, more))->outcome, ReportOutcome::kAccepted);
  auto newer = store_->Alerts("license-1", (*all)[2].id);
  ASSERT_EQ(newer->size(), 1u);
  EXPECT_NE((*newer)[0].detail.find("at query 25"), std::string::npos) << (*newer)[0].detail;
}

TEST_P(StoreTest, BillingSumsAPeriodByReceiveTimeAtEachLicensesPrice) {
  CreateCustomerWithLicenses({{"license-1", 2500}, {"license-2", 1000}, {"license-idle", 700}});
  const LeaseRecord second = MakeLease("license-2", 1);
  ASSERT_TRUE(store_->RecordLease(lease_).ok());
  ASSERT_TRUE(store_->RecordLease(second).ok());
  ASSERT_EQ(Record(Report(1, 10), /*now=*/100)->billed_queries, 10u);
  ASSERT_EQ(Record(Report(2, 25), /*now=*/200)->billed_queries, 15u);
  ASSERT_EQ(Record(Report(3, 26), /*now=*/300)->billed_queries, 1u);
  ASSERT_EQ(Record(ReportFor(second, 1, 8), /*now=*/250)->billed_queries, 8u);
  ASSERT_EQ(Record(Report(1, 11, /*branch=*/1), /*now=*/150)->outcome, ReportOutcome::kFork);
  // Another customer's license is not on this bill.
  ASSERT_TRUE(store_->CreateCustomer({"cust-2", "prov", "Other", 11}).ok());
  ASSERT_TRUE(store_->CreateLicense(MakeLicense("license-other", "cust-2")).ok());

  auto bill = store_->Billing("cust", 0, 1000);
  ASSERT_TRUE(bill.ok()) << bill.status().ToString();
  ASSERT_EQ(bill->size(), 3u);
  EXPECT_EQ((*bill)[0].license_id, "license-1");
  EXPECT_EQ((*bill)[0].capsule_id, capsule_id_);
  EXPECT_EQ((*bill)[0].queries, 26u);
  EXPECT_EQ((*bill)[0].price_micros, 2500);
  EXPECT_EQ((*bill)[0].currency, "EUR");
  EXPECT_EQ((*bill)[0].amount_micros, 26 * 2500);
  EXPECT_EQ((*bill)[1].license_id, "license-2");
  EXPECT_EQ((*bill)[1].queries, 8u);
  EXPECT_EQ((*bill)[1].amount_micros, 8000);
  EXPECT_EQ((*bill)[2].license_id, "license-idle");
  EXPECT_EQ((*bill)[2].queries, 0u);
  EXPECT_EQ((*bill)[2].amount_micros, 0);

  // [from, to): the report received at 200 is in the first period only.
  bill = store_->Billing("cust", 100, 201);
  EXPECT_EQ((*bill)[0].queries, 25u);
  EXPECT_EQ((*bill)[1].queries, 0u);
  bill = store_->Billing("cust", 201, 300);
  EXPECT_EQ((*bill)[0].queries, 0u);
  EXPECT_EQ((*bill)[1].queries, 8u);
  bill = store_->Billing("cust", 300, 301);
  EXPECT_EQ((*bill)[0].queries, 1u);
  EXPECT_EQ((*bill)[0].amount_micros, 2500);
  EXPECT_EQ(store_->Billing("cust", 300, 300)->at(0).queries, 0u);
  EXPECT_EQ(store_->Billing("cust", 301, 300).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Billing("nobody", 0, 1000).status().code(), StatusCode::kNotFound);
  ASSERT_EQ(store_->Billing("cust-2", 0, 1000)->size(), 1u);

  // An amount that does not fit 64 bits is an error, not a wrapped number.
  LicenseRecord pricey = MakeLicense("license-pricey", "cust-2");
  pricey.price_micros = std::numeric_limits<int64_t>::max() / 4;
  ASSERT_TRUE(store_->CreateLicense(pricey).ok());
  const LeaseRecord pricey_lease = MakeLease("license-pricey", 1);
  ASSERT_TRUE(store_->RecordLease(pricey_lease).ok());
  ASSERT_EQ(Record(ReportFor(pricey_lease, 1, 5))->billed_queries, 5u);
  auto overflow = store_->Billing("cust-2", 0, 10000);
  EXPECT_EQ(overflow.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(overflow.status().message().find("license-pricey"), std::string::npos);
}

// 8 threads over two connections record 200 cumulative reports each, in batches that also
// resend reports already sent (retries of the same bytes) and sometimes a whole batch twice (a
// lost response). The bill must be exact: nothing lost, nothing counted twice.
TEST_P(StoreTest, ConcurrentBatchesWithRetriesBillExactly) {
  constexpr int kThreads = 8;
  constexpr uint64_t kReports = 200;
  constexpr uint64_t kQueriesPerReport = 3;
  constexpr uint64_t kBatch = 16;
  std::vector<std::unique_ptr<Store>> stores;
  stores.push_back(std::move(store_));
  stores.push_back(OpenFresh());
  std::vector<LeaseRecord> leases;
  std::vector<std::vector<std::vector<uint8_t>>> reports(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    leases.push_back(MakeLease("license-1", static_cast<uint64_t>(t) + 1));
    ASSERT_TRUE(stores[0]->RecordLease(leases.back()).ok());
    for (uint64_t i = 1; i <= kReports; ++i)
      reports[t].push_back(ReportFor(leases.back(), i, i * kQueriesPerReport));
  }
  std::atomic<uint64_t> billed{0};
  std::atomic<int> unexpected{0};
  std::atomic<int> retried_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Store& store = *stores[t % 2];
      for (uint64_t start = 0; start < kReports; start += kBatch) {
        std::vector<std::vector<uint8_t>> batch;
        for (uint64_t i = start; i < std::min(start + kBatch, kReports); ++i)
          batch.push_back(reports[t][i]);
        for (uint64_t i = start >= 3 ? start - 3 : 0; i < start; ++i)
          batch.push_back(reports[t][i]);  // retries of reports sent in the previous batch
        const int sends = (start / kBatch) % 4 == 1 ? 2 : 1;
        for (int send = 0; send < sends; ++send) {
          std::vector<Result<ReportResult>> results;
          // A client resends a batch until each report has an answer (a busy database).
          for (int attempt = 0;; ++attempt) {
            results = RecordBatch(store, batch);
            bool all_ok = true;
            for (const auto& result : results) all_ok = all_ok && result.ok();
            if (all_ok || attempt == 20) break;
            ++retried_errors;
          }
          for (const auto& result : results) {
            if (!result.ok() || result->outcome == ReportOutcome::kFork) {
              ++unexpected;
              continue;
            }
            billed += result->billed_queries;
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  store_ = std::move(stores[0]);
  EXPECT_EQ(unexpected.load(), 0);
  const uint64_t expected = kThreads * kReports * kQueriesPerReport;
  EXPECT_EQ(billed.load(), expected);
  EXPECT_EQ(*store_->BilledQueries("license-1"), expected);
  EXPECT_FALSE(*store_->HasFork("license-1"));
  if (retried_errors > 0) std::printf("(%d batches resent after errors)\n", retried_errors.load());
}

// Prints the group commit's throughput: batches of 64 reports (one per lease, as from 64
// concurrent clients), one thread. MLCAPSULE_STORE_BENCH_REPORTS sets the count (default 2048).
TEST_P(StoreTest, BatchThroughput) {
  const char* count_env = std::getenv("MLCAPSULE_STORE_BENCH_REPORTS");
  const size_t total = count_env ? std::strtoul(count_env, nullptr, 10) : 2048;
  constexpr size_t kBatch = 64;
  std::vector<LeaseRecord> leases;
  for (size_t l = 0; l < kBatch; ++l) {
    leases.push_back(MakeLease("license-" + std::to_string(l), 1));
    ASSERT_TRUE(store_->RecordLease(leases.back()).ok());
  }
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<capsule::UsageReport> parsed;
  bytes.reserve(total);
  parsed.reserve(total);
  for (size_t i = 0; i < total; ++i) {
    bytes.push_back(ReportFor(leases[i % kBatch], i / kBatch + 1, i / kBatch + 1));
    parsed.push_back(*capsule::ParseAndVerifyUsageReport(bytes.back()));
  }
  std::vector<PendingReport> pending;
  for (size_t i = 0; i < total; ++i) pending.push_back({&parsed[i], bytes[i]});
  const auto start = std::chrono::steady_clock::now();
  uint64_t accepted = 0;
  for (size_t i = 0; i < total; i += kBatch) {
    const auto batch = std::span(pending).subspan(i, std::min(kBatch, total - i));
    for (const auto& result : store_->RecordUsageReports(batch, 1600))
      accepted += result.ok() && result->outcome == ReportOutcome::kAccepted;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(accepted, total);
  std::printf("%s: %zu reports in batches of %zu: %.3f s, %.0f reports/s\n", GetParam().c_str(),
              total, kBatch, seconds, total / seconds);
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
