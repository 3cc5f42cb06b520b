// Tensor list: round trips with 64-byte aligned data, and malformed lists (bad dtype or rank,
// overflowing or negative dims, byte count mismatch, nonzero padding, truncation, trailing bytes)
// rejected with an error that names the tensor.
#include "capsule/tensor_wire.h"

#include <gtest/gtest.h>

#include <cstring>

namespace mlcapsule::capsule {
namespace {

using engine::DType;
using engine::Tensor;
using engine::TensorView;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

bool Contains(const Status& status, std::string_view text) {
  return status.message().find(text) != std::string::npos;
}

std::vector<Tensor> SampleTensors() {
  std::vector<Tensor> tensors;
  tensors.push_back(Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6.5f}));
  tensors.push_back(Tensor::FromInt64s({4}, {-1, 0, 1, int64_t{1} << 40}));
  tensors.push_back(Tensor::FromFloats({}, {42}));                             // scalar
  tensors.push_back(Tensor::Make(DType::kFloat32, {0, 5}));                    // no elements
  tensors.push_back(Tensor::FromFloats({1, 1, 1, 1, 1, 1, 1, 3}, {7, 8, 9}));  // rank 8
  return tensors;
}

std::vector<TensorView> Views(std::vector<Tensor>& tensors) {
  std::vector<TensorView> views;
  for (Tensor& t : tensors) views.push_back(t.View());
  return views;
}

std::string Encode(std::vector<Tensor> tensors) {
  std::string out;
  AppendTensorList(Views(tensors), &out);
  return out;
}

// One float32 [2,3] tensor: count@0, dtype@4, rank@5, pad@6..11, dims@12..27, byte_count@28,
// pad@36..63, data@64..87.
constexpr size_t kDtype = 4, kRank = 5, kPad = 6, kDims = 12, kByteCount = 28, kDataPad = 36;

std::string OneTensor() { return Encode({Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6})}); }

template <typename T>
std::string With(std::string bytes, size_t offset, T value) {
  char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  for (size_t i = 0; i < sizeof(T); ++i) bytes.at(offset + i) = raw[i];
  return bytes;
}

TEST(TensorWireTest, RoundTripKeepsEverythingAndAlignsData) {
  std::vector<Tensor> tensors = SampleTensors();
  std::vector<TensorView> views = Views(tensors);
  std::string out;
  AppendTensorList(views, &out);
  EXPECT_EQ(out.size(), TensorListBytes(views));

  Result<std::vector<TensorView>> parsed = ParseTensorList(Bytes(out));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& view = (*parsed)[i];
    EXPECT_EQ(view.dtype, tensors[i].dtype) << i;
    EXPECT_EQ(view.dims, tensors[i].dims) << i;
    const size_t offset = static_cast<const char*>(view.data) - out.data();
    EXPECT_EQ(offset % 64, 0u) << i;  // aligned relative to the start of the list
    const auto* data = static_cast<const uint8_t*>(view.data);
    EXPECT_EQ(std::vector<uint8_t>(data, data + tensors[i].bytes.size()), tensors[i].bytes) << i;
  }

  Result<std::vector<Tensor>> copies = ParseTensorListCopy(Bytes(out));
  ASSERT_TRUE(copies.ok());
  ASSERT_EQ(copies->size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ((*copies)[i].dtype, tensors[i].dtype);
    EXPECT_EQ((*copies)[i].dims, tensors[i].dims);
    EXPECT_EQ((*copies)[i].bytes, tensors[i].bytes);
  }
  // Re-encoding the parsed views gives the same bytes (one encoding per list).
  std::string again;
  AppendTensorList(*parsed, &again);
  EXPECT_EQ(again, out);
}

TEST(TensorWireTest, AppendsAfterExistingBytes) {
  std::vector<Tensor> tensors = SampleTensors();
  std::string out(128, 'h');  // a 64-byte multiple, as the contract asks
  AppendTensorList(Views(tensors), &out);
  EXPECT_EQ(out.substr(0, 128), std::string(128, 'h'));
  std::string alone = Encode(SampleTensors());
  EXPECT_EQ(out.substr(128), alone);
}

TEST(TensorWireTest, EmptyList) {
  std::string out = Encode({});
  EXPECT_EQ(out.size(), 4u);
  Result<std::vector<TensorView>> parsed = ParseTensorList(Bytes(out));
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->empty());
}

