// The configfs-tsm report protocol (see tsm_report.h). Every path this file opens is under the
// configured root; everything it reads is bounded before it is stored, and every descriptor and
// every entry it made is released on every path (Fd and Entry below).
#include "tee/cvm/tsm_report.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <span>

#include "base/bytes.h"
#include "base/unique_fd.h"
#include "capsule/crypto.h"

namespace mlcapsule::tee::cvm {
namespace {

constexpr int kMaxNameAttempts = 4;  // new entry names tried on EEXIST
constexpr uint32_t kMaxPrivlevel = 3;

std::string Errno(int error) { return std::strerror(error); }

using Fd = UniqueFd;

// The entry directory of one request; removed when this object goes away if it was made here.
class Entry {
 public:
  Entry(std::string path, bool made) : path_(std::move(path)), made_(made) {}
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
  ~Entry() {
    // Best effort: a failure leaves an empty configfs item behind, which holds no secret.
    if (made_) (void)rmdir(path_.c_str());
  }
  std::string Attribute(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
  bool made_;
};

// Non-printable bytes of an attribute shown as \xNN, so an error message stays one clean line.
std::string Printable(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t byte : bytes) {
    if (byte >= 0x20 && byte < 0x7F && byte != '\\') {
      out.push_back(static_cast<char>(byte));
    } else {
      out += fmt::format("\\x{:02x}", byte);
    }
  }
  return out;
}

// Reads `path` to EOF, or, when `line` is set, one byte at a time up to and including the first
// newline (a text attribute is one short line; reading no further lets an emulator's FIFO hold
// the values of several successive reads, as a changing configfs attribute would give them).
// More than `max_bytes` is an error, found without storing more than max_bytes + 1 bytes.
Result<std::vector<uint8_t>> ReadBounded(const std::string& path, size_t max_bytes, bool line) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    const int error = errno;
    if (error == ENOENT) return NotFound("cannot open {}: {}", path, Errno(error));
    return IoError("cannot open {}: {}", path, Errno(error));
  }
  struct stat info {};
  if (fstat(fd.get(), &info) != 0) return IoError("cannot stat {}: {}", path, Errno(errno));
  if (!S_ISREG(info.st_mode) && !S_ISFIFO(info.st_mode))
    return InvalidArgument("{} is not a configfs attribute (not a regular file or FIFO)", path);
  std::vector<uint8_t> bytes(max_bytes + 1);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd.get(), bytes.data() + done, line ? 1 : bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read {}: {}", path, Errno(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
    if (line && bytes[done - 1] == '\n') break;
  }
  if (done > max_bytes)
    return InvalidArgument("{} holds more than {} bytes (the limit)", path, max_bytes);
  bytes.resize(done);
  return bytes;
}

// One line of text without its newline.
Result<std::string> ReadLine(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                       ReadBounded(path, kMaxAttributeTextBytes, /*line=*/true));
  if (!bytes.empty() && bytes.back() == '\n') bytes.pop_back();
  return std::string(bytes.begin(), bytes.end());
}

Result<uint64_t> ReadNumber(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string text, ReadLine(path));
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size())
    return InvalidArgument("{} holds '{}', not a decimal number", path, Printable(AsBytes(text)));
  return value;
}

