// Matrix products. Gemm and MatMul follow ONNX exactly with plain reference kernels (i-k-j loop
// order, which the compiler vectorises). FullyConnected is the compiler's form of a Gemm/MatMul
// with constant [out, in] weights, optional bias and fused clamp: oneDNN's inner product is its
// fast kernel (weights reordered once at load), a plain loop its reference.
#include <cstring>

#include "engine/op.h"
#include "engine/ops/conv_geometry.h"
#include "engine/ops/dnnl_util.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kGemmAttrs[] = {"alpha",  "beta",       "transA",
                                           "transB", "output_min", "output_max"};
constexpr std::string_view kMatMulAttrs[] = {""};
constexpr std::string_view kFcAttrs[] = {"output_min", "output_max"};

Status RequireFloat(const NodeContext& ctx) {
  for (int i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i) && ctx.input(i).dtype != DType::kFloat32)
      return ctx.Unsupported("input {} has element type {} (only float32)", i,
                             DTypeName(ctx.input(i).dtype));
  return Status::Ok();
}

// ---- Gemm ----

Status InferGemm(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireFloat(ctx));
  const Shape& a = ctx.input(0).shape;
  const Shape& b = ctx.input(1).shape;
  if (a.size() != 2 || b.size() != 2)
    return ctx.Error("A and B must be 2-D, got {} and {}", ShapeToString(a), ShapeToString(b));
  int64_t ta = ctx.Int("transA", 0), tb = ctx.Int("transB", 0);
  if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1))
    return ctx.Error("transA/transB must be 0 or 1");
  Dim m = ta ? a[1] : a[0], ka = ta ? a[0] : a[1];
  Dim kb = tb ? b[1] : b[0], n = tb ? b[0] : b[1];
  if (!(ka == kb))
    return ctx.Error("inner dimensions differ: A {} (transA={}) and B {} (transB={})",
                     ShapeToString(a), ta, ShapeToString(b), tb);
  if (ka.batch || n.batch) return ctx.Unsupported("K and N must not depend on the batch size");
  Shape out{m, n};
  if (ctx.has_input(2)) {
    const Shape* shapes[] = {&ctx.input(2).shape, &out};
    MLC_ASSIGN_OR_RETURN(Shape bc, BroadcastShapes(ctx, shapes));
    if (!(bc == out))
      return ctx.Error("C of shape {} does not broadcast to {}", ShapeToString(ctx.input(2).shape),
                       ShapeToString(out));
  }
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}

class GemmReference final : public Kernel {
 public:
  GemmReference(bool ta, bool tb, float alpha, float beta, Clamp clamp)
      : ta_(ta), tb_(tb), alpha_(alpha), beta_(beta), clamp_(clamp) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t m = out[0].dims[0], n = out[0].dims[1];
    const int64_t k = ta_ ? in[0].dims[0] : in[0].dims[1];
    const float* a = in[0].As<float>();
    const float* b = in[1].As<float>();
    float* y = out[0].As<float>();
    std::vector<int64_t> c_strides;
    const float* c = nullptr;
    if (in.size() > 2 && in[2].data != nullptr) {
      c = in[2].As<float>();
      c_strides = BroadcastStrides(in[2].dims, out[0].dims);
    }
    ParallelFor(ctx, m, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(n));
      for (int64_t i = begin; i < end; ++i) {
        std::fill(row.begin(), row.end(), 0.0f);
        for (int64_t p = 0; p < k; ++p) {
          const float av = ta_ ? a[p * m + i] : a[i * k + p];
          if (tb_) {
            for (int64_t j = 0; j < n; ++j) row[j] += av * b[j * k + p];
          } else {
            const float* bp = b + p * n;
            for (int64_t j = 0; j < n; ++j) row[j] += av * bp[j];
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          float v = alpha_ * row[j];
          if (c) v += beta_ * c[i * c_strides[0] + j * c_strides[1]];
          y[i * n + j] = clamp_.Apply(v);
        }
      }
    });
  }

 private:
  bool ta_, tb_;
  float alpha_, beta_;
  Clamp clamp_;
};

