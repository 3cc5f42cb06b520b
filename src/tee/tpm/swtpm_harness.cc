// swtpm fixture, swtpm processes and the fault-injecting TCTI (swtpm_harness.h). Test support:
// it starts programs and writes temporary files; nothing here is linked into the core.
#include "tee/tpm/swtpm_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

extern char** environ;

namespace mlcapsule::tee::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kLaunchAttempts = 5;
constexpr int kConnectWaitMs = 3000;
constexpr int kStopWaitMs = 2000;

std::string Errno() { return std::strerror(errno); }

void SleepMs(int ms) {
  struct timespec delay {};
  delay.tv_sec = ms / 1000;
  delay.tv_nsec = static_cast<long>(ms % 1000) * 1000000;
  while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
  }
}

int64_t MonotonicMs() {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1000000;
}

// The executable `name` in $PATH, or "".
std::string FindProgram(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return IoError("cannot write {}", path);
  return Status::Ok();
}

std::string Tail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

Result<std::string> MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr)
    return IoError("cannot create a temporary directory {}: {}", pattern, Errno());
  return std::string(buffer.data());
}

// posix_spawnp with stdin from /dev/null and stdout/stderr appended to `output`.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& output) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return IoError("cannot start {}: {}", argv[0], std::strerror(rc));
  return pid;
}

