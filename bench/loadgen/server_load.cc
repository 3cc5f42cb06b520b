// mlcapsule-loadgen: the license server's load generator and crash test (bench/README.md,
// "License server load"). N concurrent clients, one keep-alive HTTP(S) connection and one thread
// each, play trusted cores against `mlcapsule server` on loopback:
//
//   attestation phase  nonce -> SGX quote bound to it (synthetic Intel PKI) -> evidence request
//                      with the usage report of the current lease attached -> lease
//   usage phase        signed, cumulative usage reports for the current lease (pre-signed)
//   crash phase        the usage load while the generator SIGKILLs the server it started and
//                      restarts it; every report is resent with the same bytes until acknowledged
//
// and at the end checks, license by license, that the server billed exactly what the clients saw
// acknowledged (crash phase: nothing acknowledged is lost, nothing is counted twice).
//
//   mlcapsule-loadgen --capsule lenet.capsule --admin-token-file admin.token --write-pki pki
//       --backend sqlite --attest-seconds 10 --report-seconds 10 --
//       build/mlcapsule server --db sqlite:db --keys keys --listen 127.0.0.1:{PORT} --plaintext
//       --intel-root-ca {PKI}/root.der --intel-collateral {PKI}/collateral.json
//   (one command line; bench/server_load.sh runs it on both back ends, with and without TLS)
//
// What it trusts: its command line, and the server it measures as far as a benchmark must (the
// answers are parsed with bounds; lease signatures are not verified, a real core does that). The
// synthetic Intel PKI is made here, in memory, for this run only: a server accepts its quotes only
// when started with its root (--intel-root-ca), which is why the PKI's files are written before
// the server starts and why its keys never leave this process. Not for production use.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "host/license_client.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/synthetic_intel.h"
#include "server/server_keys.h"
#include "server/store.h"

extern char** environ;

namespace mlcapsule::loadgen {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
namespace intel = server::evidence::testing;

constexpr uint64_t kLicenseQuota = uint64_t{1} << 50;  // never the limit in a benchmark
constexpr uint32_t kRatePerMinute = 10'000'000;        // the server's maximum
constexpr double kRetrySleepSeconds = 0.02;            // between retries while the server is down
constexpr double kDrainSeconds = 60;                   // to get the last reports acknowledged

struct Options {
  std::string server_url;  // an external server; else the one started from server_cmd
  std::vector<std::string> server_cmd;
  std::string server_log;
  std::string ca_cert;  // https
  std::string admin_token_file;
  std::string capsule;
  std::string capsule_key;
  std::string write_pki;
  std::string backend = "unknown";
  std::string json_out;
  std::string note;          // copied into the result line (what was measured: commit, binary)
  std::string breakdown_db;  // --breakdown: time the pieces of a request one by one, then exit
  int clients = 64;
  double attest_seconds = 10;
  double report_seconds = 10;
  int crash_kills = 0;
  double crash_seconds = 0;  // 0: 3 s per kill + 3 s
  uint64_t presign = 0;      // reports signed ahead per client (0: 120 per second of the phase)
  double health_wait_seconds = 60;
  int timeout_seconds = 10;
  int database_pid = 0;  // PostgreSQL postmaster: its CPU and its children's is reported apart
};

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SleepSeconds(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

// Linear interpolation between the closest ranks of `sorted`.
double Quantile(const std::vector<float>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double position = q * static_cast<double>(sorted.size() - 1);
  const size_t low = static_cast<size_t>(position);
  const size_t high = std::min(low + 1, sorted.size() - 1);
  return sorted[low] + (position - static_cast<double>(low)) * (sorted[high] - sorted[low]);
}

double Round3(double value) { return std::round(value * 1000) / 1000; }

// The 1-minute load average: the machine is shared, so every result records how busy it was.
double LoadAverage() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r"); f != nullptr) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

// ---- the server child process -----------------------------------------------------------------

// Starts `argv` with stdout and stderr appended to `log_path`; kills and stops it by its PID only.
class ServerProcess {
 public:
  ServerProcess(std::vector<std::string> argv, std::string log_path)
      : argv_(std::move(argv)), log_path_(std::move(log_path)) {}
  ~ServerProcess() { (void)Stop(10); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  Status Start() {
    if (pid_ > 0) return InternalError("the server is already running (pid {})", pid_);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    for (std::string& a : argv_) args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = 0;
    const int error = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) return IoError("cannot start {}: {}", argv_[0], std::strerror(error));
    pid_ = pid;
    return Status::Ok();
  }
  // SIGKILL, then reaps it.
  Status Kill() {
    if (pid_ <= 0) return FailedPrecondition("the server is not running");
    if (::kill(pid_, SIGKILL) != 0) return IoError("kill {}: {}", pid_, std::strerror(errno));
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return Status::Ok();
  }
  // SIGTERM, then SIGKILL after `timeout_seconds`.
  Status Stop(double timeout_seconds) {
    if (pid_ <= 0) return Status::Ok();
    ::kill(pid_, SIGTERM);
    const auto start = SteadyClock::now();
    int status = 0;
    while (SecondsSince(start) < timeout_seconds) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return Status::Ok();
      }
      SleepSeconds(0.02);
    }
    Status killed = Kill();
    if (!killed.ok()) return killed;
    return IoError("the server did not stop within {} s of SIGTERM; killed", timeout_seconds);
  }
  // False once the process has exited (reaped here).
  bool Alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  pid_t pid() const { return pid_; }

