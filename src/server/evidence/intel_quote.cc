// Intel SGX DCAP quote v3 and TDX quote v4 verification (docs/dev/attestation-plan.md §3-§5):
// parse by lengths, PCK chain to the pinned root with both CRLs, signed collateral (tcbInfo v3,
// enclaveIdentity v2), PCK extension, QE report signature and binding, QE identity, TDX module
// identity, quote signature, TCB level. The quote and the collateral are hostile: every length
// is checked against the bytes that hold it, and the signed JSON is read only after its signature
// verified over the exact text. The only trust anchor is the Intel root the caller pinned.
//
// Caching (what makes the per-quote work small) is exact: a cache entry holds only results that
// do not depend on the time (signatures, chains checked with OpenSSL's time checks off, parsed
// collateral), keyed by the digest of every byte they were computed from; the times are checked
// against `now` on every call.
#include "server/evidence/intel_quote.h"

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include <nlohmann/json.hpp>

namespace mlcapsule::server::evidence::intel {

using Json = nlohmann::json;
using capsule::EvidenceType;
constexpr size_t kMaxCollateralBytes = size_t{1} << 20;

namespace {

constexpr size_t kMaxTcbLevels = 256;
constexpr size_t kMaxAdvisories = 256;
constexpr size_t kMaxModuleIdentities = 64;
constexpr size_t kMaxCacheEntries = 64;  // distinct collaterals / PCK CAs; cleared when full
constexpr size_t kMaxCachedCertificates = 4096;  // PCK leaves (one per platform) and CAs
constexpr char kSgxExtensionOid[] = "1.2.840.113741.1.13.1";

constexpr std::array<std::string_view, 7> kTcbStatuses = {"UpToDate",
                                                          "SWHardeningNeeded",
                                                          "ConfigurationNeeded",
                                                          "ConfigurationAndSWHardeningNeeded",
                                                          "OutOfDate",
                                                          "OutOfDateConfigurationNeeded",
                                                          "Revoked"};

uint16_t Le16(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}
uint32_t Le32(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint32_t>(b[at]) | (static_cast<uint32_t>(b[at + 1]) << 8) |
         (static_cast<uint32_t>(b[at + 2]) << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
uint64_t Le64(std::span<const uint8_t> b, size_t at) {
  return static_cast<uint64_t>(Le32(b, at)) | (static_cast<uint64_t>(Le32(b, at + 4)) << 32);
}

std::string LowerHex(std::span<const uint8_t> bytes) { return capsule::ToHex(bytes); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Hex of either case -> bytes. `expected` 0: any even length.
Result<std::vector<uint8_t>> DecodeHex(std::string_view hex, size_t expected,
                                       std::string_view what) {
  if (hex.size() % 2 != 0 || (expected != 0 && hex.size() != expected * 2))
    return InvalidArgument("{}: {} hex characters, expected {}", what, hex.size(),
                           expected != 0 ? fmt::format("{}", expected * 2) : "an even count");
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const int high = HexValue(hex[2 * i]), low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0)
      return InvalidArgument("{}: non-hex character at position {}", what, 2 * i);
    out[i] = static_cast<uint8_t>(high * 16 + low);
  }
  return out;
}

bool IsKnownStatus(std::string_view status) {
  return std::find(kTcbStatuses.begin(), kTcbStatuses.end(), status) != kTcbStatuses.end();
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

// --- Quote parsing ---

// Reads fixed fields of a quote region; every error is a parse_error naming the field.
class QuoteReader {
 public:
  QuoteReader(std::span<const uint8_t> bytes, size_t base, std::string_view what)
      : bytes_(bytes), base_(base), what_(what) {}
  Status Take(size_t n, std::span<const uint8_t>* out, std::string_view field) {
    if (n > bytes_.size() - pos_)
      return InvalidArgument("parse_error: {} {} at offset {} needs {} bytes, {} left", what_,
                             field, base_ + pos_, n, bytes_.size() - pos_);
    *out = bytes_.subspan(pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  Status U16(uint16_t* out, std::string_view field) {
    std::span<const uint8_t> b;
    MLC_RETURN_IF_ERROR(Take(2, &b, field));
    *out = Le16(b, 0);
    return Status::Ok();
  }
  Status U32(uint32_t* out, std::string_view field) {
    std::span<const uint8_t> b;
    MLC_RETURN_IF_ERROR(Take(4, &b, field));
    *out = Le32(b, 0);
    return Status::Ok();
  }
  // A length-prefixed region that must end exactly where this reader's bytes end.
  Status Rest(uint32_t size, std::span<const uint8_t>* out, std::string_view field) {
    if (size != bytes_.size() - pos_)
      return InvalidArgument(
          "parse_error: {} {} size {} at offset {} does not match the {} bytes "
          "left in its container",
          what_, field, size, base_ + pos_, bytes_.size() - pos_);
    return Take(size, out, field);
  }
  size_t offset() const { return base_ + pos_; }

 private:
  std::span<const uint8_t> bytes_;
  size_t base_;
  std::string_view what_;
  size_t pos_ = 0;
};

// --- JSON reading (no exceptions: every access is type-checked first) ---

class JsonReader {
 public:
  explicit JsonReader(std::string_view what) : what_(what) {}
  const Json* Member(const Json& object, const char* key) const {
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
  }
  Status Error(const std::string& path, std::string_view message) const {
    return InvalidArgument("collateral_invalid: {}.{}: {}", what_, path, message);
  }
  Status Object(const Json& object, const std::string& path) const {
    if (!object.is_object()) return Error(path, "expected an object");
    return Status::Ok();
  }
  Status String(const Json& object, const char* key, const std::string& path, size_t max_bytes,
                std::string* out) const {
    const Json* value = Member(object, key);
    if (value == nullptr) return Error(Path(path, key), "missing");
    if (!value->is_string()) return Error(Path(path, key), "expected a string");
    const std::string& text = value->get_ref<const std::string&>();
    if (text.size() > max_bytes)
      return Error(Path(path, key),
                   fmt::format("{} bytes is over the limit {}", text.size(), max_bytes));
    *out = text;
    return Status::Ok();
  }
  Status Integer(const Json& object, const char* key, const std::string& path, uint64_t max,
                 uint64_t* out) const {
    const Json* value = Member(object, key);
    if (value == nullptr) return Error(Path(path, key), "missing");
    if (!value->is_number_unsigned())
      return Error(Path(path, key), fmt::format("expected an integer in 0..{}", max));
    const uint64_t v = value->get<uint64_t>();
    if (v > max) return Error(Path(path, key), fmt::format("{} is out of range 0..{}", v, max));
    *out = v;
    return Status::Ok();
  }
  template <size_t N>
  Status Hex(const Json& object, const char* key, const std::string& path,
             std::array<uint8_t, N>* out) const {
    std::string text;
    MLC_RETURN_IF_ERROR(String(object, key, path, 2 * N, &text));
    Result<std::vector<uint8_t>> bytes = DecodeHex(text, N, "hex");
    if (!bytes.ok()) return Error(Path(path, key), bytes.status().message());
    std::copy(bytes->begin(), bytes->end(), out->begin());
    return Status::Ok();
  }
  Status Date(const Json& object, const char* key, const std::string& path, int64_t* out) const {
    std::string text;
    MLC_RETURN_IF_ERROR(String(object, key, path, 64, &text));
    Result<int64_t> date = ParseIntelDate(text);
    if (!date.ok()) return Error(Path(path, key), date.status().message());
    *out = *date;
    return Status::Ok();
  }
  Status Array(const Json& object, const char* key, const std::string& path, size_t min, size_t max,
               const Json** out) const {
    const Json* value = Member(object, key);
    if (value == nullptr) return Error(Path(path, key), "missing");
    if (!value->is_array() || value->size() < min || value->size() > max)
      return Error(Path(path, key), fmt::format("expected an array of {}..{} entries", min, max));
    *out = value;
    return Status::Ok();
  }
  static std::string Path(const std::string& path, const char* key) {
    return path.empty() ? std::string(key) : path + "." + key;
  }

 private:
  std::string_view what_;
};

// tcbDate, tcbStatus and the optional advisoryIDs of one level.
Status ReadLevelCommon(const JsonReader& json, const Json& level, const std::string& path,
                       std::string* tcb_date, std::string* status,
                       std::vector<std::string>* advisories) {
  int64_t unused_date = 0;
  MLC_RETURN_IF_ERROR(json.Date(level, "tcbDate", path, &unused_date));
  MLC_RETURN_IF_ERROR(json.String(level, "tcbDate", path, 64, tcb_date));
  MLC_RETURN_IF_ERROR(json.String(level, "tcbStatus", path, 64, status));
  if (!IsKnownStatus(*status))
    return json.Error(JsonReader::Path(path, "tcbStatus"),
                      fmt::format("unknown status '{}'", *status));
  if (json.Member(level, "advisoryIDs") != nullptr) {
    const Json* ids = nullptr;
    MLC_RETURN_IF_ERROR(json.Array(level, "advisoryIDs", path, 0, kMaxAdvisories, &ids));
    for (const Json& id : *ids) {
      if (!id.is_string() || id.get_ref<const std::string&>().size() > 64)
        return json.Error(JsonReader::Path(path, "advisoryIDs"), "expected short strings");
      const std::string& text = id.get_ref<const std::string&>();
      if (!std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; }))
        return json.Error(JsonReader::Path(path, "advisoryIDs"), "non-printable advisory ID");
      advisories->push_back(text);
    }
  }
  return Status::Ok();
}

Status ReadIsvLevels(const JsonReader& json, const Json& object, const std::string& path,
                     std::vector<IsvLevel>* levels) {
  const Json* array = nullptr;
  MLC_RETURN_IF_ERROR(json.Array(object, "tcbLevels", path, 1, kMaxTcbLevels, &array));
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string level_path = fmt::format("{}.tcbLevels[{}]", path, i);
    const Json& entry = (*array)[i];
    MLC_RETURN_IF_ERROR(json.Object(entry, level_path));
    const Json* tcb = json.Member(entry, "tcb");
    if (tcb == nullptr) return json.Error(level_path + ".tcb", "missing");
    MLC_RETURN_IF_ERROR(json.Object(*tcb, level_path + ".tcb"));
    IsvLevel level;
    uint64_t svn = 0;
    MLC_RETURN_IF_ERROR(json.Integer(*tcb, "isvsvn", level_path + ".tcb", 65535, &svn));
    level.isv_svn = static_cast<uint16_t>(svn);
    MLC_RETURN_IF_ERROR(ReadLevelCommon(json, entry, level_path, &level.tcb_date, &level.status,
                                        &level.advisory_ids));
    levels->push_back(std::move(level));
  }
  return Status::Ok();
}

Status ReadComponents(const JsonReader& json, const Json& tcb, const char* key,
                      const std::string& path, std::array<uint8_t, 16>* out) {
  const Json* array = nullptr;
  MLC_RETURN_IF_ERROR(json.Array(tcb, key, path, 16, 16, &array));
  for (size_t i = 0; i < 16; ++i) {
    const std::string item_path = fmt::format("{}.{}[{}]", path, key, i);
    MLC_RETURN_IF_ERROR(json.Object((*array)[i], item_path));
    uint64_t svn = 0;
    MLC_RETURN_IF_ERROR(json.Integer((*array)[i], "svn", item_path, 255, &svn));
    (*out)[i] = static_cast<uint8_t>(svn);
  }
  return Status::Ok();
}

Status ReadModuleIdentity(const JsonReader& json, const Json& object, const std::string& path,
                          bool with_levels, TdxModuleIdentity* module) {
  MLC_RETURN_IF_ERROR(json.Object(object, path));
  if (with_levels) MLC_RETURN_IF_ERROR(json.String(object, "id", path, 64, &module->id));
  MLC_RETURN_IF_ERROR(json.Hex(object, "mrsigner", path, &module->mr_signer));
  MLC_RETURN_IF_ERROR(json.Hex(object, "attributes", path, &module->attributes));
  MLC_RETURN_IF_ERROR(json.Hex(object, "attributesMask", path, &module->attributes_mask));
  if (with_levels) MLC_RETURN_IF_ERROR(ReadIsvLevels(json, object, path, &module->levels));
  return Status::Ok();
}

Result<Json> ParseSignedJson(std::string_view text, std::string_view what) {
  Json document = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded() || !document.is_object())
    return InvalidArgument("collateral_invalid: {} is not a JSON object", what);
  return document;
}

// --- TCB evaluation helpers ---

const IsvLevel* MatchIsvLevel(const std::vector<IsvLevel>& levels, uint16_t isv_svn) {
  for (const IsvLevel& level : levels) {
    if (isv_svn >= level.isv_svn) return &level;
  }
  return nullptr;
}

// A component status that is OutOfDate lowers the platform status (Intel QVL's convergence).
std::string LowerForOutOfDate(const std::string& platform) {
  if (platform == "UpToDate" || platform == "SWHardeningNeeded") return "OutOfDate";
  if (platform == "ConfigurationNeeded" || platform == "ConfigurationAndSWHardeningNeeded")
    return "OutOfDateConfigurationNeeded";
  return platform;
}

std::string Converge(const std::string& platform, const std::string& component) {
  if (platform == "NotSupported") return platform;
  if (component == "OutOfDate" || component == "OutOfDateConfigurationNeeded")
    return LowerForOutOfDate(platform);
  if (component == "Revoked") return "Revoked";
  if (component == "NotSupported") return "NotSupported";
  return platform;
}

void AddAdvisories(const std::vector<std::string>& from, std::vector<std::string>* to) {
  for (const std::string& id : from) {
    if (std::find(to->begin(), to->end(), id) == to->end()) to->push_back(id);
  }
}

bool LookupSerial(X509_CRL* crl, const ASN1_INTEGER* serial) {
  X509_REVOKED* entry = nullptr;
  const bool listed = X509_CRL_get0_by_serial(crl, &entry, const_cast<ASN1_INTEGER*>(serial)) == 1;
  ERR_clear_error();
  return listed;
}

struct NamedWindow {
  std::string what;
  ValidityWindow window;
};

Status CheckNamedWindows(const std::vector<NamedWindow>& windows, int64_t now) {
  for (const NamedWindow& item : windows) {
    if (now > item.window.not_after)
      return InvalidArgument("collateral_expired: {} expired at {} (now {})", item.what,
                             FormatUtc(item.window.not_after), FormatUtc(now));
    if (now < item.window.not_before)
      return InvalidArgument("collateral_not_yet_valid: {} is valid only from {} (now {})",
                             item.what, FormatUtc(item.window.not_before), FormatUtc(now));
  }
  return Status::Ok();
}

Status CheckCertWindow(X509* cert, const ValidityWindow& window, int64_t now) {
  if (now < window.not_before || now > window.not_after)
    return InvalidArgument("chain_invalid: certificate '{}' is not valid at {} (valid {} .. {})",
                           CommonName(cert), FormatUtc(now), FormatUtc(window.not_before),
                           FormatUtc(window.not_after));
  return Status::Ok();
}

// The digest of every collateral byte, each field length-framed.
capsule::Digest CollateralDigest(const IntelCollateral& c) {
  const std::array<uint64_t, 9> sizes = {
      c.pck_crl_issuer_chain.size(),     c.root_ca_crl.size(), c.pck_crl.size(),
      c.tcb_info_issuer_chain.size(),    c.tcb_info.size(),    c.tcb_info_signature.size(),
      c.qe_identity_issuer_chain.size(), c.qe_identity.size(), c.qe_identity_signature.size()};
  return capsule::Hash({{reinterpret_cast<const uint8_t*>(sizes.data()), sizeof(sizes)},
                        AsBytes(c.pck_crl_issuer_chain),
                        c.root_ca_crl,
                        c.pck_crl,
                        AsBytes(c.tcb_info_issuer_chain),
                        AsBytes(c.tcb_info),
                        c.tcb_info_signature,
                        AsBytes(c.qe_identity_issuer_chain),
                        AsBytes(c.qe_identity),
                        c.qe_identity_signature});
}

Result<std::vector<uint8_t>> RawSignatureToDer(std::span<const uint8_t> rs,
                                               std::string_view check) {
  if (rs.size() != 64)
    return InvalidArgument("{}: signature is {} bytes, expected 64 (r||s)", check, rs.size());
  Result<std::vector<uint8_t>> der = EcdsaSignatureToDer(rs.first(32), rs.last(32), false);
  if (!der.ok()) return InvalidArgument("{}: {}", check, der.status().message());
  return der;
}

// The certificate's key must be EC P-256 (every Intel key is).
Status CheckP256Key(EVP_PKEY* key, std::string_view check, std::string_view what) {
  char group[64] = {};
  size_t group_size = 0;
  if (key == nullptr || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof(group), &group_size) != 1 ||
      std::string_view(group, group_size) != "prime256v1") {
    ERR_clear_error();
    return InvalidArgument("{}: {} key is not EC P-256", check, what);
  }
  return Status::Ok();
}

}  // namespace

