// The PostgreSQL back end of Store (store.h), for several server instances sharing one database
// (libpqxx 6.4). Every write is one transaction; a usage report locks its lease's row
// (SELECT ... FOR UPDATE), so reports of one lease are decided one after another even across
// instances, with the same rules as SQLite (ledger.h). Byte strings are bytea, passed as hex.
#include <pqxx/pqxx>

#include <mutex>

#include "capsule/crypto.h"
#include "server/ledger.h"
#include "server/store.h"

namespace mlcapsule::server {
namespace {

constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE nonces (
  nonce BYTEA PRIMARY KEY,
  expires_at BIGINT NOT NULL,
  used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE leases (
  lease_id BYTEA PRIMARY KEY,
  license_id TEXT NOT NULL,
  capsule_id BYTEA NOT NULL,
  sequence BIGINT NOT NULL,
  chain_base_count BIGINT NOT NULL,
  chain_base BYTEA NOT NULL,
  core_key BYTEA NOT NULL,
  query_quota BIGINT NOT NULL,
  issued_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  recorded_count BIGINT NOT NULL,
  recorded_head BYTEA NOT NULL
);
CREATE INDEX leases_license ON leases(license_id);
CREATE TABLE usage_reports (
  digest BYTEA PRIMARY KEY,
  lease_id BYTEA NOT NULL,
  license_id TEXT NOT NULL,
  report_sequence BIGINT NOT NULL,
  to_count BIGINT NOT NULL,
  to_head BYTEA NOT NULL,
  outcome TEXT NOT NULL,
  billed BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  bytes BYTEA NOT NULL
);
CREATE INDEX usage_reports_lease ON usage_reports(lease_id, report_sequence);
CREATE INDEX usage_reports_license ON usage_reports(license_id);
CREATE TABLE alerts (
  id BIGSERIAL PRIMARY KEY,
  license_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  resolved BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX alerts_license ON alerts(license_id);
)sql",
};

constexpr uint64_t kMaxSqlCount = uint64_t{1} << 62;

std::string Hex(std::span<const uint8_t> bytes) { return capsule::ToHex(bytes); }

template <size_t N>
bool FromHexField(const pqxx::field& field, std::array<uint8_t, N>* out) {
  return capsule::FromHex(field.c_str(), *out, "stored field").ok();
}

class PgStore final : public Store {
 public:
  explicit PgStore(std::unique_ptr<pqxx::connection> connection)
      : connection_(std::move(connection)) {}

  // Runs `body` in a transaction, turning libpqxx exceptions into a Status naming `what`.
  template <typename Body>
  auto Transact(const char* what, Body&& body) -> decltype(body(std::declval<pqxx::work&>())) {
    std::lock_guard lock(mutex_);
    try {
      pqxx::work tx(*connection_);
      auto result = body(tx);
      if (result.ok()) tx.commit();
      return result;
    } catch (const pqxx::unique_violation& e) {
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("postgresql: {}: already exists", what));
    } catch (const std::exception& e) {
      return Status(StatusCode::kIoError, fmt::format("postgresql: {} failed: {}", what, e.what()));
    }
  }

  Result<int> SchemaVersion() override {
    return Transact("reading the schema version", [](pqxx::work& tx) -> Result<int> {
      if (tx.exec("SELECT to_regclass('mlcapsule_schema') IS NULL")[0][0].as<bool>()) return 0;
      pqxx::result r = tx.exec("SELECT version FROM mlcapsule_schema");
      return r.empty() ? 0 : r[0][0].as<int>();
    });
  }

  Status Migrate() override {
    Result<int> done = Transact("migrating the schema", [](pqxx::work& tx) -> Result<int> {
      tx.exec("SELECT pg_advisory_xact_lock(7161)");  // one migrating instance at a time
      tx.exec("CREATE TABLE IF NOT EXISTS mlcapsule_schema (version INTEGER NOT NULL)");
      pqxx::result r = tx.exec("SELECT version FROM mlcapsule_schema");
      int version = r.empty() ? 0 : r[0][0].as<int>();
      if (r.empty()) tx.exec("INSERT INTO mlcapsule_schema VALUES (0)");
      const int latest = static_cast<int>(std::size(kMigrations));
      if (version > latest)
        return FailedPrecondition(
            "the database has schema version {}, newer than this server's {}: upgrade the server",
            version, latest);
      for (int v = version; v < latest; ++v) tx.exec(kMigrations[v]);
      tx.exec_params("UPDATE mlcapsule_schema SET version = $1", latest);
      return latest;
    });
    return done.status();
  }

