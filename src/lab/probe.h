// A reverse-engineering probe in the spirit of KENNEN (Oh et al., ICLR 2018, kennen-o): how much
// do a black box's answers to fixed queries reveal about its architecture and training, under each
// output policy? A small zoo of MLPs varying activation, depth, width and optimiser is trained on
// Fashion-MNIST; each answers the same fixed queries through the core's own output-policy code
// (defense::ApplyOutputPolicy, in-process); a meta-classifier (logistic regression) predicts each
// attribute from the answers, scored by leave-one-out accuracy against the majority baseline.
// Small on purpose, and stated as such: an illustration with confidence intervals, not KENNEN's
// 11,000-model study.
//
//   MLC_ASSIGN_OR_RETURN(auto rows, lab::RunKennenProbe(config, splits, "kennen"));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "lab/data.h"

namespace mlcapsule::lab {

struct ProbeConfig {
  int models = 48;               // the zoo: every combination, repeated with other seeds
  int queries = 100;             // fixed attacker_pool images
  int64_t train_samples = 5000;  // of the shadow split, a different subset per model
  int epochs = 5;
  // Output policies to compare, as policy "output" objects (docs/policy.md), e.g.
  // {"mode":"probabilities","logits":true}.
  std::vector<std::string> output_policies;
  uint64_t seed = 1;
};

struct ProbeResult {
  std::string attribute;           // "activation", "depth", "width", "optimizer"
  std::string policy;              // the output mode (and its parameter), e.g. "rounded(1)"
  double accuracy = 0;             // leave-one-out accuracy of the meta-classifier
  double ci_low = 0, ci_high = 0;  // 95% Wilson interval
  double majority = 0;             // the majority-class baseline
  int models = 0;
};

Result<std::vector<ProbeResult>> RunKennenProbe(const ProbeConfig& config, const Splits& splits,
                                                const std::string& label);

}  // namespace mlcapsule::lab
