// libsodium wrappers (see crypto.h). Every output that a failed open/verify could leave half
// written is zeroed before the error returns; secrets live in SecretBytes and are wiped when
// released.
#include "capsule/crypto.h"

#include <sodium.h>

#include <cassert>
#include <cstring>
#include <utility>

#include "base/sensitive_memory.h"

namespace mlcapsule::capsule {
namespace {

static_assert(crypto_sign_ed25519_PUBLICKEYBYTES == 32);
static_assert(crypto_sign_ed25519_SECRETKEYBYTES == kSigningSecretBytes);
static_assert(crypto_sign_ed25519_BYTES == 64);
static_assert(crypto_box_PUBLICKEYBYTES == 32);
static_assert(crypto_box_SECRETKEYBYTES == kBoxSecretBytes);
static_assert(crypto_box_SEALBYTES == kSealedBoxOverhead);
static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == kSymmetricKeyBytes);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == kAeadNonceBytes);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == kAeadTagBytes);
static_assert(crypto_secretstream_xchacha20poly1305_HEADERBYTES == kStreamHeaderBytes);
static_assert(crypto_secretstream_xchacha20poly1305_ABYTES == kStreamOverhead);
static_assert(crypto_secretstream_xchacha20poly1305_KEYBYTES == kSymmetricKeyBytes);
static_assert(sizeof(crypto_generichash_blake2b_state) == 384);
static_assert(alignof(crypto_generichash_blake2b_state) <= 64);

// The message Ed25519 signs: domain || BLAKE2b-512(parts). Neither is secret.
std::vector<uint8_t> SignedMessage(std::string_view domain, const Digest64& digest) {
  std::vector<uint8_t> message(domain.size() + digest.size());
  std::memcpy(message.data(), domain.data(), domain.size());
  std::memcpy(message.data() + domain.size(), digest.data(), digest.size());
  return message;
}

// The first bytes of a key in hex, enough to tell keys apart in an error message.
std::string KeyPrefix(const PublicKey& key) { return ToHex(std::span(key).first(4)) + ".."; }

}  // namespace

Status InitCrypto() {
  if (sodium_init() < 0) return InternalError("libsodium failed to initialize (sodium_init)");
  return Status::Ok();
}

// ---- SecretBytes ----

SecretBytes::SecretBytes(size_t size) : size_(size), capacity_(size) {
  if (size == 0) return;
  data_ = static_cast<uint8_t*>(AllocateSensitive(size));
  std::memset(data_, 0, size);
}

SecretBytes::SecretBytes(size_t size, UninitializedTag) : size_(size), capacity_(size) {
  if (size == 0) return;
  data_ = static_cast<uint8_t*>(AllocateSensitive(size));
}

