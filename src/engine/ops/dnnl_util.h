// oneDNN glue for the fast convolution and matrix kernels: the CPU engine and stream, and memory
// descriptors. oneDNN generates its kernels at run time for the CPU it finds (SSE4.1 up to
// AVX-512), which is how the baseline x86-64 binary uses wider SIMD where the CPU has it.
#pragma once

#include <dnnl.hpp>

#include <memory>
#include <vector>

#include "base/status.h"
#include "engine/ops/clamp.h"
#include "engine/plan.h"

namespace mlcapsule::engine {

dnnl::engine& DnnlEngine();
dnnl::stream& DnnlStream();
// Runs `fn`, turning a dnnl::error into a Status naming `what`.
template <typename Fn>
Status DnnlTry(const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const dnnl::error& e) {
    return InternalError("oneDNN {} failed: {} (status {})", what, e.what(),
                         static_cast<int>(e.status));
  }
  return Status::Ok();
}

// What a oneDNN layer with constant weights and a bias keeps across batch sizes: the weights
// reordered once into the layout the primitive wants (again only when a new batch size's
// primitive wants another), the bias, and the primitive bound to its activations. The packed
// weights and the bias are weights too, so they live in sensitive memory (AlignedBuffer).
class DnnlWeightedLayer {
 public:
  // `weights` and `bias` (nullptr: zeros) stay owned by the plan; `outputs` is the bias length.
  DnnlWeightedLayer(const float* weights, const float* bias, int64_t outputs);
  // Binds the primitive built for the current batch size. `user_weights` describes the plan's
  // weight bytes; `wanted_weights` is the primitive's weights descriptor. May throw dnnl::error
  // (call inside DnnlTry).
  void Bind(const dnnl::primitive& primitive, const dnnl::memory::desc& wanted_weights,
            const dnnl::memory::desc& user_weights, const dnnl::memory::desc& src, void* src_data,
            const dnnl::memory::desc& dst, void* dst_data);
  void Execute();

 private:
  const float* weights_;
  int64_t outputs_;
  AlignedBuffer bias_, packed_bytes_;
  std::unique_ptr<dnnl::memory> packed_, bias_mem_, src_, dst_;
  std::unique_ptr<dnnl::primitive> primitive_;
};

// Post-ops for a fused clamp (relu, or clip to [min, max]).
dnnl::primitive_attr ClampAttr(const Clamp& clamp);

}  // namespace mlcapsule::engine
