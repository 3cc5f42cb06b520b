// Provider-side request checking and lease issuing (licensing.h).
#include "capsule/licensing.h"

#include <algorithm>
#include <cstring>

namespace mlcapsule::capsule {

Result<SoftwareEvidence> ParseSoftwareEvidence(std::span<const uint8_t> bytes) {
  static constexpr char kMagic[8] = {'M', 'L', 'C', 'S', 'W', 'E', 'V', '1'};
  if (bytes.size() != 8 + 32 + 64)
    return DataLoss("software evidence has {} bytes, expected {}", bytes.size(), 8 + 32 + 64);
  if (std::memcmp(bytes.data(), kMagic, 8) != 0)
    return DataLoss("software evidence: bad magic (expected MLCSWEV1)");
  SoftwareEvidence e;
  std::memcpy(e.measurement.data(), bytes.data() + 8, 32);
  std::memcpy(e.report_data.data(), bytes.data() + 40, 64);
  return e;
}

Result<CheckedRequest> CheckEvidenceRequest(std::span<const uint8_t> request_bytes,
                                            const CapsuleHeader& header, const Policy& policy,
                                            const LeaseTerms& terms) {
  CheckedRequest checked;
  MLC_ASSIGN_OR_RETURN(checked.request, ParseEvidenceRequest(request_bytes));
  const EvidenceRequest& r = checked.request;
  if (r.capsule_id != header.capsule_id)
    return InvalidArgument("the request is for capsule {}, not {}", CapsuleIdHex(r.capsule_id),
                           CapsuleIdHex(header.capsule_id));
  if (terms.expected_nonce && !ConstantTimeEqual(*terms.expected_nonce, r.nonce))
    return PermissionDenied("the request's nonce is not the one issued");
  const std::string type = EvidenceTypeName(r.evidence_type);
  if (!PolicyAcceptsTee(policy, type))
    return PermissionDenied("the capsule's policy does not accept '{}' evidence (tee.accept)",
                            type);
  if (r.evidence_type == EvidenceType::kSoftware) {
    MLC_ASSIGN_OR_RETURN(SoftwareEvidence e, ParseSoftwareEvidence(r.evidence));
    ReportData expected =
        ComputeReportData(r.nonce, r.capsule_id, r.core_box_key, r.core_signing_key);
    if (!ConstantTimeEqual(expected, e.report_data))
      return PermissionDenied(
          "the software evidence's report data does not bind this request's nonce, capsule and "
          "core keys");
    const std::string measurement = ToHex(e.measurement);
    for (const MeasurementList& list : policy.tee.measurements) {
      if (list.tee != "software" || list.allowed.empty()) continue;
      if (std::find(list.allowed.begin(), list.allowed.end(), measurement) == list.allowed.end())
        return PermissionDenied(
            "software core measurement {} is not in the policy's allow-list "
            "(tee.measurements.software)",
            measurement);
    }
    checked.evidence_summary = "software (unsigned), measurement " + measurement;
  } else if (!terms.evidence_verified) {
    return Unsupported("'{}' evidence must be verified by the license server's verifiers", type);
  } else {
    checked.evidence_summary = type + " (verified by the caller)";
  }
  if (r.usage_report) {
    MLC_ASSIGN_OR_RETURN(UsageReport report, ParseAndVerifyUsageReport(*r.usage_report));
    if (report.core_signing_key != r.core_signing_key)
      return PermissionDenied("the attached usage report is signed by another core key");
    if (report.capsule_id != header.capsule_id)
      return InvalidArgument("the attached usage report is for another capsule");
    checked.report = std::move(report);
  }
  return checked;
}

Result<std::vector<uint8_t>> IssueLeaseForRequest(const CheckedRequest& checked,
                                                  const CapsuleHeader& header, const Policy& policy,
                                                  const SecretBytes& capsule_key,
                                                  const SigningKeyPair& signer,
                                                  const LeaseTerms& terms,
                                                  const TeeBoundKey* tee_bound) {
  if (terms.license_id.empty() || terms.license_id.size() > kMaxLicenseIdBytes)
    return InvalidArgument("license id must have 1..{} bytes", kMaxLicenseIdBytes);
  if (terms.query_quota < 1 || terms.query_quota > policy.lease.max_queries)
    return InvalidArgument("query quota {} is out of the policy's range 1..{} (lease.max_queries)",
                           terms.query_quota, policy.lease.max_queries);
  if (terms.valid_seconds < 1 || terms.valid_seconds > policy.lease.max_days * 86400)
    return InvalidArgument(
        "lease validity {} s is out of the policy's range 1..{} s (lease.max_days)",
        terms.valid_seconds, policy.lease.max_days * 86400);
  bool pinned = header.lease_signers.empty()
                    ? signer.public_key == header.provider_key
                    : std::find(header.lease_signers.begin(), header.lease_signers.end(),
                                signer.public_key) != header.lease_signers.end();
  if (!pinned)
    return PermissionDenied("key {} is not a lease signer this capsule pins",
                            ToHex(signer.public_key));
  LeaseBody body;
  body.capsule_id = header.capsule_id;
  body.license_id = terms.license_id;
  RandomBytes(body.lease_id);
  body.sequence = std::max<uint64_t>(terms.sequence, 1);
  body.issued_at = terms.now;
  body.not_before = terms.now - 300;  // tolerate five minutes of client clock skew
  body.expires_at = terms.now + terms.valid_seconds - 300;
  body.query_quota = terms.query_quota;
  const EvidenceRequest& r = checked.request;
  if (checked.report) {
    body.chain_base_count = checked.report->to_count;
    body.chain_base = checked.report->to_head;
  } else {
    body.chain_base_count = 0;
    body.chain_base = ChainGenesis(header.capsule_id, r.core_signing_key);
  }
  body.core_box_key = r.core_box_key;
  body.core_signing_key = r.core_signing_key;
  if (tee_bound != nullptr) {
    body.tee_binding = tee_bound->binding;
    return IssueLease(std::move(body), capsule_key, signer, &tee_bound->secret);
  }
  return IssueLease(std::move(body), capsule_key, signer);
}

}  // namespace mlcapsule::capsule
