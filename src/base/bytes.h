// Bounded little-endian byte writer and reader for every binary format of the project (plans,
// capsules, leases, usage reports, sealed state, wire messages). The reader never reads past its
// span and names the field in every error; counts are checked against a limit and against the
// bytes left before anything is allocated.
//
//   ByteReader r(bytes, "lease");
//   uint64_t quota = 0;
//   MLC_RETURN_IF_ERROR(r.Pod(&quota, "query quota"));
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule {

class ByteWriter {
 public:
  void Bytes(const void* data, size_t n) {
    if (n > 0) out_.append(static_cast<const char*>(data), n);
  }
  void Bytes(std::span<const uint8_t> data) { Bytes(data.data(), data.size()); }
  template <typename T>
  void Pod(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    Bytes(&value, sizeof(value));
  }
  // u32 length + bytes.
  void Str(std::string_view s) {
    Pod<uint32_t>(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Blob(std::span<const uint8_t> b) {
    Pod<uint32_t>(static_cast<uint32_t>(b.size()));
    Bytes(b.data(), b.size());
  }
  void PadTo(size_t alignment) {
    while (out_.size() % alignment) out_.push_back('\0');
  }
  size_t size() const { return out_.size(); }
  std::string& out() { return out_; }
  std::span<const uint8_t> span() const {
    return {reinterpret_cast<const uint8_t*>(out_.data()), out_.size()};
  }

 private:
  std::string out_;
};

class ByteReader {
 public:
  // `what` names the whole object in errors ("lease truncated reading quota at offset 40").
  ByteReader(std::span<const uint8_t> bytes, std::string_view what) : bytes_(bytes), what_(what) {}
  ByteReader(std::string_view bytes, std::string_view what)
      : bytes_(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), what_(what) {}

  size_t remaining() const { return bytes_.size() - pos_; }
  size_t pos() const { return pos_; }
  std::span<const uint8_t> consumed() const { return bytes_.first(pos_); }
  std::span<const uint8_t> rest() const { return bytes_.subspan(pos_); }

  Status Bytes(void* out, size_t n, std::string_view field) {
    if (n > remaining())
      return DataLoss("{} truncated reading {} at offset {} ({} bytes needed, {} left)", what_,
                      field, pos_, n, remaining());
    if (n > 0) std::memcpy(out, bytes_.data() + pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  // A view of the next n bytes (no copy).
  Status View(size_t n, std::span<const uint8_t>* out, std::string_view field) {
    if (n > remaining())
      return DataLoss("{} truncated reading {} at offset {} ({} bytes needed, {} left)", what_,
                      field, pos_, n, remaining());
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  template <typename T>
  Status Pod(T* out, std::string_view field) {
    static_assert(std::is_trivially_copyable_v<T>);
    return Bytes(out, sizeof(T), field);
  }
  // u32 length (<= max_bytes) + bytes.
  Status Str(std::string* out, uint64_t max_bytes, std::string_view field) {
    std::span<const uint8_t> view;
    MLC_RETURN_IF_ERROR(BlobView(&view, max_bytes, field));
    out->assign(reinterpret_cast<const char*>(view.data()), view.size());
    return Status::Ok();
  }
  Status Blob(std::vector<uint8_t>* out, uint64_t max_bytes, std::string_view field) {
    std::span<const uint8_t> view;
    MLC_RETURN_IF_ERROR(BlobView(&view, max_bytes, field));
    out->assign(view.begin(), view.end());
    return Status::Ok();
  }
  Status BlobView(std::span<const uint8_t>* out, uint64_t max_bytes, std::string_view field) {
    uint32_t n = 0;
    MLC_RETURN_IF_ERROR(Pod(&n, field));
    if (n > max_bytes)
      return InvalidArgument("{}: {} length {} is over the limit {}", what_, field, n, max_bytes);
    return View(n, out, field);
  }
  // Reads a count and checks it against a limit and the bytes left (each item >= min_item bytes).
  template <typename T>
  Status Count(T* out, uint64_t limit, size_t min_item, std::string_view field) {
    MLC_RETURN_IF_ERROR(Pod(out, field));
    if (static_cast<uint64_t>(*out) > limit)
      return InvalidArgument("{}: {} {} is over the limit {}", what_, field, *out, limit);
    if (static_cast<uint64_t>(*out) * min_item > remaining())
      return DataLoss("{}: {} {} needs more bytes than the {} left", what_, field, *out,
                      remaining());
    return Status::Ok();
  }
  Status Skip(size_t n, std::string_view field) {
    if (n > remaining())
      return DataLoss("{} truncated skipping {} at offset {}", what_, field, pos_);
    pos_ += n;
    return Status::Ok();
  }
  // Error unless every byte was consumed (trailing bytes are not silently ignored).
  Status ExpectEnd() const {
    if (remaining() != 0)
      return InvalidArgument("{} has {} unexpected trailing bytes at offset {}", what_, remaining(),
                             pos_);
    return Status::Ok();
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string_view what_;
  size_t pos_ = 0;
};

inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace mlcapsule
