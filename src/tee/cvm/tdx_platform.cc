// The TDX Platform (see tdx_platform.h for what each piece is and is worth). Create does all file
// work; afterwards the platform uses only its reporter, the counter's descriptor, getrandom and
// the clock.
#include "tee/cvm/tdx_platform.h"

#include <time.h>

#include <cstring>
#include <utility>

#include "base/bytes.h"
#include "tee/cvm/attester.h"
#include "tee/cvm/snp_platform.h"

namespace mlcapsule::tee::cvm {
namespace {

std::string ShortHex(std::span<const uint8_t> bytes) {
  const std::string hex = capsule::ToHex(bytes.first(std::min<size_t>(bytes.size(), 8)));
  return bytes.size() > 8 ? hex + "..." : hex;
}

}  // namespace

Status ValidateTdxQuote(std::span<const uint8_t> quote, const capsule::ReportData& report_data) {
  constexpr size_t kMinimum = kTdxQuoteSignedBytes + 4;  // + the signature data length
  if (quote.size() < kMinimum)
    return InvalidArgument(
        "the TDX quote is {} bytes, shorter than its header, TD report and "
        "signature length ({})",
        quote.size(), kMinimum);
  if (quote.size() > kMaxTdxQuoteBytes)
    return InvalidArgument("the TDX quote is {} bytes, over the limit {}", quote.size(),
                           kMaxTdxQuoteBytes);
  uint16_t version = 0;
  uint32_t tee_type = 0;
  std::memcpy(&version, quote.data(), 2);
  std::memcpy(&tee_type, quote.data() + 4, 4);
  if (version != kTdxQuoteVersion)
    return InvalidArgument(
        "the TDX quote version is {}: the license server verifies version {} only", version,
        kTdxQuoteVersion);
  if (tee_type != kTdxTeeType)
    return InvalidArgument("the quote's tee_type is 0x{:x}, not TDX (0x{:x})", tee_type,
                           kTdxTeeType);
  const auto got = quote.subspan(kTdxQuoteReportDataOffset, report_data.size());
  if (std::memcmp(got.data(), report_data.data(), report_data.size()) != 0)
    return InvalidArgument(
        "REPORTDATA in the TDX quote ({}) is not the report data asked for ({}): a stale or "
        "substituted quote",
        ShortHex(got), ShortHex(report_data));
  return Status::Ok();
}

Result<std::unique_ptr<TdxPlatform>> TdxPlatform::Create(TdxPlatformOptions options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  if (options.state_dir.empty()) return InvalidArgument("the core's state directory is not set");
  std::unique_ptr<TdxPlatform> platform(new TdxPlatform());
  MLC_ASSIGN_OR_RETURN(
      capsule::SecretBytes file_key,
      LoadOrCreateKeyFile(options.state_dir, kCvmSealKeyFileName, kCvmSealKeyBytes));
  platform->sealing_key_ = capsule::KeyedHash(file_key, {AsBytes(kTdxSealDomain)});
  const capsule::SecretBytes counter_key =
      capsule::KeyedHash(file_key, {AsBytes(kTdxCounterDomain)});
  MLC_ASSIGN_OR_RETURN(platform->counter_, FileCounter::Open(options.state_dir, counter_key));
  platform->reporter_ = std::move(options.reporter);
  if (!platform->reporter_) {
    ReporterOptions reporter;
    reporter.kind = CvmKind::kTdx;
    reporter.tsm = options.tsm;
    platform->reporter_ = MakeInProcessReporter(std::move(reporter));
  }
  return platform;
}

TdxPlatform::~TdxPlatform() = default;

Status TdxPlatform::Random(std::span<uint8_t> out) {
  capsule::RandomBytes(out);
  return Status::Ok();
}

Result<std::vector<uint8_t>> TdxPlatform::Evidence(const capsule::ReportData& report_data) {
  MLC_ASSIGN_OR_RETURN(TsmBlobs blobs, reporter_->Request(report_data));
  MLC_RETURN_IF_ERROR(ValidateTdxQuote(blobs.outblob, report_data));
  return std::move(blobs.outblob);
}

Result<capsule::SecretBytes> TdxPlatform::SealingKey() { return sealing_key_.Clone(); }

Result<uint64_t> TdxPlatform::ReadCounter() { return counter_->value(); }

Result<uint64_t> TdxPlatform::IncrementCounter() { return counter_->Increment(); }

trusted::PlatformTime TdxPlatform::Now() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return {static_cast<int64_t>(now.tv_sec), /*trusted=*/false};
}

}  // namespace mlcapsule::tee::cvm
