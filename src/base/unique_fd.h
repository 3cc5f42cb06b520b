// A file descriptor closed on every path (the TEE backends open their files, devices and
// attribute files with it).
//
//   UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
//   if (fd.get() < 0) return IoError("cannot open {}: {}", path, std::strerror(errno));
//   if (fd.Close() != 0) ...  // where close itself reports (configfs commits a write on close)
#pragma once

#include <unistd.h>

namespace mlcapsule {

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  // Gives the descriptor up without closing it.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }
  // Closes now and returns close's own result (a pseudo-file may act, and fail, on close).
  int Close() { return close(release()); }

 private:
  int fd_;
};

}  // namespace mlcapsule
