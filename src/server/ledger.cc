// The usage ledger's rules and the shared storage checks (ledger.h).
#include "server/ledger.h"

#include <fmt/format.h>

#include <limits>

#include "capsule/crypto.h"

namespace mlcapsule::server {

ReportResult DecideReport(const capsule::UsageReport& report, const LeaseRecord& lease,
                          uint64_t recorded_count, const capsule::Digest& recorded_head,
                          bool sequence_taken) {
  if (report.license_id != lease.license_id || report.capsule_id != lease.capsule_id ||
      report.core_signing_key != lease.core_signing_key)
    return {ReportOutcome::kFork, 0,
            "the report names another license, capsule or core key than its lease"};
  if (report.from_count != lease.chain_base_count || report.from_head != lease.chain_base)
    return {ReportOutcome::kFork, 0,
            fmt::format("the report starts at query {}, not at the chain point {} its lease "
                        "continued from",
                        report.from_count, lease.chain_base_count)};
  if (sequence_taken)
    return {ReportOutcome::kFork, 0,
            fmt::format("a different report with sequence {} was already recorded",
                        report.report_sequence)};
  if (report.to_count < recorded_count)
    return {ReportOutcome::kStale, 0,
            fmt::format("ends at query {}, before the {} already recorded", report.to_count,
                        recorded_count)};
  if (report.to_count == recorded_count) {
    if (report.to_head != recorded_head)
      return {
          ReportOutcome::kFork, 0,
          fmt::format("reaches query {} with another chain head than recorded", report.to_count)};
    return {ReportOutcome::kAccepted, 0, "no new queries"};
  }
  return {ReportOutcome::kAccepted, report.to_count - recorded_count, ""};
}

Status CheckRecordId(std::string_view what, std::string_view id) {
  if (id.empty() || id.size() > kMaxRecordIdBytes)
    return InvalidArgument("{} id '{}' is {} bytes, expected 1 to {}", what, id, id.size(),
                           kMaxRecordIdBytes);
  for (const char c : id) {
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!allowed)
      return InvalidArgument("{} id '{}' has a character outside [A-Za-z0-9_.-]", what, id);
  }
  return Status::Ok();
}

Status CheckLeaseForStorage(const LeaseRecord& lease) {
  if (lease.chain_base_count > kMaxSqlCount || lease.query_quota > kMaxSqlCount ||
      lease.sequence > kMaxSqlCount)
    return InvalidArgument(
        "lease counts (sequence {}, chain base {}, quota {}) are over the "
        "storage limit {}",
        lease.sequence, lease.chain_base_count, lease.query_quota, kMaxSqlCount);
  return Status::Ok();
}

Status CheckReportForStorage(const capsule::UsageReport& report) {
  if (report.to_count > kMaxSqlCount || report.report_sequence > kMaxSqlCount)
    return InvalidArgument(
        "usage report counts (sequence {}, to {}) are over the storage "
        "limit {}",
        report.report_sequence, report.to_count, kMaxSqlCount);
  return Status::Ok();
}

Status CheckLicenseForStorage(const LicenseRecord& license) {
  MLC_RETURN_IF_ERROR(CheckRecordId("license", license.id));
  if (license.query_quota > kMaxSqlCount || license.lease_queries > kMaxSqlCount)
    return InvalidArgument(
        "license {}: query quota {} or lease queries {} is over the storage "
        "limit {}",
        license.id, license.query_quota, license.lease_queries, kMaxSqlCount);
  if (license.price_micros < 0)
    return InvalidArgument("license {}: price {} micros is negative", license.id,
                           license.price_micros);
  if (license.lease_seconds < 0)
    return InvalidArgument("license {}: lease seconds {} is negative", license.id,
                           license.lease_seconds);
  return Status::Ok();
}

Status NonceAlreadyUsed(const capsule::Nonce& nonce) {
  return AlreadyExists("nonce {}... was already used (a replayed attestation)",
                       capsule::ToHex(std::span(nonce).first(8)));
}

Status LeaseSequenceTaken(std::string_view license_id, uint64_t sequence) {
  return AlreadyExists("license {} already has lease sequence {} (a concurrent renewal)",
                       license_id, sequence);
}

std::string ReportAlertDetail(const capsule::Alert& alert) {
  return fmt::format("at query {}: {}", alert.at_count, alert.detail);
}

Result<int64_t> BillAmount(std::string_view license_id, uint64_t queries, int64_t price_micros) {
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (price_micros < 0 ||
      (price_micros > 0 && queries > kMax / static_cast<uint64_t>(price_micros)))
    return InvalidArgument("license {}: {} queries at {} micros each do not fit a 64-bit amount",
                           license_id, queries, price_micros);
  return static_cast<int64_t>(queries * static_cast<uint64_t>(price_micros));
}

bool IsReportEntryError(const Status& status) {
  return status.code() == StatusCode::kNotFound || status.code() == StatusCode::kInvalidArgument ||
         status.code() == StatusCode::kDataLoss;
}

}  // namespace mlcapsule::server
