// A capsule as the lab's attacker sees it: the provider's side packs a model under a policy and
// issues leases (the air-gapped path of capsule/licensing.h), and the attacker's side queries it
// exactly as a client would, through host::Client and the real software TEE (the mlcapsule-core
// process), so every defense in the policy runs where it runs in production. The oracle counts
// rows and never exceeds its budget; Sync() is the client's renewal (a usage report attached to a
// fresh evidence request), which is how escrowed watermark samples leave the core and what the
// lab reads PRADA's alarm from. No libtorch here.
//
//   lab::CapsuleSpec spec{.name = "p1", .model_onnx = onnx, .policy_json = policy};
//   MLC_ASSIGN_OR_RETURN(auto oracle, lab::CapsuleOracle::Create(spec, {.work_dir = "runs/p1"}));
//   std::vector<float> answers;  // rows x classes probabilities (one-hot for label outputs)
//   MLC_RETURN_IF_ERROR(oracle->Query(images, rows, &answers));
//   MLC_ASSIGN_OR_RETURN(lab::OracleSync sync, oracle->Sync());
//
// Attach() is the other way in: a licensed customer's view of a capsule someone else packed,
// leased from the license server over HTTPS (host/license_client.h), as `mlcapsule-lab steal`
// uses it. Then Sync() reports usage to that server and renews the lease there.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::lab {

struct CapsuleSpec {
  std::string name;
  std::string model_onnx;  // ONNX bytes: input [batch,1,28,28] float, output logits [batch,C]
  // The policy (docs/policy.md). The escrow key "generate" in defenses.watermark.escrow_key is
  // replaced with a fresh key pair kept in the work directory (escrow.key).
  std::string policy_json;
  std::string membership_onnx;  // MemGuard's classifier, when the policy enables it
};

struct OracleOptions {
  std::string work_dir;  // created; holds keys, the capsule, the client state and usage reports
  std::string bin_dir;   // where mlcapsule and mlcapsule-core are ("" = beside this executable)
  uint64_t quota = 2'000'000;    // the lease's query quota
  int batch = 256;               // rows per Infer call
  bool remove_work_dir = false;  // delete work_dir when the oracle is destroyed
};

// A capsule packed by someone else, licensed through the license server (Attach).
struct AttachOptions {
  std::string capsule_path;   // an existing capsule
  std::string state_dir;      // the client's state directory (created when missing)
  std::string server_url;     // https://HOST:PORT
  std::string ca_cert;        // PEM to verify the server with ("" = the system's)
  std::string license_token;  // the customer's license token
  std::string work_dir;       // created (never emptied); usage reports go to work_dir/reports/
  std::string core_binary;    // "" = mlcapsule-core beside this executable
  int batch = 256;            // rows per Infer call
};

struct OracleSync {
  int64_t prada_alarm_at = -1;  // the query count at PRADA's first alarm, -1 when none
  uint64_t watermarked = 0, escrowed = 0, escrow_dropped = 0;
  uint64_t memguard_applied = 0;
  int reports = 0;  // usage reports written so far
};

struct WatermarkVerdict {
  uint64_t samples = 0, matches = 0;
  double accuracy = 0, log2_chance = 0;
  bool identified = false;
  std::string verdict;  // as `mlcapsule watermark verify` prints it
};

class CapsuleOracle {
 public:
  static Result<std::unique_ptr<CapsuleOracle>> Create(const CapsuleSpec& spec,
                                                       const OracleOptions& options);
  // Opens an existing capsule as its licensed customer: starts the core through host::Client,
  // connects to the license server and gets the first lease. has_escrow() is false (the customer
  // does not hold the escrow key) and VerifyWatermark() fails.
  static Result<std::unique_ptr<CapsuleOracle>> Attach(const AttachOptions& options);
  ~CapsuleOracle();

  // Answers `rows` images (784 floats each, [0,1]); answers gets rows x classes() floats: the
  // policy's probabilities, or a one-hot row per label for label outputs. A refused call (a
  // PRADA block, a rate limit) returns its error; rows answered before it stay counted.
  Status Query(std::span<const float> images, int64_t rows, std::vector<float>* answers);
  int64_t queries() const { return queries_; }
  int classes() const { return classes_; }
  bool label_only() const { return label_only_; }
  bool has_escrow() const { return has_escrow_; }  // the policy escrows watermarked samples
  const std::string& capsule_path() const { return capsule_path_; }

  // Renews the lease with the latest usage report attached (what releases escrowed samples and
  // lets the core drop them), keeps the report in work_dir/reports/, and returns what the reports
  // say so far. Attached, the report goes to the license server and the lease comes from it; a
  // server that cannot be reached is an error.
  Result<OracleSync> Sync();
  // Runs `mlcapsule watermark verify --json` on a suspect ONNX model with every report kept so far.
  Result<WatermarkVerdict> VerifyWatermark(const std::string& suspect_onnx) const;

 private:
  CapsuleOracle() = default;

 public:
  struct State;  // the provider's keys and the client (oracle.cc)

 private:
  std::unique_ptr<State> state_;
  std::string capsule_path_;
  int64_t queries_ = 0;
  int classes_ = 0;
  bool label_only_ = false;
  bool has_escrow_ = false;
};

}  // namespace mlcapsule::lab