  Status IssueNonce(const capsule::Nonce& nonce, int64_t expires_at) override {
    return Transact("storing a nonce",
                    [&](pqxx::work& tx) -> Result<int> {
                      tx.exec_params(
                          "INSERT INTO nonces(nonce, expires_at) VALUES(decode($1, 'hex'), $2)",
                          Hex(nonce), expires_at);
                      return 0;
                    })
        .status();
  }

  Status ConsumeNonce(const capsule::Nonce& nonce, int64_t now) override {
    return Transact(
               "consuming a nonce",
               [&](pqxx::work& tx) -> Result<int> {
                 pqxx::result r = tx.exec_params(
                     "UPDATE nonces SET used = TRUE WHERE nonce = decode($1, 'hex') AND NOT used "
                     "AND expires_at > $2",
                     Hex(nonce), now);
                 if (r.affected_rows() != 1)
                   return PermissionDenied("nonce {}... is unknown, already used or expired",
                                           capsule::ToHex(std::span(nonce).first(8)));
                 return 0;
               })
        .status();
  }

  Status RecordLease(const LeaseRecord& lease) override {
    if (lease.chain_base_count > kMaxSqlCount || lease.query_quota > kMaxSqlCount ||
        lease.sequence > kMaxSqlCount)
      return InvalidArgument("lease counts are over the storage limit {}", kMaxSqlCount);
    return Transact(
               "storing a lease",
               [&](pqxx::work& tx) -> Result<int> {
                 tx.exec_params(
                     "INSERT INTO leases(lease_id, license_id, capsule_id, sequence, "
                     "chain_base_count, chain_base, core_key, query_quota, issued_at, expires_at, "
                     "recorded_count, recorded_head) VALUES(decode($1, 'hex'), $2, decode($3, "
                     "'hex'), $4, $5, decode($6, 'hex'), decode($7, 'hex'), $8, $9, $10, $5, "
                     "decode($6, 'hex'))",
                     Hex(lease.lease_id), lease.license_id, Hex(lease.capsule_id),
                     static_cast<int64_t>(lease.sequence),
                     static_cast<int64_t>(lease.chain_base_count), Hex(lease.chain_base),
                     Hex(lease.core_signing_key), static_cast<int64_t>(lease.query_quota),
                     lease.issued_at, lease.expires_at);
                 return 0;
               })
        .status();
  }

