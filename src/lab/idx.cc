// Gzipped IDX files and ImageSet (idx.h). IDX files are untrusted: every header field is checked
// against a named limit before anything is allocated, and a short or overlong stream is DataLoss
// naming the file.
#include "lab/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string_view>
#include <system_error>

namespace mlcapsule::lab {
namespace {

// IDX limits: Fashion-MNIST has 60,000 + 10,000 items; anything above this is not our data.
constexpr uint32_t kImageMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kLabelMagic = 0x00000801;  // unsigned byte, 1 dimension
constexpr uint32_t kMaxIdxItems = 100000;
constexpr int64_t kFashionTrainCount = 60000;
constexpr int64_t kFashionTestCount = 10000;
// Programmer misuse (a bad index from our own code): abort in every build type, since the lab is
// built in Release and an unchecked index would read out of bounds silently.
void Require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "mlcapsule lab data: %s\n", what);
  std::abort();
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

}  // namespace mlcapsule::lab
