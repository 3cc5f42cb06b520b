// Shared CLI helpers (see cli_common.h).
#include "cli/cli_common.h"

#include <arpa/inet.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/file_util.h"
#include "base/log.h"
#include "compiler/onnx_import.h"

namespace mlcapsule::cli {

namespace {
int g_exit_code = 0;
}  // namespace

void SetExitCode(int code) { g_exit_code = code; }
int ExitCode() { return g_exit_code; }

int ExitCodeFor(const Status& status) {
  if (status.ok()) return kExitOk;
  if (status.code() == StatusCode::kUnsupported) return kExitUnsupported;
  return kExitFailure;
}

int ReportError(const Status& status) {
  // The plain line is the CLI's contract (scripts and tests match it); with --log-format json the
  // failure is also an event, so that a JSON log holds it.
  std::fprintf(stderr, "mlcapsule: error: %s\n", status.message().c_str());
  if (log::CurrentFormat() == log::Format::kJson)
    log::Error("cli", "command.failed", status.message(), {{"exit", ExitCodeFor(status)}});
  return ExitCodeFor(status);
}

Result<ListenAddress> ParseListenAddress(const std::string& text, bool loopback_only) {
  ListenAddress address;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return InvalidArgument("--listen '{}' is not HOST:PORT or [IPV6]:PORT", text);
    address.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon)
      return InvalidArgument("--listen '{}' is not HOST:PORT or [IPV6]:PORT", text);
    address.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || port < 0 || port > 65535)
    return InvalidArgument("--listen '{}': port '{}' is not a number in 0..65535", text, port_text);
  address.port = static_cast<int>(port);
  if (address.host == "localhost") address.host = "127.0.0.1";
  in_addr v4{};
  in6_addr v6{};
  bool loopback = false;
  if (::inet_pton(AF_INET, address.host.c_str(), &v4) == 1) {
    loopback = (ntohl(v4.s_addr) >> 24) == 127;
    address.url_host = address.host;
  } else if (::inet_pton(AF_INET6, address.host.c_str(), &v6) == 1) {
    loopback = IN6_IS_ADDR_LOOPBACK(&v6);
    address.url_host = "[" + address.host + "]";
  } else {
    return InvalidArgument("--listen '{}': '{}' is not an IP address (use 127.0.0.1 or [::1])",
                           text, address.host);
  }
  address.loopback = loopback;
  if (loopback_only && !loopback)
    return PermissionDenied(
        "refusing to listen on {}: not a loopback address. `serve` has no authentication and is "
        "for apps on this machine; use 127.0.0.1:PORT or [::1]:PORT",
        text);
  return address;
}

sigset_t BlockStopSignals() {
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

bool ServeUntilSignal(const sigset_t& signals, const char* name,
                      const std::function<bool()>& listen, const std::function<void()>& stop) {
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0 || done) return;
    log::Info(name, "stopping", fmt::format("{}, stopping", strsignal(signal_number)),
              {{"signal", strsignal(signal_number)}});
    while (!done) {  // the server may not have entered its accept loop yet
      stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const bool served = listen();
  done = true;
  pthread_kill(waiter.native_handle(), SIGTERM);  // wakes it when no signal came
  waiter.join();
  return served;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Result<std::vector<int64_t>> ParseDims(const std::string& text) {
  std::vector<int64_t> dims;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < -1 || v > engine::kMaxTensorElements)
      return InvalidArgument("'{}' is not a shape like 1,3,224,224 (bad entry '{}')", text, item);
    dims.push_back(v);
    if (dims.size() > static_cast<size_t>(engine::kMaxRank))
      return InvalidArgument("shape '{}' has more than {} dims", text, engine::kMaxRank);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return dims;
}

Result<engine::Plan> LoadModel(const std::string& path, const compiler::CompileOptions& options,
                               compiler::CompileReport* report) {
  if (EndsWith(path, ".capsule"))
    return Unsupported(
        "'{}' is a capsule: its plan is encrypted; run it with `mlcapsule run` or measure it "
        "with `mlcapsule bench`",
        path);
  MLC_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, compiler::kMaxModelBytes));
  if (EndsWith(path, ".plan") || bytes.rfind("MLCPLAN", 0) == 0) {
    Result<engine::Plan> plan = engine::ParsePlan(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (!plan.ok()) return plan.status().WithContext(path);
    return plan;
  }
  Result<engine::Plan> plan = compiler::CompileOnnx(std::move(bytes), options, report);
  if (!plan.ok()) return plan.status().WithContext(path);
  return plan;
}

