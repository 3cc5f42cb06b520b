// PNG line plots for the lab's report (see plot.h). Everything is drawn with cairo's image surface
// and toy text API, so the only dependency is cairo itself; the PNG is encoded in memory and
// written with WriteFile (temporary file + rename), so a reader never sees a half-written plot.
// Inputs come from the lab's own experiments, but they are still checked: a bad axis would
// otherwise turn into NaN coordinates, which put the cairo context into an error state.
#include "lab/plot.h"

#include <cairo/cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <numbers>
#include <string_view>

#include "base/file_util.h"

namespace mlcapsule::lab {
namespace {

constexpr int kMinPanelSide = 100;
// Keeps the image (4 bytes a pixel) near a gigabyte at most; cairo itself stops at 32767.
constexpr int64_t kMaxSurfaceSide = 16384;

// Room around the plot frame, in pixels: tick labels on the left and below, the title above.
constexpr double kMarginLeft = 70, kMarginRight = 18, kMarginTop = 30, kMarginBottom = 50;
constexpr double kTickLength = 4;
constexpr double kMarkerRadius = 2.6;
constexpr double kSeriesLineWidth = 1.8;
// Above this many points the markers merge into a solid band (a ROC curve has one point per
// distinct score), so only the line is drawn.
constexpr size_t kMaxMarkedPoints = 100;
constexpr const char* kFont = "DejaVu Sans";

struct Rgb {
  double r, g, b;
};
// matplotlib's tab10, except that its grey is replaced by black: grey is reserved for the
// reference lines and the diagonal, and a grey series would read as one of them.
constexpr std::array<Rgb, 10> kPalette = {{
    {0x1f / 255.0, 0x77 / 255.0, 0xb4 / 255.0},
    {0xff / 255.0, 0x7f / 255.0, 0x0e / 255.0},
    {0x2c / 255.0, 0xa0 / 255.0, 0x2c / 255.0},
    {0xd6 / 255.0, 0x27 / 255.0, 0x28 / 255.0},
    {0x94 / 255.0, 0x67 / 255.0, 0xbd / 255.0},
    {0x8c / 255.0, 0x56 / 255.0, 0x4b / 255.0},
    {0xe3 / 255.0, 0x77 / 255.0, 0xc2 / 255.0},
    {0.0, 0.0, 0.0},
    {0xbc / 255.0, 0xbd / 255.0, 0x22 / 255.0},
    {0x17 / 255.0, 0xbe / 255.0, 0xcf / 255.0},
}};
constexpr Rgb kReferenceGrey = {0.45, 0.45, 0.45};
constexpr double kMajorGridGrey = 0.86, kMinorGridGrey = 0.94;

using SurfacePtr = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using ContextPtr = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

std::string PanelName(size_t index, const Panel& panel) {
  return fmt::format("panel {} ('{}')", index, panel.title);
}

Status CheckAxis(const Axis& axis, std::string_view which, const std::string& panel_name) {
  if (!std::isfinite(axis.min) || !std::isfinite(axis.max) || !(axis.min < axis.max) ||
      !std::isfinite(axis.max - axis.min)) {
    return InvalidArgument("{}: {} axis '{}' range [{}, {}] must be finite with min below max",
                           panel_name, which, axis.label, axis.min, axis.max);
  }
  if (axis.log && axis.min <= 0) {
    return InvalidArgument("{}: log {} axis '{}' min {} must be above 0", panel_name, which,
                           axis.label, axis.min);
  }
  return Status::Ok();
}

Status CheckArguments(const std::vector<Panel>& panels, int columns, int panel_width,
                      int panel_height) {
  if (panels.empty()) return InvalidArgument("plot has no panels");
  if (columns < 1) return InvalidArgument("columns {} must be at least 1", columns);
  if (panel_width < kMinPanelSide || panel_height < kMinPanelSide) {
    return InvalidArgument("panel size {}x{} is below the minimum {}x{}", panel_width, panel_height,
                           kMinPanelSide, kMinPanelSide);
  }
  const int64_t used_columns = std::min<int64_t>(columns, static_cast<int64_t>(panels.size()));
  const int64_t rows = (static_cast<int64_t>(panels.size()) + used_columns - 1) / used_columns;
  const int64_t width = used_columns * panel_width, height = rows * panel_height;
  if (width > kMaxSurfaceSide || height > kMaxSurfaceSide) {
    return InvalidArgument(
        "plot size {}x{} ({} columns of {} px, {} rows of {} px) is over the limit {}x{}", width,
        height, used_columns, panel_width, rows, panel_height, kMaxSurfaceSide, kMaxSurfaceSide);
  }
  for (size_t i = 0; i < panels.size(); ++i) {
    const Panel& panel = panels[i];
    const std::string name = PanelName(i, panel);
    MLC_RETURN_IF_ERROR(CheckAxis(panel.x, "x", name));
    MLC_RETURN_IF_ERROR(CheckAxis(panel.y, "y", name));
    for (const Series& series : panel.series) {
      if (series.x.size() != series.y.size()) {
        return InvalidArgument("{}: series '{}' has {} x values but {} y values", name, series.name,
                               series.x.size(), series.y.size());
      }
    }
  }
  return Status::Ok();
}

// Maps data values on one axis to pixels. Log axes work in log10 space.
class AxisMap {
 public:
  AxisMap(const Axis& axis, double pixel_at_min, double pixel_at_max)
      : log_(axis.log),
        low_(Transform(axis.min)),
        high_(Transform(axis.max)),
        pixel_low_(pixel_at_min),
        pixel_high_(pixel_at_max) {}

