// The lab's data (data.h): the fixed splits and the out-of-distribution pool (cairo-rendered
// glyphs, transformed images); the IDX reader is idx.cc. Every random draw goes through Random
// below, so
// splits and pools are the same under any C++ standard library (the std distributions are
// implementation-defined; std::mt19937_64's output sequence is not).
#include "lab/data.h"

#include <cairo/cairo.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numbers>
#include <random>
#include <string_view>
#include <utility>

namespace mlcapsule::lab {
namespace {

// RenderGlyphs and TransformImages keep everything in memory (3 KiB per image).
constexpr int64_t kMaxGeneratedImages = 1000000;

// Programmer misuse (a bad index from our own code): abort in every build type, since the lab is
// built in Release and an unchecked index would read out of bounds silently.
void Require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "mlcapsule lab data: %s\n", what);
  std::abort();
}

// Draws that are identical under every standard library: mt19937_64's sequence is fixed by the
// standard, std::uniform_*_distribution's mapping of it is not.
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}

  // Uniform in [0, bound) without modulo bias: outputs below 2^64 mod bound are rejected, so the
  // accepted range is a whole number of copies of [0, bound) (OpenBSD's arc4random_uniform).
  uint64_t Below(uint64_t bound) {
    assert(bound > 0);
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t x = engine_();
      if (x >= threshold) return x % bound;
    }
  }
  // Uniform in [0, 1): the top 53 bits, i.e. every double of the form k / 2^53.
  double Unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double low, double high) { return low + (high - low) * Unit(); }

 private:
  std::mt19937_64 engine_;
};

// Fisher-Yates, from the last position down, j uniform in [0, i].
template <typename T>
void Shuffle(std::vector<T>& values, Random& random) {
  for (size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[random.Below(i)]);
}

// ---- glyphs ----

template <typename T, void (*Destroy)(T*)>
struct CairoDelete {
  void operator()(T* object) const { Destroy(object); }
};
using Surface =
    std::unique_ptr<cairo_surface_t, CairoDelete<cairo_surface_t, cairo_surface_destroy>>;
using Context = std::unique_ptr<cairo_t, CairoDelete<cairo_t, cairo_destroy>>;
using FontFace =
    std::unique_ptr<cairo_font_face_t, CairoDelete<cairo_font_face_t, cairo_font_face_destroy>>;
using FontOptions = std::unique_ptr<cairo_font_options_t,
                                    CairoDelete<cairo_font_options_t, cairo_font_options_destroy>>;

constexpr std::array<const char*, 3> kGlyphFamilies = {"DejaVu Sans", "DejaVu Serif",
                                                       "DejaVu Sans Mono"};
constexpr double kGlyphMinScale = 0.6, kGlyphMaxScale = 1.0;
constexpr double kGlyphMaxDegrees = 20;
constexpr double kGlyphMaxShift = 3;
// Extents are measured at this size and scaled: with hinting off they are linear in the size.
constexpr double kReferenceFontSize = 100;

char GlyphChar(int glyph_class) {
  if (glyph_class < 10) return static_cast<char>('0' + glyph_class);
  if (glyph_class < 36) return static_cast<char>('A' + glyph_class - 10);
  return static_cast<char>('a' + glyph_class - 36);
}

