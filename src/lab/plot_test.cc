// PNG plots: a written figure is read back with cairo and checked for its size, for ink and for the
// series colours (never byte-compared: fonts and cairo versions change the exact pixels); bad
// arguments and unwritable paths return errors naming the value or the path.
#include "lab/plot.h"

#include <cairo/cairo.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>

// fontconfig (loaded by cairo's text API) keeps its configuration cache until exit on purpose;
// the sanitizer build would report that as a leak. The hook is read by LeakSanitizer only and is
// an unused function in other builds.
extern "C" const char* __lsan_default_suppressions() { return "leak:libfontconfig.so\n"; }

namespace mlcapsule::lab {
namespace {

namespace fs = std::filesystem;

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// The first two palette colours (matplotlib tab10 blue and orange).
constexpr uint32_t kBlue = 0x1f77b4, kOrange = 0xff7f0e;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "mlc-plot-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct Image {
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface{
      nullptr, &cairo_surface_destroy};
  int width = 0, height = 0;

  // 0xRRGGBB of an opaque pixel (the plot paints a white background, so every pixel is opaque).
  uint32_t Rgb(int x, int y) const {
    const unsigned char* data = cairo_image_surface_get_data(surface.get());
    const int stride = cairo_image_surface_get_stride(surface.get());
    return *reinterpret_cast<const uint32_t*>(data + y * stride + x * 4) & 0xffffff;
  }
  // Pixels in columns [x0, x1) within `tolerance` of `rgb` in every channel.
  int Count(uint32_t rgb, int tolerance, int x0, int x1) const {
    int count = 0;
    for (int y = 0; y < height; ++y) {
      for (int x = x0; x < x1; ++x) {
        const uint32_t pixel = Rgb(x, y);
        bool close = true;
        for (int shift : {0, 8, 16}) {
          const int a = static_cast<int>((pixel >> shift) & 0xff);
          const int b = static_cast<int>((rgb >> shift) & 0xff);
          close = close && std::abs(a - b) <= tolerance;
        }
        count += close;
      }
    }
    return count;
  }
};

Image ReadPng(const fs::path& path) {
  Image image;
  image.surface.reset(cairo_image_surface_create_from_png(path.c_str()));
  if (cairo_surface_status(image.surface.get()) == CAIRO_STATUS_SUCCESS) {
    image.width = cairo_image_surface_get_width(image.surface.get());
    image.height = cairo_image_surface_get_height(image.surface.get());
  }
  return image;
}

// A fidelity-style panel (log x, linear y, a 90% target line) and a ROC-style panel (log-log with
// the chance diagonal). "active" comes second in the first panel and alone in the second.
std::vector<Panel> TwoPanels() {
  Panel fidelity{.title = "fidelity", .x = {"queries", true, 100, 20000}, .y = {"agreement"}};
  fidelity.series.push_back({"random", {100, 500, 1000, 5000, 20000}, {0.5, 0.7, 0.8, 0.88, 0.93}});
  fidelity.series.push_back(
      {"active", {100, 500, 1000, 5000, 20000}, {0.55, 0.78, 0.86, 0.92, 0.95}, true});
  fidelity.reference_y = {0.9};

  Panel roc{.title = "ROC",
            .x = {"false positive rate", true, 1e-4, 1},
            .y = {"true positive rate", true, 1e-4, 1}};
  Series curve{"active", {}, {}};
  for (int i = 0; i <= 400; ++i) {
    const double fpr = std::pow(10.0, -4 + i / 100.0);
    curve.x.push_back(fpr);
    curve.y.push_back(std::min(1.0, 3 * fpr));
  }
  curve.x.front() = 0;  // clipped to the axis minimum
  roc.series.push_back(curve);
  roc.diagonal = true;
  return {fidelity, roc};
}

TEST(PlotTest, TwoPanelFigureHasInkAndConsistentColours) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const fs::path path = dir.path() / "figure.png";
  Status status = WritePlotPng(path.string(), TwoPanels(), /*columns=*/2);
  ASSERT_TRUE(status.ok()) << status.ToString();

  Image image = ReadPng(path);
  ASSERT_EQ(cairo_surface_status(image.surface.get()), CAIRO_STATUS_SUCCESS);
  EXPECT_EQ(image.width, 2 * 560);
  EXPECT_EQ(image.height, 400);

  const int64_t total = int64_t{image.width} * image.height;
  const int64_t white = image.Count(0xffffff, 0, 0, image.width);
  EXPECT_GT(total - white, total / 50) << "the plot is nearly blank";
  EXPECT_LT(total - white, total / 2) << "the background is not white";

