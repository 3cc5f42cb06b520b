// The project's cryptography, all of it libsodium 1.0.18: fixed-size key types, a wiped secret
// buffer, BLAKE2b hashing, Ed25519 signatures over domain-separated digests, X25519 sealed boxes
// (wrapping a capsule key to a core's key), XChaCha20-Poly1305 (sealing state) and the chunked
// secretstream that encrypts a capsule's plan. Open/verify calls are [[nodiscard]], zero their
// outputs on failure, and compare in constant time. Trusts nothing it is given.
//
//   MLC_RETURN_IF_ERROR(InitCrypto());
//   SigningKeyPair provider = GenerateSigningKeyPair();
//   Signature sig = Sign(provider.secret, kCapsuleSignatureDomain, {header, digest});
//   MLC_RETURN_IF_ERROR(Verify(provider.public_key, kCapsuleSignatureDomain, {header, digest},
//   sig));
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule::capsule {

// Must be called once before any other function here (safe to call again).
Status InitCrypto();

using PublicKey = std::array<uint8_t, 32>;  // Ed25519 or X25519 public key
using Signature = std::array<uint8_t, 64>;  // Ed25519
using Digest = std::array<uint8_t, 32>;     // BLAKE2b-256
using Digest64 = std::array<uint8_t, 64>;   // BLAKE2b-512

// A secret that is wiped on every path: stored in sensitive memory (base/sensitive_memory.h;
// memfd_secret inside the software TEE), movable, never copied implicitly.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);  // zero-filled
  enum UninitializedTag { kUninitialized };
  // Not zeroed (the caller overwrites every byte; fresh pages are not touched here).
  SecretBytes(size_t size, UninitializedTag);
  SecretBytes(const uint8_t* data, size_t size);
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();
  SecretBytes Clone() const { return SecretBytes(data_, size_); }

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::span<uint8_t> span() { return {data_, size_}; }
  // Shrinks the logical size (the bytes past it are wiped); never grows.
  void Truncate(size_t size);
  // Hands the allocation (from AllocateSensitive(*allocation_bytes)) to the caller, who must
  // release it with ReleaseSensitive or adopt it (engine::AlignedBuffer::AdoptSensitive).
  uint8_t* ReleaseAllocation(size_t* allocation_bytes);

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

inline constexpr size_t kSymmetricKeyBytes = 32;   // capsule key, sealing key
inline constexpr size_t kSigningSecretBytes = 64;  // Ed25519 secret key (seed + public key)
inline constexpr size_t kBoxSecretBytes = 32;      // X25519 secret key
inline constexpr size_t kSealedBoxOverhead = 48;   // crypto_box_SEALBYTES
inline constexpr size_t kAeadNonceBytes = 24;      // XChaCha20-Poly1305
inline constexpr size_t kAeadTagBytes = 16;
inline constexpr size_t kStreamHeaderBytes = 24;  // secretstream header
inline constexpr size_t kStreamOverhead = 17;     // secretstream per-chunk overhead

struct SigningKeyPair {
  PublicKey public_key{};
  SecretBytes secret;  // kSigningSecretBytes
};
struct BoxKeyPair {
  PublicKey public_key{};
  SecretBytes secret;  // kBoxSecretBytes
};

SigningKeyPair GenerateSigningKeyPair();
BoxKeyPair GenerateBoxKeyPair();
// Rebuilds a key pair from a secret key (checks that its embedded public key matches).
Result<SigningKeyPair> SigningKeyPairFromSecret(std::span<const uint8_t> secret);
SecretBytes RandomSecret(size_t size);
void RandomBytes(std::span<uint8_t> out);

// BLAKE2b over the concatenation of `parts` (no length framing: callers hash fixed-layout data).
Digest Hash(std::initializer_list<std::span<const uint8_t>> parts);
Digest64 Hash64(std::initializer_list<std::span<const uint8_t>> parts);
// SHA-256 over the concatenation of `parts` (TPM structures are SHA-256; nothing else uses it).
Digest Sha256(std::initializer_list<std::span<const uint8_t>> parts);
// BLAKE2b-256 keyed with `key` (16..64 bytes): a MAC, or a key derived from `key` for the
// purpose the parts name (hence a SecretBytes).
SecretBytes KeyedHash(const SecretBytes& key,
                      std::initializer_list<std::span<const uint8_t>> parts);

// Incremental BLAKE2b-512 (used over a capsule's ciphertext).
class Hasher64 {
 public:
  Hasher64();
  void Update(std::span<const uint8_t> bytes);
  Digest64 Final();

 private:
  alignas(64) uint8_t state_[384];
};

// Signature domains: each signed object type has its own prefix, so a signature on one kind of
// message never verifies as another.
inline constexpr std::string_view kCapsuleSignatureDomain = "mlcapsule/v1/capsule";
inline constexpr std::string_view kLeaseSignatureDomain = "mlcapsule/v1/lease";
inline constexpr std::string_view kUsageReportSignatureDomain = "mlcapsule/v1/usage-report";

// Ed25519 over domain || BLAKE2b-512(parts...).
Signature Sign(const SecretBytes& signing_secret, std::string_view domain,
               std::initializer_list<std::span<const uint8_t>> parts);
[[nodiscard]] Status Verify(const PublicKey& public_key, std::string_view domain,
                            std::initializer_list<std::span<const uint8_t>> parts,
                            const Signature& signature);
// Same, with the BLAKE2b-512 of the message already computed (large capsules).
Signature SignDigest(const SecretBytes& signing_secret, std::string_view domain,
                     const Digest64& digest);
[[nodiscard]] Status VerifyDigest(const PublicKey& public_key, std::string_view domain,
                                  const Digest64& digest, const Signature& signature);

// Anonymous sealed box to an X25519 public key (crypto_box_seal): output is
// plaintext.size() + kSealedBoxOverhead bytes.
std::vector<uint8_t> SealTo(const PublicKey& recipient, std::span<const uint8_t> plaintext);
[[nodiscard]] Result<SecretBytes> OpenSealed(const BoxKeyPair& recipient,
                                             std::span<const uint8_t> sealed);

// XChaCha20-Poly1305 with a random nonce: output is nonce || ciphertext || tag.
std::vector<uint8_t> AeadEncrypt(const SecretBytes& key, std::span<const uint8_t> plaintext,
                                 std::span<const uint8_t> associated_data);
// Decrypts into sensitive memory; `what` names the object in the error.
[[nodiscard]] Result<SecretBytes> AeadDecrypt(const SecretBytes& key,
                                              std::span<const uint8_t> sealed,
                                              std::span<const uint8_t> associated_data,
                                              std::string_view what);

// Constant-time equality of two equal-length byte strings (false when the lengths differ).
bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b);

std::string ToHex(std::span<const uint8_t> bytes);
// Standard base64 with padding (RFC 4648 §4), as the license server's JSON carries messages.
std::string ToBase64(std::span<const uint8_t> bytes);
// Refuses anything but canonical padded base64, and more than `max_bytes` decoded bytes.
Result<std::vector<uint8_t>> FromBase64(std::string_view text, size_t max_bytes,
                                        std::string_view what);
// Parses exactly `out.size()` bytes of hex; `what` names the value in the error.
Status FromHex(std::string_view hex, std::span<uint8_t> out, std::string_view what);

}  // namespace mlcapsule::capsule
