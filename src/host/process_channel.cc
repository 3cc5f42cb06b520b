// ProcessChannel: the host's end of the software TEE (see core_channel.h). Starts
// `mlcapsule-core` with posix_spawn on one end of a socketpair, waits for its hello (sent once it
// is confined), then forwards one framed request per boundary call (capsule/core_frame.h). The
// host is untrusted: nothing here can reach the core's memory, only its socket. When the core
// dies the error says how (exit status or signal; SIGSYS means seccomp stopped a system call).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "capsule/core_frame.h"
#include "host/core_channel.h"

namespace mlcapsule::host {
namespace {

static_assert(capsule::kMaxReplySealedBytes >= trusted::kMaxSealedUpdateBytes,
              "the reply limit on sealed state must accept what kOpen accepts");

constexpr const char* kCoreBinaryName = "mlcapsule-core";
constexpr int kCloseTimeoutMs = 5000;
constexpr int kDeathWaitMs = 2000;  // how long a core that closed its socket gets to exit

int64_t NowMs() {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000 + now.tv_nsec / 1000000;
}

bool IsExecutableFile(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) && access(path.c_str(), X_OK) == 0;
}

Result<std::string> FindCoreBinary(const ProcessChannelOptions& options) {
  if (!options.core_binary.empty()) {
    if (IsExecutableFile(options.core_binary)) return options.core_binary;
    return NotFound("the core binary {} (given in the options) is not an executable file",
                    options.core_binary);
  }
  std::vector<char> self(PATH_MAX + 1);
  ssize_t n = readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0)
    return NotFound("cannot find {}: /proc/self/exe is unreadable ({}); pass its path explicitly",
                    kCoreBinaryName, std::strerror(errno));
  std::string directory(self.data(), static_cast<size_t>(n));
  directory.resize(directory.rfind('/') == std::string::npos ? 0 : directory.rfind('/'));
  std::string candidate = directory + "/" + kCoreBinaryName;
  if (IsExecutableFile(candidate)) return candidate;
  return NotFound(
      "cannot find {}: looked for it beside the running executable, at {}; install it there or "
      "pass its path explicitly",
      kCoreBinaryName, candidate);
}

// The launcher's executable: a path, or a name looked up in PATH (the core gets no environment,
// so the host resolves it).
Result<std::string> FindOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (IsExecutableFile(name)) return name;
    return NotFound("the core launcher {} is not an executable file", name);
  }
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!rest.empty()) {
    const size_t colon = rest.find(':');
    std::string directory(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    if (directory.empty()) continue;
    std::string candidate = directory + "/" + name;
    if (IsExecutableFile(candidate)) return candidate;
  }
  return NotFound("the core launcher {} is not in PATH", name);
}

// "exited with status 3", "was killed by signal 31 (SIGSYS: ...)".
std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    const char* name = sigabbrev_np(signal_number);
    std::string text =
        fmt::format("was killed by signal {} (SIG{}", signal_number, name != nullptr ? name : "?");
    if (signal_number == SIGSYS) text += ": its seccomp filter stopped a forbidden system call";
    return text + ")";
  }
  return fmt::format("stopped with wait status {:#x}", status);
}

class ProcessChannel final : public CoreChannel {
 public:
  ProcessChannel(pid_t pid, int fd, bool may_poll_long)
      : pid_(pid), fd_(fd), may_poll_long_(may_poll_long) {}
  ~ProcessChannel() override;

  // Reads the core's hello: the memory backend, or why start-up failed.
  Status AwaitHello();
  Status Call(trusted::Call call, std::span<const uint8_t> input, trusted::Reply* reply) override;
  Status CallGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                    trusted::Reply* reply) override;
  std::string Describe() const override {
    return fmt::format("{} TEE (pid {}, {})", backend_, pid_, memory_backend_);
  }

 private:
  // Waits up to `timeout_ms` for the core to exit; true (and exit_ set) once it has been reaped.
  bool WaitForExit(int timeout_ms);
  // The core stopped answering: reap (or kill) it and return an error naming how it ended.
  Status CoreGone(const Status& transport_error);

  std::mutex mutex_;  // one call at a time on the socket
  const pid_t pid_;
  int fd_;
  std::string memory_backend_ = "starting";
  std::string backend_ = "software";
  bool reaped_ = false;
  std::string exit_;          // how the core ended, once reaped
  std::string gone_;          // set when the channel can no longer be used
  const bool may_poll_long_;  // the core leaves a CPU free (ProcessChannelOptions::core_threads)
  std::chrono::microseconds last_infer_{0};  // how long the last inference answer took
};

