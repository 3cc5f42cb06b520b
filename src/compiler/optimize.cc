// Graph optimisations: dead-code elimination, fusion (Conv+BatchNormalization folded into the
// convolution's weights; Gemm/MatMul with constant weights turned into FullyConnected with the
// bias folded in; Relu/Clip folded into the producer's output clamp) and the channels-last
// rewrite that lets 2-D convolutions and pools run on oneDNN's NHWC kernels. Each pass keeps the
// graph's meaning exactly (up to float rounding in BN folding), checked by the zoo tests.
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "compiler/graph.h"

namespace mlcapsule::compiler {
namespace {

using engine::Dim;
using engine::DType;
using engine::OpType;
using engine::Shape;
using engine::Tensor;
using engine::TensorType;

Value& V(Graph& g, int id) { return g.values[static_cast<size_t>(id)]; }

bool IsConst(Graph& g, int id) { return id >= 0 && V(g, id).constant.has_value(); }

// Map from value to its producing node index.
std::vector<int> Producers(const Graph& g) {
  std::vector<int> producer(g.values.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (g.nodes[i].dead) continue;
    for (int v : g.nodes[i].outputs) producer[static_cast<size_t>(v)] = static_cast<int>(i);
  }
  return producer;
}

// The single non-dead consumer of value `v` that is not a graph output, or -1.
int SoleConsumer(Graph& g, const std::vector<std::vector<int>>& consumers, int v) {
  if (V(g, v).graph_output) return -1;
  const auto& c = consumers[static_cast<size_t>(v)];
  return c.size() == 1 ? c[0] : -1;
}

// Frees a constant's bytes once no live node but `except` reads it (keeps peak memory near one
// copy of the weights while passes replace them).
void ReleaseIfUnused(Graph& g, int value, const Node* except) {
  if (value < 0 || !V(g, value).constant || V(g, value).graph_output) return;
  for (const Node& n : g.nodes) {
    if (n.dead || &n == except) continue;
    for (int v : n.inputs)
      if (v == value) return;
  }
  V(g, value).constant.reset();
}

// Folds BatchNormalization into the Conv before it.
bool FuseConvBatchNorm(Graph& g) {
  bool changed = false;
  auto producer = Producers(g);
  auto consumers = g.Consumers();
  for (Node& bn : g.nodes) {
    if (bn.dead || bn.op != OpType::kBatchNormalization) continue;
    if (bn.Int("training_mode", 0) != 0 || bn.outputs.size() > 1) continue;
    int x = bn.inputs[0];
    int p = producer[static_cast<size_t>(x)];
    if (p < 0) continue;
    Node& conv = g.nodes[static_cast<size_t>(p)];
    if (conv.op != OpType::kConv || SoleConsumer(g, consumers, x) < 0) continue;
    if (!IsConst(g, conv.inputs[1]) ||
        (conv.inputs.size() > 2 && conv.inputs[2] >= 0 && !IsConst(g, conv.inputs[2])))
      continue;
    if (conv.Find("output_min") || conv.Find("output_max")) continue;
    bool params_const = true;
    for (int i = 1; i <= 4; ++i) params_const &= IsConst(g, bn.inputs[static_cast<size_t>(i)]);
    if (!params_const) continue;
    const Tensor& w = *V(g, conv.inputs[1]).constant;
    const int64_t m = w.dims[0];
    const int64_t per = w.NumElements() / m;
    const float eps = bn.Float("epsilon", 1e-5f);
    const float* scale = V(g, bn.inputs[1]).constant->Data<float>();
    const float* shift = V(g, bn.inputs[2]).constant->Data<float>();
    const float* mean = V(g, bn.inputs[3]).constant->Data<float>();
    const float* var = V(g, bn.inputs[4]).constant->Data<float>();
    Tensor new_w = w;
    Tensor new_b = Tensor::Make(DType::kFloat32, {m});
    const float* old_b = conv.inputs.size() > 2 && conv.inputs[2] >= 0
                             ? V(g, conv.inputs[2]).constant->Data<float>()
                             : nullptr;
    for (int64_t o = 0; o < m; ++o) {
      const double s = static_cast<double>(scale[o]) / std::sqrt(static_cast<double>(var[o]) + eps);
      for (int64_t k = 0; k < per; ++k)
        new_w.Data<float>()[o * per + k] = static_cast<float>(w.Data<float>()[o * per + k] * s);
      new_b.Data<float>()[o] =
          static_cast<float>(((old_b ? old_b[o] : 0.0) - mean[o]) * s + shift[o]);
    }
    const int old_w = conv.inputs[1];
    const int old_bias = conv.inputs.size() > 2 ? conv.inputs[2] : -1;
    int w_id = g.AddConstant(g.UniqueName(conv.name + "_w"), std::move(new_w));
    int b_id = g.AddConstant(g.UniqueName(conv.name + "_b"), std::move(new_b));
    Node& conv_ref = g.nodes[static_cast<size_t>(p)];  // AddConstant does not move nodes
    ReleaseIfUnused(g, old_w, &conv_ref);
    ReleaseIfUnused(g, old_bias, &conv_ref);
    conv_ref.inputs.resize(3);
    conv_ref.inputs[1] = w_id;
    conv_ref.inputs[2] = b_id;
    conv_ref.outputs[0] = bn.outputs[0];
    bn.dead = true;
    changed = true;
  }
  return changed;
}

// Gemm / MatMul with constant weights -> FullyConnected (weights stored [out, in]).
bool MakeFullyConnected(Graph& g) {
  bool changed = false;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    if (n.dead) continue;
    if (n.op == OpType::kGemm) {
      if (n.Int("transA", 0) != 0 || !IsConst(g, n.inputs[1])) continue;
      if (n.Find("output_min") || n.Find("output_max")) continue;
      const Tensor& b = *V(g, n.inputs[1]).constant;
      const bool tb = n.Int("transB", 0) != 0;
      const int64_t k = tb ? b.dims[1] : b.dims[0], out = tb ? b.dims[0] : b.dims[1];
      const float alpha = n.Float("alpha", 1.0f), beta = n.Float("beta", 1.0f);
      std::optional<Tensor> bias;
      if (n.inputs.size() > 2 && n.inputs[2] >= 0) {
        if (!IsConst(g, n.inputs[2])) continue;
        const Tensor& c = *V(g, n.inputs[2]).constant;
        const int64_t cn = c.NumElements();
        const bool row =
            c.dims.empty() || (c.dims.size() == 1) || (c.dims.size() == 2 && c.dims[0] == 1);
        if (!row || (cn != out && cn != 1)) continue;
        bias = Tensor::Make(DType::kFloat32, {out});
        for (int64_t o = 0; o < out; ++o)
          bias->Data<float>()[o] = beta * c.Data<float>()[cn == 1 ? 0 : o];
      }
      Tensor w = Tensor::Make(DType::kFloat32, {out, k});
      for (int64_t o = 0; o < out; ++o)
        for (int64_t p = 0; p < k; ++p)
          w.Data<float>()[o * k + p] =
              alpha * (tb ? b.Data<float>()[o * k + p] : b.Data<float>()[p * out + o]);
      std::string name = n.name;
      int w_id = g.AddConstant(g.UniqueName(name + "_w"), std::move(w));
      int b_id = bias ? g.AddConstant(g.UniqueName(name + "_b"), std::move(*bias)) : -1;
      Node& node = g.nodes[i];
      node.op = OpType::kFullyConnected;
      node.attrs.clear();
      node.inputs = {node.inputs[0], w_id};
      if (b_id >= 0) node.inputs.push_back(b_id);
      changed = true;
    } else if (n.op == OpType::kMatMul) {
      if (!IsConst(g, n.inputs[1]) || V(g, n.inputs[1]).constant->dims.size() != 2) continue;
      if (V(g, n.inputs[0]).type.shape.size() < 2) continue;
      const Tensor& b = *V(g, n.inputs[1]).constant;
      const int64_t k = b.dims[0], out = b.dims[1];
      Tensor w = Tensor::Make(DType::kFloat32, {out, k});
      for (int64_t o = 0; o < out; ++o)
        for (int64_t p = 0; p < k; ++p) w.Data<float>()[o * k + p] = b.Data<float>()[p * out + o];
      int w_id = g.AddConstant(g.UniqueName(n.name + "_w"), std::move(w));
      Node& node = g.nodes[i];
      node.op = OpType::kFullyConnected;
      node.inputs[1] = w_id;
      changed = true;
    }
  }
  return changed;
}

// FullyConnected without bias followed by Add of a constant [out] vector -> bias.
bool FuseFullyConnectedBias(Graph& g) {
  bool changed = false;
  auto producer = Producers(g);
  auto consumers = g.Consumers();
  for (Node& add : g.nodes) {
    if (add.dead || add.op != OpType::kAdd) continue;
    for (int side = 0; side < 2; ++side) {
      int x = add.inputs[static_cast<size_t>(side)], c = add.inputs[static_cast<size_t>(1 - side)];
      int p = producer[static_cast<size_t>(x)];
      if (p < 0 || !IsConst(g, c)) continue;
      Node& fc = g.nodes[static_cast<size_t>(p)];
      if (fc.op != OpType::kFullyConnected || fc.inputs.size() > 2 ||
          SoleConsumer(g, consumers, x) < 0)
        continue;
      if (fc.Find("output_min") || fc.Find("output_max")) continue;
      const Tensor& bias = *V(g, c).constant;
      const int64_t out = V(g, fc.inputs[1]).constant->dims[0];
      bool leading_ones = true;
      for (size_t d = 0; d + 1 < bias.dims.size(); ++d) leading_ones &= bias.dims[d] == 1;
      if (!leading_ones || bias.dims.empty() || bias.dims.back() != out) continue;
      if (bias.dims.size() > V(g, x).type.shape.size()) continue;
      fc.inputs.push_back(g.AddConstant(
          g.UniqueName(fc.name + "_b"),
          Tensor::FromFloats({out},
                             std::vector<float>(bias.Data<float>(), bias.Data<float>() + out))));
      g.nodes[static_cast<size_t>(p)].outputs[0] = add.outputs[0];
      add.dead = true;
      changed = true;
      break;
    }
  }
  return changed;
}

// Relu / Clip after Conv, FullyConnected or Gemm -> the producer's output clamp.
bool FuseActivations(Graph& g) {
  bool changed = false;
  auto producer = Producers(g);
  auto consumers = g.Consumers();
  for (Node& act : g.nodes) {
    if (act.dead) continue;
    float lo, hi;
    if (act.op == OpType::kRelu) {
      lo = 0.0f;
      hi = std::numeric_limits<float>::infinity();
    } else if (act.op == OpType::kClip) {
      lo = -std::numeric_limits<float>::infinity();
      hi = std::numeric_limits<float>::infinity();
      bool ok = true;
      for (size_t i = 1; i < act.inputs.size(); ++i) {
        if (act.inputs[i] < 0) continue;
        if (!IsConst(g, act.inputs[i]) || V(g, act.inputs[i]).constant->dtype != DType::kFloat32)
          ok = false;
        else
          (i == 1 ? lo : hi) = V(g, act.inputs[i]).constant->Data<float>()[0];
      }
      if (!ok || std::isnan(lo) || std::isnan(hi) || lo > hi) continue;
    } else {
      continue;
    }
    int x = act.inputs[0];
    int p = producer[static_cast<size_t>(x)];
    if (p < 0 || SoleConsumer(g, consumers, x) < 0) continue;
    Node& prod = g.nodes[static_cast<size_t>(p)];
    if (prod.op != OpType::kConv && prod.op != OpType::kFullyConnected && prod.op != OpType::kGemm)
      continue;
    float old_lo = prod.Float("output_min", -std::numeric_limits<float>::infinity());
    float old_hi = prod.Float("output_max", std::numeric_limits<float>::infinity());
    float new_lo = std::max(old_lo, lo), new_hi = std::min(old_hi, hi);
    if (new_lo > new_hi) continue;
    if (std::isfinite(new_lo)) prod.SetFloats("output_min", {new_lo});
    if (std::isfinite(new_hi)) prod.SetFloats("output_max", {new_hi});
    prod.outputs[0] = act.outputs[0];
    act.dead = true;
    changed = true;
  }
  return changed;
}

}  // namespace

