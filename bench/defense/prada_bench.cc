// mlcapsule-prada-bench: the cost of PRADA (src/defense/prada.h) per query, and a check that its
// indexed nearest-neighbour search returns exactly what a naive scan returns.
//
//   build/mlcapsule-prada-bench [--data /usr/share/datasets/fashion-mnist] [--queries 2000]
//
// Data: Fashion-MNIST (Debian package dataset-fashion-mnist: gzipped IDX, read by
// lab::LoadFashionMnist, src/lab/data.h), pixels scaled to [0, 1], dimension 784. The 70,000
// images are train then test; the last 2,000 (test images 8,000..9,999) are the held-out queries,
// never stored. The pool of storable vectors is the other 68,000 images plus, to reach 10^5
// distinct vectors, images 0..31,999 shifted right by one pixel (left column zero); the pool is
// shuffled with a fixed seed and a configuration with S stored vectors uses its first S.
//
// Each configuration restores S entries through the public ReadEntries (distance 0 for a class's
// first entry, 1.0 after, which the storage rule accepts; T_c ends just below 1), then times
// Observe on every held-out query, one thread, one query at a time:
//   fashion_10class    labels from the dataset, queries observed with their own label;
//   fashion_one_class  all S in class 0 (the worst layout for a per-class index);
//   fashion_one_class_inserting  as above but with room for every query to be stored (each one
//                      is: its d_min is far above T_c), so the time includes index inserts;
//   noise_one_class    S uniform-noise vectors and uniform-noise queries: distances concentrate,
//                      no exact index can prune much; reported as it is.
// Unless inserting, max_stored = S: the store is full and nothing is added while timing.
// Exactness: for a sample of queries (outside the timed region) the minimum of
// PradaSquaredDistance over the class's stored vectors, square-rooted, is compared with the
// observation's min_distance; the largest absolute difference is printed (0 means bit-identical).
// Bounded search (PradaConfig::max_checks), at the largest S only:
//   bounded_10class, bounded_one_class  for each --max-checks value (0 = exact, the reference):
//     benign: the held-out queries in a fixed random order, store full (max_stored = S, as in
//       deployment once 10^5 are stored): Observe time, the fraction of queries whose d_min is
//       bit-equal to the exact one, the mean relative overestimate (d - d_exact) / d_exact, the
//       largest |W - W_exact| over the tests (every 10 queries) and whether every alarm decision
//       (delta 0.9) is the same;
//     attack: 300 held-out benign queries, then 1000 synthetic ones: 10 other held-out images
//       as seeds, each walked round-robin by random sign steps of 0.05 per pixel (clipped to
//       [0, 1]) and queried with the seed's class, with room to store every query; the index of
//       the first alarming query and |W - W_exact| for the same stream.
// Output: one JSON line per configuration on stdout, a human summary on stderr, and finally the
// cost of the Shapiro-Wilk test on 5000 values (PRADA runs it every 10 queries).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "defense/prada.h"
#include "defense/shapiro_wilk.h"
#include "lab/data.h"

namespace {

using mlcapsule::ByteReader;
using mlcapsule::ByteWriter;
using mlcapsule::defense::Prada;
using mlcapsule::defense::PradaConfig;
using mlcapsule::defense::PradaObservation;
using mlcapsule::defense::PradaSquaredDistance;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kDim = 784;

struct Config {
  std::string name;
  uint32_t classes;
  uint64_t stored;
  bool inserting;
  const std::vector<float>* pool;           // pool vectors, row-major
  const std::vector<uint8_t>* pool_labels;  // null: class 0
  const std::vector<float>* queries;
  const std::vector<uint8_t>* query_labels;
  size_t exact_checks;
};

double Percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(q * values.size()));
  return values[index];
}

