// The license server's own secrets and credentials. Trusts its key files (mode 0600, refused when
// group or others can read them); everything a client sends is untrusted.
//
// The master key file's grammar is in capsule/messages.h (WriteMasterKeyFile).
// The master key wraps capsule keys at rest (XChaCha20-Poly1305, the capsule id as associated
// data) and keys the nonce MAC. Several server instances sharing one database share it. Tokens
// (admin and license) are 32 random bytes in hex behind a prefix; only their BLAKE2b-256 hash is
// stored, which is enough for secrets of that entropy (no password hashing needed).
//
// Nonces are stateless: expires_at:i64 random:u8[8] mac:u8[16], the MAC over the first 16 bytes.
// The server accepts a nonce it made that has not expired; that a nonce is used once is enforced
// by the ledger (a lease records its nonce, unique over all leases).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"

namespace mlcapsule::server {

inline constexpr std::string_view kAdminTokenPrefix = "mlcadm_";
inline constexpr std::string_view kLicenseTokenPrefix = "mlclic_";

// Reads the master key file; with `create`, writes a fresh one (mode 0600) when it is absent.
Result<capsule::SecretBytes> LoadMasterKey(const std::string& path, bool create);

std::vector<uint8_t> WrapCapsuleKey(const capsule::SecretBytes& master,
                                    const capsule::CapsuleId& capsule_id,
                                    const capsule::SecretBytes& capsule_key);
Result<capsule::SecretBytes> UnwrapCapsuleKey(const capsule::SecretBytes& master,
                                              const capsule::CapsuleId& capsule_id,
                                              std::span<const uint8_t> wrapped);

// prefix + 64 hex characters.
std::string NewToken(std::string_view prefix);
capsule::Digest TokenHash(std::string_view token);
// "id" values chosen by the server: prefix + 16 hex characters.
std::string NewId(std::string_view prefix);
// Admin-chosen ids: 1..64 of [A-Za-z0-9_.-].
Status CheckId(std::string_view id, std::string_view what);

class NonceMinter {
 public:
  explicit NonceMinter(const capsule::SecretBytes& master);
  capsule::Nonce Mint(int64_t expires_at) const;
  // PermissionDenied for a nonce this server did not make or one that expired.
  Status Check(const capsule::Nonce& nonce, int64_t now) const;

 private:
  capsule::SecretBytes mac_key_;
};

}  // namespace mlcapsule::server
