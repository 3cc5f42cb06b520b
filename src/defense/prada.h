// PRADA: detection of model-extraction attacks from the stream of queries (Juuti, Szyller,
// Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing Attacks", EuroS&P 2019). Runs in
// the trusted core on every query, after the model has predicted class c for input x. Trusts its
// config (checked once by Create) and nothing about x, c or the bytes it restores.
//
//   MLC_ASSIGN_OR_RETURN(std::unique_ptr<Prada> prada,
//                        Prada::Create({.dim = 784, .classes = 10}));
//   PradaObservation seen;
//   MLC_RETURN_IF_ERROR(prada->Observe(input, predicted_class, &seen));
//   if (seen.alarm) ...          // this query's test found the distance history non-normal
//   if (seen.at_cap) ...         // the store is full (raise an alert once)
//
// The algorithm, per query x (float[dim]) with predicted class c:
//   - if G_c (the class's growing set) is empty, x is stored in G_c and D_{G_c} gets 0; no
//     distance is recorded for detection;
//   - otherwise d_min = min over y in G_c of L2(x, y); (c, d_min) is appended to the detection
//     history; if d_min > T_c, x is stored in G_c, d_min is appended to D_{G_c}, and
//     T_c = max(T_c, mean(D_{G_c}) - std(D_{G_c})) (T_c starts at 0);
//   - every `test_every` queries (all successful Observe calls count): the distances of every
//     class that has at least `min_class_entries` entries in the history window are pooled,
//     values outside mean +- 3 std of the pool are dropped (once), and if at least
//     max(3, min_class_entries) values remain, the Shapiro-Wilk test runs on them; the test
//     alarms when W < delta. A pool whose values are all equal has no W; it is reported as
//     W = 0, p = 0 and alarms (a distance history with zero spread is as far from normal as a
//     history can be). Fewer values: no test this time.
//   std is the population standard deviation (divide by n), as numpy's np.std in the paper's
//   implementation. The means and variances are computed with Welford's updates in double.
//
// L2 is sqrt of PradaSquaredDistance (below) in float: the reported d_min is bit-for-bit the
// minimum a naive scan with that function returns (the index below only prunes what provably
// cannot be the minimum; see prada.cc for the error analysis behind "provably").
//
// Bounded search (max_checks > 0; 0, the default, is the exact search above), FLANN's "checks":
// an index search visits the class's kd-tree best bin first (the leaf whose cell bound is
// smallest next) and stops after the first leaf that takes the stored vectors it has read to
// max_checks or more (so at most max_checks plus one leaf's worth, and at most that many exact
// distances); d_min is the exact minimum over the vectors read. It is never below the exact
// d_min, equals it whenever the nearest vector was among those read (always when the class has
// at most max_checks vectors), and is a deterministic function of the stored set and x, so
// restore stays bit-identical. The plain-scan paths (below: before the first basis, dim > 2048,
// classes of at most 128 vectors) stay exact; the fall-back to a scan when the index does not
// prune is off (the budget bounds the cost, and the switch depends on unpersisted timing
// history, which would break restore equivalence). An overestimate can only store x where the
// exact rule would not (d_min > T_c) and shifts that distance in the tested history. Measured
// (bench/defense/prada_bench.cc, Fashion-MNIST, 10^5 stored, 2000 held-out queries, store full):
//   max_checks  median us          d_min exact mean over    max |dW|     (10 classes / one class)
//   0 (exact)   247-309 / 534-726  100%      0            0
//   2048        186-225 / 226-243  99.6/98.2%  0.02/0.13%   0.002/0.010
//   1024        116-154 / 131-159  97.4/93.6%  0.15/0.41%   0.005/0.043
//   512          87-94  /  91-111  91.2/84.8%  0.5/0.9%     0.008/0.045
//   256          54-66  /  59-70   80.4/71.5%  1.4/2.1%     0.008/0.017
// On those benign streams every alarm decision (delta 0.9) was the exact one's except, for one
// class at 512 and 1024, the very first test (10 distances, W near 0.9); on a synthetic
// extraction stream the first alarm came at the same query or one test (10 queries) later.
//
// Bounds, and what happens at each:
//   - dim in [1, 2^24], classes in [1, 100000], window in [3, 5000] (5000: the largest sample
//     the Shapiro-Wilk approximation covers), test_every >= 1, 1 <= min_class_entries <= window,
//     delta in (0, 1], 1 <= max_stored with max_stored * dim <= 2^36: else Create fails.
//   - every element of x must be finite with |x_i| <= 2^24, x must have dim elements and c must
//     be < classes: else Observe returns InvalidArgument and changes nothing.
//   - at most max_stored vectors are stored over all classes (memory: max_stored * dim * 4 bytes
//     of vectors plus the index, see below). At the cap nothing more is stored: every G_c,
//     D_{G_c} and T_c is frozen, d_min is still computed and recorded, and every observation
//     reports at_cap. A class whose G_c is empty at the cap gets no distances at all.
//   - the detection history is the most recent `window` (class, distance) pairs over all
//     classes; "entries of a class" counts that class's pairs inside the window.
//
// The nearest-neighbour index (prada.cc): an orthonormal PCA basis of up to 128 directions,
// computed from up to 2048 stored vectors when 256, 2048 and 16384 vectors are stored (each
// rebuild re-projects everything stored: a one-off pause of about 0.3 s at 2048 and 0.5 s at
// 16384 vectors of dimension 784); per class a kd-tree over the leading 16 projected coordinates
// whose leaves keep all 128 coordinates and an interval for the norm of the residual. Cell,
// leaf-box, partial projected and residual-norm lower bounds prune; candidates are verified with
// the exact float distance in increasing order of their bound. Inserts are cheap (a projection, a
// descent, a rare leaf split or arena compaction). Until the first basis, for dim > 2048 and for
// classes of at most 128 vectors, searches are plain scans. Index memory: about 520 bytes per
// stored vector (dim >= 128), up to about 1.2 KB with the leaves' spare blocks and the waste a
// compaction has not yet reclaimed. Median cost per query (bench/defense/prada_bench.cc,
// Fashion-MNIST, one core): 12-27 us with 10^3 stored, 60-120 us with 10^4, 280 us (10 classes) to
// 640 us (one class) with 10^5, where a naive scan takes 5-23 ms. On data no exact index prunes
// (uniform noise) a class falls back to a plain scan after a few queries (re-trying the index every
// 32), so the cost stays that of a scan.
//
// Persistence: the caller seals what these write. Stored entries are append-only, so the caller
// can journal them incrementally (WriteEntries from the count it last wrote); the scalars are
// rewritten whole. Restore = a fresh Prada with the same config, ReadEntries of every entry, then
// ReadScalars: future observations are then bit-identical to those of the original object.
//   entry   = class:u32 distance:f32 vector:f32[dim]                   (little-endian)
//   scalars = magic:u32 "PRDS" version:u32 (= 2)
//             dim:u32 classes:u32 max_stored:u64 window:u32 test_every:u32 min_class_entries:u32
//             delta:f64 max_checks:u32                  (must equal this object's config)
//             observed:u64 stored:u64                   (stored must equal the entries restored)
//             queries_since_test:u32 alarmed:u8 last_w:f64 last_p:f64 tests:u64
//             window_size:u32 { class:u32 distance:f32 }[window_size]   (oldest first)
// Not thread-safe: one Prada per core, called from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "base/status.h"
#include "defense/shapiro_wilk.h"

