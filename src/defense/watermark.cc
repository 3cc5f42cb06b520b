// DAWN watermarking: sample encoding, keyed selection and labels, sealed escrow records and the
// chance bound (watermark.h). Selection and labels run in the core on every query row, so they
// hash the row in place; escrow records are built only for the selected rows.
#include "defense/watermark.h"

#include <sodium.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "base/bytes.h"

namespace mlcapsule::defense {
namespace {

constexpr char kEscrowMagic[8] = {'M', 'L', 'C', 'E', 'S', 'C', 'R', 'W'};
constexpr size_t kDigestBytes = 32;

// Bytes per row of a batched input, and the row's element count.
int64_t RowElements(const engine::TensorView& input) {
  int64_t elements = 1;
  for (size_t d = 1; d < input.dims.size(); ++d) elements *= input.dims[d];
  return elements;
}
size_t RowBytes(const engine::TensorView& input) {
  return static_cast<size_t>(RowElements(input)) * engine::DTypeSize(input.dtype);
}
const uint8_t* RowData(const engine::TensorView& input, int64_t row) {
  return static_cast<const uint8_t*>(input.data) + static_cast<size_t>(row) * RowBytes(input);
}

// The header of one sample input: dtype, row rank, row dims. At most 2 + 8 * kMaxRank bytes.
struct InputHeader {
  uint8_t bytes[2 + 8 * engine::kMaxRank] = {};
  size_t size = 0;
};
InputHeader HeaderOf(engine::DType dtype, std::span<const int64_t> row_dims) {
  assert(row_dims.size() <= static_cast<size_t>(engine::kMaxRank));
  InputHeader header;
  header.bytes[0] = static_cast<uint8_t>(dtype);
  header.bytes[1] = static_cast<uint8_t>(row_dims.size());
  header.size = 2;
  for (int64_t dim : row_dims) {
    const uint64_t value = static_cast<uint64_t>(dim);
    std::memcpy(header.bytes + header.size, &value, sizeof(value));  // little-endian hosts only
    header.size += sizeof(value);
  }
  return header;
}

void CheckKey(const capsule::SecretBytes& key) {
  // A key of another size is a bug in the core (the capsule format fixes it), never input.
  if (key.size() != kWatermarkKeyBytes) std::abort();
}

// BLAKE2b-256 keyed with the watermark key over domain 0x00 sample, fed in pieces.
class SampleHash {
 public:
  SampleHash(const capsule::SecretBytes& key, std::string_view domain) {
    CheckKey(key);
    crypto_generichash_init(&state_, key.data(), key.size(), kDigestBytes);
    Update({reinterpret_cast<const uint8_t*>(domain.data()), domain.size()});
    const uint8_t separator = 0;
    Update({&separator, 1});
  }
  ~SampleHash() { sodium_memzero(&state_, sizeof(state_)); }
  void Update(std::span<const uint8_t> bytes) {
    crypto_generichash_update(&state_, bytes.data(), bytes.size());
  }
  void UpdateRow(std::span<const engine::TensorView> inputs, int64_t row) {
    for (const engine::TensorView& input : inputs) {
      assert(!input.dims.empty() && row >= 0 && row < input.dims[0]);
      const InputHeader header = HeaderOf(input.dtype, std::span(input.dims).subspan(1));
      Update({header.bytes, header.size});
      Update({RowData(input, row), RowBytes(input)});
    }
  }
  // The first 8 bytes of the digest as a little-endian u64.
  uint64_t Final() {
    uint8_t digest[kDigestBytes];
    crypto_generichash_final(&state_, digest, sizeof(digest));
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | digest[i];
    sodium_memzero(digest, sizeof(digest));
    return value;
  }

