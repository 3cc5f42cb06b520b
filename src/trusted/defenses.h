// The defenses a capsule's policy turns on, as the core runs them on every query
// (docs/defenses.md). The client cannot switch any of them off: the policy is signed inside the
// capsule, and their state is sealed with the core's.
//
//   before a query is counted   Admit: PRADA's block, rate limits (refusals are not counted)
//   after the model             Apply: per row, PRADA observes the input and its predicted
//                               class; DAWN may swap the row's top score with a keyed wrong label
//                               (and escrow the input); the output policy shapes the answer;
//                               MemGuard perturbs the confidence vector
//
// Alarms and notable events become alerts (the core puts them in the next usage report). State:
//   defense_state := rate:(second:i64 second_count:u64 day:i64 day_count:u64 refused:u64
//                          alerted_day:i64)
//                    prada_present:u8 [prada_scalars:blob32 journal_bytes:u64
//                          journal_entries:u64 journal_digest:u8[32] alarm_reported:u8
//                          cap_reported:u8 blocked:u8]
//                    watermarked:u64 escrowed:u64 escrow_dropped:u64 memguard_applied:u64
//                    escrow_count:u16 (at_count:u64 record:blob32){escrow_count}
//                    pending_count:u16 (at_count:u64 record:blob32){pending_count}
// PRADA's stored queries live in the journal (boundary.h), in records
//   journal_record := first_entry:u64 entry_count:u32 length:u32 aead:u8[length]
//   (XChaCha20-Poly1305 under the platform sealing key, AD = "MLCJRNL1" capsule_id first_entry
//    entry_count; plaintext = Prada::WriteEntries); journal_digest chains BLAKE2b-256 over the
//    records, so the state commits to the exact journal prefix it continues from.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "defense/memguard.h"
#include "defense/prada.h"
#include "defense/rng.h"
#include "engine/session.h"
#include "engine/tensor.h"
#include "trusted/platform.h"

namespace mlcapsule::trusted {

class Defenses {
 public:
  // Open time: checks what the policy's defenses need from the model (PRADA, the watermark and
  // MemGuard read a float32 batch-leading first input and [N, C] scores) and starts empty.
  static Result<std::unique_ptr<Defenses>> Create(const capsule::Policy& policy,
                                                  const capsule::CapsuleHeader& header,
                                                  int selected_output, Platform* platform);

  // After the payload is decrypted: the watermark key and MemGuard's classifier (the membership
  // plan; required when the policy enables MemGuard).
  Status Attach(std::span<const uint8_t> watermark_key, std::span<const uint8_t> membership_plan);

  // Before a query is counted. Refusals (blocked, over a rate) change only refusal counters.
  Status Admit(std::span<const engine::TensorView> inputs, int64_t batch, int64_t now,
               uint64_t at_count, std::vector<capsule::Alert>* alerts);
  // After the model ran: `scores` is the policy's selected output (modified in place by the
  // watermark); writes the client's tensors. `first_count` is the total count before this query.
  Status Apply(std::span<const engine::TensorView> inputs, engine::Tensor* scores,
               uint64_t first_count, std::vector<engine::Tensor>* client_outputs,
               std::vector<capsule::Alert>* alerts);

  // Sealing: the state above, and the journal records made since the last seal.
  void WriteState(ByteWriter* out) const;
  // The journal's committed length before this seal, and the bytes to append (may be empty).
  Status MakeJournalAppend(const capsule::CapsuleId& capsule_id,
                           const capsule::SecretBytes& sealing_key, uint64_t* keep,
                           std::vector<uint8_t>* append);
  // Bytes of PRADA entries stored since the last seal (the core seals early past a limit).
  uint64_t pending_journal_bytes() const;
  // Restore: the state, then the journal it commits to. A journal that is missing or does not
  // match is not fatal: PRADA restarts from zero and an alert says so (the provider sees it).
  Status ReadState(ByteReader& in);
  void RestoreJournal(std::span<const uint8_t> journal, const capsule::CapsuleId& capsule_id,
                      const capsule::SecretBytes& sealing_key, uint64_t at_count,
                      std::vector<capsule::Alert>* alerts);

  // For the usage report: escrowed records (cumulative until acknowledged) and the summary.
  std::vector<std::vector<uint8_t>> EscrowForReport() const;
  capsule::DefenseSummary Summary() const;
  // A lease continued from `count`: records reported up to it are dropped.
  void Acknowledge(uint64_t count);

 private:
  struct Held {
    uint64_t at_count = 0;        // the query count when it was made (pending) or released (escrow)
    std::vector<uint8_t> record;  // sealed to the provider's escrow key
  };

  Status AdmitRate(int64_t now, uint64_t batch, uint64_t at_count,
                   std::vector<capsule::Alert>* alerts);
  void Escrow(Held held, uint64_t released_at);
  uint64_t HeldBytes(const std::vector<Held>& list) const;

  static constexpr uint64_t kMaxSealedDefenseBytes = 1 << 20;

  capsule::Policy policy_;
  capsule::CapsuleId capsule_id_{};
  defense::PradaConfig prada_config_;
  std::vector<uint8_t> prada_scalars_;  // read with the state, applied after the journal
  int classes_ = 0;
  int64_t row_elements_ = 0;  // elements of one row of the first input (PRADA's vector)
  bool needs_rows_ = false;   // PRADA, watermark or MemGuard on
  bool attached_ = false;
  capsule::SecretBytes watermark_key_;
  capsule::PublicKey escrow_key_{};
  std::unique_ptr<engine::Session> membership_;
  std::unique_ptr<defense::MemGuard> memguard_;
  std::unique_ptr<defense::Rng> rng_;
  std::unique_ptr<defense::Prada> prada_;

  // Sealed state.
  int64_t second_ = 0, day_ = -1, alerted_day_ = -1;
  uint64_t second_count_ = 0, day_count_ = 0, refused_ = 0;
  uint64_t journal_bytes_ = 0, journal_entries_ = 0;
  capsule::Digest journal_digest_{};
  bool alarm_reported_ = false, cap_reported_ = false, blocked_ = false;
  uint64_t watermarked_ = 0, escrowed_ = 0, escrow_dropped_ = 0, memguard_applied_ = 0;
  std::vector<Held> escrow_;   // leaves in the next usage report
  std::vector<Held> pending_;  // after_alarm: held inside until PRADA alarms
};

}  // namespace mlcapsule::trusted