namespace mlcapsule::defense {

struct PradaConfig {
  uint32_t dim = 0;
  uint32_t classes = 0;
  double delta = 0.9;
  uint64_t max_stored = 100000;
  uint32_t window = 5000;
  uint32_t test_every = 10;
  uint32_t min_class_entries = 10;
  // Stored vectors an index search may read (bounded search, above); 0: exact d_min.
  uint32_t max_checks = 0;
};

struct PradaObservation {
  bool stored = false;        // x was added to G_c
  bool at_cap = false;        // the store is full (max_stored vectors) after this query
  bool has_distance = false;  // G_c was not empty: min_distance is set and was recorded
  float min_distance = 0;
  bool tested = false;  // this query ran the Shapiro-Wilk test
  double w = 0, p = 0;  // the test's result, when tested
  bool alarm = false;   // tested and w < delta
};

inline constexpr uint32_t kPradaMaxClasses = 100000;
inline constexpr uint32_t kPradaMaxDim = 1u << 24;
inline constexpr uint32_t kPradaMaxWindow = 5000;
inline constexpr float kPradaMaxAbsValue = 16777216.0f;  // 2^24

// The squared L2 distance PRADA uses, in float with a fixed summation order (16 interleaved
// partial sums, then a fixed tree), so every build and every CPU gives the same bits.
float PradaSquaredDistance(std::span<const float> a, std::span<const float> b);

class Prada {
 public:
  static Result<std::unique_ptr<Prada>> Create(const PradaConfig& config);
  ~Prada();
  Prada(const Prada&) = delete;
  Prada& operator=(const Prada&) = delete;

