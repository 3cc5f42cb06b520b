// Pooling. MaxPool (with optional Indices output), AveragePool, GlobalAveragePool and
// GlobalMaxPool follow ONNX on NCHW data of any spatial rank with reference kernels. The
// compiler's NHWC forms (MaxPoolNhwc, AveragePoolNhwc, GlobalAveragePoolNhwc; 2-D only) have
// channels-last fast kernels (vectorised over the contiguous channels), falling back to the
// reference loops for AveragePool with count_include_pad=1. oneDNN's NHWC pooling was measured
// and dropped: 5-10x slower on small channel counts (bench/README.md).
#include <cmath>
#include <limits>

#include "engine/op.h"
#include "engine/ops/conv_geometry.h"
#include "engine/ops/vector_ops.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kMaxPoolAttrs[] = {"kernel_shape", "strides",   "pads",
                                              "dilations",    "ceil_mode", "storage_order"};
constexpr std::string_view kAvgPoolAttrs[] = {"kernel_shape", "strides", "pads", "ceil_mode",
                                              "count_include_pad"};
constexpr std::string_view kNoAttrs[] = {""};

Result<WindowGeometry> InferPool(const NodeContext& ctx, bool nhwc, bool is_max,
                                 std::vector<TensorType>* outputs) {
  if (ctx.input(0).dtype != DType::kFloat32)
    return ctx.Unsupported("element type {} (only float32)", DTypeName(ctx.input(0).dtype));
  const Shape& x = ctx.input(0).shape;
  if (x.size() < 3 || x.size() > 5 || (nhwc && x.size() != 4))
    return ctx.Error("input rank {} is not supported", x.size());
  if (!is_max && ctx.Has("dilations")) return ctx.Unsupported("AveragePool dilations");
  int64_t cip = ctx.Int("count_include_pad", 0);
  if (cip != 0 && cip != 1) return ctx.Error("count_include_pad {} is not 0 or 1", cip);
  int64_t so = ctx.Int("storage_order", 0);
  if (so != 0 && so != 1) return ctx.Error("storage_order {} is not 0 or 1", so);
  const size_t spatial = x.size() - 2;
  MLC_ASSIGN_OR_RETURN(std::vector<int64_t> in_spatial,
                       FixedSpatial(ctx, x, nhwc ? 1 : 2, spatial, "input"));
  MLC_ASSIGN_OR_RETURN(WindowGeometry g, ComputeWindow(ctx, in_spatial, {}, true));
  Shape out{x[0]};
  if (!nhwc) out.push_back(x[1]);
  for (int64_t o : g.output) out.push_back(Dim{o, false});
  if (nhwc) out.push_back(x[3]);
  outputs->push_back(TensorType{DType::kFloat32, out});
  if (is_max && ctx.num_outputs() > 1) {
    if (nhwc) return ctx.Error("MaxPoolNhwc has no Indices output");
    outputs->push_back(TensorType{DType::kInt64, out});
  }
  return g;
}

Status InferMaxPool(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferPool(ctx, false, true, o).status();
}
Status InferAvgPool(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferPool(ctx, false, false, o).status();
}
Status InferMaxPoolNhwc(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferPool(ctx, true, true, o).status();
}
Status InferAvgPoolNhwc(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferPool(ctx, true, false, o).status();
}