Result<std::unique_ptr<Kernel>> CreateGemm(const NodeContext& ctx) {
  return std::unique_ptr<Kernel>(
      new GemmReference(ctx.Int("transA", 0) != 0, ctx.Int("transB", 0) != 0,
                        ctx.Float("alpha", 1.0f), ctx.Float("beta", 1.0f), ReadClamp(ctx)));
}

// ---- MatMul (numpy.matmul semantics) ----

Status InferMatMul(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireFloat(ctx));
  Shape a = ctx.input(0).shape, b = ctx.input(1).shape;
  if (a.empty() || b.empty()) return ctx.Error("MatMul inputs must have rank >= 1");
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), Dim{1, false});
  if (b_vec) b.push_back(Dim{1, false});
  if (!(a.back() == b[b.size() - 2]))
    return ctx.Error("inner dimensions differ: {} and {}", ShapeToString(ctx.input(0).shape),
                     ShapeToString(ctx.input(1).shape));
  if (a.back().batch || b.back().batch)
    return ctx.Unsupported("K and N must not depend on the batch size");
  Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  const Shape* shapes[] = {&a_batch, &b_batch};
  MLC_ASSIGN_OR_RETURN(Shape out, BroadcastShapes(ctx, shapes));
  if (!a_vec) out.push_back(a[a.size() - 2]);
  if (!b_vec) out.push_back(b.back());
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}

class MatMulReference final : public Kernel {
 public:
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    Dims a = in[0].dims, b = in[1].dims;
    if (a.size() == 1) a.insert(a.begin(), 1);
    if (b.size() == 1) b.push_back(1);
    const int64_t m = a[a.size() - 2], k = a.back(), n = b.back();
    Dims ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
    size_t rank = std::max(ab.size(), bb.size());
    Dims batch(rank, 1);
    for (size_t i = 0; i < rank; ++i) {
      int64_t da = i + ab.size() >= rank ? ab[i + ab.size() - rank] : 1;
      int64_t db = i + bb.size() >= rank ? bb[i + bb.size() - rank] : 1;
      batch[i] = std::max(da, db);
    }
    std::vector<int64_t> sa = BroadcastStrides(ab, batch), sb = BroadcastStrides(bb, batch);
    int64_t batches = 1;
    for (int64_t d : batch) batches *= d;
    const float* ap = in[0].As<float>();
    const float* bp = in[1].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batches * m, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        int64_t bi = job / m, i = job % m, rem = bi, oa = 0, ob = 0;
        for (int d = static_cast<int>(rank) - 1; d >= 0; --d) {
          int64_t idx = rem % batch[d];
          rem /= batch[d];
          oa += idx * sa[d];
          ob += idx * sb[d];
        }
        const float* arow = ap + oa * m * k + i * k;
        const float* bm = bp + ob * k * n;
        float* yrow = y + job * n;
        std::fill(yrow, yrow + n, 0.0f);
        for (int64_t p = 0; p < k; ++p) {
          const float av = arow[p];
          const float* brow = bm + p * n;
          for (int64_t j = 0; j < n; ++j) yrow[j] += av * brow[j];
        }
      }
    });
  }
};

Result<std::unique_ptr<Kernel>> CreateMatMul(const NodeContext&) {
  return std::unique_ptr<Kernel>(new MatMulReference());
}

// ---- FullyConnected: y[..., o] = clamp(sum_k x[..., k] * w[o, k] + b[o]) ----

Status InferFullyConnected(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(RequireFloat(ctx));
  const Shape& x = ctx.input(0).shape;
  const Shape& w = ctx.input(1).shape;
  if (x.empty() || w.size() != 2 || HasBatchDim(w))
    return ctx.Error("needs x of rank >= 1 and fixed 2-D weights");
  if (!(x.back() == w[1]))
    return ctx.Error("input features {} differ from the weights' {}", ShapeToString(x),
                     ShapeToString(w));
  if (ctx.has_input(2) && !(ctx.input(2).shape == Shape{w[0]}))
    return ctx.Error("bias shape {} is not [{}]", ShapeToString(ctx.input(2).shape), w[0].value);
  Clamp clamp = ReadClamp(ctx);
  if (!(clamp.min <= clamp.max)) return ctx.Error("output_min is above output_max");
  Shape out(x.begin(), x.end() - 1);
  out.push_back(w[0]);
  outputs->push_back(TensorType{DType::kFloat32, out});
  return Status::Ok();
}

