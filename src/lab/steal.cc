// `mlcapsule-lab steal` (steal.h): the attack through CapsuleOracle::Attach, then two thieves
// trained on the transcript.
#include "lab/steal.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "lab/extraction.h"
#include "lab/nets.h"
#include "lab/oracle.h"
#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The lab's split seed (examples/lab/full.json "seed"); SplitSizes' defaults are full.json's
// "splits". The attacker pool is then the lab's, disjoint from the victim's training split.
constexpr uint64_t kSplitSeed = 20261122;

constexpr uint64_t kMaxTokenBytes = 64 * 1024;
constexpr int kMaxEventLines = 50;  // per phase, roughly: a bar needs no more

// Progress: JSON events on a descriptor (for the demo) or human lines on stderr.
class Progress {
 public:
  Progress(int fd, bool quiet) : fd_(fd), quiet_(quiet) {}

  void Event(const json& event, const std::string& human) {
    if (fd_ >= 0) {
      // One write(2) per line: the reader never sees half an event; a reader gone is not our
      // failure (the theft goes on).
      const std::string line = event.dump() + "\n";
      size_t done = 0;
      while (done < line.size()) {
        const ssize_t n = write(fd_, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
    } else if (!quiet_ && !human.empty()) {
      std::fprintf(stderr, "steal: %s\n", human.c_str());
    }
  }

 private:
  int fd_;
  bool quiet_;
};

// Every `step`th of `total` and the last one: at most about kMaxEventLines events.
bool Due(int64_t done, int64_t total, int64_t& last) {
  const int64_t step = std::max<int64_t>(1, total / kMaxEventLines);
  if (done < total && done - last < step) return false;
  last = done;
  return true;
}

struct ThiefSpec {
  std::string name;
  std::string arch;
  ArchSpec spec;
  int epochs;
};

}  // namespace

Result<std::string> Steal(const StealOptions& options) {
  const auto start = Clock::now();
  auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  Progress progress(options.progress_fd, options.quiet);
  if (options.budget < 1 || options.sync_every < 1)
    return InvalidArgument("budget {} and sync-every {} must be at least 1", options.budget,
                           options.sync_every);
  MLC_ASSIGN_OR_RETURN(AttackKind kind, ParseAttackKind(options.attack));
  if (kind != AttackKind::kJbda && kind != AttackKind::kRandom)
    return InvalidArgument("attack \"{}\": steal runs jbda or random", options.attack);
  MLC_ASSIGN_OR_RETURN(std::string token, ReadFile(options.license_file, kMaxTokenBytes));
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) return InvalidArgument("{}: the license token is empty", options.license_file);
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) return IoError("{}: cannot create: {}", options.out_dir, ec.message());

  AttachOptions attach;
  attach.capsule_path = options.capsule_path;
  attach.state_dir = options.state_dir;
  attach.server_url = options.server_url;
  attach.ca_cert = options.ca_cert;
  attach.license_token = token;
  attach.work_dir = options.out_dir;
  attach.core_binary = options.core_binary;
  MLC_ASSIGN_OR_RETURN(auto oracle, CapsuleOracle::Attach(attach));
  progress.Event({{"phase", "lease"}},
                 fmt::format("leased {} from {}", options.capsule_path, options.server_url));
  InitTorchForLab();
  MLC_ASSIGN_OR_RETURN(FashionMnist fm, LoadFashionMnist(options.data_dir));
  MLC_ASSIGN_OR_RETURN(Splits splits, MakeSplits(fm, SplitSizes{}, kSplitSeed));

  AttackConfig config;
  config.kind = kind;
  config.budgets = {options.budget};
  config.sync_every = options.sync_every;
  config.seed = options.seed;
  AttackContext context;
  context.splits = &splits;
  context.oracle = oracle.get();
  context.work_dir = options.out_dir;
  context.label = "steal";
  context.measure = false;
  int64_t last_query_event = 0, syncs = 0, alarm_at = -1;
  context.on_query = [&](int64_t queried) {
    if (!Due(queried, options.budget, last_query_event)) return;
    progress.Event({{"phase", "query"}, {"done", queried}, {"total", options.budget}},
                   fmt::format("{}/{} queries", queried, options.budget));
  };
  context.on_sync = [&](int64_t queried, const OracleSync& sync) {
    ++syncs;
    progress.Event({{"phase", "sync"}, {"done", queried}},
                   fmt::format("usage synced and lease renewed at {} queries", queried));
    if (sync.prada_alarm_at >= 0 && alarm_at < 0) {
      alarm_at = sync.prada_alarm_at;
      progress.Event({{"phase", "alarm_seen"}, {"at", alarm_at}},
                     fmt::format("the usage report shows a PRADA alarm at query {}", alarm_at));
    }
  };
  MLC_ASSIGN_OR_RETURN(std::vector<Checkpoint> points, RunExtraction(config, context));
  const int64_t queries = oracle->queries();
  if (!points.empty() && points.back().prada_alarm_at >= 0) alarm_at = points.back().prada_alarm_at;
  torch::Tensor x = context.transcript_x, y = context.transcript_y;
  if (x.size(0) == 0) return InternalError("the attack made no queries");

  const std::vector<ThiefSpec> thieves = {
      // Reproduces its answers, wrong ones included: what DAWN's watermark identifies.
      {"memorising", "mlp", Mlp(), 300},
      // The lab's snapshot recipe at 2,000 queries: clamp(120000 / 2000, 8, 40) epochs.
      {"generalising", "cnn-b", CnnB(), 40},
  };
  torch::Tensor test_x = ImagesTensor(splits.test), test_y = LabelsTensor(splits.test);
  json thief_json = json::array();
  for (const ThiefSpec& thief : thieves) {
    const auto thief_start = Clock::now();
    Net net = MakeNet(thief.spec, DeriveSeed(options.seed, "thief-" + thief.name));
    TrainOptions t;
    t.epochs = thief.epochs;
    t.seed = DeriveSeed(options.seed, "thief-" + thief.name + "/order");
    int64_t last_epoch_event = 0;
    t.on_epoch = [&](int epoch, int epochs) {
      if (!Due(epoch, epochs, last_epoch_event)) return;
      progress.Event(
          {{"phase", "train"}, {"thief", thief.name}, {"epoch", epoch}, {"epochs", epochs}},
          epoch % std::max(1, epochs / 10) == 0 || epoch == epochs
              ? fmt::format("training the {} thief ({}): epoch {}/{}", thief.name, thief.arch,
                            epoch, epochs)
              : "");
    };
    MLC_RETURN_IF_ERROR(Train(net, x, y, t, "thief " + thief.name));
    double fit = 0, accuracy = 0;
    try {
      fit = Agreement(Predict(net, x), y);
      accuracy = Accuracy(net, test_x, test_y);
    } catch (const std::exception& e) {
      return InternalError("thief {}: libtorch failed: {}", thief.name, e.what());
    }
    MLC_ASSIGN_OR_RETURN(std::string onnx, ExportOnnx(net));
    const std::string path =
        (std::filesystem::path(options.out_dir) / ("stolen-" + thief.name + ".onnx")).string();
    MLC_RETURN_IF_ERROR(WriteFile(path, onnx));
    const double seconds = seconds_since(thief_start);
    progress.Event(
        {{"phase", "thief"}, {"thief", thief.name}, {"fit", fit}, {"accuracy", accuracy}},
        fmt::format("{} thief: fits {:.1f}% of its answers, {:.1f}% test accuracy, "
                    "{:.0f} s, wrote {}",
                    thief.name, 100 * fit, 100 * accuracy, seconds, path));
    thief_json.push_back({{"name", thief.name},
                          {"arch", thief.arch},
                          {"epochs", thief.epochs},
                          {"fit", fit},
                          {"accuracy", accuracy},
                          {"seconds", seconds},
                          {"onnx", path}});
  }
  json summary = {{"attack", options.attack},   {"budget", options.budget},
                  {"queries", queries},         {"syncs", syncs},
                  {"prada_alarm_at", alarm_at}, {"seconds", seconds_since(start)},
                  {"thieves", thief_json}};
  const std::string line = summary.dump();
  MLC_RETURN_IF_ERROR(WriteFile((std::filesystem::path(options.out_dir) / "steal.json").string(),
                                summary.dump(2) + "\n"));
  progress.Event({{"phase", "done"}}, "");
  return line;
}

}  // namespace mlcapsule::lab
