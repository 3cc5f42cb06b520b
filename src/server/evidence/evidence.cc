// The Verifier's dispatch by evidence type (software, Intel sgx/tdx, AMD snp, tpm), the SNP
// evidence container, and the Verdict's summary and JSON. The evidence bytes are untrusted; the
// trust anchors are parsed once, here, from what the caller configured (TrustAnchors::Pinned() in
// production).
#include "server/evidence/evidence.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "capsule/crypto.h"
#include "capsule/licensing.h"
#include "server/evidence/intel_quote.h"
#include "server/evidence/snp.h"
#include "server/evidence/tpm.h"

namespace mlcapsule::server::evidence {
namespace {

constexpr char kSnpEvidenceMagic[8] = {'M', 'L', 'C', 'S', 'N', 'P', 'E', 'V'};
constexpr uint64_t kMaxSnpReportBytes = 4096;  // the report itself is 1184 (checked by VerifySnp)
constexpr uint64_t kMaxVcekBytes = 16 << 10;

struct SnpParts {
  std::span<const uint8_t> report;
  std::span<const uint8_t> vcek;
};

Result<SnpParts> DecodeSnpEvidence(std::span<const uint8_t> evidence) {
  ByteReader reader(evidence, "snp evidence");
  char magic[sizeof(kSnpEvidenceMagic)] = {};
  Status status = reader.Bytes(magic, sizeof(magic), "magic");
  if (!status.ok()) return InvalidArgument("parse_error: {}", status.message());
  if (std::memcmp(magic, kSnpEvidenceMagic, sizeof(magic)) != 0)
    return InvalidArgument("parse_error: snp evidence does not start with MLCSNPEV");
  SnpParts parts;
  status = reader.BlobView(&parts.report, kMaxSnpReportBytes, "report");
  if (status.ok()) status = reader.BlobView(&parts.vcek, kMaxVcekBytes, "VCEK certificate");
  if (status.ok()) status = reader.ExpectEnd();
  if (!status.ok()) return InvalidArgument("parse_error: {}", status.message());
  return parts;
}

std::string Hex(std::span<const uint8_t> bytes) { return capsule::ToHex(bytes); }

// "33d8736d..." for summaries.
std::string Short(std::span<const uint8_t> bytes) {
  std::string hex = Hex(bytes.first(std::min<size_t>(bytes.size(), 4)));
  return bytes.size() > 4 ? hex + "..." : hex;
}

const char* MeasurementName(capsule::EvidenceType type) {
  switch (type) {
    case capsule::EvidenceType::kSgx:
      return "mrenclave";
    case capsule::EvidenceType::kTdx:
      return "mrtd";
    default:
      return "measurement";
  }
}

}  // namespace

std::vector<uint8_t> EncodeSnpEvidence(std::span<const uint8_t> report,
                                       std::span<const uint8_t> vcek_der) {
  ByteWriter writer;
  writer.Bytes(kSnpEvidenceMagic, sizeof(kSnpEvidenceMagic));
  writer.Blob(report);
  writer.Blob(vcek_der);
  const std::span<const uint8_t> bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

struct Verifier::Impl {
  explicit Impl(TrustAnchors trust)
      : anchors(std::move(trust)), intel(anchors), tpm_roots(ParseTpmRoots(anchors)) {
    Result<SnpRoots> roots = ParseSnpRoots(anchors);
    if (roots.ok()) {
      snp_roots = std::move(roots).value();
    } else {
      snp_status = roots.status();
    }
  }
  TrustAnchors anchors;
  intel::IntelVerifier intel;
  SnpRoots snp_roots;
  Status snp_status;
  TpmRoots tpm_roots;
};

Verifier::Verifier(TrustAnchors anchors) : impl_(std::make_unique<Impl>(std::move(anchors))) {}
Verifier::~Verifier() = default;

Result<Verdict> Verifier::Verify(capsule::EvidenceType type, std::span<const uint8_t> evidence,
                                 const IntelCollateral* collateral, int64_t now) const {
  switch (type) {
    case capsule::EvidenceType::kSoftware: {
      Result<capsule::SoftwareEvidence> software = capsule::ParseSoftwareEvidence(evidence);
      if (!software.ok()) return InvalidArgument("parse_error: {}", software.status().message());
      Verdict verdict;
      verdict.type = type;
      verdict.measurement.assign(software->measurement.begin(), software->measurement.end());
      verdict.report_data = software->report_data;
      return verdict;
    }
    case capsule::EvidenceType::kSgx:
    case capsule::EvidenceType::kTdx:
      if (collateral == nullptr)
        return InvalidArgument("collateral_missing: {} evidence needs Intel collateral",
                               capsule::EvidenceTypeName(type));
      return impl_->intel.Verify(type, evidence, *collateral, now);
    case capsule::EvidenceType::kSnp: {
      MLC_ASSIGN_OR_RETURN(SnpParts parts, DecodeSnpEvidence(evidence));
      return VerifySnpParts(parts.report, parts.vcek, now);
    }
    case capsule::EvidenceType::kTpm:
      return VerifyTpm(evidence, impl_->tpm_roots, now);
  }
  return Unsupported("unsupported_format: {} evidence cannot be verified",
                     capsule::EvidenceTypeName(type));
}

Result<Verdict> Verifier::VerifySnpParts(std::span<const uint8_t> report,
                                         std::span<const uint8_t> vcek_der, int64_t now) const {
  MLC_RETURN_IF_ERROR(impl_->snp_status);
  return VerifySnp(report, vcek_der, impl_->snp_roots, now);
}

std::string Verdict::Summary() const {
  std::string out = fmt::format("{}, {} {}", capsule::EvidenceTypeName(type), MeasurementName(type),
                                Short(measurement));
  if (debug) out += ", DEBUG";
  if (type == capsule::EvidenceType::kSgx || type == capsule::EvidenceType::kTdx) {
    out += fmt::format(", tcb {}", tcb_status);
    if (!advisory_ids.empty()) {
      std::string ids;
      for (const std::string& id : advisory_ids) ids += (ids.empty() ? "" : ", ") + id;
      out += " (" + ids + ")";
    }
    out += fmt::format(", fmspc {}", fmspc);
  } else if (type == capsule::EvidenceType::kSnp) {
    out += fmt::format(", vmpl {}, policy 0x{:x}, reported tcb 0x{:016x}", vmpl, guest_policy,
                       reported_tcb);
  } else if (type == capsule::EvidenceType::kTpm) {
    out += fmt::format(", ek {}..., ak {}, firmware 0x{:016x}",
                       ek_fingerprint.substr(0, std::min<size_t>(ek_fingerprint.size(), 8)),
                       Short(ak_name), firmware_version);
  }
  return out;
}

std::string Verdict::ToJson() const {
  using Json = nlohmann::ordered_json;
  Json out;
  out["type"] = capsule::EvidenceTypeName(type);
  out["measurement"] = Hex(measurement);
  out["report_data"] = Hex(report_data);
  out["debug"] = debug;
  switch (type) {
    case capsule::EvidenceType::kSgx:
    case capsule::EvidenceType::kTdx: {
      const bool tdx = type == capsule::EvidenceType::kTdx;
      out["mr_signer"] = Hex(mr_signer);
      if (!tdx) {
        out["isv_prod_id"] = isv_prod_id;
        out["isv_svn"] = isv_svn;
      }
      out["attributes"] = fmt::format("{:016x}", attributes);
      if (tdx) {
        Json rtmr_list = Json::array();
        for (const std::vector<uint8_t>& rtmr : rtmrs) rtmr_list.push_back(Hex(rtmr));
        out["rtmrs"] = std::move(rtmr_list);
        out["mr_seam"] = Hex(mr_seam);
        out["mr_config_id"] = Hex(mr_config_id);
        out["mr_owner"] = Hex(mr_owner);
        out["mr_owner_config"] = Hex(mr_owner_config);
      }
      out["tcb_status"] = tcb_status;
      out["advisory_ids"] = advisory_ids;
      out["fmspc"] = fmspc;
      out["tcb_date"] = tcb_date;
      out["qe_tcb_status"] = qe_tcb_status;
      if (tdx) out["tdx_module_status"] = tdx_module_status;
      break;
    }
    case capsule::EvidenceType::kSnp:
      out["vmpl"] = vmpl;
      out["guest_policy"] = fmt::format("{:016x}", guest_policy);
      out["reported_tcb"] = fmt::format("{:016x}", reported_tcb);
      out["chip_id"] = Hex(chip_id);
      break;
    case capsule::EvidenceType::kTpm:
      out["ek_fingerprint"] = ek_fingerprint;
      out["ak_name"] = Hex(ak_name);
      out["reset_count"] = reset_count;
      out["restart_count"] = restart_count;
      out["firmware_version"] = fmt::format("{:016x}", firmware_version);
      break;
    case capsule::EvidenceType::kSoftware:
      break;
  }
  return out.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
}

}  // namespace mlcapsule::server::evidence
