// Fast kernels against reference kernels: ConvNhwc (oneDNN) vs ConvNhwc reference vs the NCHW
// Conv reference (through layout conversion), FullyConnected (oneDNN) vs reference vs Gemm, NHWC
// pools vs the NCHW reference pools. Random shapes cover groups, depthwise, dilations, strides,
// asymmetric pads, fused clamps, ceil mode and batch > 1.
#include <random>

#include "engine/ops/op_test_util.h"

namespace mlcapsule::engine::testing {
namespace {

Tensor NchwToNhwc(const Tensor& t) {
  const int64_t n = t.dims[0], c = t.dims[1], h = t.dims[2], w = t.dims[3];
  Tensor out = Tensor::Make(DType::kFloat32, {n, h, w, c});
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < c; ++b)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out.Data<float>()[((a * h + y) * w + x) * c + b] =
              t.Data<float>()[((a * c + b) * h + y) * w + x];
  return out;
}

struct ConvCase {
  int64_t n, cin, cout, h, w, kh, kw, group, stride, dilation, pad_t, pad_l, pad_b, pad_r;
  float lo, hi;
};

TEST(ConvKernelTest, FastAndReferenceAgreeOnRandomShapes) {
  std::mt19937 rng(3);
  std::vector<ConvCase> cases = {
      {1, 3, 8, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, -INFINITY, INFINITY},
      {2, 8, 8, 7, 6, 3, 3, 8, 2, 1, 1, 1, 1, 1, 0.0f, 6.0f},        // depthwise, relu6
      {3, 6, 4, 10, 11, 1, 1, 2, 1, 1, 0, 0, 0, 0, 0.0f, INFINITY},  // grouped 1x1, relu
      {1, 4, 5, 12, 9, 3, 2, 1, 1, 2, 2, 1, 0, 3, -0.5f, 0.5f},      // dilated, asymmetric pads
      {2, 16, 24, 8, 8, 5, 5, 1, 2, 1, 2, 2, 2, 2, -INFINITY, INFINITY},
  };
  for (int r = 0; r < 5; ++r) {
    int64_t cin = 1 + rng() % 6, g = (rng() % 2) ? cin : 1;
    cases.push_back({1 + static_cast<int64_t>(rng() % 3), cin,
                     g * (1 + static_cast<int64_t>(rng() % 3)), 5 + static_cast<int64_t>(rng() % 8),
                     5 + static_cast<int64_t>(rng() % 8), 3, 3, g,
                     1 + static_cast<int64_t>(rng() % 2), 1, 1, 1, 1, 1, -INFINITY, INFINITY});
  }
  uint32_t seed = 10;
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "n=" << c.n << " cin=" << c.cin << " cout=" << c.cout << " group=" << c.group);
    Tensor x = RandomFloats({c.n, c.cin, c.h, c.w}, seed++);
    Tensor w = RandomFloats({c.cout, c.cin / c.group, c.kh, c.kw}, seed++);
    Tensor b = RandomFloats({c.cout}, seed++);
    std::vector<Attribute> attrs = {
        IntsAttr("strides", {c.stride, c.stride}), IntsAttr("dilations", {c.dilation, c.dilation}),
        IntsAttr("pads", {c.pad_t, c.pad_l, c.pad_b, c.pad_r}), IntsAttr("group", {c.group})};
    if (std::isfinite(c.lo)) attrs.push_back(FloatsAttr("output_min", {c.lo}));
    if (std::isfinite(c.hi)) attrs.push_back(FloatsAttr("output_max", {c.hi}));
    auto nchw = Eval(MakeNode(OpType::kConv, 3, 1, attrs), {&x, &w, &b});
    ASSERT_EQ(nchw.size(), 1u);
    Tensor x_nhwc = NchwToNhwc(x);
    Tensor w_ohwi = NchwToNhwc(w);  // OIHW -> OHWI is the same permutation
    auto ref =
        Eval(MakeNode(OpType::kConvNhwc, 3, 1, attrs), {&x_nhwc, &w_ohwi, &b}, /*fast=*/false);
    auto fast =
        Eval(MakeNode(OpType::kConvNhwc, 3, 1, attrs), {&x_nhwc, &w_ohwi, &b}, /*fast=*/true);
    ASSERT_EQ(ref.size(), 1u);
    ASSERT_EQ(fast.size(), 1u);
    ExpectNear(ref[0], NchwToNhwc(nchw[0]), 1e-5f, 1e-4f);
    ExpectNear(fast[0], ref[0], 1e-4f, 1e-4f);
  }
}

TEST(ConvKernelTest, BadGeometryIsAnError) {
  Tensor x = RandomFloats({1, 4, 5, 5}, 1), w = RandomFloats({6, 4, 3, 3}, 2);
  Status s = EvalStatus(MakeNode(OpType::kConv, 2, 1, {IntsAttr("group", {3})}), {&x, &w});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("group 3"), std::string::npos) << s.message();
  Tensor big = RandomFloats({6, 4, 9, 9}, 3);
  s = EvalStatus(MakeNode(OpType::kConv, 2, 1), {&x, &big});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = EvalStatus(MakeNode(OpType::kConv, 2, 1, {IntsAttr("strides", {0, 1})}), {&x, &w});
  EXPECT_NE(s.message().find("strides"), std::string::npos) << s.message();
}

