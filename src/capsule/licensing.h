// The provider's side of key release, shared by the air-gapped CLI (`mlcapsule lease issue`) and
// the license server: check an evidence request against the capsule and its policy, then issue a
// lease that continues the core's usage chain. Hardware evidence (sgx, tdx, snp, tpm) is verified
// by the server's evidence verifiers; this file checks the software evidence itself and refuses
// every other type unless the caller has verified it (LeaseTerms::evidence_verified).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "capsule/capsule_file.h"
#include "capsule/messages.h"
#include "capsule/policy.h"

namespace mlcapsule::capsule {

// software evidence := magic:"MLCSWEV1" measurement:u8[32] report_data:u8[64]
struct SoftwareEvidence {
  Digest measurement{};
  ReportData report_data{};
};
Result<SoftwareEvidence> ParseSoftwareEvidence(std::span<const uint8_t> bytes);

struct LeaseTerms {
  std::string license_id;
  uint64_t query_quota = 0;
  int64_t valid_seconds = 0;
  int64_t now = 0;                 // issue time (unix seconds)
  uint64_t sequence = 0;           // > the previous lease's for the same license and chain point
  bool evidence_verified = false;  // hardware evidence already verified by the caller
  // The nonce the issuer handed out (server); unset: the request's own nonce is taken as is
  // (air-gapped: freshness comes from the core's one-time keys and the lease sequence).
  std::optional<Nonce> expected_nonce;
};

struct CheckedRequest {
  EvidenceRequest request;
  std::optional<UsageReport> report;  // verified, signed by the request's core key
  std::string evidence_summary;       // "software, measurement 1a2b..."
};

// Parses and checks a request for `header`: capsule id, evidence type accepted by the policy,
// software evidence binding (report data) and measurement allow-list, the attached usage report's
// signature, key and capsule.
Result<CheckedRequest> CheckEvidenceRequest(std::span<const uint8_t> request_bytes,
                                            const CapsuleHeader& header, const Policy& policy,
                                            const LeaseTerms& terms);

// Issues a lease for a checked request: the chain continues from the attached report's end (or
// the core's genesis for a first lease); quota and validity are checked against the policy.
// `tee_bound` (TPM evidence, made by the server after verifying it): the lease carries the
// credential and its secret masks the capsule key (messages.h).
struct TeeBoundKey {
  TeeBinding binding;
  SecretBytes secret;
};
Result<std::vector<uint8_t>> IssueLeaseForRequest(const CheckedRequest& checked,
                                                  const CapsuleHeader& header, const Policy& policy,
                                                  const SecretBytes& capsule_key,
                                                  const SigningKeyPair& signer,
                                                  const LeaseTerms& terms,
                                                  const TeeBoundKey* tee_bound = nullptr);

}  // namespace mlcapsule::capsule