  // Values far outside the axis are pulled in to 10 axis lengths: they are clipped anyway, and
  // cairo's fixed-point coordinates wrap around for values in the millions of pixels.
  double ToPixel(double value) const {
    double t = log_ && value <= 0 ? low_ : Transform(value);
    const double span = high_ - low_;
    t = std::clamp(t, low_ - 10 * span, high_ + 10 * span);
    return pixel_low_ + (t - low_) / span * (pixel_high_ - pixel_low_);
  }
  // The data value at a fraction (0..1) of the axis: used to sample curves such as y = x.
  double ValueAt(double fraction) const {
    const double t = low_ + fraction * (high_ - low_);
    return log_ ? std::pow(10.0, t) : t;
  }

 private:
  double Transform(double value) const { return log_ ? std::log10(value) : value; }
  bool log_;
  double low_, high_, pixel_low_, pixel_high_;
};

struct Tick {
  double value;
  std::string label;  // empty: a gridline only
  bool major;
};

// Drops the "-" from a label that rounds to zero.
std::string FixedLabel(double value, int decimals) {
  std::string label = fmt::format("{:.{}f}", value, decimals);
  if (label.find_first_not_of("-0.") == std::string::npos) return "0";
  return label;
}

// Linear labels carry just the decimals the step needs; steps of thousands use k and M suffixes.
std::string LinearLabel(double value, double step) {
  std::string suffix;
  if (step >= 1e6) {
    value /= 1e6, step /= 1e6, suffix = "M";
  } else if (step >= 1e3) {
    value /= 1e3, step /= 1e3, suffix = "k";
  }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  std::string label = FixedLabel(value, decimals);
  return label == "0" ? label : label + suffix;
}

// About five ticks at a 1, 2 or 5 x 10^k step.
std::vector<Tick> LinearTicks(double min, double max) {
  const double raw = (max - min) / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / magnitude;
  const double step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * magnitude;
  std::vector<Tick> ticks;
  const double first = std::ceil(min / step - 1e-9), last = std::floor(max / step + 1e-9);
  // Multiplying (not accumulating) keeps labels such as 0.3 exact; the bound guards the loop
  // against ranges so narrow that min / step loses its integer part.
  for (double k = first; k <= last && ticks.size() < 50; k += 1) {
    ticks.push_back({k * step, LinearLabel(k * step, step), true});
  }
  return ticks;
}

// m x 10^e written as 1e-4, 0.01, 1, 100, 1k, 10k, 1M, 1e9.
std::string LogLabel(int mantissa, int exponent) {
  if (exponent >= 9 || exponent <= -3) return fmt::format("{}e{}", mantissa, exponent);
  if (exponent >= 6)
    return fmt::format("{}M", mantissa * static_cast<int>(std::pow(10, exponent - 6)));
  if (exponent >= 3)
    return fmt::format("{}k", mantissa * static_cast<int>(std::pow(10, exponent - 3)));
  if (exponent >= 0) return fmt::format("{}", mantissa * static_cast<int>(std::pow(10, exponent)));
  return FixedLabel(mantissa * std::pow(10.0, exponent), -exponent);
}

// A major tick at every decade (every other one, or sparser, on long axes) and minor gridlines at
// 2..9 x 10^k. An axis with a single decade tick also labels 2x and 5x, and one with none labels
// every minor tick, so a short axis still has labels to read.
std::vector<Tick> LogTicks(double min, double max) {
  const double low = std::log10(min), high = std::log10(max);
  const int first_decade = static_cast<int>(std::ceil(low - 1e-9));
  const int last_decade = static_cast<int>(std::floor(high + 1e-9));
  const int decades = last_decade - first_decade + 1;
  const int label_every = std::max(1, static_cast<int>(std::ceil(decades / 8.0)));
  const bool minor = decades <= 12;
  std::vector<Tick> ticks;
  for (int e = static_cast<int>(std::floor(low)); e <= static_cast<int>(std::ceil(high)); ++e) {
    for (int m = 1; m <= 9; ++m) {
      if (m > 1 && !minor) break;
      const double value = m * std::pow(10.0, e);
      if (value < min * (1 - 1e-9) || value > max * (1 + 1e-9)) continue;
      if (m == 1) {
        const bool labelled = (e - first_decade) % label_every == 0;
        ticks.push_back({value, labelled ? LogLabel(1, e) : "", true});
      } else {
        const bool labelled = decades == 0 || (decades == 1 && (m == 2 || m == 5));
        ticks.push_back({value, labelled ? LogLabel(m, e) : "", false});
      }
    }
  }
  return ticks;
}

std::vector<Tick> Ticks(const Axis& axis) {
  return axis.log ? LogTicks(axis.min, axis.max) : LinearTicks(axis.min, axis.max);
}

void SetFont(cairo_t* cr, double size, bool bold = false) {
  cairo_select_font_face(cr, kFont, CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double TextWidth(cairo_t* cr, const std::string& text) {
  cairo_text_extents_t extents;
  cairo_text_extents(cr, text.c_str(), &extents);
  return extents.x_advance;
}

// Draws text with its baseline at y; align 0 = left, 0.5 = centred, 1 = right of x.
void ShowText(cairo_t* cr, const std::string& text, double x, double y, double align) {
  cairo_move_to(cr, x - align * TextWidth(cr, text), y);
  cairo_show_text(cr, text.c_str());
}

struct Frame {
  double left, top, right, bottom;
};

struct Box {
  double x, y, width, height;
  bool Contains(double px, double py) const {
    return px >= x && px <= x + width && py >= y && py <= y + height;
  }
};

// The pixel polyline of one series, split at non-finite points (a gap, as matplotlib draws NaN).
std::vector<std::vector<std::pair<double, double>>> Polylines(const Series& series,
                                                              const AxisMap& x_map,
                                                              const AxisMap& y_map) {
  std::vector<std::vector<std::pair<double, double>>> lines(1);
  for (size_t i = 0; i < series.x.size(); ++i) {
    if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) {
      if (!lines.back().empty()) lines.emplace_back();
      continue;
    }
    lines.back().emplace_back(x_map.ToPixel(series.x[i]), y_map.ToPixel(series.y[i]));
  }
  return lines;
}

void SetDash(cairo_t* cr, bool dashed) {
  static constexpr double kDash[] = {6, 4};
  cairo_set_dash(cr, dashed ? kDash : nullptr, dashed ? 2 : 0, 0);
}

class PanelPainter {
 public:
  PanelPainter(cairo_t* cr, const Panel& panel, const std::map<std::string, size_t>& colours,
               double origin_x, double origin_y, double width, double height)
      : cr_(cr),
        panel_(panel),
        colours_(colours),
        origin_x_(origin_x),
        origin_y_(origin_y),
        width_(width),
        height_(height),
        frame_{origin_x + kMarginLeft, origin_y + kMarginTop, origin_x + width - kMarginRight,
               origin_y + height - kMarginBottom},
        x_map_(panel.x, frame_.left, frame_.right),
        y_map_(panel.y, frame_.bottom, frame_.top) {}

  void Paint() {
    Grid();
    cairo_save(cr_);
    cairo_rectangle(cr_, frame_.left, frame_.top, frame_.right - frame_.left,
                    frame_.bottom - frame_.top);
    cairo_clip(cr_);
    ReferenceLines();
    for (const Series& series : panel_.series) DrawSeries(series);
    cairo_restore(cr_);
    Axes();
    Legend();
  }

 private:
  // Whole pixels + 0.5 put a 1-pixel line on one pixel column instead of blurring it over two.
  static double Crisp(double pixel) { return std::floor(pixel) + 0.5; }

  void Grid() {
    cairo_set_line_width(cr_, 1);
    SetDash(cr_, false);
    for (bool major : {false, true}) {
      const double grey = major ? kMajorGridGrey : kMinorGridGrey;
      cairo_set_source_rgb(cr_, grey, grey, grey);
      for (const Tick& tick : Ticks(panel_.x)) {
        if (tick.major != major) continue;
        const double x = Crisp(x_map_.ToPixel(tick.value));
        cairo_move_to(cr_, x, frame_.top);
        cairo_line_to(cr_, x, frame_.bottom);
      }
      for (const Tick& tick : Ticks(panel_.y)) {
        if (tick.major != major) continue;
        const double y = Crisp(y_map_.ToPixel(tick.value));
        cairo_move_to(cr_, frame_.left, y);
        cairo_line_to(cr_, frame_.right, y);
      }
      cairo_stroke(cr_);
    }
  }

  // y = x sampled along the x axis, so it is straight on lin-lin and log-log and correctly
  // curved when only one axis is logarithmic.
  std::vector<std::pair<double, double>> DiagonalPoints() const {
    constexpr int kSamples = 256;
    std::vector<std::pair<double, double>> points;
    for (int i = 0; i <= kSamples; ++i) {
      const double value = x_map_.ValueAt(static_cast<double>(i) / kSamples);
      points.emplace_back(x_map_.ToPixel(value), y_map_.ToPixel(value));
    }
    return points;
  }

  void ReferenceLines() {
    cairo_set_source_rgb(cr_, kReferenceGrey.r, kReferenceGrey.g, kReferenceGrey.b);
    cairo_set_line_width(cr_, 1.2);
    SetDash(cr_, true);
    for (double y_value : panel_.reference_y) {
      if (!std::isfinite(y_value) || (panel_.y.log && y_value <= 0)) continue;
      const double y = y_map_.ToPixel(y_value);
      cairo_move_to(cr_, frame_.left, y);
      cairo_line_to(cr_, frame_.right, y);
    }
    cairo_stroke(cr_);
    if (panel_.diagonal) {
      const auto points = DiagonalPoints();
      cairo_move_to(cr_, points[0].first, points[0].second);
      for (const auto& [x, y] : points) cairo_line_to(cr_, x, y);
      cairo_stroke(cr_);
    }
    SetDash(cr_, false);
  }

  void SetColour(const std::string& name) {
    const Rgb& rgb = kPalette[colours_.at(name) % kPalette.size()];
    cairo_set_source_rgb(cr_, rgb.r, rgb.g, rgb.b);
  }

  void DrawSeries(const Series& series) {
    SetColour(series.name);
    cairo_set_line_width(cr_, kSeriesLineWidth);
    cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
    SetDash(cr_, series.dashed);
    const auto lines = Polylines(series, x_map_, y_map_);
    for (const auto& line : lines) {
      if (line.empty()) continue;
      cairo_move_to(cr_, line[0].first, line[0].second);
      for (const auto& [x, y] : line) cairo_line_to(cr_, x, y);
      cairo_stroke(cr_);
    }
    SetDash(cr_, false);
    if (series.x.size() > kMaxMarkedPoints) return;
    for (const auto& line : lines) {
      for (const auto& [x, y] : line) {
        cairo_new_sub_path(cr_);
        cairo_arc(cr_, x, y, kMarkerRadius, 0, 2 * std::numbers::pi);
      }
    }
    cairo_fill(cr_);
  }

  void Axes() {
    cairo_set_source_rgb(cr_, 0, 0, 0);
    cairo_set_line_width(cr_, 1);
    cairo_rectangle(cr_, Crisp(frame_.left), Crisp(frame_.top),
                    std::floor(frame_.right) - std::floor(frame_.left),
                    std::floor(frame_.bottom) - std::floor(frame_.top));
    cairo_stroke(cr_);

    SetFont(cr_, 10);
    for (const Tick& tick : Ticks(panel_.x)) {
      const double x = Crisp(x_map_.ToPixel(tick.value));
      const double length = tick.major ? kTickLength : kTickLength / 2;
      cairo_move_to(cr_, x, frame_.bottom);
      cairo_line_to(cr_, x, frame_.bottom + length);
      cairo_stroke(cr_);
      if (!tick.label.empty()) ShowText(cr_, tick.label, x, frame_.bottom + kTickLength + 12, 0.5);
    }
    for (const Tick& tick : Ticks(panel_.y)) {
      const double y = Crisp(y_map_.ToPixel(tick.value));
      const double length = tick.major ? kTickLength : kTickLength / 2;
      cairo_move_to(cr_, frame_.left, y);
      cairo_line_to(cr_, frame_.left - length, y);
      cairo_stroke(cr_);
      if (!tick.label.empty()) ShowText(cr_, tick.label, frame_.left - kTickLength - 3, y + 3.5, 1);
    }

    SetFont(cr_, 13, /*bold=*/true);
    ShowText(cr_, panel_.title, origin_x_ + width_ / 2, origin_y_ + 20, 0.5);
    SetFont(cr_, 12);
    ShowText(cr_, panel_.x.label, (frame_.left + frame_.right) / 2, origin_y_ + height_ - 10, 0.5);
    cairo_save(cr_);
    cairo_translate(cr_, origin_x_ + 18, (frame_.top + frame_.bottom) / 2);
    cairo_rotate(cr_, -std::numbers::pi / 2);
    ShowText(cr_, panel_.y.label, 0, 0, 0.5);
    cairo_restore(cr_);
  }

  // How many sampled points of the drawn lines a legend box would cover.
  int Covered(const Box& box) const {
    int covered = 0;
    auto count_segment = [&](std::pair<double, double> a, std::pair<double, double> b) {
      constexpr int kSamples = 8;
      for (int i = 0; i <= kSamples; ++i) {
        const double t = static_cast<double>(i) / kSamples;
        covered +=
            box.Contains(a.first + t * (b.first - a.first), a.second + t * (b.second - a.second));
      }
    };
    for (const Series& series : panel_.series) {
      for (const auto& line : Polylines(series, x_map_, y_map_)) {
        if (line.size() == 1) count_segment(line[0], line[0]);
        for (size_t i = 1; i < line.size(); ++i) count_segment(line[i - 1], line[i]);
      }
    }
    if (panel_.diagonal) {
      const auto points = DiagonalPoints();
      for (size_t i = 1; i < points.size(); ++i) count_segment(points[i - 1], points[i]);
    }
    return covered;
  }

  void Legend() {
    std::vector<const Series*> entries;  // one per name, in order of first appearance
    for (const Series& series : panel_.series) {
      const bool seen = std::any_of(entries.begin(), entries.end(),
                                    [&](const Series* s) { return s->name == series.name; });
      if (!seen) entries.push_back(&series);
    }
    if (entries.empty()) return;

    constexpr double kInset = 8, kPadding = 6, kSample = 24, kRowHeight = 16, kFontSize = 11;
    SetFont(cr_, kFontSize);
    double text_width = 0;
    for (const Series* series : entries) {
      text_width = std::max(text_width, TextWidth(cr_, series->name));
    }
    const double width = 2 * kPadding + kSample + 6 + text_width;
    const double height = 2 * kPadding + kRowHeight * static_cast<double>(entries.size()) - 4;
    // Bottom-right first: ROC and fidelity curves rise from the bottom left to the top right and
    // leave that corner empty. The others are the fallbacks when something is drawn there.
    const Box candidates[] = {
        {frame_.right - kInset - width, frame_.bottom - kInset - height, width, height},
        {frame_.left + kInset, frame_.top + kInset, width, height},
        {frame_.right - kInset - width, frame_.top + kInset, width, height},
        {frame_.left + kInset, frame_.bottom - kInset - height, width, height},
    };
    const Box* box = &candidates[0];
    int least = Covered(*box);
    for (const Box& candidate : candidates) {
      const int covered = Covered(candidate);
      if (covered < least) least = covered, box = &candidate;
    }

    cairo_rectangle(cr_, box->x, box->y, box->width, box->height);
    cairo_set_source_rgba(cr_, 1, 1, 1, 0.85);
    cairo_fill_preserve(cr_);
    cairo_set_source_rgb(cr_, 0.7, 0.7, 0.7);
    cairo_set_line_width(cr_, 1);
    cairo_stroke(cr_);
    for (size_t i = 0; i < entries.size(); ++i) {
      const Series& series = *entries[i];
      const double row_middle = box->y + kPadding + kRowHeight * static_cast<double>(i) + 6;
      SetColour(series.name);
      cairo_set_line_width(cr_, kSeriesLineWidth);
      SetDash(cr_, series.dashed);
      cairo_move_to(cr_, box->x + kPadding, row_middle);
      cairo_line_to(cr_, box->x + kPadding + kSample, row_middle);
      cairo_stroke(cr_);
      SetDash(cr_, false);
      if (series.x.size() <= kMaxMarkedPoints) {
        cairo_arc(cr_, box->x + kPadding + kSample / 2, row_middle, kMarkerRadius, 0,
                  2 * std::numbers::pi);
        cairo_fill(cr_);
      }
      cairo_set_source_rgb(cr_, 0, 0, 0);
      ShowText(cr_, series.name, box->x + kPadding + kSample + 6, row_middle + 4, 0);
    }
  }

  cairo_t* cr_;
  const Panel& panel_;
  const std::map<std::string, size_t>& colours_;
  double origin_x_, origin_y_, width_, height_;
  Frame frame_;
  AxisMap x_map_, y_map_;
};

cairo_status_t AppendToString(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace

Status WritePlotPng(const std::string& path, const std::vector<Panel>& panels, int columns,
                    int panel_width, int panel_height) {
  MLC_RETURN_IF_ERROR(CheckArguments(panels, columns, panel_width, panel_height)
                          .WithContext(fmt::format("plot '{}'", path)));
  // Fewer panels than columns would leave an empty white band on the right.
  const int used_columns = std::min(columns, static_cast<int>(panels.size()));
  const int rows = (static_cast<int>(panels.size()) + used_columns - 1) / used_columns;

  SurfacePtr surface(cairo_image_surface_create(CAIRO_FORMAT_ARGB32, used_columns * panel_width,
                                                rows * panel_height),
                     &cairo_surface_destroy);
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    return ResourceExhausted("plot '{}': cannot create a {}x{} image: {}", path,
                             used_columns * panel_width, rows * panel_height,
                             cairo_status_to_string(cairo_surface_status(surface.get())));
  }
  ContextPtr context(cairo_create(surface.get()), &cairo_destroy);
  cairo_t* cr = context.get();
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);

  // Colours follow the first appearance of each name across all panels, so one attack keeps one
  // colour in every panel of the figure (and the same names in the same order keep it across
  // figures).
  std::map<std::string, size_t> colours;
  for (const Panel& panel : panels) {
    for (const Series& series : panel.series) colours.emplace(series.name, colours.size());
  }

  for (size_t i = 0; i < panels.size(); ++i) {
    const int column = static_cast<int>(i) % used_columns, row = static_cast<int>(i) / used_columns;
    PanelPainter(cr, panels[i], colours, column * panel_width, row * panel_height, panel_width,
                 panel_height)
        .Paint();
  }
  cairo_surface_flush(surface.get());
  if (cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
    return InternalError("plot '{}': drawing failed: {}", path,
                         cairo_status_to_string(cairo_status(cr)));
  }

  std::string png;
  const cairo_status_t written =
      cairo_surface_write_to_png_stream(surface.get(), &AppendToString, &png);
  if (written != CAIRO_STATUS_SUCCESS) {
    return InternalError("plot '{}': PNG encoding failed: {}", path,
                         cairo_status_to_string(written));
  }
  return WriteFile(path, png).WithContext(fmt::format("plot '{}'", path));
}

}  // namespace mlcapsule::lab