// Waits for `pid`; its exit status, or -1 when it was killed by a signal.
int WaitExit(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A port P such that P and P+1 could be bound on 127.0.0.1 a moment ago.
Result<int> PickPortPair() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int first = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (first < 0) return IoError("socket: {}", Errno());
    struct sockaddr_in address {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    if (bind(first, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(first, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      close(first);
      return IoError("cannot bind a port on 127.0.0.1: {}", Errno());
    }
    const int port = ntohs(address.sin_port);
    if (port >= 65535) {
      close(first);
      continue;
    }
    int second = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    address.sin_port = htons(static_cast<uint16_t>(port + 1));
    const bool ok =
        second >= 0 && bind(second, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (second >= 0) close(second);
    close(first);
    if (ok) return port;
  }
  return IoError("found no free port pair on 127.0.0.1");
}

bool CanConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in address {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

std::mutex g_fixture_mutex;
std::unique_ptr<SwtpmFixture> g_fixture;
Status g_fixture_status;
bool g_fixture_tried = false;

}  // namespace

Result<const SwtpmFixture*> SwtpmFixture::Shared() {
  std::lock_guard<std::mutex> lock(g_fixture_mutex);
  if (!g_fixture_tried) {
    g_fixture_tried = true;
    Result<std::unique_ptr<SwtpmFixture>> fixture = Provision();
    if (fixture.ok()) {
      g_fixture = std::move(fixture).value();
      // Removes the directory at exit (the static destructor).
    } else {
      g_fixture_status = fixture.status();
    }
  }
  if (!g_fixture) return g_fixture_status;
  return static_cast<const SwtpmFixture*>(g_fixture.get());
}

SwtpmFixture::~SwtpmFixture() {
  std::error_code error;
  if (!dir_.empty()) fs::remove_all(dir_, error);
}

Result<std::unique_ptr<SwtpmFixture>> SwtpmFixture::Provision() {
  for (const char* program : {"swtpm", "swtpm_setup", "swtpm_localca", "certtool"}) {
    if (FindProgram(program).empty())
      return NotFound(
          "{} is not installed: the TPM tests need swtpm (apt-get install swtpm swtpm-tools)",
          program);
  }
  std::unique_ptr<SwtpmFixture> fixture(new SwtpmFixture());
  MLC_ASSIGN_OR_RETURN(fixture->dir_, MakeTempDir("mlc-swtpm-fixture-"));
  const std::string& dir = fixture->dir_;
  for (const char* sub : {"ca", "conf", "state", "ek"}) {
    if (mkdir((dir + "/" + sub).c_str(), 0700) != 0)
      return IoError("cannot create {}/{}: {}", dir, sub, Errno());
  }
  const std::string ca = dir + "/ca";
  const std::string conf = dir + "/conf";
  MLC_RETURN_IF_ERROR(
      WriteTextFile(conf + "/swtpm-localca.conf", fmt::format("statedir = {0}\n"
                                                              "signingkey = {0}/signkey.pem\n"
                                                              "issuercert = {0}/issuercert.pem\n"
                                                              "certserial = {0}/certserial\n",
                                                              ca)));
  MLC_RETURN_IF_ERROR(WriteTextFile(conf + "/swtpm-localca.options",
                                    "--platform-manufacturer MLCapsuleTest\n"
                                    "--platform-version 2.1\n"
                                    "--platform-model swtpm\n"));
  MLC_RETURN_IF_ERROR(
      WriteTextFile(conf + "/swtpm_setup.conf",
                    fmt::format("create_certs_tool = {}\n"
                                "create_certs_tool_config = {}/swtpm-localca.conf\n"
                                "create_certs_tool_options = {}/swtpm-localca.options\n"
                                "active_pcr_banks = sha256\n",
                                FindProgram("swtpm_localca"), conf, conf)));
  fixture->state_dir_ = dir + "/state";
  const std::string log = dir + "/setup.log";
  MLC_ASSIGN_OR_RETURN(pid_t pid, Spawn({"swtpm_setup", "--tpm2", "--tpmstate", fixture->state_dir_,
                                         "--create-ek-cert", "--create-platform-cert", "--config",
                                         conf + "/swtpm_setup.conf", "--write-ek-cert-files",
                                         dir + "/ek", "--logfile", log},
                                        dir + "/setup.out"));
  const int exit_code = WaitExit(pid);
  if (exit_code != 0)
    return InternalError("swtpm_setup failed (exit {}): {} {}", exit_code, Tail(log, 2000),
                         Tail(dir + "/setup.out", 1000));
  fixture->root_ca_pem_ = ca + "/swtpm-localca-rootca-cert.pem";
  fixture->intermediate_pem_ = ca + "/issuercert.pem";
  fixture->ek_cert_der_file_ = dir + "/ek/ek-rsa2048.crt";
  for (const std::string* path :
       {&fixture->root_ca_pem_, &fixture->intermediate_pem_, &fixture->ek_cert_der_file_}) {
    if (access(path->c_str(), R_OK) != 0)
      return InternalError("swtpm_setup did not produce {}: {}", *path, Tail(log, 2000));
  }
  return fixture;
}

Result<std::unique_ptr<Swtpm>> Swtpm::Start(const SwtpmFixture& fixture) {
  std::unique_ptr<Swtpm> tpm(new Swtpm());
  MLC_ASSIGN_OR_RETURN(tpm->dir_, MakeTempDir("mlc-swtpm-"));
  tpm->state_dir_ = tpm->dir_ + "/state";
  std::error_code error;
  fs::copy(fixture.state_dir(), tpm->state_dir_, fs::copy_options::recursive, error);
  if (error)
    return IoError("cannot copy the swtpm state {} to {}: {}", fixture.state_dir(), tpm->state_dir_,
                   error.message());
  fs::remove(tpm->state_dir_ + "/.lock", error);
  MLC_RETURN_IF_ERROR(tpm->Launch());
  return tpm;
}

Swtpm::~Swtpm() {
  (void)Stop();
  std::error_code error;
  if (!dir_.empty()) fs::remove_all(dir_, error);
}

Status Swtpm::Launch() {
  if (pid_ > 0) return FailedPrecondition("swtpm is already running (pid {})", pid_);
  const std::string output = dir_ + "/swtpm.out";
  std::string last_error;
  for (int attempt = 0; attempt < kLaunchAttempts; ++attempt) {
    // The previous port first (a restart keeps its address when it can).
    int port = port_;
    if (port == 0 || attempt > 0) {
      MLC_ASSIGN_OR_RETURN(port, PickPortPair());
    }
    MLC_ASSIGN_OR_RETURN(
        pid_t pid,
        Spawn({"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + state_dir_, "--server",
               fmt::format("type=tcp,port={},bindaddr=127.0.0.1", port), "--ctrl",
               fmt::format("type=tcp,port={},bindaddr=127.0.0.1", port + 1), "--flags",
               "not-need-init,startup-clear", "--log", "file=" + dir_ + "/log,level=1"},
              output));
    const int64_t deadline = MonotonicMs() + kConnectWaitMs;
    bool exited = false;
    while (MonotonicMs() < deadline) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (CanConnect(port)) {
        pid_ = pid;
        port_ = port;
        return Status::Ok();
      }
      SleepMs(5);
    }
    if (!exited) {
      kill(pid, SIGKILL);
      (void)WaitExit(pid);
      last_error = fmt::format("swtpm did not accept connections on port {} within {} ms", port,
                               kConnectWaitMs);
    } else {
      last_error = fmt::format("swtpm exited at start-up on port {}", port);
    }
  }
  return IoError("cannot start swtpm after {} attempts: {}; its output: {}", kLaunchAttempts,
                 last_error, Tail(output, 2000));
}

Status Swtpm::Stop() {
  if (pid_ <= 0) return Status::Ok();
  const pid_t pid = std::exchange(pid_, -1);
  if (kill(pid, SIGTERM) != 0 && errno != ESRCH)
    return IoError("cannot signal swtpm (pid {}): {}", pid, Errno());
  const int64_t deadline = MonotonicMs() + kStopWaitMs;
  while (MonotonicMs() < deadline) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid || (done < 0 && errno == ECHILD)) return Status::Ok();
    SleepMs(5);
  }
  kill(pid, SIGKILL);
  (void)WaitExit(pid);
  return Status::Ok();
}

