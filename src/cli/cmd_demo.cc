// `mlcapsule demo`: the whole mission on this machine in about a minute (docs/demo.md). A
// provider packs a Fashion-MNIST classifier into a capsule and licenses it through the license
// server (SQLite, HTTPS on loopback with a certificate made here); an honest customer attests,
// gets a lease and answers queries offline in the software TEE, then syncs its usage and is billed;
// a second customer steals the model through its own license (JbDA), PRADA flags the query stream,
// and the watermark identifies the stolen copy that reproduces its answers (and, honestly, not the
// one that generalises). Every step is a real command run as a child process and printed as
// `$ mlcapsule ...`, so a reader can repeat it by hand; the thief is `mlcapsule-lab steal`, the one
// step that needs libtorch. Every child's output is kept in OUT/logs, every process started is
// stopped (children die with the demo: PR_SET_PDEATHSIG), and the files made are listed at the end
// with their purpose.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/console.h"
#include "base/file_util.h"
#include "cli/cli_common.h"
#include "engine/session.h"
#include "lab/idx.h"
#include "server/self_signed_cert.h"

#ifndef MLCAPSULE_SOURCE_DIR
#define MLCAPSULE_SOURCE_DIR ""
#endif

namespace mlcapsule::cli {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kBobImages = 100;
constexpr const char* kBobLicense = "bob-cnn";
constexpr const char* kMalloryLicense = "mallory-cnn";

struct DemoOptions {
  std::string out = "mlcapsule-demo";
  std::string victim;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t budget = 2000;
  uint64_t seed = 1;
  bool force = false, train_victim = false, no_attack = false, json = false, no_progress = false,
       strict = false;
};

// ---- children and signals ---------------------------------------------------------------------

std::mutex g_children_mu;
std::set<pid_t> g_children;
std::atomic<int> g_signal{0};

void Register(pid_t pid) {
  std::lock_guard lock(g_children_mu);
  g_children.insert(pid);
}
void Unregister(pid_t pid) {
  std::lock_guard lock(g_children_mu);
  g_children.erase(pid);
}

// SIGINT/SIGTERM are blocked in every thread; this one waits for them and stops the children by
// PID; the main thread then sees its child end and g_signal set, and unwinds.
void StartSignalWatcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::thread([set] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return;
    g_signal = sig;
    std::lock_guard lock(g_children_mu);
    for (pid_t pid : g_children) kill(pid, SIGTERM);
  }).detach();
}

Status Interrupted() {
  return Aborted("interrupted by {}", g_signal == SIGINT ? "SIGINT" : "SIGTERM");
}

std::string SelfPath() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("mlcapsule") : self.string();
}

std::string ShellWord(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_./:=,+@%") == std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// How a program is shown in the printed commands: its name when it is the one on $PATH, otherwise
// its path relative to the working directory.
std::string DisplayProgram(const std::string& path) {
  const fs::path p(path);
  if (const char* env = std::getenv("PATH"); env != nullptr) {
    std::string paths = env;
    for (size_t at = 0; at <= paths.size();) {
      const size_t end = std::min(paths.find(':', at), paths.size());
      std::error_code ec;
      if (end > at && fs::equivalent(fs::path(paths.substr(at, end - at)) / p.filename(), p, ec))
        return p.filename().string();
      at = end + 1;
    }
  }
  std::error_code ec;
  fs::path rel = fs::relative(p, fs::current_path(), ec);
  return !ec && !rel.empty() && *rel.begin() != ".." ? rel.string() : path;
}

// "$ PROGRAM ARG...", as a reader would type it.
std::string CommandLine(const std::vector<std::string>& argv) {
  std::string shown = "$ " + DisplayProgram(argv.at(0));
  for (size_t i = 1; i < argv.size(); ++i) shown += " " + ShellWord(argv[i]);
  return shown;
}

struct ChildResult {
  int exit_code = -1;
  std::string out;  // its stdout
  std::string err_path;
  double seconds = 0;
};

std::string Tail(const std::string& path, size_t lines) {
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) return "";
  std::string s = *text;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  size_t at = s.size();
  for (size_t n = 0; n < lines && at != std::string::npos && at > 0; ++n)
    at = s.rfind('\n', at - 1);
  return at == std::string::npos ? s : s.substr(at + 1);
}

// fork + exec with stdout and stderr in files, stdin from /dev/null, optionally a pipe as fd 3.
// Everything the child does between fork and exec is async-signal-safe.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& out_path,
                    const std::string& err_path, int fd3 = -1) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return IoError("{}: {}", out_path, std::strerror(errno));
  const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (err < 0) {
    ::close(out);
    return IoError("{}: {}", err_path, std::strerror(errno));
  }
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // dies with the demo, even a SIGKILLed one
    if (getppid() != parent) _exit(127);
    if (null >= 0) dup2(null, 0);
    dup2(out, 1);
    dup2(err, 2);
    if (fd3 >= 0) {
      if (fd3 == 3) {
        fcntl(3, F_SETFD, 0);
      } else {
        dup2(fd3, 3);
      }
    }
    execv(args[0], args.data());
    const char msg[] = "mlcapsule demo: exec failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  const int fork_errno = errno;
  ::close(out);
  ::close(err);
  if (null >= 0) ::close(null);
  if (pid < 0) return IoError("fork: {}", std::strerror(fork_errno));
  Register(pid);
  return pid;
}

int WaitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Unregister(pid);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

struct FileEntry {
  std::string path, purpose;
};

struct StageRecord {
  int number;
  std::string title, result;
  double seconds;
};

// Fashion-MNIST's test images (Debian's dataset-fashion-mnist), read with the lab's IDX reader;
// the labels widened once for comparing with top-1 classes.
struct TestSet {
  lab::ImageSet images;
  std::vector<int64_t> labels;
};