 private:
  std::vector<std::string> argv_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// A port that was free a moment ago (bound to port 0, then released).
Result<int> PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return IoError("socket: {}", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return IoError("cannot find a free port: {}", std::strerror(errno));
  }
  ::close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

std::string Substitute(std::string text, const std::string& name, const std::string& value) {
  for (size_t at = text.find(name); at != std::string::npos;
       at = text.find(name, at + value.size()))
    text.replace(at, name.size(), value);
  return text;
}

// Waits until GET /v1/health answers "ok" (or the child exits, or the time is up).
Status WaitHealthy(const std::string& url, const host::ServerOptions& http, double seconds,
                   ServerProcess* child) {
  const auto start = SteadyClock::now();
  Status last = IoError("not tried");
  while (SecondsSince(start) < seconds) {
    if (child != nullptr && !child->Alive())
      return IoError("the server exited during start-up (see its log)");
    auto connection = host::ServerConnection::Open(url, http);
    if (!connection.ok()) return connection.status();
    auto health = (*connection)->Get("/v1/health", "");
    if (health.ok() && health->value("status", "") == "ok") return Status::Ok();
    last = health.ok() ? IoError("health: {}", health->dump()) : health.status();
    SleepSeconds(kRetrySleepSeconds);
  }
  return IoError("the server at {} did not become healthy within {} s: {}", url, seconds,
                 last.message());
}

// ---- the capsule and the enclave it accepts ---------------------------------------------------

struct Target {
  capsule::CapsuleHeader header;
  std::vector<uint8_t> header_region;
  capsule::SecretBytes key;
  intel::SgxEnclaveSpec enclave;  // report_data is filled per quote
};

// Verifies the capsule and its key here (as `mlcapsule admin capsule add` does) and derives an
// enclave that the capsule's policy accepts: the first allowed MRENCLAVE and MRSIGNER, the
// required ISVPRODID, the minimum ISVSVN.
Result<Target> LoadTarget(const Options& o) {
  MLC_ASSIGN_OR_RETURN(std::string bytes, ReadFile(o.capsule, capsule::kMaxCapsuleFileBytes));
  const std::span<const uint8_t> file(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  MLC_ASSIGN_OR_RETURN(capsule::CapsuleView view, capsule::ParseAndVerifyCapsule(file));
  Target target;
  target.header = view.header;
  target.header_region.assign(view.header_region.begin(), view.header_region.end());
  MLC_ASSIGN_OR_RETURN(target.key, capsule::ReadCapsuleKeyFile(
                                       o.capsule_key.empty() ? o.capsule + ".key" : o.capsule_key,
                                       view.header.capsule_id));
  MLC_ASSIGN_OR_RETURN(capsule::SecretBytes plan, capsule::DecryptPayload(view, target.key));
  (void)plan;
  MLC_ASSIGN_OR_RETURN(capsule::Policy policy, capsule::ParsePolicy(view.header.policy_json));
  if (!capsule::PolicyAcceptsTee(policy, "sgx"))
    return FailedPrecondition(
        "the capsule's policy does not accept sgx evidence: pack it with a policy whose "
        "tee.accept names \"sgx\" (bench/server_load.sh writes one)");
  intel::SgxEnclaveSpec& enclave = target.enclave;
  enclave.mr_enclave = capsule::Hash({std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>("mlcapsule-loadgen enclave"), 25)});
  for (const capsule::MeasurementList& list : policy.tee.measurements) {
    if (list.tee != "sgx" || list.allowed.empty()) continue;
    if (list.allowed.front().size() != 64)
      return FailedPrecondition("the policy's sgx measurement {} is not 32 bytes",
                                list.allowed.front());
    MLC_RETURN_IF_ERROR(
        capsule::FromHex(list.allowed.front(), enclave.mr_enclave, "policy sgx measurement"));
  }
  if (!policy.tee.sgx.mr_signers.empty())
    MLC_RETURN_IF_ERROR(
        capsule::FromHex(policy.tee.sgx.mr_signers.front(), enclave.mr_signer, "mr_signer"));
  if (policy.tee.sgx.isv_prod_id) enclave.isv_prod_id = *policy.tee.sgx.isv_prod_id;
  enclave.isv_svn = policy.tee.sgx.min_isv_svn;
  if (policy.lease.max_queries < 1'000'000'000)
    std::fprintf(stderr,
                 "loadgen: note: the policy's lease.max_queries is %llu; long runs may exhaust a "
                 "lease (the bench policy uses 10^12)\n",
                 static_cast<unsigned long long>(policy.lease.max_queries));
  return target;
}

// ---- one simulated client (a trusted core with its license) ----------------------------------

struct PhaseStats {
  uint64_t done = 0;    // completed renewals / acknowledged reports
  uint64_t errors = 0;  // failures that were not retried into success
  uint64_t retries = 0;
  uint64_t duplicates_on_retry = 0;  // a retry found its report already committed
  uint64_t inline_signed = 0;
  std::vector<float> latencies_ms;
  std::string first_error;

  void Error(const Status& status) {
    ++errors;
    if (first_error.empty()) first_error = status.ToString();
  }
};

struct PendingReport {
  std::vector<uint8_t> bytes;
  uint64_t to_count = 0;
};

struct Client {
  int index = 0;
  std::string license_id;
  std::string token;
  std::unique_ptr<host::ServerConnection> http;
  // The core's identity: kept across renewals, as the trusted core keeps it (the attached usage
  // report must be signed by the key of the lease it reports on and of the new request).
  capsule::BoxKeyPair box;
  capsule::SigningKeyPair signing;
  // The current lease and the usage chain.
  bool has_lease = false;
  capsule::LeaseId lease_id{};
  uint64_t base_count = 0;
  capsule::Digest base_head{};
  uint64_t count = 0;
  capsule::Digest head{};
  uint64_t report_sequence = 0;
  // What the server acknowledged and what was sent (highest to_count of each).
  uint64_t acked_count = 0;
  uint64_t lease_acked_reports = 0;  // distinct reports acknowledged for the current lease
  uint64_t sent_count = 0;
  std::optional<PendingReport> pending;  // made, maybe sent, not acknowledged: resent as is
  std::vector<PendingReport> presigned;  // the usage phase's reports, in order
  size_t next_presigned = 0;
  std::mt19937_64 random;
  PhaseStats stats;
};

struct Shared {
  pid_t database_pid = 0;
  const Target* target = nullptr;
  const intel::SyntheticIntelPki* pki = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> errors{0};
};

// Extends the client's chain by `queries` and signs a cumulative report for its current lease
// (from its chain base to the new head), as the core's MakeUsageReport does.
PendingReport MakeReport(const Target& target, Client& c, uint64_t queries) {
  c.count += queries;
  uint8_t count_bytes[8];
  for (int i = 0; i < 8; ++i) count_bytes[i] = static_cast<uint8_t>(c.count >> (8 * i));
  c.head = capsule::Hash({c.head, count_bytes});
  capsule::UsageReport report;
  report.capsule_id = target.header.capsule_id;
  report.license_id = c.license_id;
  report.lease_id = c.lease_id;
  report.report_sequence = ++c.report_sequence;
  report.core_signing_key = c.signing.public_key;
  report.from_count = c.base_count;
  report.from_head = c.base_head;
  report.to_count = c.count;
  report.to_head = c.head;
  report.created_at = UnixNow();
  return {capsule::SignUsageReport(std::move(report), c.signing.secret), c.count};
}

bool Retryable(const Status& status) {
  // Unreachable or reset (a killed server), 5xx, or 429.
  return status.code() == StatusCode::kIoError || status.code() == StatusCode::kInternal ||
         status.code() == StatusCode::kResourceExhausted;
}

// Sends c.pending, always the same bytes, until the server acknowledges it or `give_up` passes.
// With `failures_are_errors` (no crash test running) every failed attempt also counts as an
// error; in the crash phase a failure while the server is down is expected and only retried.
Status SendPending(Client& c, bool failures_are_errors, SteadyClock::time_point give_up) {
  const json body = {{"usage_report", capsule::ToBase64(c.pending->bytes)}};
  bool retried = false;
  for (;;) {
    c.sent_count = std::max(c.sent_count, c.pending->to_count);
    auto answer = c.http->Post("/v1/usage", c.token, body);
    if (answer.ok()) {
      const std::string outcome = answer->value("outcome", "");
      if (outcome == "accepted" || (outcome == "duplicate" && retried)) {
        if (outcome == "duplicate") ++c.stats.duplicates_on_retry;
        c.acked_count = std::max(c.acked_count, c.pending->to_count);
        ++c.lease_acked_reports;
        c.pending.reset();
        return Status::Ok();
      }
      return InternalError("license {}: the report to query {} was answered '{}' ({})",
                           c.license_id, c.pending->to_count, outcome, answer->value("detail", ""));
    }
    if (failures_are_errors) c.stats.Error(answer.status());
    if (!Retryable(answer.status()) || SteadyClock::now() >= give_up) return answer.status();
    ++c.stats.retries;
    retried = true;
    SleepSeconds(kRetrySleepSeconds);
  }
}

// One renewal: nonce, a quote bound to it, the evidence request (with the current lease's usage
// report attached from the second lease on), the lease. The lease's chain base must be where the
// attached report ended. `latency` receives nonce + quote + attest in milliseconds.
Status Renew(const Shared& s, Client& c, double* latency_ms) {
  const Target& t = *s.target;
  if (c.has_lease && !c.pending) c.pending = MakeReport(t, c, 1 + c.random() % 8);
  const auto start = SteadyClock::now();
  MLC_ASSIGN_OR_RETURN(json nonce_answer, c.http->Post("/v1/nonce", c.token, json::object()));
  if (!nonce_answer.contains("nonce") || !nonce_answer["nonce"].is_string())
    return InvalidArgument("the nonce answer has no nonce: {}", nonce_answer.dump());
  capsule::EvidenceRequest request;
  MLC_RETURN_IF_ERROR(
      capsule::FromHex(nonce_answer["nonce"].get<std::string>(), request.nonce, "nonce"));
  request.capsule_id = t.header.capsule_id;
  request.core_box_key = c.box.public_key;
  request.core_signing_key = c.signing.public_key;
  request.evidence_type = capsule::EvidenceType::kSgx;
  intel::SgxEnclaveSpec enclave = t.enclave;
  enclave.report_data = capsule::ComputeReportData(request.nonce, request.capsule_id,
                                                   request.core_box_key, request.core_signing_key);
  MLC_ASSIGN_OR_RETURN(request.evidence, s.pki->MakeSgxQuote(enclave));
  if (c.pending) {
    request.usage_report = c.pending->bytes;
    c.sent_count = std::max(c.sent_count, c.pending->to_count);
  }
  const json body = {
      {"evidence_request", capsule::ToBase64(capsule::SerializeEvidenceRequest(request))}};
  MLC_ASSIGN_OR_RETURN(json answer, c.http->Post("/v1/attest", c.token, body));
  if (latency_ms != nullptr)
    *latency_ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
  if (!answer.contains("lease") || !answer["lease"].is_string())
    return InvalidArgument("the attest answer has no lease");
  MLC_ASSIGN_OR_RETURN(
      std::vector<uint8_t> lease_bytes,
      capsule::FromBase64(answer["lease"].get<std::string>(), capsule::kMaxLeaseBytes, "lease"));
  MLC_ASSIGN_OR_RETURN(capsule::Lease lease, capsule::ParseLease(lease_bytes));
  const uint64_t expected_base = c.pending ? c.pending->to_count : 0;
  if (lease.body.chain_base_count != expected_base ||
      lease.body.core_signing_key != c.signing.public_key || lease.body.license_id != c.license_id)
    return InternalError(
        "license {}: lease sequence {} continues from query {} (expected {}) or names another "
        "core key or license",
        c.license_id, lease.body.sequence, lease.body.chain_base_count, expected_base);
  c.has_lease = true;
  c.lease_id = lease.body.lease_id;
  c.base_count = c.count = lease.body.chain_base_count;
  c.base_head = c.head = lease.body.chain_base;
  if (c.pending) {
    c.acked_count = std::max(c.acked_count, c.pending->to_count);
    c.pending.reset();
  }
  c.lease_acked_reports = 0;  // the attached report belongs to the previous lease
  return Status::Ok();
}

// ---- phases -----------------------------------------------------------------------------------

// Where the machine's CPU went during a phase, in CPUs (1.0 = one core busy): this process, the
// server (when started here and not restarted), everything else, and what stayed idle. Tells a
// CPU-bound run from one that waits (on a lock, on fsync), and shows the other users of a shared
// machine.
struct CpuUse {
  double loadgen = 0, server = 0, database = 0, other = 0, idle = 0;
};

class CpuSampler {
 public:
  // `database`: the PostgreSQL postmaster, whose children are the server's backends (0: none).
  CpuSampler(pid_t server, pid_t database) : server_(server), database_(database) {
    start_ = Read();
  }
  CpuUse Finish() const {
    const Sample end = Read();
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double seconds = std::chrono::duration<double>(end.when - start_.when).count();
    auto cpus = [&](double a, double b) { return Round3((b - a) / ticks / seconds); };
    CpuUse use;
    use.loadgen = cpus(start_.self, end.self);
    use.server = server_ > 0 && end.server >= start_.server ? cpus(start_.server, end.server) : 0;
    use.idle = cpus(start_.idle, end.idle);
    use.database = database_ > 0 ? cpus(start_.database, end.database) : 0;
    use.other = Round3(
        std::max(0.0, cpus(start_.busy, end.busy) - use.loadgen - use.server - use.database));
    return use;
  }

 private:
  struct Sample {
    SteadyClock::time_point when;
    double busy = 0, idle = 0, self = 0, server = 0, database = 0;
  };
  // utime + stime of /proc/PID/stat (fields 14 and 15; the command name may hold spaces), and
  // the parent PID (field 4).
  static double ProcessTicks(const std::string& path, pid_t* parent = nullptr) {
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "r"); f != nullptr) {
      char buffer[1024];
      const size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
      text.assign(buffer, n);
      std::fclose(f);
    }
    const size_t close = text.rfind(')');
    if (close == std::string::npos) return -1;
    unsigned long long utime = 0, stime = 0;
    int ppid = 0;
    if (std::sscanf(text.c_str() + close + 2,
                    "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ppid, &utime,
                    &stime) != 3)
      return -1;
    if (parent != nullptr) *parent = ppid;
    return static_cast<double>(utime + stime);
  }
  Sample Read() const {
    Sample s;
    s.when = SteadyClock::now();
    if (FILE* f = std::fopen("/proc/stat", "r"); f != nullptr) {
      unsigned long long v[8] = {};
      if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                      &v[4], &v[5], &v[6], &v[7]) == 8) {
        s.idle = static_cast<double>(v[3] + v[4]);
        s.busy = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
      }
      std::fclose(f);
    }
    s.self = ProcessTicks("/proc/self/stat");
    if (server_ > 0) s.server = ProcessTicks(fmt::format("/proc/{}/stat", server_));
    if (database_ > 0) {
      s.database = std::max(0.0, ProcessTicks(fmt::format("/proc/{}/stat", database_)));
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
        pid_t parent = 0;
        const double ticks = ProcessTicks(entry.path().string() + "/stat", &parent);
        if (ticks > 0 && parent == database_) s.database += ticks;
      }
    }
    return s;
  }
  pid_t server_;
  pid_t database_;
  Sample start_;
};

