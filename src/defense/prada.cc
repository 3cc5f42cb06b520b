// PRADA (see prada.h): the detection rule, its bounded history, its persistence, and the exact
// nearest-neighbour index behind d_min.
//
// Why the index is exact. Let P be the orthonormal basis (k rows, double precision), v = x - mu
// for a fixed float mean mu, p = P v and r = sqrt(|v|^2 - |p|^2) the norm of the residual. For
// any two vectors |x - y|^2 = |p_x - p_y|^2 + |res_x - res_y|^2 >= |p_x[J] - p_y[J]|^2 +
// (r_x - r_y)^2 for any subset J of the coordinates. We compute p in float with a float copy of
// P; the worst-case error of that is at most eta(v) = eta_rel * |v|, eta_rel = 2 * 2^-24 *
// (ceil(dim / 8) + 4) * (sqrt(k) + 2) (8 interleaved partial sums of at most ceil(dim / 8) terms,
// plus the float rounding of P and of v; the factor 2 is slack). Residual norms are kept as
// intervals [lo, hi] that account for eta. A candidate y is pruned when
//     S + g^2 > (sqrt(B (1 + s)) + eta_x + eta_y)^2 (1 + s)
// where S is a float sum of squared coordinate differences over some J (or a kd-cell or leaf-box
// bound below it), g the gap between the two residual intervals, B the smallest squared distance
// verified so far and s = 1e-4. s covers the float rounding of S (at most ~130 non-negative
// terms: relative 8e-6) and of the final kernel (16 interleaved sums of at most 2048 / 16 terms:
// relative 8e-6; the index exists only for dim <= 2048). The true squared distance of a pruned y
// then exceeds B (1 + s), so its float value exceeds B: it cannot be the minimum. Survivors get
// PradaSquaredDistance, the function a naive scan uses, so the minimum is the same float.
// (config.max_checks > 0 trades this for speed: see prada.h.)
//
// Speed: candidates are verified in increasing order of their bound (the smallest bound is the
// likeliest neighbour, so the threshold tightens early), leaves store their points 8 to a block
// in SIMD-friendly rows with the 16 leading coordinates apart from the other 112 (most blocks are
// rejected on the first part), and a tree's blocks sit in two arenas in depth-first order.
#include "defense/prada.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

namespace mlcapsule::defense {
namespace {

#if defined(__x86_64__) && !defined(__clang__)
#define MLC_PRADA_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MLC_PRADA_CLONES
#endif

constexpr uint32_t kLanes = 8;            // stored points per block of the leaf layout
constexpr uint32_t kMaxProjected = 128;   // k: projected coordinates kept per point
constexpr uint32_t kSplitDims = 16;       // kd-tree splits and leaf boxes use the leading ones
constexpr uint32_t kLeafSplitAbove = 32;  // a leaf splits when an insert takes it past this
constexpr uint32_t kLeafBuildSize = 16;   // builds split down to leaves of at most this
constexpr uint32_t kMaxDepth = 48;
constexpr uint32_t kMaxIndexedDim = 2048;  // above: plain scans (the covariance is dim^2)
constexpr uint64_t kBasisAt[] = {256, 2048, 16384};
constexpr size_t kBasisSample = 2048;
constexpr int kSubspaceIterations = 6;
constexpr double kSlack = 1e-4;
constexpr size_t kScanBelow = 128;       // classes this small are scanned
constexpr float kIndexCostLimit = 0.7f;  // index cost / scan cost above which a class scans
constexpr uint32_t kIndexProbeEvery = 32;
constexpr uint32_t kScalarsMagic = 0x53445250;  // "PRDS"
constexpr uint32_t kScalarsVersion = 2;         // 2: config gained max_checks
constexpr float kInfinity = std::numeric_limits<float>::infinity();
constexpr float kPadRho = std::numeric_limits<float>::max();

// ---- Kernels ----
// Written with GCC vector types: one 8-float vector is a ymm register in the avx2 clone and a pair
// of xmm registers in the baseline one, with the same lane-by-lane arithmetic (no FMA in either),
// so every clone returns the same bits.

typedef float Floats8 __attribute__((vector_size(32)));
typedef float UnalignedFloats8 __attribute__((vector_size(32), aligned(4), may_alias));

// Eight floats at p (any alignment). A pointer, not a value: no vector crosses a call boundary
// of the baseline ABI.
inline const UnalignedFloats8* At(const float* p) {
  return reinterpret_cast<const UnalignedFloats8*>(p);
}

// Lane l of the 16 partial sums takes elements l, l + 16, l + 32, ...; then a fixed tree.
MLC_PRADA_CLONES float SquaredDistance(const float* a, const float* b, size_t n) {
  Floats8 low = {}, high = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const Floats8 d0 = *At(a + i) - *At(b + i);
    const Floats8 d1 = *At(a + i + 8) - *At(b + i + 8);
    low += d0 * d0;
    high += d1 * d1;
  }
  float acc[16];
  __builtin_memcpy(acc, &low, sizeof(low));
  __builtin_memcpy(acc + 8, &high, sizeof(high));
  for (size_t l = 0; i + l < n; ++l) {
    const float d = a[i + l] - b[i + l];
    acc[l] += d * d;
  }
  for (size_t width = 8; width >= 1; width /= 2)
    for (size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0];
}

float Reduce8(const Floats8& v) {
  float acc[8];
  __builtin_memcpy(acc, &v, sizeof(v));
  for (size_t width = 4; width >= 1; width /= 2)
    for (size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0];
}

// Dot product with 8 interleaved partial sums (the error bound in the file comment).
MLC_PRADA_CLONES float Dot8(const float* a, const float* b, size_t n) {
  Floats8 acc = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) acc += *At(a + i) * *At(b + i);
  float lanes[8];
  __builtin_memcpy(lanes, &acc, sizeof(acc));
  for (size_t l = 0; i + l < n; ++l) lanes[l] += a[i + l] * b[i + l];
  __builtin_memcpy(&acc, lanes, sizeof(acc));
  return Reduce8(acc);
}

// out[r] = Dot8(rows + r * n, b, n) for r < 4: the same sums, four chains at once.
MLC_PRADA_CLONES void Dot8x4(const float* rows, const float* b, size_t n, float* out) {
  Floats8 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const Floats8 x = *At(b + i);
    acc0 += *At(rows + i) * x;
    acc1 += *At(rows + n + i) * x;
    acc2 += *At(rows + 2 * n + i) * x;
    acc3 += *At(rows + 3 * n + i) * x;
  }
  Floats8* accs[4] = {&acc0, &acc1, &acc2, &acc3};
  for (size_t r = 0; r < 4; ++r) {
    float lanes[8];
    __builtin_memcpy(lanes, accs[r], sizeof(lanes));
    for (size_t l = 0; i + l < n; ++l) lanes[l] += rows[r * n + i + l] * b[i + l];
    __builtin_memcpy(accs[r], lanes, sizeof(lanes));
    out[r] = Reduce8(*accs[r]);
  }
}

// row[j] += sum_t a[t] * samples[t][j] for j in [begin, end): one block of the covariance.
MLC_PRADA_CLONES void AccumulateRow(float* row, const float* const* samples, const float* a,
                                    size_t count, size_t begin, size_t end) {
  for (size_t t = 0; t < count; ++t) {
    const float scale = a[t];
    const float* sample = samples[t];
    for (size_t j = begin; j < end; ++j) row[j] += scale * sample[j];
  }
}

uint32_t LanesAtMost(const Floats8& values, float threshold) {
  float lanes[8];
  __builtin_memcpy(lanes, &values, sizeof(lanes));
  uint32_t mask = 0;
  for (uint32_t l = 0; l < 8; ++l) mask |= static_cast<uint32_t>(lanes[l] <= threshold) << l;
  return mask;
}

