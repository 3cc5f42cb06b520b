// `mlcapsule lab report DIR`: turns DIR/results.json (written by `lab run`) into report.md (the
// tables and the checks against the targets), results.csv (every number, long format),
// fidelity.png (fidelity vs queries, one panel per policy) and roc.png (membership ROC curves on
// log axes, one panel per victim and policy). No libtorch: a report can be remade anywhere.
#pragma once

#include <string>

#include "base/status.h"

namespace mlcapsule::lab {

Status WriteReport(const std::string& dir);

}  // namespace mlcapsule::lab
