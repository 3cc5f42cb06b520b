// Convolution. Conv is ONNX's N-d grouped, dilated, padded convolution on NCHW data with a plain
// reference kernel (weights may be runtime tensors). ConvNhwc is the compiler's 2-D form on NHWC
// data with constant OHWI weights: its fast kernel is oneDNN's convolution (weights reordered
// once into the implementation's blocked layout), its reference kernel a plain loop, and both fuse
// a bias and an output clamp (Relu/Clip folded in by the compiler).
#include <cmath>

#include "engine/op.h"
#include "engine/ops/conv_geometry.h"
#include "engine/ops/dnnl_util.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kConvAttrs[] = {"kernel_shape", "strides",    "pads",      "dilations",
                                           "group",        "output_min", "output_max"};

Status CheckFloatInputs(const NodeContext& ctx) {
  for (int i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i) && ctx.input(i).dtype != DType::kFloat32)
      return ctx.Unsupported("input {} has element type {} (only float32)", i,
                             DTypeName(ctx.input(i).dtype));
  return Status::Ok();
}

// Shared by Conv (channels at 1, weights OIHW) and ConvNhwc (channels last, weights OHWI).
struct ConvShape {
  int64_t group = 1, in_channels = 0, out_channels = 0;
  WindowGeometry window;
};

Result<ConvShape> InferConvShape(const NodeContext& ctx, bool nhwc, Shape* out_shape) {
  MLC_RETURN_IF_ERROR(CheckFloatInputs(ctx));
  const Shape& x = ctx.input(0).shape;
  const Shape& w = ctx.input(1).shape;
  if (x.size() < 3 || x.size() > 5) return ctx.Error("input rank {} is not 3, 4 or 5", x.size());
  if (nhwc && x.size() != 4) return ctx.Error("ConvNhwc input rank {} is not 4", x.size());
  if (w.size() != x.size())
    return ctx.Error("weight rank {} differs from input rank {}", w.size(), x.size());
  if (HasBatchDim(w)) return ctx.Error("weights have a batch-dependent shape");
  const size_t spatial = x.size() - 2;
  ConvShape cs;
  cs.group = ctx.Int("group", 1);
  size_t channel_axis = nhwc ? x.size() - 1 : 1;
  MLC_ASSIGN_OR_RETURN(cs.in_channels, FixedDim(ctx, x[channel_axis], "input channels"));
  cs.out_channels = w[0].value;
  int64_t w_in = nhwc ? w[x.size() - 1].value : w[1].value;
  if (cs.group < 1 || cs.group > cs.in_channels || cs.in_channels % cs.group != 0 ||
      cs.out_channels % cs.group != 0)
    return ctx.Error("group {} must divide input channels {} and output channels {}", cs.group,
                     cs.in_channels, cs.out_channels);
  if (w_in * cs.group != cs.in_channels)
    return ctx.Error("weights expect {} input channels per group, input has {} in {} groups", w_in,
                     cs.in_channels, cs.group);
  if (ctx.has_input(2)) {
    const Shape& b = ctx.input(2).shape;
    if (b.size() != 1 || b[0] != Dim{cs.out_channels, false})
      return ctx.Error("bias shape {} is not [{}]", ShapeToString(b), cs.out_channels);
  }
  size_t first = nhwc ? 1 : 2;
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> in_spatial,
                       FixedSpatial(ctx, x, first, spatial, "input"));
  std::vector<int64_t> kernel;
  for (size_t i = 0; i < spatial; ++i) kernel.push_back(w[(nhwc ? 1 : 2) + i].value);
  MLC_ASSIGN_OR_RETURN(cs.window, ComputeWindow(ctx, in_spatial, kernel, false));
  Clamp clamp = ReadClamp(ctx);
  if (!(clamp.min <= clamp.max))
    return ctx.Error("output_min {} is above output_max {}", clamp.min, clamp.max);
  Shape out;
  out.push_back(x[0]);
  if (!nhwc) out.push_back(Dim{cs.out_channels, false});
  for (int64_t o : cs.window.output) out.push_back(Dim{o, false});
  if (nhwc) out.push_back(Dim{cs.out_channels, false});
  *out_shape = out;
  return cs;
}

Status InferConv(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  Shape out;
  MLC_ASSIGN_OR_RETURN(ConvShape cs, InferConvShape(ctx, false, &out));
  (void)cs;
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}

Status InferConvNhwc(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  Shape out;
  MLC_ASSIGN_OR_RETURN(ConvShape cs, InferConvShape(ctx, true, &out));
  (void)cs;
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}