// Lower bounds of the squared distances of one block of 8 stored points to the query: the
// residual-gap term, then the squared coordinate differences, filter part (the leading m
// coordinates, stored with the residual intervals) first, then the rest 16 at a time. Gives up as
// soon as every lane is above `threshold`. Returns the lanes at or below it (bit l = lane l) and
// their bounds in bounds[l]. (Two accumulators halve the add latency chain; the order of the sums
// of non-negative terms does not matter to the error bound.)
MLC_PRADA_CLONES uint32_t ScanBlock(const float* filter, const float* refine, const float* query,
                                    uint32_t m, uint32_t k, float query_rho_lo, float query_rho_hi,
                                    float threshold, float* bounds) {
  const Floats8 gap_low = query_rho_lo - *At(filter + kLanes);
  const Floats8 gap_high = *At(filter) - query_rho_hi;
  Floats8 gap = gap_low > gap_high ? gap_low : gap_high;
  gap = gap > 0 ? gap : Floats8{};
  Floats8 even = gap * gap, odd = {};
  uint32_t j = 0;
  for (; j + 2 <= m; j += 2) {
    const Floats8 d0 = query[j] - *At(filter + (j + 2) * kLanes);
    const Floats8 d1 = query[j + 1] - *At(filter + (j + 3) * kLanes);
    even += d0 * d0;
    odd += d1 * d1;
  }
  for (; j < m; ++j) {
    const Floats8 d = query[j] - *At(filter + (j + 2) * kLanes);
    even += d * d;
  }
  uint32_t alive = LanesAtMost(even + odd, threshold);
  for (uint32_t begin = m; begin < k && alive != 0; begin += 16) {
    const uint32_t end = std::min(k, begin + 16);
    uint32_t i = begin;
    for (; i + 2 <= end; i += 2) {
      const Floats8 d0 = query[i] - *At(refine + (i - m) * kLanes);
      const Floats8 d1 = query[i + 1] - *At(refine + (i + 1 - m) * kLanes);
      even += d0 * d0;
      odd += d1 * d1;
    }
    for (; i < end; ++i) {
      const Floats8 d = query[i] - *At(refine + (i - m) * kLanes);
      even += d * d;
    }
    alive = LanesAtMost(even + odd, threshold);
  }
  const Floats8 total = even + odd;
  __builtin_memcpy(bounds, &total, sizeof(total));
  return alive;
}

float RoundUp(double value) {
  float f = static_cast<float>(value);
  if (static_cast<double>(f) < value) f = std::nextafter(f, kInfinity);
  return f;
}
float RoundDown(double value) {
  float f = static_cast<float>(value);
  if (static_cast<double>(f) > value) f = std::nextafter(f, -kInfinity);
  return f;
}

// ---- Dense linear algebra for the basis (double, small) ----

// Orthonormalises the rows of `rows` (count x dim) by modified Gram-Schmidt, twice; a row that
// vanishes is replaced by the first unit vector that is not in the span of the previous rows.
void Orthonormalize(std::vector<double>& rows, size_t count, size_t dim) {
  size_t next_unit = 0;
  for (size_t i = 0; i < count; ++i) {
    double* row = rows.data() + i * dim;
    for (int attempt = 0;; ++attempt) {
      double before = 0;
      for (size_t j = 0; j < dim; ++j) before += row[j] * row[j];
      for (int pass = 0; pass < 2; ++pass)
        for (size_t p = 0; p < i; ++p) {
          const double* other = rows.data() + p * dim;
          double dot = 0;
          for (size_t j = 0; j < dim; ++j) dot += row[j] * other[j];
          for (size_t j = 0; j < dim; ++j) row[j] -= dot * other[j];
        }
      double after = 0;
      for (size_t j = 0; j < dim; ++j) after += row[j] * row[j];
      if (after > 1e-20 * before && after > 1e-300) {
        const double inverse = 1.0 / std::sqrt(after);
        for (size_t j = 0; j < dim; ++j) row[j] *= inverse;
        break;
      }
      // Degenerate: try unit vectors in turn (dim >= count guarantees one works).
      std::fill(row, row + dim, 0.0);
      row[next_unit % dim] = 1.0;
      ++next_unit;
      (void)attempt;
    }
  }
}

// Cyclic Jacobi eigen-decomposition of the symmetric n x n matrix `a` (destroyed); returns the
// eigenvalues and fills `vectors` (column j = eigenvector j).
std::vector<double> SymmetricEigen(std::vector<double>& a, size_t n, std::vector<double>* vectors) {
  std::vector<double>& v = *vectors;
  v.assign(n * n, 0.0);
  for (size_t i = 0; i < n; ++i) v[i * n + i] = 1.0;
  for (int sweep = 0; sweep < 64; ++sweep) {
    double off = 0, diagonal = 0;
    for (size_t p = 0; p < n; ++p) {
      diagonal += a[p * n + p] * a[p * n + p];
      for (size_t q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    }
    if (off <= 1e-24 * diagonal || off == 0) break;
    for (size_t p = 0; p < n; ++p)
      for (size_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (size_t r = 0; r < n; ++r) {  // columns p, q
          const double arp = a[r * n + p], arq = a[r * n + q];
          a[r * n + p] = c * arp - s * arq;
          a[r * n + q] = s * arp + c * arq;
        }
        for (size_t r = 0; r < n; ++r) {  // rows p, q
          const double apr = a[p * n + r], aqr = a[q * n + r];
          a[p * n + r] = c * apr - s * aqr;
          a[q * n + r] = s * apr + c * aqr;
        }
        for (size_t r = 0; r < n; ++r) {
          const double vrp = v[r * n + p], vrq = v[r * n + q];
          v[r * n + p] = c * vrp - s * vrq;
          v[r * n + q] = s * vrp + c * vrq;
        }
      }
  }
  std::vector<double> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = a[i * n + i];
  return values;
}

}  // namespace

float PradaSquaredDistance(std::span<const float> a, std::span<const float> b) {
  assert(a.size() == b.size());
  return SquaredDistance(a.data(), b.data(), std::min(a.size(), b.size()));
}

// ---- The index ----

// A vector in basis coordinates.
struct Prada::Projected {
  std::vector<float> coords;  // k
  float rho_lo = 0, rho_hi = 0;
  float norm_hi = 0;  // an upper bound of |x - mu|
  float eta = 0;      // the bound of the error of coords
};

struct Prada::Index {
  struct Leaf {
    // The leaf's points live in blocks first_block.. of its tree's arenas (capacity blocks
    // reserved). A block holds 8 points, one row of 8 lanes per value. filter: rho_lo, rho_hi and
    // the leading m coordinates; refine: coordinates m..k-1. Padding lanes hold huge residual
    // intervals, so no bound lets them through.
    size_t first_block = 0, capacity = 0;
    std::vector<uint32_t> ids;
    std::array<float, kSplitDims> lo, hi;
    float rho_lo_min = kInfinity, rho_hi_max = -kInfinity;
    size_t no_split_below = 0;  // a split failed (all equal): retry at this size
  };
  struct Node {
    int32_t child[2] = {-1, -1};  // internal: left (coordinate < split), right
    int32_t leaf = -1;            // leaf: index into leaves
    uint32_t dim = 0;
    float split = 0;
    uint32_t depth = 0;
  };
  // Leaves' blocks are allocated from two arenas per tree, in depth-first order after a build or
  // a compaction, so that the leaves a search visits one after the other mostly sit one after
  // the other in memory. A leaf that outgrows its blocks moves to the end (its old blocks are
  // wasted until the next compaction, which runs when the waste exceeds half of what is used).
  struct Tree {
    std::vector<Node> nodes;  // nodes[0] is the root
    std::vector<Leaf> leaves;
    std::vector<int32_t> free_leaves;
    std::vector<float> filter_arena, refine_arena;
    size_t used_blocks = 0, wasted_blocks = 0;
    float max_norm = 0;
  };
  // One stored point during a build.
  struct Record {
    uint32_t id;
    float rho_lo, rho_hi;
    const float* coords;
  };