std::string UpperHex(std::span<const uint8_t> bytes) {
  std::string hex = LowerHex(bytes);
  std::transform(hex.begin(), hex.end(), hex.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  return hex;
}

bool CrlListsSerial(X509_CRL* crl, std::span<const uint8_t> serial) {
  std::unique_ptr<BIGNUM, OpenSslFree<BN_free>> number(
      BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  if (!number) return false;
  std::unique_ptr<ASN1_INTEGER, OpenSslFree<ASN1_INTEGER_free>> integer(
      BN_to_ASN1_INTEGER(number.get(), nullptr));
  if (!integer) {
    ERR_clear_error();
    return false;
  }
  return LookupSerial(crl, integer.get());
}

Result<ParsedQuote> ParseQuote(EvidenceType type, std::span<const uint8_t> quote) {
  const bool tdx = type == EvidenceType::kTdx;
  const std::string_view what = tdx ? "TDX quote" : "SGX quote";
  if (quote.size() < kHeaderBytes)
    return InvalidArgument("parse_error: {} is {} bytes, shorter than its {}-byte header", what,
                           quote.size(), kHeaderBytes);
  const uint16_t version = Le16(quote, 0);
  const uint16_t expected_version = tdx ? kTdxQuoteVersion : kSgxQuoteVersion;
  if (version != expected_version)
    return Unsupported("unsupported_format: {} version {} is not supported (expected {})", what,
                       version, expected_version);
  const uint16_t key_type = Le16(quote, 2);
  if (key_type != kAttestationKeyEcdsaP256)
    return Unsupported(
        "unsupported_format: {} attestation key type {} is not supported (expected 2, "
        "ECDSA-256 with P-256)",
        what, key_type);
  const uint32_t tee_type = Le32(quote, 4);
  const uint32_t expected_tee = tdx ? kTeeTypeTdx : kTeeTypeSgx;
  if (tee_type != expected_tee)
    return Unsupported("unsupported_format: {} TEE type 0x{:x} is not 0x{:x}", what, tee_type,
                       expected_tee);
  if (!std::equal(kIntelQeVendorId.begin(), kIntelQeVendorId.end(), quote.begin() + 12))
    return Unsupported("unsupported_format: {} QE vendor ID {} is not Intel's {}", what,
                       LowerHex(quote.subspan(12, 16)), LowerHex(kIntelQeVendorId));

  ParsedQuote parsed;
  parsed.type = type;
  const size_t signed_size = tdx ? kTdxSignedBytes : kSgxSignedBytes;
  QuoteReader top(quote, 0, what);
  MLC_RETURN_IF_ERROR(top.Take(signed_size, &parsed.signed_bytes, "header and report body"));
  parsed.body = parsed.signed_bytes.subspan(kHeaderBytes);
  uint32_t signature_size = 0;
  MLC_RETURN_IF_ERROR(top.U32(&signature_size, "signature data length"));
  // Bytes after the signature data are covered by no signature; Intel's QVL ignores them (the
  // TDX vector carries 70), so they are ignored here too (the evidence size limit bounds them).
  std::span<const uint8_t> signature_data;
  MLC_RETURN_IF_ERROR(top.Take(signature_size, &signature_data, "signature data"));

  QuoteReader data(signature_data, signed_size + 4, what);
  MLC_RETURN_IF_ERROR(data.Take(64, &parsed.signature, "quote signature"));
  MLC_RETURN_IF_ERROR(data.Take(64, &parsed.attestation_key, "attestation key"));
  std::span<const uint8_t> qe_part = signature_data.subspan(128);
  size_t qe_base = signed_size + 4 + 128;
  if (tdx) {
    uint16_t outer_type = 0;
    uint32_t outer_size = 0;
    MLC_RETURN_IF_ERROR(data.U16(&outer_type, "certification data type"));
    if (outer_type != kCertDataQeReport)
      return Unsupported(
          "unsupported_format: {} certification data type {} is not supported (expected 6, QE "
          "report certification data)",
          what, outer_type);
    MLC_RETURN_IF_ERROR(data.U32(&outer_size, "certification data size"));
    qe_base = data.offset();
    MLC_RETURN_IF_ERROR(data.Rest(outer_size, &qe_part, "certification data"));
  }
  QuoteReader qe(qe_part, qe_base, what);
  MLC_RETURN_IF_ERROR(qe.Take(kReportBodyBytes, &parsed.qe_report, "QE report"));
  MLC_RETURN_IF_ERROR(qe.Take(64, &parsed.qe_report_signature, "QE report signature"));
  uint16_t auth_size = 0;
  MLC_RETURN_IF_ERROR(qe.U16(&auth_size, "QE auth data length"));
  MLC_RETURN_IF_ERROR(qe.Take(auth_size, &parsed.qe_auth_data, "QE auth data"));
  uint16_t cert_type = 0;
  uint32_t cert_size = 0;
  MLC_RETURN_IF_ERROR(qe.U16(&cert_type, "PCK certification data type"));
  if (cert_type != kCertDataPckChain)
    return Unsupported(
        "unsupported_format: {} PCK certification data type {} is not supported (expected 5, "
        "PEM certificate chain)",
        what, cert_type);
  MLC_RETURN_IF_ERROR(qe.U32(&cert_size, "PCK certification data size"));
  std::span<const uint8_t> pem;
  MLC_RETURN_IF_ERROR(qe.Rest(cert_size, &pem, "PCK certificate chain"));
  parsed.pck_chain_pem = std::string_view(reinterpret_cast<const char*>(pem.data()), pem.size());
  return parsed;
}

Result<PckInfo> ParsePckExtension(X509* pck_leaf) {
  Result<std::vector<uint8_t>> contents = ExtensionContents(pck_leaf, kSgxExtensionOid);
  if (!contents.ok())
    return InvalidArgument("parse_error: PCK certificate: {}", contents.status().message());
  PckInfo info;
  bool have_tcb = false, have_pce_id = false, have_fmspc = false;
  std::array<bool, 18> have_component{};
  DerReader outer(*contents, "PCK SGX extension");
  DerReader items(std::span<const uint8_t>(), "");
  auto fail = [](const Status& status) {
    return InvalidArgument("parse_error: {}", status.message());
  };
  if (Status s = outer.Sequence(&items, "extension"); !s.ok()) return fail(s);
  if (Status s = outer.ExpectEnd(); !s.ok()) return fail(s);
  const std::string prefix = std::string(kSgxExtensionOid) + ".";
  while (!items.empty()) {
    DerReader item(std::span<const uint8_t>(), "");
    std::string oid;
    if (Status s = items.Sequence(&item, "item"); !s.ok()) return fail(s);
    if (Status s = item.Oid(&oid, "item OID"); !s.ok()) return fail(s);
    if (!oid.starts_with(prefix)) continue;  // not Intel's arc: ignore
    const std::string_view suffix = std::string_view(oid).substr(prefix.size());
    std::span<const uint8_t> bytes;
    if (suffix == "2") {
      if (have_tcb) return InvalidArgument("parse_error: PCK SGX extension has two TCB items");
      have_tcb = true;
      DerReader tcb(std::span<const uint8_t>(), "");
      if (Status s = item.Sequence(&tcb, "TCB"); !s.ok()) return fail(s);
      while (!tcb.empty()) {
        DerReader component(std::span<const uint8_t>(), "");
        std::string component_oid;
        if (Status s = tcb.Sequence(&component, "TCB component"); !s.ok()) return fail(s);
        if (Status s = component.Oid(&component_oid, "TCB component OID"); !s.ok()) return fail(s);
        const std::string tcb_prefix = prefix + "2.";
        if (!component_oid.starts_with(tcb_prefix)) continue;
        int index = 0;
        const std::string_view number = std::string_view(component_oid).substr(tcb_prefix.size());
        if (number.empty() || number.size() > 2 ||
            !std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; }))
          continue;
        for (char c : number) index = index * 10 + (c - '0');
        if (index < 1 || index > 18) continue;
        if (have_component[index - 1])
          return InvalidArgument("parse_error: PCK TCB component {} appears twice", index);
        have_component[index - 1] = true;
        if (index == 18) {
          if (Status s = component.OctetString(&bytes, "CPUSVN"); !s.ok()) return fail(s);
          if (bytes.size() != 16)
            return InvalidArgument("parse_error: PCK CPUSVN is {} bytes, expected 16",
                                   bytes.size());
          std::copy(bytes.begin(), bytes.end(), info.cpu_svn.begin());
          continue;
        }
        int64_t value = 0;
        if (Status s = component.Integer(&value, "TCB component"); !s.ok()) return fail(s);
        const int64_t max = index == 17 ? 65535 : 255;
        if (value < 0 || value > max)
          return InvalidArgument("parse_error: PCK TCB component {} value {} is out of range 0..{}",
                                 index, value, max);
        if (index == 17) {
          info.pce_svn = static_cast<uint16_t>(value);
        } else {
          info.components[index - 1] = static_cast<uint8_t>(value);
        }
      }
    } else if (suffix == "3" || suffix == "4") {
      const bool fmspc = suffix == "4";
      bool& have = fmspc ? have_fmspc : have_pce_id;
      if (have) return InvalidArgument("parse_error: PCK SGX extension item {} twice", oid);
      have = true;
      if (Status s = item.OctetString(&bytes, fmspc ? "FMSPC" : "PCE-ID"); !s.ok()) return fail(s);
      const size_t expected = fmspc ? 6 : 2;
      if (bytes.size() != expected)
        return InvalidArgument("parse_error: PCK {} is {} bytes, expected {}",
                               fmspc ? "FMSPC" : "PCE-ID", bytes.size(), expected);
      std::copy(bytes.begin(), bytes.end(), fmspc ? info.fmspc.begin() : info.pce_id.begin());
    }
  }
  for (int i = 0; i < 17; ++i) {
    if (!have_component[i])
      return InvalidArgument("parse_error: PCK SGX extension lacks TCB item {}.2.{}",
                             kSgxExtensionOid, i + 1);
  }
  if (!have_tcb || !have_pce_id || !have_fmspc)
    return InvalidArgument("parse_error: PCK SGX extension lacks the {}",
                           !have_tcb ? "TCB" : (!have_pce_id ? "PCE-ID" : "FMSPC"));
  return info;
}