// One 28x28 A8 canvas and the 12 DejaVu faces (3 families x normal/slanted x normal/bold).
// Glyphs are drawn at 28x28 directly: cairo's grayscale antialiasing gives each pixel its exact
// coverage, which is what supersampling followed by a box filter would approximate.
class GlyphCanvas {
 public:
  Status Init() {
    surface_.reset(cairo_image_surface_create(CAIRO_FORMAT_A8, kImageSide, kImageSide));
    if (cairo_surface_status(surface_.get()) != CAIRO_STATUS_SUCCESS)
      return InternalError("cairo surface: {}",
                           cairo_status_to_string(cairo_surface_status(surface_.get())));
    context_.reset(cairo_create(surface_.get()));
    if (cairo_status(context_.get()) != CAIRO_STATUS_SUCCESS)
      return InternalError("cairo context: {}",
                           cairo_status_to_string(cairo_status(context_.get())));
    // No hinting: hinting snaps outlines to the pixel grid, which fights the rotation and makes
    // extents non-linear in the font size (the centring below relies on linearity).
    FontOptions options(cairo_font_options_create());
    cairo_font_options_set_antialias(options.get(), CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_style(options.get(), CAIRO_HINT_STYLE_NONE);
    cairo_font_options_set_hint_metrics(options.get(), CAIRO_HINT_METRICS_OFF);
    cairo_set_font_options(context_.get(), options.get());
    cairo_set_source_rgba(context_.get(), 1, 1, 1, 1);
    for (size_t family = 0; family < kGlyphFamilies.size(); ++family) {
      for (int slanted = 0; slanted < 2; ++slanted) {
        for (int bold = 0; bold < 2; ++bold) {
          // DejaVu Serif has an italic, Sans and Sans Mono an oblique; fontconfig would map
          // either request to whichever exists, but asking for the real one is clearer.
          const cairo_font_slant_t slant = !slanted      ? CAIRO_FONT_SLANT_NORMAL
                                           : family == 1 ? CAIRO_FONT_SLANT_ITALIC
                                                         : CAIRO_FONT_SLANT_OBLIQUE;
          FontFace face(
              cairo_toy_font_face_create(kGlyphFamilies[family], slant,
                                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL));
          if (cairo_font_face_status(face.get()) != CAIRO_STATUS_SUCCESS)
            return InternalError("cairo font face {}: {}", kGlyphFamilies[family],
                                 cairo_status_to_string(cairo_font_face_status(face.get())));
          faces_.push_back(std::move(face));
        }
      }
    }
    return Status::Ok();
  }

  size_t face_count() const { return faces_.size(); }

  // Draws `glyph` white on black: its ink box scaled so the longer side is `scale` * 28 px,
  // centred, rotated by `radians` about its centre, shifted by (dx, dy); writes 784 pixels.
  Status Draw(size_t face, char glyph, double scale, double radians, double dx, double dy,
              float* out) {
    cairo_t* cr = context_.get();
    cairo_identity_matrix(cr);
    cairo_set_operator(cr, CAIRO_OPERATOR_CLEAR);
    cairo_paint(cr);
    cairo_set_operator(cr, CAIRO_OPERATOR_OVER);
    cairo_set_font_face(cr, faces_[face].get());
    const char text[2] = {glyph, '\0'};
    cairo_set_font_size(cr, kReferenceFontSize);
    cairo_text_extents_t extents;
    cairo_text_extents(cr, text, &extents);
    const double longer = std::max(extents.width, extents.height);
    const double factor = longer > 0 ? scale * kImageSide / longer : 1.0;
    cairo_set_font_size(cr, kReferenceFontSize * factor);
    cairo_translate(cr, kImageSide / 2.0 + dx, kImageSide / 2.0 + dy);
    cairo_rotate(cr, radians);
    cairo_move_to(cr, -factor * (extents.x_bearing + extents.width / 2),
                  -factor * (extents.y_bearing + extents.height / 2));
    cairo_show_text(cr, text);
    if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
      return InternalError("cairo drawing '{}': {}", glyph,
                           cairo_status_to_string(cairo_status(cr)));
    cairo_surface_flush(surface_.get());
    const uint8_t* data = cairo_image_surface_get_data(surface_.get());
    const int stride = cairo_image_surface_get_stride(surface_.get());
    for (int row = 0; row < kImageSide; ++row)
      for (int col = 0; col < kImageSide; ++col)
        out[row * kImageSide + col] = data[row * stride + col] / 255.0f;
    return Status::Ok();
  }

 private:
  Surface surface_;
  Context context_;
  std::vector<FontFace> faces_;
};

}  // namespace