json CpuJson(const CpuUse& use) {
  return {{"loadgen", use.loadgen},
          {"server", use.server},
          {"database", use.database},
          {"other", use.other},
          {"idle", use.idle}};
}

struct PhaseResult {
  double seconds = 0;
  uint64_t done = 0, errors = 0, retries = 0, duplicates_on_retry = 0, inline_signed = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  std::string first_error;
  CpuUse cpu;
};

// The figures every phase reports: its rate, latency percentiles, errors and first error, under
// the key names of the results files (`rate_key`, `prefix`_p50_ms/_p99_ms/_max_ms/_errors).
// Returns the phase's error count.
uint64_t PutPhaseFigures(json& line, const PhaseResult& r, const std::string& rate_key,
                         const std::string& prefix, const std::string& first_error_key) {
  line[rate_key] = Round3(r.done / r.seconds);
  line[prefix + "_p50_ms"] = Round3(r.p50_ms);
  line[prefix + "_p99_ms"] = Round3(r.p99_ms);
  line[prefix + "_max_ms"] = Round3(r.max_ms);
  line[prefix + "_errors"] = r.errors;
  if (!r.first_error.empty()) line[first_error_key] = r.first_error;
  return r.errors;
}

using Clients = std::vector<std::unique_ptr<Client>>;

