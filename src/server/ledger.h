// The usage ledger's rules (store.h) and the checks every storage back end shares, free of any
// SQL: every back end looks up the lease and what is recorded for it inside its transaction, then
// asks DecideReport what the report is; records are checked here before any SQL sees them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "capsule/messages.h"
#include "server/store.h"

namespace mlcapsule::server {

// Counts are unsigned on the wire and signed 64-bit in SQL.
inline constexpr uint64_t kMaxSqlCount = uint64_t{1} << 62;
// Admin-chosen ids (providers, customers, licenses, admin tokens): 1..64 of [A-Za-z0-9_.-].
inline constexpr size_t kMaxRecordIdBytes = 64;

// `lease`: the stored lease the report names. `recorded_count`/`recorded_head`: the furthest
// point recorded for it so far (its chain base when nothing is). `sequence_taken`: another
// report with this report_sequence is recorded for the lease. (An identical report is a
// duplicate and never gets here.) An accepted report bills to_count - recorded_count.
ReportResult DecideReport(const capsule::UsageReport& report, const LeaseRecord& lease,
                          uint64_t recorded_count, const capsule::Digest& recorded_head,
                          bool sequence_taken);

// InvalidArgument naming the field when a record cannot be stored as it is.
Status CheckRecordId(std::string_view what, std::string_view id);
Status CheckLeaseForStorage(const LeaseRecord& lease);
Status CheckReportForStorage(const capsule::UsageReport& report);
Status CheckLicenseForStorage(const LicenseRecord& license);

// The AlreadyExists errors of RecordLease, worded the same on every back end.
Status NonceAlreadyUsed(const capsule::Nonce& nonce);
Status LeaseSequenceTaken(std::string_view license_id, uint64_t sequence);

// The stored detail of a defense alarm carried in a usage report.
std::string ReportAlertDetail(const capsule::Alert& alert);
// Reports are cumulative and carry the core's alerts again each time: an alert is stored once,
// when a report first reaches past the query it was raised at (`recorded_count`: what was
// recorded for the lease before this report).
inline bool AlertIsNew(const capsule::Alert& alert, uint64_t recorded_count) {
  return alert.at_count > recorded_count;
}

// queries * price_micros; InvalidArgument naming the license when it does not fit in 64 bits.
Result<int64_t> BillAmount(std::string_view license_id, uint64_t queries, int64_t price_micros);

// Recording one report of a batch fails in two ways. The errors it returns before writing
// anything (an unknown lease, counts over the storage limit, a malformed stored lease) belong to
// that report alone; any other error (a failed statement) leaves the batch's transaction unusable,
// and the back end rolls it back and records the reports one per transaction instead.
bool IsReportEntryError(const Status& status);

}  // namespace mlcapsule::server
