// The protocol messages (grammars in messages.h and docs/capsule-format.md): evidence request,
// lease and usage report. Parsers bound the whole message first, then every field, reject
// trailing bytes, and verify signatures over exactly the bytes that precede the signature field.
#include "capsule/messages.h"

#include <algorithm>
#include <cstring>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

constexpr char kEvidenceRequestMagic[8] = {'M', 'L', 'C', 'E', 'V', 'R', 'E', 'Q'};
constexpr char kLeaseMagic[8] = {'M', 'L', 'C', 'L', 'E', 'A', 'S', 'E'};
constexpr char kUsageReportMagic[8] = {'M', 'L', 'C', 'U', 'S', 'A', 'G', 'E'};
constexpr uint32_t kMessageVersion = 1;
constexpr uint32_t kBoundLeaseVersion = 2;  // a lease with a tee_binding
// Usage reports: version 2 added the defense summary and escrow records; 1 is still read.
constexpr uint32_t kFirstUsageReportVersion = 1;
constexpr std::string_view kReportDataDomain = "mlcapsule/v1";
constexpr std::string_view kChainDomain = "mlcapsule/v1/chain";

std::span<const uint8_t> DomainBytes(std::string_view domain) { return AsBytes(domain); }

std::string KeyPrefix(const PublicKey& key) { return ToHex(std::span(key).first(4)) + ".."; }

// Magic and version (in [min_version, max_version]), shared by the three messages.
Status ReadPreamble(ByteReader& r, const char (&magic)[8], std::string_view what,
                    uint32_t* version = nullptr, uint32_t min_version = kMessageVersion,
                    uint32_t max_version = kMessageVersion) {
  char got[8] = {};
  MLC_RETURN_IF_ERROR(r.Bytes(got, sizeof(got), "magic"));
  if (std::memcmp(got, magic, sizeof(got)) != 0)
    return InvalidArgument("{} has bad magic: the first 8 bytes are not \"{}\"", what,
                           std::string_view(magic, sizeof(magic)));
  uint32_t read = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&read, "version"));
  if (read < min_version || read > max_version) {
    if (min_version == max_version)
      return Unsupported("{} version {} is not supported (this build reads version {})", what, read,
                         max_version);
    return Unsupported("{} version {} is not supported (this build reads versions {}..{})", what,
                       read, min_version, max_version);
  }
  if (version != nullptr) *version = read;
  return Status::Ok();
}

template <size_t N>
Status ReadArray(ByteReader& r, std::array<uint8_t, N>* out, std::string_view field) {
  return r.Bytes(out->data(), out->size(), field);
}

Status CheckSize(std::span<const uint8_t> bytes, uint64_t limit, std::string_view what) {
  if (bytes.size() > limit)
    return InvalidArgument("{} is {} bytes, over the limit {}", what, bytes.size(), limit);
  return Status::Ok();
}

// ---- lease ----

void WriteLeaseBody(const LeaseBody& body, ByteWriter* w) {
  w->Bytes(body.capsule_id);
  w->Str(body.license_id);
  w->Bytes(body.lease_id);
  w->Pod<uint64_t>(body.sequence);
  w->Pod<int64_t>(body.issued_at);
  w->Pod<int64_t>(body.not_before);
  w->Pod<int64_t>(body.expires_at);
  w->Pod<uint64_t>(body.query_quota);
  w->Pod<uint64_t>(body.chain_base_count);
  w->Bytes(body.chain_base);
  w->Bytes(body.core_box_key);
  w->Bytes(body.core_signing_key);
  w->Bytes(body.wrapped_capsule_key);
  if (body.tee_binding) {  // version 2
    w->Pod<uint8_t>(1);
    w->Blob(body.tee_binding->id_object);
    w->Blob(body.tee_binding->encrypted_secret);
  }
}

Status CheckLeaseBody(const LeaseBody& body) {
  if (body.license_id.size() > kMaxLicenseIdBytes)
    return InvalidArgument("lease: license id is {} bytes, over the limit {}",
                           body.license_id.size(), kMaxLicenseIdBytes);
  if (body.sequence < 1) return InvalidArgument("lease: sequence is 0, must be at least 1");
  if (body.query_quota < 1) return InvalidArgument("lease: query quota is 0, must be at least 1");
  if (body.tee_binding) {
    const TeeBinding& b = *body.tee_binding;
    if (b.id_object.empty() || b.id_object.size() > kMaxTeeBindingPartBytes ||
        b.encrypted_secret.empty() || b.encrypted_secret.size() > kMaxTeeBindingPartBytes)
      return InvalidArgument(
          "lease: the TEE binding's id_object ({} bytes) and encrypted_secret ({} bytes) must "
          "each be 1..{} bytes",
          b.id_object.size(), b.encrypted_secret.size(), kMaxTeeBindingPartBytes);
  }
  return Status::Ok();
}

