// The license server's protocol and admin logic (license_service.h).
#include "server/license_service.h"

#include <chrono>
#include <cmath>
#include <set>

#include "base/log.h"
#include "capsule/capsule_file.h"
#include "capsule/licensing.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "server/evidence/tpm.h"

namespace mlcapsule::server {

struct LicenseService::CapsuleEntry {
  CapsuleRecord record;
  capsule::CapsuleHeader header;
  capsule::Policy policy;
  capsule::SecretBytes key;
};

namespace {

constexpr size_t kMaxNameBytes = 256;
constexpr uint64_t kMaxCount = uint64_t{1} << 62;

int64_t WallClock() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Strict reading of a JSON request body: an object with only the `allowed` fields.
class Body {
 public:
  static Result<Body> Of(const json& value, std::initializer_list<std::string_view> allowed) {
    if (!value.is_object()) return InvalidArgument("the request body must be a JSON object");
    for (const auto& [key, field] : value.items()) {
      bool known = false;
      for (std::string_view a : allowed) known = known || key == a;
      if (!known) {
        std::string list;
        for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        return InvalidArgument("unknown field '{}' (allowed: {})", key.substr(0, 64), list);
      }
    }
    return Body(value);
  }
  bool Has(const char* name) const { return value_.contains(name); }
  Result<std::string> String(const char* name, size_t max_bytes,
                             std::optional<std::string> fallback = std::nullopt) const {
    auto it = value_.find(name);
    if (it == value_.end()) {
      if (fallback) return *fallback;
      return InvalidArgument("missing required field '{}'", name);
    }
    if (!it->is_string())
      return InvalidArgument("field '{}' must be a string, got {}", name, it->type_name());
    std::string s = it->get<std::string>();
    if (s.size() > max_bytes)
      return InvalidArgument("field '{}' is {} bytes, over the limit {}", name, s.size(),
                             max_bytes);
    return s;
  }
  Result<uint64_t> Count(const char* name, uint64_t min, uint64_t max,
                         std::optional<uint64_t> fallback = std::nullopt) const {
    auto it = value_.find(name);
    if (it == value_.end()) {
      if (fallback) return *fallback;
      return InvalidArgument("missing required field '{}'", name);
    }
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
      return InvalidArgument("field '{}' must be a non-negative integer, got {}", name,
                             it->dump().substr(0, 40));
    const uint64_t v = it->get<uint64_t>();
    if (v < min || v > max)
      return InvalidArgument("field '{}': {} is out of range {}..{}", name, v, min, max);
    return v;
  }
  Result<double> Number(const char* name, double min, double max, double fallback) const {
    auto it = value_.find(name);
    if (it == value_.end()) return fallback;
    if (!it->is_number())
      return InvalidArgument("field '{}' must be a number, got {}", name, it->type_name());
    const double v = it->get<double>();
    if (!std::isfinite(v) || v < min || v > max)
      return InvalidArgument("field '{}': {} is out of range {}..{}", name, v, min, max);
    return v;
  }