  uint32_t dim = 0, k = 0, split_dims = 0;
  size_t filter_floats = 0, refine_floats = 0;  // per block
  double eta_rel = 0;
  std::vector<float> mean;                   // dim
  std::vector<float> rows;                   // k x dim
  std::vector<std::unique_ptr<Tree>> trees;  // per class, null while the class is empty

  static std::unique_ptr<Index> Create(const Prada& owner);

  // Scratch, reused across queries.
  std::vector<float> centered;
  std::vector<float> offsets;

  void Project(const float* x, Projected* out) {
    centered.resize(dim);
    double norm_squared = 0;
    for (uint32_t j = 0; j < dim; ++j) {
      centered[j] = x[j] - mean[j];
      norm_squared += static_cast<double>(centered[j]) * centered[j];
    }
    out->coords.resize(k);
    double projected_squared = 0;
    uint32_t i = 0;
    for (; i + 4 <= k; i += 4)
      Dot8x4(rows.data() + static_cast<size_t>(i) * dim, centered.data(), dim, &out->coords[i]);
    for (; i < k; ++i)
      out->coords[i] = Dot8(rows.data() + static_cast<size_t>(i) * dim, centered.data(), dim);
    for (i = 0; i < k; ++i)
      projected_squared += static_cast<double>(out->coords[i]) * out->coords[i];
    // |v*| is within a relative 2^-24 of the float v (plus double rounding): widen by 4 ulps.
    const double norm = std::sqrt(norm_squared);
    const double norm_lo = norm * (1 - 4.0 / (1 << 24)), norm_hi = norm * (1 + 4.0 / (1 << 24));
    const double eta = eta_rel * norm_hi;
    const double projected = std::sqrt(projected_squared);
    const double projected_lo = std::max(0.0, projected - eta), projected_hi = projected + eta;
    out->rho_lo =
        RoundDown(std::sqrt(std::max(0.0, norm_lo * norm_lo - projected_hi * projected_hi)));
    out->rho_hi =
        RoundUp(std::sqrt(std::max(0.0, norm_hi * norm_hi - projected_lo * projected_lo)));
    out->norm_hi = RoundUp(norm_hi);
    out->eta = RoundUp(eta);
  }

  // The squared-distance bound above which a candidate cannot beat `best`.
  static float Threshold(float best, float eta) {
    if (!(best < kInfinity)) return kInfinity;
    const double root = std::sqrt(static_cast<double>(best) * (1 + kSlack)) + eta;
    return RoundUp(root * root * (1 + kSlack));
  }

  // ---- Tree construction ----

  // Gives `leaf` `capacity` fresh blocks at the end of the arenas, moving its current ones.
  void Reserve(Tree& tree, Leaf& leaf, size_t capacity) {
    const size_t in_use = (leaf.ids.size() + kLanes - 1) / kLanes;
    const size_t first = tree.used_blocks;
    tree.used_blocks += capacity;
    tree.filter_arena.resize(tree.used_blocks * filter_floats);
    tree.refine_arena.resize(tree.used_blocks * refine_floats);
    std::copy_n(tree.filter_arena.begin() + leaf.first_block * filter_floats,
                in_use * filter_floats, tree.filter_arena.begin() + first * filter_floats);
    std::copy_n(tree.refine_arena.begin() + leaf.first_block * refine_floats,
                in_use * refine_floats, tree.refine_arena.begin() + first * refine_floats);
    tree.wasted_blocks += leaf.capacity;
    leaf.first_block = first;
    leaf.capacity = capacity;
  }

  void AppendToLeaf(Tree& tree, Leaf& leaf, uint32_t id, const float* coords, float rho_lo,
                    float rho_hi) {
    const size_t count = leaf.ids.size();
    const size_t lane = count % kLanes;
    const size_t block = leaf.first_block + count / kLanes;
    if (lane == 0) {
      if (count / kLanes == leaf.capacity) {
        Reserve(tree, leaf, std::max<size_t>(1, 2 * leaf.capacity));
        return AppendToLeaf(tree, leaf, id, coords, rho_lo, rho_hi);
      }
      float* fresh = tree.filter_arena.data() + block * filter_floats;
      std::fill(fresh, fresh + 2 * kLanes, kPadRho);
      std::fill(fresh + 2 * kLanes, fresh + filter_floats, 0.0f);
      std::fill_n(tree.refine_arena.data() + block * refine_floats, refine_floats, 0.0f);
    }
    float* filter = tree.filter_arena.data() + block * filter_floats;
    float* refine = tree.refine_arena.data() + block * refine_floats;
    filter[lane] = rho_lo;
    filter[kLanes + lane] = rho_hi;
    for (uint32_t r = 0; r < split_dims; ++r) filter[(r + 2) * kLanes + lane] = coords[r];
    for (uint32_t r = split_dims; r < k; ++r) refine[(r - split_dims) * kLanes + lane] = coords[r];
    leaf.ids.push_back(id);
    if (count == 0) {
      for (uint32_t j = 0; j < split_dims; ++j) leaf.lo[j] = leaf.hi[j] = coords[j];
    } else {
      for (uint32_t j = 0; j < split_dims; ++j) {
        leaf.lo[j] = std::min(leaf.lo[j], coords[j]);
        leaf.hi[j] = std::max(leaf.hi[j], coords[j]);
      }
    }
    leaf.rho_lo_min = std::min(leaf.rho_lo_min, rho_lo);
    leaf.rho_hi_max = std::max(leaf.rho_hi_max, rho_hi);
  }

  int32_t NewLeaf(Tree& tree) {
    if (!tree.free_leaves.empty()) {
      const int32_t index = tree.free_leaves.back();
      tree.free_leaves.pop_back();
      tree.leaves[index] = Leaf();
      return index;
    }
    tree.leaves.emplace_back();
    return static_cast<int32_t>(tree.leaves.size() - 1);
  }

  // Makes nodes[node] the root of a subtree holding `records` (reordered in place).
  void Build(Tree& tree, int32_t node, std::span<Record> records, uint32_t depth) {
    tree.nodes[node].depth = depth;
    uint32_t best_dim = 0;
    float best_spread = 0;
    if (records.size() > kLeafBuildSize && depth < kMaxDepth) {
      for (uint32_t j = 0; j < split_dims; ++j) {
        float lo = records[0].coords[j], hi = lo;
        for (const Record& record : records) {
          lo = std::min(lo, record.coords[j]);
          hi = std::max(hi, record.coords[j]);
        }
        if (hi - lo > best_spread) {
          best_spread = hi - lo;
          best_dim = j;
        }
      }
    }
    if (best_spread > 0) {
      std::vector<float> values(records.size());
      for (size_t i = 0; i < records.size(); ++i) values[i] = records[i].coords[best_dim];
      std::sort(values.begin(), values.end());
      float split = values[values.size() / 2];
      if (split == values.front())  // the lower half is one value: split just above it
        split = *std::upper_bound(values.begin(), values.end(), values.front());
      auto middle = std::partition(records.begin(), records.end(), [&](const Record& record) {
        return record.coords[best_dim] < split;
      });
      const size_t left_count = static_cast<size_t>(middle - records.begin());
      const int32_t left = static_cast<int32_t>(tree.nodes.size());
      tree.nodes.emplace_back();
      tree.nodes.emplace_back();
      Node& self = tree.nodes[node];
      self.leaf = -1;
      self.dim = best_dim;
      self.split = split;
      self.child[0] = left;
      self.child[1] = left + 1;
      Build(tree, left, records.first(left_count), depth + 1);
      Build(tree, left + 1, records.subspan(left_count), depth + 1);
      return;
    }
    const int32_t leaf_index = NewLeaf(tree);
    tree.nodes[node].leaf = leaf_index;
    tree.nodes[node].child[0] = tree.nodes[node].child[1] = -1;
    Leaf& leaf = tree.leaves[leaf_index];
    Reserve(tree, leaf, (records.size() + kLanes - 1) / kLanes + 1);  // room for a few inserts
    for (const Record& record : records)
      AppendToLeaf(tree, leaf, record.id, record.coords, record.rho_lo, record.rho_hi);
    if (best_spread == 0 && records.size() > kLeafBuildSize)
      leaf.no_split_below = 2 * records.size();
  }