// One write(2) of all of `bytes`, then close (where configfs commits a binary attribute).
Status WriteAttribute(const std::string& path, std::span<const uint8_t> bytes) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return IoError("cannot open {} for writing: {}", path, Errno(errno));
  ssize_t n = -1;
  do {
    n = write(fd.get(), bytes.data(), bytes.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return IoError("cannot write {}: {}", path, Errno(errno));
  if (static_cast<size_t>(n) != bytes.size())
    return IoError("wrote {} of {} bytes to {}", n, bytes.size(), path);
  if (fd.Close() != 0) return IoError("cannot close {}: {}", path, Errno(errno));
  return Status::Ok();
}

Result<std::string> RandomEntryName() {
  std::array<uint8_t, 8> random{};
  ssize_t n = -1;
  do {
    n = getrandom(random.data(), random.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(random.size()))
    return InternalError("getrandom failed: {}", Errno(errno));
  return fmt::format("mlcapsule-{}-{}", getpid(), capsule::ToHex(random));
}

// Makes a fresh entry under `root` (or names the prepared one).
Result<std::unique_ptr<Entry>> OpenEntry(const TsmOptions& options) {
  if (!options.entry_name.empty()) {
    const std::string path = options.root + "/" + options.entry_name;
    struct stat info {};
    if (stat(path.c_str(), &info) != 0)
      return Unavailable("{} at {}: the prepared entry {} is missing: {}", kNoTsmProvider,
                         options.root, path, Errno(errno));
    if (!S_ISDIR(info.st_mode))
      return InvalidArgument("the prepared configfs-tsm entry {} is not a directory", path);
    return std::make_unique<Entry>(path, /*made=*/false);
  }
  for (int attempt = 0; attempt < kMaxNameAttempts; ++attempt) {
    MLC_ASSIGN_OR_RETURN(std::string name, RandomEntryName());
    const std::string path = options.root + "/" + name;
    if (mkdir(path.c_str(), 0700) == 0) return std::make_unique<Entry>(path, /*made=*/true);
    const int error = errno;
    switch (error) {
      case EEXIST:
        continue;
      case ENOENT:
      case ENOTDIR:
      case ENXIO:
      case ENODEV:
        return Unavailable("{} at {}: mkdir {}: {}", kNoTsmProvider, options.root, path,
                           Errno(error));
      case EACCES:
      case EPERM:
      case EROFS:
        return PermissionDenied(
            "cannot make the configfs-tsm entry {}: {} (asking for a report needs write access "
            "to {}, usually root)",
            path, Errno(error), options.root);
      default:
        return IoError("cannot make the configfs-tsm entry {}: {}", path, Errno(error));
    }
  }
  return IoError("cannot make a configfs-tsm entry under {}: {} names in a row already existed",
                 options.root, kMaxNameAttempts);
}

struct Generations {
  uint64_t before_write = 0;  // g0
  uint64_t after_write = 0;   // g1
  uint64_t after_read = 0;    // g2
  bool Consistent() const { return after_write == before_write + 1 && after_read == after_write; }
  std::string Text() const {
    return fmt::format("{}->{}->{}", before_write, after_write, after_read);
  }
};

// One entry, one report. `*counted` says whether the generations are meaningful (a real configfs
// or an emulator's FIFO).
Status RequestOnce(const TsmOptions& options, bool real_configfs,
                   std::string_view expected_provider, const capsule::ReportData& report_data,
                   std::optional<uint32_t> privlevel, TsmBlobs* blobs, Generations* generations,
                   bool* counted) {
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<Entry> entry, OpenEntry(options));

  const std::string provider_path = entry->Attribute("provider");
  MLC_ASSIGN_OR_RETURN(std::string provider, ReadLine(provider_path));
  if (provider != expected_provider)
    return FailedPrecondition(
        "the configfs-tsm provider ({}) is '{}', not '{}': this guest is not the TEE the core "
        "was started for",
        provider_path, Printable(AsBytes(provider)), expected_provider);

  if (privlevel.has_value()) {
    if (*privlevel > kMaxPrivlevel)
      return InvalidArgument("privlevel {} is out of range 0..{}", *privlevel, kMaxPrivlevel);
    const std::string floor_path = entry->Attribute("privlevel_floor");
    MLC_ASSIGN_OR_RETURN(uint64_t floor, ReadNumber(floor_path));
    if (*privlevel < floor)
      return FailedPrecondition(
          "privlevel {} is below the provider's floor {} ({}): configure a VMPL of at least {}",
          *privlevel, floor, floor_path, floor);
    const std::string text = fmt::format("{}\n", *privlevel);
    MLC_RETURN_IF_ERROR(WriteAttribute(entry->Attribute("privlevel"), AsBytes(text)));
  }

  const std::string generation_path = entry->Attribute("generation");
  struct stat generation_info {};
  *counted = real_configfs || (lstat(generation_path.c_str(), &generation_info) == 0 &&
                               S_ISFIFO(generation_info.st_mode));
  MLC_ASSIGN_OR_RETURN(generations->before_write, ReadNumber(generation_path));
  MLC_RETURN_IF_ERROR(WriteAttribute(entry->Attribute("inblob"), report_data));
  MLC_ASSIGN_OR_RETURN(generations->after_write, ReadNumber(generation_path));

  const std::string outblob_path = entry->Attribute("outblob");
  MLC_ASSIGN_OR_RETURN(blobs->outblob, ReadBounded(outblob_path, kMaxOutblobBytes, false));
  if (blobs->outblob.empty())
    return InvalidArgument("{} is empty: the provider gave no report", outblob_path);
  Result<std::vector<uint8_t>> auxblob =
      ReadBounded(entry->Attribute("auxblob"), kMaxAuxblobBytes, false);
  if (auxblob.ok()) {
    blobs->auxblob = std::move(auxblob).value();
  } else if (auxblob.status().code() == StatusCode::kNotFound) {
    blobs->auxblob.clear();  // a provider without one (or a prepared entry that omits it)
  } else {
    return auxblob.status();
  }
  MLC_ASSIGN_OR_RETURN(generations->after_read, ReadNumber(generation_path));
  return Status::Ok();
}

}  // namespace

Result<TsmBlobs> RequestTsmReport(const TsmOptions& options, std::string_view expected_provider,
                                  const capsule::ReportData& report_data,
                                  std::optional<uint32_t> privlevel) {
  if (options.root.empty()) return InvalidArgument("the configfs-tsm root is not set");
  struct statfs fs {};
  if (statfs(options.root.c_str(), &fs) != 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR)
      return Unavailable("{} at {}: {} (is configfs mounted, and the guest's TSM driver loaded?)",
                         kNoTsmProvider, options.root, Errno(error));
    return IoError("cannot statfs the configfs-tsm root {}: {}", options.root, Errno(error));
  }
  const bool real_configfs = static_cast<long>(fs.f_type) == kConfigfsMagic;
  if (real_configfs && !options.entry_name.empty())
    return InvalidArgument(
        "a prepared configfs-tsm entry ({}) is for tests only; {} is a real configfs",
        options.entry_name, options.root);

  std::string first;
  for (int attempt = 0; attempt < 2; ++attempt) {
    TsmBlobs blobs;
    Generations generations;
    bool counted = false;
    MLC_RETURN_IF_ERROR(RequestOnce(options, real_configfs, expected_provider, report_data,
                                    privlevel, &blobs, &generations, &counted));
    if (!counted || generations.Consistent()) return blobs;
    if (attempt == 0) {
      first = generations.Text();
    } else {
      return Aborted(
          "configfs-tsm: entry changed by another writer (generation {}, and {} on the retry; "
          "expected g1 = g0 + 1 after our write and g2 = g1 after our read)",
          first, generations.Text());
    }
  }
  return InternalError("unreachable");
}

bool IsNoTsmProvider(const Status& status) {
  return status.code() == StatusCode::kUnavailable && status.message().starts_with(kNoTsmProvider);
}

}  // namespace mlcapsule::tee::cvm