Result<TestSet> LoadTestSet(const std::string& dir) {
  TestSet set;
  auto images =
      lab::LoadIdx(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
  if (!images.ok() && images.status().code() == StatusCode::kNotFound)
    return NotFound(
        "{} (the demo's images come from Debian's dataset-fashion-mnist: apt-get "
        "install dataset-fashion-mnist, or pass --data-dir)",
        images.status().message());
  MLC_ASSIGN_OR_RETURN(set.images, std::move(images));
  set.labels.assign(set.images.labels.begin(), set.images.labels.end());
  return set;
}

// Top-1 class of every test image under an ONNX classifier, run by our own engine (the provider's
// machine: no capsule, no TEE).
Result<std::vector<int64_t>> Classify(const std::string& onnx, const lab::ImageSet& set) {
  compiler::CompileOptions options;
  MLC_ASSIGN_OR_RETURN(engine::Plan plan, LoadModel(onnx, options));
  engine::SessionOptions session_options;
  session_options.threads = 2;
  MLC_ASSIGN_OR_RETURN(auto session, engine::Session::Create(std::move(plan), session_options));
  std::vector<int64_t> top1(static_cast<size_t>(set.count));
  constexpr int64_t kBatch = 500;
  std::vector<engine::Tensor> outputs;
  for (int64_t begin = 0; begin < set.count; begin += kBatch) {
    const int64_t n = std::min(kBatch, set.count - begin);
    engine::TensorView view{engine::DType::kFloat32, engine::Dims{n, 1, 28, 28},
                            const_cast<float*>(set.pixels.data() + begin * 784)};
    MLC_RETURN_IF_ERROR(session->Run(std::vector<engine::TensorView>{view}, &outputs));
    const engine::Tensor& out = outputs.at(0);
    if (out.dtype != engine::DType::kFloat32 || out.NumElements() % n != 0)
      return InvalidArgument("{}: expected float logits [batch, classes]", onnx);
    const int64_t classes = out.NumElements() / n;
    const float* v = out.Data<float>();
    for (int64_t i = 0; i < n; ++i)
      top1[static_cast<size_t>(begin + i)] =
          std::max_element(v + i * classes, v + (i + 1) * classes) - (v + i * classes);
  }
  return top1;
}

double Agreement(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  int64_t same = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0 : static_cast<double>(same) / static_cast<double>(a.size());
}

// "4.00 EUR" from a billing answer's `total` ({"EUR": "4.000000"}); "nothing" when it is empty.
std::string BillTotal(const json& bill) {
  const json total = bill.value("total", json::object());
  std::string out;
  for (const auto& [currency, value] : total.items()) {
    const double amount = value.is_string() ? std::atof(value.get<std::string>().c_str()) : 0.0;
    out += fmt::format("{}{:.2f} {}", out.empty() ? "" : ", ", amount, currency);
  }
  return out.empty() ? "nothing" : out;
}

std::string Percent(double fraction) { return fmt::format("{:.1f}%", 100 * fraction); }

// ---- the demo ---------------------------------------------------------------------------------

class Demo {
 public:
  explicit Demo(const DemoOptions& o)
      : o_(o), out_(o.json ? stderr : stdout), dir_(o.out), self_(SelfPath()) {
    lab_ = (fs::path(self_).parent_path() / "mlcapsule-lab").string();
    progress_ = console::Interactive(stderr);
  }

  Status Run();
  const json& summary() const { return summary_; }
  bool checks_passed() const { return checks_passed_; }

 private:
  void Say(const std::string& text) {
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
  }
  std::string P(const fs::path& p) const { return p.string(); }
  void AddFile(const fs::path& path, const std::string& purpose) {
    files_.push_back({path.string(), purpose});
  }
  Status Stage(const std::string& title, const std::function<Status(std::string*)>& body);

  // Runs a child to completion: prints the command, keeps its output in OUT/logs, fails (naming
  // the command and its last error lines) unless its exit status is in `ok_codes`.
  Result<ChildResult> Exec(const std::string& name, std::vector<std::string> argv,
                           std::vector<int> ok_codes = {0}, const std::string& shown_suffix = "",
                           const std::function<void(const std::string&)>& on_progress = {});
  Result<json> ExecJson(const std::string& name, std::vector<std::string> argv) {
    MLC_ASSIGN_OR_RETURN(ChildResult r, Exec(name, std::move(argv)));
    return ParseJson(name, r.out);
  }
  static Result<json> ParseJson(const std::string& name, const std::string& text) {
    const size_t start = text.find_first_of("{[");
    if (start == std::string::npos) return DataLoss("{} printed no JSON: {}", name, text);
    try {
      return json::parse(text.substr(start));
    } catch (const std::exception& e) {
      return DataLoss("{} printed bad JSON ({}): {}", name, e.what(), text);
    }
  }
  std::vector<std::string> Admin(std::vector<std::string> args) const {
    std::vector<std::string> a = {self_,          "admin",
                                  "--server",     url_,
                                  "--ca-cert",    P(dir_ / "server/tls.crt"),
                                  "--token-file", P(dir_ / "server/admin.token")};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }
  std::vector<std::string> Client(const std::string& command, const std::string& who) const {
    return {self_, command, P(dir_ / "victim.capsule"), "--state", P(dir_ / who / "state")};
  }
  std::vector<std::string> Online(std::vector<std::string> a, const std::string& who) const {
    for (const std::string& s :
         {std::string("--server"), url_, std::string("--ca-cert"), P(dir_ / "server/tls.crt"),
          std::string("--license-file"), P(dir_ / who / "license.token")})
      a.push_back(s);
    return a;
  }

  // `lease sync CAPSULE --state WHO/state --server ... --json`: WHO's attestation, usage report
  // and lease renewal, as JSON.
  Result<json> LeaseSync(const std::string& name, const std::string& who) {
    std::vector<std::string> argv = Online(Client("lease", who), who);
    argv.insert(argv.begin() + 2, "sync");
    argv.push_back("--json");
    return ExecJson(name, argv);
  }

  Status Prepare();
  Status Victim(std::string* result);
  Status Provider(std::string* result);
  Status StartServer(std::string* result);
  Status Register(std::string* result);
  Status BobLease(std::string* result);
  Status BobQueries(std::string* result);
  Status BobSync(std::string* result);
  Status Steal(std::string* result);
  Status Verdicts(std::string* result);
  Status StopServer(std::string* result);
  void Finish(const Status& status, double seconds);

  DemoOptions o_;
  FILE* out_;
  fs::path dir_;
  std::string self_, lab_;
  bool progress_ = false;
  int stage_ = 0, child_ = 0;
  std::vector<StageRecord> stages_;
  std::vector<FileEntry> files_;
  json summary_ = json::object();
  bool checks_passed_ = false;

  std::string victim_path_;
  TestSet test_;
  std::vector<int64_t> victim_top1_;
  double victim_accuracy_ = 0;
  std::string capsule_id_;
  pid_t server_pid_ = -1;
  std::string url_;
  int64_t bob_correct_ = 0;
  bool bob_alarm_ = false;
  uint64_t bob_escrowed_ = 0;
  json bob_bill_, mallory_bill_, steal_;
  int64_t prada_at_ = -1;
  std::string prada_detail_;
  json verdicts_ = json::array();
};

Result<ChildResult> Demo::Exec(const std::string& name, std::vector<std::string> argv,
                               std::vector<int> ok_codes, const std::string& shown_suffix,
                               const std::function<void(const std::string&)>& on_progress) {
  if (g_signal != 0) return Interrupted();
  const std::string shown = CommandLine(argv);
  Say(shown + shown_suffix);
  const std::string base = fmt::format("{}/logs/{:02d}-{}", dir_.string(), ++child_, name);
  ChildResult r;
  r.err_path = base + ".err";
  int pipe_fds[2] = {-1, -1};
  if (on_progress && pipe2(pipe_fds, O_CLOEXEC) != 0)
    return IoError("pipe: {}", std::strerror(errno));
  const auto start = Clock::now();
  auto pid = Spawn(argv, base + ".out", r.err_path, pipe_fds[1]);
  if (pipe_fds[1] >= 0) ::close(pipe_fds[1]);
  if (!pid.ok()) {
    if (pipe_fds[0] >= 0) ::close(pipe_fds[0]);
    return pid.status();
  }
  if (pipe_fds[0] >= 0) {
    std::string buffer;
    char chunk[4096];
    for (;;) {
      const ssize_t n = ::read(pipe_fds[0], chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
        on_progress(buffer.substr(0, nl));
        buffer.erase(0, nl + 1);
      }
    }
    ::close(pipe_fds[0]);
  }
  r.exit_code = WaitChild(*pid);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (g_signal != 0) return Interrupted();
  auto out = ReadFile(base + ".out", 64 << 20);
  r.out = out.ok() ? *out : "";
  if (std::find(ok_codes.begin(), ok_codes.end(), r.exit_code) == ok_codes.end())
    return Aborted("`{}` failed with exit status {}:\n{}\n(full output: {}.out, {}.err)",
                   shown.substr(2), r.exit_code, Tail(r.err_path, 8), base, base);
  return r;
}

Status Demo::Stage(const std::string& title, const std::function<Status(std::string*)>& body) {
  ++stage_;
  Say(fmt::format("\n[{}/{}] {}", stage_, o_.no_attack ? 8 : 10, title));
  const auto start = Clock::now();
  std::string result;
  Status s = Status::Ok();
  try {
    s = body(&result);
  } catch (const std::exception& e) {  // a child's JSON without a field the demo reads
    s = DataLoss("unexpected output: {}", e.what());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stages_.push_back({stage_, title, s.ok() ? result : "FAILED", seconds});
  if (!s.ok()) return Aborted("stage {} ({}): {}", stage_, title, s.message());
  Say(fmt::format("      done in {}", console::HumanSeconds(seconds)));
  return Status::Ok();
}

Status Demo::Prepare() {
  std::error_code ec;
  if (fs::exists(dir_, ec) && !fs::is_empty(dir_, ec)) {
    if (!o_.force)
      return AlreadyExists("{} exists and is not empty: pass --force to replace it, or --out DIR",
                           dir_.string());
    // Refuse to wipe anything that does not look like an earlier demo.
    if (!fs::exists(dir_ / "summary.json") && !fs::exists(dir_ / "logs"))
      return FailedPrecondition(
          "{} is not an earlier demo's directory (no summary.json or logs/): not replacing it",
          dir_.string());
    fs::remove_all(dir_, ec);
    if (ec) return IoError("{}: cannot remove: {}", dir_.string(), ec.message());
  }
  for (const char* sub : {"logs", "provider", "server", "bob", "mallory"}) {
    fs::create_directories(dir_ / sub, ec);
    if (ec) return IoError("{}: cannot create: {}", (dir_ / sub).string(), ec.message());
  }
  fs::permissions(dir_ / "provider", fs::perms::owner_all, ec);
  fs::permissions(dir_ / "server", fs::perms::owner_all, ec);
  if (!o_.no_attack && access(lab_.c_str(), X_OK) != 0)
    return FailedPrecondition(
        "the attack stage needs {} (it links libtorch): install the mlcapsule-lab package, or "
        "build with libtorch-dev installed; or run `mlcapsule demo --no-attack`",
        lab_);
  return Status::Ok();
}

Status Demo::Victim(std::string* result) {
  if (o_.train_victim) {
    std::vector<fs::path> configs = {
        fs::path(self_).parent_path().parent_path() / "share/mlcapsule/demo/victim.json",
        fs::path(MLCAPSULE_SOURCE_DIR) / "examples/lab/victim.json"};
    fs::path config;
    for (const fs::path& c : configs)
      if (fs::exists(c)) config = c;
    if (config.empty())
      return NotFound("examples/lab/victim.json not found (looked in {} and {})",
                      configs[0].string(), configs[1].string());
    Say("  training the victim with the lab's own code (about 2 minutes on 2 cores)");
    MLC_RETURN_IF_ERROR(Exec("lab-victim", {lab_, "run", config.string(), "--out",
                                            P(dir_ / "victim-training"), "-q"})
                            .status());
    // The lab keeps trained models in its content-addressed cache: the victim is the only one.
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "victim-training"))
      if (e.path().filename() == "model.onnx") victim_path_ = e.path().string();
    if (victim_path_.empty())
      return DataLoss("the lab run wrote no model.onnx under {}",
                      (dir_ / "victim-training").string());
    AddFile(dir_ / "victim-training", "the lab run that trained the victim (report.md, cache)");
  } else if (!o_.victim.empty()) {
    victim_path_ = o_.victim;
  } else {
    std::vector<fs::path> candidates = {
        fs::path(self_).parent_path().parent_path() / "share/mlcapsule/demo/victim-cnn.onnx",
        fs::path(MLCAPSULE_SOURCE_DIR) / "docs/results/models/victim-cnn.onnx"};
    for (const fs::path& c : candidates)
      if (victim_path_.empty() && fs::exists(c)) victim_path_ = c.string();
    if (victim_path_.empty())
      return NotFound(
          "the demo's victim model is not installed (looked for {} and {}); pass "
          "--victim MODEL.onnx or --train-victim",
          candidates[0].string(), candidates[1].string());
  }
  MLC_ASSIGN_OR_RETURN(test_, LoadTestSet(o_.data_dir));
  MLC_ASSIGN_OR_RETURN(victim_top1_, Classify(victim_path_, test_.images));
  victim_accuracy_ = Agreement(victim_top1_, test_.labels);
  std::error_code ec;
  const uint64_t size = fs::file_size(victim_path_, ec);
  Say(fmt::format(
      "  {} ({}): {} correct on Fashion-MNIST's {} test images (plain engine, no "
      "capsule)",
      victim_path_, console::HumanBytes(size), Percent(victim_accuracy_), test_.images.count));
  if (!o_.train_victim)
    Say("  made by the project's lab (examples/lab/victim.json; `mlcapsule demo --train-victim` "
        "trains it again)");
  *result = fmt::format("{} accuracy", Percent(victim_accuracy_));
  summary_["victim"] = {{"model", victim_path_}, {"accuracy", victim_accuracy_}};
  return Status::Ok();
}