  void SplitLeaf(Tree& tree, int32_t node) {
    const int32_t leaf_index = tree.nodes[node].leaf;
    Leaf old = std::move(tree.leaves[leaf_index]);
    tree.leaves[leaf_index] = Leaf();
    tree.free_leaves.push_back(leaf_index);
    tree.wasted_blocks += old.capacity;
    const size_t count = old.ids.size();
    std::vector<float> coords(count * k);
    std::vector<Record> records(count);
    for (size_t i = 0; i < count; ++i) {
      const float* filter =
          tree.filter_arena.data() + (old.first_block + i / kLanes) * filter_floats;
      const float* refine =
          tree.refine_arena.data() + (old.first_block + i / kLanes) * refine_floats;
      const size_t lane = i % kLanes;
      for (uint32_t r = 0; r < split_dims; ++r) coords[i * k + r] = filter[(r + 2) * kLanes + lane];
      for (uint32_t r = split_dims; r < k; ++r)
        coords[i * k + r] = refine[(r - split_dims) * kLanes + lane];
      records[i] = {old.ids[i], filter[lane], filter[kLanes + lane], coords.data() + i * k};
    }
    Build(tree, node, records, tree.nodes[node].depth);
  }

  void Insert(uint32_t cls, uint32_t id, const Projected& projected) {
    std::unique_ptr<Tree>& slot = trees[cls];
    if (!slot) {
      slot = std::make_unique<Tree>();
      slot->nodes.emplace_back();
      slot->nodes[0].leaf = NewLeaf(*slot);
    }
    Tree& tree = *slot;
    tree.max_norm = std::max(tree.max_norm, projected.norm_hi);
    int32_t node = 0;
    while (tree.nodes[node].leaf < 0) {
      const Node& n = tree.nodes[node];
      node = n.child[projected.coords[n.dim] < n.split ? 0 : 1];
    }
    Leaf& leaf = tree.leaves[tree.nodes[node].leaf];
    AppendToLeaf(tree, leaf, id, projected.coords.data(), projected.rho_lo, projected.rho_hi);
    if (leaf.ids.size() > kLeafSplitAbove && leaf.ids.size() >= leaf.no_split_below &&
        tree.nodes[node].depth < kMaxDepth)
      SplitLeaf(tree, node);
    if (tree.wasted_blocks > 64 && 2 * tree.wasted_blocks > tree.used_blocks) Compact(tree);
  }

  // Rewrites the arenas with the leaves in depth-first order and no waste (a spare block each).
  void Compact(Tree& tree) {
    std::vector<float> filter_arena, refine_arena;
    size_t used = 0;
    std::vector<int32_t> stack = {0};
    while (!stack.empty()) {
      const Node& n = tree.nodes[stack.back()];
      stack.pop_back();
      if (n.leaf < 0) {
        stack.push_back(n.child[1]);
        stack.push_back(n.child[0]);
        continue;
      }
      Leaf& leaf = tree.leaves[n.leaf];
      const size_t in_use = (leaf.ids.size() + kLanes - 1) / kLanes;
      const size_t capacity = in_use + 1;
      filter_arena.resize((used + capacity) * filter_floats);
      refine_arena.resize((used + capacity) * refine_floats);
      std::copy_n(tree.filter_arena.begin() + leaf.first_block * filter_floats,
                  in_use * filter_floats, filter_arena.begin() + used * filter_floats);
      std::copy_n(tree.refine_arena.begin() + leaf.first_block * refine_floats,
                  in_use * refine_floats, refine_arena.begin() + used * refine_floats);
      leaf.first_block = used;
      leaf.capacity = capacity;
      used += capacity;
    }
    tree.filter_arena = std::move(filter_arena);
    tree.refine_arena = std::move(refine_arena);
    tree.used_blocks = used;
    tree.wasted_blocks = 0;
  }

  // ---- Search ----

  // Candidates whose lower bound passed, verified in increasing bound order: the smallest bound
  // is the likeliest nearest neighbour, so verifying it first tightens the threshold soonest.
  struct Candidate {
    float bound;
    uint32_t id;
    bool operator>(const Candidate& other) const {
      return bound > other.bound || (bound == other.bound && id > other.id);
    }
  };
  struct SearchState {
    const float* x;
    const Projected* query;
    const Prada* owner;
    float eta;
    float best = kInfinity;
    float threshold = kInfinity;
    size_t scanned = 0, verified = 0;  // points whose blocks were read, exact distances computed
    size_t give_up_at = 0;             // pending + verified beyond this: the index is not pruning
    bool gave_up = false;
  };
  std::vector<Candidate> pending;  // a min-heap (std::greater)

  void Verify(SearchState& state) {
    std::pop_heap(pending.begin(), pending.end(), std::greater<>());
    const Candidate candidate = pending.back();
    pending.pop_back();
    if (candidate.bound > state.threshold) return;
    ++state.verified;
    const float distance = SquaredDistance(state.x, state.owner->Vector(candidate.id), dim);
    if (distance < state.best) {
      state.best = distance;
      state.threshold = Threshold(distance, state.eta);
    }
  }

  void ScanLeaf(const Tree& tree, const Leaf& leaf, SearchState& state) {
    const Projected& q = *state.query;
    float bound = 0;
    for (uint32_t j = 0; j < split_dims; ++j) {
      const float c = q.coords[j];
      const float d = std::max(std::max(leaf.lo[j] - c, c - leaf.hi[j]), 0.0f);
      bound += d * d;
    }
    const float gap =
        std::max(std::max(q.rho_lo - leaf.rho_hi_max, leaf.rho_lo_min - q.rho_hi), 0.0f);
    bound += gap * gap;
    if (bound > state.threshold) return;
    const size_t blocks = (leaf.ids.size() + kLanes - 1) / kLanes;
    state.scanned += leaf.ids.size();
    float bounds[kLanes];
    bool added = false;
    for (size_t b = 0; b < blocks; ++b) {
      uint32_t alive =
          ScanBlock(tree.filter_arena.data() + (leaf.first_block + b) * filter_floats,
                    tree.refine_arena.data() + (leaf.first_block + b) * refine_floats,
                    q.coords.data(), split_dims, k, q.rho_lo, q.rho_hi, state.threshold, bounds);
      while (alive != 0) {
        const uint32_t lane = static_cast<uint32_t>(__builtin_ctz(alive));
        alive &= alive - 1;
        const size_t member = b * kLanes + lane;
        if (member >= leaf.ids.size()) continue;
        pending.push_back({bounds[lane], leaf.ids[member]});
        std::push_heap(pending.begin(), pending.end(), std::greater<>());
        added = true;
      }
    }
    if (added) Verify(state);
    if (pending.size() + state.verified > state.give_up_at) state.gave_up = true;
  }

