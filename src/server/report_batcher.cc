// Group commit for usage reports (report_batcher.h).
#include "server/report_batcher.h"

namespace mlcapsule::server {

ReportBatcher::ReportBatcher(Store* store, std::function<int64_t()> clock, size_t max_batch)
    : store_(store), clock_(std::move(clock)), max_batch_(max_batch) {
  writer_ = std::thread([this] { Run(); });
}

ReportBatcher::~ReportBatcher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_all();
  writer_.join();
}

Result<ReportResult> ReportBatcher::Record(const capsule::UsageReport& report,
                                           std::span<const uint8_t> signed_bytes) {
  Waiter waiter;
  waiter.pending = {&report, signed_bytes};
  std::unique_lock lock(mutex_);
  if (stopping_) return IoError("the server is shutting down: retry the report");
  queue_.push_back(&waiter);
  lock.unlock();
  queued_.notify_one();
  lock.lock();
  waiter.answered.wait(lock, [&] { return waiter.result.has_value(); });
  return std::move(*waiter.result);
}

uint64_t ReportBatcher::batches() const {
  std::lock_guard lock(mutex_);
  return batches_;
}

void ReportBatcher::Run() {
  std::vector<Waiter*> batch;
  std::vector<PendingReport> pending;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      queued_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    pending.clear();
    for (Waiter* w : batch) pending.push_back(w->pending);
    std::vector<Result<ReportResult>> results = store_->RecordUsageReports(pending, clock_());
    {
      std::lock_guard lock(mutex_);
      ++batches_;
      for (size_t i = 0; i < batch.size(); ++i) {
        batch[i]->result = i < results.size()
                               ? std::move(results[i])
                               : Result<ReportResult>(InternalError("the store lost a report"));
        // Under the lock: the waiter (and its condition variable) lives until it sees the result.
        batch[i]->answered.notify_one();
      }
    }
    batch.clear();
  }
}

}  // namespace mlcapsule::server
