// The SGX (Gramine) Platform: see gramine_platform.h for the files, the keys and what they are
// worth. Every read of an attestation file is bounded before anything is kept, every descriptor is
// closed on every path, and no error changes the counter or the keys.
#include "tee/sgx/gramine_platform.h"

#include <fcntl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "base/bytes.h"
#include "base/unique_fd.h"

namespace mlcapsule::tee {
namespace {

constexpr std::string_view kSealDomain = "mlcapsule/v1/sgx-seal";
constexpr std::string_view kCounterDomain = "mlcapsule/v1/sgx-counter";
constexpr std::string_view kAttestationTypeFile = "attestation_type";
constexpr std::string_view kUserReportDataFile = "user_report_data";
constexpr std::string_view kQuoteFile = "quote";
constexpr std::string_view kMrenclaveKeyFile = "keys/_sgx_mrenclave";
// "none", "epid", "dcap" and a newline fit many times over; more is not an attestation type.
constexpr size_t kMaxAttestationTypeBytes = 64;
constexpr size_t kSgxSignatureDataLengthBytes = 4;

using Fd = UniqueFd;

std::string Errno(int error) { return std::strerror(error); }

// Reads `fd` to EOF into `buffer`, which must be one byte longer than the largest size accepted:
// *size == buffer.size() means the file is over the limit (nothing more is read). Retries EINTR
// and partial reads, so FIFOs and pseudo-files that answer in pieces work.
Status ReadToEnd(int fd, std::span<uint8_t> buffer, const std::string& path, size_t* size) {
  size_t done = 0;
  while (done < buffer.size()) {
    const ssize_t n = read(fd, buffer.data() + done, buffer.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      return Unavailable("cannot read {}: {}", path, Errno(error));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  *size = done;
  return Status::Ok();
}

Result<Fd> OpenForReading(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int error = errno;
    return Unavailable("cannot open {}: {}", path, Errno(error));
  }
  return fd;
}

// A short, printable rendering of untrusted text for an error message.
std::string Printable(std::string_view text) {
  constexpr size_t kShown = 32;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isprint(c) && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (text.size() > kShown) out += "...";
  return out;
}

uint16_t Le16(std::span<const uint8_t> bytes, size_t at) {
  return static_cast<uint16_t>(bytes[at] | (bytes[at + 1] << 8));
}

uint32_t Le32(std::span<const uint8_t> bytes, size_t at) {
  return static_cast<uint32_t>(bytes[at]) | (static_cast<uint32_t>(bytes[at + 1]) << 8) |
         (static_cast<uint32_t>(bytes[at + 2]) << 16) |
         (static_cast<uint32_t>(bytes[at + 3]) << 24);
}

// attestation_type must say "dcap" (surrounding whitespace, such as Gramine's newline, allowed).
Status CheckAttestationType(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(Fd fd, OpenForReading(path));
  std::vector<uint8_t> buffer(kMaxAttestationTypeBytes + 1);
  size_t size = 0;
  MLC_RETURN_IF_ERROR(ReadToEnd(fd.get(), buffer, path, &size));
  if (size > kMaxAttestationTypeBytes)
    return FailedPrecondition("{} holds more than {} bytes: it is not an attestation type", path,
                              kMaxAttestationTypeBytes);
  std::string_view type(reinterpret_cast<const char*>(buffer.data()), size);
  while (!type.empty() && std::isspace(static_cast<unsigned char>(type.front())))
    type.remove_prefix(1);
  while (!type.empty() && std::isspace(static_cast<unsigned char>(type.back())))
    type.remove_suffix(1);
  if (type != "dcap")
    return FailedPrecondition(
        "{} says '{}': mlcapsule needs DCAP remote attestation (sgx.remote_attestation = "
        "\"dcap\" in the Gramine manifest, and the host's DCAP quote provider)",
        path, Printable(type));
  return Status::Ok();
}

// The 16-byte MRENCLAVE-policy seal key, read into wiped memory.
Result<capsule::SecretBytes> ReadHardwareKey(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(Fd fd, OpenForReading(path));
  capsule::SecretBytes buffer(kSgxHardwareKeyBytes + 1);
  size_t size = 0;
  MLC_RETURN_IF_ERROR(ReadToEnd(fd.get(), buffer.span(), path, &size));
  if (size != kSgxHardwareKeyBytes)
    return FailedPrecondition("{} has {}{} bytes, expected {} (an SGX 128-bit seal key)", path,
                              size > kSgxHardwareKeyBytes ? "more than " : "",
                              size > kSgxHardwareKeyBytes ? kSgxHardwareKeyBytes : size,
                              kSgxHardwareKeyBytes);
  return capsule::SecretBytes(buffer.data(), kSgxHardwareKeyBytes);
}

}  // namespace

Status CheckSgxQuote(std::span<const uint8_t> quote, const capsule::ReportData& report_data,
                     std::string_view path) {
  if (quote.empty())
    return InvalidArgument(
        "{} is empty: no quote was produced (is the host's AESM with the DCAP "
        "quote provider running?)",
        path);
  constexpr size_t kMinimum = kSgxQuoteSignedBytes + kSgxSignatureDataLengthBytes;
  if (quote.size() < kMinimum)
    return InvalidArgument(
        "the quote from {} has {} bytes, fewer than the {} of an SGX quote v3 header, report body "
        "and signature data length",
        path, quote.size(), kMinimum);
  const uint16_t version = Le16(quote, 0);
  if (version != kSgxQuoteVersion)
    return InvalidArgument("the quote from {} has version {}, expected {} (SGX DCAP quote v3)",
                           path, version, kSgxQuoteVersion);
  const uint16_t key_type = Le16(quote, 2);
  if (key_type != kSgxAttestationKeyEcdsa256)
    return InvalidArgument(
        "the quote from {} has attestation key type {}, expected {} (ECDSA-256-with-P-256)", path,
        key_type, kSgxAttestationKeyEcdsa256);
  const uint64_t signature_bytes = Le32(quote, kSgxQuoteSignedBytes);
  if (kMinimum + signature_bytes > quote.size())
    return InvalidArgument(
        "the quote from {} is truncated: its signature data length says {} bytes, {} are there",
        path, signature_bytes, quote.size() - kMinimum);
  if (!capsule::ConstantTimeEqual(quote.subspan(kSgxQuoteReportDataOffset, report_data.size()),
                                  report_data))
    return InvalidArgument(
        "the report data in the quote is not what was written to user_report_data (the quote "
        "from {} is stale or was made for another request)",
        path);
  return Status::Ok();
}

Result<std::unique_ptr<GraminePlatform>> GraminePlatform::Create(const GramineOptions& options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  if (options.attestation_dir.empty())
    return InvalidArgument("the attestation directory is not set (Gramine: {})",
                           kGramineAttestationDir);
  if (options.state_dir.empty()) return InvalidArgument("the core's state directory is not set");
  const std::string& dir = options.attestation_dir;
  MLC_RETURN_IF_ERROR(CheckAttestationType(dir + "/" + std::string(kAttestationTypeFile)));
  MLC_ASSIGN_OR_RETURN(capsule::SecretBytes hardware_key,
                       ReadHardwareKey(dir + "/" + std::string(kMrenclaveKeyFile)));

  std::unique_ptr<GraminePlatform> platform(new GraminePlatform());
  platform->attestation_dir_ = dir;
  // Gramine forbids using a special key directly for the application's own purposes; both keys
  // are derived, each for one purpose.
  platform->sealing_key_ = capsule::KeyedHash(hardware_key, {AsBytes(kSealDomain)});
  const capsule::SecretBytes counter_key =
      capsule::KeyedHash(hardware_key, {AsBytes(kCounterDomain)});
  MLC_ASSIGN_OR_RETURN(platform->counter_, FileCounter::Open(options.state_dir, counter_key));
  return platform;
}

GraminePlatform::~GraminePlatform() = default;

Status GraminePlatform::Random(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      return InternalError("getrandom failed: {}", Errno(error));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> GraminePlatform::Evidence(const capsule::ReportData& report_data) {
  // 1. The report data, in exactly one write: Gramine takes the 64 bytes of one write(2) as the
  // REPORTDATA of the next quote, so a split write would quote half of it.
  const std::string data_path = attestation_dir_ + "/" + std::string(kUserReportDataFile);
  {
    Fd fd(open(data_path.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      const int error = errno;
      return Unavailable("cannot open {} for writing: {}", data_path, Errno(error));
    }
    ssize_t written = -1;
    do {
      written = write(fd.get(), report_data.data(), report_data.size());
    } while (written < 0 && errno == EINTR);  // EINTR: nothing was written
    if (written < 0) {
      const int error = errno;
      return Unavailable("cannot write {}: {}", data_path, Errno(error));
    }
    if (static_cast<size_t>(written) != report_data.size())
      return Unavailable("wrote {} of {} bytes to {}", written, report_data.size(), data_path);
    if (fd.Close() != 0 && errno != EINTR) {
      const int error = errno;
      return Unavailable("cannot close {}: {}", data_path, Errno(error));
    }
  }

  // 2. The quote, read to EOF under the evidence limit (one byte more tells "over the limit").
  const std::string quote_path = attestation_dir_ + "/" + std::string(kQuoteFile);
  MLC_ASSIGN_OR_RETURN(Fd fd, OpenForReading(quote_path));
  std::vector<uint8_t> quote(capsule::kMaxEvidenceBytes + 1);
  size_t size = 0;
  MLC_RETURN_IF_ERROR(ReadToEnd(fd.get(), quote, quote_path, &size));
  if (size > capsule::kMaxEvidenceBytes)
    return InvalidArgument("{} holds more than {} bytes, the limit for evidence", quote_path,
                           capsule::kMaxEvidenceBytes);
  quote.resize(size);

  // 3. What the platform can check without the Intel chain; the server verifies the rest.
  MLC_RETURN_IF_ERROR(CheckSgxQuote(quote, report_data, quote_path));
  return quote;
}

Result<capsule::SecretBytes> GraminePlatform::SealingKey() { return sealing_key_.Clone(); }

Result<uint64_t> GraminePlatform::ReadCounter() { return counter_->value(); }

Result<uint64_t> GraminePlatform::IncrementCounter() { return counter_->Increment(); }

trusted::PlatformTime GraminePlatform::Now() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return {static_cast<int64_t>(now.tv_sec), false};
}

}  // namespace mlcapsule::tee
