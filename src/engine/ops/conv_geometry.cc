// Window geometry (see conv_geometry.h).
#include "engine/ops/conv_geometry.h"

namespace mlcapsule::engine {

Result<std::vector<int64_t>> FixedSpatial(const NodeContext& ctx, const Shape& shape, size_t first,
                                          size_t count, const char* what) {
  std::vector<int64_t> out;
  for (size_t i = first; i < first + count; ++i) {
    if (shape[i].batch)
      return ctx.Unsupported("{} spatial dimension {} depends on the batch size", what, i);
    out.push_back(shape[i].value);
  }
  return out;
}

Result<WindowGeometry> ComputeWindow(const NodeContext& ctx, std::span<const int64_t> input_spatial,
                                     std::span<const int64_t> kernel, bool allow_ceil_mode) {
  WindowGeometry g;
  g.spatial = static_cast<int>(input_spatial.size());
  const size_t n = input_spatial.size();
  g.input.assign(input_spatial.begin(), input_spatial.end());
  std::span<const int64_t> kernel_attr = ctx.Ints("kernel_shape");
  if (!kernel.empty()) {
    if (!kernel_attr.empty() &&
        !std::equal(kernel.begin(), kernel.end(), kernel_attr.begin(), kernel_attr.end()))
      return ctx.Error("kernel_shape {} does not match the weights' {}", DimsToString(kernel_attr),
                       DimsToString(kernel));
    g.kernel.assign(kernel.begin(), kernel.end());
  } else {
    if (kernel_attr.size() != n)
      return ctx.Error("kernel_shape has {} values, the input has {} spatial dims",
                       kernel_attr.size(), n);
    g.kernel.assign(kernel_attr.begin(), kernel_attr.end());
  }
  auto read = [&](const char* name, int64_t fallback, size_t count, std::vector<int64_t>* out,
                  int64_t min_value) -> Status {
    std::span<const int64_t> v = ctx.Ints(name);
    if (v.empty()) {
      out->assign(count, fallback);
      return Status::Ok();
    }
    if (v.size() != count) return ctx.Error("{} has {} values, expected {}", name, v.size(), count);
    for (int64_t x : v)
      if (x < min_value || x > (int64_t{1} << 24))
        return ctx.Error("{} value {} is outside [{}, 2^24]", name, x, min_value);
    out->assign(v.begin(), v.end());
    return Status::Ok();
  };
  MLC_RETURN_IF_ERROR(read("strides", 1, n, &g.strides, 1));
  MLC_RETURN_IF_ERROR(read("dilations", 1, n, &g.dilations, 1));
  MLC_RETURN_IF_ERROR(read("pads", 0, 2 * n, &g.pads, 0));
  int64_t ceil_mode = ctx.Int("ceil_mode", 0);
  if (ceil_mode != 0 && (!allow_ceil_mode || ceil_mode != 1))
    return ctx.Error("ceil_mode {} is not 0 or 1", ceil_mode);
  for (size_t i = 0; i < n; ++i) {
    if (g.kernel[i] < 1 || g.kernel[i] > (int64_t{1} << 24))
      return ctx.Error("kernel size {} is outside [1, 2^24]", g.kernel[i]);
    // Pooling windows must overlap the input (ONNX Runtime's rule too): a pad as large as the
    // window would make outputs of padding only.
    if (allow_ceil_mode && (g.pads[i] >= g.kernel[i] || g.pads[n + i] >= g.kernel[i]))
      return ctx.Error("pads {} and {} must be smaller than the kernel size {} in spatial dim {}",
                       g.pads[i], g.pads[n + i], g.kernel[i], i);
    int64_t span = (g.kernel[i] - 1) * g.dilations[i] + 1;
    int64_t padded = g.input[i] + g.pads[i] + g.pads[n + i];
    if (padded < span)
      return ctx.Error("window {} (dilated) is larger than the padded input {} in spatial dim {}",
                       span, padded, i);
    int64_t out = 0;
    if (ceil_mode) {
      out = (padded - span + g.strides[i] - 1) / g.strides[i] + 1;
      // The last window must start inside the input or its leading padding (PyTorch/ONNX rule).
      if ((out - 1) * g.strides[i] >= g.input[i] + g.pads[i]) --out;
    } else {
      out = (padded - span) / g.strides[i] + 1;
    }
    g.output.push_back(out);
  }
  return g;
}

Clamp ReadClamp(const NodeContext& ctx) {
  Clamp c;
  c.min = ctx.Float("output_min", c.min);
  c.max = ctx.Float("output_max", c.max);
  return c;
}

}  // namespace mlcapsule::engine