Result<TcbInfo> ParseTcbInfo(std::string_view json_text) {
  MLC_ASSIGN_OR_RETURN(Json document, ParseSignedJson(json_text, "tcbInfo"));
  const JsonReader json("tcbInfo");
  TcbInfo info;
  uint64_t number = 0;
  MLC_RETURN_IF_ERROR(json.String(document, "id", "", 16, &info.id));
  if (info.id != "SGX" && info.id != "TDX")
    return InvalidArgument("collateral_mismatch: tcbInfo id '{}' is neither SGX nor TDX", info.id);
  MLC_RETURN_IF_ERROR(json.Integer(document, "version", "", 1000, &number));
  info.version = static_cast<int>(number);
  if (info.version != 3)
    return InvalidArgument("collateral_mismatch: tcbInfo version {} is not supported (expected 3)",
                           info.version);
  MLC_RETURN_IF_ERROR(json.Date(document, "issueDate", "", &info.issue_date));
  MLC_RETURN_IF_ERROR(json.Date(document, "nextUpdate", "", &info.next_update));
  MLC_RETURN_IF_ERROR(json.Hex(document, "fmspc", "", &info.fmspc));
  MLC_RETURN_IF_ERROR(json.Hex(document, "pceId", "", &info.pce_id));
  MLC_RETURN_IF_ERROR(json.Integer(document, "tcbType", "", 1000, &number));
  if (number != 0)
    return InvalidArgument("collateral_mismatch: tcbInfo tcbType {} is not supported (expected 0)",
                           number);
  const bool tdx = info.id == "TDX";
  if (tdx) {
    const Json* module = json.Member(document, "tdxModule");
    if (module == nullptr) return json.Error("tdxModule", "missing");
    info.tdx_module.emplace();
    MLC_RETURN_IF_ERROR(ReadModuleIdentity(json, *module, "tdxModule", false, &*info.tdx_module));
    if (json.Member(document, "tdxModuleIdentities") != nullptr) {
      const Json* identities = nullptr;
      MLC_RETURN_IF_ERROR(
          json.Array(document, "tdxModuleIdentities", "", 0, kMaxModuleIdentities, &identities));
      for (size_t i = 0; i < identities->size(); ++i) {
        TdxModuleIdentity identity;
        MLC_RETURN_IF_ERROR(ReadModuleIdentity(
            json, (*identities)[i], fmt::format("tdxModuleIdentities[{}]", i), true, &identity));
        info.tdx_module_identities.push_back(std::move(identity));
      }
    }
  }
  const Json* levels = nullptr;
  MLC_RETURN_IF_ERROR(json.Array(document, "tcbLevels", "", 1, kMaxTcbLevels, &levels));
  for (size_t i = 0; i < levels->size(); ++i) {
    const std::string path = fmt::format("tcbLevels[{}]", i);
    const Json& entry = (*levels)[i];
    MLC_RETURN_IF_ERROR(json.Object(entry, path));
    const Json* tcb = json.Member(entry, "tcb");
    if (tcb == nullptr) return json.Error(path + ".tcb", "missing");
    MLC_RETURN_IF_ERROR(json.Object(*tcb, path + ".tcb"));
    TcbLevel level;
    MLC_RETURN_IF_ERROR(
        ReadComponents(json, *tcb, "sgxtcbcomponents", path + ".tcb", &level.sgx_components));
    MLC_RETURN_IF_ERROR(json.Integer(*tcb, "pcesvn", path + ".tcb", 65535, &number));
    level.pce_svn = static_cast<uint16_t>(number);
    if (tdx) {
      level.has_tdx_components = true;
      MLC_RETURN_IF_ERROR(
          ReadComponents(json, *tcb, "tdxtcbcomponents", path + ".tcb", &level.tdx_components));
    }
    MLC_RETURN_IF_ERROR(
        ReadLevelCommon(json, entry, path, &level.tcb_date, &level.status, &level.advisory_ids));
    info.levels.push_back(std::move(level));
  }
  return info;
}

