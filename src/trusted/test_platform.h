// An in-memory Platform for unit tests (leveldb's in-memory Env): the core runs inside the test
// process, so it protects nothing. It is never chosen by the host unless asked for by name, and
// it can inject faults (a failing counter, a clock set by the test) and simulate a rollback.
#pragma once

#include <cstdint>
#include <vector>

#include "base/bytes.h"
#include "trusted/platform.h"

namespace mlcapsule::trusted {

class TestPlatform : public Platform {
 public:
  TestPlatform();

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kSoftware; }
  Status Random(std::span<uint8_t> out) override;
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  PlatformTime Now() override { return {now_, false}; }

  // Test controls.
  void set_now(int64_t unix_seconds) { now_ = unix_seconds; }
  void set_counter(uint64_t value) { counter_ = value; }  // simulates a counter rollback
  uint64_t counter() const { return counter_; }
  void set_fail_counter(bool fail) { fail_counter_ = fail; }
  // Same measurement for every TestPlatform: the evidence's measurement bytes.
  static capsule::Digest Measurement();

 private:
  int64_t now_;
  uint64_t counter_ = 0;
  bool fail_counter_ = false;
  std::vector<uint8_t> sealing_key_;
};

}  // namespace mlcapsule::trusted