void Swtpm::Kill() {
  if (pid_ <= 0) return;
  const pid_t pid = std::exchange(pid_, -1);
  kill(pid, SIGKILL);
  (void)WaitExit(pid);
}

Status Swtpm::Restart() {
  MLC_RETURN_IF_ERROR(Stop());
  return Launch();
}

std::string Swtpm::spec() const { return fmt::format("tcp:127.0.0.1:{}", port_); }

// --- FaultInjectingTcti ---

namespace {

constexpr uint64_t kFaultMagic = 0x4d4c434641554c54ULL;  // "MLCFAULT"

struct FaultBlob {
  TSS2_TCTI_CONTEXT_COMMON_V2 common;
  FaultInjectingTcti::State* state;
};

}  // namespace

struct FaultInjectingTcti::State {
  FaultBlob blob{};
  TSS2_TCTI_CONTEXT* inner = nullptr;
  struct Armed {
    uint32_t command_code;
    Fault fault;
    int count;
  };
  std::deque<Armed> armed;
  int injected = 0;
  // The fault of the command in flight, if any.
  bool active = false;
  Fault current = Fault::kRetry;

  TSS2_RC Transmit(size_t size, const uint8_t* command) {
    active = false;
    if (command != nullptr && size >= 10) {
      const uint32_t code = (uint32_t{command[6]} << 24) | (uint32_t{command[7]} << 16) |
                            (uint32_t{command[8]} << 8) | uint32_t{command[9]};
      for (auto it = armed.begin(); it != armed.end(); ++it) {
        if (it->command_code != 0 && it->command_code != code) continue;
        active = true;
        current = it->fault;
        if (--it->count <= 0) armed.erase(it);
        ++injected;
        break;
      }
    }
    if (active && current != Fault::kDropResponse) return TSS2_RC_SUCCESS;  // never sent
    return Tss2_Tcti_Transmit(inner, size, command);
  }

  TSS2_RC Receive(size_t* size, uint8_t* response, int32_t timeout) {
    if (!active) return Tss2_Tcti_Receive(inner, size, response, timeout);
    if (current == Fault::kDropResponse) {
      // Let the TPM finish: read its whole response, then lose it.
      uint8_t buffer[4096];
      size_t length = sizeof(buffer);
      const TSS2_RC rc = Tss2_Tcti_Receive(inner, &length, buffer, timeout);
      if (rc == TSS2_TCTI_RC_TRY_AGAIN) return rc;
      active = false;
      return TSS2_TCTI_RC_IO_ERROR;
    }
    const uint32_t code = current == Fault::kNvRate ? TPM2_RC_NV_RATE : TPM2_RC_RETRY;
    const uint8_t header[10] = {0x80,
                                0x01,
                                0,
                                0,
                                0,
                                10,
                                static_cast<uint8_t>(code >> 24),
                                static_cast<uint8_t>(code >> 16),
                                static_cast<uint8_t>(code >> 8),
                                static_cast<uint8_t>(code)};
    if (size == nullptr) return TSS2_TCTI_RC_BAD_REFERENCE;
    if (response == nullptr) {
      *size = sizeof(header);
      return TSS2_RC_SUCCESS;
    }
    if (*size < sizeof(header)) {
      *size = sizeof(header);
      return TSS2_TCTI_RC_INSUFFICIENT_BUFFER;
    }
    std::memcpy(response, header, sizeof(header));
    *size = sizeof(header);
    active = false;
    return TSS2_RC_SUCCESS;
  }
};