Result<QeIdentity> ParseQeIdentity(std::string_view json_text) {
  MLC_ASSIGN_OR_RETURN(Json document, ParseSignedJson(json_text, "enclaveIdentity"));
  const JsonReader json("enclaveIdentity");
  QeIdentity identity;
  uint64_t number = 0;
  MLC_RETURN_IF_ERROR(json.String(document, "id", "", 16, &identity.id));
  if (identity.id != "QE" && identity.id != "TD_QE")
    return InvalidArgument("collateral_mismatch: enclaveIdentity id '{}' is neither QE nor TD_QE",
                           identity.id);
  MLC_RETURN_IF_ERROR(json.Integer(document, "version", "", 1000, &number));
  identity.version = static_cast<int>(number);
  if (identity.version != 2)
    return InvalidArgument(
        "collateral_mismatch: enclaveIdentity version {} is not supported (expected 2)",
        identity.version);
  MLC_RETURN_IF_ERROR(json.Date(document, "issueDate", "", &identity.issue_date));
  MLC_RETURN_IF_ERROR(json.Date(document, "nextUpdate", "", &identity.next_update));
  MLC_RETURN_IF_ERROR(json.Hex(document, "miscselect", "", &identity.miscselect));
  MLC_RETURN_IF_ERROR(json.Hex(document, "miscselectMask", "", &identity.miscselect_mask));
  MLC_RETURN_IF_ERROR(json.Hex(document, "attributes", "", &identity.attributes));
  MLC_RETURN_IF_ERROR(json.Hex(document, "attributesMask", "", &identity.attributes_mask));
  MLC_RETURN_IF_ERROR(json.Hex(document, "mrsigner", "", &identity.mr_signer));
  MLC_RETURN_IF_ERROR(json.Integer(document, "isvprodid", "", 65535, &number));
  identity.isv_prod_id = static_cast<uint16_t>(number);
  MLC_RETURN_IF_ERROR(ReadIsvLevels(json, document, "", &identity.levels));
  return identity;
}

Status CheckQeIdentity(const QeIdentity& identity, std::span<const uint8_t> qe_report) {
  if (qe_report.size() != kReportBodyBytes)
    return InvalidArgument("qe_identity_mismatch: QE report is {} bytes, expected {}",
                           qe_report.size(), kReportBodyBytes);
  // Compared byte-wise in memory order, as the JSON hex is written (§5.5).
  for (size_t i = 0; i < 4; ++i) {
    if ((qe_report[kReportMiscSelect + i] & identity.miscselect_mask[i]) != identity.miscselect[i])
      return InvalidArgument("qe_identity_mismatch: QE miscselect {} masked with {} is not {}",
                             LowerHex(qe_report.subspan(kReportMiscSelect, 4)),
                             LowerHex(identity.miscselect_mask), LowerHex(identity.miscselect));
  }
  for (size_t i = 0; i < 16; ++i) {
    if ((qe_report[kReportAttributes + i] & identity.attributes_mask[i]) != identity.attributes[i])
      return InvalidArgument("qe_identity_mismatch: QE attributes {} masked with {} are not {}",
                             LowerHex(qe_report.subspan(kReportAttributes, 16)),
                             LowerHex(identity.attributes_mask), LowerHex(identity.attributes));
  }
  if (!std::equal(identity.mr_signer.begin(), identity.mr_signer.end(),
                  qe_report.begin() + kReportMrSigner))
    return InvalidArgument("qe_identity_mismatch: QE MRSIGNER {} is not {}",
                           LowerHex(qe_report.subspan(kReportMrSigner, 32)),
                           LowerHex(identity.mr_signer));
  const uint16_t prod_id = Le16(qe_report, kReportIsvProdId);
  if (prod_id != identity.isv_prod_id)
    return InvalidArgument("qe_identity_mismatch: QE ISVPRODID {} is not {}", prod_id,
                           identity.isv_prod_id);
  return Status::Ok();
}

