// The in-process reporter, the attester helper and its client (see attester.h). The client reads
// nothing it has not bounded first and treats every failure of the helper as Unavailable.
#include "tee/cvm/attester.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/bytes.h"

extern char** environ;

namespace mlcapsule::tee::cvm {
namespace {

constexpr int kExitOk = 0, kExitUsage = 2, kExitProtocol = 4, kExitWrite = 5;
// Status codes a reply may carry (0 is ok).
constexpr uint32_t kLastStatusCode = static_cast<uint32_t>(StatusCode::kAborted);
constexpr std::chrono::milliseconds kReapWait{2000};

std::string Errno(int error) { return std::strerror(error); }

class InProcessReporter final : public TsmReporter {
 public:
  explicit InProcessReporter(ReporterOptions options) : options_(std::move(options)) {}

  Result<TsmBlobs> Request(const capsule::ReportData& report_data) override {
    const bool snp = options_.kind == CvmKind::kSnp;
    Result<TsmBlobs> blobs =
        RequestTsmReport(options_.tsm, snp ? kProviderSevGuest : kProviderTdxGuest, report_data,
                         snp ? std::optional<uint32_t>(options_.vmpl) : std::nullopt);
    if (blobs.ok() || !snp || !IsNoTsmProvider(blobs.status())) return blobs;
    // No configfs-tsm (a kernel before 6.7, or configfs not mounted): the legacy ioctl gives the
    // report without certificates, and the platform takes the VCEK from its file.
    Result<std::unique_ptr<SevGuestDevice>> device =
        SevGuestDevice::Open(options_.sev_guest_device);
    if (!device.ok())
      return Unavailable("{}; and the legacy fallback failed: {}", blobs.status().message(),
                         device.status().message());
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> report,
                         (*device)->GetReport(report_data, options_.vmpl));
    return TsmBlobs{std::move(report), {}};
  }

