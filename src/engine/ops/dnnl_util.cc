// oneDNN glue (see dnnl_util.h).
#include "engine/ops/dnnl_util.h"

namespace mlcapsule::engine {

dnnl::engine& DnnlEngine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

dnnl::stream& DnnlStream() {
  thread_local dnnl::stream stream(DnnlEngine());
  return stream;
}

dnnl::primitive_attr ClampAttr(const Clamp& clamp) {
  dnnl::primitive_attr attr;
  if (clamp.active()) {
    dnnl::post_ops ops;
    if (clamp.is_relu()) {
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    } else {
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip_v2, clamp.min, clamp.max);
    }
    attr.set_post_ops(ops);
  }
  return attr;
}

}  // namespace mlcapsule::engine