Result<const TdxModuleIdentity*> CheckTdxModule(const TcbInfo& tcb_info,
                                                std::span<const uint8_t> td_report) {
  if (td_report.size() != kTdReportBodyBytes)
    return InvalidArgument("tdx_module_mismatch: TD report is {} bytes, expected {}",
                           td_report.size(), kTdReportBodyBytes);
  const uint8_t module_major = td_report[kTdTeeTcbSvn + 1];
  const TdxModuleIdentity* module = nullptr;
  if (module_major > 0) {
    const std::string wanted = fmt::format("TDX_{:02X}", module_major);
    std::vector<std::string> have;
    for (const TdxModuleIdentity& identity : tcb_info.tdx_module_identities) {
      have.push_back(identity.id);
      if (identity.id.size() == wanted.size() &&
          std::equal(wanted.begin(), wanted.end(), identity.id.begin(), [](char a, char b) {
            return std::toupper(static_cast<unsigned char>(a)) ==
                   std::toupper(static_cast<unsigned char>(b));
          })) {
        module = &identity;
        break;
      }
    }
    if (module == nullptr)
      return InvalidArgument(
          "tdx_module_mismatch: tcbInfo has no TDX module identity {} for module major version "
          "{} (has: {})",
          wanted, module_major, have.empty() ? "none" : Join(have));
  } else {
    if (!tcb_info.tdx_module)
      return InvalidArgument("tdx_module_mismatch: tcbInfo has no tdxModule");
    module = &*tcb_info.tdx_module;
  }
  const std::span<const uint8_t> mr_signer = td_report.subspan(kTdMrSignerSeam, 48);
  if (!std::equal(module->mr_signer.begin(), module->mr_signer.end(), mr_signer.begin()))
    return InvalidArgument("tdx_module_mismatch: MRSIGNERSEAM {} is not {}'s {}",
                           LowerHex(mr_signer), module->id.empty() ? "tdxModule" : module->id,
                           LowerHex(module->mr_signer));
  const std::span<const uint8_t> seam = td_report.subspan(kTdSeamAttributes, 8);
  for (size_t i = 0; i < 8; ++i) {
    if (seam[i] != 0 || (seam[i] & module->attributes_mask[i]) != module->attributes[i])
      return InvalidArgument(
          "tdx_module_mismatch: SEAM_ATTRIBUTES {} must be zero and match {} under mask {}",
          LowerHex(seam), LowerHex(module->attributes), LowerHex(module->attributes_mask));
  }
  return module;
}

TcbOutcome EvaluateTcb(const TcbInfo& tcb_info, const QeIdentity& qe_identity,
                       const TcbInputs& inputs) {
  TcbOutcome outcome;
  const bool tdx = inputs.tee_tcb_svn.has_value();
  // §5.4: the first level the PCK's SGX components and PCESVN reach; for TDX also the TD's
  // TEE_TCB_SVN (from index 2 when the module major version is set: [0] and [1] are the module's
  // SVN and version, judged by the module identity instead).
  const TcbLevel* platform = nullptr;
  for (const TcbLevel& level : tcb_info.levels) {
    bool sgx_ok = inputs.pck.pce_svn >= level.pce_svn;
    for (size_t i = 0; i < 16 && sgx_ok; ++i) {
      sgx_ok = inputs.pck.components[i] >= level.sgx_components[i];
    }
    if (!sgx_ok) continue;
    if (!tdx) {
      platform = &level;
      break;
    }
    if (!level.has_tdx_components) continue;
    const std::array<uint8_t, 16>& svn = *inputs.tee_tcb_svn;
    bool tdx_ok = true;
    for (size_t i = svn[1] > 0 ? 2 : 0; i < 16 && tdx_ok; ++i) {
      tdx_ok = svn[i] >= level.tdx_components[i];
    }
    if (tdx_ok) {
      platform = &level;
      break;
    }
  }
  if (platform == nullptr) {
    outcome.status = outcome.platform_status = "NotSupported";
  } else {
    outcome.status = outcome.platform_status = platform->status;
    outcome.tcb_date = platform->tcb_date;
    AddAdvisories(platform->advisory_ids, &outcome.advisory_ids);
  }

  // §5.6: the TDX module's own level, then the QE's, each converged into the platform status.
  if (tdx) {
    const std::array<uint8_t, 16>& svn = *inputs.tee_tcb_svn;
    if (svn[1] == 0) {
      outcome.tdx_module_status = "UpToDate";
    } else {
      const IsvLevel* level =
          inputs.tdx_module ? MatchIsvLevel(inputs.tdx_module->levels, svn[0]) : nullptr;
      outcome.tdx_module_status = level ? level->status : "NotSupported";
      if (level != nullptr && level->status != "UpToDate")
        AddAdvisories(level->advisory_ids, &outcome.advisory_ids);
    }
    // A module below every known level is not accepted (as an unmatched platform level is not).
    outcome.status = Converge(outcome.status, outcome.tdx_module_status);
  }
  const IsvLevel* qe_level = MatchIsvLevel(qe_identity.levels, inputs.qe_isv_svn);
  outcome.qe_status = qe_level ? qe_level->status : "NotSupported";
  if (qe_level != nullptr && qe_level->status != "UpToDate")
    AddAdvisories(qe_level->advisory_ids, &outcome.advisory_ids);
  outcome.status = Converge(outcome.status, outcome.qe_status);
  if (outcome.status == "NotSupported") outcome.advisory_ids.clear();
  return outcome;
}

// --- Verifier ---

struct IntelVerifier::Root {
  Status status;  // the configured root does not parse
  X509Ptr cert;
  std::vector<uint8_t> der;
  ValidityWindow window;
};

struct IntelVerifier::CollateralEntry {
  capsule::Digest digest{};  // of every collateral byte (the cache key)
  // Step 2 (PCK chain): the CRLs and the chain of the PCK CRL's issuer.
  Status crl_status;
  X509CrlPtr root_ca_crl;
  X509CrlPtr pck_crl;
  std::vector<NamedWindow> crl_windows;
  // Step 3: the TCB Signing chain, both JSON signatures, the parsed documents.
  Status status;
  std::vector<NamedWindow> windows;
  TcbInfo tcb_info;
  QeIdentity qe_identity;
};

struct IntelVerifier::CertificateEntry {
  capsule::Digest digest{};  // of the DER
  X509Ptr cert;
};

struct IntelVerifier::IssuerEntry {
  Status status;  // the PCK CA against the root and the root CRL; the PCK CRL's signature
  X509Ptr intermediate;
  ValidityWindow window;
  X509StorePtr store;  // trusts only this PCK CA: the per-quote leaf check
};

IntelVerifier::IntelVerifier(const TrustAnchors& anchors) : root_(std::make_unique<Root>()) {
  Result<X509Ptr> root = ParseDerCertificate(anchors.intel_root_der, "Intel root");
  if (!root.ok()) {
    root_->status =
        InvalidArgument("chain_invalid: the configured Intel root: {}", root.status().message());
    return;
  }
  root_->cert = std::move(root).value();
  root_->der = anchors.intel_root_der;
  Result<ValidityWindow> window = CertificateValidity(root_->cert.get());
  if (!window.ok()) {
    root_->status =
        InvalidArgument("chain_invalid: the configured Intel root: {}", window.status().message());
    return;
  }
  root_->window = *window;
}

IntelVerifier::~IntelVerifier() = default;

