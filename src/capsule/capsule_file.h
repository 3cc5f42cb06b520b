// The capsule file: a compiled plan encrypted under a fresh capsule key, with a signed header
// that the client can read and verify without any key. docs/capsule-format.md is the reference;
// the grammar is repeated here because the parser is written against it.
//
//   capsule      := magic:"MLCAPSUL" version:u32(=1) header_bytes:u32 (<= 1 MiB) header
//                   stream_chunk{chunk_count} signature:u8[64]
//   header       := capsule_id:u8[16] created_at:i64 (unix seconds)
//                   provider_key:u8[32]                       ; Ed25519, signs this file
//                   signer_count:u8 (1..8) lease_signer:u8[32]{signer_count}  ; pinned lease keys
//                   model_name:str (<= 256) policy_json:str (<= 64 KiB, canonical JSON)
//                   input_count:u8 (1..64) io{input_count} output_count:u8 (1..64) io{output_count}
//                   plan_digest:u8[32]                        ; BLAKE2b-256 of the plaintext plan
//                   plan_bytes:u64 (1..8 GiB) chunk_bytes:u32 (4 KiB..16 MiB)
//                   chunk_count:u64 (= ceil(plan_bytes / chunk_bytes))
//                   stream_header:u8[24]                      ; secretstream header
//   io           := name:str (<= 256) dtype:u8 rank:u8 (<= 8) dim{rank}
//   dim          := value:i64 (0..2^31) batch:u8 (0|1)         ; batch: the size is value * N
//   stream_chunk := ciphertext of one plan chunk: min(chunk_bytes, bytes left) + 17 bytes,
//                   secretstream XChaCha20-Poly1305 with additional data = header_digest
//                   (BLAKE2b-256 of magic..header); the last chunk carries the FINAL tag
//   signature    := Ed25519 by provider_key over "mlcapsule/v1/capsule" ||
//                   BLAKE2b-512(every byte before the signature)
//   str          := length:u32 bytes                           ; UTF-8, limits as stated
// All integers little-endian. A file is accepted only when every length is within its limit,
// the sizes add up exactly to the file size, and the signature verifies.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/status.h"
#include "capsule/crypto.h"
#include "engine/plan.h"

