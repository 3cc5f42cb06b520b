// The license server's storage (DESIGN.md, "Scale"): one interface, two back ends (SQLite in WAL
// mode, the default; PostgreSQL for several server instances). Every write is one transaction;
// usage reports are recorded idempotently, keyed by the digest of their signed bytes, so a retry
// after a crash or a timeout never counts twice. The ledger rules live here, inside the
// transaction, so that two server instances cannot interleave them:
//
//   - a report must start at the chain point its lease continued from (what the server
//     acknowledged by issuing the lease) and be signed by the lease's core key;
//   - the same bytes again are a duplicate (billed once);
//   - two different reports that claim the same lease and report sequence, or reach the same
//     count with different chain heads, are a fork: recorded as an alert, never billed;
//   - a report that ends before what is already recorded for its lease is stale (a late retry of
//     an older report): recorded, not billed again.
//
// Nonces are not stored: the server MACs them (server/nonce.h), and a nonce becomes used when the
// lease it was bound to is recorded (a unique column of the lease), in the same transaction.
// The admin side (providers, customers, capsules with their wrapped keys, licenses, admin tokens)
// is stored here too; secrets never are: tokens by their BLAKE2b-256 hash, capsule keys wrapped
// under the server's master key.
//
//   MLC_ASSIGN_OR_RETURN(auto store, OpenStore("sqlite:/var/lib/mlcapsule/server.db"));
//   MLC_RETURN_IF_ERROR(store->Migrate());
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/messages.h"

namespace mlcapsule::server {

struct LeaseRecord {
  capsule::LeaseId lease_id{};
  std::string license_id;
  capsule::CapsuleId capsule_id{};
  uint64_t sequence = 0;
  uint64_t chain_base_count = 0;
  capsule::Digest chain_base{};
  capsule::PublicKey core_signing_key{};
  uint64_t query_quota = 0;
  int64_t issued_at = 0;
  int64_t expires_at = 0;
  capsule::Nonce nonce{};  // the attestation nonce it answered; unique over all leases
};

struct LeaseState {
  LeaseRecord lease;
  uint64_t recorded_count = 0;  // the furthest point reported (the chain base if none)
  capsule::Digest recorded_head{};
  uint64_t reports = 0;  // reports recorded for it (any outcome but duplicates)
};

struct ProviderRecord {
  std::string id;  // 1..64 of [A-Za-z0-9_.-], chosen by the admin or generated
  std::string name;
  int64_t created_at = 0;
};

struct CustomerRecord {
  std::string id;
  std::string provider_id;
  std::string name;
  int64_t created_at = 0;
};

struct CapsuleRecord {
  capsule::CapsuleId capsule_id{};
  std::string provider_id;
  std::string name;
  std::vector<uint8_t> header;       // the capsule's signed header bytes, as in the file
  std::vector<uint8_t> wrapped_key;  // the capsule key under the master key (master_key.h)
  int64_t created_at = 0;
};

struct LicenseRecord {
  std::string id;
  std::string customer_id;
  capsule::CapsuleId capsule_id{};
  capsule::Digest token_hash{};  // BLAKE2b-256 of the license token
  uint64_t query_quota = 0;      // queries over the license's whole life
  uint64_t lease_queries = 0;    // the most one lease may carry
  int64_t lease_seconds = 0;     // how long one lease is valid
  int64_t expires_at = 0;        // no lease is issued after it, nor outlives it
  int64_t price_micros = 0;      // per query, in millionths of `currency`
  std::string currency;          // ISO 4217 code, e.g. "EUR"
  uint32_t rate_per_minute = 0;  // attest + usage requests per minute (0: the server default)
  bool revoked = false;
  int64_t revoked_at = 0;
  int64_t created_at = 0;
};

struct AdminTokenRecord {
  std::string id;
  std::string name;
  capsule::Digest token_hash{};
  int64_t created_at = 0;
};

struct BillLine {
  std::string license_id;
  capsule::CapsuleId capsule_id{};
  uint64_t queries = 0;
  int64_t price_micros = 0;
  std::string currency;
  int64_t amount_micros = 0;  // queries * price_micros
};

struct PendingReport {
  const capsule::UsageReport* report = nullptr;  // parsed and signature-checked by the caller
  std::span<const uint8_t> signed_bytes;
};

enum class ReportOutcome {
  kAccepted,   // new usage, billed
  kDuplicate,  // the same report again: nothing changes
  kStale,      // ends before what is recorded for its lease: recorded, not billed
  kFork,       // contradicts what is recorded: alert raised, not billed, renewal blocked
};
const char* ReportOutcomeName(ReportOutcome outcome);
bool ReportOutcomeFromName(std::string_view name, ReportOutcome* outcome);

struct ReportResult {
  ReportOutcome outcome = ReportOutcome::kAccepted;
  uint64_t billed_queries = 0;  // queries this report added to the bill
  std::string detail;           // why, for forks and stale reports
};

// A usage report as recorded: its exact signed bytes and what the ledger made of it.
struct StoredReport {
  int64_t id = 0;  // assigned by the store, growing in recording order (paging key)
  capsule::LeaseId lease_id{};
  uint64_t report_sequence = 0;
  uint64_t to_count = 0;
  ReportOutcome outcome = ReportOutcome::kAccepted;
  uint64_t billed_queries = 0;
  int64_t created_at = 0;  // the server's receive time
  std::vector<uint8_t> bytes;
};

struct AlertRecord {
  int64_t id = 0;
  std::string license_id;
  std::string kind;  // "fork", "replay", a defense alarm kind from a usage report ("prada", ...)
  std::string detail;
  int64_t created_at = 0;
  bool resolved = false;  // forks only: settled by an operator (ResolveForks)
};

class Store {
 public:
  virtual ~Store() = default;
  // Applies the versioned schema migrations that are not applied yet (idempotent).
  virtual Status Migrate() = 0;
  virtual Result<int> SchemaVersion() = 0;

