// The PostgreSQL back end of Store (store.h), for several server instances sharing one database
// (libpqxx 6.4). Every write is one transaction; usage reports lock their leases' rows
// (SELECT ... FOR UPDATE, in lease id order), so reports of one lease are decided one after
// another even across instances, with the same rules as SQLite (ledger.h). Byte strings are
// bytea, passed as hex. The usage report path uses statements prepared once per connection.
#include <pqxx/pqxx>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <type_traits>

#include "capsule/crypto.h"
#include "server/ledger.h"
#include "server/store.h"

namespace mlcapsule::server {
namespace {

// Versioned migrations, as in sqlite_store.cc (versions 2 and 3 are explained there). Never edit
// one that has shipped; append. Version 3's ids come from a sequence (BIGSERIAL), drawn at insert.
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
    R"sql(
DROP TABLE nonces;
ALTER TABLE leases ADD COLUMN nonce BYTEA;
CREATE UNIQUE INDEX leases_nonce ON leases(nonce);
CREATE UNIQUE INDEX leases_license_sequence ON leases(license_id, sequence);
DROP INDEX leases_license;
DROP INDEX usage_reports_license;
CREATE INDEX usage_reports_license_time ON usage_reports(license_id, created_at);
CREATE TABLE providers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE customers (
  id TEXT PRIMARY KEY,
  provider_id TEXT NOT NULL REFERENCES providers(id),
  name TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX customers_provider ON customers(provider_id);
CREATE TABLE capsules (
  capsule_id BYTEA PRIMARY KEY,
  provider_id TEXT NOT NULL REFERENCES providers(id),
  name TEXT NOT NULL,
  header BYTEA NOT NULL,
  wrapped_key BYTEA NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX capsules_provider ON capsules(provider_id);
CREATE TABLE licenses (
  id TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL REFERENCES customers(id),
  capsule_id BYTEA NOT NULL REFERENCES capsules(capsule_id),
  token_hash BYTEA NOT NULL UNIQUE,
  query_quota BIGINT NOT NULL,
  lease_queries BIGINT NOT NULL,
  lease_seconds BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  price_micros BIGINT NOT NULL,
  currency TEXT NOT NULL,
  rate_per_minute BIGINT NOT NULL,
  revoked BOOLEAN NOT NULL DEFAULT FALSE,
  revoked_at BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE INDEX licenses_customer ON licenses(customer_id);
CREATE INDEX licenses_capsule ON licenses(capsule_id);
CREATE TABLE admin_tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  token_hash BYTEA NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  revoked BOOLEAN NOT NULL DEFAULT FALSE
);
)sql",
    R"sql(
ALTER TABLE usage_reports ADD COLUMN id BIGSERIAL;
CREATE UNIQUE INDEX usage_reports_license_id ON usage_reports(license_id, id);
)sql",
};

std::string Hex(std::span<const uint8_t> bytes) { return capsule::ToHex(bytes); }

template <size_t N>
bool FromHexField(const pqxx::field& field, std::array<uint8_t, N>* out) {
  return capsule::FromHex(field.c_str(), *out, "stored field").ok();
}
// A nullable fixed-size bytea (selected with encode(..., 'hex')): NULL leaves `out` zero.
template <size_t N>
bool FromHexFieldOrNull(const pqxx::field& field, std::array<uint8_t, N>* out) {
  if (field.is_null()) {
    out->fill(0);
    return true;
  }
  return FromHexField(field, out);
}
bool FromHexField(const pqxx::field& field, std::vector<uint8_t>* out) {
  const std::string_view hex(field.c_str(), field.size());
  out->resize(hex.size() / 2);
  return hex.size() % 2 == 0 && capsule::FromHex(hex, *out, "stored field").ok();
}

// The first line of a libpqxx error (PostgreSQL adds DETAIL and HINT lines).
std::string FirstLine(const char* message) {
  const std::string_view text(message);
  return std::string(text.substr(0, text.find('\n')));
}

Status StatusOf(const Status& status) { return status; }
template <typename T>
Status StatusOf(const Result<T>& result) {
  return result.status();
}

constexpr const char* kLicenseColumns =
    "id, customer_id, encode(capsule_id, 'hex'), encode(token_hash, 'hex'), query_quota, "
    "lease_queries, lease_seconds, expires_at, price_micros, currency, rate_per_minute, revoked, "
    "revoked_at, created_at";

// The statements of the usage report path, prepared once per connection. A batch costs a fixed
// number of round trips, whatever its size: the server's group commit sends 64 reports at once.
constexpr const char* kBatchLeases = "mlc_batch_leases";
constexpr const char* kBatchDigests = "mlc_batch_digests";
constexpr const char* kBatchSequences = "mlc_batch_sequences";
constexpr const char* kBatchInsert = "mlc_batch_insert";
constexpr const char* kBatchMove = "mlc_batch_move";
constexpr const char* kAlertInsert = "mlc_alert_insert";
// Connections per store (per server instance): enough for the HTTP threads' reads and lease
// writes to overlap with the report batches on a small machine, few enough for PostgreSQL's
// default max_connections (100) to serve a dozen instances.
constexpr int kPostgresConnections = 8;

// A text[] or bigint[] literal of values that need no quoting (hex strings, numbers).
template <typename T>
std::string ArrayLiteral(const std::vector<T>& values) {
  std::string array = "{";
  for (const T& value : values) {
    if (array.size() > 1) array += ',';
    if constexpr (std::is_same_v<T, std::string>)
      array += value;
    else
      array += std::to_string(value);
  }
  return array + "}";
}

// A lease and what is recorded for it, as LeaseStateFromRow reads them.
constexpr const char* kLeaseStateColumns =
    "encode(lease_id, 'hex'), license_id, encode(capsule_id, 'hex'), sequence, "
    "chain_base_count, encode(chain_base, 'hex'), encode(core_key, 'hex'), query_quota, "
    "issued_at, expires_at, encode(nonce, 'hex'), recorded_count, encode(recorded_head, 'hex'), "
    "(SELECT COUNT(*) FROM usage_reports r WHERE r.lease_id = l.lease_id) AS reports";
constexpr const char* kLatestLeaseFrom =
    " FROM leases l WHERE license_id = $1 ORDER BY sequence DESC LIMIT 1";

Result<LeaseState> LeaseStateFromRow(const pqxx::row& row, int first,
                                     const std::string& license_id) {
  LeaseState state;
  LeaseRecord& lease = state.lease;
  lease.license_id = row[first + 1].c_str();
  lease.sequence = row[first + 3].as<uint64_t>();
  lease.chain_base_count = row[first + 4].as<uint64_t>();
  lease.query_quota = row[first + 7].as<uint64_t>();
  lease.issued_at = row[first + 8].as<int64_t>();
  lease.expires_at = row[first + 9].as<int64_t>();
  state.recorded_count = row[first + 11].as<uint64_t>();
  state.reports = row[first + 13].as<uint64_t>();
  if (!FromHexField(row[first], &lease.lease_id) ||
      !FromHexField(row[first + 2], &lease.capsule_id) ||
      !FromHexField(row[first + 5], &lease.chain_base) ||
      !FromHexField(row[first + 6], &lease.core_signing_key) ||
      !FromHexFieldOrNull(row[first + 10], &lease.nonce) ||
      !FromHexField(row[first + 12], &state.recorded_head))
    return DataLoss("the latest lease of license {} has a malformed stored field", license_id);
  return state;
}

class PgStore final : public Store {
 public:
  // Connections are opened up front; each request takes one for one transaction, so reads,
  // lease writes and the report batches of one instance run side by side (PostgreSQL's own group
  // commit then shares WAL flushes between them).
  explicit PgStore(std::vector<std::unique_ptr<pqxx::connection>> connections)
      : connections_(std::move(connections)) {
    for (auto& connection : connections_) {
      Configure(*connection);
      free_.push_back(connection.get());
    }
  }

