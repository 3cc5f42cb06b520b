// Provider key files (signing and watermark escrow) and capsule key files (formats in messages.h
// and docs/capsule-format.md).
// Provider-side only: the trusted core never reads files. Secret files are created 0600 without
// ever replacing an existing file, read only when no group or other permission bit is set, and
// their text passes through sensitive memory, never through std::string.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "base/bytes.h"
#include "base/file_util.h"
#include "capsule/messages.h"

namespace mlcapsule::capsule {
namespace {

constexpr std::string_view kSecretKeyMagic = "MLCKEY1\n";
constexpr std::string_view kPublicKeyMagic = "MLCPUB1\n";
constexpr std::string_view kCapsuleKeyMagic = "MLCCKEY1\n";
constexpr std::string_view kMasterKeyMagic = "MLCMKEY1\n";
constexpr std::string_view kEscrowSecretMagic = "MLCEKEY1\n";
constexpr std::string_view kEscrowPublicMagic = "MLCEPUB1\n";
// Larger than any valid key file; bounds the read of a hostile path.
constexpr size_t kMaxKeyFileBytes = 1024;

Status PermissionDenied(std::string message) {
  return Status(StatusCode::kPermissionDenied, std::move(message));
}

// Reads a secret file into sensitive memory after checking that only its owner can read it.
Result<SecretBytes> ReadSecretFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(ReadableFile file, ReadableFile::Open(path));
  // Checked on the open descriptor, so the file cannot be swapped between check and read.
  if ((file.mode() & 077) != 0)
    return PermissionDenied(fmt::format(
        "refusing to read secret key file '{}': its mode {:04o} lets group or others read it; "
        "run 'chmod 600 {}' (and consider the key exposed if others could read it)",
        path, file.mode(), path));
  if (file.size() > kMaxKeyFileBytes)
    return InvalidArgument("'{}' is {} bytes, too large for a key file (at most {})", path,
                           file.size(), kMaxKeyFileBytes);
  SecretBytes data(static_cast<size_t>(file.size()));
  MLC_RETURN_IF_ERROR(file.ReadExactly(data.data(), data.size()));
  return data;
}

// Writes the hex digits of `bytes` and a newline at `out` (room for 2 * size + 1 bytes); returns
// the end. sodium_bin2hex runs in time independent of the values, and its terminating NUL lands
// where the newline goes.
uint8_t* PutHexLine(std::span<const uint8_t> bytes, uint8_t* out) {
  sodium_bin2hex(reinterpret_cast<char*>(out), 2 * bytes.size() + 1, bytes.data(), bytes.size());
  out[2 * bytes.size()] = '\n';
  return out + 2 * bytes.size() + 1;
}

std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Splits "MAGIC" line1 "\n" line2 "\n" ... into exactly `lines.size()` lines after the magic.
Status SplitKeyFile(std::string_view text, std::string_view magic, std::string_view path,
                    std::span<std::string_view> lines) {
  std::string_view expected_magic = magic.substr(0, magic.size() - 1);
  if (text.substr(0, magic.size()) != magic)
    return InvalidArgument("'{}' is not a {} file: it does not start with \"{}\"", path,
                           expected_magic, expected_magic);
  text.remove_prefix(magic.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    size_t end = text.find('\n');
    if (end == std::string_view::npos)
      return InvalidArgument("'{}' is truncated: line {} has no end", path, i + 2);
    lines[i] = text.substr(0, end);
    text.remove_prefix(end + 1);
  }
  if (!text.empty())
    return InvalidArgument("'{}' has {} unexpected bytes after its last line", path, text.size());
  return Status::Ok();
}

}  // namespace

namespace {

// Writes STEM.key (secret_magic + hex of `secret`, mode 0600) and STEM.pub (public_magic + hex of
// `public_key`, 0644); refuses to overwrite either, and leaves no secret behind on failure.
Status WriteKeyFiles(const std::string& directory, const std::string& stem,
                     std::string_view secret_magic, std::span<const uint8_t> secret,
                     std::string_view public_magic, std::span<const uint8_t> public_key) {
  const std::string secret_path = directory + "/" + stem + ".key";
  const std::string public_path = directory + "/" + stem + ".pub";
  // Both are checked first so that an existing public key is not left paired with a new secret.
  for (const std::string& path : {secret_path, public_path}) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0)
      return FailedPrecondition("refusing to overwrite '{}': it already exists", path);
  }
  // The secret's hex text is itself secret: it is built in sensitive memory.
  SecretBytes text(secret_magic.size() + 2 * secret.size() + 1);
  std::memcpy(text.data(), secret_magic.data(), secret_magic.size());
  uint8_t* end = PutHexLine(secret, text.data() + secret_magic.size());
  assert(end == text.data() + text.size());
  (void)end;
  MLC_RETURN_IF_ERROR(CreateNewFile(secret_path, text.span(), 0600));
  std::string public_text = std::string(public_magic) + ToHex(public_key) + "\n";
  Status written = CreateNewFile(public_path, AsBytes(public_text), 0644);
  if (!written.ok()) {
    ::unlink(secret_path.c_str());
    return written;
  }
  return Status::Ok();
}

}  // namespace

Status WriteKeyPair(const std::string& directory, const std::string& stem,
                    const SigningKeyPair& pair) {
  if (pair.secret.size() != kSigningSecretBytes)
    return InvalidArgument("Ed25519 secret key is {} bytes, expected {}", pair.secret.size(),
                           kSigningSecretBytes);
  return WriteKeyFiles(directory, stem, kSecretKeyMagic, pair.secret.span(), kPublicKeyMagic,
                       pair.public_key);
}