  void Visit(const Tree& tree, int32_t node, float cell_bound, SearchState& state) {
    const Node& n = tree.nodes[node];
    if (state.gave_up) return;
    if (n.leaf >= 0) {
      ScanLeaf(tree, tree.leaves[n.leaf], state);
      return;
    }
    const float diff = state.query->coords[n.dim] - n.split;
    const int near = diff < 0 ? 0 : 1;
    Visit(tree, n.child[near], cell_bound, state);
    const float old = offsets[n.dim];
    const float far_bound = cell_bound - old * old + diff * diff;
    if (far_bound <= state.threshold) {
      offsets[n.dim] = diff;
      Visit(tree, n.child[1 - near], far_bound, state);
      offsets[n.dim] = old;
    }
  }

  // The bounded search's traversal: best bin first (Arya and Mount; FLANN's `checks`). Subtrees
  // wait in a heap by their cell bound, each pop descends to a leaf pushing the far children it
  // passes, and the search stops once the leaves read hold max_checks points or more, or no cell
  // can beat the best distance so far.
  struct Branch {
    float bound;
    int32_t node;
    std::array<float, kSplitDims> offsets;
    bool operator>(const Branch& other) const {
      return bound > other.bound || (bound == other.bound && node > other.node);
    }
  };
  std::vector<Branch> branches;  // a min-heap (std::greater)

  void VisitBestFirst(const Tree& tree, size_t max_checks, SearchState& state) {
    branches.clear();
    branches.push_back({0.0f, 0, {}});
    while (!branches.empty() && state.scanned < max_checks) {
      std::pop_heap(branches.begin(), branches.end(), std::greater<>());
      Branch branch = branches.back();
      branches.pop_back();
      if (branch.bound > state.threshold) break;  // every other waiting cell is as far
      int32_t node = branch.node;
      while (tree.nodes[node].leaf < 0) {
        const Node& n = tree.nodes[node];
        const float diff = state.query->coords[n.dim] - n.split;
        const int near = diff < 0 ? 0 : 1;
        const float old = branch.offsets[n.dim];
        const float far_bound = branch.bound - old * old + diff * diff;
        if (far_bound <= state.threshold) {
          branches.push_back({far_bound, n.child[1 - near], branch.offsets});
          branches.back().offsets[n.dim] = diff;
          std::push_heap(branches.begin(), branches.end(), std::greater<>());
        }
        node = n.child[near];
      }
      ScanLeaf(tree, tree.leaves[tree.nodes[node].leaf], state);
    }
  }

  // The minimum squared distance from x to the class's `members` (its tree must exist). When
  // the bounds do not prune (distances that concentrate, as in high-dimensional noise), the
  // search gives up once a quarter of the class awaits or has had an exact distance, and scans
  // the class instead; `cost` gets the work done relative to a plain scan.
  // With a budget (max_checks > 0) the traversal is best bin first and stops at the first leaf
  // that takes the points scanned to max_checks or more; the pending candidates are then
  // verified as usual, so the result is the exact minimum over the points of the leaves read: an
  // upper bound of the class's minimum. It never gives up for a scan (that costs more).
  float Search(uint32_t cls, const float* x, const Projected& query, const Prada* owner,
               std::span<const uint32_t> members, uint32_t max_checks, double* cost) {
    const Tree& tree = *trees[cls];
    SearchState state{x, &query, owner,
                      RoundUp(static_cast<double>(query.eta) + eta_rel * tree.max_norm)};
    state.give_up_at = members.size() / 4;
    pending.clear();
    if (max_checks > 0) {
      state.give_up_at = std::numeric_limits<size_t>::max();
      VisitBestFirst(tree, max_checks, state);
    } else {
      offsets.assign(split_dims, 0.0f);
      Visit(tree, 0, 0.0f, state);
    }
    if (state.gave_up) {
      for (uint32_t id : members)
        state.best = std::min(state.best, SquaredDistance(x, owner->Vector(id), dim));
      *cost = 1.5;
      return state.best;
    }
    while (!pending.empty() && pending.front().bound <= state.threshold) Verify(state);
    // Reading a point's blocks costs about a fifth of an exact distance (k + 2 of dim floats,
    // for the 784-dimensional data this was tuned on).
    *cost = (static_cast<double>(state.verified) + 0.2 * static_cast<double>(state.scanned)) /
            static_cast<double>(members.size());
    return state.best;
  }
};

// ---- Prada ----

struct Prada::ClassState {
  std::vector<uint32_t> members;  // ids, insertion order
  uint64_t stored = 0;            // |D_{G_c}|
  double mean = 0, m2 = 0;        // Welford over D_{G_c}
  double threshold = 0;           // T_c
  // Speed only (never persisted, no effect on results): a moving average of the index's cost
  // relative to a plain scan for this class, and queries since the index was last tried.
  float index_cost = 0;
  uint32_t since_index_probe = 0;

  void Add(float distance) {
    ++stored;
    const double value = distance;
    const double delta = value - mean;
    mean += delta / static_cast<double>(stored);
    m2 += delta * (value - mean);
    const double std_dev = std::sqrt(std::max(0.0, m2 / static_cast<double>(stored)));
    threshold = std::max(threshold, mean - std_dev);
  }
};