// Reference N-d convolution, NCHW data, OI[spatial] weights.
class ConvReference final : public Kernel {
 public:
  ConvReference(ConvShape shape, Clamp clamp) : cs_(std::move(shape)), clamp_(clamp) {}

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const WindowGeometry& g = cs_.window;
    const int spatial = g.spatial;
    const int64_t batch = in[0].dims[0];
    const int64_t cin_g = cs_.in_channels / cs_.group, cout_g = cs_.out_channels / cs_.group;
    int64_t in_plane = 1, out_plane = 1, k_plane = 1;
    for (int i = 0; i < spatial; ++i) {
      in_plane *= g.input[i];
      out_plane *= g.output[i];
      k_plane *= g.kernel[i];
    }
    const float* x = in[0].As<float>();
    const float* w = in[1].As<float>();
    const float* b = in.size() > 2 ? in[2].As<float>() : nullptr;
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * cs_.out_channels, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> opos(spatial), kpos(spatial);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / cs_.out_channels, m = job % cs_.out_channels, grp = m / cout_g;
        float* yp = y + job * out_plane;
        for (int64_t o = 0; o < out_plane; ++o) {
          int64_t rem = o;
          for (int i = spatial - 1; i >= 0; --i) {
            opos[i] = rem % g.output[i];
            rem /= g.output[i];
          }
          float acc = b ? b[m] : 0.0f;
          for (int64_t c = 0; c < cin_g; ++c) {
            const float* xp = x + (n * cs_.in_channels + grp * cin_g + c) * in_plane;
            const float* wp = w + (m * cin_g + c) * k_plane;
            for (int64_t k = 0; k < k_plane; ++k) {
              int64_t krem = k, offset = 0;
              bool inside = true;
              for (int i = spatial - 1; i >= 0; --i) {
                kpos[i] = krem % g.kernel[i];
                krem /= g.kernel[i];
              }
              int64_t stride = 1;
              for (int i = spatial - 1; i >= 0; --i) {
                int64_t p = opos[i] * g.strides[i] - g.pads[i] + kpos[i] * g.dilations[i];
                if (p < 0 || p >= g.input[i]) {
                  inside = false;
                  break;
                }
                offset += p * stride;
                stride *= g.input[i];
              }
              if (inside) acc += xp[offset] * wp[k];
            }
          }
          yp[o] = clamp_.Apply(acc);
        }
      }
    });
  }

 private:
  ConvShape cs_;
  Clamp clamp_;
};

// Reference 2-D convolution on NHWC data with OHWI weights.
class ConvNhwcReference final : public Kernel {
 public:
  ConvNhwcReference(ConvShape shape, Clamp clamp) : cs_(std::move(shape)), clamp_(clamp) {}

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const WindowGeometry& g = cs_.window;
    const int64_t batch = in[0].dims[0], ih = g.input[0], iw = g.input[1];
    const int64_t oh = g.output[0], ow = g.output[1], kh = g.kernel[0], kw = g.kernel[1];
    const int64_t cin = cs_.in_channels, cout = cs_.out_channels;
    const int64_t cin_g = cin / cs_.group, cout_g = cout / cs_.group;
    const float* x = in[0].As<float>();
    const float* w = in[1].As<float>();
    const float* b = in.size() > 2 ? in[2].As<float>() : nullptr;
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * oh, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / oh, oy = job % oh;
        for (int64_t ox = 0; ox < ow; ++ox) {
          float* yp = y + ((n * oh + oy) * ow + ox) * cout;
          for (int64_t m = 0; m < cout; ++m) {
            const int64_t grp = m / cout_g;
            float acc = b ? b[m] : 0.0f;
            for (int64_t ky = 0; ky < kh; ++ky) {
              int64_t iy = oy * g.strides[0] - g.pads[0] + ky * g.dilations[0];
              if (iy < 0 || iy >= ih) continue;
              for (int64_t kx = 0; kx < kw; ++kx) {
                int64_t ix = ox * g.strides[1] - g.pads[1] + kx * g.dilations[1];
                if (ix < 0 || ix >= iw) continue;
                const float* xp = x + ((n * ih + iy) * iw + ix) * cin + grp * cin_g;
                const float* wp = w + ((m * kh + ky) * kw + kx) * cin_g;
                for (int64_t c = 0; c < cin_g; ++c) acc += xp[c] * wp[c];
              }
            }
            yp[m] = clamp_.Apply(acc);
          }
        }
      }
    });
  }

 private:
  ConvShape cs_;
  Clamp clamp_;
};