// ---- usage report ----

void WriteUsageReportBody(const UsageReport& report, ByteWriter* w) {
  w->Bytes(kUsageReportMagic, sizeof(kUsageReportMagic));
  w->Pod<uint32_t>(kUsageReportVersion);
  w->Bytes(report.capsule_id);
  w->Str(report.license_id);
  w->Bytes(report.lease_id);
  w->Pod<uint64_t>(report.report_sequence);
  w->Bytes(report.core_signing_key);
  w->Pod<uint64_t>(report.from_count);
  w->Bytes(report.from_head);
  w->Pod<uint64_t>(report.to_count);
  w->Bytes(report.to_head);
  w->Pod<int64_t>(report.created_at);
  w->Pod<uint16_t>(static_cast<uint16_t>(report.alerts.size()));
  for (const Alert& alert : report.alerts) {
    w->Str(alert.kind);
    w->Pod<uint64_t>(alert.at_count);
    w->Str(alert.detail);
  }
  const DefenseSummary& d = report.defenses;
  w->Pod<uint64_t>(d.prada_observed);
  w->Pod<uint64_t>(d.prada_stored);
  w->Pod<double>(d.prada_last_w);
  w->Pod<uint8_t>(d.prada_alarmed);
  w->Pod<uint64_t>(d.watermarked);
  w->Pod<uint64_t>(d.escrowed);
  w->Pod<uint64_t>(d.escrow_dropped);
  w->Pod<uint64_t>(d.memguard_applied);
  w->Pod<uint64_t>(d.rate_limited);
  w->Pod<uint16_t>(static_cast<uint16_t>(report.escrow.size()));
  for (const std::vector<uint8_t>& record : report.escrow) w->Blob(record);
}

Status ReadDefenseSummary(ByteReader& r, DefenseSummary* d) {
  MLC_RETURN_IF_ERROR(r.Pod(&d->prada_observed, "prada_observed"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->prada_stored, "prada_stored"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->prada_last_w, "prada_last_w"));
  // -1 exactly (no test yet) or a W statistic; NaN fails both comparisons.
  if (!(d->prada_last_w == -1.0 || (d->prada_last_w >= 0.0 && d->prada_last_w <= 1.0)))
    return InvalidArgument("usage report: prada_last_w {} is neither -1 nor in [0, 1]",
                           d->prada_last_w);
  MLC_RETURN_IF_ERROR(r.Pod(&d->prada_alarmed, "prada_alarmed"));
  if (d->prada_alarmed > 1)
    return InvalidArgument("usage report: prada_alarmed is {}, expected 0 or 1", d->prada_alarmed);
  MLC_RETURN_IF_ERROR(r.Pod(&d->watermarked, "watermarked"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->escrowed, "escrowed"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->escrow_dropped, "escrow_dropped"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->memguard_applied, "memguard_applied"));
  MLC_RETURN_IF_ERROR(r.Pod(&d->rate_limited, "rate_limited"));
  return Status::Ok();
}

}  // namespace

const char* EvidenceTypeName(EvidenceType type) {
  switch (type) {
    case EvidenceType::kSoftware:
      return "software";
    case EvidenceType::kSgx:
      return "sgx";
    case EvidenceType::kTdx:
      return "tdx";
    case EvidenceType::kSnp:
      return "snp";
    case EvidenceType::kTpm:
      return "tpm";
  }
  return "unknown";
}

bool EvidenceTypeFromName(std::string_view name, EvidenceType* type) {
  for (EvidenceType candidate : {EvidenceType::kSoftware, EvidenceType::kSgx, EvidenceType::kTdx,
                                 EvidenceType::kSnp, EvidenceType::kTpm}) {
    if (name == EvidenceTypeName(candidate)) {
      *type = candidate;
      return true;
    }
  }
  return false;
}

ReportData ComputeReportData(const Nonce& nonce, const CapsuleId& capsule_id,
                             const PublicKey& core_box_key, const PublicKey& core_signing_key) {
  return Hash64(
      {DomainBytes(kReportDataDomain), nonce, capsule_id, core_box_key, core_signing_key});
}