// Runs `body(client)` on one thread per client until `controller` returns (it sleeps, or kills
// and restarts the server), printing a progress line per second on stderr.
PhaseResult RunPhase(const char* name, Clients& clients, Shared& s, pid_t server,
                     const std::function<void(Client&)>& body,
                     const std::function<void()>& controller) {
  const CpuSampler sampler(server, s.database_pid);
  s.stop = false;
  s.done = 0;
  s.errors = 0;
  for (auto& c : clients) c->stats = PhaseStats{};
  const auto start = SteadyClock::now();
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back([&body, client = c.get()] { body(*client); });
  std::atomic<bool> finished{false};
  std::thread progress([&] {
    uint64_t last = 0;
    for (int second = 1; !finished; ++second) {
      const auto next = start + std::chrono::seconds(second);
      while (!finished && SteadyClock::now() < next) SleepSeconds(0.01);
      if (finished) break;
      const uint64_t done = s.done.load();
      std::fprintf(stderr, "loadgen %s: %3ds %8llu done (%6llu/s), %llu errors\n", name, second,
                   static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(done - last),
                   static_cast<unsigned long long>(s.errors.load()));
      last = done;
    }
  });
  controller();
  s.stop = true;
  for (std::thread& t : threads) t.join();
  PhaseResult r;
  r.seconds = SecondsSince(start);
  r.cpu = sampler.Finish();
  finished = true;
  progress.join();
  std::vector<float> all;
  for (auto& c : clients) {
    const PhaseStats& st = c->stats;
    r.done += st.done;
    r.errors += st.errors;
    r.retries += st.retries;
    r.duplicates_on_retry += st.duplicates_on_retry;
    r.inline_signed += st.inline_signed;
    if (r.first_error.empty()) r.first_error = st.first_error;
    all.insert(all.end(), st.latencies_ms.begin(), st.latencies_ms.end());
  }
  std::sort(all.begin(), all.end());
  r.p50_ms = Quantile(all, 0.5);
  r.p99_ms = Quantile(all, 0.99);
  r.max_ms = all.empty() ? 0 : all.back();
  return r;
}

std::function<void()> SleepFor(double seconds) {
  return [seconds] { SleepSeconds(seconds); };
}

// The attestation load: renewals back to back.
void AttestLoop(Shared& s, Client& c) {
  while (!s.stop) {
    double ms = 0;
    if (Status st = Renew(s, c, &ms); !st.ok()) {
      c.stats.Error(st);
      ++s.errors;
      continue;
    }
    c.stats.latencies_ms.push_back(static_cast<float>(ms));
    ++c.stats.done;
    ++s.done;
  }
}

// Signs `count` reports ahead (outside the timed loop: signing is client CPU that would compete
// with the server on a small machine).
void Presign(const Shared& s, Clients& clients, uint64_t count) {
  std::vector<std::thread> threads;
  const unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned w = 0; w < workers; ++w)
    threads.emplace_back([&, w] {
      for (size_t i = w; i < clients.size(); i += workers) {
        Client& c = *clients[i];
        c.presigned.clear();
        c.next_presigned = 0;
        c.presigned.reserve(count);
        for (uint64_t k = 0; k < count; ++k)
          c.presigned.push_back(MakeReport(*s.target, c, 1 + c.random() % 8));
      }
    });
  for (std::thread& t : threads) t.join();
}

// The usage load: reports for the current lease, cumulative, pre-signed (signed inline once the
// pre-signed ones run out, counted). In the crash phase every report is retried with the same
// bytes until acknowledged; `drain_until` bounds the wait for the server after the phase ends.
void UsageLoop(Shared& s, Client& c, bool crash, SteadyClock::time_point drain_until) {
  while (!s.stop || (crash && c.pending)) {
    if (!c.pending) {
      if (c.next_presigned < c.presigned.size()) {
        c.pending = std::move(c.presigned[c.next_presigned++]);
      } else {
        c.pending = MakeReport(*s.target, c, 1 + c.random() % 8);
        ++c.stats.inline_signed;
      }
    }
    const auto start = SteadyClock::now();
    Status st = SendPending(c, /*failures_are_errors=*/!crash,
                            crash ? drain_until : SteadyClock::now() + std::chrono::seconds(5));
    if (!st.ok()) {
      if (crash) c.stats.Error(st);  // (otherwise counted per attempt)
      ++s.errors;
      if (crash) break;  // gave up on it: the final check reports it as sent, not acknowledged
      continue;
    }
    c.stats.latencies_ms.push_back(static_cast<float>(
        std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count()));
    ++c.stats.done;
    ++s.done;
  }
  c.presigned.clear();
  c.presigned.shrink_to_fit();
}

// ---- set-up through the admin API -------------------------------------------------------------

std::string RandomHex(size_t bytes) {
  std::vector<uint8_t> buffer(bytes);
  capsule::RandomBytes(buffer);
  return capsule::ToHex(buffer);
}

// A provider, a customer, the capsule (header and key; an already registered capsule is kept)
// and one license per client.
Status SetUp(host::ServerConnection& admin, const std::string& token, const Target& target,
             const std::string& run_id, Clients& clients) {
  const std::string provider = "lg-" + run_id;
  MLC_RETURN_IF_ERROR(
      admin.Post("/v1/admin/providers", token, {{"id", provider}, {"name", "loadgen"}}).status());
  MLC_RETURN_IF_ERROR(admin
                          .Post("/v1/admin/customers", token,
                                {{"id", provider}, {"provider_id", provider}, {"name", "loadgen"}})
                          .status());
  auto capsule_answer = admin.Post("/v1/admin/capsules", token,
                                   {{"provider_id", provider},
                                    {"header", capsule::ToBase64(target.header_region)},
                                    {"capsule_key", capsule::ToHex(target.key.span())}});
  if (!capsule_answer.ok() &&
      capsule_answer.status().message().find("already") == std::string::npos)
    return capsule_answer.status().WithContext("registering the capsule");
  const std::string capsule_id = capsule::ToHex(target.header.capsule_id);
  for (auto& c : clients) {
    c->license_id = fmt::format("lg-{}-{}", run_id, c->index);
    MLC_ASSIGN_OR_RETURN(json license, admin.Post("/v1/admin/licenses", token,
                                                  {{"id", c->license_id},
                                                   {"customer_id", provider},
                                                   {"capsule_id", capsule_id},
                                                   {"query_quota", kLicenseQuota},
                                                   {"rate_per_minute", kRatePerMinute}}));
    if (!license.contains("token") || !license["token"].is_string())
      return InvalidArgument("the license answer has no token");
    c->token = license["token"].get<std::string>();
  }
  return Status::Ok();
}

// ---- the final check --------------------------------------------------------------------------

// Per license: the bill against the queries acknowledged and sent, and the current lease's
// recorded reports against the reports acknowledged for it. Reports are cumulative, so a later
// report would re-bill the queries of a lost one: the report count is what shows a lost report
// that is not the last one.
struct BillingCheck {
  uint64_t licenses = 0, exact = 0;
  uint64_t lost = 0;                     // acknowledged queries the server did not bill
  uint64_t lost_reports = 0;             // acknowledged reports missing from the current lease
  uint64_t double_counted = 0;           // billed queries beyond what was ever sent
  uint64_t unacknowledged_recorded = 0;  // billed, sent, never acknowledged (gave up)
  uint64_t unacknowledged_reports = 0;   // recorded for the lease, never acknowledged
  uint64_t acknowledged_queries = 0;
  uint64_t billed_queries = 0;
  std::string first_mismatch;
};