 private:
  explicit Body(const json& value) : value_(value) {}
  const json& value_;
};

std::string Hex(std::span<const uint8_t> bytes) { return capsule::ToHex(bytes); }

template <typename T>
Result<T> Context(Result<T> result, std::string_view what) {
  if (!result.ok()) return result.status().WithContext(std::string(what));
  return result;
}

Result<capsule::CapsuleId> CapsuleIdFromHex(std::string_view hex) {
  capsule::CapsuleId id{};
  MLC_RETURN_IF_ERROR(capsule::FromHex(hex, id, "capsule_id"));
  return id;
}

json LicenseJson(const LicenseRecord& l) {
  return {{"id", l.id},
          {"customer_id", l.customer_id},
          {"capsule_id", Hex(l.capsule_id)},
          {"query_quota", l.query_quota},
          {"lease_queries", l.lease_queries},
          {"lease_seconds", l.lease_seconds},
          {"expires_at", l.expires_at},
          {"price_micros", l.price_micros},
          {"currency", l.currency},
          {"rate_per_minute", l.rate_per_minute},
          {"revoked", l.revoked},
          {"revoked_at", l.revoked_at},
          {"created_at", l.created_at}};
}

// The length of the padded base64 of `bytes` bytes: the bound on a JSON field that carries them.
constexpr size_t Base64Length(uint64_t bytes) { return static_cast<size_t>((bytes + 2) / 3 * 4); }

json AlertJson(const AlertRecord& a) {
  return {{"id", a.id},         {"license_id", a.license_id}, {"kind", a.kind},
          {"detail", a.detail}, {"created_at", a.created_at}, {"resolved", a.resolved}};
}

}  // namespace

Result<std::unique_ptr<LicenseService>> LicenseService::Create(std::unique_ptr<Store> store,
                                                               capsule::SecretBytes master,
                                                               capsule::SigningKeyPair signer,
                                                               ServiceOptions options) {
  if (master.size() != capsule::kSymmetricKeyBytes)
    return InvalidArgument("the master key must be {} bytes", capsule::kSymmetricKeyBytes);
  if (!options.clock) options.clock = WallClock;
  if (options.nonce_seconds < 10 || options.nonce_seconds > 3600)
    return InvalidArgument("nonce lifetime {} s is outside 10..3600", options.nonce_seconds);
  std::unique_ptr<LicenseService> service(new LicenseService());
  service->store_ = std::move(store);
  service->master_ = std::move(master);
  service->signer_ = std::move(signer);
  service->nonces_ = std::make_unique<NonceMinter>(service->master_);
  service->verifier_ = std::make_unique<evidence::Verifier>(options.anchors);
  service->options_ = std::move(options);
  service->batcher_ =
      std::make_unique<ReportBatcher>(service->store_.get(), service->options_.clock);
  return service;
}

LicenseService::~LicenseService() { batcher_.reset(); }

json LicenseService::Health() {
  auto version = store_->SchemaVersion();
  return {{"status", version.ok() ? "ok" : "degraded"},
          {"schema_version", version.ok() ? *version : -1},
          {"lease_signer", Hex(signer_.public_key)}};
}

// ---- credentials and limits -------------------------------------------------------------------

namespace {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<LicenseRecord> LicenseService::LicenseForToken(std::string_view token, bool fresh) {
  if (token.rfind(kLicenseTokenPrefix, 0) != 0)
    return Unauthenticated("a license token (mlclic_...) is required: Authorization: Bearer TOKEN");
  const capsule::Digest hash = TokenHash(token);
  const int64_t now_ms = SteadyMs();
  std::optional<LicenseRecord> cached;
  if (!fresh) {
    std::lock_guard lock(mutex_);
    auto it = licenses_by_token_.find(hash);
    if (it != licenses_by_token_.end() &&
        now_ms - it->second.fetched_ms < kTokenCacheSeconds * 1000)
      cached = it->second.license;
  }
  if (!cached) {
    auto license = store_->FindLicenseByToken(hash);
    if (!license.ok()) {
      if (license.status().code() == StatusCode::kNotFound)
        return Unauthenticated("unknown license token");
      return license.status();
    }
    std::lock_guard lock(mutex_);
    if (licenses_by_token_.size() >= kMaxCachedLicenses) licenses_by_token_.clear();
    licenses_by_token_[hash] = {*license, now_ms};
    cached = std::move(license).value();
  }
  MLC_RETURN_IF_ERROR(RateLimit(*cached));
  return std::move(*cached);
}

Status LicenseService::RateLimit(const LicenseRecord& license) {
  const double per_minute =
      license.rate_per_minute ? license.rate_per_minute : options_.default_rate_per_minute;
  const int64_t now_ms = SteadyMs();
  std::lock_guard lock(mutex_);
  Bucket& bucket = buckets_[license.id];
  if (bucket.last_ms == 0) bucket.tokens = per_minute;  // a full minute's burst to start
  bucket.tokens =
      std::min(per_minute, bucket.tokens + (now_ms - bucket.last_ms) * per_minute / 60000.0);
  bucket.last_ms = now_ms;
  if (bucket.tokens < 1.0)
    return ResourceExhausted("license {} is over its rate limit of {} requests per minute",
                             license.id, per_minute);
  bucket.tokens -= 1.0;
  return Status::Ok();
}

Status LicenseService::CheckAdmin(std::string_view token) {
  if (token.rfind(kAdminTokenPrefix, 0) != 0)
    return Unauthenticated("an admin token (mlcadm_...) is required: Authorization: Bearer TOKEN");
  auto record = store_->FindAdminToken(TokenHash(token));
  if (!record.ok() && record.status().code() == StatusCode::kNotFound)
    return Unauthenticated("unknown or revoked admin token");
  return record.status();
}

Result<std::string> LicenseService::CreateAdminToken(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes)
    return InvalidArgument("admin token name must be 1..{} bytes", kMaxNameBytes);
  std::string token = NewToken(kAdminTokenPrefix);
  AdminTokenRecord record{NewId("adm_"), name, TokenHash(token), Now()};
  MLC_RETURN_IF_ERROR(store_->CreateAdminToken(record));
  return token;
}

Result<std::shared_ptr<const LicenseService::CapsuleEntry>> LicenseService::Capsule(
    const capsule::CapsuleId& id) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = capsules_.find(id); it != capsules_.end()) return it->second;
  }
  MLC_ASSIGN_OR_RETURN(CapsuleRecord record, store_->GetCapsule(id));
  auto entry = std::make_shared<CapsuleEntry>();
  MLC_ASSIGN_OR_RETURN(entry->header, capsule::ParseCapsuleHeaderRegion(record.header));
  MLC_ASSIGN_OR_RETURN(entry->policy, capsule::ParsePolicy(entry->header.policy_json));
  MLC_ASSIGN_OR_RETURN(entry->key, UnwrapCapsuleKey(master_, id, record.wrapped_key));
  entry->record = std::move(record);
  std::lock_guard lock(mutex_);
  capsules_.emplace(id, entry);
  return std::shared_ptr<const CapsuleEntry>(entry);
}