namespace mlcapsule::capsule {

inline constexpr char kCapsuleMagic[8] = {'M', 'L', 'C', 'A', 'P', 'S', 'U', 'L'};
inline constexpr uint32_t kCapsuleVersion = 2;
inline constexpr uint32_t kMaxCapsuleHeaderBytes = 1 << 20;
inline constexpr size_t kMaxLeaseSigners = 8;
inline constexpr uint64_t kMaxModelNameBytes = 256;
inline constexpr uint64_t kMaxPolicyBytes = 64 << 10;
inline constexpr size_t kMaxIoTensors = 64;
inline constexpr uint64_t kMaxPlanBytes = uint64_t{8} << 30;
inline constexpr uint32_t kMinChunkBytes = 4 << 10;
inline constexpr uint32_t kMaxChunkBytes = 16 << 20;
inline constexpr uint32_t kDefaultChunkBytes = 1 << 20;
// Largest capsule file a reader accepts: the largest plan plus room for header and stream overhead.
inline constexpr uint64_t kMaxCapsuleFileBytes = kMaxPlanBytes + (uint64_t{64} << 20);

using CapsuleId = std::array<uint8_t, 16>;

struct IoDim {
  int64_t value = 0;
  bool batch = false;
  bool operator==(const IoDim&) const = default;
};
struct IoTensor {
  std::string name;
  uint8_t dtype = 1;  // engine::DType codes (ONNX TensorProto codes): 1 float32, 7 int64
  std::vector<IoDim> dims;
  bool operator==(const IoTensor&) const = default;
};

struct CapsuleHeader {
  CapsuleId capsule_id{};
  int64_t created_at = 0;
  PublicKey provider_key{};
  std::vector<PublicKey> lease_signers;
  std::string model_name;
  std::string policy_json;  // canonical (Policy::ToJson), validated by ParsePolicy on open
  std::vector<IoTensor> inputs;
  std::vector<IoTensor> outputs;
  Digest plan_digest{};
  uint64_t plan_bytes = 0;
  uint32_t chunk_bytes = kDefaultChunkBytes;
  uint64_t chunk_count = 0;
  std::array<uint8_t, kStreamHeaderBytes> stream_header{};
};

// A parsed capsule: the header, and views into the caller's bytes for the ciphertext and the
// signature (the bytes must outlive it).
struct CapsuleView {
  CapsuleHeader header;
  std::span<const uint8_t> header_region;  // magic .. end of header (its digest is the AD)
  std::span<const uint8_t> ciphertext;
  Signature signature{};
  Digest header_digest{};
};

// The encrypted stream's plaintext, the payload (plan_bytes and plan_digest in the header describe
// it as a whole):
//   payload := magic:"MLCPAYL1" plan_bytes:u64 (>= 1) membership_bytes:u64
//              watermark_key:u8[32] pad:u8[8]           ; 64 bytes, so the plan is 64-aligned
//              plan:u8[plan_bytes]                      ; the model (engine plan format)
//              [pad to a multiple of 64, membership_plan:u8[membership_bytes]]  ; when > 0
// The membership plan is the defender's membership classifier MemGuard uses (policy
// defenses.memguard); the watermark key (random, made by PackCapsule) keys DAWN watermarking.
inline constexpr char kPayloadMagic[8] = {'M', 'L', 'C', 'P', 'A', 'Y', 'L', '1'};
inline constexpr size_t kPayloadHeaderBytes = 64;
inline constexpr size_t kWatermarkKeyBytes = 32;
struct PayloadLayout {
  size_t plan_offset = 0, plan_bytes = 0;
  size_t membership_offset = 0, membership_bytes = 0;  // 0 bytes: no membership plan
  size_t watermark_key_offset = 0;                     // kWatermarkKeyBytes there
};
// Checks the payload's structure (sizes add up exactly) and returns where each part is.
Result<PayloadLayout> ParsePayloadLayout(std::span<const uint8_t> payload);

struct PackInput {
  std::span<const uint8_t> plan;             // serialized plan (plaintext)
  std::span<const uint8_t> membership_plan;  // optional: MemGuard's classifier (serialized plan)
  std::string model_name;
  std::string policy_json;
  std::vector<IoTensor> inputs, outputs;
  std::vector<PublicKey> lease_signers;  // empty: the provider key itself signs leases
  uint32_t chunk_bytes = kDefaultChunkBytes;
  int64_t created_at = 0;
};

struct PackedCapsule {
  std::vector<uint8_t> bytes;
  CapsuleId capsule_id{};
  SecretBytes capsule_key;  // kSymmetricKeyBytes; the provider keeps it (lease issuing)
};

// Encrypts and signs. `provider` is the provider's signing key pair.
Result<PackedCapsule> PackCapsule(const PackInput& input, const SigningKeyPair& provider);

// Parses the structure and checks every limit (no signature check, no key needed).
Result<CapsuleView> ParseCapsule(std::span<const uint8_t> bytes);
// The header region alone (CapsuleView::header_region: magic .. end of header), as the license
// server stores it. Structure and limits only: the provider signature covers the whole file, so
// whoever registers a region must have verified the file (`mlcapsule admin capsule add` does).
Result<CapsuleHeader> ParseCapsuleHeaderRegion(std::span<const uint8_t> region);
// ParseCapsule + the provider signature over header and ciphertext.
Result<CapsuleView> ParseAndVerifyCapsule(std::span<const uint8_t> bytes);
// The signature check alone, for a `view` that ParseCapsule made from `bytes` (lets a caller
// verify on one thread while it starts decrypting on another; nothing may be used or released
// before it returns OK).
[[nodiscard]] Status VerifyCapsuleSignature(std::span<const uint8_t> bytes,
                                            const CapsuleView& view);
// Decrypts the payload into sensitive memory and checks its digest and layout. The capsule must
// have been verified. Errors name the failing chunk (tampered, reordered, truncated).
Result<SecretBytes> DecryptPayload(const CapsuleView& capsule, const SecretBytes& capsule_key);

std::string CapsuleIdHex(const CapsuleId& id);

// The io list of the grammar above (count:u8 (1..64) io{count}), also used by the core's
// core_info (trusted/boundary.h). `object` names the enclosing object in errors.
void WriteIoList(const std::vector<IoTensor>& list, ByteWriter* w);
Status ReadIoList(ByteReader& r, std::string_view object, std::string_view field,
                  std::vector<IoTensor>* list);

// The header's description of a plan's tensors (`which`: plan.inputs or plan.outputs).
std::vector<IoTensor> PlanIo(const engine::Plan& plan, const std::vector<int32_t>& which);

}  // namespace mlcapsule::capsule
