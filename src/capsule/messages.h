// The protocol's signed messages (DESIGN.md, "Key release and metering") and the sealed core
// state. The same bytes travel in files (air-gapped licensing) and over the license server's
// HTTP API. docs/capsule-format.md gives each grammar; they are repeated here:
//
//   evidence_request := magic:"MLCEVREQ" version:u32(=1) capsule_id:u8[16] nonce:u8[32]
//                       core_box_key:u8[32] core_signing_key:u8[32]
//                       evidence_type:u8 evidence:blob (<= 64 KiB)
//                       has_report:u8 (0|1) [usage_report:blob (<= 1 MiB)]
//   lease            := magic:"MLCLEASE" version:u32(=1|2) body signer:u8[32] signature:u8[64]
//   body             := capsule_id:u8[16] license_id:str (<= 128) lease_id:u8[16]
//                       sequence:u64 (>= 1)                  ; grows by one per lease of a license
//                       issued_at:i64 not_before:i64 expires_at:i64   ; unix seconds
//                       query_quota:u64 (>= 1)
//                       chain_base_count:u64 chain_base:u8[32]  ; the usage-chain head it follows
//                       core_box_key:u8[32] core_signing_key:u8[32]
//                       wrapped_capsule_key:u8[80]            ; crypto_box_seal to core_box_key
//                       [tee_bound:u8 (0|1)                   ; version 2 only
//                        [id_object:blob (<= 1 KiB) encrypted_secret:blob (<= 1 KiB)]]
//                       ; tee_bound = 1 (TPM leases, docs/tee-backends.md): the sealed box holds
//                       ; capsule_key XOR TeeBoundMask(secret), and only the TPM that owns the
//                       ; certified endorsement key and the quoting attestation key recovers
//                       ; `secret` from the credential (TPM2_ActivateCredential). Version 1 is
//                       ; written for unbound leases, version 2 for bound ones.
//   usage_report     := magic:"MLCUSAGE" version:u32(=2; 1 is still read) capsule_id:u8[16]
//                       license_id:str lease_id:u8[16] report_sequence:u64
//                       core_signing_key:u8[32]
//                       from_count:u64 from_head:u8[32]       ; the head the last report ended at
//                       to_count:u64 to_head:u8[32] created_at:i64
//                       alert_count:u16 (<= 256) alert{alert_count}
//                       defenses                              ; version 2 only
//                       escrow_count:u16 (<= 4096) escrow:blob{escrow_count}  ; version 2 only
//                       signature:u8[64]                      ; by core_signing_key
//   alert            := kind:str (<= 64) at_count:u64 detail:str (<= 1024)
//   defenses         := prada_observed:u64 prada_stored:u64
//                       prada_last_w:f64 (-1: no test yet, else 0..1) prada_alarmed:u8 (0|1)
//                       watermarked:u64 escrowed:u64 escrow_dropped:u64
//                       memguard_applied:u64 rate_limited:u64
//   escrow           := a sealed escrow record (defense/watermark.h), 49 bytes..1 MiB, opaque here
//   blob             := length:u32 bytes
// A whole usage report is at most 1 MiB (kMaxUsageReportBytes); an evidence request carrying one
// at most kMaxEvidenceRequestBytes. A version-1 report reads with empty defenses and no escrow.
// Signatures: Ed25519 over domain || BLAKE2b-512(every byte before the signature field), with
// the domains of capsule/crypto.h. report_data (64 bytes, the TEE evidence's user data) is
// BLAKE2b-512("mlcapsule/v1" || nonce || capsule_id || core_box_key || core_signing_key).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"