TEST(FullyConnectedTest, FastReferenceAndGemmAgree) {
  for (auto [rows, k, n] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 7, 3}, {5, 64, 10}, {33, 100, 17}}) {
    Tensor x = RandomFloats({rows, k}, 5), w = RandomFloats({n, k}, 6), b = RandomFloats({n}, 7);
    std::vector<Attribute> attrs = {FloatsAttr("output_min", {-0.25f})};
    auto ref = Eval(MakeNode(OpType::kFullyConnected, 3, 1, attrs), {&x, &w, &b}, false);
    auto fast = Eval(MakeNode(OpType::kFullyConnected, 3, 1, attrs), {&x, &w, &b}, true);
    auto gemm = Eval(MakeNode(OpType::kGemm, 3, 1,
                              {IntsAttr("transB", {1}), FloatsAttr("output_min", {-0.25f})}),
                     {&x, &w, &b});
    ExpectNear(fast[0], ref[0], 1e-4f, 1e-4f);
    ExpectNear(gemm[0], ref[0], 1e-4f, 1e-4f);
  }
}

TEST(MatMulTest, BroadcastsBatchDimensions) {
  Tensor a = RandomFloats({2, 1, 3, 4}, 8), b = RandomFloats({3, 4, 5}, 9);
  auto out = Eval(MakeNode(OpType::kMatMul, 2, 1), {&a, &b});
  ASSERT_EQ(out[0].dims, (Dims{2, 3, 3, 5}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t c = 0; c < 5; ++c) {
          float expect = 0;
          for (int64_t k = 0; k < 4; ++k)
            expect += a.Data<float>()[(i * 3 + r) * 4 + k] * b.Data<float>()[(j * 4 + k) * 5 + c];
          EXPECT_NEAR(out[0].Data<float>()[((i * 3 + j) * 3 + r) * 5 + c], expect, 1e-5f);
        }
}

struct PoolCase {
  int64_t n, c, h, w, k, stride, pad, ceil;
};

TEST(PoolKernelTest, NhwcFastMatchesNchwReference) {
  std::vector<PoolCase> cases = {{1, 3, 8, 8, 2, 2, 0, 0},
                                 {2, 6, 28, 28, 2, 2, 0, 0},
                                 {1, 64, 111, 111, 3, 2, 0, 1},
                                 {1, 20, 9, 7, 3, 2, 1, 1},
                                 {3, 5, 10, 10, 3, 1, 1, 0}};
  uint32_t seed = 40;
  for (const PoolCase& p : cases) {
    for (OpType nchw_op : {OpType::kMaxPool, OpType::kAveragePool}) {
      SCOPED_TRACE(::testing::Message()
                   << OpTypeName(nchw_op) << " c=" << p.c << " h=" << p.h << " ceil=" << p.ceil);
      Tensor x = RandomFloats({p.n, p.c, p.h, p.w}, seed++);
      std::vector<Attribute> attrs = {
          IntsAttr("kernel_shape", {p.k, p.k}), IntsAttr("strides", {p.stride, p.stride}),
          IntsAttr("pads", {p.pad, p.pad, p.pad, p.pad}), IntsAttr("ceil_mode", {p.ceil})};
      auto ref = Eval(MakeNode(nchw_op, 1, 1, attrs), {&x});
      OpType nhwc_op =
          nchw_op == OpType::kMaxPool ? OpType::kMaxPoolNhwc : OpType::kAveragePoolNhwc;
      Tensor xn = NchwToNhwc(x);
      auto fast = Eval(MakeNode(nhwc_op, 1, 1, attrs), {&xn}, true);
      ASSERT_EQ(fast.size(), 1u);
      ExpectNear(fast[0], NchwToNhwc(ref[0]), 1e-5f, 1e-5f);
    }
  }
}

TEST(PoolKernelTest, GlobalAverageNhwcMatchesNchw) {
  Tensor x = RandomFloats({3, 17, 7, 5}, 77);
  auto ref = Eval(MakeNode(OpType::kGlobalAveragePool, 1, 1), {&x});
  Tensor xn = NchwToNhwc(x);
  auto fast = Eval(MakeNode(OpType::kGlobalAveragePoolNhwc, 1, 1), {&xn}, true);
  ExpectNear(fast[0], NchwToNhwc(ref[0]), 1e-5f, 1e-5f);
}

TEST(PoolKernelTest, MaxPoolIndicesFollowOnnx) {
  Tensor x = Tensor::FromFloats({1, 1, 2, 3}, {1, 6, 2, 4, 5, 3});
  auto out = Eval(MakeNode(OpType::kMaxPool, 1, 2, {IntsAttr("kernel_shape", {2, 2})}), {&x});
  ASSERT_EQ(out.size(), 2u);
  ExpectNear(out[0], Tensor::FromFloats({1, 1, 1, 2}, {6, 6}));
  ExpectNear(out[1], Tensor::FromInt64s({1, 1, 1, 2}, {1, 1}));
}

TEST(BatchNormTest, InferenceFormMatchesFormula) {
  Tensor x = RandomFloats({2, 3, 2, 2}, 1);
  Tensor scale = Tensor::FromFloats({3}, {1, 2, 0.5f}), bias = Tensor::FromFloats({3}, {0, 1, -1});
  Tensor mean = Tensor::FromFloats({3}, {0.1f, -0.2f, 0.3f}),
         var = Tensor::FromFloats({3}, {1, 4, 0.25f});
  auto out = Eval(MakeNode(OpType::kBatchNormalization, 5, 1, {FloatsAttr("epsilon", {0.0f})}),
                  {&x, &scale, &bias, &mean, &var});
  for (int64_t i = 0; i < x.NumElements(); ++i) {
    int64_t c = (i / 4) % 3;
    float expect = (x.Data<float>()[i] - mean.Data<float>()[c]) / std::sqrt(var.Data<float>()[c]) *
                       scale.Data<float>()[c] +
                   bias.Data<float>()[c];
    EXPECT_NEAR(out[0].Data<float>()[i], expect, 1e-5f);
  }
}

}  // namespace
}  // namespace mlcapsule::engine::testing