constexpr const char* kPolicy = R"({
  "version": 1,
  "description": "mlcapsule demo: probabilities out; PRADA watches every client's query stream (log only, at least 50 queries per class before testing); 5% of answers carry a DAWN watermark, whose inputs are escrowed to the provider only after a PRADA alarm",
  "tee": {"accept": ["software"]},
  "lease": {"max_queries": 100000, "max_days": 30, "seal_every": 1000},
  "output": {"mode": "probabilities", "logits": true},
  "defenses": {
    "prada": {"enabled": true, "action": "log", "min_class_entries": 50},
    "watermark": {"enabled": true, "rate": 0.05, "escrow": "after_alarm",
                  "escrow_key": "ESCROW_KEY", "max_escrow": 1024, "max_escrow_bytes": 524288}
  }
}
)";

Status Demo::Provider(std::string* result) {
  MLC_ASSIGN_OR_RETURN(ChildResult token,
                       Exec("server-init",
                            {self_, "server", "--db", "sqlite:" + P(dir_ / "server/server.db"),
                             "--keys", P(dir_ / "server/keys"), "--create-admin-token", "ops"},
                            {0}, " > " + P(dir_ / "server/admin.token")));
  MLC_RETURN_IF_ERROR(CreateNewFile(P(dir_ / "server/admin.token"), token.out, 0600));
  MLC_RETURN_IF_ERROR(
      ExecJson("keygen", {self_, "keygen", "--out", P(dir_ / "provider"), "--json"}).status());
  MLC_ASSIGN_OR_RETURN(json escrow, ExecJson("keygen-escrow", {self_, "keygen", "--escrow", "--out",
                                                               P(dir_ / "provider"), "--json"}));
  std::string policy = kPolicy;
  policy.replace(policy.find("ESCROW_KEY"), 10, escrow.at("public_key").get<std::string>());
  MLC_RETURN_IF_ERROR(WriteFile(P(dir_ / "policy.json"), policy));
  Say("  wrote " + P(dir_ / "policy.json") +
      ": probabilities; PRADA (log); 5% watermark, escrowed only after an alarm");
  MLC_ASSIGN_OR_RETURN(
      json packed,
      ExecJson("pack", {self_, "pack", victim_path_, "--key", P(dir_ / "provider/provider.key"),
                        "--lease-signer", P(dir_ / "server/keys/server.pub"), "--policy",
                        P(dir_ / "policy.json"), "--out", P(dir_ / "victim.capsule"), "--json"}));
  capsule_id_ = packed.at("capsule_id").get<std::string>();
  MLC_ASSIGN_OR_RETURN(json inspected,
                       ExecJson("inspect", {self_, "inspect", P(dir_ / "victim.capsule")}));
  Say("  what leaves a client's machine (inspect's data_leaving_client):");
  for (const json& line : inspected.at("data_leaving_client"))
    Say("    - " + line.get<std::string>());
  AddFile(dir_ / "policy.json", "the capsule's policy (defenses, output, lease limits)");
  AddFile(dir_ / "provider/provider.key", "provider signing key (secret, 0600)");
  AddFile(dir_ / "provider/provider.pub", "provider signing public key");
  AddFile(dir_ / "provider/escrow.key", "watermark escrow key: opens escrowed inputs (secret)");
  AddFile(dir_ / "provider/escrow.pub", "watermark escrow public key (in the policy)");
  AddFile(dir_ / "victim.capsule", "the encrypted, signed capsule shipped to customers");
  AddFile(dir_ / "victim.capsule.key", "the capsule key (provider secret; the server holds it)");
  AddFile(dir_ / "server/admin.token", "the license server's admin token (secret, 0600)");
  AddFile(dir_ / "server/keys",
          "the server's lease-signing key (its public half is pinned in "
          "the capsule)");
  std::error_code ec;
  *result = fmt::format("capsule {}… ({})", capsule_id_.substr(0, 12),
                        console::HumanBytes(fs::file_size(dir_ / "victim.capsule", ec)));
  summary_["capsule"] = {{"path", P(dir_ / "victim.capsule")}, {"capsule_id", capsule_id_}};
  return Status::Ok();
}

