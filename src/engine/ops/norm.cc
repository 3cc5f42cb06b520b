// Normalisation in inference form. BatchNormalization applies the stored statistics per channel
// (the compiler folds it into a preceding convolution whenever it can, so this kernel runs only
// for standalone BN); InstanceNormalization normalises each (n, c) plane with its own statistics.
#include <cmath>

#include "engine/op.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {
namespace {

constexpr std::string_view kBnAttrs[] = {"epsilon", "momentum", "training_mode"};
constexpr std::string_view kInAttrs[] = {"epsilon"};

Status InferPerChannel(const NodeContext& ctx, int params, std::vector<TensorType>* outputs) {
  for (int i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.input(i).dtype != DType::kFloat32)
      return ctx.Unsupported("input {} has element type {} (only float32)", i,
                             DTypeName(ctx.input(i).dtype));
  const Shape& x = ctx.input(0).shape;
  if (x.size() < 2) return ctx.Error("input rank {} is below 2", x.size());
  if (x[1].batch) return ctx.Unsupported("channel count depends on the batch size");
  for (int i = 1; i <= params; ++i)
    if (!(ctx.input(i).shape == Shape{x[1]}))
      return ctx.Error("parameter {} has shape {}, expected [{}]", i,
                       ShapeToString(ctx.input(i).shape), x[1].value);
  float eps = ctx.Float("epsilon", 1e-5f);
  if (!(eps >= 0.0f)) return ctx.Error("epsilon {} is negative", eps);
  outputs->push_back(ctx.input(0));
  return Status::Ok();
}

Status InferBatchNorm(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  MLC_RETURN_IF_ERROR(InferPerChannel(ctx, 4, outputs));
  int64_t training = ctx.Int("training_mode", 0);
  if (training != 0 && training != 1) return ctx.Error("training_mode {} is not 0 or 1", training);
  if (ctx.num_outputs() > 1 && training == 0)
    return ctx.Error("running statistics outputs need training_mode=1");
  for (int i = 1; i < ctx.num_outputs(); ++i) outputs->push_back(ctx.input(3));
  return Status::Ok();
}
Status InferInstanceNorm(const NodeContext& ctx, std::vector<TensorType>* outputs) {
  return InferPerChannel(ctx, 2, outputs);
}

class BatchNormReference final : public Kernel {
 public:
  explicit BatchNormReference(float eps) : eps_(eps) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0], channels = in[0].dims[1];
    const int64_t plane = in[0].NumElements() / std::max<int64_t>(1, batch * channels);
    const float *x = in[0].As<float>(), *scale = in[1].As<float>(), *bias = in[2].As<float>();
    const float *mean = in[3].As<float>(), *var = in[4].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * channels, 4, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t c = job % channels;
        const float a = scale[c] / std::sqrt(var[c] + eps_);
        const float b = bias[c] - mean[c] * a;
        const float* xp = x + job * plane;
        float* yp = y + job * plane;
        for (int64_t p = 0; p < plane; ++p) yp[p] = xp[p] * a + b;
      }
    });
  }

 private:
  float eps_;
};

class InstanceNormReference final : public Kernel {
 public:
  explicit InstanceNormReference(float eps) : eps_(eps) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0], channels = in[0].dims[1];
    const int64_t plane = in[0].NumElements() / std::max<int64_t>(1, batch * channels);
    const float *x = in[0].As<float>(), *scale = in[1].As<float>(), *bias = in[2].As<float>();
    float* y = out[0].As<float>();
    ParallelFor(ctx, batch * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t c = job % channels;
        const float* xp = x + job * plane;
        double mean = 0.0, var = 0.0;
        for (int64_t p = 0; p < plane; ++p) mean += xp[p];
        mean /= static_cast<double>(std::max<int64_t>(plane, 1));
        for (int64_t p = 0; p < plane; ++p) var += (xp[p] - mean) * (xp[p] - mean);
        var /= static_cast<double>(std::max<int64_t>(plane, 1));
        const float a = static_cast<float>(scale[c] / std::sqrt(var + eps_));
        const float b = static_cast<float>(bias[c] - mean * a);
        float* yp = y + job * plane;
        for (int64_t p = 0; p < plane; ++p) yp[p] = xp[p] * a + b;
      }
    });
  }

 private:
  float eps_;
};