  // --- admin entities. Creating one with an id (or token hash) that exists is AlreadyExists;
  // naming a provider, customer or capsule that does not exist is NotFound.
  virtual Status CreateProvider(const ProviderRecord& provider) = 0;
  virtual Result<std::vector<ProviderRecord>> ListProviders() = 0;
  virtual Status CreateCustomer(const CustomerRecord& customer) = 0;
  virtual Result<CustomerRecord> GetCustomer(const std::string& id) = 0;
  // provider_id "" lists every customer.
  virtual Result<std::vector<CustomerRecord>> ListCustomers(const std::string& provider_id) = 0;
  virtual Status CreateCapsule(const CapsuleRecord& capsule) = 0;
  virtual Result<CapsuleRecord> GetCapsule(const capsule::CapsuleId& capsule_id) = 0;
  virtual Result<std::vector<CapsuleRecord>> ListCapsules() = 0;
  virtual Status CreateLicense(const LicenseRecord& license) = 0;
  virtual Result<LicenseRecord> GetLicense(const std::string& id) = 0;
  // By the hash of its license token; NotFound when no license has it.
  virtual Result<LicenseRecord> FindLicenseByToken(const capsule::Digest& token_hash) = 0;
  // customer_id "" lists every license.
  virtual Result<std::vector<LicenseRecord>> ListLicenses(const std::string& customer_id) = 0;
  // Idempotent; NotFound for an unknown license. A revoked license gets no lease and its
  // usage reports are still recorded and billed.
  virtual Status RevokeLicense(const std::string& id, int64_t now) = 0;
  virtual Status CreateAdminToken(const AdminTokenRecord& token) = 0;
  // NotFound when no unrevoked admin token has this hash.
  virtual Result<AdminTokenRecord> FindAdminToken(const capsule::Digest& token_hash) = 0;
  virtual Result<int64_t> CountAdminTokens() = 0;

