// Fashion-MNIST as gzipped IDX files (Debian's dataset-fashion-mnist) and the image set every
// part of the lab works on. Trusts nothing it reads: every IDX header (magic, counts, dimensions)
// is checked before memory is allocated, and the stream must end where the header says. Only zlib:
// `mlcapsule demo` reads its test images with it, without the lab's other dependencies.
//
//   MLC_ASSIGN_OR_RETURN(lab::ImageSet test, lab::LoadIdx(dir + "/t10k-images-idx3-ubyte.gz",
//                                                        dir + "/t10k-labels-idx1-ubyte.gz"));
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::lab {

inline constexpr int kImageSide = 28;
inline constexpr int kImagePixels = kImageSide * kImageSide;
inline constexpr int kFashionClasses = 10;
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// `count` grayscale 28x28 images, pixels in [0, 1] row-major (image i at pixels[i * 784]), one
// label each (-1 where none is known).
struct ImageSet {
  int64_t count = 0;
  std::vector<float> pixels;
  std::vector<int32_t> labels;

  std::span<const float> Image(int64_t i) const {
    return {pixels.data() + i * kImagePixels, static_cast<size_t>(kImagePixels)};
  }
  // Rows [begin, begin + n) as a new set.
  ImageSet Slice(int64_t begin, int64_t n) const;
  // The rows at `indices`, in that order.
  ImageSet Gather(std::span<const int64_t> indices) const;
  void Append(const ImageSet& other);
};

// Reads one gzipped IDX image file (magic 0x00000803, 28x28) and its label file (0x00000801);
// pixel bytes are scaled by 1/255. Errors name the file and the bad field.
Result<ImageSet> LoadIdx(const std::string& images_gz, const std::string& labels_gz);

struct FashionMnist {
  ImageSet train;  // 60,000
  ImageSet test;   // 10,000
};
// `dir` holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
// t10k-labels-idx1-ubyte.gz. A missing directory says which Debian package provides it.
Result<FashionMnist> LoadFashionMnist(const std::string& dir);

}  // namespace mlcapsule::lab