// ---- client API -------------------------------------------------------------------------------

Result<json> LicenseService::Nonce(std::string_view token) {
  MLC_ASSIGN_OR_RETURN(LicenseRecord license, LicenseForToken(token, /*fresh=*/false));
  const int64_t expires_at = Now() + options_.nonce_seconds;
  return json{{"nonce", Hex(nonces_->Mint(expires_at))},
              {"expires_at", expires_at},
              {"license_id", license.id}};
}

Result<evidence::Verdict> LicenseService::VerifyHardwareEvidence(
    const capsule::EvidenceRequest& request, const CapsuleEntry& entry, int64_t now) {
  const evidence::IntelCollateral* collateral = nullptr;
  if (request.evidence_type == capsule::EvidenceType::kSgx ||
      request.evidence_type == capsule::EvidenceType::kTdx) {
    const char* tee = request.evidence_type == capsule::EvidenceType::kSgx ? "SGX" : "TDX";
    // With one collateral for this TEE there is nothing to choose: the verifier checks its FMSPC
    // against the PCK certificate's (collateral_mismatch), and QuoteFmspc, which parses the PEM
    // chain outside the verifier's certificate cache, would cost more than the verification.
    std::vector<const evidence::IntelCollateral*> candidates;
    for (const evidence::IntelCollateral& c : options_.intel_collateral)
      if (evidence::CollateralTeeId(c) == tee) candidates.push_back(&c);
    std::string fmspc;
    if (candidates.size() == 1) {
      collateral = candidates.front();
    } else {
      MLC_ASSIGN_OR_RETURN(fmspc, evidence::QuoteFmspc(request.evidence));
      for (const evidence::IntelCollateral* c : candidates)
        if (evidence::CollateralFmspc(*c) == fmspc) collateral = c;
    }
    if (collateral == nullptr)
      return FailedPrecondition(
          "this server has no {} collateral for FMSPC {}: the operator must add it "
          "(--intel-collateral)",
          tee, fmspc);
  }
  MLC_ASSIGN_OR_RETURN(
      evidence::Verdict verdict,
      Context(verifier_->Verify(request.evidence_type, request.evidence, collateral, now),
              "evidence"));
  const capsule::ReportData binding = capsule::ComputeReportData(
      request.nonce, request.capsule_id, request.core_box_key, request.core_signing_key);
  MLC_RETURN_IF_ERROR(evidence::CheckPolicy(
      verdict, evidence::PolicyFor(entry.policy, request.evidence_type), &binding));
  return verdict;
}

// Every attestation is logged once, accepted (info) or refused (warn) with the reason; never the
// token, the evidence bytes or the lease.
Result<json> LicenseService::Attest(std::string_view token, const json& body) {
  std::string license_id, evidence_type;
  Result<json> answer = AttestAndRecord(token, body, &license_id, &evidence_type);
  if (answer.ok()) {
    const json& a = *answer;
    log::Info("server", "attest.accepted", "attestation accepted, lease issued",
              {{"license", license_id},
               {"lease", a.value("lease_id", "")},
               {"sequence", a.value("sequence", uint64_t{0})},
               {"quota", a.value("query_quota", uint64_t{0})},
               {"expires_at", a.value("expires_at", int64_t{0})},
               {"tee", evidence_type},
               {"evidence", a.value("evidence", "")},
               {"tee_bound", a.value("tee_bound", false)}});
  } else {
    log::Fields fields = {{"license", license_id.empty() ? "unknown" : license_id},
                          {"status", HttpStatusFor(answer.status())},
                          {"reason", answer.status().message()}};
    if (!evidence_type.empty()) fields["tee"] = evidence_type;
    log::Warn("server", "attest.refused", "attestation refused", fields);
  }
  return answer;
}