void RemoveDeadNodes(Graph& g) {
  std::vector<uint8_t> live(g.values.size(), 0);
  for (int v : g.outputs) live[static_cast<size_t>(v)] = 1;
  for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it) {
    if (it->dead) continue;
    bool needed = false;
    for (int v : it->outputs) needed |= live[static_cast<size_t>(v)] != 0;
    if (!needed) {
      it->dead = true;
      continue;
    }
    for (int v : it->inputs)
      if (v >= 0) live[static_cast<size_t>(v)] = 1;
  }
  std::erase_if(g.nodes, [](const Node& n) { return n.dead; });
  // Free the bytes of constants nothing refers to any more (weights replaced by fusion or
  // re-laid out for the fast kernels), so compiling a model needs little more than its size.
  std::vector<uint8_t> used(g.values.size(), 0);
  for (const Node& n : g.nodes)
    for (int v : n.inputs)
      if (v >= 0) used[static_cast<size_t>(v)] = 1;
  for (int v : g.outputs) used[static_cast<size_t>(v)] = 1;
  for (size_t i = 0; i < g.values.size(); ++i)
    if (!used[i] && g.values[i].constant) g.values[i].constant.reset();
}

Status FuseGraph(Graph& g, int* fused) {
  auto count_dead = [&] {
    int n = 0;
    for (const Node& node : g.nodes) n += node.dead ? 1 : 0;
    return n;
  };
  FuseConvBatchNorm(g);
  MakeFullyConnected(g);
  FuseFullyConnectedBias(g);
  FuseActivations(g);
  *fused = count_dead();
  // Re-infer every surviving node so the values carry the rewritten nodes' types.
  for (const Node& n : g.nodes)
    if (!n.dead) MLC_RETURN_IF_ERROR(InferNode(g, n));
  return Status::Ok();
}