bool RunConfig(const Config& config) {
  const size_t query_count = config.queries->size() / kDim;
  PradaConfig prada_config{.dim = kDim, .classes = config.classes};
  prada_config.max_stored = config.stored + (config.inserting ? query_count : 0);
  auto created = Prada::Create(prada_config);
  if (!created.ok()) {
    std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
    return false;
  }
  Prada& prada = **created;

  // The stored set, by class, kept here too for the naive exactness check.
  std::vector<std::vector<const float*>> members(config.classes);
  ByteWriter entries;
  std::vector<bool> seen(config.classes, false);
  for (uint64_t i = 0; i < config.stored; ++i) {
    const float* vector = config.pool->data() + i * kDim;
    const uint32_t cls = config.pool_labels ? (*config.pool_labels)[i] : 0;
    entries.Pod<uint32_t>(cls);
    entries.Pod<float>(seen[cls] ? 1.0f : 0.0f);
    seen[cls] = true;
    entries.Bytes(vector, kDim * sizeof(float));
    members[cls].push_back(vector);
  }
  const auto load_start = Clock::now();
  ByteReader reader(entries.span(), "bench entries");
  auto status = prada.ReadEntries(reader, config.stored);
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  if (!status.ok()) {
    std::fprintf(stderr, "ReadEntries: %s\n", status.ToString().c_str());
    return false;
  }

  std::vector<double> micros, naive_micros;
  micros.reserve(query_count);
  double max_difference = 0;
  size_t checked = 0, stored_now = 0;
  const size_t check_every =
      std::max<size_t>(1, query_count / std::max<size_t>(1, config.exact_checks));
  for (size_t q = 0; q < query_count; ++q) {
    std::span<const float> query(config.queries->data() + q * kDim, kDim);
    const uint32_t cls = config.query_labels ? (*config.query_labels)[q] : 0;
    float naive = -1;
    if (q % check_every == 0 && checked < config.exact_checks) {
      const auto naive_start = Clock::now();
      float best = std::numeric_limits<float>::infinity();
      for (const float* member : members[cls])
        best = std::min(best, PradaSquaredDistance(query, std::span<const float>(member, kDim)));
      naive = std::sqrt(best);
      naive_micros.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - naive_start).count());
    }
    PradaObservation seen_query;
    const auto start = Clock::now();
    status = prada.Observe(query, cls, &seen_query);
    const auto end = Clock::now();
    if (!status.ok()) {
      std::fprintf(stderr, "Observe: %s\n", status.ToString().c_str());
      return false;
    }
    micros.push_back(std::chrono::duration<double, std::micro>(end - start).count());
    if (naive >= 0) {
      ++checked;
      max_difference = std::max(max_difference, std::fabs(double{naive} - seen_query.min_distance));
    }
    if (seen_query.stored) {
      ++stored_now;
      members[cls].push_back(query.data());
    }
  }
  const double median = Percentile(micros, 0.5), p90 = Percentile(micros, 0.9),
               p99 = Percentile(micros, 0.99);
  const double mean = std::accumulate(micros.begin(), micros.end(), 0.0) / micros.size();
  const double naive_median = naive_micros.empty() ? 0 : Percentile(naive_micros, 0.5);
  std::printf(
      "{\"case\":\"%s\",\"stored\":%llu,\"dim\":%u,\"classes\":%u,\"queries\":%zu,"
      "\"median_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,"
      "\"stored_while_timing\":%zu,\"exact_checked\":%zu,\"exact_max_abs_diff\":%.9g,"
      "\"naive_median_us\":%.1f,\"load_s\":%.3f}\n",
      config.name.c_str(), static_cast<unsigned long long>(config.stored), kDim, config.classes,
      query_count, median, p90, p99, mean, stored_now, checked, max_difference, naive_median,
      load_seconds);
  std::fflush(stdout);
  std::fprintf(stderr,
               "%-28s S=%-6llu median %8.1f us  p90 %8.1f us  p99 %8.1f us  (naive scan %8.1f us)  "
               "exact diff %g (%zu checked)\n",
               config.name.c_str(), static_cast<unsigned long long>(config.stored), median, p90,
               p99, naive_median, max_difference, checked);
  return true;
}

// The entries restoring the first `stored` pool vectors (labels, or class 0 when null).
ByteWriter PoolEntries(const std::vector<float>& pool, const std::vector<uint8_t>* labels,
                       uint32_t classes, uint64_t stored) {
  ByteWriter entries;
  std::vector<bool> seen(classes, false);
  for (uint64_t i = 0; i < stored; ++i) {
    const uint32_t cls = labels ? (*labels)[i] : 0;
    entries.Pod<uint32_t>(cls);
    entries.Pod<float>(seen[cls] ? 1.0f : 0.0f);
    seen[cls] = true;
    entries.Bytes(pool.data() + i * kDim, kDim * sizeof(float));
  }
  return entries;
}

