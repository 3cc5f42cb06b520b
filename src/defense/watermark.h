// DAWN dynamic watermarking (Szyller et al., "DAWN: Dynamic Adversarial Watermarking of Neural
// Networks", ACM MM 2021): the trusted core answers a small, secret, key-selected fraction of
// queries with a wrong label, and escrows those inputs to the provider. A model trained on the
// core's answers (an extraction) learns the wrong labels; a model that was not agrees with them
// only by chance, and Log2ChanceProbability bounds that chance. docs/defenses.md ("DAWN
// watermarking and escrow") explains the scheme and the bound.
//
// Trust: the watermark key is a capsule secret (32 bytes, inside the encrypted capsule); samples,
// labels and class counts passed here come from the core's own validated run. Sealed escrow
// records are untrusted input to OpenEscrowRecord, which bounds everything before it allocates.
//
//   // per query row, inside the core (no allocation):
//   if (WatermarkSelects(key, policy.rate, inputs, row)) {
//     uint32_t label = WatermarkLabel(key, inputs, row, true_label, classes);
//     EscrowRecord record = EscrowRecordFromRow(capsule_id, count, classes, label, inputs, row);
//     MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed, SealEscrowRecord(escrow_key, record));
//   }
//   // provider side, `mlcapsule watermark verify`:
//   MLC_ASSIGN_OR_RETURN(EscrowRecord record, OpenEscrowRecord(escrow_pair, sealed));
//   double log2_chance = Log2ChanceProbability(samples, matches, record.classes);
//
// The sample of a query row (what is hashed, escrowed and de-duplicated) is, for each model input
// in the model's order:
//   sample_input := dtype:u8 (1 float32, 7 int64) rank:u8 (the row's rank: input rank - 1)
//                   dim:u64{rank} (the input's dims without dim 0, the batch) data:u8[row bytes]
// Selection: BLAKE2b-256 keyed with the watermark key over "mlcapsule/v1/watermark/select" 0x00
// sample; the row is selected iff its first 8 bytes, as a little-endian u64, are below
// floor(rate * 2^64) (exact for every rate >= 2^-11; below that the selected fraction is rate
// rounded down to a multiple of 2^-64). Label: BLAKE2b-256 keyed likewise over
// "mlcapsule/v1/watermark/label" 0x00 sample gives v (first 8 bytes, u64 LE); j = v mod (C - 1)
// picks among the C - 1 classes other than the true label, in increasing order. The modulo bias
// is below (C - 2) / 2^64 per label (under 2^-32 for any u32 C), far below anything a test of
// at most 10^6 samples can see.
//
// Escrow record (plaintext; what crypto_box_seal encrypts to the policy's escrow key):
//   escrow_record := magic:"MLCESCRW" version:u32(=1) capsule_id:u8[16]
//                    query_count:u64          ; the core's query count when it answered
//                    classes:u32 (>= 2) label:u32 (< classes)   ; the watermark label returned
//                    input_count:u16 (1..kMaxEscrowInputs) input{input_count}
//   input         := dtype:u8 (1 | 7) rank:u8 (1..8) dim:u64{rank} (dim[0] = 1)
//                    data:u8[product(dims) * dtype size]
//   sealed        := crypto_box_seal(escrow_public_key, escrow_record)  ; 48 bytes more,
//                                                                        ; <= 1 MiB in all
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "engine/tensor.h"