// ---- channels-last rewrite ----

namespace {

bool IsUnaryLayoutFree(OpType op) {
  switch (op) {
    case OpType::kRelu:
    case OpType::kSigmoid:
    case OpType::kTanh:
    case OpType::kHardSwish:
    case OpType::kHardSigmoid:
    case OpType::kLeakyRelu:
    case OpType::kIdentity:
    case OpType::kElu:
    case OpType::kExp:
    case OpType::kAbs:
    case OpType::kNeg:
    case OpType::kSqrt:
    case OpType::kErf:
    case OpType::kSoftplus:
    case OpType::kMish:
    case OpType::kSelu:
    case OpType::kCelu:
      return true;
    default:
      return false;
  }
}

bool IsBinaryLayoutFree(OpType op) {
  return op == OpType::kAdd || op == OpType::kSub || op == OpType::kMul || op == OpType::kDiv ||
         op == OpType::kMax || op == OpType::kMin;
}

Shape ToNhwc(const Shape& s) { return Shape{s[0], s[2], s[3], s[1]}; }

class ChannelsLastRewriter {
 public:
  explicit ChannelsLastRewriter(Graph& g) : g_(g) {}

  Status Run(int* transposes) {
    std::vector<Node> old = std::move(g_.nodes);
    g_.nodes.clear();
    for (const Node& n : old)
      if (!n.dead)
        for (int v : n.inputs)
          if (v >= 0) uses_[v]++;
    for (Node& n : old) {
      if (n.dead) continue;
      MLC_RETURN_IF_ERROR(Visit(std::move(n)));
    }
    for (int v : g_.outputs) MLC_RETURN_IF_ERROR(Materialize(v));
    *transposes = transposes_;
    return Status::Ok();
  }