 private:
  ReporterOptions options_;
};

Status SendAll(int fd, std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK)
        return IoError("the peer took no data before the send timeout");
      return IoError("send failed: {}", Errno(error));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

enum class ReadEnd { kNone, kCleanEnd, kTruncated, kTimeout };

// read(2) of exactly `size` bytes; on failure *end says how the stream failed.
Status ReadAll(int fd, uint8_t* data, size_t size, ReadEnd* end) {
  *end = ReadEnd::kNone;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = read(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      if (error == EAGAIN || error == EWOULDBLOCK) {
        *end = ReadEnd::kTimeout;
        return IoError("timed out after {} of {} bytes", done, size);
      }
      return IoError("read failed: {}", Errno(error));
    }
    if (n == 0) {
      *end = done == 0 ? ReadEnd::kCleanEnd : ReadEnd::kTruncated;
      return DataLoss("the stream ended after {} of {} bytes", done, size);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::vector<uint8_t> EncodeReply(const Status& status, std::span<const uint8_t> first,
                                 std::span<const uint8_t> second) {
  ByteWriter writer;
  writer.Pod<uint32_t>(static_cast<uint32_t>(status.code()));
  if (status.ok()) {
    writer.Blob(first);
    writer.Blob(second);
  } else {
    std::string_view message = status.message();
    if (message.size() > kMaxAttesterMessageBytes)
      message = message.substr(0, kMaxAttesterMessageBytes);
    writer.Str(message);
    writer.Blob({});
  }
  const auto bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

bool ParseKind(std::string_view text, CvmKind* kind) {
  if (text == "snp") {
    *kind = CvmKind::kSnp;
    return true;
  }
  if (text == "tdx") {
    *kind = CvmKind::kTdx;
    return true;
  }
  return false;
}

template <typename T>
bool ParseNumber(std::string_view text, T* value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

}  // namespace

const char* CvmKindName(CvmKind kind) { return kind == CvmKind::kTdx ? "tdx" : "snp"; }

std::unique_ptr<TsmReporter> MakeInProcessReporter(ReporterOptions options) {
  return std::make_unique<InProcessReporter>(std::move(options));
}

// --- client ---

AttesterClient::AttesterClient(int fd, pid_t pid, CvmKind kind, std::chrono::seconds timeout)
    : fd_(fd), pid_(pid), kind_(kind), timeout_(timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count());
  // Best effort: without the timeouts a hung helper blocks the caller, which is all it loses.
  (void)setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

AttesterClient::~AttesterClient() {
  if (fd_ >= 0) close(fd_);  // the helper sees the end of its stream and exits
  if (pid_ <= 0) return;
  // Reap the helper when this process may (under the core's seccomp filter wait4 and kill fail
  // with EPERM, and the helper is reaped when the core exits).
  const auto deadline = std::chrono::steady_clock::now() + kReapWait;
  for (;;) {
    const pid_t reaped = waitpid(pid_, nullptr, WNOHANG);
    if (reaped == pid_) return;
    if (reaped < 0 && errno != EINTR) return;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (kill(pid_, SIGKILL) != 0) return;
  while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

Status AttesterClient::Fail(std::string reason) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  gone_ = reason;
  return Unavailable("the attester (pid {}) {}; no more reports until the core restarts", pid_,
                     reason);
}

Status AttesterClient::ReadExactly(uint8_t* data, size_t size) {
  ReadEnd end = ReadEnd::kNone;
  Status status = ReadAll(fd_, data, size, &end);
  switch (end) {
    case ReadEnd::kNone:
      return status.ok() ? status : Fail(status.message());
    case ReadEnd::kCleanEnd:
      return Fail("closed its socket (it exited)");
    case ReadEnd::kTruncated:
      return Fail(fmt::format("closed its socket mid-answer (did it die?): {}", status.message()));
    case ReadEnd::kTimeout:
      return Fail(fmt::format("did not answer within {} s", timeout_.count()));
  }
  return Fail(status.message());
}

Status AttesterClient::ReadReply(Reply* reply) {
  uint8_t header[8];
  MLC_RETURN_IF_ERROR(ReadExactly(header, sizeof(header)));
  uint32_t first_length = 0;
  std::memcpy(&reply->code, header, 4);
  std::memcpy(&first_length, header + 4, 4);
  if (reply->code > kLastStatusCode)
    return Fail(fmt::format("sent an unknown status code {}", reply->code));
  const size_t first_limit = reply->code == 0 ? kMaxOutblobBytes : kMaxAttesterMessageBytes;
  if (first_length > first_limit)
    return Fail(fmt::format("sent an oversize frame: {} length {} is over the limit {}",
                            reply->code == 0 ? "outblob" : "message", first_length, first_limit));
  reply->first.resize(first_length);
  MLC_RETURN_IF_ERROR(ReadExactly(reply->first.data(), first_length));
  uint32_t second_length = 0;
  MLC_RETURN_IF_ERROR(
      ReadExactly(reinterpret_cast<uint8_t*>(&second_length), sizeof(second_length)));
  const size_t second_limit = reply->code == 0 ? kMaxAuxblobBytes : 0;
  if (second_length > second_limit)
    return Fail(fmt::format("sent an oversize frame: auxblob length {} is over the limit {}",
                            second_length, second_limit));
  reply->second.resize(second_length);
  return ReadExactly(reply->second.data(), second_length);
}

Status AttesterClient::ReadHello() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return Unavailable("the attester (pid {}) {}", pid_, gone_);
  Reply reply;
  MLC_RETURN_IF_ERROR(ReadReply(&reply));
  const std::string expected = std::string(kAttesterHelloPrefix) + CvmKindName(kind_);
  const std::string_view got(reinterpret_cast<const char*>(reply.first.data()), reply.first.size());
  if (reply.code != 0 || got != expected || !reply.second.empty())
    return Fail(fmt::format("said '{}' instead of the hello '{}'", got.substr(0, 200), expected));
  return Status::Ok();
}

Result<TsmBlobs> AttesterClient::Request(const capsule::ReportData& report_data) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0)
    return Unavailable("the attester (pid {}) {}; no more reports until the core restarts", pid_,
                       gone_);
  std::array<uint8_t, kAttesterRequestBytes> frame{};
  frame[0] = static_cast<uint8_t>(kind_);
  std::memcpy(frame.data() + 1, report_data.data(), report_data.size());
  Status sent = SendAll(fd_, frame);
  if (!sent.ok()) return Fail(fmt::format("cannot be reached: {}", sent.message()));
  Reply reply;
  MLC_RETURN_IF_ERROR(ReadReply(&reply));
  if (reply.code != 0) {
    const std::string message(reply.first.begin(), reply.first.end());
    return Status(static_cast<StatusCode>(reply.code), "attester: " + message);
  }
  return TsmBlobs{std::move(reply.first), std::move(reply.second)};
}

// --- spawning ---

std::vector<std::string> AttesterArguments(const ReporterOptions& options) {
  std::vector<std::string> args = {
      "--attester",  CvmKindName(options.kind), "--tsm-root", options.tsm.root,
      "--sev-guest", options.sev_guest_device,  "--vmpl",     std::to_string(options.vmpl)};
  if (!options.tsm.entry_name.empty()) {
    args.push_back("--tsm-entry");
    args.push_back(options.tsm.entry_name);
  }
  return args;
}

Result<std::unique_ptr<AttesterClient>> SpawnAttester(const std::string& core_binary,
                                                      std::vector<std::string> args,
                                                      std::chrono::seconds timeout) {
  CvmKind kind = CvmKind::kSnp;
  if (args.size() < 2 || args[0] != "--attester" || !ParseKind(args[1], &kind))
    return InvalidArgument("attester arguments must start with --attester snp|tdx");
  int sockets[2] = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0)
    return IoError("cannot make the attester's socketpair: {}", Errno(errno));
  int parent_fd = sockets[0], child_fd = sockets[1];
  if (child_fd == 3) {
    // dup2(3, 3) would leave close-on-exec set on glibc before 2.29: move it out of the way.
    const int moved = fcntl(child_fd, F_DUPFD_CLOEXEC, 4);
    if (moved < 0) {
      const int error = errno;
      close(parent_fd);
      close(child_fd);
      return IoError("cannot move the attester's socket: {}", Errno(error));
    }
    close(child_fd);
    child_fd = moved;
  }

  args.insert(args.begin(), core_binary);
  args.push_back("--attester-fd");
  args.push_back("3");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attributes);
  int rc = posix_spawn_file_actions_adddup2(&actions, child_fd, 3);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attributes, &empty);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attributes, &all);
  if (rc == 0)
    rc = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  if (rc == 0)
    rc = posix_spawn(&pid, core_binary.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  close(child_fd);
  if (rc != 0) {
    close(parent_fd);
    return IoError("cannot start the attester {}: {}", core_binary, Errno(rc));
  }
  auto client = std::make_unique<AttesterClient>(parent_fd, pid, kind, timeout);
  Status hello = client->ReadHello();
  if (!hello.ok()) return hello.WithContext("the attester did not start");
  return client;
}