struct StreamRun {
  std::vector<double> micros;
  std::vector<float> distances;  // per query; -1 when none
  std::vector<double> w;         // per test, in order
  std::vector<bool> alarms;      // per test
  int64_t first_alarm = -1;      // query index
  double load_seconds = 0;
};

// A fresh Prada (max_checks, room for `room` more than restored), S restored entries, then the
// stream observed one query at a time.
bool RunStream(uint32_t classes, uint32_t max_checks, const ByteWriter& entries, uint64_t stored,
               uint64_t room, const std::vector<float>& stream,
               const std::vector<uint32_t>& stream_classes, StreamRun* out) {
  PradaConfig config{.dim = kDim, .classes = classes};
  config.max_stored = stored + room;
  config.max_checks = max_checks;
  auto created = Prada::Create(config);
  if (!created.ok()) {
    std::fprintf(stderr, "create: %s\n", created.status().ToString().c_str());
    return false;
  }
  Prada& prada = **created;
  const auto load_start = Clock::now();
  ByteReader reader(entries.span(), "bench entries");
  auto status = prada.ReadEntries(reader, stored);
  out->load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  if (!status.ok()) {
    std::fprintf(stderr, "ReadEntries: %s\n", status.ToString().c_str());
    return false;
  }
  *out = StreamRun{.load_seconds = out->load_seconds};
  for (size_t q = 0; q < stream_classes.size(); ++q) {
    PradaObservation seen;
    const auto start = Clock::now();
    status = prada.Observe(std::span<const float>(stream.data() + q * kDim, kDim),
                           stream_classes[q], &seen);
    const auto end = Clock::now();
    if (!status.ok()) {
      std::fprintf(stderr, "Observe: %s\n", status.ToString().c_str());
      return false;
    }
    out->micros.push_back(std::chrono::duration<double, std::micro>(end - start).count());
    out->distances.push_back(seen.has_distance ? seen.min_distance : -1.0f);
    if (seen.tested) {
      out->w.push_back(seen.w);
      out->alarms.push_back(seen.alarm);
      if (seen.alarm && out->first_alarm < 0) out->first_alarm = static_cast<int64_t>(q);
    }
  }
  return true;
}

double MaxAbsDifference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0 : std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