class FullyConnectedReference final : public Kernel {
 public:
  explicit FullyConnectedReference(Clamp clamp) : clamp_(clamp) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t k = in[1].dims[1], n = in[1].dims[0];
    const int64_t rows = in[0].NumElements() / std::max<int64_t>(k, 1);
    const float* x = in[0].As<float>();
    const float* w = in[1].As<float>();
    const float* b = in.size() > 2 ? in[2].As<float>() : nullptr;
    float* y = out[0].As<float>();
    ParallelFor(ctx, rows * n, 64, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t r = job / n, o = job % n;
        float acc = b ? b[o] : 0.0f;
        for (int64_t p = 0; p < k; ++p) acc += x[r * k + p] * w[o * k + p];
        y[job] = clamp_.Apply(acc);
      }
    });
  }

 private:
  Clamp clamp_;
};

// Fast path: oneDNN inner product; weights reordered once into its preferred layout.
class FullyConnectedDnnl final : public Kernel {
 public:
  FullyConnectedDnnl(int64_t k, int64_t n, const float* w, const float* b, Clamp clamp)
      : k_(k), n_(n), clamp_(clamp), layer_(w, b, n) {}

  Status Setup(std::span<const TensorView> in, std::span<const TensorView> out,
               const RunContext&) override {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const int64_t rows = in[0].NumElements() / std::max<int64_t>(k_, 1);
    return DnnlTry("inner product setup", [&] {
      dnnl::memory::desc src_md({rows, k_}, dt::f32, tag::ab), dst_md({rows, n_}, dt::f32, tag::ab);
      dnnl::memory::desc w_any({n_, k_}, dt::f32, tag::any), b_md({n_}, dt::f32, tag::a);
      dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_inference, src_md, w_any,
                                             b_md, dst_md);
      dnnl::inner_product_forward::primitive_desc pd(desc, ClampAttr(clamp_), DnnlEngine());
      layer_.Bind(dnnl::inner_product_forward(pd), pd.weights_desc(),
                  dnnl::memory::desc({n_, k_}, dt::f32, tag::ab), src_md, in[0].data, dst_md,
                  out[0].data);
    });
  }

  void Run(std::span<const TensorView>, std::span<const TensorView>, const RunContext&) override {
    layer_.Execute();
  }

 private:
  int64_t k_, n_;
  Clamp clamp_;
  DnnlWeightedLayer layer_;
};

Result<std::unique_ptr<Kernel>> CreateFullyConnected(const NodeContext& ctx) {
  Clamp clamp = ReadClamp(ctx);
  const bool constant_params =
      ctx.constant(1) != nullptr && (!ctx.has_input(2) || ctx.constant(2) != nullptr);
  if (ctx.options().fast && constant_params) {
    const Shape& w = ctx.input(1).shape;
    return std::unique_ptr<Kernel>(
        new FullyConnectedDnnl(w[1].value, w[0].value, ctx.constant_as<float>(1),
                               ctx.has_input(2) ? ctx.constant_as<float>(2) : nullptr, clamp));
  }
  return std::unique_ptr<Kernel>(new FullyConnectedReference(clamp));
}

const OpSchema kGemm{OpType::kGemm, 2, 3, 1, 1, kGemmAttrs, InferGemm, CreateGemm};
const OpSchema kMatMul{OpType::kMatMul, 2, 2, 1, 1, {kMatMulAttrs, 0}, InferMatMul, CreateMatMul};
const OpSchema kFullyConnected{OpType::kFullyConnected, 2, 3, 1, 1, kFcAttrs, InferFullyConnected,
                               CreateFullyConnected};

}  // namespace

void AddGemmOps(std::vector<const OpSchema*>* ops) {
  ops->push_back(&kGemm);
  ops->push_back(&kMatMul);
  ops->push_back(&kFullyConnected);
}

}  // namespace mlcapsule::engine
