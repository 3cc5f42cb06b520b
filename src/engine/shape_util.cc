// Shape arithmetic (see shape_util.h).
#include "engine/shape_util.h"

#include <algorithm>

namespace mlcapsule::engine {

Result<int> NormalizeAxis(const NodeContext& ctx, int64_t axis, int64_t rank, const char* what) {
  if (axis < -rank || axis >= rank || (rank == 0 && axis != 0)) {
    if (!(rank == 0 && (axis == 0 || axis == -1)))
      return ctx.Error("{} {} is out of range for rank {} (allowed [{}, {}])", what, axis, rank,
                       -rank, rank - 1);
    return 0;
  }
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

Result<Shape> BroadcastShapes(const NodeContext& ctx, std::span<const Shape* const> shapes) {
  size_t rank = 0;
  for (const Shape* s : shapes) rank = std::max(rank, s->size());
  Shape out(rank, Dim{1, false});
  for (const Shape* s : shapes) {
    size_t offset = rank - s->size();
    for (size_t i = 0; i < s->size(); ++i) {
      const Dim& d = (*s)[i];
      Dim& o = out[offset + i];
      if (d == o) continue;
      if (!d.batch && d.value == 1) continue;
      if (!o.batch && o.value == 1) {
        o = d;
        continue;
      }
      std::string all;
      for (const Shape* t : shapes) all += (all.empty() ? "" : " and ") + ShapeToString(*t);
      return ctx.Error("shapes {} cannot be broadcast (dimension {} differs)", all, offset + i);
    }
  }
  return out;
}

std::vector<int64_t> ContiguousStrides(std::span<const int64_t> dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * dims[i + 1];
  return strides;
}

std::vector<int64_t> BroadcastStrides(std::span<const int64_t> in, std::span<const int64_t> out) {
  std::vector<int64_t> strides(out.size(), 0);
  std::vector<int64_t> own = ContiguousStrides(in);
  size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) strides[offset + i] = in[i] == 1 ? 0 : own[i];
  return strides;
}

Result<int64_t> FixedDim(const NodeContext& ctx, const Dim& d, const char* what) {
  if (d.batch)
    return ctx.Unsupported("{} depends on the batch size; compile with a fixed batch", what);
  return d.value;
}

}  // namespace mlcapsule::engine