Digest ChainGenesis(const CapsuleId& capsule_id, const PublicKey& core_signing_key) {
  return Hash({DomainBytes(kChainDomain), capsule_id, core_signing_key});
}

// ---- evidence request ----

std::vector<uint8_t> SerializeEvidenceRequest(const EvidenceRequest& request) {
  assert(request.evidence.size() <= kMaxEvidenceBytes);
  assert(!request.usage_report || request.usage_report->size() <= kMaxUsageReportBytes);
  ByteWriter w;
  w.Bytes(kEvidenceRequestMagic, sizeof(kEvidenceRequestMagic));
  w.Pod<uint32_t>(kMessageVersion);
  w.Bytes(request.capsule_id);
  w.Bytes(request.nonce);
  w.Bytes(request.core_box_key);
  w.Bytes(request.core_signing_key);
  w.Pod<uint8_t>(static_cast<uint8_t>(request.evidence_type));
  w.Blob(request.evidence);
  w.Pod<uint8_t>(request.usage_report ? 1 : 0);
  if (request.usage_report) w.Blob(*request.usage_report);
  std::span<const uint8_t> bytes = w.span();
  return {bytes.begin(), bytes.end()};
}

Result<EvidenceRequest> ParseEvidenceRequest(std::span<const uint8_t> bytes) {
  MLC_RETURN_IF_ERROR(CheckSize(bytes, kMaxEvidenceRequestBytes, "evidence request"));
  ByteReader r(bytes, "evidence request");
  MLC_RETURN_IF_ERROR(ReadPreamble(r, kEvidenceRequestMagic, "evidence request"));
  EvidenceRequest request;
  MLC_RETURN_IF_ERROR(ReadArray(r, &request.capsule_id, "capsule id"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &request.nonce, "nonce"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &request.core_box_key, "core box key"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &request.core_signing_key, "core signing key"));
  uint8_t type = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&type, "evidence type"));
  if (type < static_cast<uint8_t>(EvidenceType::kSoftware) ||
      type > static_cast<uint8_t>(EvidenceType::kTpm))
    return InvalidArgument(
        "evidence request: evidence type {} is not one of 1..5 (software, sgx, "
        "tdx, snp, tpm)",
        type);
  request.evidence_type = static_cast<EvidenceType>(type);
  MLC_RETURN_IF_ERROR(r.Blob(&request.evidence, kMaxEvidenceBytes, "evidence"));
  uint8_t has_report = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&has_report, "usage report flag"));
  if (has_report > 1)
    return InvalidArgument("evidence request: usage report flag is {}, expected 0 or 1",
                           has_report);
  if (has_report == 1) {
    request.usage_report.emplace();
    MLC_RETURN_IF_ERROR(r.Blob(&*request.usage_report, kMaxUsageReportBytes, "usage report"));
  }
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return request;
}

// ---- lease ----

SecretBytes TeeBoundMask(const SecretBytes& secret) {
  return KeyedHash(secret, {AsBytes(std::string_view("mlcapsule/v1/tee-bound-lease"))});
}

