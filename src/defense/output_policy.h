// The output policy: what the client sees of each answer (capsule::OutputPolicy, docs/policy.md).
// Runs inside the trusted core on every query, after the model and before anything leaves the
// enclave. Only the policy's selected output reaches the client; every other model output (hidden
// features, auxiliary heads) stays inside.
//
// Two steps, following "load validates, run executes":
//   - at capsule-open time, OutputPolicyIo checks the policy against the model's outputs and
//     returns the tensors the client will receive (their names, types and symbolic shapes);
//   - on every query, ApplyOutputPolicy turns the selected output's scores into those tensors.
//
//   MLC_ASSIGN_OR_RETURN(std::vector<capsule::IoTensor> client_io,
//                        OutputPolicyIo(policy.output, header.outputs));
//   MLC_ASSIGN_OR_RETURN(int selected, FindPolicyOutput(policy.output, output_names));
//   ...                                  // per query: run the model
//   MLC_RETURN_IF_ERROR(ApplyOutputPolicy(policy.output, model_outputs[selected], &rng,
//                                         memguard /* nullable */, &client, &released));
//
// What the client receives, for a selected output "probs" of shape [..., C] (C classes):
//   probabilities    "probs"          float32 [..., C]  (softmax first when `logits`)
//   rounded          "probs"          float32 [..., C]  each value rounded to `decimals` places
//   top_k            "probs.values"   float32 [..., k]  the k highest probabilities, highest first
//                    "probs.indices"  int64   [..., k]  their class indices
//   label            "probs.label"    int64   [...]     the index of the highest score
//   reverse_sigmoid  "probs"          float32 [..., C]  p - beta*(sigmoid(gamma*logit p) - 1/2),
//                                                       clipped to [0, 1], renormalised
//   gaussian         "probs"          float32 [..., C]  max(p + N(0, sigma^2), 0), renormalised
// Ties go to the lower class index. A NaN score ranks below every other score (and has
// probability 0 after softmax); NaN never crashes and never makes the output undefined.
// reverse_sigmoid and gaussian read scores that are not logits as probabilities: NaN counts as 0
// and values are clamped to [0, 1]; their output is always a probability vector (non-negative,
// summing to 1), uniform when the perturbed row sums to 0. docs/defenses.md says when each mode
// keeps the top-1 label and what it costs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/policy.h"
#include "engine/tensor.h"

namespace mlcapsule::defense {

class MemGuard;  // defense/memguard.h
class Rng;       // defense/rng.h

// Index of the model output the policy applies to: the output named policy.tensor, or the first
// output when that is empty. The error names the missing tensor and the outputs available.
Result<int> FindPolicyOutput(const capsule::OutputPolicy& policy,
                             std::span<const std::string> output_names);

// Capsule-open-time check of `policy` against the model's outputs: the selected output must be
// float32 with rank >= 1 and a fixed (not batch-scaled) last dimension C >= 1, and top_k's k must
// not exceed C. Returns the tensors the client receives, as listed above (batch-scaled leading
// dimensions stay batch-scaled).
Result<std::vector<capsule::IoTensor>> OutputPolicyIo(
    const capsule::OutputPolicy& policy, const std::vector<capsule::IoTensor>& model_outputs);

// Per-query: applies `policy` to `scores` (the selected output, float32 [..., C]; rows =
// elements / C) and writes the client's tensors, in OutputPolicyIo's order, to `client_outputs`.
// The vector and its tensors' buffers are reused across calls, so a caller that keeps them
// allocates nothing after the first query.
//   rng       the core's random source; needed by gaussian and by MemGuard, may be null otherwise.
//   memguard  when not null (defenses.memguard.enabled), perturbs every row of the probabilities
//             (after softmax, before rounding); only with modes probabilities and rounded, and its
//             class count must be C.
//   memguard_released  when not null, incremented by the number of rows whose MemGuard noise was
//             released (MemGuardStats::applied).
// Errors when `scores` does not match what OutputPolicyIo validated (wrong type, rank 0, C < 1,
// k > C), when a needed rng is null or memguard does not fit, and when MemGuard's classifier
// fails (the answer is then withheld, never released unperturbed).
Status ApplyOutputPolicy(const capsule::OutputPolicy& policy, const engine::TensorView& scores,
                         Rng* rng, MemGuard* memguard, std::vector<engine::Tensor>* client_outputs,
                         uint64_t* memguard_released = nullptr);

}  // namespace mlcapsule::defense
