// Session: validated plan + kernels + arena (see session.h).
#include "engine/session.h"

#include <omp.h>

#include <chrono>
#include <cstring>

#include "engine/arena.h"
#include "engine/op.h"

namespace mlcapsule::engine {

struct Session::Impl {
  Plan plan;
  SessionOptions options;
  RunContext run_ctx;
  std::vector<std::unique_ptr<Kernel>> kernels;  // per node; nullptr when its output is an alias
  std::vector<int32_t> root;                     // per tensor: the tensor whose bytes it uses
  int64_t batch = 0;
  AlignedBuffer arena;
  std::vector<TensorView> views;  // per tensor
  std::vector<std::vector<TensorView>> node_inputs, node_outputs;
  std::vector<NodeProfile> profile;

  Status Prepare(int64_t batch_size);
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;
const Plan& Session::plan() const { return impl_->plan; }
SessionStats Session::stats() const { return {impl_->arena.size(), impl_->batch}; }
std::vector<NodeProfile> Session::Profile() const { return impl_->profile; }

Result<std::unique_ptr<Session>> Session::Create(Plan plan, const SessionOptions& options) {
  MLC_RETURN_IF_ERROR(ValidatePlan(plan));
  if (options.threads < 1 || options.threads > 256)
    return InvalidArgument("thread count {} is outside [1, 256]", options.threads);
  auto impl = std::make_unique<Impl>();
  impl->plan = std::move(plan);
  impl->options = options;
  impl->run_ctx = RunContext{options.threads};
  const Plan& p = impl->plan;
  impl->root.resize(p.tensors.size());
  for (size_t i = 0; i < p.tensors.size(); ++i) impl->root[i] = static_cast<int32_t>(i);
  KernelOptions kernel_options{options.fast_kernels};
  for (const PlanNode& node : p.nodes) {
    const OpSchema* schema = FindSchema(node.op);
    std::vector<const TensorType*> types(node.inputs.size(), nullptr);
    std::vector<const void*> constants(node.inputs.size(), nullptr);
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      int32_t index = node.inputs[k];
      if (index == kNoTensor) continue;
      types[k] = &p.tensors[static_cast<size_t>(index)].type;
      if (p.tensors[static_cast<size_t>(index)].kind == TensorKind::kConstant)
        constants[k] = p.ConstantData(index);
    }
    std::vector<TensorType> out_types;
    for (int32_t index : node.outputs)
      out_types.push_back(p.tensors[static_cast<size_t>(index)].type);
    NodeContext ctx(p, node, types, constants, kernel_options);
    ctx.set_output_types(&out_types);
    if (schema->output_aliases_input && node.inputs[0] != kNoTensor) {
      impl->root[static_cast<size_t>(node.outputs[0])] =
          impl->root[static_cast<size_t>(node.inputs[0])];
      impl->kernels.push_back(nullptr);
      continue;
    }
    Result<std::unique_ptr<Kernel>> kernel = schema->create(ctx);
    if (!kernel.ok()) return kernel.status();
    impl->kernels.push_back(std::move(kernel).value());
  }
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

Status Session::Impl::Prepare(int64_t batch_size) {
  const size_t tensor_count = plan.tensors.size();
  const int32_t end_step = static_cast<int32_t>(plan.nodes.size());
  views.assign(tensor_count, TensorView{});
  std::vector<int64_t> bytes(tensor_count, 0);
  for (size_t i = 0; i < tensor_count; ++i) {
    const PlanTensor& t = plan.tensors[i];
    views[i].dtype = t.type.dtype;
    views[i].dims = ResolveShape(t.type.shape, batch_size);
    MLC_ASSIGN_OR_RETURN(int64_t n, CheckedNumElements(views[i].dims, "tensor '" + t.name + "'"));
    bytes[i] = n * static_cast<int64_t>(DTypeSize(t.type.dtype));
  }
  // Lifetime of each buffer (alias roots): from its producer to its last reader.
  std::vector<int32_t> first(tensor_count, -1), last(tensor_count, -1);
  for (int32_t index : plan.inputs)
    first[static_cast<size_t>(root[static_cast<size_t>(index)])] = 0;
  for (int32_t step = 0; step < end_step; ++step) {
    const PlanNode& node = plan.nodes[static_cast<size_t>(step)];
    for (int32_t index : node.outputs) {
      size_t r = static_cast<size_t>(root[static_cast<size_t>(index)]);
      if (first[r] < 0) first[r] = step;
      last[r] = std::max(last[r], step);
    }
    for (int32_t index : node.inputs) {
      if (index == kNoTensor) continue;
      size_t r = static_cast<size_t>(root[static_cast<size_t>(index)]);
      last[r] = std::max(last[r], step);
    }
  }
  for (int32_t index : plan.outputs)
    last[static_cast<size_t>(root[static_cast<size_t>(index)])] = end_step;
  std::vector<ArenaRequest> requests;
  std::vector<size_t> request_tensor;
  std::vector<int64_t> root_bytes(tensor_count, 0);
  for (size_t i = 0; i < tensor_count; ++i) {
    size_t r = static_cast<size_t>(root[i]);
    root_bytes[r] = std::max(root_bytes[r], bytes[i]);
  }
  for (size_t i = 0; i < tensor_count; ++i) {
    if (root[i] != static_cast<int32_t>(i) || plan.tensors[i].kind == TensorKind::kConstant)
      continue;
    if (first[i] < 0) continue;  // never computed nor read
    requests.push_back(
        {static_cast<uint64_t>(root_bytes[i]), first[i], std::max(first[i], last[i])});
    request_tensor.push_back(i);
  }
  ArenaLayout layout = PlanArena(requests);
  if (layout.total_bytes > options.max_arena_bytes)
    return ResourceExhausted("batch size {} needs {} bytes of activations, over the limit {}",
                             batch_size, layout.total_bytes, options.max_arena_bytes);
  if (arena.size() < layout.total_bytes)
    arena = AlignedBuffer(static_cast<size_t>(layout.total_bytes));
  std::vector<uint8_t*> base(tensor_count, nullptr);
  for (size_t k = 0; k < requests.size(); ++k)
    base[request_tensor[k]] = arena.data() + layout.offsets[k];
  for (size_t i = 0; i < tensor_count; ++i) {
    size_t r = static_cast<size_t>(root[i]);
    if (plan.tensors[r].kind == TensorKind::kConstant) {
      views[i].data = const_cast<void*>(plan.ConstantData(static_cast<int32_t>(r)));
    } else {
      views[i].data = base[r];
    }
  }
  node_inputs.assign(plan.nodes.size(), {});
  node_outputs.assign(plan.nodes.size(), {});
  for (size_t step = 0; step < plan.nodes.size(); ++step) {
    const PlanNode& node = plan.nodes[step];
    for (int32_t index : node.inputs)
      node_inputs[step].push_back(index == kNoTensor ? TensorView{}
                                                     : views[static_cast<size_t>(index)]);
    for (int32_t index : node.outputs)
      node_outputs[step].push_back(views[static_cast<size_t>(index)]);
    if (kernels[step]) {
      Status s = kernels[step]->Setup(node_inputs[step], node_outputs[step], run_ctx);
      if (!s.ok()) {
        batch = 0;
        return s.WithContext(fmt::format("node '{}' ({})", node.name, OpTypeName(node.op)));
      }
    }
  }
  batch = batch_size;
  return Status::Ok();
}

Result<int64_t> InferBatchSize(const Plan& plan, std::span<const TensorView> inputs) {
  if (inputs.size() != plan.inputs.size())
    return InvalidArgument("the model takes {} inputs, {} given", plan.inputs.size(),
                           inputs.size());
  int64_t batch = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const PlanTensor& t = plan.tensors[static_cast<size_t>(plan.inputs[i])];
    const TensorView& v = inputs[i];
    if (v.dtype != t.type.dtype)
      return InvalidArgument("input '{}' must be {}, got {}", t.name, DTypeName(t.type.dtype),
                             DTypeName(v.dtype));
    bool fits = v.dims.size() == t.type.shape.size();
    for (size_t d = 0; fits && d < v.dims.size(); ++d) {
      const Dim& want = t.type.shape[d];
      int64_t got = v.dims[d];
      if (!want.batch) {
        fits = got == want.value;
      } else if (got <= 0 || got % want.value != 0) {
        fits = false;
      } else {
        int64_t b = got / want.value;
        if (batch != 0 && b != batch)
          return InvalidArgument(
              "input '{}' dimension {} implies batch size {}, another input implies {}", t.name, d,
              b, batch);
        batch = b;
      }
    }
    if (!fits)
      return InvalidArgument("input '{}' has shape {}, the model expects {} (N = batch size)",
                             t.name, DimsToString(v.dims), ShapeToString(t.type.shape));
    if (v.data == nullptr && v.NumElements() != 0)
      return InvalidArgument("input '{}' has no data", t.name);
  }
  if (batch == 0) batch = 1;
  if (batch > kMaxBatch)
    return InvalidArgument("batch size {} is over the limit {}", batch, kMaxBatch);
  return batch;
}

Status Session::Run(std::span<const TensorView> inputs, std::vector<Tensor>* outputs) {
  Impl& s = *impl_;
  MLC_ASSIGN_OR_RETURN(int64_t batch, InferBatchSize(s.plan, inputs));
  // oneDNN's kernels use OpenMP: its team size is per calling thread, so set it on every run.
  omp_set_num_threads(s.options.threads);
  if (batch != s.batch) MLC_RETURN_IF_ERROR(s.Prepare(batch));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorView& dst = s.views[static_cast<size_t>(s.plan.inputs[i])];
    size_t bytes = static_cast<size_t>(dst.NumElements()) * DTypeSize(dst.dtype);
    if (bytes) std::memcpy(dst.data, inputs[i].data, bytes);
  }
  if (s.options.profile) {
    if (s.profile.empty()) {
      for (const PlanNode& node : s.plan.nodes)
        s.profile.push_back({node.name, OpTypeName(node.op), 0.0, 0});
    }
    for (size_t step = 0; step < s.kernels.size(); ++step) {
      if (!s.kernels[step]) continue;
      auto start = std::chrono::steady_clock::now();
      s.kernels[step]->Run(s.node_inputs[step], s.node_outputs[step], s.run_ctx);
      s.profile[step].total_ms +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      s.profile[step].runs++;
    }
  } else {
    for (size_t step = 0; step < s.kernels.size(); ++step) {
      if (s.kernels[step])
        s.kernels[step]->Run(s.node_inputs[step], s.node_outputs[step], s.run_ctx);
    }
  }
  outputs->resize(s.plan.outputs.size());
  for (size_t i = 0; i < s.plan.outputs.size(); ++i) {
    const TensorView& src = s.views[static_cast<size_t>(s.plan.outputs[i])];
    Tensor& out = (*outputs)[i];
    if (out.dtype != src.dtype || out.dims != src.dims) out = Tensor::Make(src.dtype, src.dims);
    if (!out.bytes.empty()) std::memcpy(out.bytes.data(), src.data, out.bytes.size());
  }
  return Status::Ok();
}

}  // namespace mlcapsule::engine