  // "random" is the first name, so blue, and only in the left panel; "active" is orange in both
  // panels even though it is the only (first) series of the right one.
  const int half = image.width / 2;
  EXPECT_GT(image.Count(kBlue, 8, 0, half), 50);
  EXPECT_GT(image.Count(kOrange, 8, 0, half), 50);
  EXPECT_GT(image.Count(kOrange, 8, half, image.width), 50);
  EXPECT_EQ(image.Count(kBlue, 8, half, image.width), 0);

  // Written through a temporary file that is renamed away: only the figure is left.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(entry.path().filename(), "figure.png");
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(PlotTest, ReplacesAnExistingFile) {
  TempDir dir;
  const fs::path path = dir.path() / "figure.png";
  std::ofstream(path) << "not a png";
  std::vector<Panel> panels = TwoPanels();
  panels.resize(1);
  ASSERT_TRUE(WritePlotPng(path.string(), panels, /*columns=*/1, 300, 200).ok());
  Image image = ReadPng(path);
  ASSERT_EQ(cairo_surface_status(image.surface.get()), CAIRO_STATUS_SUCCESS);
  EXPECT_EQ(image.width, 300);
  EXPECT_EQ(image.height, 200);
}

TEST(PlotTest, GridHasNoEmptyColumns) {
  // Three panels in two columns: two rows. One panel with two columns: one panel wide.
  TempDir dir;
  std::vector<Panel> panels = TwoPanels();
  panels.push_back(panels[0]);
  const fs::path three = dir.path() / "three.png", one = dir.path() / "one.png";
  ASSERT_TRUE(WritePlotPng(three.string(), panels, 2, 200, 150).ok());
  Image image = ReadPng(three);
  EXPECT_EQ(image.width, 400);
  EXPECT_EQ(image.height, 300);
  panels.resize(1);
  ASSERT_TRUE(WritePlotPng(one.string(), panels, 2, 200, 150).ok());
  image = ReadPng(one);
  EXPECT_EQ(image.width, 200);
  EXPECT_EQ(image.height, 150);
}

TEST(PlotTest, ToleratesNonFiniteAndOutOfRangePoints) {
  TempDir dir;
  Panel panel{.title = "odd values", .x = {"x", false, -1, 1}, .y = {"y", true, 0.01, 100}};
  panel.series.push_back({"gaps", {-1, -0.5, 0, 0.5, 1}, {1, kNan, -3, 1e300, 10}});
  panel.series.push_back({"empty", {}, {}});
  panel.reference_y = {kNan, -1, 1};  // only 1 is drawable on a log axis
  panel.diagonal = true;
  const fs::path path = dir.path() / "odd.png";
  Status status = WritePlotPng(path.string(), {panel});
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(cairo_surface_status(ReadPng(path).surface.get()), CAIRO_STATUS_SUCCESS);
}

void ExpectInvalid(const Status& status, const std::string& needle) {
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find(needle), std::string::npos) << status.ToString();
}

TEST(PlotTest, RejectsBadArguments) {
  TempDir dir;
  const std::string path = (dir.path() / "bad.png").string();
  const std::vector<Panel> good = TwoPanels();
  ExpectInvalid(WritePlotPng(path, {}), "no panels");
  ExpectInvalid(WritePlotPng(path, good, 0), "columns 0");
  ExpectInvalid(WritePlotPng(path, good, 2, 99, 400), "99");
  ExpectInvalid(WritePlotPng(path, good, 2, 560, 50), "50");
  ExpectInvalid(WritePlotPng(path, good, 2, 20000, 400), "20000");

  std::vector<Panel> panels = good;
  panels[1].x.min = 1, panels[1].x.max = 1;
  ExpectInvalid(WritePlotPng(path, panels), "false positive rate");
  panels = good;
  panels[0].y.max = kNan;
  ExpectInvalid(WritePlotPng(path, panels), "agreement");
  panels = good;
  panels[1].y.min = 0;
  ExpectInvalid(WritePlotPng(path, panels), "log y axis 'true positive rate' min 0");
  panels = good;
  panels[0].series[1].y.pop_back();
  ExpectInvalid(WritePlotPng(path, panels), "series 'active' has 5 x values but 4 y values");
  EXPECT_FALSE(fs::exists(path));
}

TEST(PlotTest, UnwritablePathIsAnIoErrorNamingIt) {
  TempDir dir;
  const std::string path = (dir.path() / "missing" / "figure.png").string();
  Status status = WritePlotPng(path, TwoPanels());
  EXPECT_EQ(status.code(), StatusCode::kIoError) << status.ToString();
  EXPECT_NE(status.message().find(path), std::string::npos) << status.ToString();
}

}  // namespace
}  // namespace mlcapsule::lab
