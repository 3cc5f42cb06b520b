// File helpers (see file_util.h).
#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mlcapsule {

Result<ReadableFile> ReadableFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return IoError("'{}' is not a regular file", path);
  }
  return ReadableFile(path, fd, static_cast<uint64_t>(st.st_size),
                      static_cast<unsigned>(st.st_mode & 07777));
}

ReadableFile::ReadableFile(ReadableFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), size_(other.size_), mode_(other.mode_) {
  other.fd_ = -1;
}

ReadableFile::~ReadableFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status ReadableFile::ReadExactly(void* out, uint64_t bytes) {
  auto* data = static_cast<uint8_t*>(out);
  uint64_t done = 0;
  while (done < bytes) {
    ssize_t n = ::read(fd_, data + done, static_cast<size_t>(bytes - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return IoError("cannot read '{}': {}", path_, n < 0 ? std::strerror(errno) : "short read");
    done += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path, uint64_t max_bytes) {
  MLC_ASSIGN_OR_RETURN(ReadableFile file, ReadableFile::Open(path));
  if (file.size() > max_bytes)
    return ResourceExhausted("'{}' is {} bytes, over the limit of {} bytes", path, file.size(),
                             max_bytes);
  std::string data(static_cast<size_t>(file.size()), '\0');
  MLC_RETURN_IF_ERROR(file.ReadExactly(data.data(), data.size()));
  return data;
}

Status WriteFile(const std::string& path, std::string_view bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create '{}': {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return IoError("cannot write '{}': {}", tmp, std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return IoError("cannot flush '{}'", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return IoError("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(err));
  }
  return Status::Ok();
}

Status CreateNewFile(const std::string& path, std::span<const uint8_t> bytes, unsigned mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST)
      return FailedPrecondition(
          "refusing to overwrite '{}': it already exists (move it away "
          "first; it may hold a key that is still in use)",
          path);
    return IoError("cannot create '{}': {}", path, std::strerror(errno));
  }
  // The umask may have cleared bits of `mode` but never adds any; fchmod makes the mode exact.
  int err = ::fchmod(fd, mode) == 0 ? 0 : errno;
  size_t done = 0;
  while (err == 0 && done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(path.c_str());
    return IoError("cannot write '{}': {}", path, std::strerror(err));
  }
  return Status::Ok();
}

}  // namespace mlcapsule
