// AMD SEV-SNP report verification (see snp.h; docs/dev/attestation-plan.md §6). The report and
// the VCEK are untrusted: every offset is within the fixed 1184-byte report, every certificate
// field is read through openssl_util's bounds-checked helpers. Trusted: the ARK and ASK in the
// TrustAnchors and `now`. Order (§6.3): parse, chain, VCEK <-> report, signature, verdict.
#include "server/evidence/snp.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/x509.h>

#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "server/evidence/openssl_util.h"

namespace mlcapsule::server::evidence {
namespace {

constexpr uint32_t kSupportedVersion = 2;
constexpr uint32_t kSignatureAlgoEcdsaP384Sha384 = 1;
constexpr uint32_t kKeyInfoMaskChipKey = 1u << 1;
constexpr uint32_t kSigningKeyVcek = 0;
constexpr size_t kSignatureFieldBytes = 72;
constexpr size_t kSignatureSignificantBytes = 48;  // P-384
constexpr size_t kMeasurementBytes = 48;
constexpr size_t kChipIdBytes = 64;

// VCEK extensions (AMD pub. 57230): SPLs are DER INTEGERs, the hwID is the raw chip ID.
constexpr char kProductNameOid[] = "1.3.6.1.4.1.3704.1.2";
constexpr char kHwIdOid[] = "1.3.6.1.4.1.3704.1.4";
struct SplExtension {
  const char* oid;
  const char* name;
  size_t tcb_byte;  // index in the TCB_VERSION u64 (Milan/Genoa layout, §6.1)
};
constexpr SplExtension kSplExtensions[] = {
    {"1.3.6.1.4.1.3704.1.3.1", "blSPL (boot loader)", 0},
    {"1.3.6.1.4.1.3704.1.3.2", "teeSPL", 1},
    {"1.3.6.1.4.1.3704.1.3.3", "snpSPL", 6},
    {"1.3.6.1.4.1.3704.1.3.8", "ucodeSPL (microcode)", 7},
};
// The only product whose roots are pinned; others (Genoa, Turin) are rejected, not guessed at.
constexpr std::string_view kSupportedProduct = "Milan";

template <typename T>
T ReadLe(std::span<const uint8_t> bytes, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(T{bytes[offset + i]} << (8 * i));
  return value;
}

bool AllZero(std::span<const uint8_t> bytes) {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

Status CheckLayout(std::span<const uint8_t> report) {
  if (report.size() != kSnpReportBytes) {
    return InvalidArgument("parse_error: SNP report is {} bytes, expected exactly {}",
                           report.size(), kSnpReportBytes);
  }
  const uint32_t version = ReadLe<uint32_t>(report, kSnpVersionOffset);
  if (version != kSupportedVersion) {
    return Unsupported("unsupported_format: SNP report version {} (only version {} is supported)",
                       version, kSupportedVersion);
  }
  const uint32_t algo = ReadLe<uint32_t>(report, kSnpSignatureAlgoOffset);
  if (algo != kSignatureAlgoEcdsaP384Sha384) {
    return Unsupported("unsupported_format: signature_algo {} (only 1, ECDSA P-384 SHA-384)", algo);
  }
  const uint32_t key_info = ReadLe<uint32_t>(report, kSnpKeyInfoOffset);
  const uint32_t signing_key = (key_info >> 2) & 7;
  if (signing_key != kSigningKeyVcek) {
    return Unsupported(
        "unsupported_format: SIGNING_KEY {} (only 0, the VCEK; VLEK and unsigned reports are not "
        "supported)",
        signing_key);
  }
  if ((key_info & kKeyInfoMaskChipKey) != 0) {
    return Unsupported("unsupported_format: MASK_CHIP_KEY is set, so CHIP_ID cannot be matched");
  }
  for (size_t offset : {kSnpSignatureROffset, kSnpSignatureSOffset}) {
    const auto padding = report.subspan(offset + kSignatureSignificantBytes,
                                        kSignatureFieldBytes - kSignatureSignificantBytes);
    if (!AllZero(padding)) {
      return InvalidArgument(
          "parse_error: malformed signature: the {} field at 0x{:x} has non-zero bytes past its "
          "{} significant bytes",
          offset == kSnpSignatureROffset ? "R" : "S", offset, kSignatureSignificantBytes);
    }
  }
  return Status::Ok();
}

Status CheckSignatureAlgorithm(X509* cert, std::string_view what) {
  int md_nid = NID_undef, pk_nid = NID_undef, security_bits = 0;
  uint32_t flags = 0;
  if (X509_get_signature_info(cert, &md_nid, &pk_nid, &security_bits, &flags) != 1) {
    ERR_clear_error();
    return InvalidArgument("chain_invalid: {} has an unreadable signature algorithm", what);
  }
  if (md_nid != NID_sha384 || pk_nid != NID_rsassaPss) {
    return InvalidArgument("chain_invalid: {} is signed with {}/{}, expected RSASSA-PSS/SHA384",
                           what, OBJ_nid2sn(pk_nid), OBJ_nid2sn(md_nid));
  }
  return Status::Ok();
}

bool SameName(const X509_NAME* a, const X509_NAME* b) { return X509_NAME_cmp(a, b) == 0; }

// ASK <- ARK (both from the anchors) and VCEK <- ASK, RSASSA-PSS SHA-384, at `now`.
Status CheckChain(X509* vcek, X509* ask, X509* ark, int64_t now) {
  if (!SameName(X509_get_subject_name(ark), X509_get_issuer_name(ark))) {
    return FailedPrecondition("root_mismatch: the configured ARK '{}' is not a self-issued root",
                              NameText(X509_get_subject_name(ark)));
  }
  if (!SameName(X509_get_issuer_name(ask), X509_get_subject_name(ark))) {
    return InvalidArgument("root_mismatch: the ASK's issuer '{}' is not the pinned ARK '{}'",
                           NameText(X509_get_issuer_name(ask)),
                           NameText(X509_get_subject_name(ark)));
  }
  if (!SameName(X509_get_issuer_name(vcek), X509_get_subject_name(ask))) {
    return InvalidArgument("chain_invalid: the VCEK's issuer '{}' is not the ASK '{}'",
                           NameText(X509_get_issuer_name(vcek)),
                           NameText(X509_get_subject_name(ask)));
  }
  MLC_RETURN_IF_ERROR(CheckSignatureAlgorithm(ask, "the ASK"));
  MLC_RETURN_IF_ERROR(CheckSignatureAlgorithm(vcek, "the VCEK"));
  // Validity is inclusive at both ends (plan §1). OpenSSL's own check counts notAfter == now as
  // expired, so the times are checked here and OpenSSL's check is off (check_time = false).
  for (X509* cert : {vcek, ask, ark}) {
    Result<ValidityWindow> validity = CertificateValidity(cert);
    if (!validity.ok()) return validity.status().WithContext("chain_invalid");
    const ValidityWindow& window = validity.value();
    if (now < window.not_before || now > window.not_after) {
      return InvalidArgument("chain_invalid: certificate '{}' is not valid at {} (valid {} .. {})",
                             CommonName(cert), FormatUtc(now), FormatUtc(window.not_before),
                             FormatUtc(window.not_after));
    }
  }
  // Not strict (§2 step 5): the VCEK has no Authority Key Identifier and serial 0.
  ChainCheck options{.now = now, .strict = false, .check_time = false};
  X509* const intermediates[] = {ask};
  MLC_RETURN_IF_ERROR(VerifyChain(vcek, intermediates, ark, options, "chain_invalid"));

  if (X509_get_version(vcek) != X509_VERSION_3) {
    return InvalidArgument("chain_invalid: the VCEK is not an X.509 v3 certificate");
  }
  EVP_PKEY* key = X509_get0_pubkey(vcek);
  char group[64] = {};
  size_t group_length = 0;
  if (key == nullptr || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_group_name(key, group, sizeof(group), &group_length) != 1 ||
      std::string_view(group, group_length) != "secp384r1") {
    ERR_clear_error();
    return InvalidArgument("chain_invalid: the VCEK's key is not EC P-384");
  }
  return Status::Ok();
}

Result<int64_t> SplValue(X509* vcek, const SplExtension& spl) {
  Result<std::vector<uint8_t>> contents = ExtensionContents(vcek, spl.oid);
  if (!contents.ok()) return contents.status().WithContext("vcek_mismatch");
  DerReader reader(contents.value(), spl.name);
  int64_t value = 0;
  Status status = reader.Integer(&value, spl.name);
  if (status.ok()) status = reader.ExpectEnd();
  if (!status.ok())
    return status.WithContext("vcek_mismatch: VCEK extension " + std::string(spl.oid));
  if (value < 0 || value > 255) {
    return InvalidArgument("vcek_mismatch: VCEK {} is {}, out of range 0..255", spl.name, value);
  }
  return value;
}

// The KDS issues one VCEK per (chip, reported TCB): the certificate's SPLs and hwID must equal
// the report's REPORTED_TCB and CHIP_ID exactly. Checked before the signature so that a changed
// CHIP_ID or TCB fails here, by name.
Status CheckVcekMatchesReport(X509* vcek, std::span<const uint8_t> report) {
  Result<std::vector<uint8_t>> product = ExtensionContents(vcek, kProductNameOid);
  if (!product.ok()) return product.status().WithContext("vcek_mismatch: productName");
  DerReader reader(product.value(), "VCEK productName");
  std::span<const uint8_t> name_bytes;
  Status status = reader.Expect(DerReader::kIa5String, &name_bytes, "productName");
  if (status.ok()) status = reader.ExpectEnd();
  if (!status.ok()) return status.WithContext("vcek_mismatch");
  const std::string_view name(reinterpret_cast<const char*>(name_bytes.data()), name_bytes.size());
  if (name.substr(0, name.find('-')) != kSupportedProduct) {
    return Unsupported("unsupported_format: VCEK product '{}' (only {} is supported)",
                       name.substr(0, 64), kSupportedProduct);
  }

  const auto reported_tcb = report.subspan(kSnpReportedTcbOffset, 8);
  for (const SplExtension& spl : kSplExtensions) {
    MLC_ASSIGN_OR_RETURN(int64_t value, SplValue(vcek, spl));
    if (value != reported_tcb[spl.tcb_byte]) {
      return InvalidArgument("vcek_mismatch: VCEK {} is {} but REPORTED_TCB byte {} is {}",
                             spl.name, value, spl.tcb_byte, reported_tcb[spl.tcb_byte]);
    }
  }
  Result<std::vector<uint8_t>> hw_id = ExtensionContents(vcek, kHwIdOid);
  if (!hw_id.ok()) return hw_id.status().WithContext("vcek_mismatch: hwID");
  const auto chip_id = report.subspan(kSnpChipIdOffset, kChipIdBytes);
  if (hw_id->size() != kChipIdBytes ||
      std::memcmp(hw_id->data(), chip_id.data(), kChipIdBytes) != 0) {
    return InvalidArgument("vcek_mismatch: the VCEK hwID ({} bytes) is not the report's CHIP_ID",
                           hw_id->size());
  }
  return Status::Ok();
}

Status CheckReportSignature(X509* vcek, std::span<const uint8_t> report) {
  Result<std::vector<uint8_t>> der = EcdsaSignatureToDer(
      report.subspan(kSnpSignatureROffset, kSignatureFieldBytes),
      report.subspan(kSnpSignatureSOffset, kSignatureFieldBytes), /*little_endian=*/true);
  if (!der.ok()) return der.status().WithContext("report_signature");
  return VerifySignature(X509_get0_pubkey(vcek), EVP_sha384(), der.value(),
                         report.first(kSnpSignedBytes), "report_signature");
}

}  // namespace

Result<SnpRoots> ParseSnpRoots(const TrustAnchors& anchors) {
  Result<X509Ptr> ark = ParseDerCertificate(anchors.amd_ark_der, "pinned AMD ARK");
  if (!ark.ok()) return ark.status().WithContext("root_mismatch");
  Result<X509Ptr> ask = ParseDerCertificate(anchors.amd_ask_der, "pinned AMD ASK");
  if (!ask.ok()) return ask.status().WithContext("root_mismatch");
  return SnpRoots{std::move(ark).value(), std::move(ask).value()};
}

Result<Verdict> VerifySnp(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                          const TrustAnchors& anchors, int64_t now) {
  // The layout is checked first so that a malformed report fails as such whatever the anchors.
  MLC_RETURN_IF_ERROR(CheckLayout(report));
  MLC_ASSIGN_OR_RETURN(SnpRoots roots, ParseSnpRoots(anchors));
  return VerifySnp(report, vcek_der, roots, now);
}

Result<Verdict> VerifySnp(std::span<const uint8_t> report, std::span<const uint8_t> vcek_der,
                          const SnpRoots& roots, int64_t now) {
  MLC_RETURN_IF_ERROR(CheckLayout(report));
  if (!roots.ark || !roots.ask) return FailedPrecondition("root_mismatch: no AMD ARK/ASK given");
  Result<X509Ptr> vcek = ParseCertificate(vcek_der, "VCEK");
  if (!vcek.ok()) return vcek.status().WithContext("parse_error");
  X509* const ark = roots.ark.get();
  X509* const ask = roots.ask.get();

  MLC_RETURN_IF_ERROR(CheckChain(vcek->get(), ask, ark, now));
  MLC_RETURN_IF_ERROR(CheckVcekMatchesReport(vcek->get(), report));
  MLC_RETURN_IF_ERROR(CheckReportSignature(vcek->get(), report));

  Verdict verdict;
  verdict.type = capsule::EvidenceType::kSnp;
  const auto measurement = report.subspan(kSnpMeasurementOffset, kMeasurementBytes);
  verdict.measurement.assign(measurement.begin(), measurement.end());
  std::memcpy(verdict.report_data.data(), report.data() + kSnpReportDataOffset,
              verdict.report_data.size());
  verdict.guest_policy = ReadLe<uint64_t>(report, kSnpPolicyOffset);
  verdict.debug = (verdict.guest_policy & kSnpPolicyDebugBit) != 0;
  verdict.vmpl = ReadLe<uint32_t>(report, kSnpVmplOffset);
  verdict.reported_tcb = ReadLe<uint64_t>(report, kSnpReportedTcbOffset);
  const auto chip_id = report.subspan(kSnpChipIdOffset, kChipIdBytes);
  verdict.chip_id.assign(chip_id.begin(), chip_id.end());
  return verdict;
}

}  // namespace mlcapsule::server::evidence