Result<SigningKeyPair> ReadSecretKeyFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(SecretBytes data, ReadSecretFile(path));
  std::string_view lines[1];
  MLC_RETURN_IF_ERROR(SplitKeyFile(AsText(data.span()), kSecretKeyMagic, path, lines));
  SecretBytes secret(kSigningSecretBytes);
  MLC_RETURN_IF_ERROR(FromHex(lines[0], secret.span(), fmt::format("secret key in '{}'", path)));
  Result<SigningKeyPair> pair = SigningKeyPairFromSecret(secret.span());
  if (!pair.ok()) return pair.status().WithContext(path);
  return pair;
}

Result<PublicKey> ReadPublicKeyFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxKeyFileBytes));
  std::string_view lines[1];
  MLC_RETURN_IF_ERROR(SplitKeyFile(text, kPublicKeyMagic, path, lines));
  PublicKey key{};
  MLC_RETURN_IF_ERROR(FromHex(lines[0], key, fmt::format("public key in '{}'", path)));
  return key;
}

Status WriteEscrowKeyPair(const std::string& directory, const std::string& stem,
                          const BoxKeyPair& pair) {
  if (pair.secret.size() != kBoxSecretBytes)
    return InvalidArgument("X25519 secret key is {} bytes, expected {}", pair.secret.size(),
                           kBoxSecretBytes);
  return WriteKeyFiles(directory, stem, kEscrowSecretMagic, pair.secret.span(), kEscrowPublicMagic,
                       pair.public_key);
}

Result<BoxKeyPair> ReadEscrowSecretKeyFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(SecretBytes data, ReadSecretFile(path));
  std::string_view lines[1];
  MLC_RETURN_IF_ERROR(SplitKeyFile(AsText(data.span()), kEscrowSecretMagic, path, lines));
  BoxKeyPair pair;
  pair.secret = SecretBytes(kBoxSecretBytes);
  MLC_RETURN_IF_ERROR(
      FromHex(lines[0], pair.secret.span(), fmt::format("escrow secret key in '{}'", path)));
  if (crypto_scalarmult_base(pair.public_key.data(), pair.secret.data()) != 0)
    return InvalidArgument("'{}' does not hold a usable X25519 secret key", path);
  return pair;
}

Result<PublicKey> ReadEscrowPublicKeyFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxKeyFileBytes));
  std::string_view lines[1];
  MLC_RETURN_IF_ERROR(SplitKeyFile(text, kEscrowPublicMagic, path, lines));
  PublicKey key{};
  MLC_RETURN_IF_ERROR(FromHex(lines[0], key, fmt::format("escrow public key in '{}'", path)));
  return key;
}

Status WriteCapsuleKeyFile(const std::string& path, const CapsuleId& id, const SecretBytes& key) {
  if (key.size() != kSymmetricKeyBytes)
    return InvalidArgument("capsule key is {} bytes, expected {}", key.size(), kSymmetricKeyBytes);
  SecretBytes text(kCapsuleKeyMagic.size() + 2 * id.size() + 1 + 2 * kSymmetricKeyBytes + 1);
  std::memcpy(text.data(), kCapsuleKeyMagic.data(), kCapsuleKeyMagic.size());
  uint8_t* end = PutHexLine(id, text.data() + kCapsuleKeyMagic.size());
  end = PutHexLine(key.span(), end);
  assert(end == text.data() + text.size());
  (void)end;
  return CreateNewFile(path, text.span(), 0600);
}

Result<SecretBytes> ReadCapsuleKeyFile(const std::string& path, const CapsuleId& expected_id) {
  MLC_ASSIGN_OR_RETURN(SecretBytes data, ReadSecretFile(path));
  std::string_view lines[2];
  MLC_RETURN_IF_ERROR(SplitKeyFile(AsText(data.span()), kCapsuleKeyMagic, path, lines));
  CapsuleId id{};
  MLC_RETURN_IF_ERROR(FromHex(lines[0], id, fmt::format("capsule id in '{}'", path)));
  if (id != expected_id)
    return InvalidArgument("'{}' holds the key of capsule {}, not of capsule {}", path,
                           CapsuleIdHex(id), CapsuleIdHex(expected_id));
  SecretBytes key(kSymmetricKeyBytes);
  MLC_RETURN_IF_ERROR(FromHex(lines[1], key.span(), fmt::format("capsule key in '{}'", path)));
  return key;
}

Status WriteMasterKeyFile(const std::string& path, const SecretBytes& key) {
  if (key.size() != kSymmetricKeyBytes)
    return InvalidArgument("master key is {} bytes, expected {}", key.size(), kSymmetricKeyBytes);
  SecretBytes text(kMasterKeyMagic.size() + 2 * kSymmetricKeyBytes + 1);
  std::memcpy(text.data(), kMasterKeyMagic.data(), kMasterKeyMagic.size());
  uint8_t* end = PutHexLine(key.span(), text.data() + kMasterKeyMagic.size());
  assert(end == text.data() + text.size());
  (void)end;
  return CreateNewFile(path, text.span(), 0600);
}

Result<SecretBytes> ReadMasterKeyFile(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(SecretBytes data, ReadSecretFile(path));
  std::string_view lines[1];
  MLC_RETURN_IF_ERROR(SplitKeyFile(AsText(data.span()), kMasterKeyMagic, path, lines));
  SecretBytes key(kSymmetricKeyBytes);
  MLC_RETURN_IF_ERROR(FromHex(lines[0], key.span(), fmt::format("master key in '{}'", path)));
  return key;
}

}  // namespace mlcapsule::capsule
