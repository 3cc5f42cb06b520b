// The capsule container (grammar in capsule_file.h and docs/capsule-format.md). Parsing trusts
// nothing: every count is bounded before it is used and the sizes must add up to the file size
// exactly. Packing and decryption each touch the plan in one pass, chunk by chunk, hashing as
// they go, so a large plan is neither copied nor read twice.
#include "capsule/capsule_file.h"

#include "base/sensitive_memory.h"

#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <system_error>
#include <thread>

#include "base/bytes.h"
#include "engine/tensor.h"

namespace mlcapsule::capsule {
namespace {

constexpr size_t kMagicBytes = sizeof(kCapsuleMagic);
constexpr size_t kPreambleBytes = kMagicBytes + 4 + 4;  // magic, version, header_bytes
constexpr int64_t kMaxDimValue = int64_t{1} << 31;
constexpr size_t kMaxRank = 8;

// Wipes a secretstream state on every path out of the function that owns it.
class StreamState {
 public:
  StreamState() = default;
  StreamState(const StreamState&) = delete;
  StreamState& operator=(const StreamState&) = delete;
  ~StreamState() { sodium_memzero(&state_, sizeof(state_)); }
  crypto_secretstream_xchacha20poly1305_state* get() { return &state_; }

 private:
  crypto_secretstream_xchacha20poly1305_state state_{};
};

// BLAKE2b-256 computed incrementally (the plan digest, over one chunk at a time).
class Hasher32 {
 public:
  Hasher32() { crypto_generichash_blake2b_init(&state_, nullptr, 0, Digest().size()); }
  void Update(std::span<const uint8_t> bytes) {
    crypto_generichash_blake2b_update(&state_, bytes.data(), bytes.size());
  }
  Digest Final() {
    Digest digest{};
    crypto_generichash_blake2b_final(&state_, digest.data(), digest.size());
    return digest;
  }