void LicenseService::LogReport(const capsule::UsageReport& report, const ReportResult& result,
                               std::string_view via) {
  log::Fields fields = {{"license", report.license_id.substr(0, 128)},
                        {"lease", Hex(report.lease_id)},
                        {"report_sequence", report.report_sequence},
                        {"to_count", report.to_count},
                        {"outcome", ReportOutcomeName(result.outcome)},
                        {"billed", result.billed_queries},
                        {"alerts", report.alerts.size()},
                        {"via", via}};
  if (!result.detail.empty()) fields["detail"] = result.detail;
  if (result.outcome == ReportOutcome::kFork) {
    log::Warn("server", "alert.recorded",
              "usage report forks the usage chain: alert raised, renewal blocked",
              {{"license", report.license_id.substr(0, 128)},
               {"kind", "fork"},
               {"detail", result.detail}});
  }
  log::Info("server", "usage.recorded", "usage report recorded", fields);
}

Result<json> LicenseService::AttestAndRecord(std::string_view token, const json& body,
                                             std::string* license_id, std::string* evidence_type) {
  const int64_t now = Now();
  MLC_ASSIGN_OR_RETURN(LicenseRecord license, LicenseForToken(token, /*fresh=*/true));
  *license_id = license.id;
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"evidence_request"}));
  MLC_ASSIGN_OR_RETURN(std::string text, b.String("evidence_request",
                                                  Base64Length(capsule::kMaxEvidenceRequestBytes)));
  MLC_ASSIGN_OR_RETURN(
      std::vector<uint8_t> bytes,
      capsule::FromBase64(text, capsule::kMaxEvidenceRequestBytes, "evidence_request"));
  MLC_ASSIGN_OR_RETURN(capsule::EvidenceRequest request, capsule::ParseEvidenceRequest(bytes));
  *evidence_type = capsule::EvidenceTypeName(request.evidence_type);
  MLC_RETURN_IF_ERROR(nonces_->Check(request.nonce, now));
  if (license.revoked)
    return PermissionDenied("license {} was revoked (at {})", license.id, license.revoked_at);
  if (now >= license.expires_at)
    return PermissionDenied("license {} expired at {}", license.id, license.expires_at);
  if (request.capsule_id != license.capsule_id)
    return PermissionDenied("license {} is for capsule {}, the evidence is for capsule {}",
                            license.id, Hex(license.capsule_id), Hex(request.capsule_id));
  MLC_ASSIGN_OR_RETURN(std::shared_ptr<const CapsuleEntry> entry, Capsule(license.capsule_id));

  // The usage report of the current lease comes first: recorded (idempotently) before anything
  // else, so a renewal can never skip billing.
  std::optional<capsule::UsageReport> report;
  if (request.usage_report) {
    MLC_ASSIGN_OR_RETURN(report, Context(capsule::ParseAndVerifyUsageReport(*request.usage_report),
                                         "attached usage report"));
    if (report->license_id != license.id)
      return PermissionDenied("the attached usage report is for license {}, not {}",
                              report->license_id.substr(0, 128), license.id);
    MLC_ASSIGN_OR_RETURN(
        ReportResult recorded,
        Context(batcher_->Record(*report, *request.usage_report), "attached usage report"));
    LogReport(*report, recorded, "attest");
    if (recorded.outcome == ReportOutcome::kFork)
      return PermissionDenied(
          "renewal refused: the usage report forks the usage chain ({}); an alert was raised",
          recorded.detail);
  }
  MLC_ASSIGN_OR_RETURN(Store::RenewalState state, store_->LicenseRenewalState(license.id));
  if (state.fork)
    return PermissionDenied(
        "renewal blocked: license {} has an unresolved fork alert (a rolled-back or cloned "
        "client); the operator must resolve it",
        license.id);
  const std::optional<LeaseState>& latest = state.latest;
  if (latest) {
    if (report && report->lease_id != latest->lease.lease_id)
      return FailedPrecondition(
          "the attached usage report is for lease {}, not the current lease {} (sequence {})",
          Hex(report->lease_id), Hex(latest->lease.lease_id), latest->lease.sequence);
    if (latest->reports == 0)
      return FailedPrecondition(
          "lease {} (sequence {}) has no usage report yet: the next lease is issued only after "
          "the report for the current one (attach it to the evidence request)",
          Hex(latest->lease.lease_id), latest->lease.sequence);
  }
  const uint64_t billed = state.billed;
  const uint64_t left = billed >= license.query_quota ? 0 : license.query_quota - billed;
  if (left == 0)
    return ResourceExhausted("license {} has used its quota: {} of {} queries billed", license.id,
                             billed, license.query_quota);

  std::string summary;
  const bool hardware = request.evidence_type != capsule::EvidenceType::kSoftware;
  std::optional<capsule::TeeBoundKey> tee_bound;
  if (hardware) {
    MLC_ASSIGN_OR_RETURN(evidence::Verdict verdict, VerifyHardwareEvidence(request, *entry, now));
    summary = verdict.Summary();
    if (request.evidence_type == capsule::EvidenceType::kTpm) {
      // The quote proves the AK signed it and the EK certificate names a real TPM; only
      // credential activation proves the AK lives in that TPM. The capsule key in the lease is
      // masked by a secret that only that TPM can recover (docs/tee-backends.md).
      capsule::SecretBytes secret(32);
      capsule::RandomBytes(secret.span());
      MLC_ASSIGN_OR_RETURN(evidence::TpmCredential credential,
                           Context(evidence::MakeTpmCredential(verdict.tpm_ek_cert_der,
                                                               verdict.ak_name, secret.span()),
                                   "TPM credential"));
      tee_bound = capsule::TeeBoundKey{capsule::TeeBinding{std::move(credential.id_object),
                                                           std::move(credential.encrypted_secret)},
                                       std::move(secret)};
    }
  }
  capsule::LeaseTerms terms;
  terms.license_id = license.id;
  terms.query_quota = std::min({license.lease_queries, left, entry->policy.lease.max_queries});
  terms.valid_seconds = std::min({license.lease_seconds, license.expires_at - now,
                                  entry->policy.lease.max_days * int64_t{86400}});
  terms.now = now;
  terms.sequence = latest ? latest->lease.sequence + 1 : 1;
  terms.evidence_verified = hardware;
  terms.expected_nonce = request.nonce;
  MLC_ASSIGN_OR_RETURN(capsule::CheckedRequest checked,
                       capsule::CheckEvidenceRequest(bytes, entry->header, entry->policy, terms));
  if (!hardware) summary = checked.evidence_summary;
  MLC_ASSIGN_OR_RETURN(
      std::vector<uint8_t> lease_bytes,
      capsule::IssueLeaseForRequest(checked, entry->header, entry->policy, entry->key, signer_,
                                    terms, tee_bound ? &*tee_bound : nullptr));
  MLC_ASSIGN_OR_RETURN(capsule::Lease lease, capsule::ParseLease(lease_bytes));
  LeaseRecord record;
  record.lease_id = lease.body.lease_id;
  record.license_id = license.id;
  record.capsule_id = lease.body.capsule_id;
  record.sequence = lease.body.sequence;
  record.chain_base_count = lease.body.chain_base_count;
  record.chain_base = lease.body.chain_base;
  record.core_signing_key = lease.body.core_signing_key;
  record.query_quota = lease.body.query_quota;
  record.issued_at = lease.body.issued_at;
  record.expires_at = lease.body.expires_at;
  record.nonce = request.nonce;
  if (Status s = store_->RecordLease(record); !s.ok()) {
    if (s.code() == StatusCode::kAlreadyExists && s.message().find("nonce") != std::string::npos) {
      (void)store_->RaiseAlert(license.id, "replay",
                               "an attestation reused nonce " + Hex(request.nonce), now);
      log::Warn("server", "alert.recorded", "replayed attestation refused: alert raised",
                {{"license", license.id}, {"kind", "replay"}, {"nonce", Hex(request.nonce)}});
      return PermissionDenied("the nonce was already used: a replayed attestation is refused");
    }
    return s;
  }
  return json{{"lease", capsule::ToBase64(lease_bytes)},
              {"lease_id", Hex(record.lease_id)},
              {"license_id", license.id},
              {"sequence", record.sequence},
              {"query_quota", record.query_quota},
              {"issued_at", record.issued_at},
              {"expires_at", record.expires_at},
              {"chain_base_count", record.chain_base_count},
              {"evidence", summary},
              {"tee_bound", tee_bound.has_value()}};
}