Result<BillingCheck> CheckBilling(const std::string& url, const host::ServerOptions& http,
                                  const std::string& token, const Clients& clients) {
  MLC_ASSIGN_OR_RETURN(auto admin, host::ServerConnection::Open(url, http));
  BillingCheck check;
  for (const auto& c : clients) {
    MLC_ASSIGN_OR_RETURN(json license, admin->Get("/v1/admin/licenses/" + c->license_id, token));
    const uint64_t billed = license.value("billed_queries", uint64_t{0});
    uint64_t reports = 0, recorded_count = 0;
    if (license.contains("current_lease") && license["current_lease"].is_object()) {
      reports = license["current_lease"].value("reports", uint64_t{0});
      recorded_count = license["current_lease"].value("recorded_count", uint64_t{0});
    }
    ++check.licenses;
    check.acknowledged_queries += c->acked_count;
    check.billed_queries += billed;
    if (billed == c->acked_count && reports == c->lease_acked_reports &&
        recorded_count == c->acked_count) {
      ++check.exact;
      continue;
    }
    if (billed < c->acked_count) check.lost += c->acked_count - billed;
    if (billed > c->sent_count) check.double_counted += billed - c->sent_count;
    if (billed > c->acked_count && billed <= c->sent_count)
      check.unacknowledged_recorded += billed - c->acked_count;
    if (reports < c->lease_acked_reports) check.lost_reports += c->lease_acked_reports - reports;
    if (reports > c->lease_acked_reports)
      check.unacknowledged_reports += reports - c->lease_acked_reports;
    if (check.first_mismatch.empty())
      check.first_mismatch = fmt::format(
          "{}: billed {}, acknowledged {}, sent {}; current lease: {} reports recorded up to "
          "query {}, {} acknowledged",
          c->license_id, billed, c->acked_count, c->sent_count, reports, recorded_count,
          c->lease_acked_reports);
  }
  return check;
}

// ---- --breakdown: what one request costs, piece by piece ---------------------------------------

// Microseconds per call of `fn`, over `iterations` calls on this thread (after one warm-up call).
template <typename Fn>
double TimeMicros(int iterations, Fn&& fn) {
  fn();
  const auto start = SteadyClock::now();
  for (int i = 0; i < iterations; ++i) fn();
  return std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count() / iterations;
}

// One thread, no HTTP: the CPU (and, for the store, fsync) cost of each step the server and the
// client take per attestation and per usage report, with the store at `db` (a fresh database:
// sqlite:PATH or a libpq URL). Explains the load figures; it is not a load test.
Status RunBreakdown(const Options& o, const Target& target, const intel::SyntheticIntelPki& pki) {
  json out;
  const int64_t now = UnixNow();
  Client c;
  c.box = capsule::GenerateBoxKeyPair();
  c.signing = capsule::GenerateSigningKeyPair();
  c.license_id = "bd-0";
  c.base_head = c.head = capsule::ChainGenesis(target.header.capsule_id, c.signing.public_key);
  capsule::RandomBytes(c.lease_id);

  // Client side.
  capsule::Nonce nonce{};
  capsule::RandomBytes(nonce);
  intel::SgxEnclaveSpec enclave = target.enclave;
  enclave.report_data = capsule::ComputeReportData(nonce, target.header.capsule_id,
                                                   c.box.public_key, c.signing.public_key);
  std::vector<uint8_t> quote;
  out["client_make_sgx_quote_us"] = TimeMicros(300, [&] { quote = *pki.MakeSgxQuote(enclave); });
  PendingReport report;
  out["client_sign_usage_report_us"] = TimeMicros(2000, [&] { report = MakeReport(target, c, 1); });

  // Server side, evidence.
  MLC_ASSIGN_OR_RETURN(server::evidence::IntelCollateral collateral,
                       server::evidence::ParseIntelCollateral(pki.CollateralJson()));
  server::evidence::Verifier verifier(pki.Anchors());
  out["server_quote_fmspc_us"] =
      TimeMicros(300, [&] { (void)server::evidence::QuoteFmspc(quote); });
  out["server_collateral_tee_and_fmspc_us"] = TimeMicros(1000, [&] {
    (void)server::evidence::CollateralTeeId(collateral);
    (void)server::evidence::CollateralFmspc(collateral);
  });
  Status verified;
  out["server_verify_sgx_quote_us"] = TimeMicros(300, [&] {
    verified = verifier.Verify(capsule::EvidenceType::kSgx, quote, &collateral, now).status();
  });
  MLC_RETURN_IF_ERROR(verified.WithContext("verifying a synthetic quote"));
  out["server_verify_usage_report_us"] = TimeMicros(
      2000, [&] { verified = capsule::ParseAndVerifyUsageReport(report.bytes).status(); });
  MLC_RETURN_IF_ERROR(verified);
  const capsule::SigningKeyPair signer = capsule::GenerateSigningKeyPair();
  capsule::LeaseBody body;
  body.capsule_id = target.header.capsule_id;
  body.license_id = c.license_id;
  body.query_quota = 1000;
  body.core_box_key = c.box.public_key;
  body.core_signing_key = c.signing.public_key;
  out["server_issue_lease_us"] =
      TimeMicros(1000, [&] { (void)capsule::IssueLease(body, target.key, signer); });
  capsule::EvidenceRequest request;
  request.capsule_id = target.header.capsule_id;
  request.nonce = nonce;
  request.core_box_key = c.box.public_key;
  request.core_signing_key = c.signing.public_key;
  request.evidence_type = capsule::EvidenceType::kSgx;
  request.evidence = quote;
  request.usage_report = report.bytes;
  const std::string attest_body =
      json{{"evidence_request", capsule::ToBase64(capsule::SerializeEvidenceRequest(request))}}
          .dump();
  out["server_parse_attest_body_us"] = TimeMicros(1000, [&] {
    json parsed = json::parse(attest_body);
    auto bytes = capsule::FromBase64(parsed["evidence_request"].get<std::string>(),
                                     capsule::kMaxEvidenceRequestBytes, "evidence_request");
    (void)capsule::ParseEvidenceRequest(*bytes);
  });

  // Store.
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<server::Store> store, server::OpenStore(o.breakdown_db));
  MLC_RETURN_IF_ERROR(store->Migrate());
  MLC_RETURN_IF_ERROR(store->CreateProvider({"bd", "breakdown", now}));
  MLC_RETURN_IF_ERROR(store->CreateCustomer({"bd", "bd", "breakdown", now}));
  server::CapsuleRecord capsule_record;
  capsule_record.capsule_id = target.header.capsule_id;
  capsule_record.provider_id = "bd";
  capsule_record.name = "breakdown";
  capsule_record.header = target.header_region;
  capsule_record.wrapped_key.assign(72, 0);
  capsule_record.created_at = now;
  MLC_RETURN_IF_ERROR(store->CreateCapsule(capsule_record));
  constexpr int kLeases = 64;
  std::vector<Client> clients(kLeases);
  std::vector<std::string> tokens;
  for (int i = 0; i < kLeases; ++i) {
    Client& k = clients[i];
    k.license_id = fmt::format("bd-{}", i);
    k.signing = capsule::GenerateSigningKeyPair();
    k.base_head = k.head = capsule::ChainGenesis(target.header.capsule_id, k.signing.public_key);
    capsule::RandomBytes(k.lease_id);
    server::LicenseRecord license;
    license.id = k.license_id;
    license.customer_id = "bd";
    license.capsule_id = target.header.capsule_id;
    tokens.push_back(server::NewToken(server::kLicenseTokenPrefix));
    license.token_hash = server::TokenHash(tokens.back());
    license.query_quota = license.lease_queries = kLicenseQuota;
    license.lease_seconds = 86400;
    license.expires_at = now + 86400;
    license.currency = "EUR";
    license.created_at = now;
    MLC_RETURN_IF_ERROR(store->CreateLicense(license));
    server::LeaseRecord lease;
    lease.lease_id = k.lease_id;
    lease.license_id = k.license_id;
    lease.capsule_id = target.header.capsule_id;
    lease.sequence = 1;
    lease.chain_base = k.base_head;
    lease.core_signing_key = k.signing.public_key;
    lease.query_quota = kLicenseQuota;
    lease.issued_at = now;
    lease.expires_at = now + 86400;
    capsule::RandomBytes(lease.nonce);
    MLC_RETURN_IF_ERROR(store->RecordLease(lease));
  }
  int which = 0;
  out["store_find_license_by_token_us"] = TimeMicros(
      2000, [&] { (void)store->FindLicenseByToken(server::TokenHash(tokens[which++ % kLeases])); });
  out["store_latest_lease_us"] =
      TimeMicros(2000, [&] { (void)store->LatestLease(clients[which++ % kLeases].license_id); });
  out["store_billed_queries_us"] =
      TimeMicros(2000, [&] { (void)store->BilledQueries(clients[which++ % kLeases].license_id); });
  out["store_has_fork_us"] =
      TimeMicros(2000, [&] { (void)store->HasFork(clients[which++ % kLeases].license_id); });
  // A lease per call: the next sequence of a license that has one (a renewal).
  uint64_t sequence = 1;
  out["store_record_lease_us"] = TimeMicros(300, [&] {
    server::LeaseRecord lease;
    capsule::RandomBytes(lease.lease_id);
    lease.license_id = "bd-0";
    lease.capsule_id = target.header.capsule_id;
    lease.sequence = ++sequence;
    lease.core_signing_key = clients[0].signing.public_key;
    lease.query_quota = 1000;
    lease.issued_at = now;
    lease.expires_at = now + 86400;
    capsule::RandomBytes(lease.nonce);
    verified = store->RecordLease(lease);
  });
  MLC_RETURN_IF_ERROR(verified.WithContext("breakdown RecordLease"));
  // Usage reports: one per transaction, and batches of 64 (one report per lease).
  auto batch_of = [&](int size) {
    std::vector<PendingReport> signed_reports;
    std::vector<capsule::UsageReport> parsed;
    for (int i = 0; i < size; ++i) {
      signed_reports.push_back(MakeReport(target, clients[(which++) % kLeases], 1));
      parsed.push_back(*capsule::ParseUsageReport(signed_reports.back().bytes));
    }
    std::vector<server::PendingReport> pending;
    for (int i = 0; i < size; ++i) pending.push_back({&parsed[i], signed_reports[i].bytes});
    const auto start = SteadyClock::now();
    auto results = store->RecordUsageReports(pending, now);
    const double us = std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
    for (auto& r : results)
      if (!r.ok() || r->outcome != server::ReportOutcome::kAccepted) verified = InternalError("x");
    return us;
  };
  double total = 0;
  for (int i = 0; i < 300; ++i) total += batch_of(1);
  out["store_record_1_report_txn_us"] = total / 300;
  total = 0;
  for (int i = 0; i < 50; ++i) total += batch_of(64);
  out["store_record_64_report_txn_us"] = total / 50;
  MLC_RETURN_IF_ERROR(verified.WithContext("breakdown RecordUsageReports"));
  for (auto& [key, value] : out.items()) value = Round3(value.get<double>());
  out["backend"] = o.backend;
  std::printf("%s\n", json{{"breakdown", out}}.dump().c_str());
  return Status::Ok();
}

