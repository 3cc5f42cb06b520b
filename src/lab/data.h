// The lab's data: Fashion-MNIST (lab/idx.h reads it), the fixed splits every experiment uses, and
// the out-of-distribution pool Knockoff Nets samples from (glyphs rendered with cairo from the
// DejaVu fonts, and transformed Fashion-MNIST images). Trusts nothing it reads: every IDX header
// (magic, counts, dimensions) is checked before memory is allocated. No libtorch here, so the PRADA
// benchmark links it too.
//
//   MLC_ASSIGN_OR_RETURN(lab::FashionMnist data, lab::LoadFashionMnist(lab::kFashionMnistDir));
//   MLC_ASSIGN_OR_RETURN(lab::Splits splits, lab::MakeSplits(data, lab::SplitSizes{}, 20261122));
//   lab::ImageSet glyphs = lab::RenderGlyphs(5000, /*seed=*/7).value();
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "lab/idx.h"

namespace mlcapsule::lab {

// The fixed, documented splits (docs/lab.md). All but `test` are disjoint slices of one
// Fisher-Yates permutation of the 60k training images (std::mt19937_64 seeded with `seed`), taken
// in this order; `test` is the first `test` images of the official test set.
struct SplitSizes {
  int64_t victim_train = 5000;        // the victims' training data: members
  int64_t victim_heldout = 5000;      // membership non-members; never used elsewhere
  int64_t defender_nonmember = 5000;  // negatives for the defender's MemGuard classifier
  int64_t attacker_pool = 20000;      // unlabeled in-distribution pool of the extraction attacks
  int64_t shadow = 20000;             // shadow-model data (ML-Leaks)
  int64_t test = 10000;               // evaluation, fidelity, benign PRADA stream
};
struct Splits {
  ImageSet victim_train, victim_heldout, defender_nonmember, attacker_pool, shadow, test;
  // Indices into FashionMnist::train of each training split (for the report and for LiRA).
  std::vector<int64_t> victim_train_index, victim_heldout_index;
};
// Fails when the sizes add up to more than the 60k training images (or test > 10k).
Result<Splits> MakeSplits(const FashionMnist& data, const SplitSizes& sizes, uint64_t seed);

// Glyph classes of the out-of-distribution pool: 0-9 digits, 10-35 'A'-'Z', 36-61 'a'-'z'.
inline constexpr int kGlyphClasses = 62;
// `count` glyph images, white on black like Fashion-MNIST, drawn with cairo in a random DejaVu face
// (Sans, Serif, Mono; regular, bold, oblique/italic where installed), random scale 0.6-1.0 of the
// frame, rotation +-20 degrees and shift +-3 px; label = glyph class, cycling so classes are
// balanced. Deterministic for a seed. Fails when no DejaVu font can be loaded.
Result<ImageSet> RenderGlyphs(int64_t count, uint64_t seed);

// Transformed Fashion-MNIST (the other half of the OOD pool): `count` images made from `source`
// with one of kTransformKinds transformations each, label = the transformation.
enum class Transform : int32_t {
  kRotate90 = 0,
  kRotate180 = 1,
  kFlipVertical = 2,
  kInvert = 3,
  kPatchShuffle = 4,  // the 7x7-pixel patches of a 4x4 grid, permuted
  kMixup = 5,         // lambda * a + (1 - lambda) * b, lambda in [0.3, 0.7]
};
inline constexpr int kTransformKinds = 6;
ImageSet TransformImages(const ImageSet& source, int64_t count, uint64_t seed);

}  // namespace mlcapsule::lab