SecretBytes::SecretBytes(const uint8_t* data, size_t size) : SecretBytes(size) {
  if (size > 0) std::memcpy(data_, data, size);
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    ReleaseSensitive(data_, capacity_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

SecretBytes::~SecretBytes() { ReleaseSensitive(data_, capacity_); }

uint8_t* SecretBytes::ReleaseAllocation(size_t* allocation_bytes) {
  *allocation_bytes = std::exchange(capacity_, 0);
  size_ = 0;
  return std::exchange(data_, nullptr);
}

void SecretBytes::Truncate(size_t size) {
  if (size >= size_) return;
  WipeMemory(data_ + size, size_ - size);
  size_ = size;
}

// ---- keys and randomness ----

SigningKeyPair GenerateSigningKeyPair() {
  SigningKeyPair pair;
  pair.secret = SecretBytes(kSigningSecretBytes);
  crypto_sign_ed25519_keypair(pair.public_key.data(), pair.secret.data());
  return pair;
}

BoxKeyPair GenerateBoxKeyPair() {
  BoxKeyPair pair;
  pair.secret = SecretBytes(kBoxSecretBytes);
  crypto_box_keypair(pair.public_key.data(), pair.secret.data());
  return pair;
}

Result<SigningKeyPair> SigningKeyPairFromSecret(std::span<const uint8_t> secret) {
  if (secret.size() != kSigningSecretBytes)
    return InvalidArgument("Ed25519 secret key is {} bytes, expected {}", secret.size(),
                           kSigningSecretBytes);
  // An Ed25519 secret key is seed || public key; rebuilding from the seed shows whether the
  // stored public half belongs to it.
  SigningKeyPair pair;
  pair.secret = SecretBytes(kSigningSecretBytes);
  crypto_sign_ed25519_seed_keypair(pair.public_key.data(), pair.secret.data(), secret.data());
  if (!ConstantTimeEqual(pair.secret.span(), secret))
    return InvalidArgument(
        "Ed25519 secret key is inconsistent: its public half does not match its seed");
  return pair;
}

SecretBytes RandomSecret(size_t size) {
  SecretBytes secret(size);
  if (size > 0) randombytes_buf(secret.data(), size);
  return secret;
}

void RandomBytes(std::span<uint8_t> out) {
  if (!out.empty()) randombytes_buf(out.data(), out.size());
}

// ---- hashing ----

Digest Hash(std::initializer_list<std::span<const uint8_t>> parts) {
  crypto_generichash_blake2b_state state;
  crypto_generichash_blake2b_init(&state, nullptr, 0, Digest().size());
  for (std::span<const uint8_t> part : parts)
    crypto_generichash_blake2b_update(&state, part.data(), part.size());
  Digest digest{};
  crypto_generichash_blake2b_final(&state, digest.data(), digest.size());
  return digest;
}

Digest Sha256(std::initializer_list<std::span<const uint8_t>> parts) {
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  for (std::span<const uint8_t> part : parts)
    crypto_hash_sha256_update(&state, part.data(), part.size());
  Digest digest{};
  crypto_hash_sha256_final(&state, digest.data());
  return digest;
}

SecretBytes KeyedHash(const SecretBytes& key,
                      std::initializer_list<std::span<const uint8_t>> parts) {
  assert(key.size() >= crypto_generichash_blake2b_KEYBYTES_MIN &&
         key.size() <= crypto_generichash_blake2b_KEYBYTES_MAX);
  SecretBytes out(Digest().size());
  crypto_generichash_blake2b_state state;
  crypto_generichash_blake2b_init(&state, key.data(), key.size(), out.size());
  for (std::span<const uint8_t> part : parts)
    crypto_generichash_blake2b_update(&state, part.data(), part.size());
  crypto_generichash_blake2b_final(&state, out.data(), out.size());
  sodium_memzero(&state, sizeof(state));
  return out;
}

Digest64 Hash64(std::initializer_list<std::span<const uint8_t>> parts) {
  Hasher64 hasher;
  for (std::span<const uint8_t> part : parts) hasher.Update(part);
  return hasher.Final();
}

Hasher64::Hasher64() {
  crypto_generichash_blake2b_init(reinterpret_cast<crypto_generichash_blake2b_state*>(state_),
                                  nullptr, 0, Digest64().size());
}

void Hasher64::Update(std::span<const uint8_t> bytes) {
  crypto_generichash_blake2b_update(reinterpret_cast<crypto_generichash_blake2b_state*>(state_),
                                    bytes.data(), bytes.size());
}

Digest64 Hasher64::Final() {
  Digest64 digest{};
  crypto_generichash_blake2b_final(reinterpret_cast<crypto_generichash_blake2b_state*>(state_),
                                   digest.data(), digest.size());
  return digest;
}

// ---- signatures ----

Signature Sign(const SecretBytes& signing_secret, std::string_view domain,
               std::initializer_list<std::span<const uint8_t>> parts) {
  return SignDigest(signing_secret, domain, Hash64(parts));
}

Status Verify(const PublicKey& public_key, std::string_view domain,
              std::initializer_list<std::span<const uint8_t>> parts, const Signature& signature) {
  return VerifyDigest(public_key, domain, Hash64(parts), signature);
}

Signature SignDigest(const SecretBytes& signing_secret, std::string_view domain,
                     const Digest64& digest) {
  // Signing with a malformed key is a programming error (keys come from the generators or from
  // SigningKeyPairFromSecret), not a data error.
  assert(signing_secret.size() == kSigningSecretBytes);
  std::vector<uint8_t> message = SignedMessage(domain, digest);
  Signature signature{};
  crypto_sign_ed25519_detached(signature.data(), nullptr, message.data(), message.size(),
                               signing_secret.data());
  return signature;
}

Status VerifyDigest(const PublicKey& public_key, std::string_view domain, const Digest64& digest,
                    const Signature& signature) {
  std::vector<uint8_t> message = SignedMessage(domain, digest);
  if (crypto_sign_ed25519_verify_detached(signature.data(), message.data(), message.size(),
                                          public_key.data()) != 0)
    return Status(
        StatusCode::kPermissionDenied,
        fmt::format("'{}' signature does not verify under key {}", domain, KeyPrefix(public_key)));
  return Status::Ok();
}

// ---- sealed boxes ----

std::vector<uint8_t> SealTo(const PublicKey& recipient, std::span<const uint8_t> plaintext) {
  std::vector<uint8_t> sealed(plaintext.size() + kSealedBoxOverhead);
  if (crypto_box_seal(sealed.data(), plaintext.data(), plaintext.size(), recipient.data()) != 0) {
    // Only an invalid (small-order) recipient key gets here; nobody can open the result.
    sodium_memzero(sealed.data(), sealed.size());
  }
  return sealed;
}

Result<SecretBytes> OpenSealed(const BoxKeyPair& recipient, std::span<const uint8_t> sealed) {
  if (sealed.size() < kSealedBoxOverhead)
    return InvalidArgument("sealed box is {} bytes, shorter than its {}-byte overhead",
                           sealed.size(), kSealedBoxOverhead);
  if (recipient.secret.size() != kBoxSecretBytes)
    return InvalidArgument("X25519 secret key is {} bytes, expected {}", recipient.secret.size(),
                           kBoxSecretBytes);
  SecretBytes plaintext(sealed.size() - kSealedBoxOverhead);
  // A zero-length plaintext has no buffer; libsodium still writes nothing to it.
  uint8_t empty = 0;
  uint8_t* out = plaintext.empty() ? &empty : plaintext.data();
  if (crypto_box_seal_open(out, sealed.data(), sealed.size(), recipient.public_key.data(),
                           recipient.secret.data()) != 0) {
    // plaintext is wiped when it goes out of scope.
    return DataLoss(
        "sealed box does not open with X25519 key {}: it was sealed to another key "
        "or modified",
        KeyPrefix(recipient.public_key));
  }
  return plaintext;
}

// ---- AEAD ----

std::vector<uint8_t> AeadEncrypt(const SecretBytes& key, std::span<const uint8_t> plaintext,
                                 std::span<const uint8_t> associated_data) {
  assert(key.size() == kSymmetricKeyBytes);
  std::vector<uint8_t> sealed(kAeadNonceBytes + plaintext.size() + kAeadTagBytes);
  randombytes_buf(sealed.data(), kAeadNonceBytes);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      sealed.data() + kAeadNonceBytes, &written, plaintext.data(), plaintext.size(),
      associated_data.data(), associated_data.size(), nullptr, sealed.data(), key.data());
  assert(written == plaintext.size() + kAeadTagBytes);
  return sealed;
}

Result<SecretBytes> AeadDecrypt(const SecretBytes& key, std::span<const uint8_t> sealed,
                                std::span<const uint8_t> associated_data, std::string_view what) {
  if (key.size() != kSymmetricKeyBytes)
    return InvalidArgument("{}: key is {} bytes, expected {}", what, key.size(),
                           kSymmetricKeyBytes);
  if (sealed.size() < kAeadNonceBytes + kAeadTagBytes)
    return DataLoss("{} is {} bytes, shorter than its nonce and tag ({} bytes)", what,
                    sealed.size(), kAeadNonceBytes + kAeadTagBytes);
  SecretBytes plaintext(sealed.size() - kAeadNonceBytes - kAeadTagBytes);
  uint8_t empty = 0;
  uint8_t* out = plaintext.empty() ? &empty : plaintext.data();
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          out, &written, nullptr, sealed.data() + kAeadNonceBytes, sealed.size() - kAeadNonceBytes,
          associated_data.data(), associated_data.size(), sealed.data(), key.data()) != 0) {
    return DataLoss(
        "{} does not decrypt: it was modified, or sealed under another key or "
        "context",
        what);
  }
  return plaintext;
}

