// The SQLite back end of Store (store.h): one database file in WAL mode, every write in a
// BEGIN IMMEDIATE transaction (one writer at a time; readers never block), synchronous=FULL so an
// acknowledged report survives a crash of the process or the machine. Statements are prepared
// once per connection and cached; a batch of usage reports is one transaction (one fsync).
#include <sqlite3.h>

#include <cstring>
#include <map>
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
//
// Version 2: nonces are MACed by the server instead of stored; a nonce is used once its lease is
// recorded (leases.nonce, unique; NULL in leases recorded before), and a license's lease
// sequences are unique (two concurrent renewals cannot both win). The admin entities. Billing by
// license and receive time (usage_reports.created_at is the server's `now` when it recorded the
// report), whose index replaces the plain license one, as the lease (license, sequence) index
// replaces leases_license.
//
// Version 3: usage reports get an id in recording order (the admin API pages a license's reports
// by it, for watermark escrow export). It is assigned inside the write transaction as one more
// than the largest (SQLite's rowid is not stable across VACUUM for a table without an integer
// primary key); reports recorded before keep their rowid order.
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
    R"sql(
DROP TABLE nonces;
ALTER TABLE leases ADD COLUMN nonce BLOB;
CREATE UNIQUE INDEX leases_nonce ON leases(nonce);
CREATE UNIQUE INDEX leases_license_sequence ON leases(license_id, sequence);
DROP INDEX leases_license;
DROP INDEX usage_reports_license;
CREATE INDEX usage_reports_license_time ON usage_reports(license_id, created_at);
CREATE TABLE providers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE customers (
  id TEXT PRIMARY KEY,
  provider_id TEXT NOT NULL REFERENCES providers(id),
  name TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX customers_provider ON customers(provider_id);
CREATE TABLE capsules (
  capsule_id BLOB PRIMARY KEY,
  provider_id TEXT NOT NULL REFERENCES providers(id),
  name TEXT NOT NULL,
  header BLOB NOT NULL,
  wrapped_key BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX capsules_provider ON capsules(provider_id);
CREATE TABLE licenses (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL REFERENCES customers(id),
  capsule_id BLOB NOT NULL REFERENCES capsules(capsule_id),
  token_hash BLOB NOT NULL UNIQUE,
  query_quota INTEGER NOT NULL,
  lease_queries INTEGER NOT NULL,
  lease_seconds INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  price_micros INTEGER NOT NULL,
  currency TEXT NOT NULL,
  rate_per_minute INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE INDEX licenses_customer ON licenses(customer_id);
CREATE INDEX licenses_capsule ON licenses(capsule_id);
CREATE TABLE admin_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  token_hash BLOB NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
)sql",
    R"sql(
ALTER TABLE usage_reports ADD COLUMN id INTEGER;
UPDATE usage_reports SET id = rowid;
CREATE UNIQUE INDEX usage_reports_id ON usage_reports(id);
CREATE INDEX usage_reports_license_id ON usage_reports(license_id, id);
)sql",
};

// A statement from the connection's cache (SqliteStore::Prepare): prepared once, reset and
// unbound when this handle goes out of scope, so the next use starts clean.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Statement() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return stmt_ != nullptr; }
  Statement& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, std::span<const uint8_t> v) {
    // A zero-length blob is stored as an empty blob, not NULL.
    static const uint8_t kEmpty = 0;
    sqlite3_bind_blob(stmt_, i, v.empty() ? &kEmpty : v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
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
  uint64_t Size(int column) const {
    return static_cast<uint64_t>(sqlite3_column_bytes(stmt_, column));
  }
  std::vector<uint8_t> Bytes(int column) const {
    const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, column));
    return data ? std::vector<uint8_t>(data, data + sqlite3_column_bytes(stmt_, column))
                : std::vector<uint8_t>();
  }
  template <size_t N>
  bool Blob(int column, std::array<uint8_t, N>* out) const {
    if (sqlite3_column_bytes(stmt_, column) != static_cast<int>(N)) return false;
    std::memcpy(out->data(), sqlite3_column_blob(stmt_, column), N);
    return true;
  }
  // A nullable fixed-size blob: NULL leaves `out` zero.
  template <size_t N>
  bool BlobOrNull(int column, std::array<uint8_t, N>* out) const {
    if (sqlite3_column_type(stmt_, column) == SQLITE_NULL) {
      out->fill(0);
      return true;
    }
    return Blob(column, out);
  }

 private:
  sqlite3_stmt* stmt_;
};

Status StatusOf(const Status& status) { return status; }
template <typename T>
Status StatusOf(const Result<T>& result) {
  return result.status();
}

