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
  kProbabilities,   // the full vector (softmax applied first when `logits`)
  kTopK,            // the k largest probabilities and their class indices
  kRounded,         // the full vector rounded to `decimals` decimals
  kLabel,           // the top-1 class index only
  kReverseSigmoid,  // the full vector perturbed by reverse sigmoid (Lee et al.), renormalised
  kGaussian,        // the full vector plus Gaussian noise, clipped at 0 and renormalised
};
// "probabilities", "top_k", "rounded", "label", "reverse_sigmoid", "gaussian"
const char* OutputModeName(OutputMode mode);

struct OutputPolicy {
  OutputMode mode = OutputMode::kProbabilities;
  int k = 1;            // top_k: 1..1000
  int decimals = 2;     // rounded: 0..8 (top_k values are not rounded)
  bool logits = false;  // the model's output is logits: apply softmax before the mode
  std::string tensor;   // which model output the policy applies to ("" = the first)
  double beta = 0.4;    // reverse_sigmoid: perturbation size, (0, 10]
  double gamma = 2.0;   // reverse_sigmoid: sigmoid steepness, (0, 100]
  double sigma = 0.05;  // gaussian: noise standard deviation, (0, 1]
};

// What the core does when PRADA alarms (docs/defenses.md).
enum class AlarmAction {
  kLog,       // report the alarm in the next usage report, keep answering
  kThrottle,  // report it and limit the rate to prada.throttle_per_second / _per_day
  kBlock,     // report it and refuse every further query of this core
};
const char* AlarmActionName(AlarmAction action);  // "log", "throttle", "block"

// PRADA (Juuti et al., EuroS&P 2019): extraction detection on the stream of queries.
struct PradaPolicy {
  bool enabled = false;
  double delta = 0.9;  // alarm when Shapiro-Wilk W < delta: (0, 1)
  AlarmAction action = AlarmAction::kLog;
  uint64_t throttle_per_second = 1;  // throttle: 1..10^6
  uint64_t throttle_per_day = 1000;  // throttle: 1..10^9
  uint64_t max_stored = 100000;      // stored queries (all classes): 1..10^6, and
                                     // max_stored * input elements * 4 <= 2 GiB
  uint32_t window = 5000;            // minimum distances tested: 20..5000
  uint32_t test_every = 10;          // queries between tests: 1..1000
  uint32_t min_class_entries = 10;   // a class joins the test with this many distances: 2..1000
  uint32_t max_checks = 0;  // stored points a nearest-neighbour search reads: 0 (exact)..10^6
};

enum class EscrowMode {
  kAfterAlarm,  // watermarked inputs leave the client only once PRADA has alarmed (needs PRADA)
  kAlways,      // every watermarked input is escrowed (the policy says so; `inspect` shows it)
};
const char* EscrowModeName(EscrowMode mode);  // "after_alarm", "always"

// DAWN dynamic watermarking (Szyller et al.): a keyed hash selects a fraction `rate` of inputs,
// which get a wrong label chosen by a second keyed hash; their inputs are escrowed to the provider.
struct WatermarkPolicy {
  bool enabled = false;
  double rate = 0.01;  // r_w: (0, 0.5]
  EscrowMode escrow = EscrowMode::kAfterAlarm;
  std::string escrow_key;                 // provider's X25519 escrow public key, 64 lowercase hex
  uint32_t max_escrow = 64;               // watermarked inputs held for the next report: 1..4096
  uint64_t max_escrow_bytes = 256 << 10;  // and their encrypted size: 4 KiB..512 KiB
};

// MemGuard (Jia et al., CCS 2019): the confidence vector is perturbed within an L1 budget so the
// defender's membership classifier (a second plan in the capsule) is fooled; top-1 is kept.
// Requires output.mode probabilities.
struct MemGuardPolicy {
  bool enabled = false;
  double budget = 0.5;   // expected L1 change of the confidence vector: (0, 2]
  uint32_t steps = 100;  // gradient steps of the noise search: 1..10000
};

struct DefensePolicy {
  PradaPolicy prada;
  WatermarkPolicy watermark;
  MemGuardPolicy memguard;
};

// Query rates the core enforces (0 = no limit). Time is the core's clock, which never goes
// backwards within the sealed state (windows are whole seconds and UTC days).
struct RateLimitPolicy {
  uint64_t per_second = 0;  // 0..10^9
  uint64_t per_day = 0;     // 0..10^12
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
  DefensePolicy defenses;
  RateLimitPolicy rate_limit;
};

Result<Policy> ParsePolicy(std::string_view json_text);
// Canonical JSON: every field written, fixed key order, no whitespace. ParsePolicy(PolicyToJson(p))
// gives back p.
std::string PolicyToJson(const Policy& policy);
bool PolicyAcceptsTee(const Policy& policy, std::string_view tee);
// The bound on PRADA's memory (defenses.prada.max_stored * input elements * 4 bytes), checked when
// a capsule is packed and again when the core opens it.
uint64_t PradaMaxStoredBytesLimit();

}  // namespace mlcapsule::capsule
