// The TPM evidence container (tpm_evidence.h): encoding, a bounded parser that checks every
// length against its limit and the bytes left before copying, and the PCR 23 replay both the
// platform and the server compute. The bytes handed to ParseTpmEvidence are untrusted; nothing
// inside them is verified here (server/evidence/tpm.cc does that).
#include "capsule/tpm_evidence.h"

#include <sodium.h>

#include <cstring>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

constexpr std::string_view kWhat = "tpm evidence";

// Every error of the parser starts with the verifier's check name, so the server can hand it on.
Status ParseError(const Status& status) {
  return InvalidArgument("parse_error: {}", status.message());
}

}  // namespace

std::vector<uint8_t> EncodeTpmEvidence(const TpmEvidence& evidence) {
  ByteWriter writer;
  writer.Bytes(kTpmEvidenceMagic.data(), kTpmEvidenceMagic.size());
  writer.Pod<uint32_t>(kTpmEvidenceVersion);
  writer.Bytes(evidence.report_data);
  writer.Bytes(evidence.measurement);
  writer.Blob(evidence.ek_cert);
  writer.Pod<uint8_t>(static_cast<uint8_t>(evidence.ek_chain.size()));
  for (const std::vector<uint8_t>& cert : evidence.ek_chain) writer.Blob(cert);
  writer.Blob(evidence.ak_public);
  writer.Blob(evidence.attest);
  writer.Blob(evidence.signature);
  const std::span<const uint8_t> bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<TpmEvidence> ParseTpmEvidence(std::span<const uint8_t> bytes) {
  ByteReader reader(bytes, kWhat);
  char magic[kTpmEvidenceMagic.size()] = {};
  Status status = reader.Bytes(magic, sizeof(magic), "magic");
  if (!status.ok()) return ParseError(status);
  if (std::memcmp(magic, kTpmEvidenceMagic.data(), sizeof(magic)) != 0)
    return InvalidArgument("parse_error: {} does not start with {}", kWhat, kTpmEvidenceMagic);
  uint32_t version = 0;
  status = reader.Pod(&version, "version");
  if (!status.ok()) return ParseError(status);
  if (version != kTpmEvidenceVersion)
    return InvalidArgument("parse_error: {} version {} is not supported (expected {})", kWhat,
                           version, kTpmEvidenceVersion);
  TpmEvidence out;
  status = reader.Bytes(out.report_data.data(), out.report_data.size(), "report_data");
  if (status.ok())
    status = reader.Bytes(out.measurement.data(), out.measurement.size(), "measurement");
  if (status.ok()) status = reader.Blob(&out.ek_cert, kMaxTpmCertBytes, "ek_cert");
  uint8_t chain_count = 0;
  // Each chain certificate takes at least its 4-byte length.
  if (status.ok())
    status = reader.Count(&chain_count, kMaxTpmChainCerts, sizeof(uint32_t), "ek_chain_count");
  if (!status.ok()) return ParseError(status);
  out.ek_chain.resize(chain_count);
  for (std::vector<uint8_t>& cert : out.ek_chain) {
    status = reader.Blob(&cert, kMaxTpmCertBytes, "ek_chain certificate");
    if (!status.ok()) return ParseError(status);
  }
  status = reader.Blob(&out.ak_public, kMaxTpmPublicBytes, "ak_public");
  if (status.ok()) status = reader.Blob(&out.attest, kMaxTpmAttestBytes, "attest");
  if (status.ok()) status = reader.Blob(&out.signature, kMaxTpmSignatureBytes, "signature");
  if (status.ok()) status = reader.ExpectEnd();
  if (!status.ok()) return ParseError(status);
  return out;
}

std::array<uint8_t, 32> TpmReportDataEvent(const ReportData& report_data) {
  return Sha256({AsBytes(kTpmReportDataDomain), report_data});
}

std::array<uint8_t, 32> TpmQualifyingData(const ReportData& report_data) {
  return Sha256({AsBytes(kTpmQuoteDomain), report_data});
}

std::array<uint8_t, 32> TpmPcr23(const Digest& measurement, const ReportData& report_data) {
  // TPM2_PCR_Extend: PCR := H(PCR || event); PCR 23 resets to zeros.
  std::array<uint8_t, 32> pcr{};
  pcr = Sha256({pcr, measurement});
  const std::array<uint8_t, 32> event = TpmReportDataEvent(report_data);
  return Sha256({pcr, event});
}

}  // namespace mlcapsule::capsule
