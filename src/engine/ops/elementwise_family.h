// Private to the elementwise and reduction op files: the registration hooks that
// AddElementwiseOps and AddReductionOps call, attribute checks shared by their inference
// functions, and the broadcasting loop the binary and variadic kernels run. Everything here
// trusts shapes that inference has already validated.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "engine/op.h"
#include "engine/parallel.h"
#include "engine/shape_util.h"

namespace mlcapsule::engine {

// Registration hooks: each is defined in the file named beside it.
void AddUnaryOps(std::vector<const OpSchema*>* ops);          // elementwise_unary.cc
void AddBinaryOps(std::vector<const OpSchema*>* ops);         // elementwise_binary.cc
void AddSoftmaxOps(std::vector<const OpSchema*>* ops);        // softmax.cc
void AddAxisReductionOps(std::vector<const OpSchema*>* ops);  // reduce_axis.cc

// Elements per ParallelFor tile: small tensors stay on the calling thread.
inline constexpr int64_t kElementwiseGrain = int64_t{1} << 14;

// Attribute checks for inference. ctx.Int/ctx.Float fall back to the default on an attribute of
// the wrong kind, so inference calls these first to reject such plans instead of silently
// ignoring the attribute.
// `name`, when present, must hold exactly one value of `kind`.
Status CheckScalarAttr(const NodeContext& ctx, std::string_view name, AttrKind kind);
// An int attribute that must be 0 or 1 (keepdims, exclusive, ...).
Result<bool> BoolAttr(const NodeContext& ctx, std::string_view name, bool fallback);
// Input i must be float32 (or, with allow_int64, int64): kUnsupported naming the type otherwise;
// and of rank <= kMaxRank: kInvalidArgument otherwise.
Status CheckNumericInput(const NodeContext& ctx, int i, bool allow_int64);

// Wrapping int64 arithmetic: signed overflow is undefined behaviour in C++, and untrusted data
// can overflow, so the kernels compute in uint64_t (two's complement wrap, like numpy).
inline int64_t WrapAdd(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
inline int64_t WrapSub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
inline int64_t WrapMul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

// False for integers; lets templates test for NaN without a self-comparison warning.
template <typename T>
inline bool IsNaN(T x) {
  if constexpr (std::is_floating_point_v<T>) return x != x;
  return false;
}

// y = op(a, b) with NumPy broadcasting: a and b are rank-aligned to y's dims (inference has
// checked they broadcast). a may alias y when a's dims equal y's (the variadic ops accumulate in
// place). Dims of size 1 are dropped and adjacent dims that are contiguous in every operand are
// merged, so the inner loop runs over the longest possible run with steps 0 or 1.
template <typename TA, typename TB, typename TY, typename Op>
void BroadcastBinary(const RunContext& run, const TensorView& a, const TensorView& b,
                     const TensorView& y, Op op) {
  const int64_t total = y.NumElements();
  if (total == 0) return;
  std::vector<int64_t> a_strides = BroadcastStrides(a.dims, y.dims);
  std::vector<int64_t> b_strides = BroadcastStrides(b.dims, y.dims);
  // Coalesced dims, outermost first.
  int64_t dims[kMaxRank + 1], sa[kMaxRank + 1], sb[kMaxRank + 1];
  int rank = 0;
  for (size_t i = 0; i < y.dims.size(); ++i) {
    if (y.dims[i] == 1) continue;
    if (rank > 0 && sa[rank - 1] == a_strides[i] * y.dims[i] &&
        sb[rank - 1] == b_strides[i] * y.dims[i]) {
      dims[rank - 1] *= y.dims[i];
      sa[rank - 1] = a_strides[i];
      sb[rank - 1] = b_strides[i];
      continue;
    }
    dims[rank] = y.dims[i];
    sa[rank] = a_strides[i];
    sb[rank] = b_strides[i];
    ++rank;
  }
  if (rank == 0) {  // a single element
    dims[0] = 1;
    sa[0] = 0;
    sb[0] = 0;
    rank = 1;
  }
  const int64_t inner = dims[rank - 1];
  const int64_t step_a = sa[rank - 1], step_b = sb[rank - 1];  // 0 or 1
  const TA* pa = a.As<const TA>();
  const TB* pb = b.As<const TB>();
  TY* py = y.As<TY>();
  ParallelFor(run, total, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    int64_t row = begin / inner;
    int64_t col = begin % inner;
    int64_t pos = begin;
    while (pos < end) {
      // Offsets of this row's first element in a and b.
      int64_t off_a = 0, off_b = 0, rest = row;
      for (int d = rank - 2; d >= 0; --d) {
        int64_t index = rest % dims[d];
        rest /= dims[d];
        off_a += index * sa[d];
        off_b += index * sb[d];
      }
      const int64_t n = std::min(inner - col, end - pos);
      const TA* ra = pa + off_a + col * step_a;
      const TB* rb = pb + off_b + col * step_b;
      TY* ry = py + pos;
      if (step_a == 1 && step_b == 1) {
        for (int64_t i = 0; i < n; ++i) ry[i] = op(ra[i], rb[i]);
      } else if (step_a == 1) {
        const TB vb = rb[0];
        for (int64_t i = 0; i < n; ++i) ry[i] = op(ra[i], vb);
      } else if (step_b == 1) {
        const TA va = ra[0];
        for (int64_t i = 0; i < n; ++i) ry[i] = op(va, rb[i]);
      } else {
        const TY v = op(ra[0], rb[0]);
        for (int64_t i = 0; i < n; ++i) ry[i] = v;
      }
      pos += n;
      col = 0;
      ++row;
    }
  });
}

}  // namespace mlcapsule::engine
