// The fd TCTI (fd_tcti.h): TPM command/response framing over one descriptor, with bounded
// responses, poll-based timeouts and no reconnection. Everything the TPM sends is untrusted: the
// response size field is checked against kMaxResponseBytes before anything is read past the
// header.
#include "tee/tpm/fd_tcti.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

namespace mlcapsule::tee {
namespace {

constexpr uint64_t kMagic = 0x4d4c43464454434dULL;  // "MLCFDTCM"
constexpr uint32_t kVersion = 2;

enum class Phase { kIdle, kAwaitingResponse };

int64_t MonotonicMs() {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

uint32_t LoadBigEndian32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

}  // namespace

// The TCTI context ESYS sees: the common V2 structure first (tss2 casts the context pointer to
// it), then a pointer back to the owning state. A plain struct, so the cast is well defined.
struct TctiBlob {
  TSS2_TCTI_CONTEXT_COMMON_V2 common;
  FdTcti::State* state;
};

struct FdTcti::State {
  TctiBlob blob{};
  int fd = -1;
  bool socket = false;
  std::string description;
  int response_timeout_ms = kDefaultResponseTimeoutMs;
  Phase phase = Phase::kIdle;
  bool broken = false;
  std::string last_error;
  size_t have = 0;           // response bytes read so far
  size_t response_size = 0;  // from the header, once `have` >= kHeaderBytes
  int64_t block_deadline_ms = 0;
  std::array<uint8_t, kMaxResponseBytes> response{};

  ~State() {
    sodium_memzero(response.data(), response.size());
    if (fd >= 0) close(fd);
  }

  TSS2_RC Break(TSS2_RC rc, std::string message) {
    broken = true;
    last_error = std::move(message);
    sodium_memzero(response.data(), response.size());
    return rc;
  }

  // Waits until fd is readable. Returns 0 when readable, TRY_AGAIN when `timeout` (ms) passed,
  // an error (transport broken) otherwise.
  TSS2_RC WaitReadable(int32_t timeout) {
    const int64_t start = MonotonicMs();
    for (;;) {
      int wait_ms = 0;
      if (timeout == TSS2_TCTI_TIMEOUT_BLOCK) {
        const int64_t left = block_deadline_ms - MonotonicMs();
        if (left <= 0)
          return Break(TSS2_TCTI_RC_IO_ERROR,
                       fmt::format("the TPM at {} sent no (complete) response within {} ms",
                                   description, response_timeout_ms));
        wait_ms = static_cast<int>(left);
      } else {
        const int64_t left = static_cast<int64_t>(timeout) - (MonotonicMs() - start);
        if (left <= 0 && timeout != TSS2_TCTI_TIMEOUT_NONE) return TSS2_TCTI_RC_TRY_AGAIN;
        wait_ms = left > 0 ? static_cast<int>(left) : 0;
      }
      struct pollfd pfd {};
      pfd.fd = fd;
      pfd.events = POLLIN;
      const int n = poll(&pfd, 1, wait_ms);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return Break(TSS2_TCTI_RC_IO_ERROR, fmt::format("poll on the TPM at {} failed: {}",
                                                        description, std::strerror(errno)));
      if (n > 0) return TSS2_RC_SUCCESS;  // readable, or an error/hang-up that read reports
      if (timeout == TSS2_TCTI_TIMEOUT_NONE) return TSS2_TCTI_RC_TRY_AGAIN;
    }
  }

  // Reads response bytes until `have` reaches `target`.
  TSS2_RC ReadUpTo(size_t target, int32_t timeout) {
    while (have < target) {
      TSS2_RC rc = WaitReadable(timeout);
      if (rc != TSS2_RC_SUCCESS) return rc;
      const ssize_t n = read(fd, response.data() + have, target - have);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0)
        return Break(TSS2_TCTI_RC_IO_ERROR, fmt::format("reading from the TPM at {} failed: {}",
                                                        description, std::strerror(errno)));
      if (n == 0)
        return Break(TSS2_TCTI_RC_IO_ERROR,
                     fmt::format("the TPM at {} closed the connection after {} of {} response "
                                 "bytes",
                                 description, have, have < kHeaderBytes ? kHeaderBytes : target));
      have += static_cast<size_t>(n);
    }
    return TSS2_RC_SUCCESS;
  }