  static void Configure(pqxx::connection& connection) {
    // Plan every execution with the statement's values and the tables' current sizes: a generic
    // plan made while a table was small (a sequential scan) would stay in the plan cache as the
    // table grows to millions of reports. (PostgreSQL 12 and later; older servers keep their
    // default.) libpqxx sets it again if it reconnects.
    try {
      connection.set_variable("plan_cache_mode", "force_custom_plan");
    } catch (const std::exception&) {
    }
    // Registered now, prepared by the server on first use (after Migrate).
    // Locks the batch's leases in one statement and in lease id order, so two instances whose
    // batches share leases wait for each other instead of deadlocking. A row that another
    // transaction changed while this one waited is returned as that transaction committed it.
    connection.prepare(
        kBatchLeases,
        "SELECT encode(lease_id, 'hex'), license_id, encode(capsule_id, 'hex'), "
        "chain_base_count, encode(chain_base, 'hex'), encode(core_key, 'hex'), recorded_count, "
        "encode(recorded_head, 'hex') FROM leases WHERE lease_id = ANY(ARRAY(SELECT decode(h, "
        "'hex') FROM unnest($1::text[]) AS h)) ORDER BY lease_id FOR UPDATE");
    // These run after the leases are locked, so their snapshots see every report that an
    // earlier holder of a lock committed.
    connection.prepare(kBatchDigests,
                       "SELECT encode(digest, 'hex') FROM usage_reports WHERE digest = "
                       "ANY(ARRAY(SELECT decode(h, 'hex') FROM unnest($1::text[]) AS h))");
    connection.prepare(
        kBatchSequences,
        "SELECT t.lease, t.sequence FROM unnest($1::text[], $2::bigint[]) AS t(lease, sequence) "
        "WHERE EXISTS(SELECT 1 FROM usage_reports r WHERE r.lease_id = decode(t.lease, 'hex') "
        "AND r.report_sequence = t.sequence)");
    connection.prepare(
        kBatchInsert,
        "INSERT INTO usage_reports(digest, lease_id, license_id, report_sequence, to_count, "
        "to_head, outcome, billed, created_at, bytes) SELECT decode(t.digest, 'hex'), "
        "decode(t.lease, 'hex'), (SELECT license_id FROM leases l WHERE l.lease_id = "
        "decode(t.lease, 'hex')), t.sequence, t.to_count, decode(t.to_head, 'hex'), t.outcome, "
        "t.billed, $9, decode(t.bytes, 'hex') FROM unnest($1::text[], $2::text[], $3::bigint[], "
        "$4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::text[]) AS t(digest, lease, "
        "sequence, to_count, to_head, outcome, billed, bytes)");
    connection.prepare(
        kBatchMove,
        "UPDATE leases SET recorded_count = t.count, recorded_head = decode(t.head, 'hex') FROM "
        "unnest($1::text[], $2::bigint[], $3::text[]) AS t(lease, count, head) WHERE "
        "leases.lease_id = decode(t.lease, 'hex')");
    connection.prepare(
        kAlertInsert,
        "INSERT INTO alerts(license_id, kind, detail, created_at) VALUES($1, $2, $3, $4)");
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

  // --- admin entities. Each checks first (for an error that names the record), in the same
  // transaction; a concurrent instance that wins the race still meets the unique index
  // (AlreadyExists) or the foreign key (NotFound).

  Status CreateProvider(const ProviderRecord& provider) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("provider", provider.id));
    return Transact("storing a provider", [&](pqxx::work& tx) -> Status {
      if (!tx.exec_params("SELECT 1 FROM providers WHERE id = $1", provider.id).empty())
        return AlreadyExists("provider {} already exists", provider.id);
      tx.exec_params("INSERT INTO providers(id, name, created_at) VALUES($1, $2, $3)", provider.id,
                     provider.name, provider.created_at);
      return Status::Ok();
    });
  }