  // --- leases. AlreadyExists when the lease's nonce was used by another lease (a replayed
  // attestation) or the license already has a lease with this sequence (a concurrent renewal).
  virtual Status RecordLease(const LeaseRecord& lease) = 0;
  // The license's lease with the highest sequence and what is recorded for it; nullopt when the
  // license has none.
  virtual Result<std::optional<LeaseState>> LatestLease(const std::string& license_id) = 0;

  // Verifies nothing cryptographic (the caller verified the report's signature); applies the
  // ledger rules above in one transaction. An unknown lease is NotFound.
  // A batch is one transaction (one commit, one fsync: the server's group commit); results come
  // back in order, one per report, and a report's error (an unknown lease) does not fail the
  // others. On acceptance, the alerts the report carries (defense alarms) are stored as alerts
  // of their own kind; a fork stores a "fork" alert.
  virtual std::vector<Result<ReportResult>> RecordUsageReports(std::span<const PendingReport> batch,
                                                               int64_t now) = 0;
  Result<ReportResult> RecordUsageReport(const capsule::UsageReport& report,
                                         std::span<const uint8_t> signed_bytes, int64_t now) {
    const PendingReport one{&report, signed_bytes};
    return std::move(RecordUsageReports(std::span(&one, 1), now).front());
  }
  // The reports recorded for a license (every outcome; a duplicate is not recorded again) with
  // id > after_id, in id order: at most `limit`, and after the first no more than `max_bytes`
  // of report bytes in all (a page stays bounded however large its reports are). Under
  // PostgreSQL ids are drawn when a report is inserted, so a report committed concurrently may
  // get a smaller id than one already listed: a reader that must see everything lists from 0.
  virtual Result<std::vector<StoredReport>> ListUsageReports(const std::string& license_id,
                                                             int64_t after_id, size_t limit,
                                                             uint64_t max_bytes) = 0;
  // Queries billed so far under a license (sum over accepted reports).
  virtual Result<uint64_t> BilledQueries(const std::string& license_id) = 0;
  // Whether a license has an unresolved fork (renewal is blocked while it does).
  virtual Result<bool> HasFork(const std::string& license_id) = 0;
  // What an attestation needs to know of a license in one read: its unresolved fork, its latest
  // lease and the queries billed so far. (The default asks the three methods above; a back end
  // with a round trip per call does it in one statement.)
  struct RenewalState {
    bool fork = false;
    std::optional<LeaseState> latest;
    uint64_t billed = 0;
  };
  virtual Result<RenewalState> LicenseRenewalState(const std::string& license_id) {
    RenewalState state;
    MLC_ASSIGN_OR_RETURN(state.fork, HasFork(license_id));
    MLC_ASSIGN_OR_RETURN(state.latest, LatestLease(license_id));
    MLC_ASSIGN_OR_RETURN(state.billed, BilledQueries(license_id));
    return state;
  }

  // Alerts in id order with id > after_id; license_id "" means every license.
  virtual Result<std::vector<AlertRecord>> Alerts(const std::string& license_id,
                                                  int64_t after_id = 0) = 0;
  virtual Status RaiseAlert(const std::string& license_id, std::string_view kind,
                            std::string_view detail, int64_t now) = 0;
  // Marks the license's fork alerts resolved (an operator looked and settled it), so that
  // renewal is possible again; returns how many were resolved.
  virtual Result<int64_t> ResolveForks(const std::string& license_id) = 0;

  // What a customer owes for reports received in [from, to): one line per license.
  virtual Result<std::vector<BillLine>> Billing(const std::string& customer_id, int64_t from,
                                                int64_t to) = 0;
};

// "sqlite:PATH", or a libpq URL "postgresql://user@host/db" (also
// "postgresql:///db?host=/socket/dir"). The caller runs Migrate() before use.
Result<std::unique_ptr<Store>> OpenStore(const std::string& url);
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url);

}  // namespace mlcapsule::server