// Computes the basis from an evenly spaced sample of everything stored, then re-projects every
// stored vector and builds each class's tree.
std::unique_ptr<Prada::Index> Prada::Index::Create(const Prada& owner) {
  const uint64_t count = owner.stored();
  auto index = std::make_unique<Index>();
  Index& ix = *index;
  const uint32_t dim = owner.config_.dim;
  ix.dim = dim;
  ix.k = std::min(kMaxProjected, dim);
  ix.split_dims = std::min(kSplitDims, ix.k);
  ix.filter_floats = static_cast<size_t>(ix.split_dims + 2) * kLanes;
  ix.refine_floats = static_cast<size_t>(ix.k - ix.split_dims) * kLanes;
  ix.eta_rel = 2.0 * std::ldexp(1.0, -24) * (std::ceil(dim / 8.0) + 4) *
               (std::sqrt(static_cast<double>(ix.k)) + 2);
  const uint64_t step = std::max<uint64_t>(1, count / kBasisSample);
  std::vector<const float*> sample;
  for (uint64_t i = 0; i < count && sample.size() < kBasisSample; i += step)
    sample.push_back(owner.Vector(i));
  std::vector<double> mean(dim, 0.0);
  for (const float* s : sample)
    for (uint32_t j = 0; j < dim; ++j) mean[j] += s[j];
  ix.mean.resize(dim);
  for (uint32_t j = 0; j < dim; ++j)
    ix.mean[j] = static_cast<float>(mean[j] / static_cast<double>(sample.size()));
  std::vector<float> centered(sample.size() * dim);
  std::vector<const float*> centered_rows(sample.size());
  for (size_t s = 0; s < sample.size(); ++s) {
    for (uint32_t j = 0; j < dim; ++j) centered[s * dim + j] = sample[s][j] - ix.mean[j];
    centered_rows[s] = centered.data() + s * dim;
  }
  // Upper triangle of the scatter matrix, 8 samples per pass over it, then mirrored.
  std::vector<float> scatter(static_cast<size_t>(dim) * dim, 0.0f);
  for (size_t s0 = 0; s0 < sample.size(); s0 += 8) {
    const size_t n = std::min<size_t>(8, sample.size() - s0);
    for (uint32_t i = 0; i < dim; ++i) {
      float a[8];
      for (size_t t = 0; t < n; ++t) a[t] = centered_rows[s0 + t][i];
      AccumulateRow(scatter.data() + static_cast<size_t>(i) * dim, &centered_rows[s0], a, n, i,
                    dim);
    }
  }
  for (uint32_t i = 0; i < dim; ++i)
    for (uint32_t j = 0; j < i; ++j)
      scatter[static_cast<size_t>(i) * dim + j] = scatter[static_cast<size_t>(j) * dim + i];
  // Subspace iteration for the leading k directions, then Rayleigh-Ritz to order them.
  const uint32_t k = ix.k;
  std::vector<double> basis(static_cast<size_t>(k) * dim);
  std::mt19937_64 rng(0x50524144);  // fixed: the index is a pure function of the stored data
  std::uniform_real_distribution<double> uniform(-1, 1);
  for (double& value : basis) value = uniform(rng);
  Orthonormalize(basis, k, dim);
  std::vector<float> basis_f(basis.size()), product(basis.size());
  auto multiply = [&]() {  // product = basis * scatter (row i: scatter * basis_i)
    for (size_t i = 0; i < basis.size(); ++i) basis_f[i] = static_cast<float>(basis[i]);
    for (uint32_t r = 0; r < dim; ++r) {
      const float* scatter_row = scatter.data() + static_cast<size_t>(r) * dim;
      for (uint32_t i = 0; i < k; ++i)
        product[static_cast<size_t>(i) * dim + r] =
            Dot8(scatter_row, basis_f.data() + static_cast<size_t>(i) * dim, dim);
    }
  };
  for (int iteration = 0; iteration < kSubspaceIterations; ++iteration) {
    multiply();
    for (size_t i = 0; i < basis.size(); ++i) basis[i] = product[i];
    Orthonormalize(basis, k, dim);
  }
  multiply();
  std::vector<double> small(static_cast<size_t>(k) * k), vectors;
  for (uint32_t a = 0; a < k; ++a)
    for (uint32_t b = 0; b < k; ++b) {
      double dot = 0;
      for (uint32_t j = 0; j < dim; ++j)
        dot += basis[static_cast<size_t>(a) * dim + j] * product[static_cast<size_t>(b) * dim + j];
      small[static_cast<size_t>(a) * k + b] = dot;
    }
  for (uint32_t a = 0; a < k; ++a)
    for (uint32_t b = a + 1; b < k; ++b) {
      const double average =
          0.5 * (small[static_cast<size_t>(a) * k + b] + small[static_cast<size_t>(b) * k + a]);
      small[static_cast<size_t>(a) * k + b] = small[static_cast<size_t>(b) * k + a] = average;
    }
  const std::vector<double> values = SymmetricEigen(small, k, &vectors);
  std::vector<uint32_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return values[a] > values[b]; });
  std::vector<double> rotated(basis.size(), 0.0);
  for (uint32_t a = 0; a < k; ++a)
    for (uint32_t b = 0; b < k; ++b) {
      const double weight = vectors[static_cast<size_t>(b) * k + order[a]];
      const double* from = basis.data() + static_cast<size_t>(b) * dim;
      double* to = rotated.data() + static_cast<size_t>(a) * dim;
      for (uint32_t j = 0; j < dim; ++j) to[j] += weight * from[j];
    }
  Orthonormalize(rotated, k, dim);  // exact orthonormality is what the bounds rely on
  ix.rows.resize(rotated.size());
  for (size_t i = 0; i < rotated.size(); ++i) ix.rows[i] = static_cast<float>(rotated[i]);

  // Re-project every stored vector and build each class's tree.
  ix.trees.resize(owner.config_.classes);
  std::vector<float> coords(count * k);
  std::vector<Index::Record> records(count);
  std::vector<float> norms(count);
  Projected p;
  for (uint64_t id = 0; id < count; ++id) {
    ix.Project(owner.Vector(id), &p);
    std::copy(p.coords.begin(), p.coords.end(), coords.begin() + id * k);
    records[id] = {static_cast<uint32_t>(id), p.rho_lo, p.rho_hi, coords.data() + id * k};
    norms[id] = p.norm_hi;
  }
  std::vector<Index::Record> class_records;
  for (uint32_t c = 0; c < owner.config_.classes; ++c) {
    const std::vector<uint32_t>& members = owner.classes_[c].members;
    if (members.empty()) continue;
    class_records.clear();
    auto tree = std::make_unique<Index::Tree>();
    for (uint32_t id : members) {
      class_records.push_back(records[id]);
      tree->max_norm = std::max(tree->max_norm, norms[id]);
    }
    tree->nodes.emplace_back();
    ix.Build(*tree, 0, class_records, 0);
    ix.trees[c] = std::move(tree);
  }
  return index;
}

Prada::Prada(const PradaConfig& config)
    : config_(config),
      last_w_(std::numeric_limits<double>::quiet_NaN()),
      last_p_(std::numeric_limits<double>::quiet_NaN()) {
  vectors_per_chunk_ = std::max<uint64_t>(1, (uint64_t{1} << 20) / config.dim);
  classes_.resize(config.classes);
  window_count_.assign(config.classes, 0);
  ring_.resize(config.window);
  sorted_.reserve(config.window);
}

Prada::~Prada() = default;

Result<std::unique_ptr<Prada>> Prada::Create(const PradaConfig& config) {
  if (config.dim < 1 || config.dim > kPradaMaxDim)
    return InvalidArgument("PRADA dim {} is outside [1, {}]", config.dim, kPradaMaxDim);
  if (config.classes < 1 || config.classes > kPradaMaxClasses)
    return InvalidArgument("PRADA classes {} is outside [1, {}]", config.classes, kPradaMaxClasses);
  if (config.window < kShapiroWilkMinSize || config.window > kPradaMaxWindow)
    return InvalidArgument("PRADA window {} is outside [{}, {}]", config.window,
                           kShapiroWilkMinSize, kPradaMaxWindow);
  if (config.test_every < 1) return InvalidArgument("PRADA test_every must be at least 1");
  if (config.min_class_entries < 1 || config.min_class_entries > config.window)
    return InvalidArgument("PRADA min_class_entries {} is outside [1, window {}]",
                           config.min_class_entries, config.window);
  if (!(config.delta > 0 && config.delta <= 1))
    return InvalidArgument("PRADA delta {} is outside (0, 1]", config.delta);
  if (config.max_stored < 1 || config.max_stored > (uint64_t{1} << 36) / config.dim)
    return InvalidArgument("PRADA max_stored {} is outside [1, 2^36 / dim = {}]", config.max_stored,
                           (uint64_t{1} << 36) / config.dim);
  return std::unique_ptr<Prada>(new Prada(config));
}

const float* Prada::Vector(uint64_t id) const {
  return chunks_[id / vectors_per_chunk_].get() + (id % vectors_per_chunk_) * config_.dim;
}

namespace {

Status CheckVector(std::span<const float> x, uint32_t dim) {
  if (x.size() != dim)
    return InvalidArgument("PRADA input has {} elements, expected {}", x.size(), dim);
  for (size_t i = 0; i < x.size(); ++i)
    if (!(std::fabs(x[i]) <= kPradaMaxAbsValue))  // false for NaN too
      return InvalidArgument("PRADA input element {} is {}: must be finite with magnitude <= 2^24",
                             i, x[i]);
  return Status::Ok();
}

}  // namespace

