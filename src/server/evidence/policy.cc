// The policy layer over verified evidence: what the capsule's provider accepts (evidence type,
// debug mode, measurement allow-list, SGX signer and SVNs, Intel TCB statuses, SNP VMPL and
// migration agent, the report data binding). It trusts the Verdict (built by the verifiers from
// checked signatures) and the capsule policy (signed by the provider); it decides, it does not
// verify. Every refusal is PermissionDenied("policy: ...") naming the value and what was wanted.
#include <algorithm>

#include "capsule/crypto.h"
#include "server/evidence/evidence.h"

namespace mlcapsule::server::evidence {
namespace {

constexpr uint64_t kSnpPolicyMigrateMa = uint64_t{1} << 18;

std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out.empty() ? "none" : out;
}

}  // namespace

EvidencePolicy PolicyFor(const capsule::Policy& policy, capsule::EvidenceType type) {
  const std::string name = capsule::EvidenceTypeName(type);
  EvidencePolicy out;
  out.type_accepted = capsule::PolicyAcceptsTee(policy, name);
  for (const capsule::MeasurementList& list : policy.tee.measurements) {
    if (list.tee == name) out.measurements = list.allowed;
  }
  out.allow_debug = policy.tee.allow_debug;
  if (type == capsule::EvidenceType::kSgx) {
    out.mr_signers = policy.tee.sgx.mr_signers;
    out.isv_prod_id = policy.tee.sgx.isv_prod_id;
    out.min_isv_svn = policy.tee.sgx.min_isv_svn;
  }
  out.tcb_statuses = policy.tee.tcb_statuses;
  out.max_vmpl = policy.tee.snp.max_vmpl;
  return out;
}

Status CheckPolicy(const Verdict& verdict, const EvidencePolicy& policy,
                   const capsule::ReportData* expected_report_data) {
  const char* type = capsule::EvidenceTypeName(verdict.type);
  if (!policy.type_accepted)
    return PermissionDenied("policy: evidence type {} is not accepted by the policy", type);
  if (verdict.debug && !policy.allow_debug)
    return PermissionDenied(
        "policy: debug enclave refused ({} evidence in debug mode; the policy "
        "does not set allow_debug)",
        type);
  const std::string measurement = capsule::ToHex(verdict.measurement);
  if (!policy.measurements.empty() &&
      std::find(policy.measurements.begin(), policy.measurements.end(), measurement) ==
          policy.measurements.end())
    return PermissionDenied("policy: measurement {} is not on the allow-list for {}", measurement,
                            type);
  switch (verdict.type) {
    case capsule::EvidenceType::kSgx: {
      const std::string signer = capsule::ToHex(verdict.mr_signer);
      if (!policy.mr_signers.empty() &&
          std::find(policy.mr_signers.begin(), policy.mr_signers.end(), signer) ==
              policy.mr_signers.end())
        return PermissionDenied("policy: MRSIGNER {} is not on the allow-list for sgx", signer);
      if (policy.isv_prod_id && verdict.isv_prod_id != *policy.isv_prod_id)
        return PermissionDenied("policy: ISVPRODID {} is not the required {}", verdict.isv_prod_id,
                                *policy.isv_prod_id);
      if (verdict.isv_svn < policy.min_isv_svn)
        return PermissionDenied("policy: ISVSVN {} is below the minimum {}", verdict.isv_svn,
                                policy.min_isv_svn);
      [[fallthrough]];
    }
    case capsule::EvidenceType::kTdx:
      if (std::find(policy.tcb_statuses.begin(), policy.tcb_statuses.end(), verdict.tcb_status) ==
          policy.tcb_statuses.end())
        return PermissionDenied(
            "policy: TCB status {} is not accepted (accepted: {}; advisories: {})",
            verdict.tcb_status, JoinList(policy.tcb_statuses), JoinList(verdict.advisory_ids));
      break;
    case capsule::EvidenceType::kSnp:
      if (verdict.vmpl > policy.max_vmpl)
        return PermissionDenied("policy: VMPL {} is above the maximum {}", verdict.vmpl,
                                policy.max_vmpl);
      // A migration agent could move the guest (and its keys) to a machine the evidence does
      // not describe.
      if (verdict.guest_policy & kSnpPolicyMigrateMa)
        return PermissionDenied("policy: SNP guest policy 0x{:x} allows a migration agent",
                                verdict.guest_policy);
      break;
    case capsule::EvidenceType::kSoftware:
    case capsule::EvidenceType::kTpm:
      break;
  }
  if (expected_report_data != nullptr &&
      !capsule::ConstantTimeEqual(verdict.report_data, *expected_report_data))
    return PermissionDenied("policy: report data does not match the nonce binding (evidence {}...)",
                            capsule::ToHex(std::span<const uint8_t>(verdict.report_data).first(8)));
  return Status::Ok();
}

}  // namespace mlcapsule::server::evidence
