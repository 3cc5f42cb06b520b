// mlcapsule-core: the trusted process. The host (host/process_channel.cc) starts it on one end of
// a socketpair (or, under Gramine, on its stdin/stdout); it hardens itself, moves its secrets into
// memfd_secret memory, creates its TEE backend (tee/platform_factory.h: software, sgx, snp, tdx,
// tpm), confines itself with seccomp, and then serves boundary calls (trusted/boundary.h) framed
// as in capsule/core_frame.h until the host sends kClose or closes the channel. It trusts nothing
// the host sends. docs/core-protocol.md and docs/tee-backends.md describe the whole thing.
//
// Exit status: 0 after kClose or end of stream, 2 usage, 3 start-up failed, 4 protocol error,
// 5 the reply could not be written (the host went away).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "capsule/core_frame.h"
#include "tee/platform_factory.h"
#include "tee/software/sandbox.h"
#include "tee/software/secret_memory.h"
#include "trusted/boundary.h"
#if MLCAPSULE_HAVE_CVM
#include "tee/cvm/attester.h"
#endif

// Sanitizer builds only: LeakSanitizer's exit-time check stops the process with a helper that is
// not a thread, which seccomp kills; the leak check runs in the unit tests instead.
extern "C" const char* __lsan_default_options() { return "detect_leaks=0"; }

namespace mlcapsule {
namespace {

constexpr int kExitUsage = 2, kExitStartup = 3, kExitProtocol = 4, kExitWrite = 5;

constexpr const char* kUsage =
    "usage: mlcapsule-core (--fd N | --stdio) --state DIR [--platform BACKEND] [backend options]\n"
    "\n"
    "The trusted core of MLCapsule. It is started by the mlcapsule host (for example\n"
    "`mlcapsule run --tee tpm ...`) and is not meant to be run by hand.\n"
    "\n"
    "  --fd N                 the connected socket to serve (N >= 3)\n"
    "  --stdio                serve on stdin/stdout instead (Gramine gives the enclave fds 0-2)\n"
    "  --state DIR            the backend's files (sealed keys, counter, TPM objects); created\n"
    "                         with mode 0700 if missing\n"
    "  --platform BACKEND     software (default), sgx, snp, tdx or tpm\n"
    "  --attestation-dir DIR  sgx: Gramine's attestation files (default /dev/attestation)\n"
    "  --tsm-root DIR         snp, tdx: configfs-tsm reports (default\n"
    "                         /sys/kernel/config/tsm/report)\n"
    "  --tsm-entry NAME       snp, tdx: use this existing entry of a prepared (non-configfs)\n"
    "                         --tsm-root instead of creating one (tests; refused on configfs)\n"
    "  --sev-guest PATH       snp: the legacy SEV guest device (default /dev/sev-guest)\n"
    "  --snp-vcek FILE        snp: the VCEK certificate (DER) when the host supplies none\n"
    "  --snp-seal-key-file    snp: sealing key from STATE/core-seal.key instead of the\n"
    "                         firmware's derived key (weaker: trusts the guest's disk)\n"
    "  --tpm SPEC             tpm: /dev/tpmrm0 (default) or tcp:HOST:PORT (swtpm)\n"
    "  --tpm-ek-chain FILE    tpm: an EK intermediate certificate to ship (repeatable)\n"
    "  --tpm-counter-index N  tpm: the first NV index the counter may take (default\n"
    "                         0x01500a00; each state directory takes the next free of 16)\n"
    "\n"
    "See docs/core-protocol.md and docs/tee-backends.md.\n";

int Usage(const std::string& problem) {
  std::fprintf(stderr, "mlcapsule-core: %s\n%s", problem.c_str(), kUsage);
  return kExitUsage;
}

struct Arguments {
  int fd = -1;
  bool stdio = false;
  tee::PlatformOptions platform;
};

// Every option once (--tpm-ek-chain repeatable); --fd or --stdio, and --state, are required.
bool ParseArguments(int argc, char** argv, Arguments* args, std::string* problem) {
  bool have_fd = false, have_state = false;
  std::vector<std::string_view> seen;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--stdio" || flag == "--snp-seal-key-file") {
      if (std::find(seen.begin(), seen.end(), flag) != seen.end()) {
        *problem = fmt::format("{} is given twice", flag);
        return false;
      }
      seen.emplace_back(flag);
      if (flag == "--stdio") {
        args->stdio = true;
      } else {
        args->platform.seal_key_file = true;
      }
      continue;
    }
    if (i + 1 >= argc) {
      *problem = fmt::format("{} needs a value", flag);
      return false;
    }
    std::string value = argv[++i];
    if (flag != "--tpm-ek-chain") {
      if (std::find(seen.begin(), seen.end(), flag) != seen.end()) {
        *problem = fmt::format("{} is given twice", flag);
        return false;
      }
      seen.emplace_back(flag);
    }
    if (value.empty()) {
      *problem = fmt::format("{} needs a non-empty value", flag);
      return false;
    }
    if (flag == "--fd") {
      auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args->fd);
      if (error != std::errc() || end != value.data() + value.size() || args->fd < 3) {
        *problem = "--fd must be a descriptor number of 3 or more";
        return false;
      }
      have_fd = true;
    } else if (flag == "--state") {
      args->platform.state_dir = value;
      have_state = true;
    } else if (flag == "--platform") {
      args->platform.backend = value;
    } else if (flag == "--attestation-dir") {
      args->platform.attestation_dir = value;
    } else if (flag == "--tsm-root") {
      args->platform.tsm_root = value;
    } else if (flag == "--tsm-entry") {
      args->platform.tsm_entry = value;
    } else if (flag == "--sev-guest") {
      args->platform.sev_guest = value;
    } else if (flag == "--snp-vcek") {
      args->platform.snp_vcek = value;
    } else if (flag == "--tpm") {
      args->platform.tpm = value;
    } else if (flag == "--tpm-ek-chain") {
      args->platform.tpm_ek_chain.push_back(value);
    } else if (flag == "--tpm-counter-index") {
      const bool hex = value.starts_with("0x") || value.starts_with("0X");
      const char* begin = value.data() + (hex ? 2 : 0);
      auto [end, error] = std::from_chars(begin, value.data() + value.size(),
                                          args->platform.tpm_counter_index, hex ? 16 : 10);
      if (error != std::errc() || end != value.data() + value.size() ||
          (args->platform.tpm_counter_index >> 24) != 0x01) {
        *problem = "--tpm-counter-index must be an NV index handle, 0x01000000..0x01ffffff";
        return false;
      }
    } else {
      *problem = fmt::format("unknown option {}", flag);
      return false;
    }
  }
  if (have_fd == args->stdio) {
    *problem = "exactly one of --fd and --stdio is required";
    return false;
  }
  if (!have_state) {
    *problem = "--state is required";
    return false;
  }
  Result<tee::Confinement> confinement = tee::ConfinementFor(args->platform.backend);
  if (!confinement.ok()) {
    *problem = confinement.status().message();
    return false;
  }
  return true;
}