Result<Splits> MakeSplits(const FashionMnist& data, const SplitSizes& sizes, uint64_t seed) {
  const std::pair<const char*, int64_t> training_parts[] = {
      {"victim_train", sizes.victim_train},
      {"victim_heldout", sizes.victim_heldout},
      {"defender_nonmember", sizes.defender_nonmember},
      {"attacker_pool", sizes.attacker_pool},
      {"shadow", sizes.shadow},
  };
  const int64_t available = data.train.count;
  int64_t total = 0;
  for (const auto& [name, size] : training_parts) {
    // Checked one by one first, so the sum below cannot overflow.
    if (size < 0 || size > available)
      return InvalidArgument("split size {} = {} is outside [0, {}]", name, size, available);
    total += size;
  }
  if (total > available)
    return InvalidArgument("the training splits add up to {} images, more than the {} available",
                           total, available);
  if (sizes.test < 0 || sizes.test > data.test.count)
    return InvalidArgument("split size test = {} is outside [0, {}]", sizes.test, data.test.count);

  std::vector<int64_t> order(static_cast<size_t>(available));
  for (int64_t i = 0; i < available; ++i) order[i] = i;
  Random random(seed);
  Shuffle(order, random);

  auto next = order.begin();
  auto take = [&next](int64_t n) {
    std::vector<int64_t> indices(next, next + n);
    next += n;
    return indices;
  };
  Splits splits;
  splits.victim_train_index = take(sizes.victim_train);
  splits.victim_heldout_index = take(sizes.victim_heldout);
  splits.victim_train = data.train.Gather(splits.victim_train_index);
  splits.victim_heldout = data.train.Gather(splits.victim_heldout_index);
  splits.defender_nonmember = data.train.Gather(take(sizes.defender_nonmember));
  splits.attacker_pool = data.train.Gather(take(sizes.attacker_pool));
  splits.shadow = data.train.Gather(take(sizes.shadow));
  splits.test = data.test.Slice(0, sizes.test);
  return splits;
}

Result<ImageSet> RenderGlyphs(int64_t count, uint64_t seed) {
  if (count < 0 || count > kMaxGeneratedImages)
    return InvalidArgument("glyph count {} is outside [0, {}]", count, kMaxGeneratedImages);
  GlyphCanvas canvas;
  MLC_RETURN_IF_ERROR(canvas.Init());

  // Without DejaVu (or any font), fontconfig/cairo may draw nothing and succeed: a plain upright
  // '0' at full size must leave ink. (A fallback to another installed family is not detected.)
  std::array<float, kImagePixels> probe;
  MLC_RETURN_IF_ERROR(canvas.Draw(0, '0', 1.0, 0, 0, 0, probe.data()));
  if (*std::max_element(probe.begin(), probe.end()) == 0)
    return NotFound(
        "no DejaVu font could be loaded (cairo drew a blank '0' in {}); install Debian package "
        "fonts-dejavu-core",
        kGlyphFamilies[0]);

  ImageSet out;
  out.count = count;
  out.pixels.resize(static_cast<size_t>(count) * kImagePixels);
  out.labels.resize(static_cast<size_t>(count));
  Random random(seed);
  constexpr double kRadiansPerDegree = std::numbers::pi / 180;
  for (int64_t i = 0; i < count; ++i) {
    const int glyph_class = static_cast<int>(i % kGlyphClasses);
    // One fixed draw order per image, so an image depends only on the seed and its index.
    const size_t face = random.Below(canvas.face_count());
    const double scale = random.Uniform(kGlyphMinScale, kGlyphMaxScale);
    const double radians = random.Uniform(-kGlyphMaxDegrees, kGlyphMaxDegrees) * kRadiansPerDegree;
    const double dx = random.Uniform(-kGlyphMaxShift, kGlyphMaxShift);
    const double dy = random.Uniform(-kGlyphMaxShift, kGlyphMaxShift);
    MLC_RETURN_IF_ERROR(canvas.Draw(face, GlyphChar(glyph_class), scale, radians, dx, dy,
                                    out.pixels.data() + i * kImagePixels));
    out.labels[i] = glyph_class;
  }
  return out;
}

