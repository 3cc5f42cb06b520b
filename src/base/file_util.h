// Whole-file reads and writes with explicit size limits (untrusted files are bounded before
// allocation). Not used inside the trusted core, which does no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule {

// A regular file open for reading, closed on destruction. Its size and mode come from the open
// descriptor, so a check on them cannot race with a swap of the file.
class ReadableFile {
 public:
  static Result<ReadableFile> Open(const std::string& path);
  ReadableFile(ReadableFile&& other) noexcept;
  ReadableFile& operator=(ReadableFile&&) = delete;
  ~ReadableFile();
  uint64_t size() const { return size_; }
  unsigned mode() const { return mode_; }  // st_mode permission bits
  // Reads exactly `bytes` bytes from the current position.
  Status ReadExactly(void* out, uint64_t bytes);

 private:
  ReadableFile(std::string path, int fd, uint64_t size, unsigned mode)
      : path_(std::move(path)), fd_(fd), size_(size), mode_(mode) {}
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  unsigned mode_ = 0;
};

// Reads `path` completely; refuses files larger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path, uint64_t max_bytes);
// Writes atomically (temporary file + rename).
Status WriteFile(const std::string& path, std::string_view bytes);
// Creates `path` with exactly `mode` (secrets: 0600, never readable by others even briefly),
// refusing to replace anything already there or to follow a symlink (FailedPrecondition "refusing
// to overwrite"), and writes and fsyncs `bytes`. A partly written file is removed.
Status CreateNewFile(const std::string& path, std::span<const uint8_t> bytes, unsigned mode);
inline Status CreateNewFile(const std::string& path, std::string_view bytes, unsigned mode) {
  return CreateNewFile(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
      mode);
}

}  // namespace mlcapsule
