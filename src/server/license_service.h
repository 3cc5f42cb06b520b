// The license server's protocol and admin logic (DESIGN.md, "Key release and metering"), apart
// from HTTP so that tests can drive it directly. Every input is untrusted: tokens are checked
// against stored hashes, JSON bodies are parsed strictly (unknown fields and wrong types are
// errors naming the field), messages are bounded before they are decoded.
//
// The client calls, all with a license token (scoped to one license):
//   Nonce   -> a fresh nonce the core binds its evidence to
//   Attest  -> evidence request (+ the usage report of the current lease) -> a lease that carries
//              the capsule key wrapped to the attested core key
//   Usage   -> a signed usage report, recorded idempotently (group commit, report_batcher.h)
// The admin calls, with an admin token: providers, customers, capsules, licenses, revocation,
// billing, alerts and the recorded usage reports.
//
//   MLC_ASSIGN_OR_RETURN(auto service, LicenseService::Create(std::move(store), std::move(master),
//                                                             std::move(signer), options));
//   Result<nlohmann::json> lease = service->Attest(token, body);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "base/status.h"
#include "capsule/crypto.h"
#include "server/evidence/evidence.h"
#include "server/report_batcher.h"
#include "server/server_keys.h"
#include "server/store.h"

namespace mlcapsule::server {

using nlohmann::json;

struct ServiceOptions {
  int64_t nonce_seconds = 120;             // how long a nonce stays valid
  uint32_t default_rate_per_minute = 600;  // per license, attest + usage + nonce requests
  evidence::TrustAnchors anchors = evidence::TrustAnchors::Pinned();
  std::vector<evidence::IntelCollateral> intel_collateral;  // chosen per quote by type and FMSPC
  std::function<int64_t()> clock;                           // unset: the wall clock
};

class LicenseService {
 public:
  static Result<std::unique_ptr<LicenseService>> Create(std::unique_ptr<Store> store,
                                                        capsule::SecretBytes master,
                                                        capsule::SigningKeyPair signer,
                                                        ServiceOptions options);
  ~LicenseService();

  // --- client API (license token)
  Result<json> Nonce(std::string_view license_token);
  Result<json> Attest(std::string_view license_token, const json& body);
  // Ok for accepted, duplicate and stale reports; a fork is FailedPrecondition after it is
  // recorded and alerted.
  Result<json> Usage(std::string_view license_token, const json& body);
  Result<json> LicenseStatus(std::string_view license_token);

  // --- admin API
  Status CheckAdmin(std::string_view admin_token);
  Result<json> CreateProvider(const json& body);
  Result<json> ListProviders();
  Result<json> CreateCustomer(const json& body);
  Result<json> ListCustomers(const std::string& provider_id);
  Result<json> CreateCapsule(const json& body);
  Result<json> ListCapsules();
  Result<json> CreateLicense(const json& body);  // the answer holds the license token, once
  Result<json> ListLicenses(const std::string& customer_id);
  Result<json> GetLicense(const std::string& id);
  Result<json> RevokeLicense(const std::string& id);
  Result<json> ResolveForks(const std::string& id);
  Result<json> Billing(const std::string& customer_id, int64_t from, int64_t to);
  Result<json> Alerts(const std::string& license_id, int64_t after_id);
  // A page of the license's recorded usage reports (exact signed bytes, base64) with id >
  // after_id: at most `limit` (1..kMaxReportPage) and about kReportPageBytes of reports. An
  // empty page is the end. For `mlcapsule admin reports` (watermark escrow export).
  Result<json> UsageReports(const std::string& license_id, int64_t after_id, int64_t limit);
  static constexpr int64_t kMaxReportPage = 100;
  static constexpr int64_t kDefaultReportPage = 16;
  static constexpr uint64_t kReportPageBytes = uint64_t{2} << 20;
  // Bootstrap (`mlcapsule server --create-admin-token NAME`): the token, shown once.
  Result<std::string> CreateAdminToken(const std::string& name);

  json Health();
  const capsule::PublicKey& lease_signer() const { return signer_.public_key; }
  uint64_t report_batches() const { return batcher_->batches(); }

 private:
  struct CapsuleEntry;
  static constexpr int64_t kTokenCacheSeconds = 10;
  static constexpr size_t kMaxCachedLicenses = 100000;
  LicenseService() = default;
  int64_t Now() const { return options_.clock(); }
  // `fresh`: read the license from the store (attestation: revocation and expiry take effect
  // at once); otherwise a copy at most kTokenCacheSeconds old may answer (usage reports and
  // nonces, which never depend on revocation), keeping the store free for the ledger's writes.
  Result<LicenseRecord> LicenseForToken(std::string_view token, bool fresh);
  Status RateLimit(const LicenseRecord& license);
  Result<std::shared_ptr<const CapsuleEntry>> Capsule(const capsule::CapsuleId& id);
  // Attest without the log line; sets *license_id and *evidence_type as soon as they are known.
  Result<json> AttestAndRecord(std::string_view license_token, const json& body,
                               std::string* license_id, std::string* evidence_type);
  // Logs what the ledger made of a usage report (usage.recorded; alert.recorded for a fork).
  void LogReport(const capsule::UsageReport& report, const ReportResult& result,
                 std::string_view via);
  Result<evidence::Verdict> VerifyHardwareEvidence(const capsule::EvidenceRequest& request,
                                                   const CapsuleEntry& entry, int64_t now);

  std::unique_ptr<Store> store_;
  capsule::SecretBytes master_;
  capsule::SigningKeyPair signer_;
  ServiceOptions options_;
  std::unique_ptr<NonceMinter> nonces_;
  std::unique_ptr<evidence::Verifier> verifier_;
  std::unique_ptr<ReportBatcher> batcher_;

  std::mutex mutex_;  // guards the caches and rate buckets below
  std::map<capsule::CapsuleId, std::shared_ptr<const CapsuleEntry>> capsules_;
  struct CachedLicense {
    LicenseRecord license;
    int64_t fetched_ms = 0;
  };
  std::map<capsule::Digest, CachedLicense> licenses_by_token_;
  struct Bucket {
    double tokens = 0;
    int64_t last_ms = 0;
  };
  std::map<std::string, Bucket> buckets_;
};

// The HTTP status for a Status code (400, 401, 403, 404, 409, 413, 429, 500, 503).
int HttpStatusFor(const Status& status);

}  // namespace mlcapsule::server