Result<std::shared_ptr<const IntelVerifier::CollateralEntry>> IntelVerifier::Collateral(
    const IntelCollateral& collateral) const {
  const capsule::Digest key = CollateralDigest(collateral);
  {
    std::shared_lock lock(mutex_);
    auto it = collateral_cache_.find(key);
    if (it != collateral_cache_.end()) return it->second;
  }
  auto entry = std::make_shared<CollateralEntry>();
  entry->digest = key;
  X509* root = root_->cert.get();
  // Time-independent checks only: OpenSSL's time checks are off, the windows are kept.
  const ChainCheck untimed{.now = 0, .crls = {}, .strict = true, .check_time = false};

  // Step 2 material: both CRLs, the PCK CRL issuer's chain, the CRL signatures.
  entry->crl_status = [&]() -> Status {
    Result<X509CrlPtr> root_crl = ParseDerCrl(collateral.root_ca_crl, "root_ca_crl");
    if (!root_crl.ok()) return InvalidArgument("crl_invalid: {}", root_crl.status().message());
    entry->root_ca_crl = std::move(root_crl).value();
    Result<X509CrlPtr> pck_crl = ParseDerCrl(collateral.pck_crl, "pck_crl");
    if (!pck_crl.ok()) return InvalidArgument("crl_invalid: {}", pck_crl.status().message());
    entry->pck_crl = std::move(pck_crl).value();
    if (X509_NAME_cmp(X509_CRL_get_issuer(entry->root_ca_crl.get()), X509_get_subject_name(root)) !=
        0)
      return InvalidArgument("crl_invalid: root_ca_crl issuer '{}' is not the root '{}'",
                             NameText(X509_CRL_get_issuer(entry->root_ca_crl.get())),
                             NameText(X509_get_subject_name(root)));
    if (X509_CRL_verify(entry->root_ca_crl.get(), X509_get0_pubkey(root)) != 1) {
      ERR_clear_error();
      return InvalidArgument("crl_invalid: root_ca_crl signature by '{}' does not verify",
                             CommonName(root));
    }
    Result<ValidityWindow> window = CrlValidity(entry->root_ca_crl.get());
    if (!window.ok()) return InvalidArgument("crl_invalid: {}", window.status().message());
    entry->crl_windows.push_back({"root_ca_crl", *window});
    window = CrlValidity(entry->pck_crl.get());
    if (!window.ok()) return InvalidArgument("crl_invalid: {}", window.status().message());
    entry->crl_windows.push_back({"pck_crl", *window});

    Result<std::vector<X509Ptr>> chain =
        ParsePemCertificates(collateral.pck_crl_issuer_chain, "pck_crl_issuer_chain");
    if (!chain.ok()) return InvalidArgument("crl_invalid: {}", chain.status().message());
    if (chain->size() != 2)
      return InvalidArgument(
          "crl_invalid: pck_crl_issuer_chain has {} certificates, expected 2 (PCK CA, root)",
          chain->size());
    X509* issuer = (*chain)[0].get();
    X509* chain_root = (*chain)[1].get();
    ChainCheck check = untimed;
    check.crls = {entry->root_ca_crl.get()};
    check.revoked_check = "pck_revoked";
    MLC_RETURN_IF_ERROR(VerifyChain(issuer, std::span<X509* const>(&chain_root, 1), root, check,
                                    "crl_invalid: pck_crl_issuer_chain"));
    if (X509_NAME_cmp(X509_CRL_get_issuer(entry->pck_crl.get()), X509_get_subject_name(issuer)) !=
        0)
      return InvalidArgument("crl_invalid: pck_crl issuer '{}' is not pck_crl_issuer_chain's '{}'",
                             NameText(X509_CRL_get_issuer(entry->pck_crl.get())),
                             CommonName(issuer));
    if (X509_CRL_verify(entry->pck_crl.get(), X509_get0_pubkey(issuer)) != 1) {
      ERR_clear_error();
      return InvalidArgument("crl_invalid: pck_crl signature by '{}' does not verify",
                             CommonName(issuer));
    }
    Result<ValidityWindow> issuer_window = CertificateValidity(issuer);
    if (!issuer_window.ok())
      return InvalidArgument("crl_invalid: {}", issuer_window.status().message());
    entry->crl_windows.push_back(
        {fmt::format("pck_crl_issuer_chain certificate '{}'", CommonName(issuer)), *issuer_window});
    return Status::Ok();
  }();

  // Step 3: the TCB Signing chain(s), the signatures over the exact JSON text, then the fields.
  entry->status = [&]() -> Status {
    if (!entry->crl_status.ok()) return Status::Ok();  // step 2 fails first; never reached
    EvpPkeyPtr tcb_key, qe_key;
    auto signing_key = [&](const std::string& pem, std::string_view name,
                           EvpPkeyPtr* key) -> Status {
      Result<std::vector<X509Ptr>> chain = ParsePemCertificates(pem, name);
      if (!chain.ok()) return InvalidArgument("collateral_signature: {}", chain.status().message());
      if (chain->size() != 2)
        return InvalidArgument(
            "collateral_signature: {} has {} certificates, expected 2 (TCB Signing, root)", name,
            chain->size());
      X509* signer = (*chain)[0].get();
      X509* chain_root = (*chain)[1].get();
      if (CommonName(signer) != "Intel SGX TCB Signing")
        return InvalidArgument(
            "collateral_signature: {} signer is '{}', not 'Intel SGX TCB "
            "Signing'",
            name, CommonName(signer));
      ChainCheck check = untimed;
      check.crls = {entry->root_ca_crl.get()};
      check.revoked_check = "collateral_signature";
      MLC_RETURN_IF_ERROR(VerifyChain(signer, std::span<X509* const>(&chain_root, 1), root, check,
                                      fmt::format("collateral_signature: {}", name)));
      MLC_RETURN_IF_ERROR(CheckP256Key(X509_get0_pubkey(signer), "collateral_signature", name));
      Result<ValidityWindow> window = CertificateValidity(signer);
      if (!window.ok())
        return InvalidArgument("collateral_signature: {}", window.status().message());
      entry->windows.push_back(
          {fmt::format("{} certificate '{}'", name, CommonName(signer)), *window});
      EVP_PKEY* public_key = X509_get0_pubkey(signer);
      EVP_PKEY_up_ref(public_key);
      key->reset(public_key);
      return Status::Ok();
    };
    MLC_RETURN_IF_ERROR(
        signing_key(collateral.tcb_info_issuer_chain, "tcb_info_issuer_chain", &tcb_key));
    MLC_RETURN_IF_ERROR(
        signing_key(collateral.qe_identity_issuer_chain, "qe_identity_issuer_chain", &qe_key));
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> tcb_signature,
                         RawSignatureToDer(collateral.tcb_info_signature,
                                           "collateral_signature: tcb_info_signature"));
    MLC_RETURN_IF_ERROR(VerifySignature(tcb_key.get(), EVP_sha256(), tcb_signature,
                                        AsBytes(collateral.tcb_info),
                                        "collateral_signature: tcb_info"));
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> qe_signature,
                         RawSignatureToDer(collateral.qe_identity_signature,
                                           "collateral_signature: qe_identity_signature"));
    MLC_RETURN_IF_ERROR(VerifySignature(qe_key.get(), EVP_sha256(), qe_signature,
                                        AsBytes(collateral.qe_identity),
                                        "collateral_signature: qe_identity"));
    MLC_ASSIGN_OR_RETURN(entry->tcb_info, ParseTcbInfo(collateral.tcb_info));
    MLC_ASSIGN_OR_RETURN(entry->qe_identity, ParseQeIdentity(collateral.qe_identity));
    entry->windows.push_back(
        {"tcbInfo", {entry->tcb_info.issue_date, entry->tcb_info.next_update}});
    entry->windows.push_back(
        {"qeIdentity", {entry->qe_identity.issue_date, entry->qe_identity.next_update}});
    return Status::Ok();
  }();

  std::unique_lock lock(mutex_);
  if (collateral_cache_.size() >= kMaxCacheEntries) collateral_cache_.clear();
  collateral_cache_.emplace(key, entry);
  return std::shared_ptr<const CollateralEntry>(std::move(entry));
}

Result<std::shared_ptr<const IntelVerifier::CertificateEntry>> IntelVerifier::Certificate(
    std::vector<uint8_t> der) const {
  const capsule::Digest key = capsule::Hash({der});
  {
    std::shared_lock lock(mutex_);
    auto it = certificate_cache_.find(key);
    if (it != certificate_cache_.end()) return it->second;
  }
  Result<X509Ptr> cert = ParseDerCertificate(der, "PCK certificate chain");
  if (!cert.ok()) return InvalidArgument("parse_error: {}", cert.status().message());
  auto entry = std::make_shared<CertificateEntry>();
  entry->digest = key;
  entry->cert = std::move(cert).value();
  std::unique_lock lock(mutex_);
  if (certificate_cache_.size() >= kMaxCachedCertificates) certificate_cache_.clear();
  certificate_cache_.emplace(key, entry);
  return std::shared_ptr<const CertificateEntry>(std::move(entry));
}

Result<std::shared_ptr<const IntelVerifier::IssuerEntry>> IntelVerifier::Issuer(
    const CertificateEntry& ca, const CollateralEntry& collateral) const {
  // Keyed by the CA's bytes and the collateral's digest (which covers both CRLs).
  const capsule::Digest key = capsule::Hash({collateral.digest, ca.digest});
  {
    std::shared_lock lock(mutex_);
    auto it = issuer_cache_.find(key);
    if (it != issuer_cache_.end()) return it->second;
  }
  X509* intermediate = ca.cert.get();
  auto entry = std::make_shared<IssuerEntry>();
  X509_up_ref(intermediate);
  entry->intermediate.reset(intermediate);
  entry->status = [&]() -> Status {
    X509* root = root_->cert.get();
    ChainCheck check{.now = 0,
                     .crls = {collateral.root_ca_crl.get()},
                     .strict = true,
                     .check_time = false,
                     .revoked_check = "pck_revoked"};
    MLC_RETURN_IF_ERROR(VerifyChain(intermediate, {}, root, check, "chain_invalid"));
    MLC_ASSIGN_OR_RETURN(entry->window, CertificateValidity(intermediate));
    // The PCK CRL must be this CA's (the caller checked the names): its signature, by this key.
    if (X509_CRL_verify(collateral.pck_crl.get(), X509_get0_pubkey(intermediate)) != 1) {
      ERR_clear_error();
      return InvalidArgument("crl_invalid: pck_crl signature by the quote's '{}' does not verify",
                             CommonName(intermediate));
    }
    entry->store.reset(X509_STORE_new());
    if (!entry->store || X509_STORE_add_cert(entry->store.get(), intermediate) != 1)
      return InternalError("chain_invalid: X509 store setup ({})", OpenSslErrors());
    return Status::Ok();
  }();
  std::unique_lock lock(mutex_);
  if (issuer_cache_.size() >= kMaxCacheEntries) issuer_cache_.clear();
  issuer_cache_.emplace(key, entry);
  return std::shared_ptr<const IssuerEntry>(std::move(entry));
}