// training_mode=1 (ONNX opset 14+): normalise with the batch's own statistics (population
// variance over every axis but the channel) and emit the updated running statistics.
class BatchNormTraining final : public Kernel {
 public:
  BatchNormTraining(float eps, float momentum) : eps_(eps), momentum_(momentum) {}
  void Run(std::span<const TensorView> in, std::span<const TensorView> out,
           const RunContext& ctx) override {
    const int64_t batch = in[0].dims[0], channels = in[0].dims[1];
    const int64_t plane = in[0].NumElements() / std::max<int64_t>(1, batch * channels);
    const float *x = in[0].As<float>(), *scale = in[1].As<float>(), *bias = in[2].As<float>();
    const float *mean_in = in[3].As<float>(), *var_in = in[4].As<float>();
    float* y = out[0].As<float>();
    const double count = static_cast<double>(std::max<int64_t>(1, batch * plane));
    ParallelFor(ctx, channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double sum = 0.0, sq = 0.0;
        for (int64_t n = 0; n < batch; ++n) {
          const float* xp = x + (n * channels + c) * plane;
          for (int64_t p = 0; p < plane; ++p) sum += xp[p];
        }
        const double mean = sum / count;
        for (int64_t n = 0; n < batch; ++n) {
          const float* xp = x + (n * channels + c) * plane;
          for (int64_t p = 0; p < plane; ++p) sq += (xp[p] - mean) * (xp[p] - mean);
        }
        const double var = sq / count;
        const double a = scale[c] / std::sqrt(var + eps_);
        for (int64_t n = 0; n < batch; ++n) {
          const float* xp = x + (n * channels + c) * plane;
          float* yp = y + (n * channels + c) * plane;
          for (int64_t p = 0; p < plane; ++p)
            yp[p] = static_cast<float>((xp[p] - mean) * a + bias[c]);
        }
        if (out.size() > 1)
          out[1].As<float>()[c] =
              static_cast<float>(mean_in[c] * momentum_ + mean * (1.0 - momentum_));
        if (out.size() > 2)
          out[2].As<float>()[c] =
              static_cast<float>(var_in[c] * momentum_ + var * (1.0 - momentum_));
      }
    });
  }

 private:
  float eps_, momentum_;
};

Result<std::unique_ptr<Kernel>> CreateBatchNorm(const NodeContext& ctx) {
  if (ctx.Int("training_mode", 0) == 1)
    return std::unique_ptr<Kernel>(
        new BatchNormTraining(ctx.Float("epsilon", 1e-5f), ctx.Float("momentum", 0.9f)));
  return std::unique_ptr<Kernel>(new BatchNormReference(ctx.Float("epsilon", 1e-5f)));
}
Result<std::unique_ptr<Kernel>> CreateInstanceNorm(const NodeContext& ctx) {
  return std::unique_ptr<Kernel>(new InstanceNormReference(ctx.Float("epsilon", 1e-5f)));
}

const OpSchema kBatchNorm{
    OpType::kBatchNormalization, 5, 5, 1, 3, kBnAttrs, InferBatchNorm, CreateBatchNorm};
const OpSchema kInstanceNorm{
    OpType::kInstanceNormalization, 3, 3, 1, 1, kInAttrs, InferInstanceNorm, CreateInstanceNorm};

}  // namespace

void AddNormOps(std::vector<const OpSchema*>* ops) {
  ops->push_back(&kBatchNorm);
  ops->push_back(&kInstanceNorm);
}

}  // namespace mlcapsule::engine