namespace {

FaultInjectingTcti::State* FaultStateOf(TSS2_TCTI_CONTEXT* context) {
  if (context == nullptr) return nullptr;
  auto* blob = reinterpret_cast<FaultBlob*>(context);
  return blob->common.v1.magic == kFaultMagic ? blob->state : nullptr;
}

TSS2_RC FaultTransmit(TSS2_TCTI_CONTEXT* context, size_t size, const uint8_t* command) {
  FaultInjectingTcti::State* state = FaultStateOf(context);
  return state == nullptr ? TSS2_TCTI_RC_BAD_CONTEXT : state->Transmit(size, command);
}

TSS2_RC FaultReceive(TSS2_TCTI_CONTEXT* context, size_t* size, uint8_t* response, int32_t timeout) {
  FaultInjectingTcti::State* state = FaultStateOf(context);
  return state == nullptr ? TSS2_TCTI_RC_BAD_CONTEXT : state->Receive(size, response, timeout);
}

void FaultFinalize(TSS2_TCTI_CONTEXT* context) { (void)context; }

TSS2_RC FaultCancel(TSS2_TCTI_CONTEXT* context) {
  (void)context;
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

TSS2_RC FaultGetPollHandles(TSS2_TCTI_CONTEXT* context, TSS2_TCTI_POLL_HANDLE* handles,
                            size_t* num_handles) {
  FaultInjectingTcti::State* state = FaultStateOf(context);
  if (state == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  return Tss2_Tcti_GetPollHandles(state->inner, handles, num_handles);
}

TSS2_RC FaultSetLocality(TSS2_TCTI_CONTEXT* context, uint8_t locality) {
  FaultInjectingTcti::State* state = FaultStateOf(context);
  if (state == nullptr) return TSS2_TCTI_RC_BAD_CONTEXT;
  return Tss2_Tcti_SetLocality(state->inner, locality);
}

TSS2_RC FaultMakeSticky(TSS2_TCTI_CONTEXT* context, TPM2_HANDLE* handle, uint8_t sticky) {
  (void)context;
  (void)handle;
  (void)sticky;
  return TSS2_TCTI_RC_NOT_IMPLEMENTED;
}

}  // namespace

FaultInjectingTcti::FaultInjectingTcti(TSS2_TCTI_CONTEXT* inner)
    : state_(std::make_unique<State>()) {
  state_->inner = inner;
  TSS2_TCTI_CONTEXT_COMMON_V2& common = state_->blob.common;
  common.v1.magic = kFaultMagic;
  common.v1.version = 2;
  common.v1.transmit = FaultTransmit;
  common.v1.receive = FaultReceive;
  common.v1.finalize = FaultFinalize;
  common.v1.cancel = FaultCancel;
  common.v1.getPollHandles = FaultGetPollHandles;
  common.v1.setLocality = FaultSetLocality;
  common.makeSticky = FaultMakeSticky;
  state_->blob.state = state_.get();
}

FaultInjectingTcti::~FaultInjectingTcti() = default;

TSS2_TCTI_CONTEXT* FaultInjectingTcti::context() {
  return reinterpret_cast<TSS2_TCTI_CONTEXT*>(&state_->blob);
}

void FaultInjectingTcti::Inject(uint32_t command_code, Fault fault, int count) {
  state_->armed.push_back({command_code, fault, count});
}

int FaultInjectingTcti::injected() const { return state_->injected; }

}  // namespace mlcapsule::tee::testing
