// oneDNN glue for the fast convolution and matrix kernels: the CPU engine and stream, and memory
// descriptors. oneDNN generates its kernels at run time for the CPU it finds (SSE4.1 up to
// AVX-512), which is how the baseline x86-64 binary uses wider SIMD where the CPU has it.
#pragma once

#include <dnnl.hpp>

#include "base/status.h"
#include "engine/ops/clamp.h"

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

// Post-ops for a fused clamp (relu, or clip to [min, max]).
dnnl::primitive_attr ClampAttr(const Clamp& clamp);

}  // namespace mlcapsule::engine