bool ProcessChannel::WaitForExit(int timeout_ms) {
  if (reaped_) return true;
  const int64_t deadline = NowMs() + timeout_ms;
  for (;;) {
    int status = 0;
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      reaped_ = true;
      exit_ = DescribeWaitStatus(status);
      return true;
    }
    if (done < 0 && errno == EINTR) continue;
    if (done < 0) {  // ECHILD: someone else reaped it (SIGCHLD ignored by the application)
      reaped_ = true;
      exit_ = "exited (its status was collected elsewhere)";
      return true;
    }
    if (NowMs() >= deadline) return false;
    struct timespec pause {
      0, 10 * 1000 * 1000
    };
    nanosleep(&pause, nullptr);
  }
}

Status ProcessChannel::CoreGone(const Status& transport_error) {
  if (!WaitForExit(kDeathWaitMs)) {
    kill(pid_, SIGKILL);
    WaitForExit(kCloseTimeoutMs);
    exit_ = "stopped answering and was killed";
  }
  gone_ = fmt::format("mlcapsule-core (pid {}) {}", pid_, exit_);
  return IoError("the trusted core is gone: {} ({})", gone_, transport_error.message());
}

Status ProcessChannel::AwaitHello() {
  capsule::CoreReply hello;
  bool closed = false;
  Status status = capsule::ReadReply(fd_, &hello, &closed);
  if (!status.ok()) return CoreGone(status).WithContext("starting the software TEE");
  if (!hello.status.ok()) {
    WaitForExit(kDeathWaitMs);
    gone_ = "start-up failed";
    return hello.status;
  }
  std::string text(hello.output.begin(), hello.output.end());
  if (!text.starts_with(capsule::kCoreHelloPrefix)) {
    gone_ = "unexpected hello";
    return FailedPrecondition("{} is not a compatible core (it greeted with '{}')", kCoreBinaryName,
                              text.substr(0, 64));
  }
  memory_backend_ = text.substr(capsule::kCoreHelloPrefix.size());
  // "<memory backend>; tee <backend>" (cores before the TEE backends sent only the first part).
  if (const size_t tee = memory_backend_.find("; tee "); tee != std::string::npos) {
    backend_ = memory_backend_.substr(tee + 6);
    memory_backend_.resize(tee);
  }
  return Status::Ok();
}

Status ProcessChannel::Call(trusted::Call call, std::span<const uint8_t> input,
                            trusted::Reply* reply) {
  const std::span<const uint8_t> pieces[1] = {input};
  return CallGather(call, pieces, reply);
}

Status ProcessChannel::CallGather(trusted::Call call,
                                  std::span<const std::span<const uint8_t>> pieces,
                                  trusted::Reply* reply) {
  std::lock_guard lock(mutex_);
  reply->output.clear();
  reply->sealed_state.clear();
  if (!gone_.empty()) return FailedPrecondition("the trusted core is not running: {}", gone_);
  Status written = capsule::WriteRequestGather(fd_, static_cast<uint32_t>(call), pieces);
  if (!written.ok()) {
    // The core may have refused the request (an over-long input) and closed: its reply, if it
    // sent one, says why. Do not wait long for one that is not coming.
    struct pollfd readable {
      fd_, POLLIN, 0
    };
    if (poll(&readable, 1, 1000) <= 0) return CoreGone(written);
  }
  capsule::CoreReply answer;
  bool closed = false;
  std::chrono::microseconds budget = capsule::kDefaultPollBudget;
  if (call == trusted::Call::kInfer && may_poll_long_)
    budget = std::clamp(last_infer_ + last_infer_ / 4, capsule::kDefaultPollBudget,
                        capsule::kMaxReplyPollBudget);
  const auto sent = std::chrono::steady_clock::now();
  Status read = capsule::ReadReply(fd_, &answer, &closed, budget);
  if (!read.ok()) return CoreGone(read);
  if (call == trusted::Call::kInfer)
    last_infer_ = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - sent);
  if (!written.ok()) {
    (void)CoreGone(written);  // it exits after a protocol error; record how
    return answer.status;
  }
  if (call == trusted::Call::kClose && answer.status.ok()) gone_ = "closed";
  reply->output = std::move(answer.output);
  reply->sealed_state = std::move(answer.sealed);
  return answer.status;
}

