// The lab's data (data.h): a bounded reader for gzipped IDX files, the fixed splits, and the
// out-of-distribution pool (cairo-rendered glyphs, transformed images). IDX files are untrusted:
// every header field is checked against a named limit before anything is allocated, and a short
// or overlong stream is DataLoss naming the file. Every random draw goes through Random below, so
// splits and pools are the same under any C++ standard library (the std distributions are
// implementation-defined; std::mt19937_64's output sequence is not).
#include "lab/data.h"

#include <cairo/cairo.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numbers>
#include <random>
#include <string_view>
#include <system_error>
#include <utility>

namespace mlcapsule::lab {
namespace {

// IDX limits: Fashion-MNIST has 60,000 + 10,000 items; anything above this is not our data.
constexpr uint32_t kImageMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kLabelMagic = 0x00000801;  // unsigned byte, 1 dimension
constexpr uint32_t kMaxIdxItems = 100000;
constexpr int64_t kFashionTrainCount = 60000;
constexpr int64_t kFashionTestCount = 10000;
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

// ---- IDX ----

struct GzClose {
  void operator()(gzFile_s* file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzClose>;

Result<GzFile> OpenGz(const std::string& path) {
  errno = 0;
  GzFile file(gzopen(path.c_str(), "rb"));
  if (file == nullptr) {
    if (errno == ENOENT) return NotFound("{}: no such file", path);
    return IoError("cannot open {}: {}", path, errno ? std::strerror(errno) : "out of memory");
  }
  gzbuffer(file.get(), 1 << 17);
  return file;
}

// Reads exactly `bytes` decompressed bytes; a short read (truncated or corrupt stream) is
// DataLoss naming the file and the field being read.
Status ReadGz(gzFile_s* file, const std::string& path, void* out, size_t bytes,
              std::string_view what) {
  auto* cursor = static_cast<uint8_t*>(out);
  size_t got = 0;
  while (got < bytes) {
    // gzread takes an unsigned and returns an int: read in pieces well below INT_MAX.
    const unsigned piece = static_cast<unsigned>(std::min<size_t>(bytes - got, 1 << 24));
    const int n = gzread(file, cursor + got, piece);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got == bytes) return Status::Ok();
  int zlib_error = Z_OK;
  const char* message = gzerror(file, &zlib_error);
  if (zlib_error == Z_ERRNO) return IoError("{}: reading {}: {}", path, what, std::strerror(errno));
  return DataLoss("{} is truncated or corrupt: {} needs {} bytes, got {}{}{}", path, what, bytes,
                  got, zlib_error != Z_OK ? " (zlib: " : "",
                  zlib_error != Z_OK ? std::string(message) + ")" : "");
}

// The IDX file must end where its header says it does. Reading to the end also makes zlib check
// the gzip trailer (CRC-32 and length), so corruption after the last item is caught too.
Status ExpectEnd(gzFile_s* file, const std::string& path) {
  uint8_t extra = 0;
  const int n = gzread(file, &extra, 1);
  if (n > 0) return DataLoss("{} has bytes after its last item", path);
  int zlib_error = Z_OK;
  const char* message = gzerror(file, &zlib_error);
  if (n < 0 || zlib_error != Z_OK)
    return DataLoss("{} is corrupt at its end (zlib: {})", path, message);
  return Status::Ok();
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
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

ImageSet ImageSet::Slice(int64_t begin, int64_t n) const {
  Require(begin >= 0 && n >= 0 && begin <= count && n <= count - begin,
          "ImageSet::Slice outside the set");
  ImageSet out;
  out.count = n;
  out.pixels.assign(pixels.begin() + begin * kImagePixels,
                    pixels.begin() + (begin + n) * kImagePixels);
  out.labels.assign(labels.begin() + begin, labels.begin() + begin + n);
  return out;
}

ImageSet ImageSet::Gather(std::span<const int64_t> indices) const {
  ImageSet out;
  out.count = static_cast<int64_t>(indices.size());
  out.pixels.resize(indices.size() * kImagePixels);
  out.labels.resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    const int64_t index = indices[i];
    Require(index >= 0 && index < count, "ImageSet::Gather index outside the set");
    std::copy_n(pixels.begin() + index * kImagePixels, kImagePixels,
                out.pixels.begin() + static_cast<int64_t>(i) * kImagePixels);
    out.labels[i] = labels[index];
  }
  return out;
}

void ImageSet::Append(const ImageSet& other) {
  pixels.insert(pixels.end(), other.pixels.begin(), other.pixels.end());
  labels.insert(labels.end(), other.labels.begin(), other.labels.end());
  count += other.count;
}

Result<ImageSet> LoadIdx(const std::string& images_gz, const std::string& labels_gz) {
  MLC_ASSIGN_OR_RETURN(GzFile images, OpenGz(images_gz));
  MLC_ASSIGN_OR_RETURN(GzFile labels, OpenGz(labels_gz));

  // Both headers are read and checked before anything is allocated.
  uint8_t image_header[16], label_header[8];
  MLC_RETURN_IF_ERROR(
      ReadGz(images.get(), images_gz, image_header, sizeof(image_header), "the IDX header"));
  MLC_RETURN_IF_ERROR(
      ReadGz(labels.get(), labels_gz, label_header, sizeof(label_header), "the IDX header"));
  const uint32_t image_magic = BigEndian32(image_header);
  const uint32_t count = BigEndian32(image_header + 4);
  const uint32_t rows = BigEndian32(image_header + 8);
  const uint32_t cols = BigEndian32(image_header + 12);
  const uint32_t label_magic = BigEndian32(label_header);
  const uint32_t label_count = BigEndian32(label_header + 4);
  if (image_magic != kImageMagic)
    return InvalidArgument("{}: magic {:#010x} is not {:#010x} (IDX unsigned-byte images)",
                           images_gz, image_magic, kImageMagic);
  if (label_magic != kLabelMagic)
    return InvalidArgument("{}: magic {:#010x} is not {:#010x} (IDX unsigned-byte labels)",
                           labels_gz, label_magic, kLabelMagic);
  if (rows != kImageSide || cols != kImageSide)
    return InvalidArgument("{}: images are {}x{}, expected {}x{}", images_gz, rows, cols,
                           kImageSide, kImageSide);
  if (count > kMaxIdxItems)
    return InvalidArgument("{}: image count {} is over the limit {}", images_gz, count,
                           kMaxIdxItems);
  if (label_count != count)
    return InvalidArgument("{}: label count {} differs from the image count {} of {}", labels_gz,
                           label_count, count, images_gz);

  ImageSet out;
  out.count = count;
  out.pixels.resize(size_t{count} * kImagePixels);
  out.labels.resize(count);
  // Decompressed a block of images at a time, so the raw bytes never need a second full copy.
  constexpr size_t kBlockImages = 1024;
  std::vector<uint8_t> block(kBlockImages * kImagePixels);
  for (size_t first = 0; first < count; first += kBlockImages) {
    const size_t n = std::min<size_t>(kBlockImages, count - first);
    MLC_RETURN_IF_ERROR(
        ReadGz(images.get(), images_gz, block.data(), n * kImagePixels, "image pixels"));
    float* out_pixels = out.pixels.data() + first * kImagePixels;
    for (size_t i = 0; i < n * kImagePixels; ++i) out_pixels[i] = block[i] / 255.0f;
  }
  MLC_RETURN_IF_ERROR(ExpectEnd(images.get(), images_gz));

  std::vector<uint8_t> raw_labels(count);
  MLC_RETURN_IF_ERROR(ReadGz(labels.get(), labels_gz, raw_labels.data(), count, "labels"));
  MLC_RETURN_IF_ERROR(ExpectEnd(labels.get(), labels_gz));
  // Every IDX pair the lab reads is Fashion-MNIST: a label outside its 10 classes means a wrong
  // or corrupt file, and would index out of range in the per-class code downstream.
  for (size_t i = 0; i < count; ++i) {
    if (raw_labels[i] >= kFashionClasses)
      return InvalidArgument("{}: label {} of item {} is outside [0, {}]", labels_gz, raw_labels[i],
                             i, kFashionClasses - 1);
    out.labels[i] = raw_labels[i];
  }
  return out;
}

Result<FashionMnist> LoadFashionMnist(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error))
    return NotFound(
        "Fashion-MNIST directory {} does not exist; install Debian package dataset-fashion-mnist",
        dir);
  FashionMnist data;
  MLC_ASSIGN_OR_RETURN(data.train, LoadIdx(dir + "/train-images-idx3-ubyte.gz",
                                           dir + "/train-labels-idx1-ubyte.gz"));
  MLC_ASSIGN_OR_RETURN(
      data.test, LoadIdx(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz"));
  if (data.train.count != kFashionTrainCount || data.test.count != kFashionTestCount)
    return DataLoss("{}: {} training and {} test images, expected {} and {}", dir, data.train.count,
                    data.test.count, kFashionTrainCount, kFashionTestCount);
  return data;
}

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
