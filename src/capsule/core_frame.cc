// Framing of the host <-> mlcapsule-core socket (see core_frame.h and docs/core-protocol.md).
#include "capsule/core_frame.h"

#include <chrono>

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

static_assert(std::endian::native == std::endian::little, "frames are little-endian");

// One read(2) is capped by the kernel at about 2 GiB anyway.
constexpr size_t kMaxChunkBytes = size_t{1} << 30;

// How long a reader polls the socket before it blocks. A blocked reader is woken through the
// scheduler, which costs tens of microseconds on a virtual machine; small models answer faster
// than that, so both ends poll briefly first (the host for the answer, the core for the next
// query). Longer waits block and cost no CPU.
// Non-blocking read attempts until data arrives or the poll budget is spent. Returns the read's
// result, or -1 with errno EAGAIN when the budget ran out.
ssize_t PollRead(int fd, uint8_t* data, size_t size, std::chrono::microseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (;;) {
    ssize_t n = recv(fd, data, size, MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) {  // a pipe (the core's --stdio under Gramine): block
      errno = EAGAIN;
      return -1;
    }
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
    if (std::chrono::steady_clock::now() >= deadline) return -1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

// Reads up to `size` bytes; *done < size afterwards means the peer closed the stream. With
// `poll_first` (a frame header: the wait for the peer) the first read polls before it blocks;
// the rest of a frame is read blocking, because polling while a large payload streams in
// contends with the writer on the socket and slows the transfer down several times.
Status ReadFull(int fd, uint8_t* data, size_t size, size_t* done, bool poll_first = false,
                std::chrono::microseconds poll_budget = kDefaultPollBudget) {
  *done = 0;
  while (*done < size) {
    const size_t want = std::min(size - *done, kMaxChunkBytes);
    ssize_t n = -1;
    errno = EAGAIN;
    if (poll_first && *done == 0 && poll_budget.count() > 0)
      n = PollRead(fd, data, want, poll_budget);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) n = read(fd, data + *done, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("core socket read failed: {}", std::strerror(errno));
    if (n == 0) return Status::Ok();
    *done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status ReadExact(int fd, uint8_t* data, size_t size, const char* what, bool* peer_closed) {
  size_t done = 0;
  MLC_RETURN_IF_ERROR(ReadFull(fd, data, size, &done));
  if (done < size) {
    if (peer_closed != nullptr) *peer_closed = true;
    return DataLoss("core socket closed inside a frame: {} truncated at {} of {} bytes", what, done,
                    size);
  }
  return Status::Ok();
}

// sendmsg with MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE.
Status WriteVector(int fd, struct iovec* parts, int count) {
  while (count > 0) {
    struct msghdr message {};
    message.msg_iov = parts;
    message.msg_iovlen = static_cast<size_t>(count);
    ssize_t n = sendmsg(fd, &message, MSG_NOSIGNAL);
    // Not a socket (the core's --stdio under Gramine, which hands the enclave plain fds 0-2):
    // writev; the core ignores SIGPIPE.
    if (n < 0 && errno == ENOTSOCK) n = writev(fd, parts, count);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EPIPE || errno == ECONNRESET)
        return IoError("core socket closed by the other end ({})", std::strerror(errno));
      return IoError("core socket write failed: {}", std::strerror(errno));
    }
    size_t sent = static_cast<size_t>(n);
    while (count > 0 && sent >= parts->iov_len) {
      sent -= parts->iov_len;
      ++parts;
      --count;
    }
    if (count > 0) {
      parts->iov_base = static_cast<uint8_t*>(parts->iov_base) + sent;
      parts->iov_len -= sent;
    }
  }
  return Status::Ok();
}

struct iovec Part(const void* data, size_t size) {
  return {const_cast<void*>(data), size};
}

}  // namespace

AlignedBytes::AlignedBytes(AlignedBytes&& other) noexcept
    : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
  other.data_ = nullptr;
  other.size_ = 0;
  other.capacity_ = 0;
}

AlignedBytes& AlignedBytes::operator=(AlignedBytes&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = other.data_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.capacity_ = 0;
  }
  return *this;
}

AlignedBytes::~AlignedBytes() { std::free(data_); }

Status AlignedBytes::Resize(uint64_t size) {
  // Reuses the buffer when it is large enough: a stream of same-sized queries then allocates
  // (and page-faults) nothing.
  if (size <= capacity_) {
    size_ = static_cast<size_t>(size);
    return Status::Ok();
  }
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  capacity_ = 0;
  const uint64_t rounded = (size + 63) / 64 * 64;
  if (rounded < size || rounded > SIZE_MAX) return ResourceExhausted("{} bytes do not fit", size);
  data_ = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(rounded)));
  if (data_ == nullptr) return ResourceExhausted("cannot allocate {} bytes for a request", size);
  size_ = static_cast<size_t>(size);
  capacity_ = static_cast<size_t>(rounded);
  return Status::Ok();
}

