// The software TEE's Platform (see software_platform.h for the formats and what they are worth).
// Every file is opened in Create (tee/common/file_counter.h); after that the platform touches
// only the counter file's descriptor.
#include "tee/software/software_platform.h"

#include <sys/random.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "base/bytes.h"

namespace mlcapsule::tee {
namespace {

constexpr std::string_view kSealDomain = "mlcapsule/v1/software-seal";
constexpr std::string_view kCounterDomain = "mlcapsule/v1/software-counter";
constexpr size_t kSealKeyBytes = 32;

}  // namespace

Result<std::unique_ptr<SoftwarePlatform>> SoftwarePlatform::Create(const std::string& state_dir) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  MLC_ASSIGN_OR_RETURN(capsule::Digest measurement, HashFile("/proc/self/exe"));
  return CreateWithMeasurement(state_dir, measurement);
}

Result<std::unique_ptr<SoftwarePlatform>> SoftwarePlatform::CreateWithMeasurement(
    const std::string& state_dir, const capsule::Digest& measurement) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  std::unique_ptr<SoftwarePlatform> platform(new SoftwarePlatform());
  platform->measurement_ = measurement;
  MLC_ASSIGN_OR_RETURN(capsule::SecretBytes file_key,
                       LoadOrCreateKeyFile(state_dir, kSealKeyFileName, kSealKeyBytes));
  platform->sealing_key_ = capsule::KeyedHash(file_key, {AsBytes(kSealDomain), measurement});
  MLC_ASSIGN_OR_RETURN(
      platform->counter_,
      FileCounter::Open(state_dir, capsule::KeyedHash(file_key, {AsBytes(kCounterDomain)})));
  return platform;
}

SoftwarePlatform::~SoftwarePlatform() = default;

Status SoftwarePlatform::Random(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InternalError("getrandom failed: {}", std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> SoftwarePlatform::Evidence(const capsule::ReportData& report_data) {
  std::vector<uint8_t> evidence(kSoftwareEvidenceBytes);
  std::memcpy(evidence.data(), kSoftwareEvidenceMagic.data(), kSoftwareEvidenceMagic.size());
  std::memcpy(evidence.data() + 8, measurement_.data(), measurement_.size());
  std::memcpy(evidence.data() + 40, report_data.data(), report_data.size());
  return evidence;
}

Result<capsule::SecretBytes> SoftwarePlatform::SealingKey() { return sealing_key_.Clone(); }

Result<uint64_t> SoftwarePlatform::ReadCounter() { return counter_->value(); }

Result<uint64_t> SoftwarePlatform::IncrementCounter() { return counter_->Increment(); }

trusted::PlatformTime SoftwarePlatform::Now() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return {static_cast<int64_t>(now.tv_sec), false};
}

}  // namespace mlcapsule::tee