 private:
  crypto_generichash_blake2b_state state_;
};

uint64_t ChunkCount(uint64_t plan_bytes, uint32_t chunk_bytes) {
  return (plan_bytes + chunk_bytes - 1) / chunk_bytes;
}

// Plain UTF-8 well-formedness (no overlongs, no surrogates, <= U+10FFFF).
bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<uint8_t>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i - 1 < n) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

Status CheckName(std::string_view value, uint64_t limit, std::string_view field) {
  if (value.size() > limit)
    return InvalidArgument("capsule header: {} is {} bytes, over the limit {}", field, value.size(),
                           limit);
  if (!IsUtf8(value)) return InvalidArgument("capsule header: {} is not valid UTF-8", field);
  return Status::Ok();
}

Status CheckIo(const IoTensor& io, std::string_view field) {
  MLC_RETURN_IF_ERROR(CheckName(io.name, kMaxModelNameBytes, fmt::format("{} name", field)));
  if (!engine::IsKnownDType(io.dtype))
    return InvalidArgument(
        "capsule header: {} '{}' has dtype {}, expected 1 (float32) or "
        "7 (int64)",
        field, io.name, io.dtype);
  if (io.dims.size() > kMaxRank)
    return InvalidArgument("capsule header: {} '{}' has rank {}, over the limit {}", field, io.name,
                           io.dims.size(), kMaxRank);
  for (const IoDim& dim : io.dims) {
    if (dim.value < 0 || dim.value > kMaxDimValue)
      return InvalidArgument("capsule header: {} '{}' has dimension {}, outside 0..{}", field,
                             io.name, dim.value, kMaxDimValue);
  }
  return Status::Ok();
}

Status CheckIoList(const std::vector<IoTensor>& list, std::string_view field) {
  if (list.empty() || list.size() > kMaxIoTensors)
    return InvalidArgument("capsule header: {} count {} is outside 1..{}", field, list.size(),
                           kMaxIoTensors);
  for (size_t i = 0; i < list.size(); ++i)
    MLC_RETURN_IF_ERROR(CheckIo(list[i], fmt::format("{} {}", field, i)));
  return Status::Ok();
}

// The fields that size the ciphertext.
Status CheckStreamLayout(const CapsuleHeader& header) {
  if (header.plan_bytes < 1 || header.plan_bytes > kMaxPlanBytes)
    return InvalidArgument("capsule header: plan size {} bytes is outside 1..{}", header.plan_bytes,
                           kMaxPlanBytes);
  if (header.chunk_bytes < kMinChunkBytes || header.chunk_bytes > kMaxChunkBytes)
    return InvalidArgument("capsule header: chunk size {} bytes is outside {}..{}",
                           header.chunk_bytes, kMinChunkBytes, kMaxChunkBytes);
  uint64_t expected = ChunkCount(header.plan_bytes, header.chunk_bytes);
  if (header.chunk_count != expected)
    return InvalidArgument(
        "capsule header: chunk count {} does not match plan size {} in chunks of {} (expected {})",
        header.chunk_count, header.plan_bytes, header.chunk_bytes, expected);
  return Status::Ok();
}

// Every header limit, shared by the packer (bad input) and the parser (hostile bytes).
Status CheckHeader(const CapsuleHeader& header) {
  if (header.lease_signers.empty() || header.lease_signers.size() > kMaxLeaseSigners)
    return InvalidArgument("capsule header: lease signer count {} is outside 1..{}",
                           header.lease_signers.size(), kMaxLeaseSigners);
  MLC_RETURN_IF_ERROR(CheckName(header.model_name, kMaxModelNameBytes, "model name"));
  MLC_RETURN_IF_ERROR(CheckName(header.policy_json, kMaxPolicyBytes, "policy"));
  MLC_RETURN_IF_ERROR(CheckIoList(header.inputs, "input"));
  MLC_RETURN_IF_ERROR(CheckIoList(header.outputs, "output"));
  return CheckStreamLayout(header);
}

// magic .. end of header; the header has been checked.
std::string SerializeHeaderRegion(const CapsuleHeader& header) {
  ByteWriter body;
  body.Bytes(header.capsule_id);
  body.Pod<int64_t>(header.created_at);
  body.Bytes(header.provider_key);
  body.Pod<uint8_t>(static_cast<uint8_t>(header.lease_signers.size()));
  for (const PublicKey& key : header.lease_signers) body.Bytes(key);
  body.Str(header.model_name);
  body.Str(header.policy_json);
  WriteIoList(header.inputs, &body);
  WriteIoList(header.outputs, &body);
  body.Bytes(header.plan_digest);
  body.Pod<uint64_t>(header.plan_bytes);
  body.Pod<uint32_t>(header.chunk_bytes);
  body.Pod<uint64_t>(header.chunk_count);
  body.Bytes(header.stream_header);

  ByteWriter out;
  out.Bytes(kCapsuleMagic, kMagicBytes);
  out.Pod<uint32_t>(kCapsuleVersion);
  out.Pod<uint32_t>(static_cast<uint32_t>(body.size()));
  out.Bytes(body.span());
  return std::move(out.out());
}

Status ReadHeader(std::span<const uint8_t> bytes, CapsuleHeader* header) {
  ByteReader r(bytes, "capsule header");
  MLC_RETURN_IF_ERROR(r.Bytes(header->capsule_id.data(), header->capsule_id.size(), "capsule id"));
  MLC_RETURN_IF_ERROR(r.Pod(&header->created_at, "created_at"));
  MLC_RETURN_IF_ERROR(
      r.Bytes(header->provider_key.data(), header->provider_key.size(), "provider key"));
  uint8_t signers = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&signers, "lease signer count"));
  if (signers < 1 || signers > kMaxLeaseSigners)
    return InvalidArgument("capsule header: lease signer count {} is outside 1..{}", signers,
                           kMaxLeaseSigners);
  header->lease_signers.resize(signers);
  for (PublicKey& key : header->lease_signers)
    MLC_RETURN_IF_ERROR(r.Bytes(key.data(), key.size(), "lease signer key"));
  MLC_RETURN_IF_ERROR(r.Str(&header->model_name, kMaxModelNameBytes, "model name"));
  MLC_RETURN_IF_ERROR(r.Str(&header->policy_json, kMaxPolicyBytes, "policy"));
  MLC_RETURN_IF_ERROR(ReadIoList(r, "capsule header", "input", &header->inputs));
  MLC_RETURN_IF_ERROR(ReadIoList(r, "capsule header", "output", &header->outputs));
  MLC_RETURN_IF_ERROR(
      r.Bytes(header->plan_digest.data(), header->plan_digest.size(), "plan digest"));
  MLC_RETURN_IF_ERROR(r.Pod(&header->plan_bytes, "plan size"));
  MLC_RETURN_IF_ERROR(r.Pod(&header->chunk_bytes, "chunk size"));
  MLC_RETURN_IF_ERROR(r.Pod(&header->chunk_count, "chunk count"));
  MLC_RETURN_IF_ERROR(
      r.Bytes(header->stream_header.data(), header->stream_header.size(), "stream header"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return CheckHeader(*header);
}

}  // namespace