Result<json> LicenseService::Usage(std::string_view token, const json& body) {
  MLC_ASSIGN_OR_RETURN(LicenseRecord license, LicenseForToken(token, /*fresh=*/false));
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"usage_report"}));
  MLC_ASSIGN_OR_RETURN(std::string text,
                       b.String("usage_report", Base64Length(capsule::kMaxUsageReportBytes)));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                       capsule::FromBase64(text, capsule::kMaxUsageReportBytes, "usage_report"));
  MLC_ASSIGN_OR_RETURN(capsule::UsageReport report, capsule::ParseAndVerifyUsageReport(bytes));
  if (report.license_id != license.id)
    return PermissionDenied("this token is for license {}, the report is for license {}",
                            license.id, report.license_id.substr(0, 128));
  MLC_ASSIGN_OR_RETURN(ReportResult result, batcher_->Record(report, bytes));
  LogReport(report, result, "usage");
  if (result.outcome == ReportOutcome::kFork)
    return FailedPrecondition(
        "the usage report forks the usage chain ({}): recorded, not billed, "
        "renewal blocked until the operator resolves it",
        result.detail);
  return json{{"outcome", ReportOutcomeName(result.outcome)},
              {"billed_queries", result.billed_queries},
              {"to_count", report.to_count},
              {"detail", result.detail}};
}