Result<engine::Tensor> ReadTensorFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, kMaxTensorFileBytes));
  if (EndsWith(path, ".npy")) return compiler::ParseNpy(bytes, path);
  return compiler::ParseTensorProto(bytes, path);
}

void PrintTensorPreview(const std::string& name, const engine::Tensor& t) {
  std::printf("%s: %s%s [", name.c_str(), engine::DTypeName(t.dtype),
              engine::DimsToString(t.dims).c_str());
  const int64_t n = std::min<int64_t>(t.NumElements(), 10);
  for (int64_t k = 0; k < n; ++k) {
    if (t.dtype == engine::DType::kFloat32)
      std::printf("%s%.6g", k ? ", " : "", t.Data<float>()[k]);
    else
      std::printf("%s%lld", k ? ", " : "", static_cast<long long>(t.Data<int64_t>()[k]));
  }
  std::printf("%s]\n", t.NumElements() > n ? ", ..." : "");
}

Status WriteTensorFile(const std::string& path, const engine::Tensor& tensor,
                       const std::string& name) {
  if (EndsWith(path, ".npy")) return WriteFile(path, compiler::SerializeNpy(tensor));
  return WriteFile(path, compiler::SerializeTensorProto(tensor, name));
}

void AddTeeOptions(CLI::App* cmd, TeeArgs* a) {
  cmd->add_option("--tee", a->tee,
                  "The trusted core's TEE backend: software (default; a confined process), sgx "
                  "(Gramine), snp, tdx (confidential VMs), tpm (TPM 2.0); docs/tee-backends.md")
      ->check(CLI::IsMember({"software", "sgx", "snp", "tdx", "tpm"}));
  cmd->add_option("--tee-dir", a->tee_dir,
                  "sgx: Gramine's attestation directory (default /dev/attestation); snp, tdx: "
                  "the configfs-tsm report directory (default /sys/kernel/config/tsm/report)");
  cmd->add_option("--tpm", a->tpm,
                  "tpm: the TPM, /dev/tpmrm0 (default) or tcp:HOST:PORT (swtpm's data port)");
  cmd->add_option("--snp-vcek", a->snp_vcek,
                  "snp: the VCEK certificate (DER, from AMD KDS) when the host supplies none")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tpm-ek-chain", a->tpm_ek_chain,
                  "tpm: an intermediate CA certificate of the TPM's EK, shipped with the evidence "
                  "(repeatable)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--core-launcher", a->launcher,
                  "Run the core through this command, e.g. \"gramine-sgx mlcapsule-core\" (the "
                  "Gramine manifest fixes the core's arguments; `mlcapsule tee gramine-manifest`)");
}

Result<std::vector<std::string>> CorePlatformArgs(const TeeArgs& a) {
  std::vector<std::string> args;
  if (a.tee == "software") {
    if (!a.tee_dir.empty() || !a.tpm.empty() || !a.snp_vcek.empty() || !a.tpm_ek_chain.empty())
      return InvalidArgument(
          "--tee-dir, --tpm, --snp-vcek and --tpm-ek-chain need a hardware --tee backend");
    return args;
  }
  args = {"--platform", a.tee};
  if (!a.tpm.empty() || !a.tpm_ek_chain.empty()) {
    if (a.tee != "tpm") return InvalidArgument("--tpm and --tpm-ek-chain need --tee tpm");
  }
  if (!a.snp_vcek.empty() && a.tee != "snp") return InvalidArgument("--snp-vcek needs --tee snp");
  if (!a.tee_dir.empty()) {
    if (a.tee == "sgx") {
      args.insert(args.end(), {"--attestation-dir", a.tee_dir});
    } else if (a.tee == "snp" || a.tee == "tdx") {
      args.insert(args.end(), {"--tsm-root", a.tee_dir});
    } else {
      return InvalidArgument("--tee-dir needs --tee sgx, snp or tdx");
    }
  }
  if (!a.tpm.empty()) args.insert(args.end(), {"--tpm", a.tpm});
  for (const std::string& file : a.tpm_ek_chain) args.insert(args.end(), {"--tpm-ek-chain", file});
  if (!a.snp_vcek.empty()) args.insert(args.end(), {"--snp-vcek", a.snp_vcek});
  return args;
}

std::vector<std::string> CoreLauncher(const TeeArgs& a) {
  std::vector<std::string> words;
  std::string word;
  for (char c : a.launcher + " ") {
    if (c == ' ') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  return words;
}

}  // namespace mlcapsule::cli