void Prada::Store(std::span<const float> x, uint32_t cls, float distance,
                  const Projected* projected) {
  const uint64_t id = stored();
  if (id % vectors_per_chunk_ == 0)
    chunks_.emplace_back(new float[vectors_per_chunk_ * config_.dim]);
  float* destination =
      chunks_[id / vectors_per_chunk_].get() + (id % vectors_per_chunk_) * config_.dim;
  std::memcpy(destination, x.data(), x.size_bytes());
  entry_class_.push_back(cls);
  entry_distance_.push_back(distance);
  ClassState& state = classes_[cls];
  state.members.push_back(static_cast<uint32_t>(id));
  state.Add(distance);

  if (index_) {
    Projected local;
    const Projected* p = projected;
    if (p == nullptr) {
      index_->Project(x.data(), &local);
      p = &local;
    }
    index_->Insert(cls, static_cast<uint32_t>(id), *p);
  }
  const uint64_t count = stored();
  if (config_.dim <= kMaxIndexedDim &&
      std::find(std::begin(kBasisAt), std::end(kBasisAt), count) != std::end(kBasisAt)) {
    index_ = Index::Create(*this);
  }
}

void Prada::PushWindow(uint32_t cls, float distance) {
  if (ring_size_ == config_.window) {
    const WindowEntry evicted = ring_[ring_start_];
    ring_start_ = (ring_start_ + 1) % config_.window;
    --ring_size_;
    --window_count_[evicted.cls];
    auto it = std::lower_bound(sorted_.begin(), sorted_.end(),
                               std::make_pair(evicted.distance, evicted.cls));
    assert(it != sorted_.end() && *it == std::make_pair(evicted.distance, evicted.cls));
    sorted_.erase(it);
  }
  ring_[(ring_start_ + ring_size_) % config_.window] = {cls, distance};
  ++ring_size_;
  ++window_count_[cls];
  const auto entry = std::make_pair(distance, cls);
  sorted_.insert(std::upper_bound(sorted_.begin(), sorted_.end(), entry), entry);
}

void Prada::RunTest(PradaObservation* out) {
  pool_.clear();
  for (const auto& [distance, cls] : sorted_)
    if (window_count_[cls] >= config_.min_class_entries) pool_.push_back(distance);
  const size_t minimum = std::max<size_t>(kShapiroWilkMinSize, config_.min_class_entries);
  if (pool_.size() < minimum) return;
  double mean = 0;
  for (double value : pool_) mean += value;
  mean /= static_cast<double>(pool_.size());
  double variance = 0;
  for (double value : pool_) variance += (value - mean) * (value - mean);
  const double std_dev = std::sqrt(variance / static_cast<double>(pool_.size()));
  auto first = std::lower_bound(pool_.begin(), pool_.end(), mean - 3 * std_dev);
  auto last = std::upper_bound(first, pool_.end(), mean + 3 * std_dev);
  if (static_cast<size_t>(last - first) < minimum) return;
  std::span<const double> kept(&*first, static_cast<size_t>(last - first));
  ShapiroWilkResult result{0.0, 0.0};
  if (kept.front() != kept.back()) {
    Result<ShapiroWilkResult> tested = tester_.TestSorted(kept);
    assert(tested.ok());  // sorted, finite, 3..5000 values, non-zero range: cannot fail
    if (tested.ok()) result = *tested;
  }
  out->tested = true;
  out->w = result.w;
  out->p = result.p;
  out->alarm = result.w < config_.delta;
  ++tests_;
  last_w_ = result.w;
  last_p_ = result.p;
  alarmed_ = alarmed_ || out->alarm;
}

Status Prada::Observe(std::span<const float> x, uint32_t cls, PradaObservation* out) {
  *out = PradaObservation();
  MLC_RETURN_IF_ERROR(CheckVector(x, config_.dim));
  if (cls >= config_.classes)
    return InvalidArgument("PRADA class {} is outside [0, {})", cls, config_.classes);

  ClassState& state = classes_[cls];
  const bool full = stored() >= config_.max_stored;
  if (state.members.empty()) {
    if (!full) {
      Store(x, cls, 0.0f, nullptr);
      out->stored = true;
    }
  } else {
    // The index unless the class is small (a scan is as fast and needs no projection) or the
    // index has been costing more than a scan for this class (then it is re-tried every
    // kIndexProbeEvery queries, in case the data changed). Both give the same minimum, unless
    // max_checks bounds the index's search (then the index's may be larger; scans stay exact).
    // With a budget the cost fallback is off: the budget bounds the cost, and the choice must not
    // depend on index_cost, which is not persisted (restore would then change results).
    float best = kInfinity;
    Projected projected;
    bool indexed = index_ != nullptr && state.members.size() > kScanBelow;
    if (indexed && config_.max_checks == 0 && state.index_cost > kIndexCostLimit)
      indexed = ++state.since_index_probe >= kIndexProbeEvery;
    if (indexed) {
      state.since_index_probe = 0;
      index_->Project(x.data(), &projected);
      double cost = 0;
      best =
          index_->Search(cls, x.data(), projected, this, state.members, config_.max_checks, &cost);
      state.index_cost = static_cast<float>(0.8 * state.index_cost + 0.2 * cost);
      ++indexed_searches_;
    } else {
      for (uint32_t id : state.members)
        best = std::min(best, SquaredDistance(x.data(), Vector(id), config_.dim));
    }
    const float distance = std::sqrt(best);
    out->has_distance = true;
    out->min_distance = distance;
    PushWindow(cls, distance);
    if (!full && static_cast<double>(distance) > state.threshold) {
      Store(x, cls, distance, indexed ? &projected : nullptr);
      out->stored = true;
    }
  }
  out->at_cap = stored() >= config_.max_stored;
  ++observed_;
  if (++queries_since_test_ >= config_.test_every) {
    queries_since_test_ = 0;
    RunTest(out);
  }
  return Status::Ok();
}

// ---- Persistence ----

void Prada::WriteEntries(uint64_t from, ByteWriter* out) const {
  for (uint64_t id = from; id < stored(); ++id) {
    out->Pod<uint32_t>(entry_class_[id]);
    out->Pod<float>(entry_distance_[id]);
    out->Bytes(Vector(id), static_cast<size_t>(config_.dim) * sizeof(float));
  }
}

