// The usage ledger's rules (ledger.h).
#include "server/ledger.h"

#include <fmt/format.h>

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

}  // namespace mlcapsule::server
