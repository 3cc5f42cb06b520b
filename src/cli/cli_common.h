// Shared helpers of the `mlcapsule` command: loading a model (.onnx compiled on the fly, or a
// compiled .plan), reading and writing tensors (.pb TensorProto or .npy), parsing shapes.
#pragma once

#include <signal.h>
#include <CLI/CLI.hpp>

#include <functional>

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "compiler/compiler.h"
#include "engine/plan.h"
#include "engine/tensor.h"

namespace mlcapsule::cli {

inline constexpr const char* kVersion = "0.1.0";
inline constexpr uint64_t kMaxTensorFileBytes = uint64_t{4} << 30;

// Exit codes (docs/cli.md): 0 success, 1 failure of the operation (a conformance failure, a model
// error), 2 usage error, 3 unsupported model or input.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnsupported = 3;

int ExitCodeFor(const Status& status);
// The exit status the chosen subcommand set (its callback cannot return one through CLI11).
void SetExitCode(int code);
int ExitCode();
// Prints "mlcapsule: error: ..." to stderr and returns the exit code for it.
int ReportError(const Status& status);

Result<std::vector<int64_t>> ParseDims(const std::string& text);

struct ListenAddress {
  std::string host;      // for bind(): "127.0.0.1", "::1"
  int port = 0;          // 0: any free port
  std::string url_host;  // for the URL: "127.0.0.1", "[::1]"
  bool loopback = false;
};
// --listen HOST:PORT or [IPV6]:PORT (an IP address or localhost; port 0 = any free port). With
// `loopback_only`, anything but 127.0.0.0/8 and ::1 is refused.
Result<ListenAddress> ParseListenAddress(const std::string& text, bool loopback_only);

// Ignores SIGPIPE and blocks SIGINT/SIGTERM in this thread and every thread started later (call
// it before any thread starts); returns the set for ServeUntilSignal.
sigset_t BlockStopSignals();

// Runs `listen` (blocking) until it returns or SIGINT/SIGTERM arrives, then calls `stop` (until
// `listen` returns); the signal is logged as the `name` component's "stopping" event. `signals`
// must be blocked in every thread already (pthread_sigmask before any thread starts), so that no
// work runs in a signal handler. Returns what `listen` returned.
bool ServeUntilSignal(const sigset_t& signals, const char* name,
                      const std::function<bool()>& listen, const std::function<void()>& stop);
bool EndsWith(const std::string& s, const std::string& suffix);

// Loads MODEL: a .plan file, or an .onnx file compiled with `options`.
Result<engine::Plan> LoadModel(const std::string& path, const compiler::CompileOptions& options,
                               compiler::CompileReport* report = nullptr);

Result<engine::Tensor> ReadTensorFile(const std::string& path);
// Prints "NAME: dtype[dims] [v0, v1, ...]" (the first ten values) to stdout.
void PrintTensorPreview(const std::string& name, const engine::Tensor& tensor);
Status WriteTensorFile(const std::string& path, const engine::Tensor& tensor,
                       const std::string& name);

// ---- the trusted core's TEE backend (docs/tee-backends.md) ---------------------------------

struct TeeArgs {
  std::string tee = "software";  // software | sgx | snp | tdx | tpm
  std::string tee_dir;           // sgx: Gramine's attestation dir; snp/tdx: configfs-tsm root
  std::string tpm;               // tpm: /dev/tpmrm0 or tcp:HOST:PORT
  std::string snp_vcek;          // snp: VCEK (DER) when the host supplies no certificates
  std::vector<std::string> tpm_ek_chain;
  std::string launcher;  // e.g. "gramine-sgx mlcapsule-core" (split on spaces)
};
// --tee, --tee-dir, --tpm, --snp-vcek, --tpm-ek-chain, --core-launcher.
void AddTeeOptions(CLI::App* cmd, TeeArgs* a);
// The core's arguments for the backend ({"--platform", "tpm", "--tpm", ...}), and the launcher
// split into words; errors name the option that does not fit the backend.
Result<std::vector<std::string>> CorePlatformArgs(const TeeArgs& a);
std::vector<std::string> CoreLauncher(const TeeArgs& a);

void AddConformanceCommand(CLI::App& app);
void AddLabCommand(CLI::App& app);
// `mlcapsule lab ...` runs mlcapsule-lab from beside this executable (returns only on failure).
int RunLabCommand(int argc, char** argv);
void AddBenchCommand(CLI::App& app);
void AddModelCommands(CLI::App& app);  // compile, infer
// keygen, pack, inspect, verify, lease {request,issue,install,status,sync}, usage, run
void AddCapsuleCommands(CLI::App& app);
void AddServeCommand(CLI::App& app);      // serve (loopback HTTP endpoint)
void AddServerCommands(CLI::App& app);    // server (license server), admin
void AddEvidenceCommand(CLI::App& app);   // evidence verify
void AddTeeCommand(CLI::App& app);        // tee gramine-manifest
void AddWatermarkCommand(CLI::App& app);  // watermark verify
void AddDemoCommand(CLI::App& app);       // demo (docs/demo.md)

}  // namespace mlcapsule::cli