ImageSet TransformImages(const ImageSet& source, int64_t count, uint64_t seed) {
  Require(count >= 0 && count <= kMaxGeneratedImages, "TransformImages count out of range");
  Require(count == 0 || source.count > 0, "TransformImages from an empty source");
  constexpr int kPatchSide = 7, kPatchesPerSide = kImageSide / kPatchSide;
  constexpr int kPatches = kPatchesPerSide * kPatchesPerSide;
  constexpr int kLast = kImageSide - 1;

  ImageSet out;
  out.count = count;
  out.pixels.resize(static_cast<size_t>(count) * kImagePixels);
  out.labels.resize(static_cast<size_t>(count));
  Random random(seed);
  std::vector<int> patches(kPatches);
  for (int64_t i = 0; i < count; ++i) {
    // Kinds cycle so every transformation is equally represented.
    const auto kind = static_cast<Transform>(i % kTransformKinds);
    const uint64_t first = random.Below(source.count);
    const float* a = source.Image(static_cast<int64_t>(first)).data();
    float* o = out.pixels.data() + i * kImagePixels;
    switch (kind) {
      case Transform::kRotate90:  // counter-clockwise, as numpy.rot90
        for (int r = 0; r < kImageSide; ++r)
          for (int c = 0; c < kImageSide; ++c)
            o[r * kImageSide + c] = a[c * kImageSide + kLast - r];
        break;
      case Transform::kRotate180:
        for (int p = 0; p < kImagePixels; ++p) o[p] = a[kImagePixels - 1 - p];
        break;
      case Transform::kFlipVertical:  // upside down
        for (int r = 0; r < kImageSide; ++r)
          std::copy_n(a + (kLast - r) * kImageSide, kImageSide, o + r * kImageSide);
        break;
      case Transform::kInvert:
        for (int p = 0; p < kImagePixels; ++p) o[p] = 1.0f - a[p];
        break;
      case Transform::kPatchShuffle: {
        for (int p = 0; p < kPatches; ++p) patches[p] = p;
        Shuffle(patches, random);
        // Output patch p is source patch patches[p].
        for (int p = 0; p < kPatches; ++p) {
          const int to_row = p / kPatchesPerSide * kPatchSide;
          const int to_col = p % kPatchesPerSide * kPatchSide;
          const int from_row = patches[p] / kPatchesPerSide * kPatchSide;
          const int from_col = patches[p] % kPatchesPerSide * kPatchSide;
          for (int r = 0; r < kPatchSide; ++r)
            std::copy_n(a + (from_row + r) * kImageSide + from_col, kPatchSide,
                        o + (to_row + r) * kImageSide + to_col);
        }
        break;
      }
      case Transform::kMixup: {
        // A second, different image where there is one: mixing an image with itself would put
        // an untransformed in-distribution image into the pool.
        uint64_t second = first;
        if (source.count > 1) {
          second = random.Below(source.count - 1);
          if (second >= first) ++second;
        }
        const float* b = source.Image(static_cast<int64_t>(second)).data();
        const float lambda = static_cast<float>(random.Uniform(0.3, 0.7));
        // A convex combination of [0, 1] pixels; the clamp only absorbs float rounding.
        for (int p = 0; p < kImagePixels; ++p)
          o[p] = std::clamp(lambda * a[p] + (1.0f - lambda) * b[p], 0.0f, 1.0f);
        break;
      }
    }
    out.labels[i] = static_cast<int32_t>(kind);
  }
  return out;
}

}  // namespace mlcapsule::lab