  TSS2_RC Transmit(size_t size, const uint8_t* command) {
    if (broken) return TSS2_TCTI_RC_IO_ERROR;
    if (command == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
    if (phase != Phase::kIdle)
      return Break(TSS2_TCTI_RC_BAD_SEQUENCE,
                   fmt::format("a command was sent to the TPM at {} before the previous "
                               "response was read",
                               description));
    if (size < kHeaderBytes || size > kMaxResponseBytes) return TSS2_TCTI_RC_BAD_VALUE;
    size_t done = 0;
    while (done < size) {
      // MSG_NOSIGNAL: a TPM that went away must give an error, not SIGPIPE.
      const ssize_t n = socket ? send(fd, command + done, size - done, MSG_NOSIGNAL)
                               : write(fd, command + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return Break(
            TSS2_TCTI_RC_IO_ERROR,
            fmt::format("writing a command to the TPM at {} failed after {} of {} "
                        "bytes: {}",
                        description, done, size, n < 0 ? std::strerror(errno) : "nothing written"));
      done += static_cast<size_t>(n);
    }
    phase = Phase::kAwaitingResponse;
    have = 0;
    response_size = 0;
    block_deadline_ms = MonotonicMs() + response_timeout_ms;
    return TSS2_RC_SUCCESS;
  }

  TSS2_RC Receive(size_t* size, uint8_t* out, int32_t timeout) {
    if (broken) return TSS2_TCTI_RC_IO_ERROR;
    if (size == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
    if (timeout < TSS2_TCTI_TIMEOUT_BLOCK) return TSS2_TCTI_RC_BAD_VALUE;
    if (phase != Phase::kAwaitingResponse) return TSS2_TCTI_RC_BAD_SEQUENCE;
    TSS2_RC rc = ReadUpTo(kHeaderBytes, timeout);
    if (rc != TSS2_RC_SUCCESS) return rc;
    if (response_size == 0) {
      const uint32_t claimed = LoadBigEndian32(response.data() + 2);
      if (claimed < kHeaderBytes || claimed > kMaxResponseBytes)
        return Break(TSS2_TCTI_RC_MALFORMED_RESPONSE,
                     fmt::format("the TPM at {} announced a response of {} bytes; a response "
                                 "has {} to {} bytes",
                                 description, claimed, kHeaderBytes, kMaxResponseBytes));
      response_size = claimed;
    }
    if (out == nullptr) {  // size query
      *size = response_size;
      return TSS2_RC_SUCCESS;
    }
    if (*size < response_size) {
      *size = response_size;
      return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    }
    rc = ReadUpTo(response_size, timeout);
    if (rc != TSS2_RC_SUCCESS) return rc;
    std::memcpy(out, response.data(), response_size);
    *size = response_size;
    // The response may hold a secret (an unsealed seed): keep no copy.
    sodium_memzero(response.data(), response_size);
    phase = Phase::kIdle;
    have = 0;
    response_size = 0;
    return TSS2_RC_SUCCESS;
  }
};

namespace {

FdTcti::State* StateOf(TSS2_TCTI_CONTEXT* context) {
  if (context == nullptr) return nullptr;
  auto* blob = reinterpret_cast<TctiBlob*>(context);
  if (blob->common.v1.magic != kMagic) return nullptr;
  return blob->state;
}

TSS2_RC TctiTransmit(TSS2_TCTI_CONTEXT* context, size_t size, const uint8_t* command) {
  FdTcti::State* state = StateOf(context);
  if (state == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  return state->Transmit(size, command);
}

TSS2_RC TctiReceive(TSS2_TCTI_CONTEXT* context, size_t* size, uint8_t* response, int32_t timeout) {
  FdTcti::State* state = StateOf(context);
  if (state == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  return state->Receive(size, response, timeout);
}

// The descriptor belongs to the FdTcti (see the header): nothing to release here.
void TctiFinalize(TSS2_TCTI_CONTEXT* context) { (void)context; }

TSS2_RC TctiCancel(TSS2_TCTI_CONTEXT* context) {
  (void)context;
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

TSS2_RC TctiGetPollHandles(TSS2_TCTI_CONTEXT* context, TSS2_TCTI_POLL_HANDLE* handles,
                           size_t* num_handles) {
  FdTcti::State* state = StateOf(context);
  if (state == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  if (num_handles == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
  if (handles != nullptr) {
    if (*num_handles < 1) return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    handles[0].fd = state->fd;
    handles[0].events = POLLIN;
    handles[0].revents = 0;
  }
  *num_handles = 1;
  return TSS2_RC_SUCCESS;
}

// Commands from the core run at locality 0, the only one a descriptor can offer.
TSS2_RC TctiSetLocality(TSS2_TCTI_CONTEXT* context, uint8_t locality) {
  if (StateOf(context) == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  return locality == 0 ? TSS2_RC_SUCCESS : TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

TSS2_RC TctiMakeSticky(TSS2_TCTI_CONTEXT* context, TPM2_HANDLE* handle, uint8_t sticky) {
  (void)context;
  (void)handle;
  (void)sticky;
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

std::string Errno() { return std::strerror(errno); }

Result<int> ConnectTcp(std::string_view spec, std::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == host_port.size())
    return InvalidArgument("TPM device '{}' is not tcp:HOST:PORT", spec);
  std::string host(host_port.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);  // [::1]
  const std::string_view port_text = host_port.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    return InvalidArgument("TPM device '{}': port '{}' is not 1..65535", spec, port_text);
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  struct addrinfo* addresses = nullptr;
  const std::string port_string(port_text);
  const int gai = getaddrinfo(host.c_str(), port_string.c_str(), &hints, &addresses);
  if (gai != 0)
    return IoError("TPM device '{}': cannot resolve '{}': {}", spec, host, gai_strerror(gai));
  std::string error = "no address";
  int fd = -1;
  for (struct addrinfo* address = addresses; address != nullptr; address = address->ai_next) {
    fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) {
      error = Errno();
      continue;
    }
    int rc;
    do {
      rc = connect(fd, address->ai_addr, address->ai_addrlen);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) break;
    error = Errno();
    close(fd);
    fd = -1;
  }
  freeaddrinfo(addresses);
  if (fd < 0) return IoError("cannot connect to the TPM at {}: {}", spec, error);
  // Commands and responses are small request/reply messages: no Nagle delay.
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

FdTcti::FdTcti(std::unique_ptr<State> state) : state_(std::move(state)) {}
FdTcti::FdTcti(FdTcti&& other) noexcept = default;
FdTcti& FdTcti::operator=(FdTcti&& other) noexcept = default;
FdTcti::~FdTcti() = default;

FdTcti FdTcti::Adopt(int fd, std::string description, int response_timeout_ms) {
  auto state = std::make_unique<State>();
  state->fd = fd;
  struct stat info {};
  state->socket = fstat(fd, &info) == 0 && S_ISSOCK(info.st_mode);
  state->description = std::move(description);
  state->response_timeout_ms = response_timeout_ms > 0 ? response_timeout_ms : 1;
  TSS2_TCTI_CONTEXT_COMMON_V2& common = state->blob.common;
  common.v1.magic = kMagic;
  common.v1.version = kVersion;
  common.v1.transmit = TctiTransmit;
  common.v1.receive = TctiReceive;
  common.v1.finalize = TctiFinalize;
  common.v1.cancel = TctiCancel;
  common.v1.getPollHandles = TctiGetPollHandles;
  common.v1.setLocality = TctiSetLocality;
  common.makeSticky = TctiMakeSticky;
  state->blob.state = state.get();
  return FdTcti(std::move(state));
}

TSS2_TCTI_CONTEXT* FdTcti::context() { return reinterpret_cast<TSS2_TCTI_CONTEXT*>(&state_->blob); }
const std::string& FdTcti::description() const { return state_->description; }
bool FdTcti::broken() const { return state_->broken; }
const std::string& FdTcti::last_error() const { return state_->last_error; }

Result<FdTcti> OpenTpmTransport(std::string_view spec, int response_timeout_ms) {
  constexpr std::string_view kTcp = "tcp:";
  if (spec.substr(0, kTcp.size()) == kTcp) {
    MLC_ASSIGN_OR_RETURN(int fd, ConnectTcp(spec, spec.substr(kTcp.size())));
    return FdTcti::Adopt(fd, std::string(spec), response_timeout_ms);
  }
  if (!spec.empty() && spec.front() == '/') {
    const std::string path(spec);
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return IoError("cannot open the TPM device {}: {}", path, Errno());
    return FdTcti::Adopt(fd, path, response_timeout_ms);
  }
  return InvalidArgument(
      "TPM device '{}' is neither tcp:HOST:PORT (swtpm's data channel) nor an absolute device "
      "path such as /dev/tpmrm0",
      spec);
}

}  // namespace mlcapsule::tee