// Fast path: oneDNN convolution on NHWC activations. The weights are reordered once into the
// layout the chosen implementation wants (pre-packed at load); the primitive is re-created only
// when the batch size changes (oneDNN caches generated code).
class ConvNhwcDnnl final : public Kernel {
 public:
  ConvNhwcDnnl(ConvShape shape, Clamp clamp, const float* weights, const float* bias)
      : cs_(std::move(shape)), clamp_(clamp), layer_(weights, bias, cs_.out_channels) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext& ctx) override {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const WindowGeometry& g = cs_.window;
    const int64_t n = in[0].dims[0], cin_g = cs_.in_channels / cs_.group,
                  cout_g = cs_.out_channels / cs_.group;
    dnnl::memory::dims src_dims{n, cs_.in_channels, g.input[0], g.input[1]};
    dnnl::memory::dims dst_dims{n, cs_.out_channels, g.output[0], g.output[1]};
    dnnl::memory::dims w_dims =
        cs_.group > 1 ? dnnl::memory::dims{cs_.group, cout_g, cin_g, g.kernel[0], g.kernel[1]}
                      : dnnl::memory::dims{cs_.out_channels, cin_g, g.kernel[0], g.kernel[1]};
    return DnnlTry("convolution setup", [&] {
      dnnl::memory::desc src_md(src_dims, dt::f32, tag::nhwc), dst_md(dst_dims, dt::f32, tag::nhwc);
      dnnl::memory::desc w_any(w_dims, dt::f32, tag::any),
          b_md({cs_.out_channels}, dt::f32, tag::a);
      dnnl::convolution_forward::desc desc(
          dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_md, w_any,
          b_md, dst_md, {g.strides[0], g.strides[1]}, {g.dilations[0] - 1, g.dilations[1] - 1},
          {g.pads[0], g.pads[1]}, {g.pads[2], g.pads[3]});
      dnnl::convolution_forward::primitive_desc pd(desc, ClampAttr(clamp_), DnnlEngine());
      // Our OHWI bytes are [g][o][h][w][i]: describe them to oneDNN, which reorders them once.
      dnnl::memory::desc user_md =
          cs_.group > 1
              ? dnnl::memory::desc(w_dims, dt::f32,
                                   dnnl::memory::dims{cout_g * g.kernel[0] * g.kernel[1] * cin_g,
                                                      g.kernel[0] * g.kernel[1] * cin_g, 1,
                                                      g.kernel[1] * cin_g, cin_g})
              : dnnl::memory::desc(w_dims, dt::f32, tag::ohwi);
      layer_.Bind(dnnl::convolution_forward(pd), pd.weights_desc(), user_md, src_md, in[0].data,
                  dst_md, out[0].data);
    });
  }

  void Run(std::span<const TensorView>, std::span<const TensorView>, const RunContext&) override {
    layer_.Execute();
  }

 private:
  ConvShape cs_;
  Clamp clamp_;
  DnnlWeightedLayer layer_;
};

Result<std::unique_ptr<Kernel>> CreateConv(const NodeContext& ctx) {
  Shape out;
  MLC_ASSIGN_OR_RETURN(ConvShape cs, InferConvShape(ctx, false, &out));
  return std::unique_ptr<Kernel>(new ConvReference(std::move(cs), ReadClamp(ctx)));
}

Result<std::unique_ptr<Kernel>> CreateConvNhwc(const NodeContext& ctx) {
  Shape out;
  MLC_ASSIGN_OR_RETURN(ConvShape cs, InferConvShape(ctx, true, &out));
  Clamp clamp = ReadClamp(ctx);
  const bool constant_params =
      ctx.constant(1) != nullptr && (!ctx.has_input(2) || ctx.constant(2) != nullptr);
  if (ctx.options().fast && constant_params) {
    return std::unique_ptr<Kernel>(
        new ConvNhwcDnnl(std::move(cs), clamp, ctx.constant_as<float>(1),
                         ctx.has_input(2) ? ctx.constant_as<float>(2) : nullptr));
  }
  return std::unique_ptr<Kernel>(new ConvNhwcReference(std::move(cs), clamp));
}

const OpSchema kConv{OpType::kConv, 2, 3, 1, 1, kConvAttrs, InferConv, CreateConv};
const OpSchema kConvNhwc{OpType::kConvNhwc, 2, 3, 1, 1, kConvAttrs, InferConvNhwc, CreateConvNhwc};

}  // namespace

void AddConvOps(std::vector<const OpSchema*>* ops) {
  ops->push_back(&kConv);
  ops->push_back(&kConvNhwc);
}

}  // namespace mlcapsule::engine
