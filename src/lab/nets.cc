// The lab's models: one configurable module, its training loop, prediction, ONNX export through
// the compiler's writer, and save/load for the lab's cache.
#include "lab/nets.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

#include "compiler/onnx_writer.h"
#include "lab/rand.h"

namespace mlcapsule::lab {
namespace {

constexpr int kKernel = 5;
constexpr int kCnnFlatSide = 4;  // 28 -5+1 = 24, /2 = 12, -5+1 = 8, /2 = 4

torch::Tensor Activate(const ArchSpec& spec, torch::Tensor x) {
  return spec.tanh ? torch::tanh(x) : torch::relu(x);
}

// Weight initialisation draws from torch's global generator: seeding it and constructing must not
// interleave with another job's construction.
std::mutex& ConstructionMutex() {
  static std::mutex m;
  return m;
}

}  // namespace

std::string ArchSpec::Name() const {
  std::string name;
  if (kind == Kind::kCnn) {
    name = fmt::format("cnn-{}-{}", conv1, conv2);
  } else {
    name = sigmoid_output ? "membership" : (tanh ? "mlp-tanh" : "mlp");
  }
  for (int h : hidden) name += fmt::format("-{}", h);
  return name;
}

ArchSpec CnnA() { return ArchSpec{}; }
ArchSpec CnnB() {
  ArchSpec s;
  s.conv1 = 16;
  s.conv2 = 32;
  s.hidden = {64};
  return s;
}
ArchSpec Mlp() {
  ArchSpec s;
  s.kind = ArchSpec::Kind::kMlp;
  s.hidden = {256, 128};
  return s;
}
ArchSpec MembershipClassifier(int classes) {
  ArchSpec s;
  s.kind = ArchSpec::Kind::kMlp;
  s.inputs = classes;
  s.classes = 1;
  s.hidden = {64, 64};
  s.log_input = true;
  s.sigmoid_output = true;
  return s;
}

NetImpl::NetImpl(const ArchSpec& spec) : spec_(spec) {
  std::vector<int> widths;
  if (spec.kind == ArchSpec::Kind::kCnn) {
    conv1_ = register_module("conv1",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(1, spec.conv1, kKernel)));
    conv2_ = register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.conv1, spec.conv2, kKernel)));
    widths.push_back(spec.conv2 * kCnnFlatSide * kCnnFlatSide);
  } else {
    widths.push_back(spec.inputs);
  }
  for (int h : spec.hidden) widths.push_back(h);
  widths.push_back(spec.classes);
  for (size_t i = 0; i + 1 < widths.size(); ++i)
    fc_.push_back(
        register_module(fmt::format("fc{}", i + 1), torch::nn::Linear(widths[i], widths[i + 1])));
}

torch::Tensor NetImpl::features(torch::Tensor x) {
  if (spec_.kind == ArchSpec::Kind::kCnn) {
    if (x.dim() == 2) x = x.view({-1, 1, kImageSide, kImageSide});
    x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
    x = x.flatten(1);
  } else {
    x = x.flatten(1);
    if (spec_.log_input) x = torch::log(torch::clamp_min(x, 1e-7));
  }
  for (size_t i = 0; i + 1 < fc_.size(); ++i) x = Activate(spec_, fc_[i]->forward(x));
  return x;
}

torch::Tensor NetImpl::head(torch::Tensor features) {
  torch::Tensor y = fc_.back()->forward(features);
  return spec_.sigmoid_output ? torch::sigmoid(y) : y;
}

torch::Tensor NetImpl::forward(torch::Tensor x) { return head(features(std::move(x))); }

std::vector<torch::Tensor> NetImpl::body_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& p : named_parameters()) {
    if (p.key().rfind(fmt::format("fc{}.", fc_.size()), 0) != 0) out.push_back(p.value());
  }
  return out;
}

std::vector<torch::Tensor> NetImpl::head_parameters() { return fc_.back()->parameters(); }

void NetImpl::ResetHead(int classes) {
  const int64_t in = fc_.back()->options.in_features();
  spec_.classes = classes;
  fc_.back() = replace_module(fmt::format("fc{}", fc_.size()), torch::nn::Linear(in, classes));
}

Net MakeNet(const ArchSpec& spec, uint64_t seed) {
  std::lock_guard<std::mutex> lock(ConstructionMutex());
  torch::manual_seed(seed);
  return Net(spec);
}

Net CloneWithNewHead(Net& backbone, int classes, uint64_t seed) {
  std::lock_guard<std::mutex> lock(ConstructionMutex());
  torch::manual_seed(seed);
  Net net(backbone->spec());
  {
    torch::NoGradGuard no_grad;
    auto source = backbone->named_parameters();
    for (auto& p : net->named_parameters()) p.value().copy_(source[p.key()]);
  }
  net->ResetHead(classes);
  return net;
}