Status Prada::ReadEntries(ByteReader& in, uint64_t count) {
  const size_t entry_bytes = 8 + static_cast<size_t>(config_.dim) * sizeof(float);
  if (count > config_.max_stored - stored())
    return InvalidArgument("PRADA restore of {} entries exceeds max_stored {} ({} stored)", count,
                           config_.max_stored, stored());
  if (count > in.remaining() / entry_bytes)
    return DataLoss("PRADA entries truncated: {} entries need {} bytes, {} left", count,
                    count * entry_bytes, in.remaining());
  // Check everything first, replaying the storage rule on copies of the touched classes.
  struct Replay {
    uint64_t stored;
    double mean, m2, threshold;
  };
  std::vector<std::pair<uint32_t, Replay>> touched;  // small: linear lookup is fine per class
  std::vector<int32_t> slot(count > 0 ? config_.classes : 0, -1);
  std::span<const uint8_t> bytes;
  std::vector<float> vector(config_.dim);
  const size_t start = in.pos();
  ByteReader scan(in.rest(), "PRADA entries");
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t cls = 0;
    float distance = 0;
    MLC_RETURN_IF_ERROR(scan.Pod(&cls, "class"));
    MLC_RETURN_IF_ERROR(scan.Pod(&distance, "distance"));
    MLC_RETURN_IF_ERROR(
        scan.View(static_cast<size_t>(config_.dim) * sizeof(float), &bytes, "vector"));
    if (cls >= config_.classes)
      return InvalidArgument("PRADA entry {}: class {} is outside [0, {})", i, cls,
                             config_.classes);
    if (!(distance >= 0 && distance <= std::numeric_limits<float>::max()))
      return InvalidArgument("PRADA entry {}: distance {} is not finite and non-negative", i,
                             distance);
    std::memcpy(vector.data(), bytes.data(), bytes.size());
    Status valid = CheckVector(vector, config_.dim);
    if (!valid.ok()) return valid.WithContext(fmt::format("PRADA entry {}", i));
    if (slot[cls] < 0) {
      const ClassState& state = classes_[cls];
      slot[cls] = static_cast<int32_t>(touched.size());
      touched.push_back({cls, {state.stored, state.mean, state.m2, state.threshold}});
    }
    Replay& replay = touched[slot[cls]].second;
    if (replay.stored == 0 ? distance != 0 : !(static_cast<double>(distance) > replay.threshold))
      return InvalidArgument(
          "PRADA entry {}: distance {} for class {} contradicts the storage rule (threshold {})", i,
          distance, cls, replay.threshold);
    ClassState probe;
    probe.stored = replay.stored;
    probe.mean = replay.mean;
    probe.m2 = replay.m2;
    probe.threshold = replay.threshold;
    probe.Add(distance);
    replay = {probe.stored, probe.mean, probe.m2, probe.threshold};
  }
  // Apply.
  for (uint64_t i = 0; i < count; ++i) {
    uint32_t cls = 0;
    float distance = 0;
    MLC_RETURN_IF_ERROR(in.Pod(&cls, "class"));
    MLC_RETURN_IF_ERROR(in.Pod(&distance, "distance"));
    MLC_RETURN_IF_ERROR(in.Bytes(vector.data(), vector.size() * sizeof(float), "vector"));
    Store(vector, cls, distance, nullptr);
  }
  assert(in.pos() == start + count * entry_bytes);
  (void)start;
  return Status::Ok();
}

void Prada::WriteScalars(ByteWriter* out) const {
  out->Pod<uint32_t>(kScalarsMagic);
  out->Pod<uint32_t>(kScalarsVersion);
  out->Pod<uint32_t>(config_.dim);
  out->Pod<uint32_t>(config_.classes);
  out->Pod<uint64_t>(config_.max_stored);
  out->Pod<uint32_t>(config_.window);
  out->Pod<uint32_t>(config_.test_every);
  out->Pod<uint32_t>(config_.min_class_entries);
  out->Pod<double>(config_.delta);
  out->Pod<uint32_t>(config_.max_checks);
  out->Pod<uint64_t>(observed_);
  out->Pod<uint64_t>(stored());
  out->Pod<uint32_t>(queries_since_test_);
  out->Pod<uint8_t>(alarmed_ ? 1 : 0);
  out->Pod<double>(last_w_);
  out->Pod<double>(last_p_);
  out->Pod<uint64_t>(tests_);
  out->Pod<uint32_t>(static_cast<uint32_t>(ring_size_));
  for (size_t i = 0; i < ring_size_; ++i) {
    const WindowEntry& entry = ring_[(ring_start_ + i) % config_.window];
    out->Pod<uint32_t>(entry.cls);
    out->Pod<float>(entry.distance);
  }
}

Status Prada::ReadScalars(ByteReader& in) {
  uint32_t magic = 0, version = 0, dim = 0, classes = 0, window = 0, test_every = 0, minimum = 0,
           max_checks = 0;
  uint64_t max_stored = 0, observed = 0, stored_count = 0, tests = 0;
  uint32_t since_test = 0, window_size = 0;
  uint8_t alarmed = 0;
  double delta = 0, last_w = 0, last_p = 0;
  MLC_RETURN_IF_ERROR(in.Pod(&magic, "magic"));
  if (magic != kScalarsMagic) return DataLoss("PRADA scalars: bad magic {:#x}", magic);
  MLC_RETURN_IF_ERROR(in.Pod(&version, "version"));
  if (version != kScalarsVersion)
    return Unsupported("PRADA scalars version {} (this build reads {})", version, kScalarsVersion);
  MLC_RETURN_IF_ERROR(in.Pod(&dim, "dim"));
  MLC_RETURN_IF_ERROR(in.Pod(&classes, "classes"));
  MLC_RETURN_IF_ERROR(in.Pod(&max_stored, "max_stored"));
  MLC_RETURN_IF_ERROR(in.Pod(&window, "window"));
  MLC_RETURN_IF_ERROR(in.Pod(&test_every, "test_every"));
  MLC_RETURN_IF_ERROR(in.Pod(&minimum, "min_class_entries"));
  MLC_RETURN_IF_ERROR(in.Pod(&delta, "delta"));
  MLC_RETURN_IF_ERROR(in.Pod(&max_checks, "max_checks"));
  if (dim != config_.dim || classes != config_.classes || max_stored != config_.max_stored ||
      window != config_.window || test_every != config_.test_every ||
      minimum != config_.min_class_entries || !(delta == config_.delta) ||
      max_checks != config_.max_checks)
    return InvalidArgument("PRADA scalars were written under a different config");
  MLC_RETURN_IF_ERROR(in.Pod(&observed, "observed"));
  MLC_RETURN_IF_ERROR(in.Pod(&stored_count, "stored"));
  if (stored_count != stored())
    return InvalidArgument("PRADA scalars expect {} stored entries, {} were restored", stored_count,
                           stored());
  MLC_RETURN_IF_ERROR(in.Pod(&since_test, "queries since test"));
  if (since_test >= config_.test_every)
    return InvalidArgument("PRADA scalars: queries since test {} is not below test_every {}",
                           since_test, config_.test_every);
  MLC_RETURN_IF_ERROR(in.Pod(&alarmed, "alarmed"));
  if (alarmed > 1) return InvalidArgument("PRADA scalars: alarmed flag {}", alarmed);
  MLC_RETURN_IF_ERROR(in.Pod(&last_w, "last W"));
  MLC_RETURN_IF_ERROR(in.Pod(&last_p, "last p"));
  MLC_RETURN_IF_ERROR(in.Pod(&tests, "tests"));
  MLC_RETURN_IF_ERROR(in.Count(&window_size, config_.window, 8, "window size"));
  if (window_size > observed)
    return InvalidArgument("PRADA scalars: window of {} exceeds {} observations", window_size,
                           observed);
  if (tests > observed / config_.test_every)
    return InvalidArgument("PRADA scalars: {} tests in {} observations", tests, observed);
  std::vector<WindowEntry> entries(window_size);
  for (WindowEntry& entry : entries) {
    MLC_RETURN_IF_ERROR(in.Pod(&entry.cls, "window class"));
    MLC_RETURN_IF_ERROR(in.Pod(&entry.distance, "window distance"));
    if (entry.cls >= config_.classes)
      return InvalidArgument("PRADA scalars: window class {} is outside [0, {})", entry.cls,
                             config_.classes);
    if (!(entry.distance >= 0 && entry.distance <= std::numeric_limits<float>::max()))
      return InvalidArgument("PRADA scalars: window distance {} is not finite and non-negative",
                             entry.distance);
  }
  // Commit.
  observed_ = observed;
  queries_since_test_ = since_test;
  alarmed_ = alarmed != 0;
  last_w_ = last_w;
  last_p_ = last_p;
  tests_ = tests;
  ring_start_ = 0;
  ring_size_ = 0;
  std::fill(window_count_.begin(), window_count_.end(), 0);
  sorted_.clear();
  for (const WindowEntry& entry : entries) PushWindow(entry.cls, entry.distance);
  return Status::Ok();
}

}  // namespace mlcapsule::defense