std::string CapsuleIdHex(const CapsuleId& id) { return ToHex(id); }

namespace {

size_t AlignUp64(size_t n) { return (n + 63) / 64 * 64; }

std::vector<uint8_t> BuildPayload(std::span<const uint8_t> plan,
                                  std::span<const uint8_t> membership) {
  const size_t plan_offset = kPayloadHeaderBytes;
  const size_t membership_offset = AlignUp64(plan_offset + plan.size());
  std::vector<uint8_t> out(membership.empty() ? plan_offset + plan.size()
                                              : membership_offset + membership.size());
  ByteWriter head;
  head.Bytes(kPayloadMagic, sizeof(kPayloadMagic));
  head.Pod<uint64_t>(plan.size());
  head.Pod<uint64_t>(membership.size());
  std::array<uint8_t, kWatermarkKeyBytes> key{};
  RandomBytes(key);
  head.Bytes(key);
  std::memcpy(out.data(), head.span().data(), head.span().size());
  WipeMemory(key.data(), key.size());
  WipeMemory(head.out().data(), head.out().size());
  std::memcpy(out.data() + plan_offset, plan.data(), plan.size());
  if (!membership.empty())
    std::memcpy(out.data() + membership_offset, membership.data(), membership.size());
  return out;
}

}  // namespace

Result<PayloadLayout> ParsePayloadLayout(std::span<const uint8_t> payload) {
  ByteReader r(payload, "capsule payload");
  char magic[8];
  MLC_RETURN_IF_ERROR(r.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kPayloadMagic, sizeof(magic)) != 0)
    return DataLoss("capsule payload: bad magic (expected \"MLCPAYL1\")");
  uint64_t plan_bytes = 0, membership_bytes = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&plan_bytes, "plan size"));
  MLC_RETURN_IF_ERROR(r.Pod(&membership_bytes, "membership plan size"));
  PayloadLayout layout;
  layout.watermark_key_offset = payload.size() - r.remaining();
  const uint64_t size = payload.size();
  if (plan_bytes < 1 || plan_bytes > size - kPayloadHeaderBytes || size < kPayloadHeaderBytes)
    return DataLoss("capsule payload: plan size {} does not fit the {} payload bytes", plan_bytes,
                    size);
  layout.plan_offset = kPayloadHeaderBytes;
  layout.plan_bytes = static_cast<size_t>(plan_bytes);
  const uint64_t plan_end = kPayloadHeaderBytes + plan_bytes;
  if (membership_bytes == 0) {
    if (plan_end != size)
      return DataLoss("capsule payload: {} bytes after the plan, expected none", size - plan_end);
  } else {
    const uint64_t offset = AlignUp64(static_cast<size_t>(plan_end));
    if (offset > size || membership_bytes != size - offset)
      return DataLoss("capsule payload: membership plan size {} does not match the {} bytes left",
                      membership_bytes, offset > size ? 0 : size - offset);
    layout.membership_offset = static_cast<size_t>(offset);
    layout.membership_bytes = static_cast<size_t>(membership_bytes);
  }
  return layout;
}