Status Train(Net& net, const torch::Tensor& x, const torch::Tensor& targets,
             const TrainOptions& options, const std::string& label) {
  try {
    const int64_t n = x.size(0);
    if (n == 0 || targets.size(0) != n)
      return InvalidArgument("{}: {} inputs but {} targets", label, n, targets.size(0));
    net->train();
    std::vector<torch::optim::OptimizerParamGroup> groups;
    auto add_group = [&](std::vector<torch::Tensor> params, double lr) {
      if (options.sgd) {
        groups.emplace_back(std::move(params),
                            std::make_unique<torch::optim::SGDOptions>(
                                torch::optim::SGDOptions(lr).momentum(options.momentum)));
      } else {
        groups.emplace_back(std::move(params), std::make_unique<torch::optim::AdamOptions>(lr));
      }
    };
    for (auto& p : net->parameters()) p.set_requires_grad(true);
    if (options.body_lr >= 0) {
      if (options.body_lr > 0) {
        add_group(net->body_parameters(), options.body_lr);
      } else {
        for (auto& p : net->body_parameters()) p.set_requires_grad(false);
      }
      add_group(net->head_parameters(), options.lr);
    } else {
      add_group(net->parameters(), options.lr);
    }
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    if (options.sgd) {
      optimizer = std::make_unique<torch::optim::SGD>(std::move(groups),
                                                      torch::optim::SGDOptions(options.lr));
    } else {
      optimizer = std::make_unique<torch::optim::Adam>(std::move(groups),
                                                       torch::optim::AdamOptions(options.lr));
    }
    const bool hard = targets.scalar_type() == torch::kLong;
    const bool binary = !hard && net->spec().sigmoid_output;
    double positive_weight = 1, negative_weight = 1;
    if (binary) {
      const double positives = targets.sum().item<double>();
      positive_weight = positives > 0 ? n / (2 * positives) : 1;
      negative_weight = positives < n ? n / (2 * (n - positives)) : 1;
    }
    Rng rng(options.seed);
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
    const auto start = std::chrono::steady_clock::now();
    for (int epoch = 0; epoch < options.epochs; ++epoch) {
      rng.Shuffle(order);
      torch::Tensor index = torch::from_blob(order.data(), {n}, torch::kLong);
      double loss_sum = 0;
      int64_t steps = 0;
      for (int64_t b = 0; b < n; b += options.batch) {
        torch::Tensor idx = index.slice(0, b, std::min<int64_t>(n, b + options.batch));
        torch::Tensor xb = x.index_select(0, idx);
        torch::Tensor tb = targets.index_select(0, idx);
        torch::Tensor out = net->forward(xb);
        torch::Tensor loss;
        if (hard) {
          loss = torch::nn::functional::cross_entropy(out, tb);
        } else if (binary) {
          torch::Tensor t = tb.view_as(out);
          torch::Tensor w = t * positive_weight + (1 - t) * negative_weight;
          loss = torch::nn::functional::binary_cross_entropy(
              out.clamp(1e-7, 1 - 1e-7), t,
              torch::nn::functional::BinaryCrossEntropyFuncOptions().weight(w));
        } else {
          loss = -(tb * torch::log_softmax(out, 1)).sum(1).mean();
        }
        optimizer->zero_grad();
        loss.backward();
        optimizer->step();
        loss_sum += loss.item<double>();
        ++steps;
      }
      if (options.progress) {
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(stderr, "  %s: epoch %d/%d loss %.4f (%.0f s)\n", label.c_str(), epoch + 1,
                     options.epochs, loss_sum / static_cast<double>(std::max<int64_t>(1, steps)),
                     seconds);
      }
      if (options.on_epoch) options.on_epoch(epoch + 1, options.epochs);
    }
    for (auto& p : net->parameters()) p.set_requires_grad(true);
    net->eval();
    return Status::Ok();
  } catch (const std::exception& e) {
    return InternalError("{}: training failed in libtorch: {}", label, e.what());
  }
}

torch::Tensor Predict(Net& net, const torch::Tensor& x, int64_t batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += batch)
    parts.push_back(net->forward(x.slice(0, b, std::min<int64_t>(x.size(0), b + batch))));
  if (parts.empty()) return torch::empty({0, net->spec().classes});
  return torch::cat(parts, 0);
}

double Accuracy(Net& net, const torch::Tensor& x, const torch::Tensor& labels) {
  if (x.size(0) == 0) return 0;
  torch::Tensor predicted = Predict(net, x).argmax(1);
  return predicted.eq(labels).to(torch::kDouble).mean().item<double>();
}

double Agreement(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.size(0) == 0) return 0;
  return a.argmax(1).eq(b.argmax(1)).to(torch::kDouble).mean().item<double>();
}

torch::Tensor ImagesTensor(const ImageSet& set) {
  return torch::from_blob(const_cast<float*>(set.pixels.data()),
                          {set.count, 1, kImageSide, kImageSide}, torch::kFloat)
      .clone();
}

torch::Tensor LabelsTensor(const ImageSet& set) {
  std::vector<int64_t> labels(set.labels.begin(), set.labels.end());
  return torch::from_blob(labels.data(), {set.count}, torch::kLong).clone();
}

