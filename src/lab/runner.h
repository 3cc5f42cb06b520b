// `mlcapsule lab run CONFIG` and `mlcapsule lab report DIR`: the attack x defense matrix.
// run: loads the data, trains (or takes from the cache) the victims, the glyph backbone, the
// defender's MemGuard classifier and the shadow models, packs one capsule per policy, runs every
// extraction attack, benign stream and membership attack through those capsules, the KENNEN
// probe, and writes DIR/results.json; then report turns results.json into report.md, results.csv
// and the PNG plots. Jobs run concurrently (one libtorch thread each); every trained model and
// every finished job is cached under a content hash of its configuration and inputs, so a run
// that stopped resumes where it was and a repeated run only rewrites the report.
// docs/lab.md documents the configuration and every number in the report.
#pragma once

#include <string>

#include "base/status.h"
#include "lab/report.h"

namespace mlcapsule::lab {

struct RunOptions {
  std::string config_path;
  std::string out_dir;    // results.json, report.md, results.csv, *.png, capsules/
  std::string cache_dir;  // "" = out_dir/cache
  int jobs = 0;           // 0 = the config's "jobs" (default 2)
  bool quiet = false;     // no progress lines
};
Status RunLab(const RunOptions& options);

}  // namespace mlcapsule::lab