 private:
  bool Is4d(int v) {
    return v >= 0 && V(g_, v).type.shape.size() == 4 && V(g_, v).type.dtype == DType::kFloat32;
  }
  bool Twinned(int v) { return twin_.count(v) > 0; }

  // NHWC twin of an NCHW value, adding a transpose when there is none yet.
  int GetTwin(int v) {
    auto it = twin_.find(v);
    if (it != twin_.end()) return it->second;
    int t = g_.AddValue(g_.UniqueName(V(g_, v).name + "_nhwc"),
                        TensorType{DType::kFloat32, ToNhwc(V(g_, v).type.shape)});
    Node tr;
    tr.op = OpType::kTranspose;
    tr.name = g_.UniqueName(V(g_, v).name + "_to_nhwc");
    tr.inputs = {v};
    tr.outputs = {t};
    tr.SetInts("perm", {0, 2, 3, 1});
    g_.nodes.push_back(std::move(tr));
    ++transposes_;
    twin_[v] = t;
    return t;
  }

  // Makes the NCHW value available again (it was only produced in NHWC form).
  Status Materialize(int v) {
    if (!lazy_.count(v)) return Status::Ok();
    lazy_.erase(v);
    int t = twin_.at(v);
    const Shape s = V(g_, v).type.shape;  // a copy: adding a constant below may move the values
    Node n;
    n.name = g_.UniqueName(V(g_, v).name + "_to_nchw");
    n.outputs = {v};
    if (s[2] == Dim{1, false} && s[3] == Dim{1, false}) {
      // [N,1,1,C] and [N,C,1,1] are the same bytes: a free reshape.
      n.op = OpType::kReshape;
      n.inputs = {t, g_.AddConstant(g_.UniqueName("nchw_shape"),
                                    Tensor::FromInt64s({4}, {0, s[1].value, 1, 1}))};
    } else {
      n.op = OpType::kTranspose;
      n.inputs = {t};
      n.SetInts("perm", {0, 3, 1, 2});
      ++transposes_;
    }
    MLC_RETURN_IF_ERROR(InferNode(g_, n));
    g_.nodes.push_back(std::move(n));
    return Status::Ok();
  }

