// The license server's secrets (server_keys.h).
#include "server/server_keys.h"

#include <cstring>
#include <filesystem>

namespace mlcapsule::server {
namespace {

constexpr std::string_view kWrapDomain = "mlcapsule/v1/capsule-key-at-rest";
constexpr std::string_view kNonceDomain = "mlcapsule/v1/nonce-mac";

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

Result<capsule::SecretBytes> LoadMasterKey(const std::string& path, bool create) {
  if (create && !std::filesystem::exists(path)) {
    capsule::SecretBytes key = capsule::RandomSecret(capsule::kSymmetricKeyBytes);
    MLC_RETURN_IF_ERROR(capsule::WriteMasterKeyFile(path, key));
    return key;
  }
  return capsule::ReadMasterKeyFile(path);
}

std::vector<uint8_t> WrapCapsuleKey(const capsule::SecretBytes& master,
                                    const capsule::CapsuleId& capsule_id,
                                    const capsule::SecretBytes& capsule_key) {
  const capsule::Digest ad = capsule::Hash({AsBytes(kWrapDomain), capsule_id});
  return capsule::AeadEncrypt(master, capsule_key.span(), ad);
}

Result<capsule::SecretBytes> UnwrapCapsuleKey(const capsule::SecretBytes& master,
                                              const capsule::CapsuleId& capsule_id,
                                              std::span<const uint8_t> wrapped) {
  const capsule::Digest ad = capsule::Hash({AsBytes(kWrapDomain), capsule_id});
  MLC_ASSIGN_OR_RETURN(capsule::SecretBytes key,
                       capsule::AeadDecrypt(master, wrapped, ad, "wrapped capsule key"));
  if (key.size() != capsule::kSymmetricKeyBytes)
    return DataLoss("wrapped capsule key of capsule {} holds {} bytes, not {}",
                    capsule::ToHex(capsule_id), key.size(), capsule::kSymmetricKeyBytes);
  return key;
}

std::string NewToken(std::string_view prefix) {
  std::array<uint8_t, 32> secret{};
  capsule::RandomBytes(secret);
  std::string token = std::string(prefix) + capsule::ToHex(secret);
  std::memset(secret.data(), 0, secret.size());
  return token;
}

capsule::Digest TokenHash(std::string_view token) { return capsule::Hash({AsBytes(token)}); }

std::string NewId(std::string_view prefix) {
  std::array<uint8_t, 8> random{};
  capsule::RandomBytes(random);
  return std::string(prefix) + capsule::ToHex(random);
}

Status CheckId(std::string_view id, std::string_view what) {
  if (id.empty() || id.size() > 64)
    return InvalidArgument("{} '{}' must be 1..64 characters", what, id.substr(0, 80));
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok)
      return InvalidArgument("{} '{}' has the character '{}': use letters, digits, _ . -", what, id,
                             c);
  }
  return Status::Ok();
}

NonceMinter::NonceMinter(const capsule::SecretBytes& master)
    : mac_key_(capsule::KeyedHash(master, {AsBytes(kNonceDomain)})) {}

capsule::Nonce NonceMinter::Mint(int64_t expires_at) const {
  capsule::Nonce nonce{};
  std::memcpy(nonce.data(), &expires_at, 8);
  capsule::RandomBytes(std::span(nonce).subspan(8, 8));
  const capsule::SecretBytes mac = capsule::KeyedHash(mac_key_, {std::span(nonce).first(16)});
  std::memcpy(nonce.data() + 16, mac.data(), 16);
  return nonce;
}

Status NonceMinter::Check(const capsule::Nonce& nonce, int64_t now) const {
  const capsule::SecretBytes mac = capsule::KeyedHash(mac_key_, {std::span(nonce).first(16)});
  if (!capsule::ConstantTimeEqual(mac.span().first(16), std::span(nonce).subspan(16, 16)))
    return PermissionDenied("the evidence is bound to a nonce this server did not issue");
  int64_t expires_at = 0;
  std::memcpy(&expires_at, nonce.data(), 8);
  if (now >= expires_at)
    return PermissionDenied("the nonce expired {} s ago: ask for a fresh one", now - expires_at);
  return Status::Ok();
}

}  // namespace mlcapsule::server
