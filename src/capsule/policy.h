// The provider's policy: a JSON document signed inside the capsule header. It says which TEEs may
// run the capsule, how large a lease may be, how often the core seals its state, and what the
// client may see of each answer. docs/policy.md is the reference (schema, defaults, examples).
// Unknown fields and out-of-range values are errors that name the field ("output.k: 0 is out of
// range 1..1000"), never ignored.
//
//   MLC_ASSIGN_OR_RETURN(Policy policy, ParsePolicy(json_text));
//   std::string canonical = PolicyToJson(policy);   // what pack stores in the header
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule::capsule {

inline constexpr int kPolicyVersion = 1;

enum class OutputMode {
  kProbabilities,  // the full vector (softmax applied first when `logits`)
  kTopK,           // the k largest probabilities and their class indices
  kRounded,        // the full vector rounded to `decimals` decimals
  kLabel,          // the top-1 class index only
};
const char* OutputModeName(OutputMode mode);  // "probabilities", "top_k", "rounded", "label"

struct OutputPolicy {
  OutputMode mode = OutputMode::kProbabilities;
  int k = 1;            // top_k: 1..1000
  int decimals = 2;     // rounded: 0..8 (top_k values are not rounded)
  bool logits = false;  // the model's output is logits: apply softmax before the mode
  std::string tensor;   // which model output the policy applies to ("" = the first)
};

struct MeasurementList {
  std::string tee;                   // "software", "sgx", "tdx", "snp", "tpm"
  std::vector<std::string> allowed;  // lowercase hex measurements (1..64); a TEE without a
                                     // list accepts any measurement
};

// Intel TCB statuses (the converged platform + QE status of a verified quote) a policy may name
// in tee.tcb_statuses. Revoked and NotSupported can never be accepted.
inline constexpr std::array<std::string_view, 6> kTcbStatusNames = {
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded"};
// The default: up to date, or needing only software hardening or configuration (the platform has
// no known unpatched TCB issue), docs/dev/attestation-plan.md §11.
std::vector<std::string> DefaultTcbStatuses();

struct SgxPolicy {
  std::vector<std::string> mr_signers;  // lowercase hex MRSIGNERs (64 chars); empty = any signer
  std::optional<uint16_t> isv_prod_id;  // unset = any product
  uint16_t min_isv_svn = 0;
};

struct SnpPolicy {
  uint32_t max_vmpl = 0;  // highest VMPL accepted: 0..3
};

struct TeePolicy {
  std::vector<std::string> accept;            // evidence types accepted; must be non-empty
  std::vector<MeasurementList> measurements;  // per type (optional)
  bool allow_debug = false;                   // hardware TEEs in debug mode
  std::vector<std::string> tcb_statuses = DefaultTcbStatuses();  // Intel (sgx, tdx): 1..6 names
  SgxPolicy sgx;
  SnpPolicy snp;
};

struct LeasePolicy {
  uint64_t max_queries = 100000;  // largest quota a lease may carry: 1..10^12
  int64_t max_days = 30;          // longest lease validity: 1..3650
  uint64_t seal_every = 1000;     // queries charged ahead per seal (and counter bump): 1..10^6
};

struct Policy {
  int version = kPolicyVersion;
  std::string description;  // free text, <= 1024 bytes
  TeePolicy tee;
  LeasePolicy lease;
  OutputPolicy output;
};

Result<Policy> ParsePolicy(std::string_view json_text);
// Canonical JSON: every field written, fixed key order, no whitespace. ParsePolicy(PolicyToJson(p))
// gives back p.
std::string PolicyToJson(const Policy& policy);
bool PolicyAcceptsTee(const Policy& policy, std::string_view tee);

}  // namespace mlcapsule::capsule