bool RunBounded(const std::string& name, uint32_t classes, uint64_t stored,
                const std::vector<float>& pool, const std::vector<uint8_t>* pool_labels,
                const std::vector<float>& queries, const std::vector<uint8_t>& query_labels,
                const std::vector<uint32_t>& max_checks_values) {
  const size_t query_count = queries.size() / kDim;
  auto label = [&](size_t q) -> uint32_t { return pool_labels ? query_labels[q] : 0; };
  // Benign: the held-out queries in a fixed random order.
  std::vector<size_t> order(query_count);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  std::vector<float> benign(query_count * kDim);
  std::vector<uint32_t> benign_classes(query_count);
  for (size_t i = 0; i < query_count; ++i) {
    std::copy_n(queries.data() + order[i] * kDim, kDim, benign.data() + i * kDim);
    benign_classes[i] = label(order[i]);
  }
  // Attack: 300 benign (order[10..309]), then seeds order[0..9] walked round-robin.
  constexpr size_t kSeeds = 10, kBenignPrefix = 300, kSteps = 100;
  std::vector<float> attack;
  std::vector<uint32_t> attack_classes;
  for (size_t i = kSeeds; i < kSeeds + kBenignPrefix && i < query_count; ++i) {
    attack.insert(attack.end(), benign.begin() + i * kDim, benign.begin() + (i + 1) * kDim);
    attack_classes.push_back(benign_classes[i]);
  }
  std::vector<float> walkers(benign.begin(), benign.begin() + kSeeds * kDim);
  std::mt19937_64 rng(11);
  for (size_t step = 0; step < kSteps; ++step)
    for (size_t s = 0; s < kSeeds; ++s) {
      float* x = walkers.data() + s * kDim;
      for (uint32_t j = 0; j < kDim; ++j)
        x[j] = std::clamp(x[j] + ((rng() & 1) ? 0.05f : -0.05f), 0.0f, 1.0f);
      attack.insert(attack.end(), x, x + kDim);
      attack_classes.push_back(benign_classes[s]);
    }

  const ByteWriter entries = PoolEntries(pool, pool_labels, classes, stored);
  StreamRun exact_benign, exact_attack;
  for (uint32_t max_checks : max_checks_values) {
    StreamRun benign_run, attack_run;
    if (!RunStream(classes, max_checks, entries, stored, 0, benign, benign_classes, &benign_run) ||
        !RunStream(classes, max_checks, entries, stored, attack_classes.size(), attack,
                   attack_classes, &attack_run))
      return false;
    if (max_checks == 0) {
      exact_benign = benign_run;
      exact_attack = attack_run;
    }
    if (exact_benign.distances.empty()) {
      std::fprintf(stderr, "--max-checks must start with 0 (the exact reference)\n");
      return false;
    }
    size_t equal = 0, compared = 0;
    double over = 0;
    for (size_t q = 0; q < query_count; ++q) {
      const float want = exact_benign.distances[q], got = benign_run.distances[q];
      if (want < 0) continue;
      ++compared;
      equal += got == want;
      if (want > 0) over += (static_cast<double>(got) - want) / want;
    }
    const double median = Percentile(benign_run.micros, 0.5),
                 p90 = Percentile(benign_run.micros, 0.9);
    const bool alarm_same = benign_run.alarms == exact_benign.alarms;
    const size_t benign_alarms =
        static_cast<size_t>(std::count(benign_run.alarms.begin(), benign_run.alarms.end(), true));
    std::printf(
        "{\"case\":\"%s\",\"stored\":%llu,\"max_checks\":%u,\"queries\":%zu,"
        "\"median_us\":%.1f,\"p90_us\":%.1f,\"exact_fraction\":%.4f,\"mean_rel_over\":%.3g,"
        "\"w_max_abs_diff\":%.3g,\"alarm_same\":%s,\"benign_tests\":%zu,\"benign_alarms\":%zu,"
        "\"benign_alarm_at\":%lld,\"benign_alarm_at_exact\":%lld,"
        "\"attack_alarm_at\":%lld,\"attack_alarm_at_exact\":%lld,"
        "\"attack_w_max_abs_diff\":%.3g,\"attack_median_us\":%.1f,\"load_s\":%.2f}\n",
        name.c_str(), static_cast<unsigned long long>(stored), max_checks, query_count, median, p90,
        compared ? static_cast<double>(equal) / compared : 1.0, compared ? over / compared : 0.0,
        MaxAbsDifference(benign_run.w, exact_benign.w), alarm_same ? "true" : "false",
        benign_run.alarms.size(), benign_alarms, static_cast<long long>(benign_run.first_alarm),
        static_cast<long long>(exact_benign.first_alarm),
        static_cast<long long>(attack_run.first_alarm),
        static_cast<long long>(exact_attack.first_alarm),
        MaxAbsDifference(attack_run.w, exact_attack.w), Percentile(attack_run.micros, 0.5),
        benign_run.load_seconds);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "%-20s S=%-6llu max_checks %-5u median %7.1f us  p90 %7.1f us  exact %.3f  "
                 "over %.2e  |dW| %.2e  alarms same %d  attack alarm at %lld (exact %lld)\n",
                 name.c_str(), static_cast<unsigned long long>(stored), max_checks, median, p90,
                 compared ? static_cast<double>(equal) / compared : 1.0,
                 compared ? over / compared : 0.0, MaxAbsDifference(benign_run.w, exact_benign.w),
                 alarm_same, static_cast<long long>(attack_run.first_alarm),
                 static_cast<long long>(exact_attack.first_alarm));
  }
  return true;
}