ProcessChannel::~ProcessChannel() {
  const int64_t deadline = NowMs() + kCloseTimeoutMs;
  if (gone_.empty() &&
      capsule::WriteRequest(fd_, static_cast<uint32_t>(trusted::Call::kClose), {}).ok()) {
    // Read the reply before closing, so the core does not fail writing it.
    struct pollfd readable {
      fd_, POLLIN, 0
    };
    if (poll(&readable, 1, kCloseTimeoutMs) > 0) {
      capsule::CoreReply answer;
      (void)capsule::ReadReply(fd_, &answer);
    }
  }
  close(fd_);
  const int64_t left = deadline - NowMs();
  if (!WaitForExit(left > 0 ? static_cast<int>(left) : 0)) {
    kill(pid_, SIGKILL);
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace

Result<std::unique_ptr<CoreChannel>> StartProcessChannel(const ProcessChannelOptions& options) {
  if (options.state_dir.empty())
    return InvalidArgument("the software TEE needs a state directory (sealing key, counter)");
  std::string binary;
  if (options.launcher.empty()) {
    MLC_ASSIGN_OR_RETURN(binary, FindCoreBinary(options));
  } else {
    MLC_ASSIGN_OR_RETURN(binary, FindOnPath(options.launcher[0]));
  }

  int sockets[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0)
    return IoError("socketpair failed: {}", std::strerror(errno));
  capsule::TuneCoreSocket(sockets[0]);

  // The child gets its end as descriptor 3 (dup2 clears close-on-exec), or as stdin and stdout
  // with --stdio; /dev/null as stdin and stdout otherwise, and the host's stderr for its warnings
  // unless quiet. Signals start at their defaults and unblocked, whatever the host's threads had.
  const bool stdio = options.stdio || !options.launcher.empty();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdio) {
    posix_spawn_file_actions_adddup2(&actions, sockets[1], 0);
    posix_spawn_file_actions_adddup2(&actions, sockets[1], 1);
  } else {
    posix_spawn_file_actions_adddup2(&actions, sockets[1], 3);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  }
  if (options.quiet) posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t signals;
  sigemptyset(&signals);
  posix_spawnattr_setsigmask(&attributes, &signals);
  sigfillset(&signals);
  posix_spawnattr_setsigdefault(&attributes, &signals);
  // Its own process group: a Ctrl-C at the terminal goes to the host, which then closes the core
  // in order (sealing its state); the core must not die first. If the host dies, the core sees
  // the socket close and exits.
  posix_spawnattr_setpgroup(&attributes, 0);
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  // An empty environment: DNNL_*/OMP_*/LD_* settings of the host do not reach the core.
  std::vector<std::string> args;
  if (!options.launcher.empty()) {
    args = options.launcher;
  } else {
    args = {binary};
    if (stdio) {
      args.push_back("--stdio");
    } else {
      args.insert(args.end(), {"--fd", "3"});
    }
    args.insert(args.end(), {"--state", options.state_dir});
    args.insert(args.end(), options.platform_args.begin(), options.platform_args.end());
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid = 0;
  const int spawn_error =
      posix_spawn(&pid, binary.c_str(), &actions, &attributes, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  close(sockets[1]);
  if (spawn_error != 0) {
    close(sockets[0]);
    return IoError("cannot start {}: {}", binary, std::strerror(spawn_error));
  }

  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  auto channel = std::make_unique<ProcessChannel>(pid, sockets[0],
                                                  options.core_threads < static_cast<int>(cpus));
  MLC_RETURN_IF_ERROR(channel->AwaitHello());
  return std::unique_ptr<CoreChannel>(std::move(channel));
}

}  // namespace mlcapsule::host
