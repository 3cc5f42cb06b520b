// The SEV-SNP Platform (see snp_platform.h for what each piece is and is worth). Create does all
// file and device work; afterwards the platform uses only its reporter, the counter's descriptor,
// getrandom and the clock.
#include "tee/cvm/snp_platform.h"

#include <time.h>

#include <utility>

#include "base/bytes.h"
#include "base/file_util.h"
#include "tee/cvm/attester.h"

namespace mlcapsule::tee::cvm {
namespace {

constexpr char kSnpEvidenceMagic[8] = {'M', 'L', 'C', 'S', 'N', 'P', 'E', 'V'};

// The SNP root key material: the hardware-derived key, or the fallback key file.
Result<capsule::SecretBytes> SnpRootKey(const SnpPlatformOptions& options, bool* hardware) {
  Result<std::unique_ptr<SevGuestDevice>> device = SevGuestDevice::Open(options.sev_guest_device);
  if (!device.ok() && device.status().code() == StatusCode::kNotFound) {
    if (!options.seal_key_file_fallback)
      return FailedPrecondition(
          "no SEV-SNP sealing key: {} (the guest needs the sev-guest driver; or allow the "
          "weaker key file STATE/{}, which is only as secret as the CVM's encrypted disk)",
          device.status().message(), kCvmSealKeyFileName);
    *hardware = false;
    return LoadOrCreateKeyFile(options.state_dir, kCvmSealKeyFileName, kCvmSealKeyBytes);
  }
  if (!device.ok()) return device.status();
  *hardware = true;
  return (*device)->GetDerivedKey(kDerivedKeyPolicyAndMeasurement, options.vmpl);
}

}  // namespace

std::vector<uint8_t> PackSnpEvidence(std::span<const uint8_t> report,
                                     std::span<const uint8_t> vcek_der) {
  ByteWriter writer;
  writer.Bytes(kSnpEvidenceMagic, sizeof(kSnpEvidenceMagic));
  writer.Blob(report);
  writer.Blob(vcek_der);
  const auto bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<std::vector<uint8_t>> SnpEvidenceFromBlobs(const TsmBlobs& blobs,
                                                  const capsule::ReportData& report_data,
                                                  uint32_t vmpl,
                                                  std::span<const uint8_t> vcek_file) {
  MLC_RETURN_IF_ERROR(ValidateSnpReport(blobs.outblob, report_data, vmpl));
  std::optional<std::vector<uint8_t>> vcek;
  if (!blobs.auxblob.empty()) {
    Result<std::optional<std::vector<uint8_t>>> found = FindVcek(blobs.auxblob);
    if (!found.ok()) return found.status().WithContext("the report's auxblob");
    vcek = std::move(found).value();
  }
  if (vcek.has_value()) return PackSnpEvidence(blobs.outblob, *vcek);
  if (vcek_file.empty())
    return FailedPrecondition(
        "no VCEK for the SNP report: the auxblob has {} and no VCEK file is configured (fetch "
        "this chip's VCEK from AMD's KDS and pass it to the core)",
        blobs.auxblob.empty() ? "no certificate table" : "a certificate table without a VCEK");
  return PackSnpEvidence(blobs.outblob, vcek_file);
}

Result<std::unique_ptr<SnpPlatform>> SnpPlatform::Create(SnpPlatformOptions options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  if (options.state_dir.empty()) return InvalidArgument("the core's state directory is not set");
  if (options.vmpl > kMaxVmpl)
    return InvalidArgument("the SNP VMPL {} is out of range 0..{}", options.vmpl, kMaxVmpl);
  std::unique_ptr<SnpPlatform> platform(new SnpPlatform());
  platform->vmpl_ = options.vmpl;
  if (!options.vcek_file.empty()) {
    MLC_ASSIGN_OR_RETURN(std::string vcek, ReadFile(options.vcek_file, kMaxVcekBytes));
    if (vcek.empty()) return InvalidArgument("the VCEK file {} is empty", options.vcek_file);
    platform->vcek_file_.assign(vcek.begin(), vcek.end());
  }
  MLC_RETURN_IF_ERROR(EnsureStateDirectory(options.state_dir));

  bool hardware = false;
  MLC_ASSIGN_OR_RETURN(capsule::SecretBytes root_key, SnpRootKey(options, &hardware));
  platform->hardware_sealing_key_ = hardware;
  platform->sealing_key_ = capsule::KeyedHash(root_key, {AsBytes(kSnpSealDomain)});
  const capsule::SecretBytes counter_key =
      capsule::KeyedHash(root_key, {AsBytes(kSnpCounterDomain)});
  Result<std::unique_ptr<FileCounter>> counter = FileCounter::Open(options.state_dir, counter_key);
  if (!counter.ok()) {
    if (hardware && counter.status().code() == StatusCode::kDataLoss)
      return counter.status().WithContext(
          "SNP counter (its key is derived from the launch measurement: a core of another "
          "measurement cannot open this state directory; give it a new one)");
    return counter.status();
  }
  platform->counter_ = std::move(counter).value();

  platform->reporter_ = std::move(options.reporter);
  if (!platform->reporter_) {
    ReporterOptions reporter;
    reporter.kind = CvmKind::kSnp;
    reporter.tsm = options.tsm;
    reporter.sev_guest_device = options.sev_guest_device;
    reporter.vmpl = options.vmpl;
    platform->reporter_ = MakeInProcessReporter(std::move(reporter));
  }
  return platform;
}

SnpPlatform::~SnpPlatform() = default;

Status SnpPlatform::Random(std::span<uint8_t> out) {
  capsule::RandomBytes(out);
  return Status::Ok();
}

Result<std::vector<uint8_t>> SnpPlatform::Evidence(const capsule::ReportData& report_data) {
  MLC_ASSIGN_OR_RETURN(TsmBlobs blobs, reporter_->Request(report_data));
  return SnpEvidenceFromBlobs(blobs, report_data, vmpl_, vcek_file_);
}

Result<capsule::SecretBytes> SnpPlatform::SealingKey() { return sealing_key_.Clone(); }

Result<uint64_t> SnpPlatform::ReadCounter() { return counter_->value(); }

Result<uint64_t> SnpPlatform::IncrementCounter() { return counter_->Increment(); }

trusted::PlatformTime SnpPlatform::Now() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return {static_cast<int64_t>(now.tv_sec), /*trusted=*/false};
}

}  // namespace mlcapsule::tee::cvm
