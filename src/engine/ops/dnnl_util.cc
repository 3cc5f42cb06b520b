// oneDNN glue (see dnnl_util.h).
#include "engine/ops/dnnl_util.h"

#include <algorithm>
#include <cstring>

namespace mlcapsule::engine {

dnnl::engine& DnnlEngine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

dnnl::stream& DnnlStream() {
  thread_local dnnl::stream stream(DnnlEngine());
  return stream;
}

DnnlWeightedLayer::DnnlWeightedLayer(const float* weights, const float* bias, int64_t outputs)
    : weights_(weights), outputs_(outputs), bias_(static_cast<size_t>(outputs) * sizeof(float)) {
  if (bias != nullptr) std::memcpy(bias_.data(), bias, bias_.size());
}

void DnnlWeightedLayer::Bind(const dnnl::primitive& primitive,
                             const dnnl::memory::desc& wanted_weights,
                             const dnnl::memory::desc& user_weights, const dnnl::memory::desc& src,
                             void* src_data, const dnnl::memory::desc& dst, void* dst_data) {
  if (!packed_ || wanted_weights != packed_->get_desc()) {
    dnnl::memory user(user_weights, DnnlEngine(), const_cast<float*>(weights_));
    packed_.reset();
    packed_bytes_ = AlignedBuffer(wanted_weights.get_size());
    packed_ = std::make_unique<dnnl::memory>(wanted_weights, DnnlEngine(), packed_bytes_.data());
    dnnl::reorder(user, *packed_).execute(DnnlStream(), user, *packed_);
    DnnlStream().wait();
  }
  if (!bias_mem_) {
    dnnl::memory::desc bias_md({outputs_}, dnnl::memory::data_type::f32,
                               dnnl::memory::format_tag::a);
    bias_mem_ = std::make_unique<dnnl::memory>(bias_md, DnnlEngine(), bias_.data());
  }
  primitive_ = std::make_unique<dnnl::primitive>(primitive);
  src_ = std::make_unique<dnnl::memory>(src, DnnlEngine(), src_data);
  dst_ = std::make_unique<dnnl::memory>(dst, DnnlEngine(), dst_data);
}

void DnnlWeightedLayer::Execute() {
  primitive_->execute(DnnlStream(), {{DNNL_ARG_SRC, *src_},
                                     {DNNL_ARG_WEIGHTS, *packed_},
                                     {DNNL_ARG_BIAS, *bias_mem_},
                                     {DNNL_ARG_DST, *dst_}});
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