// Reference pooling over NCHW (nhwc=false) or NHWC (nhwc=true) data.
class PoolReference final : public Kernel {
 public:
  PoolReference(WindowGeometry g, bool nhwc, bool is_max, bool count_include_pad, bool column_major)
      : g_(std::move(g)),
        nhwc_(nhwc),
        is_max_(is_max),
        include_pad_(count_include_pad),
        column_major_(column_major) {}

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int spatial = g_.spatial;
    const int64_t batch = in[0].dims[0];
    const int64_t channels = nhwc_ ? in[0].dims.back() : in[0].dims[1];
    int64_t in_plane = 1, out_plane = 1, k_plane = 1;
    for (int i = 0; i < spatial; ++i) {
      in_plane *= g_.input[i];
      out_plane *= g_.output[i];
      k_plane *= g_.kernel[i];
    }
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    int64_t* indices = out.size() > 1 ? out[1].As<int64_t>() : nullptr;
    ParallelFor(ctx, batch * channels, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> opos(spatial), kpos(spatial);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / channels, c = job % channels;
        for (int64_t o = 0; o < out_plane; ++o) {
          int64_t rem = o;
          for (int i = spatial - 1; i >= 0; --i) {
            opos[i] = rem % g_.output[i];
            rem /= g_.output[i];
          }
          float best = -std::numeric_limits<float>::infinity();
          int64_t best_index = -1;
          double sum = 0.0;
          int64_t count = 0, padded_count = 1;
          // Divisor with count_include_pad: the window clipped to the padded input.
          for (int i = 0; i < spatial; ++i) {
            int64_t start = opos[i] * g_.strides[i] - g_.pads[i];
            int64_t stop = std::min(start + g_.kernel[i], g_.input[i] + g_.pads[spatial + i]);
            padded_count *= stop - start;
          }
          for (int64_t k = 0; k < k_plane; ++k) {
            int64_t krem = k;
            for (int i = spatial - 1; i >= 0; --i) {
              kpos[i] = krem % g_.kernel[i];
              krem /= g_.kernel[i];
            }
            int64_t offset = 0, stride = 1, cm_offset = 0, cm_stride = 1;
            bool inside = true;
            for (int i = spatial - 1; i >= 0; --i) {
              int64_t p = opos[i] * g_.strides[i] - g_.pads[i] + kpos[i] * g_.dilations[i];
              if (p < 0 || p >= g_.input[i]) {
                inside = false;
                break;
              }
              offset += p * stride;
              stride *= g_.input[i];
            }
            if (!inside) continue;
            if (column_major_) {
              for (int i = 0; i < spatial; ++i) {
                int64_t p = opos[i] * g_.strides[i] - g_.pads[i] + kpos[i] * g_.dilations[i];
                cm_offset += p * cm_stride;
                cm_stride *= g_.input[i];
              }
            }
            float v = nhwc_ ? x[(n * in_plane + offset) * channels + c]
                            : x[(n * channels + c) * in_plane + offset];
            if (is_max_) {
              if (best_index < 0 || v > best) {
                best = v;
                best_index = (n * channels + c) * in_plane + (column_major_ ? cm_offset : offset);
              }
            } else {
              sum += v;
              ++count;
            }
          }
          float result;
          if (is_max_) {
            result = best;
          } else {
            int64_t divisor = include_pad_ ? padded_count : count;
            result = divisor > 0 ? static_cast<float>(sum / static_cast<double>(divisor)) : 0.0f;
          }
          if (nhwc_) {
            y[(n * out_plane + o) * channels + c] = result;
          } else {
            y[job * out_plane + o] = result;
            if (indices) indices[job * out_plane + o] = best_index;
          }
        }
      }
    });
  }

 private:
  WindowGeometry g_;
  bool nhwc_, is_max_, include_pad_, column_major_;
};

