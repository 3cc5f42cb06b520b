// The trusted boundary: the ONLY calls into the guarded core. Adding a call is a design change
// (DESIGN.md). Each call takes one flat byte buffer and returns one, plus, when the core's
// persistent state changed, a sealed-state blob the host must store (it is encrypted and
// authenticated for this TEE; the host cannot read or usefully change it).
//
// The shim (Boundary::Call) holds no logic: it checks the input length against the call's named
// limit, makes the one copy into core memory where the transport has not already done so (no
// double fetch), and forwards to the core. The payload grammars are in docs/core-protocol.md:
//
//   kOpen          in:  capsule:blob64 sealed_state:blob32 (empty: fresh) journal:blob64
//                       threads:u32
//                  out: core_info
//   kEvidence      in:  nonce:u8[32] has_report:u8 (attach the latest usage report)
//                  out: evidence_request (capsule/messages.h)
//   kInstallLease  in:  lease (capsule/messages.h)
//                  out: core_info
//   kInfer         in:  tensor_list (the model inputs, in capsule header order)
//                  out: tensor_list (what the output policy allows)
//   kUsageReport   in:  (empty)
//                  out: usage_report (capsule/messages.h), signed by the core's attested key
//   kClose         in:  (empty)            out: (empty); wipes every secret
//
//   blob32 := length:u32 bytes        blob64 := length:u64 bytes
//
// Reply::sealed_state, when not empty, is a sealed update the host must apply before the next
// call (SplitSealedUpdate reads it):
//   sealed_update := state:blob32 journal_keep:u64 journal_append:blob32
// The host cuts its journal file to journal_keep bytes, appends journal_append and syncs it, and
// only then replaces its sealed-state file with `state`. The journal holds PRADA's stored queries,
// sealed in append-only records (core.h), so a seal costs what changed, not the whole set. kOpen
// passes back the stored state and the whole journal (the core reads only the part its state
// commits to).
//   tensor_list := count:u32 (<= 64) tensor{count}
//   tensor := dtype:u8 rank:u8 (<= 8) pad:u8[6] dim:i64{rank} byte_count:u64 pad_to_64 data
//   core_info := state:u8 (1 needs a lease, 2 ready) capsule_id:u8[16] license_id:str
//                queries_used:u64 query_quota:u64 expires_at:i64 total_queries:u64
//                policy_json:str input_count:u8 io{..} output_count:u8 io{..}   ; io after policy
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "base/status.h"
#include "trusted/platform.h"

namespace mlcapsule::trusted {

enum class Call : uint32_t {
  kOpen = 1,
  kEvidence = 2,
  kInstallLease = 3,
  kInfer = 4,
  kUsageReport = 5,
  kClose = 6,
};
inline constexpr uint32_t kMaxCall = 6;
static_assert(kMaxCall <= 8,
              "the boundary has at most 8 calls (DESIGN.md): adding one is a design change");

inline const char* CallName(Call call) {
  switch (call) {
    case Call::kOpen:
      return "open";
    case Call::kEvidence:
      return "evidence";
    case Call::kInstallLease:
      return "install-lease";
    case Call::kInfer:
      return "infer";
    case Call::kUsageReport:
      return "usage-report";
    case Call::kClose:
      return "close";
  }
  return "unknown";
}

// Named limits on each call's input, checked before anything is copied or parsed.
inline constexpr uint64_t kMaxSealedStateBytes = 4 << 20;
// PRADA's stored queries are bounded by policy (2 GiB, capsule/policy.h); the journal adds a
// record header and an AEAD tag per seal.
inline constexpr uint64_t kMaxJournalBytes = (uint64_t{2} << 30) + (uint64_t{256} << 20);
// A seal appends at most this much to the journal (the core seals early to keep under it).
inline constexpr uint64_t kMaxJournalAppendBytes = 16 << 20;
inline constexpr uint64_t kMaxSealedUpdateBytes =
    kMaxSealedStateBytes + kMaxJournalAppendBytes + 64;
inline constexpr uint64_t kMaxOpenInputBytes =
    (uint64_t{8} << 30) + kMaxSealedStateBytes + kMaxJournalBytes + (1 << 20);
inline constexpr uint64_t kMaxEvidenceInputBytes = 64;
inline constexpr uint64_t kMaxLeaseInputBytes = 4 << 10;
inline constexpr uint64_t kMaxInferInputBytes = uint64_t{1} << 32;

// The input limit of `call`; 0 for calls that take no input.
inline uint64_t MaxInputBytes(Call call) {
  switch (call) {
    case Call::kOpen:
      return kMaxOpenInputBytes;
    case Call::kEvidence:
      return kMaxEvidenceInputBytes;
    case Call::kInstallLease:
      return kMaxLeaseInputBytes;
    case Call::kInfer:
      return kMaxInferInputBytes;
    case Call::kUsageReport:
      return 0;
    case Call::kClose:
      return 0;
  }
  return 0;
}
inline bool IsKnownCall(uint32_t call) { return call >= 1 && call <= kMaxCall; }

struct Reply {
  std::vector<uint8_t> output;
  std::vector<uint8_t> sealed_state;  // a sealed_update (above); empty: unchanged
};

struct SealedUpdate {
  std::span<const uint8_t> state;
  uint64_t journal_keep = 0;
  std::span<const uint8_t> journal_append;
};
// Reads a sealed_update (views into `bytes`). Structure only: the core checks the contents.
// (Inline: the host reads it without linking the core.)
inline Result<SealedUpdate> SplitSealedUpdate(std::span<const uint8_t> bytes) {
  ByteReader r(bytes, "sealed update");
  SealedUpdate update;
  MLC_RETURN_IF_ERROR(r.BlobView(&update.state, kMaxSealedStateBytes, "state"));
  MLC_RETURN_IF_ERROR(r.Pod(&update.journal_keep, "journal keep"));
  MLC_RETURN_IF_ERROR(r.BlobView(&update.journal_append, kMaxJournalAppendBytes, "journal append"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  if (update.journal_keep > kMaxJournalBytes)
    return InvalidArgument("sealed update: journal length {} is over the limit {}",
                           update.journal_keep, kMaxJournalBytes);
  return update;
}

class Core;

class Boundary {
 public:
  // The platform outlives the boundary.
  explicit Boundary(Platform* platform);
  ~Boundary();
  // `input` must already be in memory the host cannot change while the call runs (the software
  // transport reads it from the socket into the core's own buffer); the in-process test channel
  // copies it first. Errors are the core's Status (code + message), safe to show the host.
  Status Call(Call call, std::span<const uint8_t> input, Reply* reply);

 private:
  std::unique_ptr<Core> core_;
};

}  // namespace mlcapsule::trusted