Result<PackedCapsule> PackCapsule(const PackInput& input, const SigningKeyPair& provider) {
  if (provider.secret.size() != kSigningSecretBytes)
    return InvalidArgument("provider signing key is {} bytes, expected {}", provider.secret.size(),
                           kSigningSecretBytes);
  if (input.lease_signers.size() > kMaxLeaseSigners)
    return InvalidArgument("{} lease signers given, over the limit {}", input.lease_signers.size(),
                           kMaxLeaseSigners);

  PackedCapsule packed;
  RandomBytes(packed.capsule_id);
  packed.capsule_key = RandomSecret(kSymmetricKeyBytes);

  CapsuleHeader header;
  header.capsule_id = packed.capsule_id;
  header.created_at =
      input.created_at != 0 ? input.created_at : static_cast<int64_t>(std::time(nullptr));
  header.provider_key = provider.public_key;
  header.lease_signers = input.lease_signers;
  if (header.lease_signers.empty()) header.lease_signers.push_back(provider.public_key);
  header.model_name = input.model_name;
  header.policy_json = input.policy_json;
  header.inputs = input.inputs;
  header.outputs = input.outputs;
  if (input.plan.empty()) return InvalidArgument("the plan is empty");
  // The encrypted stream carries the payload: the plan, the optional membership plan and a fresh
  // watermark key (see PayloadLayout).
  std::vector<uint8_t> payload = BuildPayload(input.plan, input.membership_plan);
  struct Wipe {
    std::vector<uint8_t>& bytes;
    ~Wipe() { WipeMemory(bytes.data(), bytes.size()); }
  } wipe{payload};
  const std::span<const uint8_t> plain(payload);
  header.plan_bytes = plain.size();
  header.chunk_bytes = input.chunk_bytes;
  // Checked before the division below can see a zero chunk size.
  if (header.chunk_bytes < kMinChunkBytes || header.chunk_bytes > kMaxChunkBytes)
    return InvalidArgument("chunk size {} bytes is outside {}..{}", header.chunk_bytes,
                           kMinChunkBytes, kMaxChunkBytes);
  header.chunk_count = ChunkCount(header.plan_bytes, header.chunk_bytes);
  MLC_RETURN_IF_ERROR(CheckHeader(header));

  StreamState stream;
  crypto_secretstream_xchacha20poly1305_init_push(stream.get(), header.stream_header.data(),
                                                  packed.capsule_key.data());

  // The plan digest must be in the header before the header digest (the chunks' AD) exists, so
  // the plan is read twice here; packing happens once, on the provider's side.
  header.plan_digest = Hash({plain});
  std::string region = SerializeHeaderRegion(header);
  if (region.size() - kPreambleBytes > kMaxCapsuleHeaderBytes)
    return InvalidArgument("capsule header is {} bytes, over the limit {}",
                           region.size() - kPreambleBytes, kMaxCapsuleHeaderBytes);
  Digest header_digest = Hash({AsBytes(region)});

  const uint64_t ciphertext_bytes = header.plan_bytes + header.chunk_count * kStreamOverhead;
  std::vector<uint8_t>& out = packed.bytes;
  out.resize(region.size() + ciphertext_bytes + Signature().size());
  std::memcpy(out.data(), region.data(), region.size());

  Hasher64 file_hash;
  file_hash.Update(AsBytes(region));
  size_t offset = region.size();
  for (uint64_t chunk = 0; chunk < header.chunk_count; ++chunk) {
    const uint64_t start = chunk * header.chunk_bytes;
    const size_t length =
        static_cast<size_t>(std::min<uint64_t>(header.chunk_bytes, header.plan_bytes - start));
    const bool last = chunk + 1 == header.chunk_count;
    unsigned long long written = 0;
    crypto_secretstream_xchacha20poly1305_push(
        stream.get(), out.data() + offset, &written, plain.data() + start, length,
        header_digest.data(), header_digest.size(),
        last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
             : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    assert(written == length + kStreamOverhead);
    file_hash.Update({out.data() + offset, static_cast<size_t>(written)});
    offset += static_cast<size_t>(written);
  }
  assert(offset + Signature().size() == out.size());
  Signature signature = SignDigest(provider.secret, kCapsuleSignatureDomain, file_hash.Final());
  std::memcpy(out.data() + offset, signature.data(), signature.size());
  return packed;
}

namespace {

// magic version header_bytes header: the region the provider signature starts with.
Status ReadHeaderRegion(ByteReader& r, CapsuleHeader* header) {
  char magic[kMagicBytes] = {};
  MLC_RETURN_IF_ERROR(r.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kCapsuleMagic, kMagicBytes) != 0)
    return InvalidArgument("not a capsule file: the first 8 bytes are not \"MLCAPSUL\"");
  uint32_t version = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&version, "version"));
  if (version != kCapsuleVersion)
    return Unsupported("capsule version {} is not supported (this build reads version {})", version,
                       kCapsuleVersion);
  uint32_t header_bytes = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&header_bytes, "header size"));
  if (header_bytes > kMaxCapsuleHeaderBytes)
    return InvalidArgument("capsule header size {} bytes is over the limit {}", header_bytes,
                           kMaxCapsuleHeaderBytes);
  std::span<const uint8_t> header_bytes_view;
  MLC_RETURN_IF_ERROR(r.View(header_bytes, &header_bytes_view, "header"));
  return ReadHeader(header_bytes_view, header);
}

}  // namespace