// Fast path for NHWC pooling: the channel dimension is contiguous, so each window pixel is one
// vectorised max/add over C floats (oneDNN's NHWC pooling measured 5-10x slower on small channel
// counts, e.g. LeNet's 6 channels). Matches PoolReference's semantics (padding excluded from
// averages, as count_include_pad=0).
class PoolNhwcFast final : public Kernel {
 public:
  PoolNhwcFast(WindowGeometry g, bool is_max) : g_(std::move(g)), is_max_(is_max) {}

  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0], ih = g_.input[0], iw = g_.input[1], c = in[0].dims[3];
    const int64_t oh = g_.output[0], ow = g_.output[1];
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * oh, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / oh, oy = job % oh;
        const int64_t y0 = oy * g_.strides[0] - g_.pads[0];
        for (int64_t ox = 0; ox < ow; ++ox) {
          float* yp = y + ((n * oh + oy) * ow + ox) * c;
          const int64_t x0 = ox * g_.strides[1] - g_.pads[1];
          int64_t count = 0;
          vec::Fill(yp, is_max_ ? -std::numeric_limits<float>::infinity() : 0.0f, c);
          for (int64_t ky = 0; ky < g_.kernel[0]; ++ky) {
            const int64_t iy = y0 + ky * g_.dilations[0];
            if (iy < 0 || iy >= ih) continue;
            for (int64_t kx = 0; kx < g_.kernel[1]; ++kx) {
              const int64_t ix = x0 + kx * g_.dilations[1];
              if (ix < 0 || ix >= iw) continue;
              const float* xp = x + ((n * ih + iy) * iw + ix) * c;
              ++count;
              if (c < 16) {  // few channels: an inline loop beats a dispatched call
                if (is_max_) {
                  for (int64_t k = 0; k < c; ++k) yp[k] = xp[k] > yp[k] ? xp[k] : yp[k];
                } else {
                  for (int64_t k = 0; k < c; ++k) yp[k] += xp[k];
                }
              } else if (is_max_) {
                vec::MaxInto(yp, xp, c);
              } else {
                vec::AddInto(yp, xp, c);
              }
            }
          }
          if (!is_max_) {
            vec::Scale(yp, count > 0 ? 1.0f / static_cast<float>(count) : 0.0f, c);
          }
        }
      }
    });
  }

 private:
  WindowGeometry g_;
  bool is_max_;
};

// Global average pooling over NHWC: sums rows of C contiguous floats.
class GlobalAvgNhwcFast final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0], plane = in[0].dims[1] * in[0].dims[2], c = in[0].dims[3];
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        float* yp = y + n * c;
        vec::Fill(yp, 0.0f, c);
        for (int64_t p = 0; p < plane; ++p) vec::AddInto(yp, x + (n * plane + p) * c, c);
        vec::Scale(yp, 1.0f / static_cast<float>(std::max<int64_t>(plane, 1)), c);
      }
    });
  }
};

Result<std::unique_ptr<Kernel>> CreatePool(const NodeContext& ctx, bool nhwc, bool is_max) {
  std::vector<TensorType> outputs;
  MLC_ASSIGN_OR_RETURN(WindowGeometry g, InferPool(ctx, nhwc, is_max, &outputs));
  bool include_pad = ctx.Int("count_include_pad", 0) == 1;
  if (nhwc && ctx.options().fast && !include_pad) {
    return std::unique_ptr<Kernel>(new PoolNhwcFast(std::move(g), is_max));
  }
  return std::unique_ptr<Kernel>(
      new PoolReference(std::move(g), nhwc, is_max, include_pad, ctx.Int("storage_order", 0) == 1));
}

Result<std::unique_ptr<Kernel>> CreateMaxPool(const NodeContext& ctx) {
  return CreatePool(ctx, false, true);
}
Result<std::unique_ptr<Kernel>> CreateAvgPool(const NodeContext& ctx) {
  return CreatePool(ctx, false, false);
}
Result<std::unique_ptr<Kernel>> CreateMaxPoolNhwc(const NodeContext& ctx) {
  return CreatePool(ctx, true, true);
}
Result<std::unique_ptr<Kernel>> CreateAvgPoolNhwc(const NodeContext& ctx) {
  return CreatePool(ctx, true, false);
}

// ---- Global pools ----

Status InferGlobal(const NodeContext& ctx, bool nhwc, std::vector<TensorType>* outputs) {
  if (ctx.input(0).dtype != DType::kFloat32)
    return ctx.Unsupported("element type {} (only float32)", DTypeName(ctx.input(0).dtype));
  const Shape& x = ctx.input(0).shape;
  if (x.size() < 3 || (nhwc && x.size() != 4))
    return ctx.Error("input rank {} is below 3", x.size());
  MLC_ASSIGN_OR_RETURN(auto spatial, FixedSpatial(ctx, x, nhwc ? 1 : 2, x.size() - 2, "input"));
  (void)spatial;
  Shape out = x;
  if (nhwc) {
    out[1] = out[2] = Dim{1, false};
  } else {
    for (size_t i = 2; i < out.size(); ++i) out[i] = Dim{1, false};
  }
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}
Status InferGlobalPool(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferGlobal(ctx, false, o);
}
Status InferGlobalPoolNhwc(const NodeContext& ctx, std::vector<TensorType>* o) {
  return InferGlobal(ctx, true, o);
}