  // One query; on error nothing changes and *out is reset.
  Status Observe(std::span<const float> x, uint32_t cls, PradaObservation* out);

  const PradaConfig& config() const { return config_; }
  uint64_t observed() const { return observed_; }
  uint64_t stored() const { return entry_class_.size(); }
  bool alarmed() const { return alarmed_; }  // any test ever alarmed
  double last_w() const { return last_w_; }  // NaN before the first test
  uint64_t tests() const { return tests_; }
  // Searches answered by the index (the rest were plain scans: small classes, no basis yet, or
  // data the index does not prune). For tests and benchmarks; not persisted.
  uint64_t indexed_searches() const { return indexed_searches_; }

  // Appends entries [from, stored()) in insertion order (nothing when from >= stored()).
  void WriteEntries(uint64_t from, ByteWriter* out) const;
  // Reads `count` entries and re-adds them in order (replaying G_c, D_{G_c} and T_c exactly).
  // All entries are checked before any is applied: class range, finite non-negative distance,
  // finite bounded vector, the cap, and consistency with the replayed rule (a class's first
  // entry has distance 0, every later one a distance above T_c at that point). On error nothing
  // changes.
  Status ReadEntries(ByteReader& in, uint64_t count);
  // Everything not derivable from the entries (bounded: about 8 bytes per window entry).
  void WriteScalars(ByteWriter* out) const;
  // Checked whole before anything changes; the stored count must match the entries restored.
  Status ReadScalars(ByteReader& in);

 private:
  struct ClassState;
  struct Index;
  struct Projected;
  struct WindowEntry {
    uint32_t cls;
    float distance;
  };
  explicit Prada(const PradaConfig& config);

  const float* Vector(uint64_t id) const;
  void Store(std::span<const float> x, uint32_t cls, float distance, const Projected* projected);
  void PushWindow(uint32_t cls, float distance);
  void RunTest(PradaObservation* out);

  PradaConfig config_;
  uint64_t vectors_per_chunk_ = 0;
  std::vector<std::unique_ptr<float[]>> chunks_;
  std::vector<uint32_t> entry_class_;
  std::vector<float> entry_distance_;
  std::vector<ClassState> classes_;
  std::unique_ptr<Index> index_;

  // Detection history: a ring of the last `window` pairs, per-class counts inside it, and the
  // same pairs sorted by (distance, class) so a test needs no sort.
  std::vector<WindowEntry> ring_;
  size_t ring_start_ = 0, ring_size_ = 0;
  std::vector<uint32_t> window_count_;
  std::vector<std::pair<float, uint32_t>> sorted_;

  uint64_t observed_ = 0;
  uint32_t queries_since_test_ = 0;
  bool alarmed_ = false;
  double last_w_, last_p_;
  uint64_t tests_ = 0;
  uint64_t indexed_searches_ = 0;
  ShapiroWilkTester tester_;
  std::vector<double> pool_;  // scratch for tests
};

}  // namespace mlcapsule::defense