  int NewNhwcOutput(int nchw_value) {
    int t = g_.AddValue(g_.UniqueName(V(g_, nchw_value).name + "_nhwc"),
                        TensorType{DType::kFloat32, ToNhwc(V(g_, nchw_value).type.shape)});
    twin_[nchw_value] = t;
    lazy_.insert(nchw_value);
    return t;
  }

  // A constant broadcast against a 4-D NCHW operand, re-laid out for the NHWC operand.
  std::optional<int> NhwcConstant(int v) {
    const Tensor& c = *V(g_, v).constant;
    if (c.dims.size() > 4) return std::nullopt;
    engine::Dims d(4 - c.dims.size(), 1);
    d.insert(d.end(), c.dims.begin(), c.dims.end());
    Tensor out = Tensor::Make(c.dtype, {d[0], d[2], d[3], d[1]});
    const size_t e = engine::DTypeSize(c.dtype);
    for (int64_t n = 0; n < d[0]; ++n)
      for (int64_t ch = 0; ch < d[1]; ++ch)
        for (int64_t h = 0; h < d[2]; ++h)
          for (int64_t w = 0; w < d[3]; ++w) {
            int64_t src = ((n * d[1] + ch) * d[2] + h) * d[3] + w;
            int64_t dst = ((n * d[2] + h) * d[3] + w) * d[1] + ch;
            std::memcpy(out.bytes.data() + dst * e, c.bytes.data() + src * e, e);
          }
    return g_.AddConstant(g_.UniqueName(V(g_, v).name + "_nhwc"), std::move(out));
  }