  Result<std::vector<ProviderRecord>> ListProviders() override {
    return Transact(
        "listing providers", [&](pqxx::work& tx) -> Result<std::vector<ProviderRecord>> {
          std::vector<ProviderRecord> providers;
          for (const auto& row : tx.exec("SELECT id, name, created_at FROM providers ORDER BY id"))
            providers.push_back({row[0].c_str(), row[1].c_str(), row[2].as<int64_t>()});
          return providers;
        });
  }

  Status CreateCustomer(const CustomerRecord& customer) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("customer", customer.id));
    return Transact("storing a customer", [&](pqxx::work& tx) -> Status {
      if (tx.exec_params("SELECT 1 FROM providers WHERE id = $1", customer.provider_id).empty())
        return NotFound("customer {} names unknown provider '{}'", customer.id,
                        customer.provider_id);
      if (!tx.exec_params("SELECT 1 FROM customers WHERE id = $1", customer.id).empty())
        return AlreadyExists("customer {} already exists", customer.id);
      tx.exec_params(
          "INSERT INTO customers(id, provider_id, name, created_at) VALUES($1, $2, $3, $4)",
          customer.id, customer.provider_id, customer.name, customer.created_at);
      return Status::Ok();
    });
  }

  Result<CustomerRecord> GetCustomer(const std::string& id) override {
    return Transact("looking up a customer", [&](pqxx::work& tx) -> Result<CustomerRecord> {
      pqxx::result r = tx.exec_params(
          "SELECT id, provider_id, name, created_at FROM customers WHERE id = $1", id);
      if (r.empty()) return NotFound("no customer {}", id);
      return ReadCustomer(r[0]);
    });
  }

  Result<std::vector<CustomerRecord>> ListCustomers(const std::string& provider_id) override {
    return Transact(
        "listing customers", [&](pqxx::work& tx) -> Result<std::vector<CustomerRecord>> {
          std::vector<CustomerRecord> customers;
          for (const auto& row :
               tx.exec_params("SELECT id, provider_id, name, created_at FROM customers WHERE "
                              "$1 = '' OR provider_id = $1 ORDER BY id",
                              provider_id))
            customers.push_back(ReadCustomer(row));
          return customers;
        });
  }

  Status CreateCapsule(const CapsuleRecord& capsule) override {
    const std::string id_hex = Hex(capsule.capsule_id);
    return Transact("storing a capsule", [&](pqxx::work& tx) -> Status {
      if (tx.exec_params("SELECT 1 FROM providers WHERE id = $1", capsule.provider_id).empty())
        return NotFound("capsule {} names unknown provider '{}'", id_hex, capsule.provider_id);
      if (!tx.exec_params("SELECT 1 FROM capsules WHERE capsule_id = decode($1, 'hex')", id_hex)
               .empty())
        return AlreadyExists("capsule {} already exists", id_hex);
      tx.exec_params(
          "INSERT INTO capsules(capsule_id, provider_id, name, header, wrapped_key, created_at) "
          "VALUES(decode($1, 'hex'), $2, $3, decode($4, 'hex'), decode($5, 'hex'), $6)",
          id_hex, capsule.provider_id, capsule.name, Hex(capsule.header), Hex(capsule.wrapped_key),
          capsule.created_at);
      return Status::Ok();
    });
  }

  Result<CapsuleRecord> GetCapsule(const capsule::CapsuleId& capsule_id) override {
    return OneStatement(
        "looking up a capsule", [&](pqxx::transaction_base& tx) -> Result<CapsuleRecord> {
          pqxx::result r = tx.exec_params(
              "SELECT encode(capsule_id, 'hex'), provider_id, name, encode(header, 'hex'), "
              "encode(wrapped_key, 'hex'), created_at FROM capsules WHERE capsule_id = "
              "decode($1, 'hex')",
              Hex(capsule_id));
          if (r.empty()) return NotFound("no capsule {}", Hex(capsule_id));
          return ReadCapsule(r[0]);
        });
  }

  Result<std::vector<CapsuleRecord>> ListCapsules() override {
    return Transact("listing capsules", [&](pqxx::work& tx) -> Result<std::vector<CapsuleRecord>> {
      std::vector<CapsuleRecord> capsules;
      for (const auto& row :
           tx.exec("SELECT encode(capsule_id, 'hex'), provider_id, name, encode(header, 'hex'), "
                   "encode(wrapped_key, 'hex'), created_at FROM capsules ORDER BY created_at, "
                   "capsule_id")) {
        MLC_ASSIGN_OR_RETURN(CapsuleRecord capsule, ReadCapsule(row));
        capsules.push_back(std::move(capsule));
      }
      return capsules;
    });
  }

  Status CreateLicense(const LicenseRecord& license) override {
    MLC_RETURN_IF_ERROR(CheckLicenseForStorage(license));
    return Transact("storing a license", [&](pqxx::work& tx) -> Status {
      if (tx.exec_params("SELECT 1 FROM customers WHERE id = $1", license.customer_id).empty())
        return NotFound("license {} names unknown customer '{}'", license.id, license.customer_id);
      if (tx.exec_params("SELECT 1 FROM capsules WHERE capsule_id = decode($1, 'hex')",
                         Hex(license.capsule_id))
              .empty())
        return NotFound("license {} names unknown capsule {}", license.id, Hex(license.capsule_id));
      if (!tx.exec_params("SELECT 1 FROM licenses WHERE id = $1", license.id).empty())
        return AlreadyExists("license {} already exists", license.id);
      if (!tx.exec_params("SELECT 1 FROM licenses WHERE token_hash = decode($1, 'hex')",
                          Hex(license.token_hash))
               .empty())
        return AlreadyExists("another license already has the token of license {}", license.id);
      tx.exec_params(
          "INSERT INTO licenses(id, customer_id, capsule_id, token_hash, query_quota, "
          "lease_queries, lease_seconds, expires_at, price_micros, currency, rate_per_minute, "
          "revoked, revoked_at, created_at) VALUES($1, $2, decode($3, 'hex'), decode($4, 'hex'), "
          "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
          license.id, license.customer_id, Hex(license.capsule_id), Hex(license.token_hash),
          static_cast<int64_t>(license.query_quota), static_cast<int64_t>(license.lease_queries),
          license.lease_seconds, license.expires_at, license.price_micros, license.currency,
          static_cast<int64_t>(license.rate_per_minute), license.revoked, license.revoked_at,
          license.created_at);
      return Status::Ok();
    });
  }

  Result<LicenseRecord> GetLicense(const std::string& id) override {
    return OneStatement(
        "looking up a license", [&](pqxx::transaction_base& tx) -> Result<LicenseRecord> {
          pqxx::result r = tx.exec_params(
              fmt::format("SELECT {} FROM licenses WHERE id = $1", kLicenseColumns), id);
          if (r.empty()) return NotFound("no license {}", id);
          return ReadLicense(r[0]);
        });
  }

  Result<LicenseRecord> FindLicenseByToken(const capsule::Digest& token_hash) override {
    return OneStatement(
        "looking up a license token", [&](pqxx::transaction_base& tx) -> Result<LicenseRecord> {
          pqxx::result r = tx.exec_params(
              fmt::format("SELECT {} FROM licenses WHERE token_hash = decode($1, 'hex')",
                          kLicenseColumns),
              Hex(token_hash));
          if (r.empty()) return NotFound("no license has this token");
          return ReadLicense(r[0]);
        });
  }

  Result<std::vector<LicenseRecord>> ListLicenses(const std::string& customer_id) override {
    return Transact("listing licenses", [&](pqxx::work& tx) -> Result<std::vector<LicenseRecord>> {
      std::vector<LicenseRecord> licenses;
      for (const auto& row : tx.exec_params(
               fmt::format("SELECT {} FROM licenses WHERE $1 = '' OR customer_id = $1 ORDER BY id",
                           kLicenseColumns),
               customer_id)) {
        MLC_ASSIGN_OR_RETURN(LicenseRecord license, ReadLicense(row));
        licenses.push_back(std::move(license));
      }
      return licenses;
    });
  }

  Status RevokeLicense(const std::string& id, int64_t now) override {
    return Transact("revoking a license", [&](pqxx::work& tx) -> Status {
      if (tx.exec_params("SELECT 1 FROM licenses WHERE id = $1", id).empty())
        return NotFound("no license {}", id);
      // A second revocation keeps the first one's time.
      tx.exec_params(
          "UPDATE licenses SET revoked = TRUE, revoked_at = $1 WHERE id = $2 AND NOT revoked", now,
          id);
      return Status::Ok();
    });
  }

  Status CreateAdminToken(const AdminTokenRecord& token) override {
    MLC_RETURN_IF_ERROR(CheckRecordId("admin token", token.id));
    return Transact("storing an admin token", [&](pqxx::work& tx) -> Status {
      if (!tx.exec_params("SELECT 1 FROM admin_tokens WHERE id = $1", token.id).empty())
        return AlreadyExists("admin token {} already exists", token.id);
      if (!tx.exec_params("SELECT 1 FROM admin_tokens WHERE token_hash = decode($1, 'hex')",
                          Hex(token.token_hash))
               .empty())
        return AlreadyExists("another admin token already has the token of {}", token.id);
      tx.exec_params(
          "INSERT INTO admin_tokens(id, name, token_hash, created_at) VALUES($1, $2, "
          "decode($3, 'hex'), $4)",
          token.id, token.name, Hex(token.token_hash), token.created_at);
      return Status::Ok();
    });
  }

  Result<AdminTokenRecord> FindAdminToken(const capsule::Digest& token_hash) override {
    return Transact("looking up an admin token", [&](pqxx::work& tx) -> Result<AdminTokenRecord> {
      pqxx::result r = tx.exec_params(
          "SELECT id, name, encode(token_hash, 'hex'), created_at FROM admin_tokens WHERE "
          "token_hash = decode($1, 'hex') AND NOT revoked",
          Hex(token_hash));
      if (r.empty()) return NotFound("no admin token has this hash");
      AdminTokenRecord token{r[0][0].c_str(), r[0][1].c_str(), {}, r[0][3].as<int64_t>()};
      if (!FromHexField(r[0][2], &token.token_hash))
        return DataLoss("admin token {} has a malformed stored hash", token.id);
      return token;
    });
  }

  Result<int64_t> CountAdminTokens() override {
    return Transact("counting admin tokens", [&](pqxx::work& tx) -> Result<int64_t> {
      return tx.exec("SELECT COUNT(*) FROM admin_tokens")[0][0].as<int64_t>();
    });
  }

  // --- leases

  Status RecordLease(const LeaseRecord& lease) override {
    MLC_RETURN_IF_ERROR(CheckLeaseForStorage(lease));
    const auto insert = [&](pqxx::transaction_base& tx) -> Status {
      tx.exec_params(
          "INSERT INTO leases(lease_id, license_id, capsule_id, sequence, chain_base_count, "
          "chain_base, core_key, query_quota, issued_at, expires_at, nonce, recorded_count, "
          "recorded_head) VALUES(decode($1, 'hex'), $2, decode($3, 'hex'), $4, $5, decode($6, "
          "'hex'), decode($7, 'hex'), $8, $9, $10, decode($11, 'hex'), $5, decode($6, 'hex'))",
          Hex(lease.lease_id), lease.license_id, Hex(lease.capsule_id),
          static_cast<int64_t>(lease.sequence), static_cast<int64_t>(lease.chain_base_count),
          Hex(lease.chain_base), Hex(lease.core_signing_key),
          static_cast<int64_t>(lease.query_quota), lease.issued_at, lease.expires_at,
          Hex(lease.nonce));
      return Status::Ok();
    };
    // The common case is one statement. A unique violation (a reused nonce, a taken sequence)
    // writes nothing; the checks below then say which conflict it was.
    Status status = OneStatement("storing a lease", insert);
    if (status.code() != StatusCode::kAlreadyExists) return status;
    const auto record = [&](pqxx::work& tx) -> Status {
      if (!tx.exec_params("SELECT 1 FROM leases WHERE nonce = decode($1, 'hex')", Hex(lease.nonce))
               .empty())
        return NonceAlreadyUsed(lease.nonce);
      if (!tx.exec_params("SELECT 1 FROM leases WHERE license_id = $1 AND sequence = $2",
                          lease.license_id, static_cast<int64_t>(lease.sequence))
               .empty())
        return LeaseSequenceTaken(lease.license_id, lease.sequence);
      if (!tx.exec_params("SELECT 1 FROM leases WHERE lease_id = decode($1, 'hex')",
                          Hex(lease.lease_id))
               .empty())
        return AlreadyExists("lease {} is already recorded", Hex(lease.lease_id));
      return insert(tx);  // the conflict is gone (the other transaction rolled back)
    };
    return Transact("storing a lease", record);
  }

  Result<std::optional<LeaseState>> LatestLease(const std::string& license_id) override {
    return OneStatement(
        "looking up the latest lease",
        [&](pqxx::transaction_base& tx) -> Result<std::optional<LeaseState>> {
          pqxx::result r = tx.exec_params(
              std::string("SELECT ") + kLeaseStateColumns + kLatestLeaseFrom, license_id);
          if (r.empty()) return std::optional<LeaseState>();
          MLC_ASSIGN_OR_RETURN(LeaseState state, LeaseStateFromRow(r[0], 0, license_id));
          return std::optional<LeaseState>(std::move(state));
        });
  }

  Result<RenewalState> LicenseRenewalState(const std::string& license_id) override {
    return OneStatement(
        "reading a license's renewal state",
        [&](pqxx::transaction_base& tx) -> Result<RenewalState> {
          pqxx::result r = tx.exec_params(
              std::string("SELECT EXISTS(SELECT 1 FROM alerts WHERE license_id = $1 AND "
                          "kind = 'fork' AND NOT resolved), (SELECT "
                          "COALESCE(SUM(recorded_count - chain_base_count), 0) FROM "
                          "leases WHERE license_id = $1), latest.* FROM (SELECT 1) AS "
                          "one LEFT JOIN LATERAL (SELECT ") +
                  kLeaseStateColumns + kLatestLeaseFrom + ") AS latest ON TRUE",
              license_id);
          RenewalState state;
          state.fork = r[0][0].as<bool>();
          state.billed = r[0][1].as<uint64_t>();
          if (!r[0][2].is_null()) {
            MLC_ASSIGN_OR_RETURN(state.latest, LeaseStateFromRow(r[0], 2, license_id));
          }
          return state;
        });
  }

  // --- usage

  std::vector<Result<ReportResult>> RecordUsageReports(std::span<const PendingReport> batch,
                                                       int64_t now) override {
    Connection connection(this);
    if (batch.size() > 1) {
      // The group commit: one transaction for the batch. Expected outcomes (an unknown lease, a
      // duplicate) are found by looking first, so no statement fails on them; a statement that
      // fails anyway (a concurrent instance, a lost connection) aborts the transaction, and the
      // reports are recorded one per transaction instead.
      try {
        pqxx::work tx(*connection);
        std::vector<Result<ReportResult>> results = RecordInTransaction(tx, batch, now);
        tx.commit();
        return results;
      } catch (const std::exception&) {
      }
    }
    std::vector<Result<ReportResult>> results;
    results.reserve(batch.size());
    for (const PendingReport& pending : batch)
      results.push_back(TransactOn(
          *connection, "recording a usage report", [&](pqxx::work& tx) -> Result<ReportResult> {
            return std::move(RecordInTransaction(tx, std::span(&pending, 1), now).front());
          }));
    return results;
  }

  Result<uint64_t> BilledQueries(const std::string& license_id) override {
    return OneStatement(
        "summing billed queries", [&](pqxx::transaction_base& tx) -> Result<uint64_t> {
          // Per lease, the accepted reports billed exactly how far its recorded point moved from
          // its chain point (ledger.h), so this sums one row per lease, not one per report.
          pqxx::result r = tx.exec_params(
              "SELECT COALESCE(SUM(recorded_count - chain_base_count), 0) FROM leases WHERE "
              "license_id = $1",
              license_id);
          return r[0][0].as<uint64_t>();
        });
  }

  Result<bool> HasFork(const std::string& license_id) override {
    return OneStatement("looking for forks", [&](pqxx::transaction_base& tx) -> Result<bool> {
      pqxx::result r = tx.exec_params(
          "SELECT COUNT(*) FROM alerts WHERE license_id = $1 AND kind = 'fork' AND NOT resolved",
          license_id);
      return r[0][0].as<int64_t>() > 0;
    });
  }

  Result<std::vector<StoredReport>> ListUsageReports(const std::string& license_id,
                                                     int64_t after_id, size_t limit,
                                                     uint64_t max_bytes) override {
    return Transact(
        "listing usage reports", [&](pqxx::work& tx) -> Result<std::vector<StoredReport>> {
          // The page's running byte total is computed from the lengths alone; only
          // the rows within max_bytes (and always the first) bring their bytes.
          pqxx::result r = tx.exec_params(
              "SELECT r.id, encode(r.lease_id, 'hex'), r.report_sequence, r.to_count, "
              "r.outcome, r.billed, r.created_at, encode(r.bytes, 'hex') FROM "
              "usage_reports r JOIN (SELECT id, octet_length(bytes) AS size, "
              "SUM(octet_length(bytes)) OVER (ORDER BY id) AS running FROM "
              "usage_reports WHERE license_id = $1 AND id > $2 ORDER BY id LIMIT $3) "
              "t ON r.license_id = $1 AND r.id = t.id WHERE t.running = t.size OR "
              "t.running <= $4 ORDER BY r.id",
              license_id, after_id, static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)),
              static_cast<int64_t>(std::min<uint64_t>(max_bytes, INT64_MAX)));
          std::vector<StoredReport> reports;
          for (const auto& row : r) {
            StoredReport report;
            report.id = row[0].as<int64_t>();
            report.report_sequence = row[2].as<uint64_t>();
            report.to_count = row[3].as<uint64_t>();
            report.billed_queries = row[5].as<uint64_t>();
            report.created_at = row[6].as<int64_t>();
            if (!FromHexField(row[1], &report.lease_id) ||
                !ReportOutcomeFromName(row[4].c_str(), &report.outcome) ||
                !FromHexField(row[7], &report.bytes))
              return DataLoss("usage report {} of license {} has a malformed stored field",
                              report.id, license_id);
            reports.push_back(std::move(report));
          }
          return reports;
        });
  }

  Result<std::vector<AlertRecord>> Alerts(const std::string& license_id,
                                          int64_t after_id) override {
    return Transact("reading alerts", [&](pqxx::work& tx) -> Result<std::vector<AlertRecord>> {
      pqxx::result r = tx.exec_params(
          "SELECT id, license_id, kind, detail, created_at, resolved FROM alerts WHERE id > $1 "
          "AND ($2 = '' OR license_id = $2) ORDER BY id",
          after_id, license_id);
      std::vector<AlertRecord> alerts;
      for (const auto& row : r)
        alerts.push_back({row[0].as<int64_t>(), row[1].c_str(), row[2].c_str(), row[3].c_str(),
                          row[4].as<int64_t>(), row[5].as<bool>()});
      return alerts;
    });
  }

  Status RaiseAlert(const std::string& license_id, std::string_view kind, std::string_view detail,
                    int64_t now) override {
    return Transact("storing an alert", [&](pqxx::work& tx) -> Status {
      tx.exec_prepared(kAlertInsert, license_id, std::string(kind), std::string(detail), now);
      return Status::Ok();
    });
  }

  Result<int64_t> ResolveForks(const std::string& license_id) override {
    return Transact("resolving forks", [&](pqxx::work& tx) -> Result<int64_t> {
      pqxx::result r = tx.exec_params(
          "UPDATE alerts SET resolved = TRUE WHERE license_id = $1 AND kind = 'fork' AND NOT "
          "resolved",
          license_id);
      return static_cast<int64_t>(r.affected_rows());
    });
  }

  Result<std::vector<BillLine>> Billing(const std::string& customer_id, int64_t from,
                                        int64_t to) override {
    if (from > to)
      return InvalidArgument("billing period [{}, {}) ends before it starts", from, to);
    return Transact("billing", [&](pqxx::work& tx) -> Result<std::vector<BillLine>> {
      if (tx.exec_params("SELECT 1 FROM customers WHERE id = $1", customer_id).empty())
        return NotFound("no customer {}", customer_id);
      pqxx::result r = tx.exec_params(
          "SELECT l.id, encode(l.capsule_id, 'hex'), l.price_micros, l.currency, "
          "(SELECT COALESCE(SUM(r.billed), 0) FROM usage_reports r WHERE r.license_id = l.id AND "
          "r.created_at >= $2 AND r.created_at < $3) FROM licenses l WHERE l.customer_id = $1 "
          "ORDER BY l.id",
          customer_id, from, to);
      std::vector<BillLine> lines;
      for (const auto& row : r) {
        BillLine line;
        line.license_id = row[0].c_str();
        line.price_micros = row[2].as<int64_t>();
        line.currency = row[3].c_str();
        line.queries = row[4].as<uint64_t>();
        if (!FromHexField(row[1], &line.capsule_id))
          return DataLoss("license {} has a malformed stored capsule id", line.license_id);
        MLC_ASSIGN_OR_RETURN(line.amount_micros,
                             BillAmount(line.license_id, line.queries, line.price_micros));
        lines.push_back(std::move(line));
      }
      return lines;
    });
  }

 private:
  // Runs `body` in a transaction (committed when it returns OK), turning libpqxx exceptions
  // into a Status naming `what`.
  template <typename Body>
  auto Transact(const char* what, Body&& body) -> decltype(body(std::declval<pqxx::work&>())) {
    Connection connection(this);
    return TransactOn(*connection, what, std::forward<Body>(body));
  }
  // One statement on its own (a read, or a single insert): no BEGIN/COMMIT round trips; the
  // statement is its own snapshot and its own transaction.
  template <typename Body>
  auto OneStatement(const char* what, Body&& body)
      -> decltype(body(std::declval<pqxx::transaction_base&>())) {
    Connection connection(this);
    return TransactOn<pqxx::nontransaction>(*connection, what, std::forward<Body>(body));
  }
  // The same on a connection the caller holds.
  template <typename Tx = pqxx::work, typename Body>
  auto TransactOn(pqxx::connection& connection, const char* what, Body&& body)
      -> decltype(body(std::declval<Tx&>())) {
    try {
      Tx tx(connection);
      auto result = body(tx);
      if (StatusOf(result).ok()) tx.commit();
      return result;
    } catch (const pqxx::unique_violation& e) {
      return AlreadyExists("postgresql: {}: {}", what, FirstLine(e.what()));
    } catch (const pqxx::foreign_key_violation& e) {
      return NotFound("postgresql: {}: {}", what, FirstLine(e.what()));
    } catch (const std::exception& e) {
      return IoError("postgresql: {} failed: {}", what, FirstLine(e.what()));
    }
  }

  // What a batch needs to know of one of its leases; updated as the batch's reports are decided.
  struct BatchLease {
    LeaseRecord lease;
    uint64_t recorded_count = 0;
    capsule::Digest recorded_head{};
    bool malformed = false;
    bool moved = false;  // its recorded point is to be written back
  };

  // Records a batch of reports inside `tx` with the rules of ledger.h, in a fixed number of
  // statements: it locks the leases, reads what is recorded, decides every report in order in
  // memory (a later report sees what the earlier ones of the batch recorded), then writes the
  // rows. Returns one result per report; an entry error (IsReportEntryError) writes nothing for
  // that report. Throws when a statement fails (the transaction is then unusable).
  std::vector<Result<ReportResult>> RecordInTransaction(pqxx::work& tx,
                                                        std::span<const PendingReport> batch,
                                                        int64_t now) {
    std::vector<Status> errors(batch.size());
    std::vector<std::string> lease_ids(batch.size()), digests(batch.size());
    std::vector<std::string> sorted_leases;
    std::vector<int64_t> sequences;
    for (size_t i = 0; i < batch.size(); ++i) {
      const capsule::UsageReport& report = *batch[i].report;
      errors[i] = CheckReportForStorage(report);
      if (!errors[i].ok()) continue;
      lease_ids[i] = Hex(report.lease_id);
      digests[i] = Hex(capsule::Hash({batch[i].signed_bytes}));
      sorted_leases.push_back(lease_ids[i]);
      sequences.push_back(static_cast<int64_t>(report.report_sequence));
    }
    std::vector<std::string> lookup_leases = sorted_leases;  // pairs with `sequences`
    std::sort(sorted_leases.begin(), sorted_leases.end());
    sorted_leases.erase(std::unique(sorted_leases.begin(), sorted_leases.end()),
                        sorted_leases.end());

    std::map<std::string, BatchLease> leases;
    for (const auto& row : tx.exec_prepared(kBatchLeases, ArrayLiteral(sorted_leases))) {
      BatchLease& stored = leases[row[0].c_str()];
      stored.lease.license_id = row[1].c_str();
      stored.lease.chain_base_count = row[3].as<uint64_t>();
      stored.recorded_count = row[6].as<uint64_t>();
      stored.malformed = !FromHexField(row[2], &stored.lease.capsule_id) ||
                         !FromHexField(row[4], &stored.lease.chain_base) ||
                         !FromHexField(row[5], &stored.lease.core_signing_key) ||
                         !FromHexField(row[7], &stored.recorded_head);
    }
    std::set<std::string> recorded;  // report digests, of the database and of this batch
    for (const auto& row : tx.exec_prepared(kBatchDigests, ArrayLiteral(digests)))
      recorded.insert(row[0].c_str());
    std::set<std::pair<std::string, int64_t>> taken;  // (lease, report sequence) recorded
    for (const auto& row :
         tx.exec_prepared(kBatchSequences, ArrayLiteral(lookup_leases), ArrayLiteral(sequences)))
      taken.emplace(row[0].c_str(), row[1].as<int64_t>());

    std::vector<Result<ReportResult>> results;
    results.reserve(batch.size());
    std::vector<std::string> rows_digest, rows_lease, rows_to_head, rows_outcome, rows_bytes;
    std::vector<int64_t> rows_sequence, rows_to_count, rows_billed;
    struct PendingAlert {
      std::string license_id, kind, detail;
    };
    std::vector<PendingAlert> alerts;
    for (size_t i = 0; i < batch.size(); ++i) {
      const capsule::UsageReport& report = *batch[i].report;
      if (!errors[i].ok()) {
        results.push_back(errors[i]);
        continue;
      }
      if (recorded.count(digests[i]) > 0) {
        results.push_back(ReportResult{ReportOutcome::kDuplicate, 0, "already recorded"});
        continue;
      }
      auto it = leases.find(lease_ids[i]);
      if (it == leases.end()) {
        results.push_back(NotFound("usage report for unknown lease {}", lease_ids[i]));
        continue;
      }
      BatchLease& stored = it->second;
      if (stored.malformed) {
        results.push_back(DataLoss("lease {} has a malformed stored field", lease_ids[i]));
        continue;
      }
      const int64_t sequence = static_cast<int64_t>(report.report_sequence);
      const ReportResult result =
          DecideReport(report, stored.lease, stored.recorded_count, stored.recorded_head,
                       taken.count({lease_ids[i], sequence}) > 0);
      const uint64_t recorded_before = stored.recorded_count;
      if (result.outcome == ReportOutcome::kAccepted && report.to_count > stored.recorded_count) {
        stored.recorded_count = report.to_count;
        stored.recorded_head = report.to_head;
        stored.moved = true;
      }
      recorded.insert(digests[i]);
      taken.emplace(lease_ids[i], sequence);
      rows_digest.push_back(digests[i]);
      rows_lease.push_back(lease_ids[i]);
      rows_sequence.push_back(sequence);
      rows_to_count.push_back(static_cast<int64_t>(report.to_count));
      rows_to_head.push_back(Hex(report.to_head));
      rows_outcome.push_back(ReportOutcomeName(result.outcome));
      rows_billed.push_back(static_cast<int64_t>(result.billed_queries));
      rows_bytes.push_back(Hex(batch[i].signed_bytes));
      if (result.outcome == ReportOutcome::kFork)
        alerts.push_back({stored.lease.license_id, "fork", result.detail});
      if (result.outcome == ReportOutcome::kAccepted)
        for (const capsule::Alert& alert : report.alerts)
          if (AlertIsNew(alert, recorded_before))
            alerts.push_back({stored.lease.license_id, alert.kind, ReportAlertDetail(alert)});
      results.push_back(result);
    }

    if (!rows_digest.empty()) {
      const pqxx::result inserted = tx.exec_prepared(
          kBatchInsert, ArrayLiteral(rows_digest), ArrayLiteral(rows_lease),
          ArrayLiteral(rows_sequence), ArrayLiteral(rows_to_count), ArrayLiteral(rows_to_head),
          ArrayLiteral(rows_outcome), ArrayLiteral(rows_billed), ArrayLiteral(rows_bytes), now);
      if (inserted.affected_rows() != rows_digest.size())
        throw std::runtime_error(fmt::format("{} of {} usage reports were inserted",
                                             inserted.affected_rows(), rows_digest.size()));
    }
    std::vector<std::string> moved_leases, moved_heads;
    std::vector<int64_t> moved_counts;
    for (const auto& [lease_id, stored] : leases) {
      if (!stored.moved) continue;
      moved_leases.push_back(lease_id);
      moved_counts.push_back(static_cast<int64_t>(stored.recorded_count));
      moved_heads.push_back(Hex(stored.recorded_head));
    }
    if (!moved_leases.empty())
      tx.exec_prepared(kBatchMove, ArrayLiteral(moved_leases), ArrayLiteral(moved_counts),
                       ArrayLiteral(moved_heads));
    for (const PendingAlert& alert : alerts)
      tx.exec_prepared(kAlertInsert, alert.license_id, alert.kind, alert.detail, now);
    return results;
  }

  static CustomerRecord ReadCustomer(const pqxx::row& row) {
    return {row[0].c_str(), row[1].c_str(), row[2].c_str(), row[3].as<int64_t>()};
  }

  static Result<CapsuleRecord> ReadCapsule(const pqxx::row& row) {
    CapsuleRecord capsule;
    capsule.provider_id = row[1].c_str();
    capsule.name = row[2].c_str();
    capsule.created_at = row[5].as<int64_t>();
    if (!FromHexField(row[0], &capsule.capsule_id) || !FromHexField(row[3], &capsule.header) ||
        !FromHexField(row[4], &capsule.wrapped_key))
      return DataLoss("a stored capsule has a malformed field");
    return capsule;
  }

  static Result<LicenseRecord> ReadLicense(const pqxx::row& row) {
    LicenseRecord license;
    license.id = row[0].c_str();
    license.customer_id = row[1].c_str();
    license.query_quota = row[4].as<uint64_t>();
    license.lease_queries = row[5].as<uint64_t>();
    license.lease_seconds = row[6].as<int64_t>();
    license.expires_at = row[7].as<int64_t>();
    license.price_micros = row[8].as<int64_t>();
    license.currency = row[9].c_str();
    license.rate_per_minute = row[10].as<uint32_t>();
    license.revoked = row[11].as<bool>();
    license.revoked_at = row[12].as<int64_t>();
    license.created_at = row[13].as<int64_t>();
    if (!FromHexField(row[2], &license.capsule_id) || !FromHexField(row[3], &license.token_hash))
      return DataLoss("license {} has a malformed stored field", license.id);
    return license;
  }

  // A connection taken from the pool for one transaction (or a batch and its fallback), given
  // back on destruction; waits while every connection is in use.
  class Connection {
   public:
    explicit Connection(PgStore* store) : store_(store) {
      std::unique_lock lock(store_->pool_mutex_);
      store_->pool_free_.wait(lock, [&] { return !store_->free_.empty(); });
      connection_ = store_->free_.back();
      store_->free_.pop_back();
    }
    ~Connection() {
      {
        std::lock_guard lock(store_->pool_mutex_);
        store_->free_.push_back(connection_);
      }
      store_->pool_free_.notify_one();
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    pqxx::connection& operator*() { return *connection_; }

   private:
    PgStore* store_;
    pqxx::connection* connection_;
  };

  std::vector<std::unique_ptr<pqxx::connection>> connections_;
  std::mutex pool_mutex_;
  std::condition_variable pool_free_;
  std::vector<pqxx::connection*> free_;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url) {
  try {
    std::vector<std::unique_ptr<pqxx::connection>> connections;
    for (int i = 0; i < kPostgresConnections; ++i)
      connections.push_back(std::make_unique<pqxx::connection>(url));
    return std::unique_ptr<Store>(std::make_unique<PgStore>(std::move(connections)));
  } catch (const std::exception& e) {
    return IoError("cannot connect to PostgreSQL at {}: {}", url, e.what());
  }
}

}  // namespace mlcapsule::server
