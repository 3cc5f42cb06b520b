// The file counter and key files of the backends without hardware state (file_counter.h). Every
// file is opened relative to one descriptor of the state directory, so a rename of the directory
// half-way cannot mix files from two places.
#include "tee/common/file_counter.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/bytes.h"
#include "base/unique_fd.h"

namespace mlcapsule::tee {
namespace {

using Fd = UniqueFd;

std::string Errno() { return std::strerror(errno); }

template <typename... Args>
Status PermissionDenied(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kPermissionDenied, fmt::format(format, std::forward<Args>(args)...));
}

Status WriteAll(int fd, const uint8_t* data, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError("cannot write {}: {}", path, Errno());
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status ReadExactly(int fd, uint8_t* data, size_t size, off_t offset, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd, data + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read {}: {}", path, Errno());
    if (n == 0) return DataLoss("{} is truncated at {} bytes ({} expected)", path, done, size);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Creates `name` in `dir_fd` with exactly `bytes`, atomically: written and synced under a
// temporary name, then linked into place (link fails if another process created it first, in
// which case *existed is set and nothing is replaced).
Status CreateFileAtomically(int dir_fd, const std::string& dir, std::string_view name,
                            std::span<const uint8_t> bytes, bool* existed) {
  *existed = false;
  const std::string final_name(name);
  const std::string temp_name = final_name + ".tmp." + std::to_string(getpid());
  const std::string temp_path = dir + "/" + temp_name;
  (void)unlinkat(dir_fd, temp_name.c_str(), 0);  // left over from a crash of this pid
  Fd fd(openat(dir_fd, temp_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               0600));
  if (fd.get() < 0) return IoError("cannot create {}: {}", temp_path, Errno());
  Status status = WriteAll(fd.get(), bytes.data(), bytes.size(), temp_path);
  if (status.ok() && fsync(fd.get()) != 0)
    status = IoError("cannot sync {}: {}", temp_path, Errno());
  if (status.ok() && linkat(dir_fd, temp_name.c_str(), dir_fd, final_name.c_str(), 0) != 0) {
    if (errno == EEXIST) {
      *existed = true;
    } else if (errno == ENOSYS || errno == EPERM || errno == EOPNOTSUPP) {
      // No hard links (Gramine implements none): rename into place. That replaces a file another
      // process created at the same moment, which the flock on the counter then reports.
      if (faccessat(dir_fd, final_name.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
        *existed = true;
      } else if (renameat(dir_fd, temp_name.c_str(), dir_fd, final_name.c_str()) != 0) {
        status = IoError("cannot create {}/{}: {}", dir, final_name, Errno());
      }
    } else {
      status = IoError("cannot create {}/{}: {}", dir, final_name, Errno());
    }
  }
  (void)unlinkat(dir_fd, temp_name.c_str(), 0);
  if (status.ok() && fsync(dir_fd) != 0) status = IoError("cannot sync {}: {}", dir, Errno());
  return status;
}

Status FillRandom(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InternalError("getrandom failed: {}", Errno());
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<int> OpenStateDirectory(const std::string& dir) {
  MLC_RETURN_IF_ERROR(EnsureStateDirectory(dir));
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open the state directory {}: {}", dir, Errno());
  return fd;
}

std::array<uint8_t, kCounterFileBytes> CounterRecord(const capsule::SecretBytes& counter_key,
                                                     uint64_t value) {
  std::array<uint8_t, kCounterFileBytes> record{};
  std::memcpy(record.data(), kCounterMagic.data(), 8);
  std::memcpy(record.data() + 8, &value, 8);  // little-endian (x86-64; the file is per machine)
  capsule::SecretBytes check =
      capsule::KeyedHash(counter_key, {std::span<const uint8_t>(record.data(), 16)});
  std::memcpy(record.data() + 16, check.data(), 32);
  return record;
}

}  // namespace

Status EnsureStateDirectory(const std::string& dir) {
  if (dir.empty()) return InvalidArgument("the core's state directory is not set");
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return IoError("cannot create the state directory {}: {}", dir, Errno());
  return Status::Ok();
}

Result<capsule::Digest> HashFile(const std::string& path) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("cannot open {}: {}", path, Errno());
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, 32);
  std::vector<uint8_t> buffer(1 << 20);
  for (;;) {
    ssize_t n = read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read {}: {}", path, Errno());
    if (n == 0) break;
    crypto_generichash_update(&state, buffer.data(), static_cast<size_t>(n));
  }
  capsule::Digest digest{};
  crypto_generichash_final(&state, digest.data(), digest.size());
  return digest;
}

Result<capsule::SecretBytes> LoadOrCreateKeyFile(const std::string& state_dir,
                                                 std::string_view name, size_t bytes) {
  MLC_ASSIGN_OR_RETURN(int raw_dir_fd, OpenStateDirectory(state_dir));
  Fd dir_fd(raw_dir_fd);
  const std::string file_name(name);
  const std::string path = state_dir + "/" + file_name;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Fd fd(openat(dir_fd.get(), file_name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0 && errno == ENOENT && attempt == 0) {
      capsule::SecretBytes fresh(bytes);
      MLC_RETURN_IF_ERROR(FillRandom(fresh.span()));
      bool existed = false;
      MLC_RETURN_IF_ERROR(
          CreateFileAtomically(dir_fd.get(), state_dir, name, fresh.span(), &existed));
      if (!existed) return fresh;
      continue;  // another core created it at the same moment: use theirs
    }
    if (fd.get() < 0) return IoError("cannot open the key file {}: {}", path, Errno());
    struct stat info {};
    if (fstat(fd.get(), &info) != 0) return IoError("cannot stat {}: {}", path, Errno());
    if (!S_ISREG(info.st_mode)) return FailedPrecondition("{} is not a regular file", path);
    if (info.st_uid != geteuid())
      return PermissionDenied("{} belongs to uid {}, not to the core's uid {}", path, info.st_uid,
                              geteuid());
    if ((info.st_mode & 077) != 0)
      return PermissionDenied(
          "{} has mode {:04o}: group or others may access the key; the key must be treated as "
          "exposed (remove the state directory to start over, which loses sealed state), or "
          "chmod 600 it if you know nobody read it",
          path, info.st_mode & 07777);
    if (static_cast<uint64_t>(info.st_size) != bytes)
      return DataLoss("{} has {} bytes, expected {}", path, info.st_size, bytes);
    capsule::SecretBytes key(bytes);
    MLC_RETURN_IF_ERROR(ReadExactly(fd.get(), key.data(), key.size(), 0, path));
    return key;
  }
  return InternalError("{} vanished while it was being created", path);
}

Result<std::unique_ptr<FileCounter>> FileCounter::Open(const std::string& state_dir,
                                                       const capsule::SecretBytes& counter_key) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  MLC_ASSIGN_OR_RETURN(int raw_dir_fd, OpenStateDirectory(state_dir));
  Fd dir_fd(raw_dir_fd);
  std::unique_ptr<FileCounter> counter(new FileCounter());
  counter->key_ = counter_key.Clone();
  counter->path_ = state_dir + "/" + std::string(kCounterFileName);
  const std::string& path = counter->path_;
  const std::string name(kCounterFileName);
  Fd fd(openat(dir_fd.get(), name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0 && errno == ENOENT) {
    bool existed = false;
    auto record = CounterRecord(counter->key_, 0);
    MLC_RETURN_IF_ERROR(
        CreateFileAtomically(dir_fd.get(), state_dir, kCounterFileName, record, &existed));
    fd.reset(openat(dir_fd.get(), name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  }
  if (fd.get() < 0) return IoError("cannot open the counter file {}: {}", path, Errno());
  // One core per state directory: two would both bump the same counter.
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return FailedPrecondition("the state directory {} is in use by another mlcapsule-core",
                                state_dir);
    return IoError("cannot lock {}: {}", path, Errno());
  }
  struct stat info {};
  if (fstat(fd.get(), &info) != 0) return IoError("cannot stat {}: {}", path, Errno());
  if (!S_ISREG(info.st_mode)) return FailedPrecondition("{} is not a regular file", path);
  if (static_cast<uint64_t>(info.st_size) != kCounterFileBytes)
    return DataLoss("the counter file {} has {} bytes, expected {}: it is corrupt", path,
                    info.st_size, kCounterFileBytes);
  std::array<uint8_t, kCounterFileBytes> record{};
  MLC_RETURN_IF_ERROR(ReadExactly(fd.get(), record.data(), record.size(), 0, path));
  if (std::memcmp(record.data(), kCounterMagic.data(), 8) != 0)
    return DataLoss("the counter file {} does not start with {}: it is corrupt", path,
                    kCounterMagic);
  uint64_t value = 0;
  std::memcpy(&value, record.data() + 8, 8);
  const auto expected = CounterRecord(counter->key_, value);
  if (!capsule::ConstantTimeEqual(record, expected))
    return DataLoss(
        "the counter file {} fails its checksum: it was changed outside the core, or the key it "
        "is checked with changed; the rollback protection it gives cannot be trusted, so the "
        "core refuses to start (remove the state directory to start over; sealed state is then "
        "lost)",
        path);
  counter->value_ = value;
  counter->fd_ = fd.release();
  return counter;
}

FileCounter::~FileCounter() {
  if (fd_ >= 0) close(fd_);
}

Result<uint64_t> FileCounter::Increment() {
  if (value_ == UINT64_MAX) return ResourceExhausted("the monotonic counter is exhausted");
  const uint64_t next = value_ + 1;
  const auto record = CounterRecord(key_, next);
  size_t done = 0;
  while (done < record.size()) {
    ssize_t n = pwrite(fd_, record.data() + done, record.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError("cannot write the monotonic counter {}: {}", path_, Errno());
    done += static_cast<size_t>(n);
  }
  while (fdatasync(fd_) != 0) {
    if (errno != EINTR) return IoError("cannot sync the monotonic counter {}: {}", path_, Errno());
  }
  value_ = next;
  return next;
}

}  // namespace mlcapsule::tee