// --- the helper ---

int RunAttester(int fd, const AttesterOptions& options) {
  std::unique_ptr<TsmReporter> reporter = MakeInProcessReporter(options);
  const std::string hello = std::string(kAttesterHelloPrefix) + CvmKindName(options.kind);
  if (!SendAll(fd, EncodeReply(Status::Ok(), AsBytes(hello), {})).ok()) return kExitWrite;
  for (;;) {
    std::array<uint8_t, kAttesterRequestBytes> frame{};
    ReadEnd end = ReadEnd::kNone;
    Status status = ReadAll(fd, frame.data(), frame.size(), &end);
    if (end == ReadEnd::kCleanEnd) return kExitOk;
    if (!status.ok()) {
      std::fprintf(stderr, "mlcapsule attester: bad request, exiting: %s\n",
                   status.ToString().c_str());
      return kExitProtocol;
    }
    capsule::ReportData report_data{};
    std::memcpy(report_data.data(), frame.data() + 1, report_data.size());
    Result<TsmBlobs> blobs =
        frame[0] == static_cast<uint8_t>(options.kind)
            ? reporter->Request(report_data)
            : Result<TsmBlobs>(InvalidArgument("the {} attester was asked for report kind {}",
                                               CvmKindName(options.kind), frame[0]));
    const std::vector<uint8_t> reply =
        blobs.ok() ? EncodeReply(Status::Ok(), blobs->outblob, blobs->auxblob)
                   : EncodeReply(blobs.status(), {}, {});
    if (!SendAll(fd, reply).ok()) return kExitWrite;
  }
}

bool IsAttesterInvocation(int argc, char** argv) {
  return argc > 1 && std::string_view(argv[1]) == "--attester";
}

int AttesterMain(int argc, char** argv) {
  AttesterOptions options;
  int fd = -1;
  bool have_kind = false, have_fd = false, have_root = false, have_entry = false,
       have_device = false, have_vmpl = false;
  auto usage = [](const std::string& problem) {
    std::fprintf(stderr,
                 "mlcapsule attester: %s\nusage: mlcapsule-core --attester snp|tdx --attester-fd N "
                 "[--tsm-root DIR] [--tsm-entry NAME] [--sev-guest PATH] [--vmpl N]\n",
                 problem.c_str());
    return kExitUsage;
  };
  for (int i = 1; i < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) return usage("every option needs a value");
    const std::string_view value = argv[i + 1];
    if (flag == "--attester" && !have_kind) {
      if (!ParseKind(value, &options.kind)) return usage("--attester must be snp or tdx");
      have_kind = true;
    } else if (flag == "--attester-fd" && !have_fd) {
      if (!ParseNumber(value, &fd) || fd < 3)
        return usage("--attester-fd must be a descriptor number of 3 or more");
      have_fd = true;
    } else if (flag == "--tsm-root" && !have_root && !value.empty()) {
      options.tsm.root = std::string(value);
      have_root = true;
    } else if (flag == "--tsm-entry" && !have_entry && !value.empty()) {
      options.tsm.entry_name = std::string(value);
      have_entry = true;
    } else if (flag == "--sev-guest" && !have_device && !value.empty()) {
      options.sev_guest_device = std::string(value);
      have_device = true;
    } else if (flag == "--vmpl" && !have_vmpl) {
      if (!ParseNumber(value, &options.vmpl) || options.vmpl > kMaxVmpl)
        return usage("--vmpl must be 0..3");
      have_vmpl = true;
    } else {
      return usage("unexpected or repeated argument " + std::string(flag));
    }
  }
  if (!have_kind || !have_fd) return usage("--attester and --attester-fd are required");
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode))
    return usage("--attester-fd " + std::to_string(fd) + " is not an open socket");
  signal(SIGPIPE, SIG_IGN);  // replies use MSG_NOSIGNAL; this covers anything else
  return RunAttester(fd, options);
}

}  // namespace mlcapsule::tee::cvm