Result<json> LicenseService::LicenseStatus(std::string_view token) {
  MLC_ASSIGN_OR_RETURN(LicenseRecord license, LicenseForToken(token, /*fresh=*/true));
  MLC_ASSIGN_OR_RETURN(uint64_t billed, store_->BilledQueries(license.id));
  json j = LicenseJson(license);
  j["billed_queries"] = billed;
  return j;
}

// ---- admin API --------------------------------------------------------------------------------

Result<json> LicenseService::CreateProvider(const json& body) {
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"id", "name"}));
  ProviderRecord p;
  MLC_ASSIGN_OR_RETURN(p.id, b.String("id", 64, NewId("prv_")));
  MLC_RETURN_IF_ERROR(CheckId(p.id, "provider id"));
  MLC_ASSIGN_OR_RETURN(p.name, b.String("name", kMaxNameBytes));
  p.created_at = Now();
  MLC_RETURN_IF_ERROR(store_->CreateProvider(p));
  return json{{"id", p.id}, {"name", p.name}, {"created_at", p.created_at}};
}

Result<json> LicenseService::ListProviders() {
  MLC_ASSIGN_OR_RETURN(auto list, store_->ListProviders());
  json out = json::array();
  for (const ProviderRecord& p : list)
    out.push_back({{"id", p.id}, {"name", p.name}, {"created_at", p.created_at}});
  return out;
}

Result<json> LicenseService::CreateCustomer(const json& body) {
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"id", "provider_id", "name"}));
  CustomerRecord c;
  MLC_ASSIGN_OR_RETURN(c.id, b.String("id", 64, NewId("cus_")));
  MLC_RETURN_IF_ERROR(CheckId(c.id, "customer id"));
  MLC_ASSIGN_OR_RETURN(c.provider_id, b.String("provider_id", 64));
  MLC_ASSIGN_OR_RETURN(c.name, b.String("name", kMaxNameBytes));
  c.created_at = Now();
  MLC_RETURN_IF_ERROR(store_->CreateCustomer(c));
  return json{
      {"id", c.id}, {"provider_id", c.provider_id}, {"name", c.name}, {"created_at", c.created_at}};
}

Result<json> LicenseService::ListCustomers(const std::string& provider_id) {
  MLC_ASSIGN_OR_RETURN(auto list, store_->ListCustomers(provider_id));
  json out = json::array();
  for (const CustomerRecord& c : list)
    out.push_back({{"id", c.id},
                   {"provider_id", c.provider_id},
                   {"name", c.name},
                   {"created_at", c.created_at}});
  return out;
}

Result<json> LicenseService::CreateCapsule(const json& body) {
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"provider_id", "name", "header", "capsule_key"}));
  CapsuleRecord c;
  MLC_ASSIGN_OR_RETURN(c.provider_id, b.String("provider_id", 64));
  MLC_ASSIGN_OR_RETURN(std::string header_text, b.String("header", 2 * 1024 * 1024));
  MLC_ASSIGN_OR_RETURN(c.header, capsule::FromBase64(header_text, (1 << 20) + 64, "header"));
  MLC_ASSIGN_OR_RETURN(capsule::CapsuleHeader header, capsule::ParseCapsuleHeaderRegion(c.header));
  MLC_ASSIGN_OR_RETURN(c.name, b.String("name", kMaxNameBytes, header.model_name));
  MLC_ASSIGN_OR_RETURN(capsule::Policy policy, capsule::ParsePolicy(header.policy_json));
  (void)policy;
  bool pinned = false;
  for (const capsule::PublicKey& k : header.lease_signers)
    pinned = pinned || k == signer_.public_key;
  if (!pinned)
    return FailedPrecondition(
        "capsule {} does not pin this server's lease key {}: pack it with --lease-signer "
        "pointing at the server's public key (GET /v1/health shows it)",
        Hex(header.capsule_id), Hex(signer_.public_key));
  MLC_ASSIGN_OR_RETURN(std::string key_text, b.String("capsule_key", 64));
  capsule::SecretBytes key(capsule::kSymmetricKeyBytes);
  MLC_RETURN_IF_ERROR(capsule::FromHex(key_text, key.span(), "capsule_key"));
  c.capsule_id = header.capsule_id;
  c.wrapped_key = WrapCapsuleKey(master_, c.capsule_id, key);
  c.created_at = Now();
  MLC_RETURN_IF_ERROR(store_->CreateCapsule(c));
  return json{{"capsule_id", Hex(c.capsule_id)},
              {"provider_id", c.provider_id},
              {"name", c.name},
              {"policy", json::parse(header.policy_json, nullptr, false)},
              {"created_at", c.created_at}};
}