Result<CapsuleHeader> ParseCapsuleHeaderRegion(std::span<const uint8_t> region) {
  ByteReader r(region, "capsule header region");
  CapsuleHeader header;
  MLC_RETURN_IF_ERROR(ReadHeaderRegion(r, &header));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return header;
}

Result<CapsuleView> ParseCapsule(std::span<const uint8_t> bytes) {
  ByteReader r(bytes, "capsule");
  CapsuleView view;
  MLC_RETURN_IF_ERROR(ReadHeaderRegion(r, &view.header));
  view.header_region = r.consumed();

  // Bounded by the header checks: plan_bytes <= 8 GiB and chunk_count <= 2^21.
  const uint64_t ciphertext_bytes =
      view.header.plan_bytes + view.header.chunk_count * kStreamOverhead;
  const uint64_t expected = view.header_region.size() + ciphertext_bytes + Signature().size();
  if (expected != bytes.size())
    return DataLoss(
        "capsule is {} bytes but its header describes {} bytes (header {} + ciphertext {} in {} "
        "chunks + signature {}): the file is truncated or has extra bytes",
        bytes.size(), expected, view.header_region.size(), ciphertext_bytes,
        view.header.chunk_count, Signature().size());
  MLC_RETURN_IF_ERROR(r.View(static_cast<size_t>(ciphertext_bytes), &view.ciphertext, "plan"));
  MLC_RETURN_IF_ERROR(r.Bytes(view.signature.data(), view.signature.size(), "signature"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  view.header_digest = Hash({view.header_region});
  return view;
}

Result<CapsuleView> ParseAndVerifyCapsule(std::span<const uint8_t> bytes) {
  MLC_ASSIGN_OR_RETURN(CapsuleView view, ParseCapsule(bytes));
  MLC_RETURN_IF_ERROR(VerifyCapsuleSignature(bytes, view));
  return view;
}

Status VerifyCapsuleSignature(std::span<const uint8_t> bytes, const CapsuleView& view) {
  // One pass over header and ciphertext (they are contiguous: everything before the signature).
  Hasher64 hasher;
  hasher.Update(bytes.first(bytes.size() - view.signature.size()));
  Status verified = VerifyDigest(view.header.provider_key, kCapsuleSignatureDomain, hasher.Final(),
                                 view.signature);
  if (!verified.ok())
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("capsule {} signature does not verify under its provider key {}..: "
                              "the file was modified after signing",
                              CapsuleIdHex(view.header.capsule_id),
                              ToHex(std::span(view.header.provider_key).first(4))));
  return Status::Ok();
}

namespace {

// Writes one byte of every page of [data, data + size) on its own thread, publishing how far it
// got; WaitFor blocks (spinning, then yielding) until a prefix is touched. Without a thread (the
// system refused one) WaitFor touches the pages itself. The destructor joins.
class PageToucher {
 public:
  PageToucher(uint8_t* data, size_t size) : data_(data), size_(size) {
    try {
      thread_ = std::thread([this] {
        for (size_t at = 0; at < size_; at += kPage) {
          data_[at] = 0;
          if ((at / kPage) % 16 == 15) done_.store(at + kPage, std::memory_order_release);
        }
        done_.store(size_, std::memory_order_release);
      });
    } catch (const std::system_error&) {
      // No second thread: WaitFor touches the pages on the caller's thread.
    }
  }
  ~PageToucher() {
    if (thread_.joinable()) thread_.join();
  }
  void WaitFor(size_t end) {
    if (!thread_.joinable()) {
      for (size_t at = own_; at < end; at += kPage) data_[at] = 0;
      own_ = std::max(own_, end);
      return;
    }
    while (done_.load(std::memory_order_acquire) < end) std::this_thread::yield();
  }

 private:
  static constexpr size_t kPage = 4096;
  uint8_t* data_;
  size_t size_;
  size_t own_ = 0;
  std::atomic<size_t> done_{0};
  std::thread thread_;
};

}  // namespace

Result<SecretBytes> DecryptPayload(const CapsuleView& capsule, const SecretBytes& capsule_key) {
  const CapsuleHeader& header = capsule.header;
  if (capsule_key.size() != kSymmetricKeyBytes)
    return InvalidArgument("capsule key is {} bytes, expected {}", capsule_key.size(),
                           kSymmetricKeyBytes);
  // The view may have been built by hand; its sizes are rechecked so that nothing below reads
  // out of bounds.
  MLC_RETURN_IF_ERROR(CheckStreamLayout(header));
  const uint64_t ciphertext_bytes = header.plan_bytes + header.chunk_count * kStreamOverhead;
  if (capsule.ciphertext.size() != ciphertext_bytes)
    return DataLoss("capsule ciphertext is {} bytes, expected {} for {} chunks",
                    capsule.ciphertext.size(), ciphertext_bytes, header.chunk_count);

  StreamState stream;
  if (crypto_secretstream_xchacha20poly1305_init_pull(stream.get(), header.stream_header.data(),
                                                      capsule_key.data()) != 0)
    return DataLoss("capsule stream header is invalid");

  SecretBytes plan(static_cast<size_t>(header.plan_bytes), SecretBytes::kUninitialized);
  // First touches of fresh sensitive pages are slow inside the software TEE (each memfd_secret
  // page is removed from the kernel's direct map, with a TLB flush on every CPU: ~25 us a page on
  // this project's VM). A second thread touches the pages ahead of the decryption, so the cipher
  // work overlaps the page faults instead of following them.
  PageToucher toucher(plan.data(), plan.size());
  Hasher32 plan_hash;
  size_t in = 0;
  size_t out = 0;
  for (uint64_t chunk = 0; chunk < header.chunk_count; ++chunk) {
    const size_t length = static_cast<size_t>(
        std::min<uint64_t>(header.chunk_bytes, header.plan_bytes - uint64_t{out}));
    const size_t sealed = length + kStreamOverhead;
    toucher.WaitFor(out + length);
    unsigned long long written = 0;
    unsigned char tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(
            stream.get(), plan.data() + out, &written, &tag, capsule.ciphertext.data() + in, sealed,
            capsule.header_digest.data(), capsule.header_digest.size()) != 0) {
      return DataLoss(
          "capsule plan chunk {} of {} does not decrypt: the ciphertext or header was modified, "
          "chunks were reordered, or the capsule key is wrong",
          chunk, header.chunk_count);
    }
    const bool last = chunk + 1 == header.chunk_count;
    if (!last && tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
      return DataLoss(
          "capsule plan chunk {} of {} carries the final tag early: chunks after it "
          "were appended or the stream was truncated and relabelled",
          chunk, header.chunk_count);
    if (last && tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL)
      return DataLoss(
          "capsule plan chunk {} of {} is the last but lacks the final tag: the "
          "stream was truncated",
          chunk, header.chunk_count);
    plan_hash.Update({plan.data() + out, length});
    in += sealed;
    out += length;
  }
  Digest digest = plan_hash.Final();
  if (!ConstantTimeEqual(digest, header.plan_digest))
    return DataLoss("decrypted plan does not match the plan digest in the capsule header");
  MLC_RETURN_IF_ERROR(ParsePayloadLayout(plan.span()).status());
  return plan;
}

void WriteIoList(const std::vector<IoTensor>& list, ByteWriter* w) {
  w->Pod<uint8_t>(static_cast<uint8_t>(list.size()));
  for (const IoTensor& io : list) {
    w->Str(io.name);
    w->Pod<uint8_t>(io.dtype);
    w->Pod<uint8_t>(static_cast<uint8_t>(io.dims.size()));
    for (const IoDim& dim : io.dims) {
      w->Pod<int64_t>(dim.value);
      w->Pod<uint8_t>(dim.batch ? 1 : 0);
    }
  }
}

Status ReadIoList(ByteReader& r, std::string_view object, std::string_view field,
                  std::vector<IoTensor>* list) {
  uint8_t count = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&count, fmt::format("{} count", field)));
  if (count < 1 || count > kMaxIoTensors)
    return InvalidArgument("{}: {} count {} is outside 1..{}", object, field, count, kMaxIoTensors);
  list->resize(count);
  for (size_t i = 0; i < count; ++i) {
    IoTensor& io = (*list)[i];
    std::string what = fmt::format("{} {}", field, i);
    MLC_RETURN_IF_ERROR(r.Str(&io.name, kMaxModelNameBytes, what + " name"));
    MLC_RETURN_IF_ERROR(r.Pod(&io.dtype, what + " dtype"));
    uint8_t rank = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&rank, what + " rank"));
    if (rank > kMaxRank)
      return InvalidArgument("{}: {} '{}' has rank {}, over the limit {}", object, what, io.name,
                             rank, kMaxRank);
    io.dims.resize(rank);
    for (IoDim& dim : io.dims) {
      uint8_t batch = 0;
      MLC_RETURN_IF_ERROR(r.Pod(&dim.value, what + " dimension"));
      MLC_RETURN_IF_ERROR(r.Pod(&batch, what + " batch flag"));
      if (batch > 1)
        return InvalidArgument("{}: {} '{}' has batch flag {}, expected 0 or 1", object, what,
                               io.name, batch);
      dim.batch = batch == 1;
    }
  }
  return Status::Ok();
}

std::vector<IoTensor> PlanIo(const engine::Plan& plan, const std::vector<int32_t>& which) {
  std::vector<IoTensor> io;
  io.reserve(which.size());
  for (int32_t index : which) {
    const engine::PlanTensor& t = plan.tensors[static_cast<size_t>(index)];
    IoTensor entry{t.name, static_cast<uint8_t>(t.type.dtype), {}};
    for (const engine::Dim& d : t.type.shape) entry.dims.push_back({d.value, d.batch});
    io.push_back(std::move(entry));
  }
  return io;
}

}  // namespace mlcapsule::capsule
