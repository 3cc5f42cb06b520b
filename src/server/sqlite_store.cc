// The SQLite back end of Store (store.h): one database file in WAL mode, every write in a
// BEGIN IMMEDIATE transaction (one writer at a time; readers never block), synchronous=FULL so an
// acknowledged report survives a crash of the process or the machine.
#include <sqlite3.h>

#include <cstring>
#include <mutex>
#include <string_view>

#include "base/bytes.h"
#include "capsule/crypto.h"
#include "server/ledger.h"
#include "server/store.h"

namespace mlcapsule::server {
namespace {

// Versioned migrations: entry i brings the schema from version i to i + 1. Never edit one that
// has shipped; append.
constexpr std::string_view kMigrations[] = {
    R"sql(
CREATE TABLE nonces (
  nonce BLOB PRIMARY KEY,
  expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE leases (
  lease_id BLOB PRIMARY KEY,
  license_id TEXT NOT NULL,
  capsule_id BLOB NOT NULL,
  sequence INTEGER NOT NULL,
  chain_base_count INTEGER NOT NULL,
  chain_base BLOB NOT NULL,
  core_key BLOB NOT NULL,
  query_quota INTEGER NOT NULL,
  issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  recorded_count INTEGER NOT NULL,
  recorded_head BLOB NOT NULL
);
CREATE INDEX leases_license ON leases(license_id);
CREATE TABLE usage_reports (
  digest BLOB PRIMARY KEY,
  lease_id BLOB NOT NULL,
  license_id TEXT NOT NULL,
  report_sequence INTEGER NOT NULL,
  to_count INTEGER NOT NULL,
  to_head BLOB NOT NULL,
  outcome TEXT NOT NULL,
  billed INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  bytes BLOB NOT NULL
);
CREATE INDEX usage_reports_lease ON usage_reports(lease_id, report_sequence);
CREATE INDEX usage_reports_license ON usage_reports(license_id);
CREATE TABLE alerts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  license_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  resolved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_license ON alerts(license_id);
)sql",
};

// Counts are unsigned on the wire and signed 64-bit in SQL.
constexpr uint64_t kMaxSqlCount = uint64_t{1} << 62;

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, std::span<const uint8_t> v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const auto* text = sqlite3_column_text(stmt_, column);
    return text ? std::string(reinterpret_cast<const char*>(text),
                              static_cast<size_t>(sqlite3_column_bytes(stmt_, column)))
                : std::string();
  }
  template <size_t N>
  bool Blob(int column, std::array<uint8_t, N>* out) const {
    if (sqlite3_column_bytes(stmt_, column) != static_cast<int>(N)) return false;
    std::memcpy(out->data(), sqlite3_column_blob(stmt_, column), N);
    return true;
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  Status Exec(std::string_view sql, const char* what) {
    char* message = nullptr;
    const std::string text(sql);
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      Status s = IoError("sqlite: {} failed: {}", what, message ? message : sqlite3_errmsg(db_));
      sqlite3_free(message);
      return s;
    }
    return Status::Ok();
  }
  Status Error(const char* what) const {
    return IoError("sqlite: {} failed: {}", what, sqlite3_errmsg(db_));
  }
  Status Configure() {
    sqlite3_busy_timeout(db_, 5000);
    MLC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL", "enabling WAL"));
    MLC_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL", "setting synchronous=FULL"));
    return Exec("PRAGMA foreign_keys=ON", "enabling foreign keys");
  }

  Result<int> SchemaVersion() override {
    std::lock_guard lock(mutex_);
    return ReadSchemaVersion();
  }
  Result<int> ReadSchemaVersion() {
    Statement q(db_, "PRAGMA user_version");
    if (!q.ok() || q.Step() != SQLITE_ROW) return Error("reading the schema version");
    return static_cast<int>(q.Int(0));
  }

