// The usage ledger's rules (store.h), free of any SQL: every back end looks up the lease and what
// is recorded for it inside its transaction, then asks DecideReport what the report is.
#pragma once

#include <cstdint>

#include "capsule/messages.h"
#include "server/store.h"

namespace mlcapsule::server {

// `lease`: the stored lease the report names. `recorded_count`/`recorded_head`: the furthest
// point recorded for it so far (its chain base when nothing is). `sequence_taken`: another
// report with this report_sequence is recorded for the lease. (An identical report is a
// duplicate and never gets here.) An accepted report bills to_count - recorded_count.
ReportResult DecideReport(const capsule::UsageReport& report, const LeaseRecord& lease,
                          uint64_t recorded_count, const capsule::Digest& recorded_head,
                          bool sequence_taken);

}  // namespace mlcapsule::server