Result<json> LicenseService::ListCapsules() {
  MLC_ASSIGN_OR_RETURN(auto list, store_->ListCapsules());
  json out = json::array();
  for (const CapsuleRecord& c : list)
    out.push_back({{"capsule_id", Hex(c.capsule_id)},
                   {"provider_id", c.provider_id},
                   {"name", c.name},
                   {"created_at", c.created_at}});
  return out;
}

Result<json> LicenseService::CreateLicense(const json& body) {
  MLC_ASSIGN_OR_RETURN(Body b, Body::Of(body, {"id", "customer_id", "capsule_id", "query_quota",
                                               "lease_queries", "lease_days", "valid_days",
                                               "price_per_query", "currency", "rate_per_minute"}));
  const int64_t now = Now();
  LicenseRecord l;
  MLC_ASSIGN_OR_RETURN(l.id, b.String("id", 64, NewId("lic_")));
  MLC_RETURN_IF_ERROR(CheckId(l.id, "license id"));
  MLC_ASSIGN_OR_RETURN(l.customer_id, b.String("customer_id", 64));
  MLC_ASSIGN_OR_RETURN(std::string capsule_hex, b.String("capsule_id", 64));
  MLC_ASSIGN_OR_RETURN(l.capsule_id, CapsuleIdFromHex(capsule_hex));
  MLC_ASSIGN_OR_RETURN(l.query_quota, b.Count("query_quota", 1, kMaxCount));
  MLC_ASSIGN_OR_RETURN(l.lease_queries, b.Count("lease_queries", 1, kMaxCount, l.query_quota));
  MLC_ASSIGN_OR_RETURN(double lease_days, b.Number("lease_days", 1.0 / 24, 3650, 7));
  MLC_ASSIGN_OR_RETURN(double valid_days, b.Number("valid_days", 1.0 / 24, 36500, 365));
  MLC_ASSIGN_OR_RETURN(double price, b.Number("price_per_query", 0, 1e6, 0));
  MLC_ASSIGN_OR_RETURN(l.currency, b.String("currency", 3, std::string("EUR")));
  if (l.currency.size() != 3)
    return InvalidArgument("field 'currency' must be a 3-letter ISO 4217 code, got '{}'",
                           l.currency);
  MLC_ASSIGN_OR_RETURN(uint64_t rate, b.Count("rate_per_minute", 0, 10'000'000, 0));
  l.lease_seconds = static_cast<int64_t>(lease_days * 86400);
  l.expires_at = now + static_cast<int64_t>(valid_days * 86400);
  l.price_micros = std::llround(price * 1e6);
  l.rate_per_minute = static_cast<uint32_t>(rate);
  l.created_at = now;
  MLC_ASSIGN_OR_RETURN(CapsuleRecord capsule, store_->GetCapsule(l.capsule_id));
  (void)capsule;
  const std::string token = NewToken(kLicenseTokenPrefix);
  l.token_hash = TokenHash(token);
  MLC_RETURN_IF_ERROR(store_->CreateLicense(l));
  json j = LicenseJson(l);
  j["token"] = token;
  j["token_note"] = "shown once: the server stores only its hash";
  return j;
}

Result<json> LicenseService::ListLicenses(const std::string& customer_id) {
  MLC_ASSIGN_OR_RETURN(auto list, store_->ListLicenses(customer_id));
  json out = json::array();
  for (const LicenseRecord& l : list) out.push_back(LicenseJson(l));
  return out;
}