// ---- main -------------------------------------------------------------------------------------

Result<std::string> ReadAdminToken(const Options& o) {
  if (!o.admin_token_file.empty()) {
    MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(o.admin_token_file, 1024));
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return text;
  }
  if (const char* value = std::getenv("MLCAPSULE_ADMIN_TOKEN"); value != nullptr && *value)
    return std::string(value);
  return InvalidArgument(
      "no admin token: pass --admin-token-file FILE or set MLCAPSULE_ADMIN_TOKEN");
}

Result<std::unique_ptr<intel::SyntheticIntelPki>> MakePki(const Options& o) {
  intel::SyntheticIntelOptions options;
  const int64_t now = UnixNow();
  options.collateral_issue_date = now - 86400;
  options.collateral_next_update = now + 30 * 86400;
  MLC_ASSIGN_OR_RETURN(auto pki, intel::SyntheticIntelPki::Create(options));
  std::error_code ec;
  std::filesystem::create_directories(o.write_pki, ec);
  if (ec) return IoError("cannot create {}: {}", o.write_pki, ec.message());
  const std::vector<uint8_t>& root = pki->root_der();
  MLC_RETURN_IF_ERROR(
      WriteFile(o.write_pki + "/root.der",
                std::string_view(reinterpret_cast<const char*>(root.data()), root.size())));
  MLC_RETURN_IF_ERROR(WriteFile(o.write_pki + "/collateral.json", pki->CollateralJson()));
  return pki;
}

struct Report {
  json line;
  bool passed = true;
};