Status Demo::StartServer(std::string* result) {
  MLC_ASSIGN_OR_RETURN(server::SelfSignedCert cert,
                       server::MakeSelfSignedCert({.ip_addresses = {"127.0.0.1"}}));
  MLC_RETURN_IF_ERROR(
      server::WriteSelfSignedCert(cert, P(dir_ / "server/tls.crt"), P(dir_ / "server/tls.key")));
  Say("  made a self-signed TLS certificate for 127.0.0.1 (P-256, 2 days): " +
      P(dir_ / "server/tls.crt"));
  std::vector<std::string> argv = {self_,         "server",
                                   "--db",        "sqlite:" + P(dir_ / "server/server.db"),
                                   "--keys",      P(dir_ / "server/keys"),
                                   "--listen",    "127.0.0.1:0",
                                   "--tls-cert",  P(dir_ / "server/tls.crt"),
                                   "--tls-key",   P(dir_ / "server/tls.key"),
                                   "--access-log"};
  Say(CommandLine(argv) + " &");
  const std::string out_path = P(dir_ / "server/server.out");
  MLC_ASSIGN_OR_RETURN(server_pid_, Spawn(argv, out_path, P(dir_ / "server/server.log")));
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    if (g_signal != 0) return Interrupted();
    int status = 0;
    if (waitpid(server_pid_, &status, WNOHANG) == server_pid_) {
      Unregister(server_pid_);
      server_pid_ = -1;
      return Aborted("the license server exited during start-up:\n{}",
                     Tail(P(dir_ / "server/server.log"), 8));
    }
    auto text = ReadFile(out_path, 1 << 16);
    if (text.ok()) {
      const size_t at = text->find("listening on ");
      const size_t nl = at == std::string::npos ? at : text->find('\n', at);
      if (nl != std::string::npos) {
        url_ = text->substr(at + 13, nl - at - 13);
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (url_.empty()) return Aborted("the license server did not start within 20 s");
  Say(fmt::format("  the license server listens on {} (pid {}, SQLite {})", url_, server_pid_,
                  P(dir_ / "server/server.db")));
  AddFile(dir_ / "server/tls.crt", "the server's self-signed TLS certificate (clients' --ca-cert)");
  AddFile(dir_ / "server/tls.key", "its private key (secret, 0600)");
  AddFile(dir_ / "server/server.db",
          "the server's SQLite database: licenses, leases, usage, "
          "alerts");
  AddFile(dir_ / "server/server.out", "the server's standard output");
  AddFile(dir_ / "server/server.log", "the server's log (requests, leases, usage, alerts)");
  *result = url_;
  summary_["server"] = {{"url", url_}, {"pid", server_pid_}};
  return Status::Ok();
}

Status Demo::Register(std::string* result) {
  MLC_RETURN_IF_ERROR(
      ExecJson("provider-add", Admin({"provider", "add", "--name", "Acme Models", "--id", "acme"}))
          .status());
  MLC_RETURN_IF_ERROR(ExecJson("customer-bob", Admin({"customer", "add", "--provider", "acme",
                                                      "--name", "Bob (honest)", "--id", "bob"}))
                          .status());
  MLC_RETURN_IF_ERROR(
      ExecJson("customer-mallory", Admin({"customer", "add", "--provider", "acme", "--name",
                                          "Mallory (thief)", "--id", "mallory"}))
          .status());
  MLC_RETURN_IF_ERROR(ExecJson("capsule-add", Admin({"capsule", "add", P(dir_ / "victim.capsule"),
                                                     "--provider", "acme"}))
                          .status());
  for (const auto& [who, id] : {std::pair{"bob", kBobLicense}, {"mallory", kMalloryLicense}}) {
    MLC_ASSIGN_OR_RETURN(
        json license,
        ExecJson(fmt::format("license-{}", who),
                 Admin({"license", "add", "--customer", who, "--capsule", capsule_id_, "--queries",
                        "5000", "--lease-queries", "1000", "--price", "0.002", "--id", id})));
    const fs::path token = dir_ / who / "license.token";
    MLC_RETURN_IF_ERROR(
        CreateNewFile(token.string(), license.at("token").get<std::string>() + "\n", 0600));
    Say(fmt::format("  license {}: 5,000 queries at 0.002 per query, leases of 1,000; token in {}",
                    id, token.string()));
    AddFile(token, fmt::format("{}'s license token (secret, 0600)", who));
  }
  *result = "2 customers, 2 licenses";
  return Status::Ok();
}

std::string Date(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

Status Demo::BobLease(std::string* result) {
  MLC_ASSIGN_OR_RETURN(json sync, LeaseSync("bob-lease", "bob"));
  const json lease = sync.value("lease", json::object());
  if (!sync.value("renewed", false) || lease.empty())
    return FailedPrecondition("bob's first sync installed no lease: {}", sync.dump());
  Say(fmt::format(
      "  the core made evidence bound to the server's nonce; the server verified it ({})"
      " and signed lease #{}: {} queries, until {}",
      lease.value("evidence", "?"), lease.value("sequence", 0), lease.value("query_quota", 0),
      Date(lease.value("expires_at", int64_t{0}))));
  Say("  the capsule key reached the core inside the lease, encrypted to the core's own key: the "
      "host (and bob) never see it");
  AddFile(dir_ / "bob/state", "bob's sealed client state (lease, counters, PRADA, escrow)");
  *result = fmt::format("lease of {} queries", lease.value("query_quota", 0));
  return Status::Ok();
}

Status Demo::BobQueries(std::string* result) {
  engine::Tensor images = engine::Tensor::FromFloats(
      engine::Dims{kBobImages, 1, 28, 28},
      std::vector<float>(test_.images.pixels.begin(),
                         test_.images.pixels.begin() + kBobImages * lab::kImagePixels));
  engine::Tensor labels = engine::Tensor::FromInt64s(
      engine::Dims{kBobImages},
      std::vector<int64_t>(test_.labels.begin(), test_.labels.begin() + kBobImages));
  MLC_RETURN_IF_ERROR(WriteTensorFile(P(dir_ / "bob/images.npy"), images, "images"));
  MLC_RETURN_IF_ERROR(WriteTensorFile(P(dir_ / "bob/labels.npy"), labels, "labels"));
  Say(
      fmt::format("  bob's data: the first {} Fashion-MNIST test images ({}), which stay on this "
                  "machine",
                  kBobImages, P(dir_ / "bob/images.npy")));
  std::vector<std::string> argv = Client("run", "bob");
  for (const std::string& a : {std::string("-i"), P(dir_ / "bob/images.npy"), std::string("-o"),
                               P(dir_ / "bob/answers.npy"), std::string("--json")})
    argv.push_back(a);
  MLC_ASSIGN_OR_RETURN(ChildResult run, Exec("bob-run", argv));
  MLC_ASSIGN_OR_RETURN(json ran, ParseJson("run", run.out));
  MLC_ASSIGN_OR_RETURN(engine::Tensor answers, ReadTensorFile(P(dir_ / "bob/answers.npy")));
  if (answers.dtype != engine::DType::kFloat32 || answers.dims.size() != 2 ||
      answers.dims[0] != kBobImages)
    return DataLoss("bob's answers: expected float [{}, classes], got {}{}", kBobImages,
                    engine::DTypeName(answers.dtype), engine::DimsToString(answers.dims));
  const int64_t classes = answers.dims[1];
  const float* v = answers.Data<float>();
  bob_correct_ = 0;
  for (int64_t i = 0; i < kBobImages; ++i) {
    const int64_t top =
        std::max_element(v + i * classes, v + (i + 1) * classes) - (v + i * classes);
    bob_correct_ += top == test_.labels[static_cast<size_t>(i)];
  }
  const json lease = ran.value("lease", json::object());
  Say(
      fmt::format("  {} images answered in {} inside the software TEE, with no network: {} of {} "
                  "correct (about 5% of answers carry the watermark, deliberately wrong)",
                  kBobImages, console::HumanSeconds(run.seconds), bob_correct_, kBobImages));
  Say(fmt::format("  lease: {} of {} queries used", lease.value("queries_used", 0),
                  lease.value("query_quota", 0)));
  AddFile(dir_ / "bob/images.npy", "bob's queries: 100 test images");
  AddFile(dir_ / "bob/labels.npy", "their true labels (to score the answers)");
  AddFile(dir_ / "bob/answers.npy", "the capsule's answers (probabilities)");
  *result = fmt::format("{}/{} correct, offline", bob_correct_, kBobImages);
  summary_["bob"] = {{"queries", kBobImages}, {"correct", bob_correct_}};
  return Status::Ok();
}

Status Demo::BobSync(std::string* result) {
  MLC_ASSIGN_OR_RETURN(json sync, LeaseSync("bob-sync", "bob"));
  if (!sync.value("reported", false))
    return FailedPrecondition("bob's sync reported no usage: {}", sync.dump());
  Say(fmt::format("  usage report {}: {} queries billed", sync.value("outcome", "?"),
                  sync.value("billed", 0)));
  std::vector<std::string> usage = Client("usage", "bob");
  usage.push_back("--out");
  usage.push_back(P(dir_ / "bob/usage.bin"));
  MLC_ASSIGN_OR_RETURN(json report, ExecJson("bob-usage", usage));
  const json defenses = report.value("defenses", json::object());
  bob_alarm_ = defenses.value("prada_alarmed", false);
  bob_escrowed_ = defenses.value("escrowed", uint64_t{0});
  Say(
      fmt::format("  bob's signed usage report: PRADA alarm: {}; watermarked answers: {}; inputs "
                  "escrowed to the provider: {}",
                  bob_alarm_ ? "YES" : "none", defenses.value("watermarked", 0), bob_escrowed_));
  if (!bob_alarm_ && bob_escrowed_ == 0)
    Say("  so none of bob's inputs left his machine: only counts and the signed usage chain did");
  MLC_ASSIGN_OR_RETURN(bob_bill_, ExecJson("bob-billing", Admin({"billing", "--customer", "bob"})));
  const std::string amount = BillTotal(bob_bill_);
  Say(fmt::format("  the provider's bill for bob: {}", amount));
  AddFile(dir_ / "bob/usage.bin", "bob's latest usage report, signed by the core");
  *result = fmt::format("billed {}", amount);
  summary_["bob"]["billed"] = bob_bill_;
  summary_["bob"]["prada_alarm"] = bob_alarm_;
  summary_["bob"]["escrowed"] = bob_escrowed_;
  return Status::Ok();
}

Status Demo::Steal(std::string* result) {
  std::vector<std::string> argv = {lab_,
                                   "steal",
                                   "--capsule",
                                   P(dir_ / "victim.capsule"),
                                   "--state",
                                   P(dir_ / "mallory/state"),
                                   "--server",
                                   url_,
                                   "--ca-cert",
                                   P(dir_ / "server/tls.crt"),
                                   "--license-file",
                                   P(dir_ / "mallory/license.token"),
                                   "--budget",
                                   std::to_string(o_.budget),
                                   "--sync-every",
                                   "500",
                                   "--seed",
                                   std::to_string(o_.seed),
                                   "--data-dir",
                                   o_.data_dir,
                                   "--out",
                                   P(dir_ / "mallory"),
                                   "--progress-fd",
                                   "3"};
  if (o_.no_progress) {  // no events to draw: the thief stays quiet (its log keeps nothing)
    argv.resize(argv.size() - 2);
    argv.push_back("-q");
  }
  std::unique_ptr<console::ProgressBar> bar;
  std::string phase;
  auto on_progress = [&](const std::string& line) {
    json e = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!e.is_object()) return;
    const std::string p = e.value("phase", "");
    if (p == "query") {
      if (phase != "query") {
        bar = std::make_unique<console::ProgressBar>(stderr, "queries", e.value("total", 1),
                                                     progress_);
        phase = "query";
      }
      bar->Update(e.value("done", 0));
    } else if (p == "train") {
      const std::string thief = e.value("thief", "?");
      if (phase != "train-" + thief) {
        if (bar) bar->Finish("");
        bar = std::make_unique<console::ProgressBar>(
            stderr, thief == "memorising" ? "thief A" : "thief B", e.value("epochs", 1), progress_);
        phase = "train-" + thief;
      }
      bar->Update(e.value("epoch", 0), "epochs");
    } else if (p == "thief" && bar) {
      bar->Finish(fmt::format("reproduces {} of its answers", Percent(e.value("fit", 0.0))));
    } else if (p == "done" && bar) {
      bar->Finish("");
    }
  };
  MLC_ASSIGN_OR_RETURN(
      ChildResult run,
      Exec("mallory-steal", argv, {0}, "",
           o_.no_progress ? std::function<void(const std::string&)>() : on_progress));
  if (bar) bar->Finish("");
  std::string last = run.out;
  while (!last.empty() && last.back() == '\n') last.pop_back();
  last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
  MLC_ASSIGN_OR_RETURN(steal_, ParseJson("mlcapsule-lab steal", last));
  Say(
      fmt::format("  mallory made {} queries through the capsule (JbDA: 150 seeds from a pool "
                  "disjoint from the victim's training data, then Jacobian-based synthetic "
                  "points), syncing every 500",
                  steal_.value("queries", 0)));
  for (const json& t : steal_.value("thieves", json::array()))
    Say(fmt::format(
        "  stolen model {}: {} trained {} epochs on the answers; reproduces {} of them; "
        "{} accurate on the test images",
        t.value("name", "?"), t.value("arch", "?"), t.value("epochs", 0),
        Percent(t.value("fit", 0.0)), Percent(t.value("accuracy", 0.0))));
  AddFile(dir_ / "mallory/state", "mallory's client state");
  AddFile(dir_ / "mallory/stolen-memorising.onnx",
          "thief A: an MLP trained until it reproduces its answers");
  AddFile(dir_ / "mallory/stolen-generalising.onnx", "thief B: the lab's common CNN recipe");
  AddFile(dir_ / "mallory/steal.json", "the attack's record (queries, thieves, times)");
  AddFile(dir_ / "mallory/reports", "the usage reports mallory's client sent (its own copies)");
  *result = fmt::format("{} queries, 2 stolen models", steal_.value("queries", 0));
  summary_["attack"] = steal_;
  return Status::Ok();
}

Status Demo::Verdicts(std::string* result) {
  MLC_ASSIGN_OR_RETURN(json alerts,
                       ExecJson("alerts", Admin({"alerts", "--license", kMalloryLicense})));
  const json list = alerts.is_array() ? alerts : alerts.value("alerts", json::array());
  for (const json& a : list) {
    if (a.value("kind", "") != "prada" || prada_at_ >= 0) continue;
    prada_detail_ = a.value("detail", "");
    const size_t at = prada_detail_.find("at query ");
    prada_at_ = at == std::string::npos ? 0 : std::atoll(prada_detail_.c_str() + at + 9);
  }
  if (prada_at_ >= 0)
    Say(
        fmt::format("  PRADA flagged mallory's query stream: \"{}\". The capsule kept answering "
                    "(action: log) and began escrowing the watermarked inputs it had answered "
                    "wrongly.",
                    prada_detail_));
  else
    Say("  PRADA raised NO alarm on mallory's queries: no watermarked inputs were escrowed.");
  Say(fmt::format("  bob: {}", bob_alarm_ ? "PRADA alarmed on bob's 100 queries too (a false alarm)"
                                          : "no alarm, nothing of his escrowed"));
  MLC_RETURN_IF_ERROR(ExecJson("reports", Admin({"reports", "--license", kMalloryLicense, "--out",
                                                 P(dir_ / "provider/reports")}))
                          .status());
  AddFile(dir_ / "provider/reports", "mallory's usage reports as the server recorded them");
  const std::vector<std::pair<std::string, std::string>> thieves = {{"A", "memorising"},
                                                                    {"B", "generalising"}};
  std::string verdict_line;
  for (const auto& [letter, name] : thieves) {
    const std::string model = P(dir_ / "mallory" / ("stolen-" + name + ".onnx"));
    MLC_ASSIGN_OR_RETURN(ChildResult r, Exec("watermark-" + name,
                                             {self_, "watermark", "verify", "--json",
                                              "--escrow-key", P(dir_ / "provider/escrow.key"),
                                              "--model", model, P(dir_ / "provider/reports")},
                                             {0, 1}));
    MLC_ASSIGN_OR_RETURN(json v, ParseJson("watermark verify", r.out));
    MLC_ASSIGN_OR_RETURN(std::vector<int64_t> top1, Classify(model, test_.images));
    const double fidelity = Agreement(top1, victim_top1_);
    const double accuracy = Agreement(top1, test_.labels);
    const bool identified = v.value("identified", false);
    const double log2p = v.value("log2_chance", 0.0);
    std::string text = fmt::format(
        "  stolen model {} ({}): gives the capsule's deliberately wrong answer on {} of {} "
        "escrowed "
        "inputs; a model not trained on this capsule's answers agrees that often with probability "
        "{}. Verdict at the default threshold 2^-64: {}. It agrees with the victim on {} of "
        "the test images ({} accurate).",
        letter, name, v.value("matches", 0), v.value("samples", 0),
        log2p > -0.05 ? std::string("about 1") : fmt::format("2^{:.1f}", log2p),
        identified ? "IDENTIFIED: trained on answers from license mallory-cnn" : "not identified",
        Percent(fidelity), Percent(accuracy));
    Say(text);
    verdicts_.push_back({{"thief", name},
                         {"identified", identified},
                         {"matches", v.value("matches", 0)},
                         {"samples", v.value("samples", 0)},
                         {"log2_chance", log2p},
                         {"fidelity", fidelity},
                         {"accuracy", accuracy}});
    verdict_line += fmt::format("{}{} {}identified", verdict_line.empty() ? "" : ", ", letter,
                                identified ? "" : "not ");
  }
  if (verdicts_.size() == 2 && !verdicts_[1].value("identified", false))
    Say("  DAWN only recognises thieves that reproduce their answers: thief B generalises, like "
        "the lab's 12 generalising thieves that were all missed (docs/results).");
  else
    Say("  thief B was identified this time: it reproduced enough of the capsule's wrong answers; "
        "the lab's 12 generalising thieves were all missed (docs/results).");
  Say("  \"Not identified\" is not \"innocent\". PRADA misses attacks made of natural images "
      "(Knockoff, random queries) entirely (docs/defenses.md).");
  MLC_ASSIGN_OR_RETURN(mallory_bill_,
                       ExecJson("mallory-billing", Admin({"billing", "--customer", "mallory"})));
  const std::string amount = BillTotal(mallory_bill_);
  Say(fmt::format("  the provider's bill for mallory: {} (every stolen answer was paid for)",
                  amount));
  *result = fmt::format("PRADA {}; {}",
                        prada_at_ >= 0 ? fmt::format("alarm at {}", prada_at_) : "no alarm",
                        verdict_line);
  summary_["provider"] = {{"prada_alarm_at", prada_at_},
                          {"prada_detail", prada_detail_},
                          {"watermark", verdicts_},
                          {"mallory_billed", mallory_bill_}};
  return Status::Ok();
}

Status Demo::StopServer(std::string* result) {
  Say(fmt::format("$ kill -TERM {}", server_pid_));
  kill(server_pid_, SIGTERM);
  int status = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  pid_t done = 0;
  while ((done = waitpid(server_pid_, &status, WNOHANG)) == 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (done == 0) {
    kill(server_pid_, SIGKILL);
    waitpid(server_pid_, &status, 0);
  }
  Unregister(server_pid_);
  const pid_t pid = server_pid_;
  server_pid_ = -1;
  if (done == 0) return Aborted("the license server (pid {}) ignored SIGTERM for 10 s", pid);
  Say(fmt::format("  the license server (pid {}) exited with status {}", pid,
                  WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)));
  *result = "stopped";
  return Status::Ok();
}

void Demo::Finish(const Status& status, double seconds) {
  AddFile(dir_ / "logs", "every command's standard output and error, numbered in order");
  AddFile(dir_ / "summary.json", "this summary as JSON");
  std::vector<std::vector<std::string>> rows;
  json stages = json::array();
  for (const StageRecord& r : stages_) {
    rows.push_back({std::to_string(r.number), r.title, console::HumanSeconds(r.seconds), r.result});
    stages.push_back(
        {{"stage", r.number}, {"title", r.title}, {"seconds", r.seconds}, {"result", r.result}});
  }
  Say("\nSummary");
  Say(console::Table({"#", "stage", "time", "result"}, rows, {true, false, true, false}));
  // The checks --strict enforces: the defenses did what the demo says they do.
  json checks = json::object();
  checks["bob_no_alarm"] = !bob_alarm_ && bob_escrowed_ == 0;
  if (!o_.no_attack) {
    checks["mallory_prada_alarm"] = prada_at_ >= 0;
    checks["thief_a_identified"] = !verdicts_.empty() && verdicts_[0].value("identified", false);
  }
  checks_passed_ = status.ok();
  for (const auto& [name, ok] : checks.items()) checks_passed_ = checks_passed_ && ok.get<bool>();
  summary_["stages"] = stages;
  summary_["checks"] = checks;
  summary_["seconds"] = seconds;
  (void)WriteFile(P(dir_ / "summary.json"), summary_.dump(2) + "\n");  // listed below; rewritten
  Say("Files (" + dir_.string() + "/)");
  std::vector<std::vector<std::string>> file_rows;
  json files = json::array();
  for (const FileEntry& f : files_) {
    std::error_code ec;
    if (!fs::exists(f.path, ec)) continue;
    uint64_t size = 0;
    if (fs::is_directory(f.path, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(f.path, ec))
        if (e.is_regular_file(ec)) size += e.file_size(ec);
    } else {
      size = fs::file_size(f.path, ec);
    }
    std::string shown = fs::relative(f.path, dir_, ec).string();
    if (fs::is_directory(f.path, ec)) shown += "/";
    file_rows.push_back({shown, console::HumanBytes(size), f.purpose});
    files.push_back({{"path", f.path}, {"bytes", size}, {"purpose", f.purpose}});
  }
  Say(console::Table({"file", "size", "purpose"}, file_rows, {false, true, false}));
  summary_["files"] = files;
  summary_["ok"] = status.ok();
  if (!status.ok()) summary_["error"] = status.message();
  (void)WriteFile(P(dir_ / "summary.json"), summary_.dump(2) + "\n");
  Say(fmt::format("{} in {}; every process it started has stopped.",
                  status.ok() ? "demo finished" : "demo FAILED", console::HumanSeconds(seconds)));
}

Status Demo::Run() {
  const auto start = Clock::now();
  struct Step {
    std::string title;
    Status (Demo::*run)(std::string*);
  };
  std::vector<Step> steps = {
      {"The victim: a Fashion-MNIST classifier", &Demo::Victim},
      {"Provider: keys, policy and the capsule", &Demo::Provider},
      {"License server: SQLite, HTTPS on loopback", &Demo::StartServer},
      {"Provider registers two customers and their licenses", &Demo::Register},
      {"bob attests and receives a lease", &Demo::BobLease},
      {"bob answers queries offline inside the software TEE", &Demo::BobQueries},
      {"bob syncs usage; the provider bills", &Demo::BobSync}};
  if (!o_.no_attack) {
    steps.push_back(
        {fmt::format("mallory steals the model (JbDA, {} queries through its license)", o_.budget),
         &Demo::Steal});
    steps.push_back({"Provider: PRADA's alarm and the watermark verdicts", &Demo::Verdicts});
  }
  Status s = Prepare();
  if (s.ok())
    Say(fmt::format("mlcapsule demo: everything below runs on this machine; files in {}/",
                    dir_.string()));
  for (const Step& step : steps) {
    if (!s.ok()) break;
    s = Stage(step.title, [&](std::string* result) { return (this->*step.run)(result); });
  }
  // The server is stopped whatever happened before.
  if (server_pid_ > 0) {
    Status stopped =
        Stage("Stop the license server", [&](std::string* r) { return StopServer(r); });
    if (s.ok()) s = stopped;
  }
  Finish(s, std::chrono::duration<double>(Clock::now() - start).count());
  return s;
}

void RunDemo(const DemoOptions& o) {
  StartSignalWatcher();
  Demo demo(o);
  Status s = demo.Run();
  if (g_signal != 0) {
    std::fprintf(stderr, "mlcapsule: demo: interrupted; every process it started was stopped\n");
    SetExitCode(128 + g_signal);
    return;
  }
  if (o.json) std::printf("%s\n", demo.summary().dump().c_str());
  if (!s.ok()) {
    SetExitCode(ReportError(s) == kExitUsage ? kExitUsage : kExitFailure);
    return;
  }
  if (o.strict && !demo.checks_passed()) {
    std::fprintf(stderr,
                 "mlcapsule: error: demo --strict: a check failed (summary.json \"checks\")\n");
    SetExitCode(kExitFailure);
  }
}

}  // namespace

void AddDemoCommand(CLI::App& app) {
  static DemoOptions o;
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "The whole mission on this machine in about a minute: pack a Fashion-MNIST model into a "
      "capsule, license it through the license server (SQLite, HTTPS on loopback), answer "
      "queries offline in the software TEE, sync usage and bill, then steal it as a second "
      "customer: PRADA flags the thief and the watermark identifies the copy (docs/demo.md)");
  cmd->add_option("--out", o.out, "Directory for everything the demo makes")->capture_default_str();
  cmd->add_flag("--force", o.force, "Replace --out if it holds an earlier demo");
  cmd->add_option("--victim", o.victim,
                  "Use this ONNX classifier ([N,1,28,28] -> [N,10] logits) as the victim")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--train-victim", o.train_victim,
                "Train the victim first with the lab (examples/lab/victim.json, about 2 min)");
  cmd->add_option("--data-dir", o.data_dir, "Fashion-MNIST's gzipped IDX files")
      ->capture_default_str();
  cmd->add_option("--budget", o.budget, "The thief's queries")
      ->check(CLI::Range(500, 5000))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "The thief's seed (keys are always fresh)")
      ->capture_default_str();
  cmd->add_flag("--no-attack", o.no_attack,
                "Skip the theft and the verdicts (no mlcapsule-lab needed)");
  cmd->add_flag("--no-progress", o.no_progress,
                "No progress bars (when stderr is not a terminal they are a line per 10%)");
  cmd->add_flag("--json", o.json,
                "Print the summary as one JSON object on stdout (the narrative goes to stderr)");
  cmd->add_flag("--strict", o.strict,
                "Exit 1 unless PRADA flagged mallory, bob raised no alarm and thief A was "
                "identified");
  cmd->footer(
      "Exit status: 0 every stage ran (with --strict: and every check held), 1 a stage or a "
      "check failed (the stage is named), 2 usage error, 130/143 interrupted.");
  cmd->callback([] { RunDemo(o); });
}

}  // namespace mlcapsule::cli
