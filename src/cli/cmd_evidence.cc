// `mlcapsule evidence verify`: checks one piece of TEE evidence (an SGX or TDX quote with Intel
// collateral, an SEV-SNP report with its VCEK, TPM evidence, or software evidence) the way the
// license server does, optionally against a capsule policy, and prints the verdict as JSON. The
// evidence files are untrusted; the trust anchors are the vendors' roots compiled into the binary
// and, for TPM evidence, the EK CA certificates given with --tpm-ek-ca (none are compiled in).
#include <cstdio>
#include <ctime>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "cli/cli_common.h"
#include "server/evidence/evidence.h"
#include "server/evidence/openssl_util.h"

namespace mlcapsule::cli {
namespace {

namespace evidence = server::evidence;
using Ordered = nlohmann::ordered_json;

constexpr uint64_t kMaxCollateralFileBytes = 1 << 20;
constexpr uint64_t kMaxCertificateFileBytes = 64 << 10;

struct EvidenceOptions {
  std::string type;
  std::string evidence;
  std::string collateral;
  std::string certs;
  std::string tpm_ek_ca;
  std::optional<int64_t> at;
  std::string policy;
  std::string report_data;
};

std::span<const uint8_t> Bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// The DER of every certificate in a PEM bundle, or of one DER certificate.
Result<std::vector<std::vector<uint8_t>>> LoadCertificates(const std::string& text,
                                                           const std::string& what) {
  if (!text.empty() && static_cast<uint8_t>(text[0]) == 0x30) {
    MLC_ASSIGN_OR_RETURN(evidence::X509Ptr cert, evidence::ParseDerCertificate(Bytes(text), what));
    return std::vector<std::vector<uint8_t>>{evidence::CertificateDer(cert.get())};
  }
  MLC_ASSIGN_OR_RETURN(std::vector<std::vector<uint8_t>> blocks,
                       evidence::PemCertificateBlocks(text, what));
  for (const std::vector<uint8_t>& der : blocks)
    MLC_RETURN_IF_ERROR(evidence::ParseDerCertificate(der, what).status());
  return blocks;
}

void Usage(const std::string& message) {
  std::fprintf(stderr, "mlcapsule: error: %s\n", message.c_str());
  SetExitCode(kExitUsage);
}

// Prints the verdict JSON and sets the exit status: 0 accepted, 1 rejected.
void Report(const std::string& type, const Status& status, const evidence::Verdict* verdict) {
  Ordered out;
  out["accepted"] = status.ok();
  out["type"] = type;
  if (!status.ok()) out["error"] = status.message();
  if (verdict != nullptr) {
    Ordered fields = Ordered::parse(verdict->ToJson(), nullptr, /*allow_exceptions=*/false);
    if (fields.is_object()) {
      for (auto& [key, value] : fields.items()) {
        if (key != "type") out[key] = value;
      }
    }
  }
  std::printf("%s\n", out.dump(2, ' ', /*ensure_ascii=*/true).c_str());
  if (status.ok()) {
    std::fprintf(stderr, "accepted: %s\n", verdict->Summary().c_str());
    SetExitCode(kExitOk);
  } else {
    std::fprintf(stderr, "rejected: %s\n", status.message().c_str());
    SetExitCode(kExitFailure);
  }
}

void RunVerify(const EvidenceOptions& o) {
  capsule::EvidenceType type{};
  if (!capsule::EvidenceTypeFromName(o.type, &type))
    return Usage("--type must be sgx, tdx, snp, tpm or software, not '" + o.type + "'");
  const bool intel = type == capsule::EvidenceType::kSgx || type == capsule::EvidenceType::kTdx;
  if (intel && o.collateral.empty())
    return Usage("--type " + o.type + " needs --collateral (Intel collateral JSON)");
  if (!intel && !o.collateral.empty())
    return Usage("--collateral applies to sgx and tdx evidence only");
  if (type != capsule::EvidenceType::kSnp && !o.certs.empty())
    return Usage("--certs (the VCEK) applies to snp evidence only");
  if (type != capsule::EvidenceType::kTpm && !o.tpm_ek_ca.empty())
    return Usage("--tpm-ek-ca applies to tpm evidence only");
  std::optional<capsule::ReportData> expected;
  if (!o.report_data.empty()) {
    capsule::ReportData data{};
    if (!capsule::FromHex(o.report_data, data, "--report-data").ok())
      return Usage("--report-data must be 128 hex characters (64 bytes)");
    expected = data;
  }
  const int64_t now = o.at ? *o.at : static_cast<int64_t>(std::time(nullptr));

  Result<std::string> evidence_bytes = ReadFile(o.evidence, capsule::kMaxEvidenceBytes);
  if (!evidence_bytes.ok()) return SetExitCode(ReportError(evidence_bytes.status()));
  // Without a policy the evidence is judged by the defaults of a policy that accepts its type with
  // no allow-lists: verified, not in debug mode, an acceptable TCB status, VMPL 0.
  evidence::EvidencePolicy rules;
  rules.type_accepted = type != capsule::EvidenceType::kSoftware;
  rules.tcb_statuses = capsule::DefaultTcbStatuses();
  if (!o.policy.empty()) {
    Result<std::string> policy_text = ReadFile(o.policy, capsule::kMaxPolicyBytes);
    if (!policy_text.ok()) return SetExitCode(ReportError(policy_text.status()));
    Result<capsule::Policy> policy = capsule::ParsePolicy(*policy_text);
    if (!policy.ok()) return SetExitCode(ReportError(policy.status().WithContext(o.policy)));
    rules = evidence::PolicyFor(*policy, type);
  }

  evidence::TrustAnchors anchors = evidence::TrustAnchors::Pinned();
  if (!o.tpm_ek_ca.empty()) {
    // Without --tpm-ek-ca the verifier refuses TPM evidence at ek_chain, saying so.
    Result<std::string> ca_text = ReadFile(o.tpm_ek_ca, kMaxCertificateFileBytes);
    if (!ca_text.ok()) return SetExitCode(ReportError(ca_text.status()));
    Result<std::vector<std::vector<uint8_t>>> roots =
        LoadCertificates(*ca_text, "--tpm-ek-ca " + o.tpm_ek_ca);
    if (!roots.ok()) return SetExitCode(ReportError(roots.status()));
    anchors.tpm_ek_roots = std::move(roots).value();
  }
  const evidence::Verifier verifier(std::move(anchors));
  Result<evidence::Verdict> verdict = Status(StatusCode::kInternal, "not verified");
  switch (type) {
    case capsule::EvidenceType::kSgx:
    case capsule::EvidenceType::kTdx: {
      Result<std::string> text = ReadFile(o.collateral, kMaxCollateralFileBytes);
      if (!text.ok()) return SetExitCode(ReportError(text.status()));
      Result<evidence::IntelCollateral> collateral = evidence::ParseIntelCollateral(*text);
      if (!collateral.ok()) return Report(o.type, collateral.status(), nullptr);
      verdict = verifier.Verify(type, Bytes(*evidence_bytes), &*collateral, now);
      break;
    }
    case capsule::EvidenceType::kSnp:
      if (o.certs.empty()) {
        // Only the evidence container (EncodeSnpEvidence) carries its VCEK.
        verdict = verifier.Verify(type, Bytes(*evidence_bytes), nullptr, now);
      } else {
        Result<std::string> vcek = ReadFile(o.certs, kMaxCertificateFileBytes);
        if (!vcek.ok()) return SetExitCode(ReportError(vcek.status()));
        verdict = verifier.VerifySnpParts(Bytes(*evidence_bytes), Bytes(*vcek), now);
      }
      break;
    default:
      verdict = verifier.Verify(type, Bytes(*evidence_bytes), nullptr, now);
      break;
  }
  if (!verdict.ok()) return Report(o.type, verdict.status(), nullptr);
  Status decision = evidence::CheckPolicy(*verdict, rules, expected ? &*expected : nullptr);
  if (!decision.ok() && type == capsule::EvidenceType::kSoftware && o.policy.empty())
    decision = PermissionDenied(
        "policy: software evidence proves nothing by itself; it is accepted only under a "
        "--policy whose tee.accept names software");
  Report(o.type, decision, &*verdict);
}

}  // namespace

void AddEvidenceCommand(CLI::App& app) {
  CLI::App* evidence_cmd = app.add_subcommand(
      "evidence", "Check TEE evidence as the license server does (docs/dev/attestation-plan.md)");
  evidence_cmd->require_subcommand(1);
  static EvidenceOptions options;
  CLI::App* verify = evidence_cmd->add_subcommand(
      "verify",
      "Verify an SGX/TDX quote, an SEV-SNP report, TPM evidence or software evidence and print "
      "the verdict as JSON (exit 0 accepted, 1 rejected, 2 usage)");
  verify->add_option("--type", options.type, "Evidence type: sgx, tdx, snp, tpm or software")
      ->required()
      ->check(CLI::IsMember({"sgx", "tdx", "snp", "tpm", "software"}));
  verify
      ->add_option("--evidence", options.evidence,
                   "Evidence file: the quote (sgx, tdx), the 1184-byte report or an evidence "
                   "container (snp), the TPM evidence container (tpm), or software evidence")
      ->required()
      ->check(CLI::ExistingFile);
  verify
      ->add_option("--collateral", options.collateral,
                   "sgx, tdx: Intel collateral JSON (dcap-qvl format: PCK CRL, root CA CRL, "
                   "tcbInfo, QE identity, their chains and signatures)")
      ->check(CLI::ExistingFile);
  verify
      ->add_option("--certs", options.certs,
                   "snp: the VCEK certificate (DER or PEM) that signed the report")
      ->check(CLI::ExistingFile);
  verify
      ->add_option("--tpm-ek-ca", options.tpm_ek_ca,
                   "tpm: the EK CA root certificates to trust (a PEM bundle, or one DER "
                   "certificate); intermediates may be included. None are built in")
      ->check(CLI::ExistingFile);
  verify->add_option("--at", options.at,
                     "Verification time in Unix seconds (default: now); collateral and "
                     "certificates must be valid then");
  verify
      ->add_option("--policy", options.policy,
                   "Capsule policy JSON to apply (docs/policy.md); without it the defaults of a "
                   "policy accepting this type with no allow-lists: not in debug mode, TCB status "
                   "UpToDate/SWHardeningNeeded/ConfigurationNeeded/"
                   "ConfigurationAndSWHardeningNeeded, VMPL 0")
      ->check(CLI::ExistingFile);
  verify->add_option("--report-data", options.report_data,
                     "Expected report data (128 hex characters), e.g. the nonce binding");
  verify->callback([] { RunVerify(options); });
}

}  // namespace mlcapsule::cli