// ---- helpers ----

bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string ToBase64(std::span<const uint8_t> bytes) {
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

Result<std::vector<uint8_t>> FromBase64(std::string_view text, size_t max_bytes,
                                        std::string_view what) {
  const size_t decoded_max = text.size() / 4 * 3;
  if (text.size() % 4 != 0)
    return InvalidArgument("{}: base64 length {} is not a multiple of 4", what, text.size());
  if (decoded_max > max_bytes + 2)
    return InvalidArgument("{}: {} base64 characters decode to more than the limit of {} bytes",
                           what, text.size(), max_bytes);
  std::vector<uint8_t> out(decoded_max);
  size_t length = 0;
  const char* end = nullptr;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &length, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size())
    return InvalidArgument("{}: not valid base64", what);
  if (length > max_bytes)
    return InvalidArgument("{}: {} bytes is over the limit {}", what, length, max_bytes);
  out.resize(length);
  return out;
}

std::string ToHex(std::span<const uint8_t> bytes) {
  std::string hex(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes.data(), bytes.size());
  hex.pop_back();  // the terminating NUL
  return hex;
}

Status FromHex(std::string_view hex, std::span<uint8_t> out, std::string_view what) {
  if (hex.size() != out.size() * 2) {
    sodium_memzero(out.data(), out.size());
    return InvalidArgument("{} is {} hex characters, expected {}", what, hex.size(),
                           out.size() * 2);
  }
  size_t written = 0;
  const char* end = nullptr;
  // sodium_hex2bin runs in time independent of the digits' values (it parses secret keys).
  if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &written, &end) !=
          0 ||
      written != out.size() || end != hex.data() + hex.size()) {
    sodium_memzero(out.data(), out.size());
    return InvalidArgument("{} is not valid hex", what);
  }
  return Status::Ok();
}

}  // namespace mlcapsule::capsule