namespace {

// The PCK leaf against its (already verified) CA: signature and X.509 rules (strict), with the
// CA as the only trust anchor. Times and revocation are checked by the caller against `now`.
Status VerifyLeaf(X509_STORE* store, X509* leaf) {
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store, leaf, nullptr) != 1)
    return InternalError("chain_invalid: X509_STORE_CTX_init ({})", OpenSslErrors());
  X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx.get()), X509_V_FLAG_PARTIAL_CHAIN |
                                                                        X509_V_FLAG_X509_STRICT |
                                                                        X509_V_FLAG_NO_CHECK_TIME);
  if (X509_verify_cert(ctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return InvalidArgument("chain_invalid: PCK certificate '{}': {} (X509 error {})",
                           CommonName(leaf), X509_verify_cert_error_string(error), error);
  }
  ERR_clear_error();
  return Status::Ok();
}

std::vector<uint8_t> Copy(std::span<const uint8_t> bytes) {
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace

Result<Verdict> IntelVerifier::Verify(EvidenceType type, std::span<const uint8_t> quote,
                                      const IntelCollateral& collateral, int64_t now) const {
  MLC_RETURN_IF_ERROR(root_->status);
  if (type != EvidenceType::kSgx && type != EvidenceType::kTdx)
    return InvalidArgument("unsupported_format: evidence type {} is not an Intel quote",
                           capsule::EvidenceTypeName(type));
  const bool tdx = type == EvidenceType::kTdx;

  // 1. Parse.
  MLC_ASSIGN_OR_RETURN(ParsedQuote parsed, ParseQuote(type, quote));

  // 2. PCK chain: leaf <- PCK CA <- pinned root, both CRLs.
  Result<std::vector<std::vector<uint8_t>>> blocks =
      PemCertificateBlocks(parsed.pck_chain_pem, "PCK certificate chain");
  if (!blocks.ok()) return InvalidArgument("parse_error: {}", blocks.status().message());
  if (blocks->size() != 3)
    return InvalidArgument(
        "parse_error: PCK certificate chain has {} certificates, expected 3 (PCK, PCK CA, root)",
        blocks->size());
  if ((*blocks)[2] != root_->der)
    return InvalidArgument(
        "root_mismatch: the quote's root certificate is not the pinned Intel SGX Root CA (bytes "
        "differ)");
  MLC_ASSIGN_OR_RETURN(std::shared_ptr<const CertificateEntry> leaf_entry,
                       Certificate(std::move((*blocks)[0])));
  MLC_ASSIGN_OR_RETURN(std::shared_ptr<const CertificateEntry> ca_entry,
                       Certificate(std::move((*blocks)[1])));
  X509* leaf = leaf_entry->cert.get();
  X509* pck_ca = ca_entry->cert.get();
  const std::string leaf_name = CommonName(leaf);
  if (leaf_name.find("SGX PCK Certificate") == std::string::npos)
    return InvalidArgument("chain_invalid: PCK leaf '{}' is not an 'SGX PCK Certificate'",
                           leaf_name);
  const std::string ca_name = CommonName(pck_ca);
  if (ca_name != "Intel SGX PCK Processor CA" && ca_name != "Intel SGX PCK Platform CA")
    return InvalidArgument(
        "chain_invalid: PCK CA '{}' is neither 'Intel SGX PCK Processor CA' nor 'Intel SGX PCK "
        "Platform CA'",
        ca_name);
  MLC_ASSIGN_OR_RETURN(std::shared_ptr<const CollateralEntry> entry, Collateral(collateral));
  MLC_RETURN_IF_ERROR(entry->crl_status);
  if (X509_NAME_cmp(X509_CRL_get_issuer(entry->pck_crl.get()), X509_get_issuer_name(leaf)) != 0)
    return InvalidArgument(
        "collateral_mismatch: pck_crl is issued by '{}', but the PCK certificate by '{}'",
        NameText(X509_CRL_get_issuer(entry->pck_crl.get())), NameText(X509_get_issuer_name(leaf)));
  MLC_RETURN_IF_ERROR(CheckCertWindow(root_->cert.get(), root_->window, now));
  MLC_ASSIGN_OR_RETURN(std::shared_ptr<const IssuerEntry> issuer, Issuer(*ca_entry, *entry));
  MLC_RETURN_IF_ERROR(issuer->status);
  MLC_RETURN_IF_ERROR(CheckCertWindow(pck_ca, issuer->window, now));
  MLC_ASSIGN_OR_RETURN(ValidityWindow leaf_window, CertificateValidity(leaf));
  MLC_RETURN_IF_ERROR(CheckCertWindow(leaf, leaf_window, now));
  MLC_RETURN_IF_ERROR(VerifyLeaf(issuer->store.get(), leaf));
  MLC_RETURN_IF_ERROR(CheckNamedWindows(entry->crl_windows, now));
  if (LookupSerial(entry->pck_crl.get(), X509_get0_serialNumber(leaf))) {
    std::unique_ptr<BIGNUM, OpenSslFree<BN_free>> serial(
        ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), nullptr));
    char* hex = serial ? BN_bn2hex(serial.get()) : nullptr;
    const std::string serial_text = hex ? hex : "?";
    OPENSSL_free(hex);
    return PermissionDenied("pck_revoked: PCK certificate serial {} is on the CRL of '{}'",
                            serial_text, CommonName(pck_ca));
  }

  // 3. Collateral: signatures (cached), type, windows.
  MLC_RETURN_IF_ERROR(entry->status);
  const TcbInfo& tcb_info = entry->tcb_info;
  const QeIdentity& qe_identity = entry->qe_identity;
  const char* want_tcb_id = tdx ? "TDX" : "SGX";
  const char* want_qe_id = tdx ? "TD_QE" : "QE";
  if (tcb_info.id != want_tcb_id)
    return InvalidArgument("collateral_mismatch: tcbInfo id is '{}', expected '{}' for a {} quote",
                           tcb_info.id, want_tcb_id, capsule::EvidenceTypeName(type));
  if (qe_identity.id != want_qe_id)
    return InvalidArgument(
        "collateral_mismatch: enclaveIdentity id is '{}', expected '{}' for a {} quote",
        qe_identity.id, want_qe_id, capsule::EvidenceTypeName(type));
  MLC_RETURN_IF_ERROR(CheckNamedWindows(entry->windows, now));

  // 4. PCK extension against tcbInfo.
  MLC_ASSIGN_OR_RETURN(PckInfo pck, ParsePckExtension(leaf));
  if (pck.fmspc != tcb_info.fmspc)
    return InvalidArgument("collateral_mismatch: PCK FMSPC {} is not tcbInfo's {}",
                           UpperHex(pck.fmspc), UpperHex(tcb_info.fmspc));
  if (pck.pce_id != tcb_info.pce_id)
    return InvalidArgument("collateral_mismatch: PCK PCE-ID {} is not tcbInfo's {}",
                           UpperHex(pck.pce_id), UpperHex(tcb_info.pce_id));
  // 4b. TDX module identity.
  const TdxModuleIdentity* module = nullptr;
  if (tdx) {
    MLC_ASSIGN_OR_RETURN(module, CheckTdxModule(tcb_info, parsed.body));
  }

  // 5. QE report signature by the PCK key.
  EVP_PKEY* pck_key = X509_get0_pubkey(leaf);
  MLC_RETURN_IF_ERROR(CheckP256Key(pck_key, "qe_report_signature", "PCK certificate"));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> qe_signature,
                       RawSignatureToDer(parsed.qe_report_signature, "qe_report_signature"));
  MLC_RETURN_IF_ERROR(VerifySignature(pck_key, EVP_sha256(), qe_signature, parsed.qe_report,
                                      "qe_report_signature"));

  // 6. The QE vouches for the attestation key: SHA-256(key || auth data) in its REPORTDATA.
  uint8_t binding[SHA256_DIGEST_LENGTH];
  {
    EvpMdCtxPtr sha(EVP_MD_CTX_new());
    unsigned int size = 0;
    if (!sha || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(sha.get(), parsed.attestation_key.data(), parsed.attestation_key.size()) !=
            1 ||
        EVP_DigestUpdate(sha.get(), parsed.qe_auth_data.data(), parsed.qe_auth_data.size()) != 1 ||
        EVP_DigestFinal_ex(sha.get(), binding, &size) != 1 || size != sizeof(binding))
      return InternalError("qe_binding: SHA-256 failed ({})", OpenSslErrors());
  }
  if (!std::equal(std::begin(binding), std::end(binding), parsed.qe_report.begin() + kReportData))
    return InvalidArgument(
        "qe_binding: SHA-256(attestation key || QE auth data) {} is not the QE report data {}",
        LowerHex(binding), LowerHex(parsed.qe_report.subspan(kReportData, 32)));

  // 7. QE identity.
  MLC_RETURN_IF_ERROR(CheckQeIdentity(qe_identity, parsed.qe_report));

  // 8. Quote signature by the attestation key.
  Result<EvpPkeyPtr> attestation_key = P256KeyFromRaw(parsed.attestation_key);
  if (!attestation_key.ok())
    return InvalidArgument("quote_signature: attestation key: {}",
                           attestation_key.status().message());
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> quote_signature,
                       RawSignatureToDer(parsed.signature, "quote_signature"));
  MLC_RETURN_IF_ERROR(VerifySignature(attestation_key->get(), EVP_sha256(), quote_signature,
                                      parsed.signed_bytes, "quote_signature"));

  // 9. TCB level.
  TcbInputs inputs;
  inputs.pck = pck;
  inputs.qe_isv_svn = Le16(parsed.qe_report, kReportIsvSvn);
  if (tdx) {
    std::array<uint8_t, 16> svn{};
    std::copy_n(parsed.body.begin() + kTdTeeTcbSvn, 16, svn.begin());
    inputs.tee_tcb_svn = svn;
    inputs.tdx_module = module;
  }
  TcbOutcome tcb = EvaluateTcb(tcb_info, qe_identity, inputs);
  if (tcb.status == "NotSupported")
    return PermissionDenied(
        "tcb_not_supported: no TCB level matches (platform {}, QE {}{}; FMSPC {}, PCK components "
        "{}, PCESVN {}, QE ISVSVN {})",
        tcb.platform_status, tcb.qe_status,
        tdx ? ", TDX module " + tcb.tdx_module_status : std::string(), UpperHex(pck.fmspc),
        LowerHex(pck.components), pck.pce_svn, inputs.qe_isv_svn);

  // 10. What the quote proves.
  Verdict verdict;
  verdict.type = type;
  const std::span<const uint8_t> body = parsed.body;
  if (tdx) {
    verdict.measurement = Copy(body.subspan(kTdMrTd, 48));
    std::copy_n(body.begin() + kTdReportData, 64, verdict.report_data.begin());
    verdict.attributes = Le64(body, kTdAttributes);
    // TD_ATTRIBUTES bits 0..7 are the "TD under debug" group: bit 0 is DEBUG and the others are
    // reserved for debug features, so any of them set means the TD is not protected.
    verdict.debug = (verdict.attributes & 0xff) != 0;
    verdict.mr_signer = Copy(body.subspan(kTdMrSignerSeam, 48));
    verdict.mr_seam = Copy(body.subspan(kTdMrSeam, 48));
    verdict.mr_config_id = Copy(body.subspan(kTdMrConfigId, 48));
    verdict.mr_owner = Copy(body.subspan(kTdMrOwner, 48));
    verdict.mr_owner_config = Copy(body.subspan(kTdMrOwnerConfig, 48));
    for (size_t i = 0; i < 4; ++i)
      verdict.rtmrs.push_back(Copy(body.subspan(kTdRtmr0 + 48 * i, 48)));
    verdict.tdx_module_status = tcb.tdx_module_status;
  } else {
    verdict.measurement = Copy(body.subspan(kReportMrEnclave, 32));
    std::copy_n(body.begin() + kReportData, 64, verdict.report_data.begin());
    verdict.attributes = Le64(body, kReportAttributes);
    verdict.debug = (verdict.attributes & 0x02) != 0;
    verdict.mr_signer = Copy(body.subspan(kReportMrSigner, 32));
    verdict.isv_prod_id = Le16(body, kReportIsvProdId);
    verdict.isv_svn = Le16(body, kReportIsvSvn);
  }
  verdict.tcb_status = tcb.status;
  verdict.advisory_ids = tcb.advisory_ids;
  verdict.fmspc = UpperHex(pck.fmspc);
  verdict.tcb_date = tcb.tcb_date;
  verdict.qe_tcb_status = tcb.qe_status;
  return verdict;
}

}  // namespace mlcapsule::server::evidence::intel

