// The lab's models (libtorch): the victims (CNN-A, MLP), the substitutes the attacks train (CNN-B,
// MLP), shadow models, the defender's membership classifier for MemGuard and the small MLP zoo of
// the KENNEN probe. One module type covers them all (ArchSpec), so saving, loading and ONNX export
// are written once. No dropout and no batch norm: train() and eval() give the same function, and
// per-sample input gradients are independent within a batch.
//
//   lab::Net net(lab::CnnA());
//   lab::TrainOptions t{.epochs = 30, .seed = 1};
//   MLC_RETURN_IF_ERROR(lab::Train(net, images, labels, t, "victim cnn-a"));
//   torch::Tensor logits = lab::Predict(net, test_images);
//   MLC_ASSIGN_OR_RETURN(std::string onnx, lab::ExportOnnx(net));
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "lab/data.h"

namespace mlcapsule::lab {

struct ArchSpec {
  enum class Kind { kCnn, kMlp };
  Kind kind = Kind::kCnn;
  // kCnn: conv(1 -> conv1, 5x5) relu maxpool2, conv(conv1 -> conv2, 5x5) relu maxpool2, flatten,
  // fc(conv2*16 -> hidden) relu, fc(hidden -> classes). Input [N,1,28,28].
  int conv1 = 32, conv2 = 64;
  // kCnn: the one hidden fc width; kMlp: the hidden widths in order (may be empty: linear model).
  std::vector<int> hidden = {128};
  bool tanh = false;  // kMlp: tanh instead of relu
  int inputs = kImagePixels;
  int classes = kFashionClasses;
  // kMlp only: the membership classifier sees log(clamp(x, 1e-7)) and ends in a sigmoid.
  bool log_input = false;
  bool sigmoid_output = false;

  std::string Name() const;  // "cnn-32-64-128", "mlp-256-128", ...
};
ArchSpec CnnA();  // the small CNN victim (32, 64, 128)
ArchSpec CnnB();  // the substitutes' CNN (16, 32, 64): another architecture than the victim's
ArchSpec Mlp();   // 784 -> 256 -> 128 -> 10
// The MemGuard defender's classifier: C confidences -> member probability [N,1].
ArchSpec MembershipClassifier(int classes);

class NetImpl : public torch::nn::Module {
 public:
  explicit NetImpl(const ArchSpec& spec);
  // Logits [N, classes] (or the sigmoid output [N,1] of a membership classifier). x is
  // [N,1,28,28] or [N,784] for image models, [N, inputs] otherwise.
  torch::Tensor forward(torch::Tensor x);
  // The penultimate activation (after the last hidden ReLU/tanh), L2-normalisable features.
  torch::Tensor features(torch::Tensor x);
  // The last layer on features().
  torch::Tensor head(torch::Tensor features);
  const ArchSpec& spec() const { return spec_; }
  // Parameters of everything but the last layer / of the last layer (fine-tuning).
  std::vector<torch::Tensor> body_parameters();
  std::vector<torch::Tensor> head_parameters();
  // A fresh last layer (transfer from a pretrained backbone), `classes` outputs.
  void ResetHead(int classes);

 private:
  ArchSpec spec_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  std::vector<torch::nn::Linear> fc_;
};
TORCH_MODULE(Net);

// Creates a model with weights drawn from torch's generator seeded with `seed`.
Net MakeNet(const ArchSpec& spec, uint64_t seed);
// A copy of `backbone` whose last layer is replaced by a fresh `classes`-way layer (transfer).
Net CloneWithNewHead(Net& backbone, int classes, uint64_t seed);

struct TrainOptions {
  int epochs = 10;
  int batch = 128;
  double lr = 1e-3;
  bool sgd = false;  // SGD with momentum instead of Adam (Papernot et al.'s recipe)
  double momentum = 0.9;
  double body_lr = -1;    // >= 0: the body trains at this rate (0: frozen), the head at lr
  uint64_t seed = 1;      // shuffling order (our own mt19937_64, independent of torch's version)
  bool progress = false;  // one stderr line per epoch
  std::function<void(int epoch, int epochs)> on_epoch;  // when set: after each epoch (1-based)
};
// Trains on x with either int64 class labels [N] (cross-entropy), float soft targets [N,C]
// (soft cross-entropy, i.e. distillation without temperature) or, for a sigmoid model, float
// targets [N,1] (class-balanced binary cross-entropy). Catches libtorch's exceptions.
Status Train(Net& net, const torch::Tensor& x, const torch::Tensor& targets,
             const TrainOptions& options, const std::string& label);

// Forward pass without autograd, in batches; returns logits (or sigmoid outputs).
torch::Tensor Predict(Net& net, const torch::Tensor& x, int64_t batch = 1000);
// Fraction of argmax(Predict) equal to labels.
double Accuracy(Net& net, const torch::Tensor& x, const torch::Tensor& labels);
// Fraction of rows whose argmax agrees.
double Agreement(const torch::Tensor& a, const torch::Tensor& b);

// Images as a [N,1,28,28] float tensor (a copy) and labels as int64 [N].
torch::Tensor ImagesTensor(const ImageSet& set);
torch::Tensor LabelsTensor(const ImageSet& set);
// Rows of a float tensor as an ImageSet (pixels clamped to [0,1], labels -1).
ImageSet ToImageSet(const torch::Tensor& images);

// ONNX (opset 13) through compiler::WriteOnnxModel: input "input" [batch,1,28,28] (image models)
// or [batch, inputs], output "logits" [batch, classes] (or "member" [batch,1]).
Result<std::string> ExportOnnx(Net& net);

// torch::save / torch::load of the parameters; Load fails (not throws) on a missing or corrupt
// file.
Status SaveNet(Net& net, const std::string& path);
Status LoadNet(Net& net, const std::string& path);

// Must run before any libtorch work in a process: one intra-op and one inter-op thread (the lab
// gets parallelism from concurrent jobs, which is 1.6x faster on two cores than torch's threads),
// deterministic algorithms.
void InitTorchForLab();

}  // namespace mlcapsule::lab