 private:
  crypto_generichash_state state_;
};

bool Selected(uint64_t value, double rate) {
  if (!(rate > 0)) return false;  // also NaN
  if (rate >= 1) return true;
  // rate * 2^64 is exact in binary floating point, and below 2^64 for rate < 1, so the
  // conversion cannot overflow; it truncates to floor(rate * 2^64). rate 0.5 gives 2^63 exactly.
  return value < static_cast<uint64_t>(std::ldexp(rate, 64));
}

uint32_t LabelFrom(uint64_t value, uint32_t true_label, uint32_t classes) {
  assert(classes >= 2 && true_label < classes);
  if (classes < 2) std::abort();  // the core validated C >= 2 when it opened the capsule
  const uint32_t j = static_cast<uint32_t>(value % (classes - 1));
  return j >= true_label ? j + 1 : j;
}

std::span<const int64_t> RowDimsOf(const engine::Tensor& tensor) {
  return std::span(tensor.dims).subspan(tensor.dims.empty() ? 0 : 1);
}

}  // namespace

// ---- sample ----

size_t SampleByteCount(std::span<const engine::TensorView> inputs) {
  size_t size = 0;
  for (const engine::TensorView& input : inputs)
    size += 2 + 8 * (input.dims.size() - 1) + RowBytes(input);
  return size;
}

void SampleBytes(std::span<const engine::TensorView> inputs, int64_t row,
                 std::vector<uint8_t>* out) {
  out->resize(SampleByteCount(inputs));
  uint8_t* cursor = out->data();
  for (const engine::TensorView& input : inputs) {
    assert(!input.dims.empty() && row >= 0 && row < input.dims[0]);
    const InputHeader header = HeaderOf(input.dtype, std::span(input.dims).subspan(1));
    std::memcpy(cursor, header.bytes, header.size);
    cursor += header.size;
    const size_t row_bytes = RowBytes(input);
    if (row_bytes > 0) std::memcpy(cursor, RowData(input, row), row_bytes);
    cursor += row_bytes;
  }
  assert(cursor == out->data() + out->size());
}

// ---- selection and label ----

bool WatermarkSelects(const capsule::SecretBytes& key, double rate,
                      std::span<const uint8_t> sample) {
  SampleHash hash(key, kWatermarkSelectDomain);
  hash.Update(sample);
  return Selected(hash.Final(), rate);
}

bool WatermarkSelects(const capsule::SecretBytes& key, double rate,
                      std::span<const engine::TensorView> inputs, int64_t row) {
  SampleHash hash(key, kWatermarkSelectDomain);
  hash.UpdateRow(inputs, row);
  return Selected(hash.Final(), rate);
}

uint32_t WatermarkLabel(const capsule::SecretBytes& key, std::span<const uint8_t> sample,
                        uint32_t true_label, uint32_t classes) {
  SampleHash hash(key, kWatermarkLabelDomain);
  hash.Update(sample);
  return LabelFrom(hash.Final(), true_label, classes);
}

uint32_t WatermarkLabel(const capsule::SecretBytes& key, std::span<const engine::TensorView> inputs,
                        int64_t row, uint32_t true_label, uint32_t classes) {
  SampleHash hash(key, kWatermarkLabelDomain);
  hash.UpdateRow(inputs, row);
  return LabelFrom(hash.Final(), true_label, classes);
}

// ---- escrow ----

EscrowRecord EscrowRecordFromRow(const capsule::CapsuleId& capsule_id, uint64_t query_count,
                                 uint32_t classes, uint32_t label,
                                 std::span<const engine::TensorView> inputs, int64_t row) {
  EscrowRecord record;
  record.capsule_id = capsule_id;
  record.query_count = query_count;
  record.classes = classes;
  record.label = label;
  record.inputs.reserve(inputs.size());
  for (const engine::TensorView& input : inputs) {
    assert(!input.dims.empty() && row >= 0 && row < input.dims[0]);
    engine::Tensor tensor;
    tensor.dtype = input.dtype;
    tensor.dims = input.dims;
    tensor.dims[0] = 1;
    const uint8_t* data = RowData(input, row);
    tensor.bytes.assign(data, data + RowBytes(input));
    record.inputs.push_back(std::move(tensor));
  }
  return record;
}

uint64_t SealedEscrowRecordBytes(std::span<const engine::TensorView> inputs) {
  // magic, version, capsule id, query count, classes, label, input count; per input dtype, rank
  // and every dim (the batch dim too).
  uint64_t size = 8 + 4 + 16 + 8 + 4 + 4 + 2;
  for (const engine::TensorView& input : inputs)
    size += 2 + 8 * input.dims.size() + RowBytes(input);
  return size + capsule::kSealedBoxOverhead;
}

void EscrowSampleBytes(const EscrowRecord& record, std::vector<uint8_t>* out) {
  size_t size = 0;
  for (const engine::Tensor& input : record.inputs)
    size += 2 + 8 * RowDimsOf(input).size() + input.bytes.size();
  out->resize(size);
  uint8_t* cursor = out->data();
  for (const engine::Tensor& input : record.inputs) {
    const InputHeader header = HeaderOf(input.dtype, RowDimsOf(input));
    std::memcpy(cursor, header.bytes, header.size);
    cursor += header.size;
    if (!input.bytes.empty()) std::memcpy(cursor, input.bytes.data(), input.bytes.size());
    cursor += input.bytes.size();
  }
}

std::vector<uint8_t> SerializeEscrowRecord(const EscrowRecord& record) {
  ByteWriter w;
  w.Bytes(kEscrowMagic, sizeof(kEscrowMagic));
  w.Pod<uint32_t>(kEscrowRecordVersion);
  w.Bytes(record.capsule_id);
  w.Pod<uint64_t>(record.query_count);
  w.Pod<uint32_t>(record.classes);
  w.Pod<uint32_t>(record.label);
  w.Pod<uint16_t>(static_cast<uint16_t>(record.inputs.size()));
  for (const engine::Tensor& input : record.inputs) {
    w.Pod<uint8_t>(static_cast<uint8_t>(input.dtype));
    w.Pod<uint8_t>(static_cast<uint8_t>(input.dims.size()));
    for (int64_t dim : input.dims) w.Pod<uint64_t>(static_cast<uint64_t>(dim));
    w.Bytes(input.bytes);
  }
  std::span<const uint8_t> bytes = w.span();
  return {bytes.begin(), bytes.end()};
}

Result<EscrowRecord> ParseEscrowRecord(std::span<const uint8_t> bytes) {
  if (bytes.size() > kMaxEscrowRecordBytes)
    return InvalidArgument("escrow record is {} bytes, over the limit {}", bytes.size(),
                           kMaxEscrowRecordBytes);
  ByteReader r(bytes, "escrow record");
  char magic[8] = {};
  MLC_RETURN_IF_ERROR(r.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kEscrowMagic, sizeof(magic)) != 0)
    return InvalidArgument("escrow record has bad magic: the first 8 bytes are not \"MLCESCRW\"");
  uint32_t version = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&version, "version"));
  if (version != kEscrowRecordVersion)
    return Unsupported("escrow record version {} is not supported (this build reads version {})",
                       version, kEscrowRecordVersion);
  EscrowRecord record;
  MLC_RETURN_IF_ERROR(r.Bytes(record.capsule_id.data(), record.capsule_id.size(), "capsule id"));
  MLC_RETURN_IF_ERROR(r.Pod(&record.query_count, "query count"));
  MLC_RETURN_IF_ERROR(r.Pod(&record.classes, "classes"));
  MLC_RETURN_IF_ERROR(r.Pod(&record.label, "label"));
  if (record.classes < 2)
    return InvalidArgument("escrow record: classes {} is below 2", record.classes);
  if (record.label >= record.classes)
    return InvalidArgument("escrow record: label {} is not below classes {}", record.label,
                           record.classes);
  uint16_t count = 0;
  // Each input is at least dtype, rank and one dim: 10 bytes.
  MLC_RETURN_IF_ERROR(r.Count(&count, kMaxEscrowInputs, 10, "input count"));
  if (count == 0) return InvalidArgument("escrow record has no inputs");
  record.inputs.resize(count);
  for (uint16_t i = 0; i < count; ++i) {
    engine::Tensor& input = record.inputs[i];
    uint8_t dtype = 0, rank = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&dtype, "input dtype"));
    if (!engine::IsKnownDType(dtype))
      return InvalidArgument(
          "escrow record: input {} has element type {} (expected 1 float32 "
          "or 7 int64)",
          i, dtype);
    input.dtype = static_cast<engine::DType>(dtype);
    MLC_RETURN_IF_ERROR(r.Pod(&rank, "input rank"));
    if (rank < 1 || rank > engine::kMaxRank)
      return InvalidArgument("escrow record: input {} has rank {}, out of range 1..{}", i, rank,
                             engine::kMaxRank);
    if (static_cast<size_t>(rank) * 8 > r.remaining())
      return DataLoss("escrow record truncated reading the dims of input {}", i);
    input.dims.resize(rank);
    for (int64_t& dim : input.dims) {
      uint64_t value = 0;
      MLC_RETURN_IF_ERROR(r.Pod(&value, "input dim"));
      if (value > static_cast<uint64_t>(engine::kMaxTensorElements))
        return InvalidArgument("escrow record: input {} has a dim {}, over the limit {}", i, value,
                               engine::kMaxTensorElements);
      dim = static_cast<int64_t>(value);
    }
    if (input.dims[0] != 1)
      return InvalidArgument("escrow record: input {} has batch dim {}, expected 1", i,
                             input.dims[0]);
    MLC_ASSIGN_OR_RETURN(int64_t elements,
                         engine::CheckedNumElements(input.dims, "escrow record input"));
    const uint64_t data_bytes = static_cast<uint64_t>(elements) * engine::DTypeSize(input.dtype);
    if (data_bytes > r.remaining())
      return DataLoss("escrow record truncated: input {} needs {} data bytes, {} left", i,
                      data_bytes, r.remaining());
    std::span<const uint8_t> data;
    MLC_RETURN_IF_ERROR(r.View(static_cast<size_t>(data_bytes), &data, "input data"));
    input.bytes.assign(data.begin(), data.end());
  }
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return record;
}