class GlobalPoolReference final : public Kernel {
 public:
  GlobalPoolReference(bool nhwc, bool is_max) : nhwc_(nhwc), is_max_(is_max) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0];
    const int64_t channels = nhwc_ ? in[0].dims.back() : in[0].dims[1];
    const int64_t plane = in[0].NumElements() / std::max<int64_t>(1, batch * channels);
    const float* x = in[0].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * channels, 8, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t n = job / channels, c = job % channels;
        double sum = 0.0;
        float best = -std::numeric_limits<float>::infinity();
        for (int64_t p = 0; p < plane; ++p) {
          float v = nhwc_ ? x[(n * plane + p) * channels + c] : x[job * plane + p];
          sum += v;
          if (v > best || std::isnan(v)) best = v;
        }
        y[job] = is_max_ ? best : static_cast<float>(sum / static_cast<double>(plane));
      }
    });
  }

 private:
  bool nhwc_, is_max_;
};

Result<std::unique_ptr<Kernel>> CreateGlobalAvg(const NodeContext&) {
  return std::unique_ptr<Kernel>(new GlobalPoolReference(false, false));
}
Result<std::unique_ptr<Kernel>> CreateGlobalMax(const NodeContext&) {
  return std::unique_ptr<Kernel>(new GlobalPoolReference(false, true));
}
Result<std::unique_ptr<Kernel>> CreateGlobalAvgNhwc(const NodeContext& ctx) {
  if (ctx.options().fast) return std::unique_ptr<Kernel>(new GlobalAvgNhwcFast());
  return std::unique_ptr<Kernel>(new GlobalPoolReference(true, false));
}

const OpSchema kMaxPool{OpType::kMaxPool, 1, 1, 1, 2, kMaxPoolAttrs, InferMaxPool, CreateMaxPool};
const OpSchema kAvgPool{OpType::kAveragePool, 1, 1, 1, 1, kAvgPoolAttrs, InferAvgPool,
                        CreateAvgPool};
const OpSchema kMaxPoolNhwc{OpType::kMaxPoolNhwc, 1, 1, 1, 1, kMaxPoolAttrs, InferMaxPoolNhwc,
                            CreateMaxPoolNhwc};
const OpSchema kAvgPoolNhwc{OpType::kAveragePoolNhwc, 1, 1, 1, 1, kAvgPoolAttrs, InferAvgPoolNhwc,
                            CreateAvgPoolNhwc};
const OpSchema kGlobalAvg{
    OpType::kGlobalAveragePool, 1, 1, 1, 1, {kNoAttrs, 0}, InferGlobalPool, CreateGlobalAvg};
const OpSchema kGlobalMax{OpType::kGlobalMaxPool, 1, 1, 1, 1, {kNoAttrs, 0}, InferGlobalPool,
                          CreateGlobalMax};
const OpSchema kGlobalAvgNhwc{OpType::kGlobalAveragePoolNhwc,
                              1,
                              1,
                              1,
                              1,
                              {kNoAttrs, 0},
                              InferGlobalPoolNhwc,
                              CreateGlobalAvgNhwc};

}  // namespace

void AddPoolOps(std::vector<const OpSchema*>* ops) {
  for (const OpSchema* s : {&kMaxPool, &kAvgPool, &kMaxPoolNhwc, &kAvgPoolNhwc, &kGlobalAvg,
                            &kGlobalMax, &kGlobalAvgNhwc})
    ops->push_back(s);
}

}  // namespace mlcapsule::engine
