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
// Work in progress for issue 4: nonces, leases and the usage ledger exist on both back ends;
// providers, customers, capsules, licenses, tokens and billing periods follow.
//
//   MLC_ASSIGN_OR_RETURN(auto store, OpenStore("sqlite:/var/lib/mlcapsule/server.db"));
//   MLC_RETURN_IF_ERROR(store->Migrate());
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
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
};

enum class ReportOutcome {
  kAccepted,   // new usage, billed
  kDuplicate,  // the same report again: nothing changes
  kStale,      // ends before what is recorded for its lease: recorded, not billed
  kFork,       // contradicts what is recorded: alert raised, not billed, renewal blocked
};
const char* ReportOutcomeName(ReportOutcome outcome);

struct ReportResult {
  ReportOutcome outcome = ReportOutcome::kAccepted;
  uint64_t billed_queries = 0;  // queries this report added to the bill
  std::string detail;           // why, for forks and stale reports
};

struct AlertRecord {
  int64_t id = 0;
  std::string license_id;
  std::string kind;  // "fork", "prada", ...
  std::string detail;
  int64_t created_at = 0;
};

class Store {
 public:
  virtual ~Store() = default;
  // Applies the versioned schema migrations that are not applied yet (idempotent).
  virtual Status Migrate() = 0;
  virtual Result<int> SchemaVersion() = 0;

  // Nonces: single use, short-lived. Consume fails (PermissionDenied) for an unknown, used or
  // expired nonce, and a consumed nonce can never be consumed again.
  virtual Status IssueNonce(const capsule::Nonce& nonce, int64_t expires_at) = 0;
  virtual Status ConsumeNonce(const capsule::Nonce& nonce, int64_t now) = 0;

  virtual Status RecordLease(const LeaseRecord& lease) = 0;

  // Verifies nothing cryptographic (the caller verified the report's signature); applies the
  // ledger rules above in one transaction. An unknown lease is NotFound.
  virtual Result<ReportResult> RecordUsageReport(const capsule::UsageReport& report,
                                                 std::span<const uint8_t> signed_bytes,
                                                 int64_t now) = 0;
  // Queries billed so far under a license (sum over accepted reports).
  virtual Result<uint64_t> BilledQueries(const std::string& license_id) = 0;
  // Whether a license has an unresolved fork (renewal is blocked while it does).
  virtual Result<bool> HasFork(const std::string& license_id) = 0;
  virtual Result<std::vector<AlertRecord>> Alerts(const std::string& license_id) = 0;
};

// "sqlite:PATH", or a libpq URL "postgresql://user@host/db" (also
// "postgresql:///db?host=/socket/dir"). The caller runs Migrate() before use.
Result<std::unique_ptr<Store>> OpenStore(const std::string& url);
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url);

}  // namespace mlcapsule::server