int Run(const Options& o) {
  ::signal(SIGPIPE, SIG_IGN);
  auto fail = [](const Status& status) {
    std::fprintf(stderr, "loadgen: error: %s\n", status.ToString().c_str());
    return 1;
  };
  if (o.server_url.empty() == o.server_cmd.empty() && o.breakdown_db.empty())
    return fail(InvalidArgument("give either --server URL or a server command after --"));
  if (o.crash_kills > 0 && o.server_cmd.empty())
    return fail(
        InvalidArgument("--crash-kills needs the server command after -- (it restarts it)"));
  if (Status s = capsule::InitCrypto(); !s.ok()) return fail(s);
  auto target = LoadTarget(o);
  if (!target.ok()) return fail(target.status());
  auto pki = MakePki(o);
  if (!pki.ok()) return fail(pki.status());
  if (!o.breakdown_db.empty()) {
    Status s = RunBreakdown(o, *target, **pki);
    return s.ok() ? 0 : fail(s);
  }

  auto admin_token = ReadAdminToken(o);
  if (!admin_token.ok()) return fail(admin_token.status());
  const host::ServerOptions http{.ca_cert = o.ca_cert, .timeout_seconds = o.timeout_seconds};
  std::string url = o.server_url;
  std::unique_ptr<ServerProcess> child;
  if (!o.server_cmd.empty()) {
    auto port = PickFreePort();
    if (!port.ok()) return fail(port.status());
    std::vector<std::string> argv;
    for (const std::string& a : o.server_cmd)
      argv.push_back(
          Substitute(Substitute(a, "{PORT}", std::to_string(*port)), "{PKI}", o.write_pki));
    const std::string log = o.server_log.empty() ? o.write_pki + "/server.log" : o.server_log;
    child = std::make_unique<ServerProcess>(argv, log);
    url = fmt::format("{}://127.0.0.1:{}", o.ca_cert.empty() ? "http" : "https", *port);
    if (Status s = child->Start(); !s.ok()) return fail(s);
    std::fprintf(stderr, "loadgen: server pid %d at %s (log %s)\n", child->pid(), url.c_str(),
                 log.c_str());
  }
  if (Status s = WaitHealthy(url, http, o.health_wait_seconds, child.get()); !s.ok())
    return fail(s);

  const std::string run_id = RandomHex(4);
  Clients clients;
  for (int i = 0; i < o.clients; ++i) {
    auto c = std::make_unique<Client>();
    c->index = i;
    c->box = capsule::GenerateBoxKeyPair();
    c->signing = capsule::GenerateSigningKeyPair();
    c->random.seed(static_cast<uint64_t>(i) * 7919 + 1);
    auto connection = host::ServerConnection::Open(url, http);
    if (!connection.ok()) return fail(connection.status());
    c->http = std::move(connection).value();
    clients.push_back(std::move(c));
  }
  {
    auto admin = host::ServerConnection::Open(url, http);
    if (!admin.ok()) return fail(admin.status());
    if (Status s = SetUp(**admin, *admin_token, *target, run_id, clients); !s.ok())
      return fail(s.WithContext("set-up through the admin API"));
  }
  Shared shared;
  shared.database_pid = o.database_pid;
  shared.target = &*target;
  shared.pki = pki->get();

  // Every client's first lease (untimed), so every timed renewal attaches a report.
  PhaseResult first = RunPhase(
      "first lease", clients, shared, 0,
      [&](Client& c) {
        if (Status st = Renew(shared, c, nullptr); !st.ok()) {
          c.stats.Error(st);
          ++shared.errors;
        } else {
          ++shared.done;
        }
      },
      [] {});
  if (first.errors > 0) {
    if (child) (void)child->Stop(10);
    return fail(InternalError("the first attestation failed for {} clients: {}", first.errors,
                              first.first_error));
  }

  Report report;
  json& line = report.line;
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  line["date"] = date;
  line["backend"] = o.backend;
  line["tls"] = !o.ca_cert.empty();
  line["clients"] = o.clients;
  line["cpus"] = std::thread::hardware_concurrency();
  line["loadavg1_start"] = LoadAverage();
  if (!o.note.empty()) line["note"] = o.note;
  uint64_t errors = 0;

  if (o.attest_seconds > 0) {
    PhaseResult r = RunPhase(
        "attest", clients, shared, child ? child->pid() : 0,
        [&](Client& c) { AttestLoop(shared, c); }, SleepFor(o.attest_seconds));
    line["attests"] = r.done;
    errors += PutPhaseFigures(line, r, "attest_per_s", "attest", "attest_first_error");
    line["attest_cpu"] = CpuJson(r.cpu);
  }
  if (o.report_seconds > 0) {
    const uint64_t presign =
        o.presign ? o.presign : static_cast<uint64_t>(std::ceil(120 * o.report_seconds));
    Presign(shared, clients, presign);
    PhaseResult r = RunPhase(
        "usage", clients, shared, child ? child->pid() : 0,
        [&](Client& c) { UsageLoop(shared, c, /*crash=*/false, SteadyClock::now()); },
        SleepFor(o.report_seconds));
    line["reports"] = r.done;
    errors += PutPhaseFigures(line, r, "reports_per_s", "report", "report_first_error");
    line["presigned_per_client"] = presign;
    line["inline_signed"] = r.inline_signed;
    line["report_cpu"] = CpuJson(r.cpu);
  }
  if (o.crash_kills > 0) {
    const double seconds = o.crash_seconds > 0 ? o.crash_seconds : 3.0 * o.crash_kills + 3;
    const uint64_t presign = o.presign ? o.presign : static_cast<uint64_t>(120 * seconds);
    Presign(shared, clients, presign);
    int kills = 0, restarts = 0;
    std::vector<double> downtime_ms;
    Status crash_status;
    const auto phase_start = SteadyClock::now();
    const auto drain_until =
        phase_start + std::chrono::duration_cast<SteadyClock::duration>(
                          std::chrono::duration<double>(seconds + kDrainSeconds));
    PhaseResult r = RunPhase(
        "crash", clients, shared, 0,
        [&](Client& c) { UsageLoop(shared, c, /*crash=*/true, drain_until); },
        [&] {
          const double interval = seconds / (o.crash_kills + 1);
          for (int k = 0; k < o.crash_kills && crash_status.ok(); ++k) {
            const auto at = phase_start + std::chrono::duration_cast<SteadyClock::duration>(
                                              std::chrono::duration<double>(interval * (k + 1)));
            std::this_thread::sleep_until(at);
            const pid_t pid = child->pid();
            const auto killed_at = SteadyClock::now();
            if (Status st = child->Kill(); !st.ok()) {
              crash_status = st;
              break;
            }
            ++kills;
            if (Status st = child->Start(); !st.ok()) {
              crash_status = st;
              break;
            }
            if (Status st = WaitHealthy(url, http, o.health_wait_seconds, child.get()); !st.ok()) {
              crash_status = st;
              break;
            }
            ++restarts;
            downtime_ms.push_back(
                std::chrono::duration<double, std::milli>(SteadyClock::now() - killed_at).count());
            std::fprintf(stderr,
                         "loadgen crash: SIGKILL %d to server pid %d, restarted as pid %d, "
                         "healthy after %.0f ms\n",
                         kills, pid, child->pid(), downtime_ms.back());
          }
          std::this_thread::sleep_until(phase_start +
                                        std::chrono::duration_cast<SteadyClock::duration>(
                                            std::chrono::duration<double>(seconds)));
        });
    line["crash_kills"] = kills;
    line["crash_restarts"] = restarts;
    line["crash_seconds"] = Round3(r.seconds);
    line["crash_acked_reports"] = r.done;
    errors += PutPhaseFigures(line, r, "crash_reports_per_s", "crash_report", "crash_first_error");
    line["crash_retries"] = r.retries;
    line["crash_duplicates_on_retry"] = r.duplicates_on_retry;
    double mean_downtime = 0;
    for (double d : downtime_ms) mean_downtime += d / downtime_ms.size();
    line["crash_restart_ms_mean"] = Round3(mean_downtime);
    if (!crash_status.ok()) {
      line["crash_error"] = crash_status.ToString();
      report.passed = false;
    }
    if (kills != o.crash_kills || restarts != o.crash_kills) report.passed = false;
  }

  line["loadavg1_end"] = LoadAverage();
  auto check = CheckBilling(url, http, *admin_token, clients);
  // Close the keep-alive connections first: the server's workers wait on idle ones.
  for (auto& c : clients) c->http.reset();
  if (child) {
    if (Status s = child->Stop(15); !s.ok())
      std::fprintf(stderr, "loadgen: %s\n", s.ToString().c_str());
  }
  if (!check.ok()) return fail(check.status().WithContext("checking the bills"));
  line["errors"] = errors;
  line["billed_check"] = check->exact == check->licenses ? "ok" : "mismatch";
  line["billed_exact_licenses"] = check->exact;
  line["acknowledged_queries"] = check->acknowledged_queries;
  line["billed_queries"] = check->billed_queries;
  if (o.crash_kills > 0) {
    line["crash_lost"] = check->lost_reports;  // acknowledged reports the server does not have
    line["crash_lost_queries"] = check->lost;  // acknowledged queries it does not bill
    line["crash_double_counted"] = check->double_counted;
    line["crash_unacknowledged_recorded"] = check->unacknowledged_recorded;
    line["crash_unacknowledged_reports"] = check->unacknowledged_reports;
  }
  if (!check->first_mismatch.empty()) line["billed_first_mismatch"] = check->first_mismatch;
  if (errors > 0 || check->exact != check->licenses || check->lost > 0 || check->lost_reports > 0 ||
      check->double_counted > 0)
    report.passed = false;
  line["passed"] = report.passed;

  const std::string text = line.dump();
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
  if (!o.json_out.empty()) {
    if (FILE* f = std::fopen(o.json_out.c_str(), "a"); f != nullptr) {
      std::fprintf(f, "%s\n", text.c_str());
      std::fclose(f);
    } else {
      std::fprintf(stderr, "loadgen: cannot append to %s\n", o.json_out.c_str());
    }
  }
  std::fprintf(stderr, "\nloadgen summary (%s, %s, %d clients):\n", o.backend.c_str(),
               o.ca_cert.empty() ? "plain HTTP" : "TLS", o.clients);
  if (line.contains("attests"))
    std::fprintf(stderr,
                 "  attestations  %8.1f/s  p50 %.2f ms  p99 %.2f ms  max %.2f ms  errors %llu\n",
                 line["attest_per_s"].get<double>(), line["attest_p50_ms"].get<double>(),
                 line["attest_p99_ms"].get<double>(), line["attest_max_ms"].get<double>(),
                 static_cast<unsigned long long>(line["attest_errors"].get<uint64_t>()));
  if (line.contains("reports"))
    std::fprintf(stderr,
                 "  usage reports %8.1f/s  p50 %.2f ms  p99 %.2f ms  max %.2f ms  errors %llu\n",
                 line["reports_per_s"].get<double>(), line["report_p50_ms"].get<double>(),
                 line["report_p99_ms"].get<double>(), line["report_max_ms"].get<double>(),
                 static_cast<unsigned long long>(line["report_errors"].get<uint64_t>()));
  for (const char* phase : {"attest_cpu", "report_cpu"}) {
    if (!line.contains(phase)) continue;
    const json& cpu = line[phase];
    std::fprintf(stderr,
                 "  CPUs (%s)  server %.2f, PostgreSQL %.2f, loadgen %.2f, other processes %.2f, "
                 "idle %.2f\n",
                 phase[0] == 'a' ? "attest" : "usage ", cpu["server"].get<double>(),
                 cpu["database"].get<double>(), cpu["loadgen"].get<double>(),
                 cpu["other"].get<double>(), cpu["idle"].get<double>());
  }
  if (line.contains("crash_kills"))
    std::fprintf(stderr,
                 "  crash test    %d kills, %d restarts, %llu reports acknowledged, %llu retries "
                 "(%llu found their report already committed), lost %llu reports (%llu queries), "
                 "double-counted %llu queries\n",
                 line["crash_kills"].get<int>(), line["crash_restarts"].get<int>(),
                 static_cast<unsigned long long>(line["crash_acked_reports"].get<uint64_t>()),
                 static_cast<unsigned long long>(line["crash_retries"].get<uint64_t>()),
                 static_cast<unsigned long long>(line["crash_duplicates_on_retry"].get<uint64_t>()),
                 static_cast<unsigned long long>(check->lost_reports),
                 static_cast<unsigned long long>(check->lost),
                 static_cast<unsigned long long>(check->double_counted));
  std::fprintf(stderr,
               "  billing       %llu of %llu licenses billed exactly what was acknowledged"
               " (%llu queries)%s%s\n",
               static_cast<unsigned long long>(check->exact),
               static_cast<unsigned long long>(check->licenses),
               static_cast<unsigned long long>(check->billed_queries),
               check->first_mismatch.empty() ? "" : "; first mismatch ",
               check->first_mismatch.c_str());
  std::fprintf(stderr, "  result        %s\n", report.passed ? "PASS" : "FAIL");
  return report.passed ? 0 : 1;
}

}  // namespace
}  // namespace mlcapsule::loadgen