ImageSet ToImageSet(const torch::Tensor& images) {
  torch::Tensor flat =
      images.detach().to(torch::kFloat).reshape({-1, kImagePixels}).clamp(0, 1).contiguous();
  ImageSet set;
  set.count = flat.size(0);
  set.pixels.assign(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
  set.labels.assign(static_cast<size_t>(set.count), -1);
  return set;
}

Result<std::string> ExportOnnx(Net& net) {
  using compiler::OnnxAttribute;
  const ArchSpec& spec = net->spec();
  compiler::OnnxGraphSpec g;
  g.graph_name = spec.Name();
  const bool image = spec.kind == ArchSpec::Kind::kCnn || spec.inputs == kImagePixels;
  if (image) {
    g.inputs.push_back({"input", {-1, 1, kImageSide, kImageSide}});
  } else {
    g.inputs.push_back({"input", {-1, spec.inputs}});
  }
  const std::string output = spec.sigmoid_output ? "member" : "logits";
  g.outputs.push_back({output, {-1, spec.classes}});
  torch::NoGradGuard no_grad;
  for (const auto& p : net->named_parameters()) {
    torch::Tensor t = p.value().detach().to(torch::kFloat).contiguous();
    compiler::OnnxInitializer init;
    init.name = p.key();
    for (int64_t d : t.sizes()) init.dims.push_back(d);
    init.values.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    g.initializers.push_back(std::move(init));
  }
  std::string x = "input";
  int counter = 0;
  auto next = [&](const std::string& stem) { return fmt::format("{}_{}", stem, ++counter); };
  auto add = [&](std::string op, std::vector<std::string> inputs,
                 std::vector<OnnxAttribute> attributes, std::string out = "") {
    if (out.empty()) out = next(op);
    g.nodes.push_back({op, out, std::move(inputs), {out}, std::move(attributes)});
    return out;
  };
  if (spec.kind == ArchSpec::Kind::kCnn) {
    const std::vector<OnnxAttribute> conv = {
        OnnxAttribute::Ints("dilations", {1, 1}), OnnxAttribute::Int("group", 1),
        OnnxAttribute::Ints("kernel_shape", {kKernel, kKernel}),
        OnnxAttribute::Ints("pads", {0, 0, 0, 0}), OnnxAttribute::Ints("strides", {1, 1})};
    const std::vector<OnnxAttribute> pool = {
        OnnxAttribute::Int("ceil_mode", 0), OnnxAttribute::Ints("kernel_shape", {2, 2}),
        OnnxAttribute::Ints("pads", {0, 0, 0, 0}), OnnxAttribute::Ints("strides", {2, 2})};
    for (const char* c : {"conv1", "conv2"}) {
      x = add("Conv", {x, fmt::format("{}.weight", c), fmt::format("{}.bias", c)}, conv);
      x = add("Relu", {x}, {});
      x = add("MaxPool", {x}, pool);
    }
    x = add("Flatten", {x}, {OnnxAttribute::Int("axis", 1)});
  } else {
    if (image) x = add("Flatten", {x}, {OnnxAttribute::Int("axis", 1)});
    if (spec.log_input) {
      g.initializers.push_back({"clip_min", {}, {1e-7f}});
      x = add("Clip", {x, "clip_min"}, {});
      x = add("Log", {x}, {});
    }
  }
  const std::vector<OnnxAttribute> gemm = {OnnxAttribute::Float("alpha", 1.0f),
                                           OnnxAttribute::Float("beta", 1.0f),
                                           OnnxAttribute::Int("transB", 1)};
  const size_t layers = spec.hidden.size() + 1;
  for (size_t i = 1; i <= layers; ++i) {
    const bool last = i == layers;
    x = add("Gemm", {x, fmt::format("fc{}.weight", i), fmt::format("fc{}.bias", i)}, gemm,
            last && !spec.sigmoid_output ? output : "");
    if (!last) x = add(spec.tanh ? "Tanh" : "Relu", {x}, {});
  }
  if (spec.sigmoid_output) add("Sigmoid", {x}, {}, output);
  return compiler::WriteOnnxModel(g);
}

Status SaveNet(Net& net, const std::string& path) {
  try {
    torch::save(net, path);
    return Status::Ok();
  } catch (const std::exception& e) {
    return IoError("{}: cannot save the model: {}", path, e.what());
  }
}

Status LoadNet(Net& net, const std::string& path) {
  try {
    torch::load(net, path);
    net->eval();
    return Status::Ok();
  } catch (const std::exception& e) {
    return DataLoss("{}: cannot load the model: {}", path, e.what());
  }
}

void InitTorchForLab() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::set_num_threads(1);
    try {
      at::set_num_interop_threads(1);
    } catch (const std::exception&) {
      // Already started: inter-op work ran before us; one more pool thread is harmless.
    }
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/true);
  });
}

}  // namespace mlcapsule::lab