Result<json> LicenseService::GetLicense(const std::string& id) {
  MLC_ASSIGN_OR_RETURN(LicenseRecord l, store_->GetLicense(id));
  MLC_ASSIGN_OR_RETURN(uint64_t billed, store_->BilledQueries(id));
  MLC_ASSIGN_OR_RETURN(std::optional<LeaseState> latest, store_->LatestLease(id));
  MLC_ASSIGN_OR_RETURN(bool fork, store_->HasFork(id));
  json j = LicenseJson(l);
  j["billed_queries"] = billed;
  j["fork"] = fork;
  if (latest)
    j["current_lease"] = {{"lease_id", Hex(latest->lease.lease_id)},
                          {"sequence", latest->lease.sequence},
                          {"query_quota", latest->lease.query_quota},
                          {"expires_at", latest->lease.expires_at},
                          {"chain_base_count", latest->lease.chain_base_count},
                          {"recorded_count", latest->recorded_count},
                          {"reports", latest->reports}};
  return j;
}

Result<json> LicenseService::RevokeLicense(const std::string& id) {
  MLC_RETURN_IF_ERROR(store_->RevokeLicense(id, Now()));
  return GetLicense(id);
}

Result<json> LicenseService::ResolveForks(const std::string& id) {
  MLC_ASSIGN_OR_RETURN(int64_t resolved, store_->ResolveForks(id));
  return json{{"license_id", id}, {"resolved", resolved}};
}

Result<json> LicenseService::Billing(const std::string& customer_id, int64_t from, int64_t to) {
  if (from >= to) return InvalidArgument("billing period: from {} is not before to {}", from, to);
  MLC_ASSIGN_OR_RETURN(CustomerRecord customer, store_->GetCustomer(customer_id));
  MLC_ASSIGN_OR_RETURN(std::vector<BillLine> lines, store_->Billing(customer_id, from, to));
  json out_lines = json::array();
  std::map<std::string, int64_t> totals;
  for (const BillLine& line : lines) {
    out_lines.push_back({{"license_id", line.license_id},
                         {"capsule_id", Hex(line.capsule_id)},
                         {"queries", line.queries},
                         {"price_micros", line.price_micros},
                         {"currency", line.currency},
                         {"amount_micros", line.amount_micros},
                         {"amount", fmt::format("{:.6f}", line.amount_micros / 1e6)}});
    totals[line.currency] += line.amount_micros;
  }
  json total = json::object();
  for (const auto& [currency, micros] : totals)
    total[currency] = fmt::format("{:.6f}", micros / 1e6);
  return json{{"customer_id", customer.id},
              {"customer", customer.name},
              {"from", from},
              {"to", to},
              {"lines", out_lines},
              {"total", total}};
}

Result<json> LicenseService::Alerts(const std::string& license_id, int64_t after_id) {
  MLC_ASSIGN_OR_RETURN(auto list, store_->Alerts(license_id, after_id));
  json out = json::array();
  for (const AlertRecord& a : list) out.push_back(AlertJson(a));
  return out;
}

Result<json> LicenseService::UsageReports(const std::string& license_id, int64_t after_id,
                                          int64_t limit) {
  if (limit < 1 || limit > kMaxReportPage)
    return InvalidArgument("limit {} is out of range 1..{}", limit, kMaxReportPage);
  if (after_id < 0) return InvalidArgument("after {} is negative", after_id);
  MLC_ASSIGN_OR_RETURN(LicenseRecord license, store_->GetLicense(license_id));
  MLC_ASSIGN_OR_RETURN(
      std::vector<StoredReport> reports,
      store_->ListUsageReports(license.id, after_id, static_cast<size_t>(limit), kReportPageBytes));
  json list = json::array();
  int64_t next_after = after_id;
  for (const StoredReport& r : reports) {
    json entry = {{"id", r.id},
                  {"lease_id", Hex(r.lease_id)},
                  {"report_sequence", r.report_sequence},
                  {"to_count", r.to_count},
                  {"outcome", ReportOutcomeName(r.outcome)},
                  {"billed_queries", r.billed_queries},
                  {"created_at", r.created_at},
                  {"bytes", capsule::ToBase64(r.bytes)}};
    // The stored bytes were verified when they arrived; parsing again only reads counts out.
    if (Result<capsule::UsageReport> parsed = capsule::ParseUsageReport(r.bytes); parsed.ok()) {
      entry["alerts"] = parsed->alerts.size();
      entry["escrow_records"] = parsed->escrow.size();
    }
    list.push_back(std::move(entry));
    next_after = r.id;
  }
  return json{{"license_id", license.id}, {"reports", list}, {"next_after", next_after}};
}

int HttpStatusFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
    case StatusCode::kDataLoss:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kIoError:
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

}  // namespace mlcapsule::server