void TimeShapiroWilk() {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> sample(5000);
  for (double& v : sample) v = normal(rng);
  std::sort(sample.begin(), sample.end());
  mlcapsule::defense::ShapiroWilkTester tester;
  constexpr int kRounds = 200;
  double warm = 0, cold = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto start = Clock::now();
    auto result = tester.TestSorted(sample);
    warm += std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    mlcapsule::defense::ShapiroWilkTester fresh;
    start = Clock::now();
    auto cold_result = fresh.TestSorted(sample);
    cold += std::chrono::duration<double, std::micro>(Clock::now() - start).count();
    if (!result.ok() || !cold_result.ok()) return;
  }
  warm /= kRounds;
  cold /= kRounds;
  std::printf(
      "{\"case\":\"shapiro_wilk\",\"n\":5000,\"cached_us\":%.1f,\"uncached_us\":%.1f,"
      "\"per_query_amortised_us\":%.2f,\"per_query_amortised_uncached_us\":%.2f}\n",
      warm, cold, warm / 10, cold / 10);
  std::fprintf(stderr,
               "Shapiro-Wilk n=5000: %.1f us with cached coefficients, %.1f us without; every 10 "
               "queries: %.2f / %.2f us per query\n",
               warm, cold, warm / 10, cold / 10);
}

}  // namespace

// A benign stream from an empty PRADA: the 10,000 Fashion-MNIST test images in a fixed random
// order, each "predicted" as its true label (a stand-in for an accurate victim), with the default
// configuration (exact search, delta 0.9). Reports every test's W: how many alarmed, the first
// alarm, and the smallest W, i.e. the false-alarm margin of the defaults on natural queries.
bool RunBenignStream(const std::vector<float>& images, const std::vector<uint8_t>& labels) {
  constexpr size_t kTestFirst = 60000, kTestCount = 10000;
  std::vector<size_t> order(kTestCount);
  std::iota(order.begin(), order.end(), kTestFirst);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  PradaConfig config{.dim = kDim, .classes = 10};
  auto prada = Prada::Create(config);
  if (!prada.ok()) return false;
  std::vector<double> ws;
  uint64_t alarms = 0, first_alarm = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    PradaObservation seen;
    mlcapsule::Status s = (*prada)->Observe(
        std::span<const float>(images.data() + order[i] * kDim, kDim), labels[order[i]], &seen);
    if (!s.ok()) return false;
    if (!seen.tested) continue;
    ws.push_back(seen.w);
    if (seen.alarm && alarms++ == 0) first_alarm = i + 1;
  }
  std::vector<double> sorted = ws;
  std::sort(sorted.begin(), sorted.end());
  std::printf(
      "{\"case\":\"benign_stream\",\"queries\":%zu,\"delta\":%.2f,\"tests\":%zu,"
      "\"alarms\":%llu,\"first_alarm\":%llu,\"min_w\":%.4f,\"w_p01\":%.4f,\"w_median\":%.4f,"
      "\"stored\":%llu}\n",
      order.size(), config.delta, ws.size(), static_cast<unsigned long long>(alarms),
      static_cast<unsigned long long>(first_alarm), sorted.empty() ? 0.0 : sorted.front(),
      sorted.empty() ? 0.0 : sorted[sorted.size() / 100],
      sorted.empty() ? 0.0 : sorted[sorted.size() / 2],
      static_cast<unsigned long long>((*prada)->stored()));
  std::fprintf(stderr, "benign_stream: %llu alarms in %zu tests, min W %.4f\n",
               static_cast<unsigned long long>(alarms), ws.size(),
               sorted.empty() ? 0.0 : sorted.front());
  return true;
}