Result<std::vector<uint8_t>> SealEscrowRecord(const capsule::PublicKey& escrow_public,
                                              const EscrowRecord& record) {
  std::vector<uint8_t> plain = SerializeEscrowRecord(record);
  // Checking the serialization with the parser keeps the writer and the grammar in step.
  Result<EscrowRecord> parsed = ParseEscrowRecord(plain);
  if (!parsed.ok()) {
    sodium_memzero(plain.data(), plain.size());
    return parsed.status();
  }
  std::vector<uint8_t> sealed = capsule::SealTo(escrow_public, plain);
  sodium_memzero(plain.data(), plain.size());
  // SealTo zeroes its output for a key no one can hold (a low-order point); a real sealed box
  // starts with a fresh ephemeral public key, never all zeros.
  bool all_zero = true;
  for (size_t i = 0; i < capsule::kSealedBoxOverhead && i < sealed.size(); ++i)
    all_zero = all_zero && sealed[i] == 0;
  if (all_zero)
    return InvalidArgument("escrow key {} is not a usable X25519 public key",
                           capsule::ToHex(escrow_public));
  return sealed;
}

Result<EscrowRecord> OpenEscrowRecord(const capsule::BoxKeyPair& escrow,
                                      std::span<const uint8_t> sealed) {
  if (sealed.size() > kMaxSealedEscrowRecordBytes)
    return InvalidArgument("sealed escrow record is {} bytes, over the limit {}", sealed.size(),
                           kMaxSealedEscrowRecordBytes);
  if (sealed.size() <= capsule::kSealedBoxOverhead)
    return InvalidArgument("sealed escrow record is {} bytes, too short for a sealed box",
                           sealed.size());
  Result<capsule::SecretBytes> plain = capsule::OpenSealed(escrow, sealed);
  if (!plain.ok())
    return PermissionDenied(
        "escrow record does not open with escrow key {}: it was sealed to another key or "
        "modified",
        capsule::ToHex(std::span(escrow.public_key).first(4)) + "..");
  return ParseEscrowRecord(plain->span());
}

