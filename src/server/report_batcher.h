// Group commit for usage reports: request threads hand their (already verified) reports to one
// writer thread, which records everything queued in a single Store transaction and then answers
// each request. An acknowledgement therefore always follows the commit that made the report
// durable, while 64 concurrent clients share one fsync instead of paying for 64.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "server/store.h"

namespace mlcapsule::server {

class ReportBatcher {
 public:
  // `clock` gives the receive time recorded with each batch (unix seconds).
  ReportBatcher(Store* store, std::function<int64_t()> clock, size_t max_batch = 512);
  ~ReportBatcher();  // records what is queued, then stops the writer
  ReportBatcher(const ReportBatcher&) = delete;
  ReportBatcher& operator=(const ReportBatcher&) = delete;

  // Blocks until the report's batch committed (or failed).
  Result<ReportResult> Record(const capsule::UsageReport& report,
                              std::span<const uint8_t> signed_bytes);

  uint64_t batches() const;  // transactions so far (for the load generator's report)

 private:
  struct Waiter {
    PendingReport pending;
    std::optional<Result<ReportResult>> result;
    std::condition_variable answered;  // its own, so a batch wakes only its own requests
  };
  void Run();

  Store* store_;
  std::function<int64_t()> clock_;
  size_t max_batch_;
  mutable std::mutex mutex_;
  std::condition_variable queued_;    // the writer waits for work
  std::condition_variable answered_;  // request threads wait for their result
  std::deque<Waiter*> queue_;
  bool stopping_ = false;
  uint64_t batches_ = 0;
  std::thread writer_;
};

}  // namespace mlcapsule::server