constexpr const char* kLeaseColumns =
    "lease_id, license_id, capsule_id, sequence, chain_base_count, chain_base, core_key, "
    "query_quota, issued_at, expires_at, nonce";
constexpr const char* kLicenseColumns =
    "id, customer_id, capsule_id, token_hash, query_quota, lease_queries, lease_seconds, "
    "expires_at, price_micros, currency, rate_per_minute, revoked, revoked_at, created_at";

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
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

  Status Migrate() override {
    std::lock_guard lock(mutex_);
    return Transaction("migrating the schema", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const int version, ReadSchemaVersion());
      const int latest = static_cast<int>(std::size(kMigrations));
      if (version > latest)
        return FailedPrecondition(
            "the database has schema version {}, newer than this server's {}: upgrade the server",
            version, latest);
      for (int v = version; v < latest; ++v) {
        Status s = Exec(kMigrations[v], "a schema migration");
        if (!s.ok()) return s.WithContext(fmt::format("migration to version {}", v + 1));
      }
      return Exec(fmt::format("PRAGMA user_version={}", latest), "recording the schema version");
    });
  }

  // --- admin entities

  Status CreateProvider(const ProviderRecord& provider) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("provider", provider.id));
    std::lock_guard lock(mutex_);
    return Transaction("storing a provider", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool exists,
                           Exists("SELECT 1 FROM providers WHERE id = ?", provider.id));
      if (exists) return AlreadyExists("provider {} already exists", provider.id);
      Statement q = Prepare("INSERT INTO providers(id, name, created_at) VALUES(?, ?, ?)");
      if (!q.ok()) return Error("preparing the provider insert");
      q.Bind(1, provider.id).Bind(2, provider.name).Bind(3, provider.created_at);
      return Done(q, "storing a provider");
    });
  }

  Result<std::vector<ProviderRecord>> ListProviders() override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare("SELECT id, name, created_at FROM providers ORDER BY id");
    if (!q.ok()) return Error("preparing the provider list");
    std::vector<ProviderRecord> providers;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) providers.push_back({q.Text(0), q.Text(1), q.Int(2)});
    if (rc != SQLITE_DONE) return Error("listing providers");
    return providers;
  }

  Status CreateCustomer(const CustomerRecord& customer) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("customer", customer.id));
    std::lock_guard lock(mutex_);
    return Transaction("storing a customer", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool provider_exists,
                           Exists("SELECT 1 FROM providers WHERE id = ?", customer.provider_id));
      if (!provider_exists)
        return NotFound("customer {} names unknown provider '{}'", customer.id,
                        customer.provider_id);
      MLC_ASSIGN_OR_RETURN(const bool exists,
                           Exists("SELECT 1 FROM customers WHERE id = ?", customer.id));
      if (exists) return AlreadyExists("customer {} already exists", customer.id);
      Statement q =
          Prepare("INSERT INTO customers(id, provider_id, name, created_at) VALUES(?, ?, ?, ?)");
      if (!q.ok()) return Error("preparing the customer insert");
      q.Bind(1, customer.id)
          .Bind(2, customer.provider_id)
          .Bind(3, customer.name)
          .Bind(4, customer.created_at);
      return Done(q, "storing a customer");
    });
  }

  Result<CustomerRecord> GetCustomer(const std::string& id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare("SELECT id, provider_id, name, created_at FROM customers WHERE id = ?");
    if (!q.ok()) return Error("preparing the customer lookup");
    q.Bind(1, id);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("no customer {}", id);
    if (rc != SQLITE_ROW) return Error("looking up a customer");
    return CustomerRecord{q.Text(0), q.Text(1), q.Text(2), q.Int(3)};
  }

  Result<std::vector<CustomerRecord>> ListCustomers(const std::string& provider_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT id, provider_id, name, created_at FROM customers WHERE ?1 = '' OR provider_id = "
        "?1 ORDER BY id");
    if (!q.ok()) return Error("preparing the customer list");
    q.Bind(1, provider_id);
    std::vector<CustomerRecord> customers;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW)
      customers.push_back({q.Text(0), q.Text(1), q.Text(2), q.Int(3)});
    if (rc != SQLITE_DONE) return Error("listing customers");
    return customers;
  }

  Status CreateCapsule(const CapsuleRecord& capsule) override {
    std::lock_guard lock(mutex_);
    const std::string id_hex = capsule::ToHex(capsule.capsule_id);
    return Transaction("storing a capsule", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool provider_exists,
                           Exists("SELECT 1 FROM providers WHERE id = ?", capsule.provider_id));
      if (!provider_exists)
        return NotFound("capsule {} names unknown provider '{}'", id_hex, capsule.provider_id);
      MLC_ASSIGN_OR_RETURN(const bool exists, Exists("SELECT 1 FROM capsules WHERE capsule_id = ?",
                                                     std::span<const uint8_t>(capsule.capsule_id)));
      if (exists) return AlreadyExists("capsule {} already exists", id_hex);
      Statement q = Prepare(
          "INSERT INTO capsules(capsule_id, provider_id, name, header, wrapped_key, created_at) "
          "VALUES(?, ?, ?, ?, ?, ?)");
      if (!q.ok()) return Error("preparing the capsule insert");
      q.Bind(1, std::span<const uint8_t>(capsule.capsule_id))
          .Bind(2, capsule.provider_id)
          .Bind(3, capsule.name)
          .Bind(4, std::span<const uint8_t>(capsule.header))
          .Bind(5, std::span<const uint8_t>(capsule.wrapped_key))
          .Bind(6, capsule.created_at);
      return Done(q, "storing a capsule");
    });
  }

  Result<CapsuleRecord> GetCapsule(const capsule::CapsuleId& capsule_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT capsule_id, provider_id, name, header, wrapped_key, created_at FROM capsules "
        "WHERE capsule_id = ?");
    if (!q.ok()) return Error("preparing the capsule lookup");
    q.Bind(1, std::span<const uint8_t>(capsule_id));
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("no capsule {}", capsule::ToHex(capsule_id));
    if (rc != SQLITE_ROW) return Error("looking up a capsule");
    return ReadCapsule(q);
  }

  Result<std::vector<CapsuleRecord>> ListCapsules() override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT capsule_id, provider_id, name, header, wrapped_key, created_at FROM capsules "
        "ORDER BY created_at, capsule_id");
    if (!q.ok()) return Error("preparing the capsule list");
    std::vector<CapsuleRecord> capsules;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      MLC_ASSIGN_OR_RETURN(CapsuleRecord capsule, ReadCapsule(q));
      capsules.push_back(std::move(capsule));
    }
    if (rc != SQLITE_DONE) return Error("listing capsules");
    return capsules;
  }

  Status CreateLicense(const LicenseRecord& license) override {
    MLC_RETURN_IF_ERROR(CheckLicenseForStorage(license));
    std::lock_guard lock(mutex_);
    return Transaction("storing a license", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool customer_exists,
                           Exists("SELECT 1 FROM customers WHERE id = ?", license.customer_id));
      if (!customer_exists)
        return NotFound("license {} names unknown customer '{}'", license.id, license.customer_id);
      MLC_ASSIGN_OR_RETURN(const bool capsule_exists,
                           Exists("SELECT 1 FROM capsules WHERE capsule_id = ?",
                                  std::span<const uint8_t>(license.capsule_id)));
      if (!capsule_exists)
        return NotFound("license {} names unknown capsule {}", license.id,
                        capsule::ToHex(license.capsule_id));
      MLC_ASSIGN_OR_RETURN(const bool exists,
                           Exists("SELECT 1 FROM licenses WHERE id = ?", license.id));
      if (exists) return AlreadyExists("license {} already exists", license.id);
      MLC_ASSIGN_OR_RETURN(const bool token_taken,
                           Exists("SELECT 1 FROM licenses WHERE token_hash = ?",
                                  std::span<const uint8_t>(license.token_hash)));
      if (token_taken)
        return AlreadyExists("another license already has the token of license {}", license.id);
      Statement q = Prepare(
          fmt::format("INSERT INTO licenses({}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      kLicenseColumns));
      if (!q.ok()) return Error("preparing the license insert");
      q.Bind(1, license.id)
          .Bind(2, license.customer_id)
          .Bind(3, std::span<const uint8_t>(license.capsule_id))
          .Bind(4, std::span<const uint8_t>(license.token_hash))
          .Bind(5, static_cast<int64_t>(license.query_quota))
          .Bind(6, static_cast<int64_t>(license.lease_queries))
          .Bind(7, license.lease_seconds)
          .Bind(8, license.expires_at)
          .Bind(9, license.price_micros)
          .Bind(10, license.currency)
          .Bind(11, static_cast<int64_t>(license.rate_per_minute))
          .Bind(12, int64_t{license.revoked ? 1 : 0})
          .Bind(13, license.revoked_at)
          .Bind(14, license.created_at);
      return Done(q, "storing a license");
    });
  }

  Result<LicenseRecord> GetLicense(const std::string& id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(fmt::format("SELECT {} FROM licenses WHERE id = ?", kLicenseColumns));
    if (!q.ok()) return Error("preparing the license lookup");
    q.Bind(1, id);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("no license {}", id);
    if (rc != SQLITE_ROW) return Error("looking up a license");
    return ReadLicense(q);
  }

  Result<LicenseRecord> FindLicenseByToken(const capsule::Digest& token_hash) override {
    std::lock_guard lock(mutex_);
    Statement q =
        Prepare(fmt::format("SELECT {} FROM licenses WHERE token_hash = ?", kLicenseColumns));
    if (!q.ok()) return Error("preparing the license token lookup");
    q.Bind(1, std::span<const uint8_t>(token_hash));
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("no license has this token");
    if (rc != SQLITE_ROW) return Error("looking up a license token");
    return ReadLicense(q);
  }

  Result<std::vector<LicenseRecord>> ListLicenses(const std::string& customer_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(fmt::format(
        "SELECT {} FROM licenses WHERE ?1 = '' OR customer_id = ?1 ORDER BY id", kLicenseColumns));
    if (!q.ok()) return Error("preparing the license list");
    q.Bind(1, customer_id);
    std::vector<LicenseRecord> licenses;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      MLC_ASSIGN_OR_RETURN(LicenseRecord license, ReadLicense(q));
      licenses.push_back(std::move(license));
    }
    if (rc != SQLITE_DONE) return Error("listing licenses");
    return licenses;
  }

  Status RevokeLicense(const std::string& id, int64_t now) override {
    std::lock_guard lock(mutex_);
    return Transaction("revoking a license", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool exists, Exists("SELECT 1 FROM licenses WHERE id = ?", id));
      if (!exists) return NotFound("no license {}", id);
      // A second revocation keeps the first one's time.
      Statement q =
          Prepare("UPDATE licenses SET revoked = 1, revoked_at = ? WHERE id = ? AND revoked = 0");
      if (!q.ok()) return Error("preparing the license revocation");
      q.Bind(1, now).Bind(2, id);
      return Done(q, "revoking a license");
    });
  }

  Status CreateAdminToken(const AdminTokenRecord& token) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("admin token", token.id));
    std::lock_guard lock(mutex_);
    return Transaction("storing an admin token", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool exists,
                           Exists("SELECT 1 FROM admin_tokens WHERE id = ?", token.id));
      if (exists) return AlreadyExists("admin token {} already exists", token.id);
      MLC_ASSIGN_OR_RETURN(const bool hash_taken,
                           Exists("SELECT 1 FROM admin_tokens WHERE token_hash = ?",
                                  std::span<const uint8_t>(token.token_hash)));
      if (hash_taken)
        return AlreadyExists("another admin token already has the token of {}", token.id);
      Statement q =
          Prepare("INSERT INTO admin_tokens(id, name, token_hash, created_at) VALUES(?, ?, ?, ?)");
      if (!q.ok()) return Error("preparing the admin token insert");
      q.Bind(1, token.id)
          .Bind(2, token.name)
          .Bind(3, std::span<const uint8_t>(token.token_hash))
          .Bind(4, token.created_at);
      return Done(q, "storing an admin token");
    });
  }

  Result<AdminTokenRecord> FindAdminToken(const capsule::Digest& token_hash) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT id, name, token_hash, created_at FROM admin_tokens WHERE token_hash = ? AND "
        "revoked = 0");
    if (!q.ok()) return Error("preparing the admin token lookup");
    q.Bind(1, std::span<const uint8_t>(token_hash));
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("no admin token has this hash");
    if (rc != SQLITE_ROW) return Error("looking up an admin token");
    AdminTokenRecord token{q.Text(0), q.Text(1), {}, q.Int(3)};
    if (!q.Blob(2, &token.token_hash))
      return DataLoss("admin token {} has a malformed stored hash", token.id);
    return token;
  }

  Result<int64_t> CountAdminTokens() override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare("SELECT COUNT(*) FROM admin_tokens");
    if (!q.ok() || q.Step() != SQLITE_ROW) return Error("counting admin tokens");
    return q.Int(0);
  }

  // --- leases

  Status RecordLease(const LeaseRecord& lease) override {
    MLC_RETURN_IF_ERROR(CheckLeaseForStorage(lease));
    std::lock_guard lock(mutex_);
    // The checks and the insert are one BEGIN IMMEDIATE transaction (one writer at a time, also
    // across processes), so the unique indexes only back them up.
    return Transaction("storing a lease", [&]() -> Status {
      MLC_ASSIGN_OR_RETURN(const bool nonce_used, Exists("SELECT 1 FROM leases WHERE nonce = ?",
                                                         std::span<const uint8_t>(lease.nonce)));
      if (nonce_used) return NonceAlreadyUsed(lease.nonce);
      MLC_ASSIGN_OR_RETURN(const bool sequence_taken,
                           Exists("SELECT 1 FROM leases WHERE license_id = ? AND sequence = ?",
                                  lease.license_id, static_cast<int64_t>(lease.sequence)));
      if (sequence_taken) return LeaseSequenceTaken(lease.license_id, lease.sequence);
      MLC_ASSIGN_OR_RETURN(const bool exists, Exists("SELECT 1 FROM leases WHERE lease_id = ?",
                                                     std::span<const uint8_t>(lease.lease_id)));
      if (exists)
        return AlreadyExists("lease {} is already recorded", capsule::ToHex(lease.lease_id));
      Statement q =
          Prepare(fmt::format("INSERT INTO leases({}, recorded_count, recorded_head) "
                              "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              kLeaseColumns));
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
          .Bind(11, std::span<const uint8_t>(lease.nonce))
          .Bind(12, static_cast<int64_t>(lease.chain_base_count))
          .Bind(13, std::span<const uint8_t>(lease.chain_base));
      return Done(q, "storing a lease");
    });
  }

  Result<std::optional<LeaseState>> LatestLease(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(fmt::format(
        "SELECT {}, recorded_count, recorded_head, (SELECT COUNT(*) FROM usage_reports r WHERE "
        "r.lease_id = leases.lease_id) FROM leases WHERE license_id = ? ORDER BY sequence DESC "
        "LIMIT 1",
        kLeaseColumns));
    if (!q.ok()) return Error("preparing the latest lease lookup");
    q.Bind(1, license_id);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return std::optional<LeaseState>();
    if (rc != SQLITE_ROW) return Error("looking up the latest lease");
    LeaseState state;
    LeaseRecord& lease = state.lease;
    lease.license_id = q.Text(1);
    lease.sequence = static_cast<uint64_t>(q.Int(3));
    lease.chain_base_count = static_cast<uint64_t>(q.Int(4));
    lease.query_quota = static_cast<uint64_t>(q.Int(7));
    lease.issued_at = q.Int(8);
    lease.expires_at = q.Int(9);
    state.recorded_count = static_cast<uint64_t>(q.Int(11));
    state.reports = static_cast<uint64_t>(q.Int(13));
    if (!q.Blob(0, &lease.lease_id) || !q.Blob(2, &lease.capsule_id) ||
        !q.Blob(5, &lease.chain_base) || !q.Blob(6, &lease.core_signing_key) ||
        !q.BlobOrNull(10, &lease.nonce) || !q.Blob(12, &state.recorded_head))
      return DataLoss("the latest lease of license {} has a malformed stored field", license_id);
    return std::optional<LeaseState>(std::move(state));
  }

  // --- usage

  std::vector<Result<ReportResult>> RecordUsageReports(std::span<const PendingReport> batch,
                                                       int64_t now) override {
    std::lock_guard lock(mutex_);
    std::vector<Result<ReportResult>> results;
    results.reserve(batch.size());
    if (batch.size() > 1) {
      // The group commit: one transaction, one fsync for the whole batch. When the database
      // stays busy (another process writing for longer than the busy timeout), every report
      // gets that error: trying them one by one would wait that long for each.
      const Status begin = Exec("BEGIN IMMEDIATE", "starting a usage report batch");
      if (!begin.ok()) return std::vector<Result<ReportResult>>(batch.size(), begin);
      Status failed;
      for (size_t i = 0; failed.ok() && i < batch.size(); ++i) {
        Result<ReportResult> result = RecordInTransaction(batch[i], now);
        if (!result.ok() && !IsReportEntryError(result.status()))
          failed = result.status();
        else
          results.push_back(std::move(result));
      }
      if (failed.ok()) failed = Exec("COMMIT", "committing a usage report batch");
      if (failed.ok()) return results;
      (void)Exec("ROLLBACK", "rolling back");
      results.clear();
    }
    // A statement failed inside the batch: one transaction per report, so that each gets its own
    // outcome or error.
    for (const PendingReport& pending : batch)
      results.push_back(Transaction("recording a usage report",
                                    [&] { return RecordInTransaction(pending, now); }));
    return results;
  }

  Result<std::vector<StoredReport>> ListUsageReports(const std::string& license_id,
                                                     int64_t after_id, size_t limit,
                                                     uint64_t max_bytes) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT id, lease_id, report_sequence, to_count, outcome, billed, created_at, bytes FROM "
        "usage_reports WHERE license_id = ? AND id > ? ORDER BY id LIMIT ?");
    if (!q.ok()) return Error("preparing the report list");
    q.Bind(1, license_id)
        .Bind(2, after_id)
        .Bind(3, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
    std::vector<StoredReport> reports;
    uint64_t bytes = 0;
    int rc;
    // Rows are read one at a time, so a page stops before it holds more than max_bytes.
    while ((rc = q.Step()) == SQLITE_ROW) {
      StoredReport report;
      report.id = q.Int(0);
      report.report_sequence = static_cast<uint64_t>(q.Int(2));
      report.to_count = static_cast<uint64_t>(q.Int(3));
      report.billed_queries = static_cast<uint64_t>(q.Int(5));
      report.created_at = q.Int(6);
      if (!q.Blob(1, &report.lease_id) || !ReportOutcomeFromName(q.Text(4), &report.outcome))
        return DataLoss("usage report {} of license {} has a malformed stored field", report.id,
                        license_id);
      const uint64_t size = q.Size(7);
      if (!reports.empty() && bytes + size > max_bytes) break;
      report.bytes = q.Bytes(7);
      bytes += size;
      reports.push_back(std::move(report));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("listing usage reports");
    return reports;
  }

  Result<uint64_t> BilledQueries(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    // Per lease, the accepted reports billed exactly how far its recorded point moved from its
    // chain point (ledger.h), so this sums one row per lease, not one per report.
    Statement q = Prepare(
        "SELECT COALESCE(SUM(recorded_count - chain_base_count), 0) FROM leases WHERE "
        "license_id = ?");
    if (!q.ok()) return Error("preparing the billing query");
    q.Bind(1, license_id);
    if (q.Step() != SQLITE_ROW) return Error("summing billed queries");
    return static_cast<uint64_t>(q.Int(0));
  }

  Result<bool> HasFork(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT COUNT(*) FROM alerts WHERE license_id = ? AND kind = 'fork' AND resolved = 0");
    if (!q.ok()) return Error("preparing the fork query");
    q.Bind(1, license_id);
    if (q.Step() != SQLITE_ROW) return Error("looking for forks");
    return q.Int(0) > 0;
  }

  Result<std::vector<AlertRecord>> Alerts(const std::string& license_id,
                                          int64_t after_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "SELECT id, license_id, kind, detail, created_at, resolved FROM alerts WHERE id > ?1 AND "
        "(?2 = '' OR license_id = ?2) ORDER BY id");
    if (!q.ok()) return Error("preparing the alerts query");
    q.Bind(1, after_id).Bind(2, license_id);
    std::vector<AlertRecord> alerts;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW)
      alerts.push_back({q.Int(0), q.Text(1), q.Text(2), q.Text(3), q.Int(4), q.Int(5) != 0});
    if (rc != SQLITE_DONE) return Error("reading alerts");
    return alerts;
  }

  Status RaiseAlert(const std::string& license_id, std::string_view kind, std::string_view detail,
                    int64_t now) override {
    std::lock_guard lock(mutex_);
    return InsertAlert(license_id, kind, detail, now);
  }

  Result<int64_t> ResolveForks(const std::string& license_id) override {
    std::lock_guard lock(mutex_);
    Statement q = Prepare(
        "UPDATE alerts SET resolved = 1 WHERE license_id = ? AND kind = 'fork' AND resolved = 0");
    if (!q.ok()) return Error("preparing the fork resolution");
    q.Bind(1, license_id);
    if (q.Step() != SQLITE_DONE) return Error("resolving forks");
    return static_cast<int64_t>(sqlite3_changes(db_));
  }

  Result<std::vector<BillLine>> Billing(const std::string& customer_id, int64_t from,
                                        int64_t to) override {
    if (from > to)
      return InvalidArgument("billing period [{}, {}) ends before it starts", from, to);
    std::lock_guard lock(mutex_);
    // One read transaction, so that the lines are one consistent snapshot.
    return Transaction("billing", [&]() -> Result<std::vector<BillLine>> {
      MLC_ASSIGN_OR_RETURN(const bool customer_exists,
                           Exists("SELECT 1 FROM customers WHERE id = ?", customer_id));
      if (!customer_exists) return NotFound("no customer {}", customer_id);
      Statement q = Prepare(
          "SELECT l.id, l.capsule_id, l.price_micros, l.currency, (SELECT COALESCE(SUM(r.billed), "
          "0) FROM usage_reports r WHERE r.license_id = l.id AND r.created_at >= ?2 AND "
          "r.created_at < ?3) FROM licenses l WHERE l.customer_id = ?1 ORDER BY l.id");
      if (!q.ok()) return Error("preparing the billing query");
      q.Bind(1, customer_id).Bind(2, from).Bind(3, to);
      std::vector<BillLine> lines;
      int rc;
      while ((rc = q.Step()) == SQLITE_ROW) {
        BillLine line;
        line.license_id = q.Text(0);
        line.price_micros = q.Int(2);
        line.currency = q.Text(3);
        line.queries = static_cast<uint64_t>(q.Int(4));
        if (!q.Blob(1, &line.capsule_id))
          return DataLoss("license {} has a malformed stored capsule id", line.license_id);
        MLC_ASSIGN_OR_RETURN(line.amount_micros,
                             BillAmount(line.license_id, line.queries, line.price_micros));
        lines.push_back(std::move(line));
      }
      if (rc != SQLITE_DONE) return Error("billing");
      return lines;
    });
  }

 private:
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
  // Steps a statement that returns no rows.
  Status Done(Statement& q, const char* what) {
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return Status::Ok();
    // The checks before every insert make this a race with another process on the same file.
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
      return AlreadyExists("sqlite: {}: {}", what, sqlite3_errmsg(db_));
    return Error(what);
  }

  // The connection's cached statement for `sql` (prepared on first use). The caller holds
  // mutex_, and uses one statement at most once at a time.
  Statement Prepare(std::string_view sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return Statement(it->second);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt, nullptr) != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return Statement(nullptr);
    }
    statements_.emplace(std::string(sql), stmt);
    return Statement(stmt);
  }

  // Whether `sql` with these parameters returns a row.
  template <typename... Args>
  Result<bool> Exists(std::string_view sql, const Args&... args) {
    Statement q = Prepare(sql);
    if (!q.ok()) return Error("preparing a lookup");
    int i = 0;
    (q.Bind(++i, args), ...);
    const int rc = q.Step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error("a lookup");
    return rc == SQLITE_ROW;
  }

  // Runs `body` (returning Status or Result) in a BEGIN IMMEDIATE transaction: committed when
  // it succeeds, rolled back when it fails. The caller holds mutex_.
  template <typename Body>
  auto Transaction(const char* what, Body&& body) -> decltype(body()) {
    MLC_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", what));
    auto result = body();
    if (!StatusOf(result).ok()) return Rollback(StatusOf(result));
    Status commit = Exec("COMMIT", what);
    if (!commit.ok()) return Rollback(commit);
    return result;
  }
  Status Rollback(const Status& why) {
    (void)Exec("ROLLBACK", "rolling back");
    return why;
  }

  Result<int> ReadSchemaVersion() {
    Statement q = Prepare("PRAGMA user_version");
    if (!q.ok() || q.Step() != SQLITE_ROW) return Error("reading the schema version");
    return static_cast<int>(q.Int(0));
  }

  Result<CapsuleRecord> ReadCapsule(const Statement& q) {
    CapsuleRecord capsule;
    capsule.provider_id = q.Text(1);
    capsule.name = q.Text(2);
    capsule.header = q.Bytes(3);
    capsule.wrapped_key = q.Bytes(4);
    capsule.created_at = q.Int(5);
    if (!q.Blob(0, &capsule.capsule_id)) return DataLoss("a stored capsule id is malformed");
    return capsule;
  }

  Result<LicenseRecord> ReadLicense(const Statement& q) {
    LicenseRecord license;
    license.id = q.Text(0);
    license.customer_id = q.Text(1);
    license.query_quota = static_cast<uint64_t>(q.Int(4));
    license.lease_queries = static_cast<uint64_t>(q.Int(5));
    license.lease_seconds = q.Int(6);
    license.expires_at = q.Int(7);
    license.price_micros = q.Int(8);
    license.currency = q.Text(9);
    license.rate_per_minute = static_cast<uint32_t>(q.Int(10));
    license.revoked = q.Int(11) != 0;
    license.revoked_at = q.Int(12);
    license.created_at = q.Int(13);
    if (!q.Blob(2, &license.capsule_id) || !q.Blob(3, &license.token_hash))
      return DataLoss("license {} has a malformed stored field", license.id);
    return license;
  }

  Status InsertAlert(std::string_view license_id, std::string_view kind, std::string_view detail,
                     int64_t now) {
    Statement q =
        Prepare("INSERT INTO alerts(license_id, kind, detail, created_at) VALUES(?, ?, ?, ?)");
    if (!q.ok()) return Error("preparing the alert insert");
    q.Bind(1, license_id).Bind(2, kind).Bind(3, detail).Bind(4, now);
    if (q.Step() != SQLITE_DONE) return Error("storing an alert");
    return Status::Ok();
  }

  // One report inside the caller's transaction. Returns the errors of IsReportEntryError before
  // it writes anything.
  Result<ReportResult> RecordInTransaction(const PendingReport& pending, int64_t now) {
    const capsule::UsageReport& report = *pending.report;
    MLC_RETURN_IF_ERROR(CheckReportForStorage(report));
    const capsule::Digest digest = capsule::Hash({pending.signed_bytes});
    {
      Statement q = Prepare("SELECT 1 FROM usage_reports WHERE digest = ?");
      if (!q.ok()) return Error("preparing the duplicate check");
      q.Bind(1, std::span<const uint8_t>(digest));
      const int rc = q.Step();
      if (rc == SQLITE_ROW) return ReportResult{ReportOutcome::kDuplicate, 0, "already recorded"};
      if (rc != SQLITE_DONE) return Error("checking for a duplicate report");
    }
    LeaseRecord lease;
    uint64_t recorded_count = 0;
    capsule::Digest recorded_head{};
    bool sequence_taken = false;
    {
      Statement q = Prepare(
          "SELECT license_id, capsule_id, chain_base_count, chain_base, core_key, "
          "recorded_count, recorded_head, EXISTS(SELECT 1 FROM usage_reports r WHERE "
          "r.lease_id = leases.lease_id AND r.report_sequence = ?2) FROM leases WHERE "
          "lease_id = ?1");
      if (!q.ok()) return Error("preparing the lease lookup");
      q.Bind(1, std::span<const uint8_t>(report.lease_id))
          .Bind(2, static_cast<int64_t>(report.report_sequence));
      const int rc = q.Step();
      if (rc == SQLITE_DONE)
        return NotFound("usage report for unknown lease {}", capsule::ToHex(report.lease_id));
      if (rc != SQLITE_ROW) return Error("looking up a lease");
      lease.license_id = q.Text(0);
      lease.chain_base_count = static_cast<uint64_t>(q.Int(2));
      recorded_count = static_cast<uint64_t>(q.Int(5));
      sequence_taken = q.Int(7) != 0;
      if (!q.Blob(1, &lease.capsule_id) || !q.Blob(3, &lease.chain_base) ||
          !q.Blob(4, &lease.core_signing_key) || !q.Blob(6, &recorded_head))
        return DataLoss("lease {} has a malformed stored field", capsule::ToHex(report.lease_id));
    }
    const ReportResult result =
        DecideReport(report, lease, recorded_count, recorded_head, sequence_taken);
    if (result.outcome == ReportOutcome::kAccepted && report.to_count > recorded_count) {
      Statement u =
          Prepare("UPDATE leases SET recorded_count = ?, recorded_head = ? WHERE lease_id = ?");
      if (!u.ok()) return Error("preparing the lease update");
      u.Bind(1, static_cast<int64_t>(report.to_count))
          .Bind(2, std::span<const uint8_t>(report.to_head))
          .Bind(3, std::span<const uint8_t>(report.lease_id));
      if (u.Step() != SQLITE_DONE) return Error("updating a lease");
    }
    {
      Statement insert = Prepare(
          "INSERT INTO usage_reports(digest, lease_id, license_id, report_sequence, to_count, "
          "to_head, outcome, billed, created_at, bytes, id) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
          "(SELECT COALESCE(MAX(id), 0) + 1 FROM usage_reports))");
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
          .Bind(10, pending.signed_bytes);
      if (insert.Step() != SQLITE_DONE) return Error("storing a usage report");
    }
    if (result.outcome == ReportOutcome::kFork)
      MLC_RETURN_IF_ERROR(InsertAlert(lease.license_id, "fork", result.detail, now));
    if (result.outcome == ReportOutcome::kAccepted)
      for (const capsule::Alert& alert : report.alerts)
        if (AlertIsNew(alert, recorded_count))
          MLC_RETURN_IF_ERROR(
              InsertAlert(lease.license_id, alert.kind, ReportAlertDetail(alert), now));
    return result;
  }

  sqlite3* db_;
  // One connection, one transaction at a time: every public method holds this (server threads
  // share the store; SQLite's own locking covers other processes).
  std::mutex mutex_;
  // Prepared statements by their SQL, finalized with the connection.
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
};

}  // namespace

bool ReportOutcomeFromName(std::string_view name, ReportOutcome* outcome) {
  for (ReportOutcome candidate : {ReportOutcome::kAccepted, ReportOutcome::kDuplicate,
                                  ReportOutcome::kStale, ReportOutcome::kFork}) {
    if (name == ReportOutcomeName(candidate)) {
      *outcome = candidate;
      return true;
    }
  }
  return false;
}

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
