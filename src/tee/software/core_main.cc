// mlcapsule-core: the trusted process of the software TEE. The host (host/process_channel.cc)
// starts it on one end of a socketpair; it hardens itself, moves its secrets into memfd_secret
// memory, opens its platform files, confines itself with seccomp, and then serves boundary calls
// (trusted/boundary.h) framed as in capsule/core_frame.h until the host sends kClose or closes
// the socket. It trusts nothing the host sends. docs/core-protocol.md describes the whole thing.
//
// Exit status: 0 after kClose or end of stream, 2 usage, 3 start-up failed, 4 protocol error,
// 5 the reply could not be written (the host went away).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "capsule/core_frame.h"
#include "tee/software/sandbox.h"
#include "tee/software/secret_memory.h"
#include "tee/software/software_platform.h"
#include "trusted/boundary.h"

// Sanitizer builds only: LeakSanitizer's exit-time check stops the process with a helper that is
// not a thread, which seccomp kills; the leak check runs in the unit tests instead.
extern "C" const char* __lsan_default_options() { return "detect_leaks=0"; }

namespace mlcapsule {
namespace {

constexpr int kExitUsage = 2, kExitStartup = 3, kExitProtocol = 4, kExitWrite = 5;

constexpr const char* kUsage =
    "usage: mlcapsule-core --fd N --state DIR\n"
    "\n"
    "The trusted core of MLCapsule's software TEE. It is started by the mlcapsule host (for\n"
    "example `mlcapsule run`) on one end of a socketpair and is not meant to be run by hand.\n"
    "\n"
    "  --fd N       the connected socket to serve (N >= 3)\n"
    "  --state DIR  the platform's files: core-seal.key (sealing key) and core-counter\n"
    "               (monotonic counter); created with mode 0700/0600 if missing\n"
    "\n"
    "See docs/core-protocol.md.\n";

int Usage(const char* problem) {
  std::fprintf(stderr, "mlcapsule-core: %s\n%s", problem, kUsage);
  return kExitUsage;
}

struct Arguments {
  int fd = -1;
  std::string state_dir;
};

// Accepts exactly --fd N and --state DIR, once each, in either order.
bool ParseArguments(int argc, char** argv, Arguments* args, const char** problem) {
  bool have_fd = false, have_state = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (i + 1 >= argc) {
      *problem = "every option needs a value";
      return false;
    }
    std::string_view value = argv[++i];
    if (flag == "--fd" && !have_fd) {
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args->fd);
      if (error != std::errc() || end != value.data() + value.size() || args->fd < 3) {
        *problem = "--fd must be a descriptor number of 3 or more";
        return false;
      }
      have_fd = true;
    } else if (flag == "--state" && !have_state && !value.empty()) {
      args->state_dir = std::string(value);
      have_state = true;
    } else {
      *problem = "unexpected or repeated argument";
      return false;
    }
  }
  if (!have_fd || !have_state) {
    *problem = "both --fd and --state are required";
    return false;
  }
  return true;
}

// Everything that needs files, privileges or new mappings of code happens here, before seccomp.
Status StartUp(const Arguments& args, std::unique_ptr<tee::SoftwarePlatform>* platform,
               std::string* memory_backend) {
  struct stat info {};
  if (fstat(args.fd, &info) != 0 || !S_ISSOCK(info.st_mode))
    return InvalidArgument("--fd {} is not an open socket", args.fd);
  // Only stdio and the socket stay open: descriptors the host leaked to us are not ours to use.
  if (args.fd > 3) close_range(3, static_cast<unsigned>(args.fd) - 1, 0);
  close_range(static_cast<unsigned>(args.fd) + 1, ~0U, 0);
  signal(SIGPIPE, SIG_IGN);  // writes use MSG_NOSIGNAL too; this covers anything else

  MLC_RETURN_IF_ERROR(tee::HardenProcess());
  MLC_RETURN_IF_ERROR(tee::InstallSecretMemoryProvider(memory_backend));
  MLC_ASSIGN_OR_RETURN(*platform, tee::SoftwarePlatform::Create(args.state_dir));
  capsule::TuneCoreSocket(args.fd);
  // oneDNN's first kernel opens a library; OpenMP threads could be made later (clone with
  // CLONE_THREAD stays allowed), but the warm-up starts them too.
  MLC_RETURN_IF_ERROR(tee::WarmUpRuntimes());
  return tee::EnterSeccomp();
}

int Serve(int fd, trusted::Platform* platform) {
  std::array<uint64_t, trusted::kMaxCall + 1> limits{};
  for (uint32_t call = 1; call <= trusted::kMaxCall; ++call)
    limits[call] = trusted::MaxInputBytes(static_cast<trusted::Call>(call));
  trusted::Boundary boundary(platform);
  // Kept across requests so that same-sized queries reuse one buffer; a capsule-sized one
  // (kOpen) is released after use.
  constexpr size_t kKeepRequestBytes = size_t{32} << 20;
  capsule::CoreRequest request;
  for (;;) {
    bool end_of_stream = false;
    Status status = capsule::ReadRequest(fd, limits, &request, &end_of_stream);
    if (end_of_stream) return 0;  // the host closed the socket; the boundary wipes on the way out
    if (!status.ok()) {
      std::fprintf(stderr, "mlcapsule-core: protocol error, exiting: %s\n",
                   status.ToString().c_str());
      (void)capsule::WriteReply(fd, status.WithContext("mlcapsule-core protocol error"), {}, {});
      return kExitProtocol;
    }
    const auto call = static_cast<trusted::Call>(request.call);
    trusted::Reply reply;
    status = boundary.Call(call, request.payload.span(), &reply);
    if (request.payload.capacity() > kKeepRequestBytes) request.payload = capsule::AlignedBytes();
    Status written = capsule::WriteReply(fd, status, reply.output, reply.sealed_state);
    if (!written.ok()) {
      std::fprintf(stderr, "mlcapsule-core: cannot send the reply, exiting: %s\n",
                   written.ToString().c_str());
      return kExitWrite;
    }
    if (call == trusted::Call::kClose) return 0;
  }
}

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  Arguments args;
  const char* problem = "";
  if (!ParseArguments(argc, argv, &args, &problem)) return Usage(problem);

  std::unique_ptr<tee::SoftwarePlatform> platform;
  std::string memory_backend;
  Status status = StartUp(args, &platform, &memory_backend);
  if (!status.ok()) {
    std::fprintf(stderr, "mlcapsule-core: start-up failed: %s\n", status.ToString().c_str());
    // The host waits for the hello reply: give it the reason instead.
    (void)capsule::WriteReply(args.fd, status.WithContext("mlcapsule-core start-up failed"), {},
                              {});
    return kExitStartup;
  }
  const std::string hello = std::string(capsule::kCoreHelloPrefix) + memory_backend;
  if (!capsule::WriteReply(args.fd, Status::Ok(), AsBytes(hello), {}).ok()) return kExitWrite;
  return Serve(args.fd, platform.get());
}

}  // namespace
}  // namespace mlcapsule

int main(int argc, char** argv) { return mlcapsule::Main(argc, argv); }