Result<std::vector<uint8_t>> IssueLease(LeaseBody body, const SecretBytes& capsule_key,
                                        const SigningKeyPair& signer,
                                        const SecretBytes* tee_secret) {
  if (capsule_key.size() != kSymmetricKeyBytes)
    return InvalidArgument("capsule key is {} bytes, expected {}", capsule_key.size(),
                           kSymmetricKeyBytes);
  if (signer.secret.size() != kSigningSecretBytes)
    return InvalidArgument("lease signing key is {} bytes, expected {}", signer.secret.size(),
                           kSigningSecretBytes);
  MLC_RETURN_IF_ERROR(CheckLeaseBody(body));
  SecretBytes wrapped_key = capsule_key.Clone();
  if (body.tee_binding) {
    if (tee_secret == nullptr || tee_secret->size() == 0)
      return InvalidArgument("a TEE-bound lease needs the secret its credential protects");
    SecretBytes mask = TeeBoundMask(*tee_secret);
    for (size_t i = 0; i < wrapped_key.size(); ++i) wrapped_key.data()[i] ^= mask.data()[i];
  }
  std::vector<uint8_t> wrapped = SealTo(body.core_box_key, wrapped_key.span());
  assert(wrapped.size() == body.wrapped_capsule_key.size());
  // SealTo zeroes its output for a key no one can hold (a low-order point); a real sealed box
  // starts with a fresh ephemeral public key, never all zeros.
  if (std::all_of(wrapped.begin(), wrapped.end(), [](uint8_t b) { return b == 0; }))
    return InvalidArgument("core box key {} is not a usable X25519 public key",
                           ToHex(body.core_box_key));
  std::memcpy(body.wrapped_capsule_key.data(), wrapped.data(), wrapped.size());

  ByteWriter w;
  w.Bytes(kLeaseMagic, sizeof(kLeaseMagic));
  w.Pod<uint32_t>(body.tee_binding ? kBoundLeaseVersion : kMessageVersion);
  WriteLeaseBody(body, &w);
  w.Bytes(signer.public_key);
  Signature signature = Sign(signer.secret, kLeaseSignatureDomain, {w.span()});
  w.Bytes(signature);
  std::span<const uint8_t> bytes = w.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<Lease> ParseLease(std::span<const uint8_t> bytes) {
  MLC_RETURN_IF_ERROR(CheckSize(bytes, kMaxLeaseBytes, "lease"));
  ByteReader r(bytes, "lease");
  uint32_t version = 0;
  MLC_RETURN_IF_ERROR(
      ReadPreamble(r, kLeaseMagic, "lease", &version, kMessageVersion, kBoundLeaseVersion));
  Lease lease;
  LeaseBody& body = lease.body;
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.capsule_id, "capsule id"));
  MLC_RETURN_IF_ERROR(r.Str(&body.license_id, kMaxLicenseIdBytes, "license id"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.lease_id, "lease id"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.sequence, "sequence"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.issued_at, "issued_at"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.not_before, "not_before"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.expires_at, "expires_at"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.query_quota, "query quota"));
  MLC_RETURN_IF_ERROR(r.Pod(&body.chain_base_count, "chain base count"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.chain_base, "chain base"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.core_box_key, "core box key"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.core_signing_key, "core signing key"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &body.wrapped_capsule_key, "wrapped capsule key"));
  if (version >= kBoundLeaseVersion) {
    uint8_t bound = 0;
    MLC_RETURN_IF_ERROR(r.Pod(&bound, "tee_bound"));
    if (bound != 1)
      return InvalidArgument("lease: tee_bound is {}; a version-2 lease is always bound (1)",
                             bound);
    TeeBinding binding;
    MLC_RETURN_IF_ERROR(r.Blob(&binding.id_object, kMaxTeeBindingPartBytes, "id_object"));
    MLC_RETURN_IF_ERROR(
        r.Blob(&binding.encrypted_secret, kMaxTeeBindingPartBytes, "encrypted_secret"));
    body.tee_binding = std::move(binding);
  }
  MLC_RETURN_IF_ERROR(ReadArray(r, &lease.signer, "signer"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &lease.signature, "signature"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  MLC_RETURN_IF_ERROR(CheckLeaseBody(body));
  return lease;
}

Result<Lease> ParseAndVerifyLease(std::span<const uint8_t> bytes, const CapsuleHeader& header) {
  MLC_ASSIGN_OR_RETURN(Lease lease, ParseLease(bytes));
  // The capsule pins who may sign its leases; with no list, only its provider may.
  std::span<const PublicKey> pinned = header.lease_signers;
  if (pinned.empty()) pinned = std::span<const PublicKey>(&header.provider_key, 1);
  bool is_pinned = false;
  for (const PublicKey& key : pinned) is_pinned |= key == lease.signer;
  if (!is_pinned) {
    std::string list;
    for (const PublicKey& key : pinned) list += (list.empty() ? "" : ", ") + KeyPrefix(key);
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("lease is signed by key {} which the capsule does not pin (it "
                              "accepts {})",
                              KeyPrefix(lease.signer), list));
  }
  Status verified = Verify(lease.signer, kLeaseSignatureDomain,
                           {bytes.first(bytes.size() - lease.signature.size())}, lease.signature);
  if (!verified.ok())
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("lease signature does not verify under its signer {}: the lease "
                              "was modified after signing",
                              KeyPrefix(lease.signer)));
  if (lease.body.capsule_id != header.capsule_id)
    return InvalidArgument("lease is for capsule {}, not for this capsule {}",
                           CapsuleIdHex(lease.body.capsule_id), CapsuleIdHex(header.capsule_id));
  return lease;
}

// ---- usage report ----