// Everything that needs files, privileges, connections or new mappings of code happens here,
// before seccomp.
Status StartUp(const Arguments& args, int channel_fd, std::unique_ptr<trusted::Platform>* platform,
               std::string* memory_backend) {
  MLC_ASSIGN_OR_RETURN(tee::Confinement confinement, tee::ConfinementFor(args.platform.backend));
  if (!args.stdio) {
    struct stat info {};
    if (fstat(channel_fd, &info) != 0 || !S_ISSOCK(info.st_mode))
      return InvalidArgument("--fd {} is not an open socket", channel_fd);
  }
  // Only stdio and the channel stay open: descriptors the host leaked to us are not ours to use.
  // (Gramine implements no close_range; there the enclave has only fds 0-2 anyway.)
  const int keep = args.stdio ? 2 : channel_fd;
  if (keep > 3) (void)close_range(3, static_cast<unsigned>(keep) - 1, 0);
  (void)close_range(static_cast<unsigned>(keep) + 1, ~0U, 0);
  signal(SIGPIPE, SIG_IGN);  // writes use MSG_NOSIGNAL too; this covers anything else

  if (confinement.harden_process) MLC_RETURN_IF_ERROR(tee::HardenProcess());
  MLC_RETURN_IF_ERROR(tee::InstallSecretMemoryProvider(memory_backend));
  MLC_ASSIGN_OR_RETURN(*platform, tee::CreatePlatform(args.platform));
  if (!args.stdio) capsule::TuneCoreSocket(channel_fd);
  // oneDNN's first kernel opens a library; OpenMP threads could be made later (clone with
  // CLONE_THREAD stays allowed), but the warm-up starts them too.
  MLC_RETURN_IF_ERROR(tee::WarmUpRuntimes());
  if (!confinement.seccomp) return Status::Ok();
  return tee::EnterSeccomp();
}

int Serve(int in_fd, int out_fd, trusted::Platform* platform) {
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
    Status status = capsule::ReadRequest(in_fd, limits, &request, &end_of_stream);
    if (end_of_stream) return 0;  // the host closed the socket; the boundary wipes on the way out
    if (!status.ok()) {
      std::fprintf(stderr, "mlcapsule-core: protocol error, exiting: %s\n",
                   status.ToString().c_str());
      (void)capsule::WriteReply(out_fd, status.WithContext("mlcapsule-core protocol error"), {},
                                {});
      return kExitProtocol;
    }
    const auto call = static_cast<trusted::Call>(request.call);
    trusted::Reply reply;
    status = boundary.Call(call, request.payload.span(), &reply);
    if (request.payload.capacity() > kKeepRequestBytes) request.payload = capsule::AlignedBytes();
    Status written = capsule::WriteReply(out_fd, status, reply.output, reply.sealed_state);
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
      std::printf("\nBackends in this build: %s\n", tee::BuiltBackends().c_str());
      return 0;
    }
  }
#if MLCAPSULE_HAVE_CVM
  // The attester process of the snp/tdx backends (tee/cvm/attester.h), spawned by a core.
  if (tee::cvm::IsAttesterInvocation(argc, argv)) return tee::cvm::AttesterMain(argc, argv);
#endif
  Arguments args;
  std::string problem;
  if (!ParseArguments(argc, argv, &args, &problem)) return Usage(problem);
  const int in_fd = args.stdio ? 0 : args.fd;
  const int out_fd = args.stdio ? 1 : args.fd;

  std::unique_ptr<trusted::Platform> platform;
  std::string memory_backend;
  Status status = StartUp(args, in_fd, &platform, &memory_backend);
  if (!status.ok()) {
    std::fprintf(stderr, "mlcapsule-core: start-up failed: %s\n", status.ToString().c_str());
    // The host waits for the hello reply: give it the reason instead.
    (void)capsule::WriteReply(out_fd, status.WithContext("mlcapsule-core start-up failed"), {}, {});
    return kExitStartup;
  }
  const std::string hello =
      std::string(capsule::kCoreHelloPrefix) + memory_backend + "; tee " + args.platform.backend;
  if (!capsule::WriteReply(out_fd, Status::Ok(), AsBytes(hello), {}).ok()) return kExitWrite;
  return Serve(in_fd, out_fd, platform.get());
}

}  // namespace
}  // namespace mlcapsule

int main(int argc, char** argv) { return mlcapsule::Main(argc, argv); }