namespace mlcapsule::defense {

inline constexpr size_t kWatermarkKeyBytes = 32;
inline constexpr std::string_view kWatermarkSelectDomain = "mlcapsule/v1/watermark/select";
inline constexpr std::string_view kWatermarkLabelDomain = "mlcapsule/v1/watermark/label";

inline constexpr uint32_t kEscrowRecordVersion = 1;
inline constexpr size_t kMaxEscrowInputs = 256;
// A sealed record, overhead included; also the limit of one record in a usage report.
inline constexpr size_t kMaxSealedEscrowRecordBytes = capsule::kMaxEscrowRecordBytes;
inline constexpr size_t kMaxEscrowRecordBytes =
    kMaxSealedEscrowRecordBytes - capsule::kSealedBoxOverhead;

// ---- the sample of one query row ----

// Writes the sample of row `row` of `inputs` (every input batched along dim 0, rank >= 1, row <
// dims[0]: what the plan loader and the session already validated) to `out`, replacing its
// contents. Reusing `out` across calls allocates only when a sample outgrows its capacity.
void SampleBytes(std::span<const engine::TensorView> inputs, int64_t row,
                 std::vector<uint8_t>* out);
// The size SampleBytes writes for one row of `inputs`.
size_t SampleByteCount(std::span<const engine::TensorView> inputs);

// ---- selection and label ----

// Whether the watermark selects this sample (see the header comment). `key` must be
// kWatermarkKeyBytes long (aborts otherwise: a core bug, not input). rate <= 0 (or NaN) selects
// nothing, rate >= 1 everything.
bool WatermarkSelects(const capsule::SecretBytes& key, double rate,
                      std::span<const uint8_t> sample);
// The same decision, hashing row `row` of `inputs` in place (no copy, no allocation).
bool WatermarkSelects(const capsule::SecretBytes& key, double rate,
                      std::span<const engine::TensorView> inputs, int64_t row);

// The watermark label of a selected sample: uniform among the `classes` - 1 classes other than
// `true_label` (the model's own top-1). Requires classes >= 2 and true_label < classes.
uint32_t WatermarkLabel(const capsule::SecretBytes& key, std::span<const uint8_t> sample,
                        uint32_t true_label, uint32_t classes);
uint32_t WatermarkLabel(const capsule::SecretBytes& key, std::span<const engine::TensorView> inputs,
                        int64_t row, uint32_t true_label, uint32_t classes);

// ---- escrow ----

struct EscrowRecord {
  capsule::CapsuleId capsule_id{};
  uint64_t query_count = 0;            // the core's query count when it answered this sample
  uint32_t classes = 0;                // C of the model output the watermark label is for
  uint32_t label = 0;                  // the watermark label the core returned
  std::vector<engine::Tensor> inputs;  // the exact sample, in model input order, batch dim 1
};

// Copies row `row` of `inputs` into a record (dims [1, ...]).
EscrowRecord EscrowRecordFromRow(const capsule::CapsuleId& capsule_id, uint64_t query_count,
                                 uint32_t classes, uint32_t label,
                                 std::span<const engine::TensorView> inputs, int64_t row);
// The sealed size of a record of one row of `inputs` (to budget escrow before copying anything).
uint64_t SealedEscrowRecordBytes(std::span<const engine::TensorView> inputs);
// The sample bytes (as SampleBytes) of the record's inputs: what the core hashed.
void EscrowSampleBytes(const EscrowRecord& record, std::vector<uint8_t>* out);

// The plaintext grammar above. Serialize expects a record that Parse would accept.
std::vector<uint8_t> SerializeEscrowRecord(const EscrowRecord& record);
Result<EscrowRecord> ParseEscrowRecord(std::span<const uint8_t> bytes);

// crypto_box_seal of the serialized record to the provider's X25519 escrow key. Errors when the
// record is malformed or larger than kMaxEscrowRecordBytes, or the key is not a usable X25519
// public key; the core then counts the sample as dropped.
Result<std::vector<uint8_t>> SealEscrowRecord(const capsule::PublicKey& escrow_public,
                                              const EscrowRecord& record);
// Opens and parses a sealed record: PermissionDenied when it is not sealed to this key (or was
// modified), InvalidArgument/DataLoss when the plaintext breaks the grammar or its limits.
[[nodiscard]] Result<EscrowRecord> OpenEscrowRecord(const capsule::BoxKeyPair& escrow,
                                                    std::span<const uint8_t> sealed);

// ---- verification ----

// log2 P[Binomial(n, p0) >= matches], p0 = 1 / (classes - 1): the probability that a model not
// trained on the core's answers agrees with at least `matches` of `n` distinct watermarked
// samples. 0 when matches == 0 or classes <= 2 (a single wrong label carries no evidence);
// -infinity when matches > n. Summed in log space (lgamma, log-sum-exp), skipping terms more
// than 40 standard deviations below the mode and the negligible rest past it; when `matches` is
// at or below the mode it sums the small lower tail and returns log1p of its complement, so
// results near 0 stay exact. Agrees with exact sums to 1e-9 for small n; finite and monotone for
// n of 10^6 and beyond.
double Log2ChanceProbability(uint64_t n, uint64_t matches, uint32_t classes);

}  // namespace mlcapsule::defense