// ---- verification ----

double Log2ChanceProbability(uint64_t n, uint64_t matches, uint32_t classes) {
  if (matches == 0 || classes <= 2) return 0.0;
  if (matches > n) return -std::numeric_limits<double>::infinity();
  const double trials = static_cast<double>(n);
  const double log_p = -std::log(static_cast<double>(classes - 1));
  const double log_q = std::log1p(-1.0 / static_cast<double>(classes - 1));
  const double p = 1.0 / static_cast<double>(classes - 1);
  // ln of the term i: ln C(n, i) + i ln p + (n - i) ln q.
  const double log_n_factorial = std::lgamma(trials + 1);
  auto term = [&](double i) {
    return log_n_factorial - std::lgamma(i + 1) - std::lgamma(trials - i + 1) + i * log_p +
           (trials - i) * log_q;
  };
  const double mode = std::floor((trials + 1) * p);
  const double sigma = std::sqrt(trials * p * (1 - p));
  // Terms farther than 40 standard deviations below the mode are under e^-800 of the largest:
  // leaving them out changes nothing representable.
  const double lowest = std::max(0.0, std::floor(mode - 40 * sigma - 2));
  const auto add = [](double total, double t) {  // ln(e^total + e^t)
    return t > total ? t + std::log1p(std::exp(total - t))
                     : total + std::log1p(std::exp(t - total));
  };
  const double k = static_cast<double>(matches);
  if (k <= mode) {
    // The tail holds the mode: P = 1 - P[X <= k - 1], whose small lower tail is summed downwards
    // (lgamma's rounding then stays relative to that small sum, not to P).
    double lower = -std::numeric_limits<double>::infinity();
    for (double i = k - 1; i >= lowest; i -= 1) {
      const double t = term(i);
      lower = add(lower, t);
      // Below the mode the ratio of a term to the next higher, r = i q / ((n - i + 1) p), only
      // falls as i does, so everything below term i sums to at most t * r / (1 - r).
      const double ratio = i * (1 - p) / ((trials - i + 1) * p);
      if (i == 0 || (ratio < 1 && t + std::log(ratio / (1 - ratio)) < lower - 50)) break;
    }
    return std::min(0.0, std::log1p(-std::exp(lower)) / std::log(2.0));
  }
  double total = -std::numeric_limits<double>::infinity();  // ln of the sum so far
  for (double i = k; i <= trials; i += 1) {
    const double t = term(i);
    total = add(total, t);
    // Past the mode the ratio of consecutive terms, r = (n - i) p / ((i + 1) q), only falls, so
    // everything after term i sums to at most t * r / (1 - r).
    const double ratio = (trials - i) * p / ((i + 1) * (1 - p));
    if (ratio < 1 && t + std::log(ratio / (1 - ratio)) < total - 50) break;
  }
  return std::min(0.0, total / std::log(2.0));
}

}  // namespace mlcapsule::defense