int main(int argc, char** argv) {
  mlcapsule::loadgen::Options o;
  CLI::App app{
      "mlcapsule-loadgen: load generator and crash test of the license server (bench/README.md, "
      "\"License server load\"). The server command after -- may use {PORT} (a free port chosen "
      "here) and {PKI} (the --write-pki directory)."};
  app.add_option("--server", o.server_url,
                 "URL of a running server (it must already trust this run's --write-pki files: "
                 "start it after they appear); else give the server command after --");
  app.add_option("--capsule", o.capsule, "The capsule to license (its policy must accept sgx)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--capsule-key", o.capsule_key, "Its key file (default: CAPSULE.key)");
  app.add_option("--admin-token-file", o.admin_token_file,
                 "Admin token file (default: $MLCAPSULE_ADMIN_TOKEN)");
  app.add_option("--write-pki", o.write_pki,
                 "Directory to write this run's synthetic Intel PKI to (root.der, "
                 "collateral.json) for the server's --intel-root-ca / --intel-collateral")
      ->required();
  app.add_option("--ca-cert", o.ca_cert, "PEM CA of the server's certificate: speak HTTPS");
  app.add_option("--clients", o.clients, "Concurrent clients (one connection and thread each)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--attest-seconds", o.attest_seconds, "Length of the attestation phase (0: none)")
      ->capture_default_str();
  app.add_option("--report-seconds", o.report_seconds, "Length of the usage phase (0: none)")
      ->capture_default_str();
  app.add_option("--crash-kills", o.crash_kills,
                 "Crash phase: SIGKILL and restart the server this many times under usage load")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--crash-seconds", o.crash_seconds,
                 "Length of the crash phase (default: 3 s per kill + 3 s)");
  app.add_option("--presign", o.presign,
                 "Reports signed ahead per client and phase (default: 120 per second of the "
                 "phase; more are signed inline, counted as inline_signed)");
  app.add_option("--backend", o.backend, "Back end name for the results (sqlite, postgresql)")
      ->capture_default_str();
  app.add_option("--json-out", o.json_out, "Also append the result line to this file");
  app.add_option("--note", o.note, "Free text for the result line (e.g. the commit measured)");
  app.add_option("--server-log", o.server_log,
                 "Append the started server's output here (default: PKI_DIR/server.log)");
  app.add_option("--health-wait", o.health_wait_seconds,
                 "Seconds to wait for /v1/health after a (re)start")
      ->capture_default_str();
  app.add_option("--timeout", o.timeout_seconds, "Connect and read timeout of a request (s)")
      ->capture_default_str();
  app.add_option("--database-pid", o.database_pid,
                 "PID of the PostgreSQL postmaster: its and its backends' CPU is reported as "
                 "\"database\" (else it counts as other processes)");
  app.add_option("--breakdown", o.breakdown_db,
                 "Instead of a load: time each step of an attestation and a usage report on "
                 "this thread, the store on a FRESH database (sqlite:PATH or a libpq URL)");
  app.add_option("server_cmd", o.server_cmd, "Server command to start (after --)");
  CLI11_PARSE(app, argc, argv);
  return mlcapsule::loadgen::Run(o);
}