  Result<ReportResult> RecordUsageReport(const capsule::UsageReport& report,
                                         std::span<const uint8_t> signed_bytes,
                                         int64_t now) override {
    if (report.to_count > kMaxSqlCount || report.report_sequence > kMaxSqlCount)
      return InvalidArgument("usage report counts are over the storage limit {}", kMaxSqlCount);
    const std::string digest = Hex(capsule::Hash({signed_bytes}));
    return Transact("recording a usage report", [&](pqxx::work& tx) -> Result<ReportResult> {
      pqxx::result lease_row = tx.exec_params(
          "SELECT license_id, encode(capsule_id, 'hex'), chain_base_count, encode(chain_base, "
          "'hex'), encode(core_key, 'hex'), recorded_count, encode(recorded_head, 'hex') FROM "
          "leases WHERE lease_id = decode($1, 'hex') FOR UPDATE",
          Hex(report.lease_id));
      if (tx.exec_params("SELECT 1 FROM usage_reports WHERE digest = decode($1, 'hex')", digest)
              .size() > 0)
        return ReportResult{ReportOutcome::kDuplicate, 0, "already recorded"};
      if (lease_row.empty())
        return NotFound("usage report for unknown lease {}", capsule::ToHex(report.lease_id));
      LeaseRecord lease;
      capsule::Digest recorded_head{};
      lease.license_id = lease_row[0][0].c_str();
      lease.chain_base_count = lease_row[0][2].as<uint64_t>();
      const uint64_t recorded_count = lease_row[0][5].as<uint64_t>();
      if (!FromHexField(lease_row[0][1], &lease.capsule_id) ||
          !FromHexField(lease_row[0][3], &lease.chain_base) ||
          !FromHexField(lease_row[0][4], &lease.core_signing_key) ||
          !FromHexField(lease_row[0][6], &recorded_head))
        return DataLoss("lease {} has a malformed stored field", capsule::ToHex(report.lease_id));
      const bool sequence_taken =
          tx.exec_params(
                "SELECT 1 FROM usage_reports WHERE lease_id = decode($1, 'hex') AND "
                "report_sequence = $2",
                Hex(report.lease_id), static_cast<int64_t>(report.report_sequence))
              .size() > 0;
      const ReportResult result =
          DecideReport(report, lease, recorded_count, recorded_head, sequence_taken);
      if (result.outcome == ReportOutcome::kAccepted && report.to_count > recorded_count)
        tx.exec_params(
            "UPDATE leases SET recorded_count = $1, recorded_head = decode($2, 'hex') WHERE "
            "lease_id = decode($3, 'hex')",
            static_cast<int64_t>(report.to_count), Hex(report.to_head), Hex(report.lease_id));
      tx.exec_params(
          "INSERT INTO usage_reports(digest, lease_id, license_id, report_sequence, to_count, "
          "to_head, outcome, billed, created_at, bytes) VALUES(decode($1, 'hex'), decode($2, "
          "'hex'), $3, $4, $5, decode($6, 'hex'), $7, $8, $9, decode($10, 'hex'))",
          digest, Hex(report.lease_id), lease.license_id,
          static_cast<int64_t>(report.report_sequence), static_cast<int64_t>(report.to_count),
          Hex(report.to_head), std::string(ReportOutcomeName(result.outcome)),
          static_cast<int64_t>(result.billed_queries), now, Hex(signed_bytes));
      if (result.outcome == ReportOutcome::kFork)
        tx.exec_params(
            "INSERT INTO alerts(license_id, kind, detail, created_at) VALUES($1, 'fork', $2, $3)",
            lease.license_id, result.detail, now);
      return result;
    });
  }

  Result<uint64_t> BilledQueries(const std::string& license_id) override {
    return Transact("summing billed queries", [&](pqxx::work& tx) -> Result<uint64_t> {
      pqxx::result r = tx.exec_params(
          "SELECT COALESCE(SUM(billed), 0) FROM usage_reports WHERE license_id = $1", license_id);
      return r[0][0].as<uint64_t>();
    });
  }

  Result<bool> HasFork(const std::string& license_id) override {
    return Transact("looking for forks", [&](pqxx::work& tx) -> Result<bool> {
      pqxx::result r = tx.exec_params(
          "SELECT COUNT(*) FROM alerts WHERE license_id = $1 AND kind = 'fork' AND NOT resolved",
          license_id);
      return r[0][0].as<int64_t>() > 0;
    });
  }

  Result<std::vector<AlertRecord>> Alerts(const std::string& license_id) override {
    return Transact("reading alerts", [&](pqxx::work& tx) -> Result<std::vector<AlertRecord>> {
      pqxx::result r = tx.exec_params(
          "SELECT id, license_id, kind, detail, created_at FROM alerts WHERE license_id = $1 "
          "ORDER BY id",
          license_id);
      std::vector<AlertRecord> alerts;
      for (const auto& row : r)
        alerts.push_back({row[0].as<int64_t>(), row[1].c_str(), row[2].c_str(), row[3].c_str(),
                          row[4].as<int64_t>()});
      return alerts;
    });
  }

 private:
  std::mutex mutex_;  // one connection, one transaction at a time
  std::unique_ptr<pqxx::connection> connection_;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url) {
  try {
    auto connection = std::make_unique<pqxx::connection>(url);
    return std::unique_ptr<Store>(std::make_unique<PgStore>(std::move(connection)));
  } catch (const std::exception& e) {
    return IoError("cannot connect to PostgreSQL at {}: {}", url, e.what());
  }
}

}  // namespace mlcapsule::server
