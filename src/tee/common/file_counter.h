// Files the TEE backends without a hardware counter share (software, sgx, snp, tdx): a
// monotonic counter kept in STATE/core-counter, authenticated with a key only the TEE can derive,
// and a random key file (the software backend's seal key, TDX's key on the CVM's encrypted disk).
// Everything is opened when created, relative to one descriptor of the state directory; after
// that the counter touches only its own descriptor (so it works under seccomp).
//
//   counter_file := magic:"MLCSWCT1" value:u64 check:u8[32]
//                   ; check = keyed BLAKE2b-256(key = counter key, magic || value)
//
// The file counter is integrity-protected, not fresh: whoever can restore an older copy of the
// file (with the sealed state of the same moment) rolls both back together. docs/licensing.md
// and docs/tee-backends.md say what that costs (at most one lease of unreported usage).
//
//   MLC_ASSIGN_OR_RETURN(auto counter, FileCounter::Open(state_dir, counter_key));
//   MLC_ASSIGN_OR_RETURN(uint64_t next, counter->Increment());
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "capsule/crypto.h"

namespace mlcapsule::tee {

inline constexpr std::string_view kCounterMagic = "MLCSWCT1";
inline constexpr size_t kCounterFileBytes = 8 + 8 + 32;
inline constexpr std::string_view kCounterFileName = "core-counter";

class FileCounter {
 public:
  // Creates `state_dir` (0700) and STATE/core-counter (value 0) when missing; refuses a corrupt
  // file or one whose check does not verify under `counter_key` (DataLoss), and a directory
  // another core holds (FailedPrecondition: the file is flock'ed for the counter's life).
  static Result<std::unique_ptr<FileCounter>> Open(const std::string& state_dir,
                                                   const capsule::SecretBytes& counter_key);
  ~FileCounter();
  FileCounter(const FileCounter&) = delete;
  FileCounter& operator=(const FileCounter&) = delete;

  uint64_t value() const { return value_; }
  // pwrite + fdatasync of value + 1; the value changes only when the write succeeded.
  Result<uint64_t> Increment();

 private:
  FileCounter() = default;
  capsule::SecretBytes key_;
  std::string path_;
  int fd_ = -1;
  uint64_t value_ = 0;
};

// STATE/`name`: `bytes` random bytes, created 0600 (atomically) when missing. Refuses a file that
// is not a regular file, belongs to another uid, can be read by group or others, or has another
// size.
Result<capsule::SecretBytes> LoadOrCreateKeyFile(const std::string& state_dir,
                                                 std::string_view name, size_t bytes);

// Creates `dir` with mode 0700 if it is missing.
Status EnsureStateDirectory(const std::string& dir);

// BLAKE2b-256 of a file's bytes (the core measurement: /proc/self/exe).
Result<capsule::Digest> HashFile(const std::string& path);

}  // namespace mlcapsule::tee