int main(int argc, char** argv) {
  CLI::App app{"PRADA per-query cost and exactness on Fashion-MNIST (one thread)"};
  std::string data = "/usr/share/datasets/fashion-mnist";
  size_t query_count = 2000;
  std::vector<uint64_t> sizes = {1000, 10000, 100000};
  std::vector<std::string> cases = {
      "fashion_10class", "fashion_one_class", "fashion_one_class_inserting",
      "noise_one_class", "bounded_10class",   "bounded_one_class",
      "benign_stream"};
  std::vector<uint32_t> max_checks_values = {0, 2048, 1024, 512, 256};
  app.add_option("--data", data, "directory with the gzipped Fashion-MNIST IDX files");
  app.add_option("--queries", query_count, "held-out queries timed per configuration (max 2000)");
  app.add_option("--sizes", sizes, "stored counts S (at most 100000)");
  app.add_option("--cases", cases, "which cases to run");
  app.add_option("--max-checks", max_checks_values,
                 "bounded cases: PradaConfig::max_checks values, 0 (exact) first");
  CLI11_PARSE(app, argc, argv);
  query_count = std::min<size_t>(query_count, 2000);
  for (uint64_t size : sizes)
    if (size < 1 || size > 100000) {
      std::fprintf(stderr, "--sizes: %llu is outside [1, 100000]\n",
                   static_cast<unsigned long long>(size));
      return 2;
    }

  // Train then test, as one array of 70,000 images (the loader checked both counts and that every
  // label is below 10).
  std::vector<float> images;
  std::vector<uint8_t> labels;
  {
    auto fashion = mlcapsule::lab::LoadFashionMnist(data);
    if (!fashion.ok()) {
      std::fprintf(stderr, "cannot read Fashion-MNIST: %s\n", fashion.status().ToString().c_str());
      return 1;
    }
    images = std::move(fashion->train.pixels);
    images.insert(images.end(), fashion->test.pixels.begin(), fashion->test.pixels.end());
    for (const auto* set : {&fashion->train, &fashion->test})
      for (int32_t label : set->labels) labels.push_back(static_cast<uint8_t>(label));
  }
  constexpr size_t kOriginals = 68000, kShifted = 32000;
  std::vector<float> queries(images.begin() + kOriginals * kDim,
                             images.begin() + (kOriginals + query_count) * kDim);
  std::vector<uint8_t> query_labels(labels.begin() + kOriginals,
                                    labels.begin() + kOriginals + query_count);
  // The pool: originals, then right shifts, then a fixed shuffle.
  std::vector<size_t> order(kOriginals + kShifted);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(20190617));
  std::vector<float> pool(order.size() * kDim);
  std::vector<uint8_t> pool_labels(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const size_t source = order[i] < kOriginals ? order[i] : order[i] - kOriginals;
    const float* image = images.data() + source * kDim;
    float* out = pool.data() + i * kDim;
    if (order[i] < kOriginals) {
      std::copy(image, image + kDim, out);
    } else {
      for (size_t row = 0; row < 28; ++row) {
        out[row * 28] = 0;
        std::copy(image + row * 28, image + row * 28 + 27, out + row * 28 + 1);
      }
    }
    pool_labels[i] = labels[source];
  }
  // Uniform noise, stored and queried.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<float> uniform(0, 1);
  const uint64_t largest = *std::max_element(sizes.begin(), sizes.end());
  std::vector<float> noise(largest * kDim), noise_queries(query_count * kDim);
  for (float& v : noise) v = uniform(rng);
  for (float& v : noise_queries) v = uniform(rng);

  for (const std::string& name : cases) {
    if (name == "benign_stream") {
      if (!RunBenignStream(images, labels)) return 1;
      continue;
    }
    if (name == "bounded_10class" || name == "bounded_one_class") {
      const bool ten = name == "bounded_10class";
      if (!RunBounded(name, ten ? 10 : 1, largest, pool, ten ? &pool_labels : nullptr, queries,
                      query_labels, max_checks_values))
        return 1;
      continue;
    }
    for (uint64_t size : sizes) {
      Config config{name, 1, size, false, &pool, nullptr, &queries, nullptr, 0};
      config.exact_checks = size >= 100000 ? 100 : 200;
      if (name == "fashion_10class") {
        config.classes = 10;
        config.pool_labels = &pool_labels;
        config.query_labels = &query_labels;
      } else if (name == "fashion_one_class_inserting") {
        config.inserting = true;
      } else if (name == "noise_one_class") {
        config.pool = &noise;
        config.queries = &noise_queries;
        config.exact_checks = size >= 100000 ? 20 : 100;
      } else if (name != "fashion_one_class") {
        std::fprintf(stderr, "unknown case %s\n", name.c_str());
        return 2;
      }
      if (!RunConfig(config)) return 1;
    }
  }
  TimeShapiroWilk();
  return 0;
}