namespace mlcapsule::server::evidence {

Result<IntelCollateral> ParseIntelCollateral(std::string_view json_text) {
  using intel::Json;
  if (json_text.size() > intel::kMaxCollateralBytes)
    return InvalidArgument("collateral_invalid: {} bytes is over the limit {}", json_text.size(),
                           intel::kMaxCollateralBytes);
  Json document =
      Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded() || !document.is_object())
    return InvalidArgument("collateral_invalid: not a JSON object");
  static constexpr std::array<const char*, 9> kKeys = {
      "pck_crl_issuer_chain",     "root_ca_crl", "pck_crl",
      "tcb_info_issuer_chain",    "tcb_info",    "tcb_info_signature",
      "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"};
  for (const auto& item : document.items()) {
    if (std::find_if(kKeys.begin(), kKeys.end(),
                     [&](const char* key) { return item.key() == key; }) == kKeys.end())
      return InvalidArgument("collateral_invalid: unknown member '{}'", item.key().substr(0, 64));
  }
  auto text = [&](const char* key) -> Result<std::string> {
    auto it = document.find(key);
    if (it == document.end()) return InvalidArgument("collateral_invalid: {} is missing", key);
    if (!it->is_string()) return InvalidArgument("collateral_invalid: {} is not a string", key);
    return it->get<std::string>();
  };
  auto hex = [&](const char* key, size_t expected) -> Result<std::vector<uint8_t>> {
    MLC_ASSIGN_OR_RETURN(std::string value, text(key));
    Result<std::vector<uint8_t>> bytes = intel::DecodeHex(value, expected, key);
    if (!bytes.ok()) return InvalidArgument("collateral_invalid: {}", bytes.status().message());
    return bytes;
  };
  IntelCollateral collateral;
  MLC_ASSIGN_OR_RETURN(collateral.pck_crl_issuer_chain, text("pck_crl_issuer_chain"));
  MLC_ASSIGN_OR_RETURN(collateral.root_ca_crl, hex("root_ca_crl", 0));
  MLC_ASSIGN_OR_RETURN(collateral.pck_crl, hex("pck_crl", 0));
  MLC_ASSIGN_OR_RETURN(collateral.tcb_info_issuer_chain, text("tcb_info_issuer_chain"));
  MLC_ASSIGN_OR_RETURN(collateral.tcb_info, text("tcb_info"));
  MLC_ASSIGN_OR_RETURN(collateral.tcb_info_signature, hex("tcb_info_signature", 64));
  MLC_ASSIGN_OR_RETURN(collateral.qe_identity_issuer_chain, text("qe_identity_issuer_chain"));
  MLC_ASSIGN_OR_RETURN(collateral.qe_identity, text("qe_identity"));
  MLC_ASSIGN_OR_RETURN(collateral.qe_identity_signature, hex("qe_identity_signature", 64));
  return collateral;
}

Result<std::string> QuoteFmspc(std::span<const uint8_t> quote) {
  if (quote.size() < 2) return InvalidArgument("parse_error: quote is {} bytes", quote.size());
  const uint16_t version = intel::Le16(quote, 0);
  capsule::EvidenceType type = version == intel::kTdxQuoteVersion ? capsule::EvidenceType::kTdx
                                                                  : capsule::EvidenceType::kSgx;
  MLC_ASSIGN_OR_RETURN(intel::ParsedQuote parsed, intel::ParseQuote(type, quote));
  Result<std::vector<X509Ptr>> chain =
      ParsePemCertificates(parsed.pck_chain_pem, "PCK certificate chain");
  if (!chain.ok()) return InvalidArgument("parse_error: {}", chain.status().message());
  MLC_ASSIGN_OR_RETURN(intel::PckInfo pck, intel::ParsePckExtension((*chain)[0].get()));
  return intel::UpperHex(pck.fmspc);
}

namespace {
// A string member of the (unverified) signed tcbInfo text; "" when absent.
std::string TcbInfoMember(const IntelCollateral& collateral, const char* key) {
  intel::Json document = intel::Json::parse(collateral.tcb_info.begin(), collateral.tcb_info.end(),
                                            nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) return "";
  auto it = document.find(key);
  if (it == document.end() || !it->is_string()) return "";
  return it->get<std::string>();
}
}  // namespace

std::string CollateralFmspc(const IntelCollateral& collateral) {
  std::string fmspc = TcbInfoMember(collateral, "fmspc");
  std::transform(fmspc.begin(), fmspc.end(), fmspc.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  return fmspc;
}

std::string CollateralTeeId(const IntelCollateral& collateral) {
  return TcbInfoMember(collateral, "id");
}

}  // namespace mlcapsule::server::evidence