void TuneCoreSocket(int fd) {
  const int bytes = kCoreSocketBufferBytes;
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

Status ReadRequest(int fd, std::span<const uint64_t> max_payload_bytes, CoreRequest* request,
                   bool* end_of_stream) {
  *end_of_stream = false;
  uint8_t header[kRequestHeaderBytes];
  size_t done = 0;
  MLC_RETURN_IF_ERROR(ReadFull(fd, header, sizeof(header), &done, /*poll_first=*/true));
  if (done == 0) {
    *end_of_stream = true;
    return Status::Ok();
  }
  if (done < sizeof(header))
    return DataLoss("request header truncated at {} of {} bytes", done, sizeof(header));
  if (std::memcmp(header, kRequestMagic, 4) != 0)
    return InvalidArgument("request does not start with the magic MLCQ");
  uint32_t call = 0;
  uint64_t length = 0;
  std::memcpy(&call, header + 4, 4);
  std::memcpy(&length, header + 8, 8);
  if (call == 0 || call >= max_payload_bytes.size())
    return InvalidArgument("request call number {} is not a known call (1..{})", call,
                           max_payload_bytes.size() == 0 ? 0 : max_payload_bytes.size() - 1);
  if (length > max_payload_bytes[call])
    return InvalidArgument("request for call {}: payload length {} is over the limit {}", call,
                           length, max_payload_bytes[call]);
  request->call = call;
  MLC_RETURN_IF_ERROR(request->payload.Resize(length));
  MLC_RETURN_IF_ERROR(ReadFull(fd, request->payload.data(), request->payload.size(), &done));
  if (done < request->payload.size())
    return DataLoss("request for call {} truncated: payload ends at {} of {} bytes", call, done,
                    length);
  return Status::Ok();
}

Status WriteRequest(int fd, uint32_t call, std::span<const uint8_t> payload) {
  const std::span<const uint8_t> pieces[1] = {payload};
  return WriteRequestGather(fd, call, pieces);
}

Status WriteRequestGather(int fd, uint32_t call, std::span<const std::span<const uint8_t>> pieces) {
  if (pieces.size() > kMaxRequestPieces)
    return InvalidArgument("a request of {} pieces is over the limit {}", pieces.size(),
                           kMaxRequestPieces);
  uint8_t header[kRequestHeaderBytes];
  uint64_t length = 0;
  for (auto piece : pieces) length += piece.size();
  std::memcpy(header, kRequestMagic, 4);
  std::memcpy(header + 4, &call, 4);
  std::memcpy(header + 8, &length, 8);
  struct iovec parts[kMaxRequestPieces + 1];
  int count = 0;
  parts[count++] = Part(header, sizeof(header));
  for (auto piece : pieces)
    if (!piece.empty()) parts[count++] = Part(piece.data(), piece.size());
  return WriteVector(fd, parts, count);
}

Status WriteReply(int fd, const Status& status, std::span<const uint8_t> output,
                  std::span<const uint8_t> sealed) {
  std::string_view message;
  if (!status.ok()) {
    message = status.message();
    if (message.size() > kMaxErrorMessageBytes) message = message.substr(0, kMaxErrorMessageBytes);
    output = AsBytes(message);
    sealed = {};
  }
  uint8_t header[kReplyHeaderBytes];
  const uint32_t code = static_cast<uint32_t>(status.code());
  const uint64_t output_length = output.size(), sealed_length = sealed.size();
  std::memcpy(header, kReplyMagic, 4);
  std::memcpy(header + 4, &code, 4);
  std::memcpy(header + 8, &output_length, 8);
  std::memcpy(header + 16, &sealed_length, 8);
  struct iovec parts[3] = {Part(header, sizeof(header)), Part(output.data(), output.size()),
                           Part(sealed.data(), sealed.size())};
  return WriteVector(fd, parts, 3);
}

Status ReadReply(int fd, CoreReply* reply, bool* peer_closed,
                 std::chrono::microseconds poll_budget) {
  if (peer_closed != nullptr) *peer_closed = false;
  uint8_t header[kReplyHeaderBytes];
  size_t done = 0;
  MLC_RETURN_IF_ERROR(
      ReadFull(fd, header, sizeof(header), &done, /*poll_first=*/true, poll_budget));
  if (done < sizeof(header)) {
    if (peer_closed != nullptr) *peer_closed = true;
    return DataLoss("core socket closed before a reply (reply header: {} of {} bytes)", done,
                    sizeof(header));
  }
  if (std::memcmp(header, kReplyMagic, 4) != 0)
    return InvalidArgument("reply does not start with the magic MLCR");
  uint32_t code = 0;
  uint64_t output_length = 0, sealed_length = 0;
  std::memcpy(&code, header + 4, 4);
  std::memcpy(&output_length, header + 8, 8);
  std::memcpy(&sealed_length, header + 16, 8);
  if (code > static_cast<uint32_t>(StatusCode::kAborted))
    return InvalidArgument("reply status {} is not a known status code", code);
  const uint64_t max_output = code == 0 ? kMaxReplyOutputBytes : kMaxErrorMessageBytes;
  if (output_length > max_output)
    return InvalidArgument("reply output length {} is over the limit {}", output_length,
                           max_output);
  const uint64_t max_sealed = code == 0 ? kMaxReplySealedBytes : 0;
  if (sealed_length > max_sealed)
    return InvalidArgument("reply sealed-state length {} is over the limit {}", sealed_length,
                           max_sealed);
  reply->output.resize(static_cast<size_t>(output_length));
  reply->sealed.resize(static_cast<size_t>(sealed_length));
  MLC_RETURN_IF_ERROR(
      ReadExact(fd, reply->output.data(), reply->output.size(), "reply output", peer_closed));
  MLC_RETURN_IF_ERROR(
      ReadExact(fd, reply->sealed.data(), reply->sealed.size(), "reply sealed state", peer_closed));
  if (code == 0) {
    reply->status = Status::Ok();
  } else {
    reply->status = Status(static_cast<StatusCode>(code),
                           std::string(reply->output.begin(), reply->output.end()));
    reply->output.clear();
  }
  return Status::Ok();
}

}  // namespace mlcapsule::capsule