TEST(TensorWireTest, EveryTruncationAndTrailingByteIsRejected) {
  std::string out = Encode(SampleTensors());
  for (size_t n = 0; n < out.size(); ++n)
    EXPECT_FALSE(ParseTensorList(Bytes(out.substr(0, n))).ok()) << "length " << n;
  Result<std::vector<TensorView>> trailing = ParseTensorList(Bytes(out + "x"));
  ASSERT_FALSE(trailing.ok());
  EXPECT_TRUE(Contains(trailing.status(), "trailing")) << trailing.status().ToString();
}

TEST(TensorWireTest, MalformedTensorsAreRejected) {
  const std::string good = OneTensor();
  ASSERT_EQ(good.size(), 64u + 24u);
  ASSERT_TRUE(ParseTensorList(Bytes(good)).ok());
  auto error = [](const std::string& bytes) { return ParseTensorList(Bytes(bytes)).status(); };

  EXPECT_TRUE(Contains(error(With<uint32_t>(good, 0, 65)), "tensor count 65 is over the limit 64"));
  EXPECT_TRUE(Contains(error(With<uint32_t>(good, 0, 6)), "needs more bytes"));
  EXPECT_TRUE(Contains(error(With<uint8_t>(good, kDtype, 3)), "tensor 0 has dtype 3"));
  EXPECT_TRUE(Contains(error(With<uint8_t>(good, kDtype, 0)), "dtype 0"));
  EXPECT_TRUE(Contains(error(With<uint8_t>(good, kRank, 9)), "rank 9, over the limit 8"));
  EXPECT_TRUE(Contains(error(With<uint8_t>(good, kPad + 3, 1)), "nonzero header padding"));
  EXPECT_TRUE(Contains(error(With<uint8_t>(good, kDataPad + 5, 1)), "nonzero data padding"));
  EXPECT_TRUE(Contains(error(With<int64_t>(good, kDims, -2)), "negative dimension -2"));
  // 2^40 * 2^40 overflows int64; 2^31 * 3 exceeds the element limit.
  std::string huge =
      With<int64_t>(With<int64_t>(good, kDims, int64_t{1} << 40), kDims + 8, int64_t{1} << 40);
  EXPECT_TRUE(Contains(error(huge), "more than 2147483648 elements")) << error(huge).ToString();
  EXPECT_TRUE(Contains(error(With<int64_t>(good, kDims, int64_t{1} << 31)),
                       "more than 2147483648 elements"));
  Status mismatch = error(With<uint64_t>(good, kByteCount, 20));
  EXPECT_TRUE(Contains(mismatch, "tensor 0 (float32 [2,3]) has byte count 20, expected 24"))
      << mismatch.ToString();
  EXPECT_FALSE(ParseTensorList(Bytes(With<uint64_t>(good, kByteCount, ~uint64_t{0}))).ok());
  // Shape and byte count consistent with each other but not with the bytes present.
  std::string bigger = With<uint64_t>(With<int64_t>(good, kDims, 4), kByteCount, 48);
  EXPECT_TRUE(Contains(error(bigger), "truncated")) << error(bigger).ToString();
}

TEST(TensorWireTest, CopyRejectsWhatViewRejects) {
  EXPECT_FALSE(ParseTensorListCopy(Bytes(With<uint8_t>(OneTensor(), kDtype, 2))).ok());
  EXPECT_FALSE(ParseTensorListCopy({}).ok());
}

TEST(TensorWireTest, PiecesConcatenateToTheEncodedList) {
  engine::Tensor a = engine::Tensor::Make(engine::DType::kFloat32, {2, 3});
  engine::Tensor b = engine::Tensor::Make(engine::DType::kInt64, {5});
  engine::Tensor c = engine::Tensor::Make(engine::DType::kFloat32, {0, 4});
  for (int64_t i = 0; i < a.NumElements(); ++i) a.Data<float>()[i] = 0.5f * static_cast<float>(i);
  for (int64_t i = 0; i < b.NumElements(); ++i) b.Data<int64_t>()[i] = 100 + i;
  std::vector<engine::TensorView> views = {a.View(), b.View(), c.View()};
  std::string encoded;
  AppendTensorList(views, &encoded);
  std::string headers;
  std::vector<std::span<const uint8_t>> pieces;
  TensorListPieces(views, &headers, &pieces);
  std::string joined;
  for (auto piece : pieces)
    joined.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  EXPECT_EQ(joined, encoded);
  TensorListPieces({}, &headers, &pieces);
  std::string empty_encoded;
  AppendTensorList({}, &empty_encoded);
  joined.clear();
  for (auto piece : pieces)
    joined.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  EXPECT_EQ(joined, empty_encoded);
}

}  // namespace
}  // namespace mlcapsule::capsule