uint64_t UsageReportBytes(const UsageReport& report) {
  uint64_t size = 8 + 4 + 16 + 4 + report.license_id.size() + 16 + 8 + 32 + 8 + 32 + 8 + 32 + 8;
  size += 2;
  for (const Alert& alert : report.alerts)
    size += 4 + alert.kind.size() + 8 + 4 + alert.detail.size();
  size += 8 + 8 + 8 + 1 + 5 * 8;  // defenses
  size += 2;
  for (const std::vector<uint8_t>& record : report.escrow) size += 4 + record.size();
  return size + 64;
}

std::vector<uint8_t> SignUsageReport(UsageReport report, const SecretBytes& core_signing_secret) {
  assert(report.alerts.size() <= kMaxAlerts);
  assert(report.escrow.size() <= kMaxEscrowRecords);
  ByteWriter w;
  WriteUsageReportBody(report, &w);
  Signature signature = Sign(core_signing_secret, kUsageReportSignatureDomain, {w.span()});
  w.Bytes(signature);
  std::span<const uint8_t> bytes = w.span();
  return {bytes.begin(), bytes.end()};
}

Result<UsageReport> ParseUsageReport(std::span<const uint8_t> bytes) {
  MLC_RETURN_IF_ERROR(CheckSize(bytes, kMaxUsageReportBytes, "usage report"));
  ByteReader r(bytes, "usage report");
  UsageReport report;
  MLC_RETURN_IF_ERROR(ReadPreamble(r, kUsageReportMagic, "usage report", &report.version,
                                   kFirstUsageReportVersion, kUsageReportVersion));
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.capsule_id, "capsule id"));
  MLC_RETURN_IF_ERROR(r.Str(&report.license_id, kMaxLicenseIdBytes, "license id"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.lease_id, "lease id"));
  MLC_RETURN_IF_ERROR(r.Pod(&report.report_sequence, "report sequence"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.core_signing_key, "core signing key"));
  MLC_RETURN_IF_ERROR(r.Pod(&report.from_count, "from_count"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.from_head, "from_head"));
  MLC_RETURN_IF_ERROR(r.Pod(&report.to_count, "to_count"));
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.to_head, "to_head"));
  MLC_RETURN_IF_ERROR(r.Pod(&report.created_at, "created_at"));
  uint16_t alerts = 0;
  // Each alert is at least 4 + 8 + 4 bytes.
  MLC_RETURN_IF_ERROR(r.Count(&alerts, kMaxAlerts, 16, "alert count"));
  report.alerts.resize(alerts);
  for (Alert& alert : report.alerts) {
    MLC_RETURN_IF_ERROR(r.Str(&alert.kind, kMaxAlertKindBytes, "alert kind"));
    MLC_RETURN_IF_ERROR(r.Pod(&alert.at_count, "alert count value"));
    MLC_RETURN_IF_ERROR(r.Str(&alert.detail, kMaxAlertDetailBytes, "alert detail"));
  }
  if (report.version >= 2) {
    MLC_RETURN_IF_ERROR(ReadDefenseSummary(r, &report.defenses));
    uint16_t records = 0;
    // Each record is at least a length and kMinEscrowRecordBytes.
    MLC_RETURN_IF_ERROR(
        r.Count(&records, kMaxEscrowRecords, 4 + kMinEscrowRecordBytes, "escrow record count"));
    report.escrow.resize(records);
    for (std::vector<uint8_t>& record : report.escrow) {
      std::span<const uint8_t> view;
      MLC_RETURN_IF_ERROR(r.BlobView(&view, kMaxEscrowRecordBytes, "escrow record"));
      if (view.size() < kMinEscrowRecordBytes)
        return InvalidArgument(
            "usage report: an escrow record is {} bytes, below the {} of a "
            "sealed box",
            view.size(), kMinEscrowRecordBytes);
      record.assign(view.begin(), view.end());
    }
  }
  MLC_RETURN_IF_ERROR(ReadArray(r, &report.signature, "signature"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  if (report.to_count < report.from_count)
    return InvalidArgument("usage report: to_count {} is below from_count {} (a chain only grows)",
                           report.to_count, report.from_count);
  return report;
}

Result<UsageReport> ParseAndVerifyUsageReport(std::span<const uint8_t> bytes) {
  MLC_ASSIGN_OR_RETURN(UsageReport report, ParseUsageReport(bytes));
  Status verified = Verify(report.core_signing_key, kUsageReportSignatureDomain,
                           {bytes.first(bytes.size() - report.signature.size())}, report.signature);
  if (!verified.ok())
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("usage report signature does not verify under its core key {}: the "
                              "report was modified after signing",
                              KeyPrefix(report.core_signing_key)));
  return report;
}

}  // namespace mlcapsule::capsule
