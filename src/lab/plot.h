// PNG line plots for the lab's report, drawn with cairo: one or more panels in a grid, each with
// linear or log10 axes, tick labels, a legend, optional horizontal reference lines and a diagonal.
// No libtorch.
//
//   lab::Panel p{.title = "probabilities", .x = {"queries", true, 100, 20000},
//                .y = {"fidelity", false, 0, 1}};
//   p.series.push_back({"random", {100, 1000}, {0.7, 0.9}});
//   MLC_RETURN_IF_ERROR(lab::WritePlotPng("fidelity.png", {p}, /*columns=*/2));
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::lab {

struct Axis {
  std::string label;
  bool log = false;  // log10; values <= 0 are clipped to min
  double min = 0, max = 1;
};
struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; drawn as a polyline with a marker at each point
  bool dashed = false;
};
struct Panel {
  std::string title;
  Axis x, y;
  std::vector<Series> series;
  std::vector<double> reference_y;  // dashed grey horizontal lines (e.g. the 90% fidelity target)
  bool diagonal = false;            // y = x (ROC chance line)
};
// Writes a PNG of ceil(panels/columns) rows; each panel is panel_width x panel_height pixels.
// Colours are assigned by series name so one attack has one colour in every panel. Errors name
// the path.
Status WritePlotPng(const std::string& path, const std::vector<Panel>& panels, int columns = 2,
                    int panel_width = 560, int panel_height = 400);

}  // namespace mlcapsule::lab
