// In-memory test platform (test_platform.h). Not a TEE.
#include "trusted/test_platform.h"

#include <cstring>
#include <ctime>

namespace mlcapsule::trusted {

TestPlatform::TestPlatform() : now_(static_cast<int64_t>(std::time(nullptr))), sealing_key_(32) {
  capsule::RandomBytes(sealing_key_);
}

Status TestPlatform::Random(std::span<uint8_t> out) {
  capsule::RandomBytes(out);
  return Status::Ok();
}

capsule::Digest TestPlatform::Measurement() {
  static constexpr std::string_view kName = "mlcapsule test platform";
  return capsule::Hash({AsBytes(kName)});
}

Result<std::vector<uint8_t>> TestPlatform::Evidence(const capsule::ReportData& report_data) {
  // The software evidence layout (docs/capsule-format.md): magic, measurement, report data.
  std::vector<uint8_t> evidence = {'M', 'L', 'C', 'S', 'W', 'E', 'V', '1'};
  capsule::Digest m = Measurement();
  evidence.insert(evidence.end(), m.begin(), m.end());
  evidence.insert(evidence.end(), report_data.begin(), report_data.end());
  return evidence;
}

Result<capsule::SecretBytes> TestPlatform::SealingKey() {
  return capsule::SecretBytes(sealing_key_.data(), sealing_key_.size());
}

Result<uint64_t> TestPlatform::ReadCounter() {
  if (fail_counter_) return IoError("test platform: counter read failure (injected)");
  return counter_;
}

Result<uint64_t> TestPlatform::IncrementCounter() {
  if (fail_counter_) return IoError("test platform: counter increment failure (injected)");
  return ++counter_;
}

}  // namespace mlcapsule::trusted