  Status Emit(Node n) {
    MLC_RETURN_IF_ERROR(InferNode(g_, n));
    g_.nodes.push_back(std::move(n));
    return Status::Ok();
  }

  Status Visit(Node n) {
    const int x = n.inputs.empty() ? -1 : n.inputs[0];
    if (n.op == OpType::kConv && Is4d(x) && IsConst(g_, n.inputs[1]) &&
        (n.inputs.size() < 3 || n.inputs[2] < 0 || IsConst(g_, n.inputs[2])) &&
        !engine::HasBatchDim(Shape(V(g_, x).type.shape.begin() + 1, V(g_, x).type.shape.end()))) {
      const Tensor& w = *V(g_, n.inputs[1]).constant;
      Tensor ohwi = Tensor::Make(DType::kFloat32, {w.dims[0], w.dims[2], w.dims[3], w.dims[1]});
      for (int64_t o = 0; o < w.dims[0]; ++o)
        for (int64_t i = 0; i < w.dims[1]; ++i)
          for (int64_t h = 0; h < w.dims[2]; ++h)
            for (int64_t k = 0; k < w.dims[3]; ++k)
              ohwi.Data<float>()[((o * w.dims[2] + h) * w.dims[3] + k) * w.dims[1] + i] =
                  w.Data<float>()[((o * w.dims[1] + i) * w.dims[2] + h) * w.dims[3] + k];
      Node c = n;
      c.op = OpType::kConvNhwc;
      c.inputs[0] = GetTwin(x);
      c.inputs[1] = g_.AddConstant(g_.UniqueName(n.name + "_ohwi"), std::move(ohwi));
      if (--uses_[n.inputs[1]] == 0 && !V(g_, n.inputs[1]).graph_output)
        V(g_, n.inputs[1]).constant.reset();
      c.Erase("kernel_shape");
      c.outputs = {NewNhwcOutput(n.outputs[0])};
      return Emit(std::move(c));
    }
    if ((n.op == OpType::kMaxPool || n.op == OpType::kAveragePool) && n.outputs.size() == 1 &&
        Is4d(x) && Twinned(x)) {
      Node p = n;
      p.op = n.op == OpType::kMaxPool ? OpType::kMaxPoolNhwc : OpType::kAveragePoolNhwc;
      p.Erase("storage_order");
      p.inputs = {twin_[x]};
      p.outputs = {NewNhwcOutput(n.outputs[0])};
      return Emit(std::move(p));
    }
    if (n.op == OpType::kGlobalAveragePool && Is4d(x) && Twinned(x)) {
      Node p = n;
      p.op = OpType::kGlobalAveragePoolNhwc;
      p.inputs = {twin_[x]};
      p.outputs = {NewNhwcOutput(n.outputs[0])};
      return Emit(std::move(p));
    }
    if ((IsUnaryLayoutFree(n.op) || n.op == OpType::kClip) && Is4d(x) && Twinned(x) &&
        n.outputs.size() == 1) {
      bool ok = true;
      for (size_t i = 1; i < n.inputs.size(); ++i)
        ok &= n.inputs[i] < 0 || IsConst(g_, n.inputs[i]);
      if (ok) {
        Node u = n;
        u.inputs[0] = twin_[x];
        u.outputs = {NewNhwcOutput(n.outputs[0])};
        return Emit(std::move(u));
      }
    }
    if (IsBinaryLayoutFree(n.op) && n.inputs.size() == 2 && Is4d(n.outputs[0])) {
      int a = n.inputs[0], b = n.inputs[1];
      bool a_ok =
          (Is4d(a) && Twinned(a) && V(g_, a).type.shape == V(g_, n.outputs[0]).type.shape) ||
          IsConst(g_, a);
      bool b_ok =
          (Is4d(b) && Twinned(b) && V(g_, b).type.shape == V(g_, n.outputs[0]).type.shape) ||
          IsConst(g_, b);
      if (a_ok && b_ok && (Twinned(a) || Twinned(b))) {
        Node e = n;
        for (size_t i = 0; i < 2; ++i) {
          int v = n.inputs[i];
          if (IsConst(g_, v)) {
            auto c = NhwcConstant(v);
            if (!c) return Fallback(std::move(n));
            e.inputs[i] = *c;
          } else {
            e.inputs[i] = twin_[v];
          }
        }
        e.outputs = {NewNhwcOutput(n.outputs[0])};
        return Emit(std::move(e));
      }
    }
    if (n.op == OpType::kConcat && Is4d(n.outputs[0])) {
      int64_t axis = n.Int("axis", 0);
      bool all = axis == 1 || axis == -3;
      for (int v : n.inputs) all &= Is4d(v) && Twinned(v);
      if (all) {
        Node c = n;
        for (int& v : c.inputs) v = twin_[v];
        c.SetInts("axis", {3});
        c.outputs = {NewNhwcOutput(n.outputs[0])};
        return Emit(std::move(c));
      }
    }
    if (n.op == OpType::kBatchNormalization && Is4d(x) && Twinned(x) &&
        n.Int("training_mode", 0) == 0 && n.outputs.size() == 1) {
      bool params = true;
      for (int i = 1; i <= 4; ++i) params &= IsConst(g_, n.inputs[static_cast<size_t>(i)]);
      if (params) {
        const int64_t c = V(g_, x).type.shape[1].value;
        const float eps = n.Float("epsilon", 1e-5f);
        Tensor scale = Tensor::Make(DType::kFloat32, {c}),
               shift = Tensor::Make(DType::kFloat32, {c});
        for (int64_t i = 0; i < c; ++i) {
          const double s =
              V(g_, n.inputs[1]).constant->Data<float>()[i] /
              std::sqrt(static_cast<double>(V(g_, n.inputs[4]).constant->Data<float>()[i]) + eps);
          scale.Data<float>()[i] = static_cast<float>(s);
          shift.Data<float>()[i] =
              static_cast<float>(V(g_, n.inputs[2]).constant->Data<float>()[i] -
                                 V(g_, n.inputs[3]).constant->Data<float>()[i] * s);
        }
        int mid = g_.AddValue(g_.UniqueName(n.name + "_scaled"), V(g_, twin_[x]).type);
        Node mul;
        mul.op = OpType::kMul;
        mul.name = g_.UniqueName(n.name + "_mul");
        mul.inputs = {twin_[x], g_.AddConstant(g_.UniqueName(n.name + "_scale"), std::move(scale))};
        mul.outputs = {mid};
        MLC_RETURN_IF_ERROR(Emit(std::move(mul)));
        Node add;
        add.op = OpType::kAdd;
        add.name = g_.UniqueName(n.name + "_add");
        add.inputs = {mid, g_.AddConstant(g_.UniqueName(n.name + "_shift"), std::move(shift))};
        add.outputs = {NewNhwcOutput(n.outputs[0])};
        return Emit(std::move(add));
      }
    }
    return Fallback(std::move(n));
  }

  Status Fallback(Node n) {
    for (int v : n.inputs)
      if (v >= 0) MLC_RETURN_IF_ERROR(Materialize(v));
    g_.nodes.push_back(std::move(n));
    return Status::Ok();
  }

  Graph& g_;
  std::map<int, int> uses_;  // readers of each value among the nodes not yet rewritten
  std::map<int, int> twin_;
  std::set<int> lazy_;
  int transposes_ = 0;
};

}  // namespace

Status ChannelsLast(Graph& g, int* transposes) {
  bool has_conv = false;
  for (const Node& n : g.nodes) has_conv |= !n.dead && n.op == OpType::kConv;
  *transposes = 0;
  if (!has_conv) return Status::Ok();
  ChannelsLastRewriter rewriter(g);
  return rewriter.Run(transposes);
}

}  // namespace mlcapsule::compiler