  Status Migrate() override {
    std::lock_guard lock(mutex_);
    MLC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "starting the migration"));
    auto version = ReadSchemaVersion();
    if (!version.ok()) return Rollback(version.status());
    const int latest = static_cast<int>(std::size(kMigrations));
    if (*version > latest)
      return Rollback(FailedPrecondition(
          "the database has schema version {}, newer than this server's {}: upgrade the server",
          *version, latest));
    for (int v = *version; v < latest; ++v) {
      Status s = Exec(kMigrations[v], "a schema migration");
      if (!s.ok()) return Rollback(s.WithContext(fmt::format("migration to version {}", v + 1)));
    }
    Status s = Exec(fmt::format("PRAGMA user_version={}", latest), "recording the schema version");
    if (!s.ok()) return Rollback(s);
    return Exec("COMMIT", "committing the migration");
  }

  Status IssueNonce(const capsule::Nonce& nonce, int64_t expires_at) override {
    std::lock_guard lock(mutex_);
    Statement q(db_, "INSERT INTO nonces(nonce, expires_at) VALUES(?, ?)");
    if (!q.ok()) return Error("preparing the nonce insert");
    q.Bind(1, std::span<const uint8_t>(nonce)).Bind(2, expires_at);
    if (q.Step() != SQLITE_DONE) return Error("storing a nonce");
    return Status::Ok();
  }

  Status ConsumeNonce(const capsule::Nonce& nonce, int64_t now) override {
    std::lock_guard lock(mutex_);
    // One statement: marks the nonce used only if it is unused and fresh; a second consumer
    // (another request, another server instance) changes no row.
    Statement q(db_, "UPDATE nonces SET used = 1 WHERE nonce = ? AND used = 0 AND expires_at > ?");
    if (!q.ok()) return Error("preparing the nonce update");
    q.Bind(1, std::span<const uint8_t>(nonce)).Bind(2, now);
    if (q.Step() != SQLITE_DONE) return Error("consuming a nonce");
    if (sqlite3_changes(db_) != 1)
      return PermissionDenied("nonce {}... is unknown, already used or expired",
                              capsule::ToHex(std::span(nonce).first(8)));
    return Status::Ok();
  }

  Status RecordLease(const LeaseRecord& lease) override {
    std::lock_guard lock(mutex_);
    if (lease.chain_base_count > kMaxSqlCount || lease.query_quota > kMaxSqlCount ||
        lease.sequence > kMaxSqlCount)
      return InvalidArgument("lease counts are over the storage limit {}", kMaxSqlCount);
    Statement q(db_,
                "INSERT INTO leases(lease_id, license_id, capsule_id, sequence, chain_base_count, "
                "chain_base, core_key, query_quota, issued_at, expires_at, recorded_count, "
                "recorded_head) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!q.ok()) return Error("preparing the lease insert");
    q.Bind(1, std::span<const uint8_t>(lease.lease_id))
        .Bind(2, lease.license_id)
        .Bind(3, std::span<const uint8_t>(lease.capsule_id))
        .Bind(4, static_cast<int64_t>(lease.sequence))
        .Bind(5, static_cast<int64_t>(lease.chain_base_count))
        .Bind(6, std::span<const uint8_t>(lease.chain_base))
        .Bind(7, std::span<const uint8_t>(lease.core_signing_key))
        .Bind(8, static_cast<int64_t>(lease.query_quota))
        .Bind(9, lease.issued_at)
        .Bind(10, lease.expires_at)
        .Bind(11, static_cast<int64_t>(lease.chain_base_count))
        .Bind(12, std::span<const uint8_t>(lease.chain_base));
    if (q.Step() != SQLITE_DONE) return Error("storing a lease");
    return Status::Ok();
  }

  Result<ReportResult> RecordUsageReport(const capsule::UsageReport& report,
                                         std::span<const uint8_t> signed_bytes,
                                         int64_t now) override {
    std::lock_guard lock(mutex_);
    if (report.to_count > kMaxSqlCount || report.report_sequence > kMaxSqlCount)
      return InvalidArgument("usage report counts are over the storage limit {}", kMaxSqlCount);
    MLC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "starting a usage report"));
    Result<ReportResult> result = RecordInTransaction(report, signed_bytes, now);
    if (!result.ok()) return Rollback(result.status());
    MLC_RETURN_IF_ERROR(Exec("COMMIT", "committing a usage report"));
    return result;
  }

  Result<uint64_t> BilledQueries(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q(db_, "SELECT COALESCE(SUM(billed), 0) FROM usage_reports WHERE license_id = ?");
    if (!q.ok()) return Error("preparing the billing query");
    q.Bind(1, license_id);
    if (q.Step() != SQLITE_ROW) return Error("summing billed queries");
    return static_cast<uint64_t>(q.Int(0));
  }

  Result<bool> HasFork(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q(db_,
                "SELECT COUNT(*) FROM alerts WHERE license_id = ? AND kind = 'fork' AND "
                "resolved = 0");
    if (!q.ok()) return Error("preparing the fork query");
    q.Bind(1, license_id);
    if (q.Step() != SQLITE_ROW) return Error("looking for forks");
    return q.Int(0) > 0;
  }

  Result<std::vector<AlertRecord>> Alerts(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q(db_,
                "SELECT id, license_id, kind, detail, created_at FROM alerts WHERE license_id = ? "
                "ORDER BY id");
    if (!q.ok()) return Error("preparing the alerts query");
    q.Bind(1, license_id);
    std::vector<AlertRecord> alerts;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW)
      alerts.push_back({q.Int(0), q.Text(1), q.Text(2), q.Text(3), q.Int(4)});
    if (rc != SQLITE_DONE) return Error("reading alerts");
    return alerts;
  }

 private:
  Status Rollback(const Status& why) {
    (void)Exec("ROLLBACK", "rolling back");
    return why;
  }

  Result<ReportResult> RecordInTransaction(const capsule::UsageReport& report,
                                           std::span<const uint8_t> signed_bytes, int64_t now) {
    const capsule::Digest digest = capsule::Hash({signed_bytes});
    {
      Statement q(db_, "SELECT 1 FROM usage_reports WHERE digest = ?");
      if (!q.ok()) return Error("preparing the duplicate check");
      q.Bind(1, std::span<const uint8_t>(digest));
      if (q.Step() == SQLITE_ROW)
        return ReportResult{ReportOutcome::kDuplicate, 0, "already recorded"};
    }
    LeaseRecord lease;
    uint64_t recorded_count = 0;
    capsule::Digest recorded_head{};
    {
      Statement q(db_,
                  "SELECT license_id, capsule_id, chain_base_count, chain_base, core_key, "
                  "recorded_count, recorded_head FROM leases WHERE lease_id = ?");
      if (!q.ok()) return Error("preparing the lease lookup");
      q.Bind(1, std::span<const uint8_t>(report.lease_id));
      const int rc = q.Step();
      if (rc == SQLITE_DONE)
        return NotFound("usage report for unknown lease {}", capsule::ToHex(report.lease_id));
      if (rc != SQLITE_ROW) return Error("looking up a lease");
      lease.license_id = q.Text(0);
      lease.chain_base_count = static_cast<uint64_t>(q.Int(2));
      recorded_count = static_cast<uint64_t>(q.Int(5));
      if (!q.Blob(1, &lease.capsule_id) || !q.Blob(3, &lease.chain_base) ||
          !q.Blob(4, &lease.core_signing_key) || !q.Blob(6, &recorded_head))
        return DataLoss("lease {} has a malformed stored field", capsule::ToHex(report.lease_id));
    }
    bool sequence_taken = false;
    {
      Statement q(db_,
                  "SELECT COUNT(*) FROM usage_reports WHERE lease_id = ? AND report_sequence = ?");
      if (!q.ok()) return Error("preparing the sequence check");
      q.Bind(1, std::span<const uint8_t>(report.lease_id))
          .Bind(2, static_cast<int64_t>(report.report_sequence));
      if (q.Step() != SQLITE_ROW) return Error("checking the report sequence");
      sequence_taken = q.Int(0) > 0;
    }
    const ReportResult result =
        DecideReport(report, lease, recorded_count, recorded_head, sequence_taken);
    if (result.outcome == ReportOutcome::kAccepted && report.to_count > recorded_count) {
      Statement u(db_,
                  "UPDATE leases SET recorded_count = ?, recorded_head = ? WHERE lease_id = ?");
      if (!u.ok()) return Error("preparing the lease update");
      u.Bind(1, static_cast<int64_t>(report.to_count))
          .Bind(2, std::span<const uint8_t>(report.to_head))
          .Bind(3, std::span<const uint8_t>(report.lease_id));
      if (u.Step() != SQLITE_DONE) return Error("updating a lease");
    }
    Statement insert(db_,
                     "INSERT INTO usage_reports(digest, lease_id, license_id, report_sequence, "
                     "to_count, to_head, outcome, billed, created_at, bytes) "
                     "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!insert.ok()) return Error("preparing the report insert");
    insert.Bind(1, std::span<const uint8_t>(digest))
        .Bind(2, std::span<const uint8_t>(report.lease_id))
        .Bind(3, lease.license_id)
        .Bind(4, static_cast<int64_t>(report.report_sequence))
        .Bind(5, static_cast<int64_t>(report.to_count))
        .Bind(6, std::span<const uint8_t>(report.to_head))
        .Bind(7, std::string_view(ReportOutcomeName(result.outcome)))
        .Bind(8, static_cast<int64_t>(result.billed_queries))
        .Bind(9, now)
        .Bind(10, signed_bytes);
    if (insert.Step() != SQLITE_DONE) return Error("storing a usage report");
    if (result.outcome == ReportOutcome::kFork) {
      Statement alert(db_,
                      "INSERT INTO alerts(license_id, kind, detail, created_at) "
                      "VALUES(?, 'fork', ?, ?)");
      if (!alert.ok()) return Error("preparing the alert insert");
      alert.Bind(1, lease.license_id).Bind(2, result.detail).Bind(3, now);
      if (alert.Step() != SQLITE_DONE) return Error("storing an alert");
    }
    return result;
  }

  sqlite3* db_;
  // One connection, one transaction at a time: every public method holds this (server threads
  // share the store; SQLite's own locking covers other processes).
  std::mutex mutex_;
};

}  // namespace

const char* ReportOutcomeName(ReportOutcome outcome) {
  switch (outcome) {
    case ReportOutcome::kAccepted:
      return "accepted";
    case ReportOutcome::kDuplicate:
      return "duplicate";
    case ReportOutcome::kStale:
      return "stale";
    case ReportOutcome::kFork:
      return "fork";
  }
  return "unknown";
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& url) {
  constexpr std::string_view kSqlite = "sqlite:";
  if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0)
    return OpenPostgresStore(url);
  if (url.rfind(kSqlite, 0) != 0)
    return Unsupported("storage URL '{}': expected sqlite:PATH or postgresql://...", url);
  const std::string path = url.substr(kSqlite.size());
  if (path.empty()) return InvalidArgument("storage URL '{}' has no path", url);
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = IoError("cannot open the database {}: {}", path,
                       db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    return s;
  }
  auto store = std::make_unique<SqliteStore>(db);
  MLC_RETURN_IF_ERROR(store->Configure());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace mlcapsule::server
