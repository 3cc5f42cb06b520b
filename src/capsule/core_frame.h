// Framing of the software TEE's socket between the host and `mlcapsule-core`
// (docs/core-protocol.md). One request, then one reply, strictly alternating:
//
//   request := magic:"MLCQ" call:u32 length:u64 payload:u8[length]
//   reply   := magic:"MLCR" status:u32 (0 ok, else a StatusCode) output_length:u64
//              sealed_length:u64 output:u8[output_length] sealed:u8[sealed_length]
//              ; on error output is the UTF-8 message and sealed is empty
//
// Before the first request the core sends one reply of its own, the hello: status 0 and output
// "mlcapsule-core/1 <memory backend>" once it is confined and ready, or its start-up error.
//
// All integers little-endian. The reader checks every length against its limit before it
// allocates anything: a request's payload against the caller's per-call limit table (the core
// passes trusted::MaxInputBytes), a reply's against kMaxReplyOutputBytes/kMaxReplySealedBytes.
// Request payloads land in 64-byte aligned memory, so the core's tensor views over them are
// aligned. Reads and writes loop over partial transfers and EINTR; writes never raise SIGPIPE.
// Trusts nothing it reads.
//
//   MLC_RETURN_IF_ERROR(WriteRequest(fd, 4, input));
//   CoreReply reply;
//   MLC_RETURN_IF_ERROR(ReadReply(fd, &reply));   // transport errors
//   if (!reply.status.ok()) return reply.status;  // the core's own error
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule::capsule {

inline constexpr char kRequestMagic[4] = {'M', 'L', 'C', 'Q'};
inline constexpr char kReplyMagic[4] = {'M', 'L', 'C', 'R'};
inline constexpr std::string_view kCoreHelloPrefix = "mlcapsule-core/1 ";
inline constexpr size_t kRequestHeaderBytes = 16;
inline constexpr size_t kReplyHeaderBytes = 24;
// The largest reply output (an inference result) and sealed update the host accepts (at least
// trusted::kMaxSealedUpdateBytes: a sealed state plus one journal append).
inline constexpr uint64_t kMaxReplyOutputBytes = (uint64_t{1} << 32) + (1 << 20);
inline constexpr uint64_t kMaxReplySealedBytes = uint64_t{21} << 20;
inline constexpr uint64_t kMaxErrorMessageBytes = 64 << 10;
// How long a reader polls for the start of a frame before it blocks (docs/core-protocol.md).
inline constexpr std::chrono::microseconds kDefaultPollBudget{250};
// The longest a host polls for an answer it expects soon.
inline constexpr std::chrono::microseconds kMaxReplyPollBudget{20000};

// Socket buffers asked for on both ends (the kernel caps them at net.core.[rw]mem_max).
inline constexpr int kCoreSocketBufferBytes = 4 << 20;

// Owned bytes, 64-byte aligned (never null-terminated, never wiped: requests carry ciphertext,
// leases and the client's own inputs, none of them secret from the host).
class AlignedBytes {
 public:
  AlignedBytes() = default;
  AlignedBytes(AlignedBytes&& other) noexcept;
  AlignedBytes& operator=(AlignedBytes&& other) noexcept;
  AlignedBytes(const AlignedBytes&) = delete;
  AlignedBytes& operator=(const AlignedBytes&) = delete;
  ~AlignedBytes();
  // Replaces the contents with `size` uninitialised bytes (reusing the buffer when it is large
  // enough); fails when memory is short.
  Status Resize(uint64_t size);
  size_t capacity() const { return capacity_; }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

struct CoreRequest {
  uint32_t call = 0;
  AlignedBytes payload;
};

struct CoreReply {
  Status status;  // the core's answer: OK, or its error (code + message)
  std::vector<uint8_t> output;
  std::vector<uint8_t> sealed;
};

// Asks for large socket buffers (best effort).
void TuneCoreSocket(int fd);

// `max_payload_bytes[call]` is the limit of call number `call`; a call number of 0 or past the end
// of the table is rejected. On a clean end of stream before the first byte of a request,
// *end_of_stream is set and OK returned; a stream that ends inside a frame is DataLoss.
Status ReadRequest(int fd, std::span<const uint64_t> max_payload_bytes, CoreRequest* request,
                   bool* end_of_stream);
Status WriteRequest(int fd, uint32_t call, std::span<const uint8_t> payload);
// The payload as the concatenation of `pieces` (at most kMaxRequestPieces), written with one
// gathered write and no copy (large tensors go straight from the caller's buffers).
inline constexpr size_t kMaxRequestPieces = 256;
Status WriteRequestGather(int fd, uint32_t call, std::span<const std::span<const uint8_t>> pieces);

// Sends `status` (its message as output when it is an error; output and sealed are then ignored).
Status WriteReply(int fd, const Status& status, std::span<const uint8_t> output,
                  std::span<const uint8_t> sealed);
// Transport errors are the returned Status; the core's answer is reply->status. An end of stream
// before the reply is DataLoss with `peer_closed` set.
// `poll_budget`: how long to poll for the reply's start before blocking (the host passes more
// than the default when it expects an answer soon and has a CPU to spare).
Status ReadReply(int fd, CoreReply* reply, bool* peer_closed = nullptr,
                 std::chrono::microseconds poll_budget = kDefaultPollBudget);

}  // namespace mlcapsule::capsule