namespace mlcapsule::capsule {

using Nonce = std::array<uint8_t, 32>;
using ReportData = std::array<uint8_t, 64>;
using LeaseId = std::array<uint8_t, 16>;

inline constexpr uint64_t kMaxEvidenceBytes = 64 << 10;
inline constexpr uint64_t kMaxLicenseIdBytes = 128;
inline constexpr size_t kMaxAlerts = 256;
inline constexpr uint64_t kMaxAlertKindBytes = 64;
inline constexpr uint64_t kMaxAlertDetailBytes = 1024;
inline constexpr uint64_t kMaxUsageReportBytes = 1 << 20;
inline constexpr size_t kMaxEscrowRecords = 4096;
inline constexpr uint64_t kMaxEscrowRecordBytes = 1 << 20;  // one sealed record
// The shortest sealed escrow record: a sealed box (48 bytes) of at least one byte.
inline constexpr uint64_t kMinEscrowRecordBytes = kSealedBoxOverhead + 1;
inline constexpr uint64_t kMaxLeaseBytes = 4 << 10;
// Fixed fields, the evidence and an attached usage report.
inline constexpr uint64_t kMaxEvidenceRequestBytes =
    kMaxUsageReportBytes + kMaxEvidenceBytes + (4 << 10);
inline constexpr uint32_t kUsageReportVersion = 2;

enum class EvidenceType : uint8_t { kSoftware = 1, kSgx = 2, kTdx = 3, kSnp = 4, kTpm = 5 };
const char* EvidenceTypeName(EvidenceType type);  // "software", "sgx", ...
bool EvidenceTypeFromName(std::string_view name, EvidenceType* type);

ReportData ComputeReportData(const Nonce& nonce, const CapsuleId& capsule_id,
                             const PublicKey& core_box_key, const PublicKey& core_signing_key);

// The chain every query extends: genesis = BLAKE2b-256("mlcapsule/v1/chain" || capsule_id ||
// core_signing_key); see trusted/core.cc for the per-query step.
Digest ChainGenesis(const CapsuleId& capsule_id, const PublicKey& core_signing_key);

struct EvidenceRequest {
  CapsuleId capsule_id{};
  Nonce nonce{};
  PublicKey core_box_key{};
  PublicKey core_signing_key{};
  EvidenceType evidence_type = EvidenceType::kSoftware;
  std::vector<uint8_t> evidence;
  std::optional<std::vector<uint8_t>> usage_report;  // the latest report (renewals)
};
std::vector<uint8_t> SerializeEvidenceRequest(const EvidenceRequest& request);
Result<EvidenceRequest> ParseEvidenceRequest(std::span<const uint8_t> bytes);

// The credential of a TEE-bound lease: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, each with its
// 2-byte size prefix, made by the server for the TPM's EK and AK (server/evidence/tpm.h).
inline constexpr uint64_t kMaxTeeBindingPartBytes = 1 << 10;
struct TeeBinding {
  std::vector<uint8_t> id_object;
  std::vector<uint8_t> encrypted_secret;
};
// What the capsule key is XORed with inside a bound lease: keyed BLAKE2b-256(key = secret,
// "mlcapsule/v1/tee-bound-lease").
SecretBytes TeeBoundMask(const SecretBytes& secret);

struct LeaseBody {
  CapsuleId capsule_id{};
  std::string license_id;
  LeaseId lease_id{};
  uint64_t sequence = 1;
  int64_t issued_at = 0;
  int64_t not_before = 0;
  int64_t expires_at = 0;
  uint64_t query_quota = 0;
  uint64_t chain_base_count = 0;
  Digest chain_base{};
  PublicKey core_box_key{};
  PublicKey core_signing_key{};
  std::array<uint8_t, kSymmetricKeyBytes + kSealedBoxOverhead> wrapped_capsule_key{};
  std::optional<TeeBinding> tee_binding;
};
struct Lease {
  LeaseBody body;
  PublicKey signer{};
  Signature signature{};
};
// Wraps `capsule_key` to body.core_box_key and signs with `signer`. With body.tee_binding set,
// `tee_secret` (the secret inside the credential) is required and masks the capsule key.
Result<std::vector<uint8_t>> IssueLease(LeaseBody body, const SecretBytes& capsule_key,
                                        const SigningKeyPair& signer,
                                        const SecretBytes* tee_secret = nullptr);
// Structure and limits only.
Result<Lease> ParseLease(std::span<const uint8_t> bytes);
// ParseLease + signer pinned in `header` + signature.
Result<Lease> ParseAndVerifyLease(std::span<const uint8_t> bytes, const CapsuleHeader& header);

struct Alert {
  std::string kind;  // "prada", "rate-limit", "rollback", ...
  uint64_t at_count = 0;
  std::string detail;
};
// What the core's defenses did since the lease began (counters, not alerts; docs/defenses.md).
struct DefenseSummary {
  uint64_t prada_observed = 0;  // queries PRADA looked at
  uint64_t prada_stored = 0;    // queries it holds (the distances it tests)
  double prada_last_w = -1;     // the last Shapiro-Wilk W, in [0, 1]; -1 when no test ran yet
  uint8_t prada_alarmed = 0;    // 1 once PRADA has alarmed
  uint64_t watermarked = 0;     // answers given a watermark label
  uint64_t escrowed = 0;        // watermarked samples sealed into reports
  uint64_t escrow_dropped = 0;  // watermarked samples not escrowed (limits, too large)
  uint64_t memguard_applied = 0;
  uint64_t rate_limited = 0;  // queries refused or delayed by a rate limit
  bool operator==(const DefenseSummary&) const = default;
};

struct UsageReport {
  CapsuleId capsule_id{};
  std::string license_id;
  LeaseId lease_id{};
  uint64_t report_sequence = 0;
  PublicKey core_signing_key{};
  uint64_t from_count = 0;
  Digest from_head{};
  uint64_t to_count = 0;
  Digest to_head{};
  int64_t created_at = 0;
  std::vector<Alert> alerts;
  DefenseSummary defenses;
  std::vector<std::vector<uint8_t>> escrow;  // sealed escrow records (defense/watermark.h)
  uint32_t version = kUsageReportVersion;    // as parsed; SignUsageReport always writes 2
  Signature signature{};
};
// The signed size of `report` (every limit above must hold for it to parse).
uint64_t UsageReportBytes(const UsageReport& report);
// Signs version 2. The caller keeps to the limits (alerts, escrow records, 1 MiB in all): the
// core checks UsageReportBytes before it adds an escrow record.
std::vector<uint8_t> SignUsageReport(UsageReport report, const SecretBytes& core_signing_secret);
Result<UsageReport> ParseUsageReport(std::span<const uint8_t> bytes);
// ParseUsageReport + the signature by its own core_signing_key (the verifier must separately
// check that this key is the attested one of the lease).
Result<UsageReport> ParseAndVerifyUsageReport(std::span<const uint8_t> bytes);

// Provider key files written by `mlcapsule keygen`:
//   provider.key := "MLCKEY1\n" ed25519_secret_hex (128 chars) "\n"   (mode 0600)
//   provider.pub := "MLCPUB1\n" ed25519_public_hex (64 chars) "\n"
// ReadSecretKeyFile refuses a file that group or others can read.
Status WriteKeyPair(const std::string& directory, const std::string& stem,
                    const SigningKeyPair& pair);
Result<SigningKeyPair> ReadSecretKeyFile(const std::string& path);
Result<PublicKey> ReadPublicKeyFile(const std::string& path);
// Capsule key file written by `pack` beside the capsule (mode 0600, provider side only):
//   MODEL.capsule.key := "MLCCKEY1\n" capsule_id_hex "\n" capsule_key_hex "\n"
Status WriteCapsuleKeyFile(const std::string& path, const CapsuleId& id, const SecretBytes& key);
Result<SecretBytes> ReadCapsuleKeyFile(const std::string& path, const CapsuleId& expected_id);
// The provider's watermark escrow key pair (X25519; `mlcapsule keygen --escrow`), whose public
// half goes into a policy's defenses.watermark.escrow_key:
//   escrow.key := "MLCEKEY1\n" x25519_secret_hex (64 chars) "\n"   (mode 0600)
//   escrow.pub := "MLCEPUB1\n" x25519_public_hex (64 chars) "\n"
Status WriteEscrowKeyPair(const std::string& directory, const std::string& stem,
                          const BoxKeyPair& pair);
Result<BoxKeyPair> ReadEscrowSecretKeyFile(const std::string& path);
Result<PublicKey> ReadEscrowPublicKeyFile(const std::string& path);
// The license server's master key (server/server_keys.h), mode 0600:
//   master.key := "MLCMKEY1\n" master_key_hex (64 chars) "\n"
Status WriteMasterKeyFile(const std::string& path, const SecretBytes& key);
Result<SecretBytes> ReadMasterKeyFile(const std::string& path);

}  // namespace mlcapsule::capsule
