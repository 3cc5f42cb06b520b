// Policy parsing and canonical serialization (see policy.h and docs/policy.md). The input is the
// provider's JSON, trusted only as far as the provider is: every field is checked against a fixed
// schema, unknown fields are errors, and every message names the field's full path, the value
// and the allowed range. nlohmann::json's exceptions never leave this file.
#include "capsule/policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <set>

#include <nlohmann/json.hpp>

namespace mlcapsule::capsule {
namespace {

using Json = nlohmann::json;

// Equal to kMaxPolicyBytes in capsule_file.h (the header field's limit); repeated here so the
// policy parser does not depend on the container format.
constexpr size_t kMaxPolicyJsonBytes = 64 << 10;
// A valid policy nests four levels deep (root > tee > measurements > list); anything much deeper
// is rejected before the schema walk.
constexpr size_t kMaxJsonDepth = 8;
constexpr size_t kMaxDescriptionBytes = 1024;
constexpr size_t kMaxTensorNameBytes = 256;  // io names in the capsule header are <= 256 bytes
constexpr size_t kMaxMeasurementsPerTee = 64;
constexpr size_t kMaxMrSigners = 64;
constexpr uint64_t kMaxSvn = 65535;
constexpr uint64_t kMaxVmpl = 3;

constexpr uint64_t kMaxK = 1000;
constexpr uint64_t kMaxDecimals = 8;
constexpr uint64_t kMaxQueries = 1'000'000'000'000;
constexpr uint64_t kMaxDays = 3650;
constexpr uint64_t kMaxSealEvery = 1'000'000;

constexpr std::array<const char*, 5> kKnownTees = {"software", "sgx", "tdx", "snp", "tpm"};
constexpr std::array<OutputMode, 6> kOutputModes = {
    OutputMode::kProbabilities, OutputMode::kTopK,           OutputMode::kRounded,
    OutputMode::kLabel,         OutputMode::kReverseSigmoid, OutputMode::kGaussian};
constexpr std::array<AlarmAction, 3> kAlarmActions = {AlarmAction::kLog, AlarmAction::kThrottle,
                                                      AlarmAction::kBlock};
constexpr std::array<EscrowMode, 2> kEscrowModes = {EscrowMode::kAfterAlarm, EscrowMode::kAlways};
// PRADA's stored queries are held in the core's memory: max_stored * elements * 4 bytes.
constexpr uint64_t kMaxPradaBytes = uint64_t{2} << 30;

// Shows a value from the untrusted document in an error message: compact JSON, ASCII only (no
// control characters reach a terminal), cut to a readable length.
std::string Show(const Json& value) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
  constexpr size_t kMaxShown = 100;  // a 96-character measurement fits whole
  if (text.size() > kMaxShown) text = text.substr(0, kMaxShown) + "...";
  return text;
}

// A field name as it appears in a path: bare when it is a plain identifier, JSON-quoted otherwise.
std::string ShowKey(const std::string& key) {
  bool plain = !key.empty() && key.size() <= 64 && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  return plain ? key : Show(Json(key));
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? ShowKey(key) : path + "." + ShowKey(key);
}

const char* TypeName(const Json& value) {
  if (value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "number";
  return value.type_name();  // "null", "boolean", "string", "array", "object"
}

template <typename Names>
std::string KnownList(const Names& names) {
  std::string out;
  for (const auto& name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

// One JSON object of the schema: checks that it is an object and holds only `known` fields.
Status CheckObject(const Json& value, const std::string& path,
                   std::initializer_list<const char*> known) {
  if (!value.is_object()) {
    return InvalidArgument("{}: expected an object, got {} {}", path.empty() ? "policy" : path,
                           TypeName(value), Show(value));
  }
  for (const auto& item : value.items()) {
    const std::string& key = item.key();
    bool is_known =
        std::any_of(known.begin(), known.end(), [&key](const char* name) { return key == name; });
    if (!is_known) {
      return InvalidArgument("{}: unknown field (known: {})", Join(path, key), KnownList(known));
    }
  }
  return Status::Ok();
}

// Integers: JSON Schema's "integer" (any number without a fractional part, so 1e3 is 1000).
Status ReadInteger(const Json& value, const std::string& path, uint64_t min, uint64_t max,
                   uint64_t* out) {
  if (value.is_number_unsigned()) {
    uint64_t v = value.get<uint64_t>();
    if (v < min || v > max)
      return InvalidArgument("{}: {} is out of range {}..{}", path, v, min, max);
    *out = v;
    return Status::Ok();
  }
  if (value.is_number_integer()) {  // negative (non-negative integers parse as unsigned)
    return InvalidArgument("{}: {} is out of range {}..{}", path, value.get<int64_t>(), min, max);
  }
  if (value.is_number_float()) {
    double v = value.get<double>();
    if (std::isfinite(v) && std::trunc(v) == v) {
      // Every bound here is far below 2^53, so the comparison in double is exact.
      if (v < static_cast<double>(min) || v > static_cast<double>(max)) {
        return InvalidArgument("{}: {} is out of range {}..{}", path, Show(value), min, max);
      }
      *out = static_cast<uint64_t>(v);
      return Status::Ok();
    }
  }
  return InvalidArgument("{}: expected an integer in {}..{}, got {} {}", path, min, max,
                         TypeName(value), Show(value));
}

// A real number in the interval (min, max] ([min, ...] when `min_inclusive`, [..., max) when not
// `max_inclusive`).
Status ReadNumber(const Json& value, const std::string& path, double min, double max,
                  bool min_inclusive, double* out, bool max_inclusive = true) {
  if (!value.is_number()) {
    return InvalidArgument("{}: expected a number, got {} {}", path, TypeName(value), Show(value));
  }
  const double v = value.get<double>();
  if (!std::isfinite(v) || v > max || v < min || (!min_inclusive && v == min) ||
      (!max_inclusive && v == max)) {
    return InvalidArgument("{}: {} is out of range {}{}, {}{}", path, Show(value),
                           min_inclusive ? "[" : "(", min, max, max_inclusive ? "]" : ")");
  }
  *out = v;
  return Status::Ok();
}

Status ReadBool(const Json& value, const std::string& path, bool* out) {
  if (!value.is_boolean()) {
    return InvalidArgument("{}: expected true or false, got {} {}", path, TypeName(value),
                           Show(value));
  }
  *out = value.get<bool>();
  return Status::Ok();
}

Status ReadString(const Json& value, const std::string& path, size_t max_bytes, std::string* out) {
  if (!value.is_string()) {
    return InvalidArgument("{}: expected a string, got {} {}", path, TypeName(value), Show(value));
  }
  const std::string& text = value.get_ref<const std::string&>();
  if (text.size() > max_bytes) {
    return InvalidArgument("{}: {} bytes is over the limit {} bytes", path, text.size(), max_bytes);
  }
  *out = text;
  return Status::Ok();
}

// A string naming one of `values` (by `name_of`).
template <typename Enum, size_t N>
Status ReadEnum(const Json& value, const std::string& path, const std::array<Enum, N>& values,
                const char* (*name_of)(Enum), Enum* out) {
  std::string name;
  MLC_RETURN_IF_ERROR(ReadString(value, path, 64, &name));
  for (Enum candidate : values) {
    if (name == name_of(candidate)) {
      *out = candidate;
      return Status::Ok();
    }
  }
  std::string known;
  for (Enum candidate : values)
    known += (known.empty() ? "" : ", ") + std::string(name_of(candidate));
  return InvalidArgument("{}: unknown value {} (known: {})", path, Show(value), known);
}

// Free text that may be printed by the CLI: tab and newline are fine, other control characters
// (terminal escapes among them) are not. nlohmann has already checked that it is valid UTF-8.
Status CheckPrintable(const std::string& text, const std::string& path) {
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f) {
      return InvalidArgument(
          "{}: control character 0x{:02x} at byte {} (only tab and newline "
          "are allowed)",
          path, c, i);
    }
  }
  return Status::Ok();
}

bool IsKnownTee(const std::string& name) {
  return std::any_of(kKnownTees.begin(), kKnownTees.end(),
                     [&name](const char* known) { return name == known; });
}

Status CheckMeasurement(const std::string& hex, const std::string& path) {
  if (hex.size() != 64 && hex.size() != 96) {
    return InvalidArgument(
        "{}: {} is {} characters; a measurement is 64 or 96 lowercase hex "
        "characters (32 or 48 bytes)",
        path, Show(Json(hex)), hex.size());
  }
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return InvalidArgument("{}: {} is not lowercase hex (0-9, a-f)", path, Show(Json(hex)));
    }
  }
  return Status::Ok();
}

Status ParseTcbStatuses(const Json& value, std::vector<std::string>* statuses) {
  const std::string path = "tee.tcb_statuses";
  if (!value.is_array()) {
    return InvalidArgument("{}: expected an array of TCB status names, got {} {}", path,
                           TypeName(value), Show(value));
  }
  if (value.empty() || value.size() > kTcbStatusNames.size()) {
    return InvalidArgument("{}: {} entries, expected 1..{} (known: {})", path, value.size(),
                           kTcbStatusNames.size(), KnownList(kTcbStatusNames));
  }
  statuses->clear();
  for (size_t i = 0; i < value.size(); ++i) {
    const std::string item_path = fmt::format("{}[{}]", path, i);
    const Json& entry = value[i];
    if (!entry.is_string()) {
      return InvalidArgument("{}: expected a TCB status name, got {} {}", item_path,
                             TypeName(entry), Show(entry));
    }
    const std::string& name = entry.get_ref<const std::string&>();
    if (std::find(kTcbStatusNames.begin(), kTcbStatusNames.end(), name) == kTcbStatusNames.end()) {
      return InvalidArgument("{}: unknown or never acceptable TCB status {} (known: {})", item_path,
                             Show(entry), KnownList(kTcbStatusNames));
    }
    if (std::find(statuses->begin(), statuses->end(), name) != statuses->end()) {
      return InvalidArgument("{}: duplicate TCB status {}", item_path, Show(entry));
    }
    statuses->push_back(name);
  }
  return Status::Ok();
}

Status ParseSgx(const Json& value, SgxPolicy* sgx) {
  MLC_RETURN_IF_ERROR(CheckObject(value, "tee.sgx", {"mr_signers", "isv_prod_id", "min_isv_svn"}));
  if (auto signers = value.find("mr_signers"); signers != value.end()) {
    const std::string path = "tee.sgx.mr_signers";
    if (!signers->is_array()) {
      return InvalidArgument("{}: expected an array of MRSIGNERs, got {} {}", path,
                             TypeName(*signers), Show(*signers));
    }
    if (signers->size() > kMaxMrSigners) {
      return InvalidArgument("{}: {} entries is over the limit {}", path, signers->size(),
                             kMaxMrSigners);
    }
    for (size_t i = 0; i < signers->size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      const Json& item = (*signers)[i];
      if (!item.is_string()) {
        return InvalidArgument("{}: expected a hex string, got {} {}", item_path, TypeName(item),
                               Show(item));
      }
      const std::string& hex = item.get_ref<const std::string&>();
      if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
          })) {
        return InvalidArgument("{}: {} is not 64 lowercase hex characters (a 32-byte MRSIGNER)",
                               item_path, Show(item));
      }
      if (std::find(sgx->mr_signers.begin(), sgx->mr_signers.end(), hex) != sgx->mr_signers.end()) {
        return InvalidArgument("{}: duplicate MRSIGNER {}", item_path, hex);
      }
      sgx->mr_signers.push_back(hex);
    }
  }
  uint64_t number = 0;
  if (auto it = value.find("isv_prod_id"); it != value.end() && !it->is_null()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "tee.sgx.isv_prod_id", 0, kMaxSvn, &number));
    sgx->isv_prod_id = static_cast<uint16_t>(number);
  }
  if (auto it = value.find("min_isv_svn"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "tee.sgx.min_isv_svn", 0, kMaxSvn, &number));
    sgx->min_isv_svn = static_cast<uint16_t>(number);
  }
  return Status::Ok();
}

Status ParseTee(const Json& value, TeePolicy* tee) {
  MLC_RETURN_IF_ERROR(CheckObject(
      value, "tee", {"accept", "measurements", "allow_debug", "tcb_statuses", "sgx", "snp"}));

  auto accept = value.find("accept");
  if (accept == value.end()) return InvalidArgument("tee.accept: required field is missing");
  if (!accept->is_array()) {
    return InvalidArgument("tee.accept: expected an array of TEE names, got {} {}",
                           TypeName(*accept), Show(*accept));
  }
  if (accept->empty()) {
    return InvalidArgument("tee.accept: must list at least one TEE (known: {})",
                           KnownList(kKnownTees));
  }
  if (accept->size() > kKnownTees.size()) {
    return InvalidArgument("tee.accept: {} entries is over the limit {} (known: {})",
                           accept->size(), kKnownTees.size(), KnownList(kKnownTees));
  }
  for (size_t i = 0; i < accept->size(); ++i) {
    std::string path = fmt::format("tee.accept[{}]", i);
    const Json& entry = (*accept)[i];
    if (!entry.is_string()) {
      return InvalidArgument("{}: expected a TEE name, got {} {}", path, TypeName(entry),
                             Show(entry));
    }
    const std::string& name = entry.get_ref<const std::string&>();
    if (!IsKnownTee(name)) {
      return InvalidArgument("{}: unknown TEE {} (known: {})", path, Show(entry),
                             KnownList(kKnownTees));
    }
    if (std::find(tee->accept.begin(), tee->accept.end(), name) != tee->accept.end()) {
      return InvalidArgument("{}: duplicate TEE {}", path, Show(entry));
    }
    tee->accept.push_back(name);
  }

  if (auto measurements = value.find("measurements"); measurements != value.end()) {
    if (!measurements->is_object()) {
      return InvalidArgument(
          "tee.measurements: expected an object mapping TEE names to lists, "
          "got {} {}",
          TypeName(*measurements), Show(*measurements));
    }
    for (const auto& [name, list] : measurements->items()) {
      std::string path = Join("tee.measurements", name);
      if (!IsKnownTee(name)) {
        return InvalidArgument("{}: unknown TEE (known: {})", path, KnownList(kKnownTees));
      }
      if (std::find(tee->accept.begin(), tee->accept.end(), name) == tee->accept.end()) {
        return InvalidArgument("{}: TEE {} is not in tee.accept", path, Show(Json(name)));
      }
      if (!list.is_array()) {
        return InvalidArgument("{}: expected an array of measurements, got {} {}", path,
                               TypeName(list), Show(list));
      }
      // An empty list would read as "none allowed" to some and "any allowed" to others; leaving
      // the key out is the one way to say "any".
      if (list.empty()) {
        return InvalidArgument("{}: empty list (leave the key out to accept any measurement)",
                               path);
      }
      if (list.size() > kMaxMeasurementsPerTee) {
        return InvalidArgument("{}: {} measurements is over the limit {}", path, list.size(),
                               kMaxMeasurementsPerTee);
      }
    }
    // Canonical order: the order of tee.accept, whatever order the document used.
    for (const std::string& name : tee->accept) {
      auto list = measurements->find(name);
      if (list == measurements->end()) continue;
      MeasurementList entry{.tee = name};
      for (size_t i = 0; i < list->size(); ++i) {
        std::string path = fmt::format("{}[{}]", Join("tee.measurements", name), i);
        const Json& item = (*list)[i];
        if (!item.is_string()) {
          return InvalidArgument("{}: expected a hex string, got {} {}", path, TypeName(item),
                                 Show(item));
        }
        const std::string& hex = item.get_ref<const std::string&>();
        MLC_RETURN_IF_ERROR(CheckMeasurement(hex, path));
        if (std::find(entry.allowed.begin(), entry.allowed.end(), hex) != entry.allowed.end()) {
          return InvalidArgument("{}: duplicate measurement {}", path, hex);
        }
        entry.allowed.push_back(hex);
      }
      tee->measurements.push_back(std::move(entry));
    }
  }

  if (auto debug = value.find("allow_debug"); debug != value.end()) {
    MLC_RETURN_IF_ERROR(ReadBool(*debug, "tee.allow_debug", &tee->allow_debug));
  }
  if (auto statuses = value.find("tcb_statuses"); statuses != value.end()) {
    MLC_RETURN_IF_ERROR(ParseTcbStatuses(*statuses, &tee->tcb_statuses));
  }
  if (auto sgx = value.find("sgx"); sgx != value.end()) {
    MLC_RETURN_IF_ERROR(ParseSgx(*sgx, &tee->sgx));
  }
  if (auto snp = value.find("snp"); snp != value.end()) {
    MLC_RETURN_IF_ERROR(CheckObject(*snp, "tee.snp", {"max_vmpl"}));
    if (auto it = snp->find("max_vmpl"); it != snp->end()) {
      uint64_t number = 0;
      MLC_RETURN_IF_ERROR(ReadInteger(*it, "tee.snp.max_vmpl", 0, kMaxVmpl, &number));
      tee->snp.max_vmpl = static_cast<uint32_t>(number);
    }
  }
  return Status::Ok();
}

Status ParseLease(const Json& value, LeasePolicy* lease) {
  MLC_RETURN_IF_ERROR(CheckObject(value, "lease", {"max_queries", "max_days", "seal_every"}));
  uint64_t number = 0;
  if (auto it = value.find("max_queries"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "lease.max_queries", 1, kMaxQueries, &number));
    lease->max_queries = number;
  }
  if (auto it = value.find("max_days"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "lease.max_days", 1, kMaxDays, &number));
    lease->max_days = static_cast<int64_t>(number);
  }
  if (auto it = value.find("seal_every"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "lease.seal_every", 1, kMaxSealEvery, &number));
    lease->seal_every = number;
  }
  return Status::Ok();
}

Status ParseOutput(const Json& value, OutputPolicy* output) {
  MLC_RETURN_IF_ERROR(CheckObject(
      value, "output", {"mode", "k", "decimals", "logits", "tensor", "beta", "gamma", "sigma"}));
  if (auto it = value.find("mode"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadEnum(*it, "output.mode", kOutputModes, OutputModeName, &output->mode));
  }
  uint64_t number = 0;
  if (auto it = value.find("k"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "output.k", 1, kMaxK, &number));
    output->k = static_cast<int>(number);
  }
  if (auto it = value.find("decimals"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, "output.decimals", 0, kMaxDecimals, &number));
    output->decimals = static_cast<int>(number);
  }
  if (auto it = value.find("logits"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadBool(*it, "output.logits", &output->logits));
  }
  if (auto it = value.find("tensor"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadString(*it, "output.tensor", kMaxTensorNameBytes, &output->tensor));
  }
  if (auto it = value.find("beta"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadNumber(*it, "output.beta", 0, 10, false, &output->beta));
  }
  if (auto it = value.find("gamma"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadNumber(*it, "output.gamma", 0, 100, false, &output->gamma));
  }
  if (auto it = value.find("sigma"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadNumber(*it, "output.sigma", 0, 1, false, &output->sigma));
  }
  return Status::Ok();
}

Status ParsePrada(const Json& value, PradaPolicy* prada) {
  const std::string path = "defenses.prada";
  MLC_RETURN_IF_ERROR(
      CheckObject(value, path,
                  {"enabled", "delta", "action", "throttle_per_second", "throttle_per_day",
                   "max_stored", "window", "test_every", "min_class_entries", "max_checks"}));
  uint64_t number = 0;
  if (auto it = value.find("enabled"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadBool(*it, path + ".enabled", &prada->enabled));
  if (auto it = value.find("delta"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadNumber(*it, path + ".delta", 0, 1, /*min_inclusive=*/false,
                                   &prada->delta, /*max_inclusive=*/false));
  }
  if (auto it = value.find("action"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadEnum(*it, path + ".action", kAlarmActions, AlarmActionName, &prada->action));
  if (auto it = value.find("throttle_per_second"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadInteger(*it, path + ".throttle_per_second", 1, 1'000'000, &prada->throttle_per_second));
  if (auto it = value.find("throttle_per_day"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadInteger(*it, path + ".throttle_per_day", 1, 1'000'000'000, &prada->throttle_per_day));
  if (auto it = value.find("max_stored"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".max_stored", 1, 1'000'000, &prada->max_stored));
  if (auto it = value.find("window"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".window", 20, 5000, &number));
    prada->window = static_cast<uint32_t>(number);
  }
  if (auto it = value.find("test_every"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".test_every", 1, 1000, &number));
    prada->test_every = static_cast<uint32_t>(number);
  }
  if (auto it = value.find("min_class_entries"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".min_class_entries", 2, 1000, &number));
    prada->min_class_entries = static_cast<uint32_t>(number);
  }
  if (auto it = value.find("max_checks"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".max_checks", 0, 1'000'000, &number));
    prada->max_checks = static_cast<uint32_t>(number);
  }
  return Status::Ok();
}

Status ParseWatermark(const Json& value, WatermarkPolicy* watermark) {
  const std::string path = "defenses.watermark";
  MLC_RETURN_IF_ERROR(CheckObject(
      value, path, {"enabled", "rate", "escrow", "escrow_key", "max_escrow", "max_escrow_bytes"}));
  uint64_t number = 0;
  if (auto it = value.find("enabled"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadBool(*it, path + ".enabled", &watermark->enabled));
  if (auto it = value.find("rate"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadNumber(*it, path + ".rate", 0, 0.5, false, &watermark->rate));
  if (auto it = value.find("escrow"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadEnum(*it, path + ".escrow", kEscrowModes, EscrowModeName, &watermark->escrow));
  if (auto it = value.find("escrow_key"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadString(*it, path + ".escrow_key", 128, &watermark->escrow_key));
    if ((!watermark->escrow_key.empty() && watermark->escrow_key.size() != 64) ||
        !std::all_of(watermark->escrow_key.begin(), watermark->escrow_key.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
      return InvalidArgument(
          "{}.escrow_key: {} is not 64 lowercase hex characters (an X25519 public key; "
          "`mlcapsule keygen --escrow` writes one)",
          path, Show(*it));
  }
  if (auto it = value.find("max_escrow"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".max_escrow", 1, 4096, &number));
    watermark->max_escrow = static_cast<uint32_t>(number);
  }
  if (auto it = value.find("max_escrow_bytes"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".max_escrow_bytes", 4 << 10, 512 << 10,
                                    &watermark->max_escrow_bytes));
  if (watermark->enabled && watermark->escrow_key.empty())
    return InvalidArgument(
        "{}.escrow_key: required when the watermark is enabled (the escrowed inputs are "
        "encrypted to it)",
        path);
  return Status::Ok();
}

Status ParseMemGuard(const Json& value, MemGuardPolicy* memguard) {
  const std::string path = "defenses.memguard";
  MLC_RETURN_IF_ERROR(CheckObject(value, path, {"enabled", "budget", "steps"}));
  uint64_t number = 0;
  if (auto it = value.find("enabled"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadBool(*it, path + ".enabled", &memguard->enabled));
  if (auto it = value.find("budget"); it != value.end())
    MLC_RETURN_IF_ERROR(ReadNumber(*it, path + ".budget", 0, 2, false, &memguard->budget));
  if (auto it = value.find("steps"); it != value.end()) {
    MLC_RETURN_IF_ERROR(ReadInteger(*it, path + ".steps", 1, 10000, &number));
    memguard->steps = static_cast<uint32_t>(number);
  }
  return Status::Ok();
}

Status ParseDefenses(const Json& value, DefensePolicy* defenses) {
  MLC_RETURN_IF_ERROR(CheckObject(value, "defenses", {"prada", "watermark", "memguard"}));
  if (auto it = value.find("prada"); it != value.end())
    MLC_RETURN_IF_ERROR(ParsePrada(*it, &defenses->prada));
  if (auto it = value.find("watermark"); it != value.end())
    MLC_RETURN_IF_ERROR(ParseWatermark(*it, &defenses->watermark));
  if (auto it = value.find("memguard"); it != value.end())
    MLC_RETURN_IF_ERROR(ParseMemGuard(*it, &defenses->memguard));
  return Status::Ok();
}

Status ParseRateLimit(const Json& value, RateLimitPolicy* rate) {
  MLC_RETURN_IF_ERROR(CheckObject(value, "rate_limit", {"per_second", "per_day"}));
  if (auto it = value.find("per_second"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadInteger(*it, "rate_limit.per_second", 0, 1'000'000'000, &rate->per_second));
  if (auto it = value.find("per_day"); it != value.end())
    MLC_RETURN_IF_ERROR(
        ReadInteger(*it, "rate_limit.per_day", 0, 1'000'000'000'000, &rate->per_day));
  return Status::Ok();
}

// Rules that involve more than one field.
Status CheckCombinations(const Policy& policy) {
  const DefensePolicy& d = policy.defenses;
  if (d.memguard.enabled && policy.output.mode != OutputMode::kProbabilities)
    return InvalidArgument(
        "defenses.memguard: perturbs the full confidence vector, so output.mode must be "
        "probabilities (it is {})",
        OutputModeName(policy.output.mode));
  if (d.watermark.enabled && d.watermark.escrow == EscrowMode::kAfterAlarm && !d.prada.enabled)
    return InvalidArgument(
        "defenses.watermark.escrow: after_alarm needs defenses.prada enabled (without PRADA no "
        "alarm ever releases the escrow); enable PRADA or choose always");
  return Status::Ok();
}

// Tracks open containers while nlohmann parses, to catch what its DOM would hide: a repeated key
// (nlohmann keeps the last one silently) and nesting deeper than a policy ever needs.
class StructureChecker {
 public:
  bool OnEvent(Json::parse_event_t event, const Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start: {
        bool is_object = event == Json::parse_event_t::object_start;
        if (frames_.size() >= kMaxJsonDepth) {
          // Past the limit only the count matters; building paths here would be quadratic.
          if (error_.ok()) {
            error_ = InvalidArgument("{}: JSON nested deeper than {} levels",
                                     ChildPath(frames_.back()), kMaxJsonDepth);
          }
          frames_.push_back(Frame{is_object, {}, {}, {}});
          break;
        }
        std::string path = frames_.empty() ? std::string() : ChildPath(frames_.back());
        frames_.push_back(Frame{is_object, std::move(path), {}, {}});
        break;
      }
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        if (!frames_.empty()) frames_.pop_back();
        break;
      case Json::parse_event_t::key: {
        if (frames_.empty() || !parsed.is_string()) break;
        Frame& frame = frames_.back();
        frame.last_key = parsed.get<std::string>();
        if (!frame.keys.insert(frame.last_key).second && error_.ok()) {
          error_ = InvalidArgument("{}: duplicate field", Join(frame.path, frame.last_key));
        }
        break;
      }
      case Json::parse_event_t::value:
        break;
    }
    return true;  // keep everything; the error, if any, is reported after the parse
  }
  const Status& error() const { return error_; }

 private:
  struct Frame {
    bool is_object = false;
    std::string path;
    std::set<std::string> keys;
    std::string last_key;
  };
  static std::string ChildPath(const Frame& parent) {
    return parent.is_object ? Join(parent.path, parent.last_key) : parent.path + "[]";
  }

  std::vector<Frame> frames_;
  Status error_;
};

Result<Json> ParseJson(std::string_view text) {
  StructureChecker checker;
  Json document;
  try {
    document = Json::parse(
        text.begin(), text.end(),
        [&checker](int /*depth*/, Json::parse_event_t event, Json& parsed) {
          return checker.OnEvent(event, parsed);
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix; keep its position and reason.
    std::string_view message = e.what();
    if (size_t end = message.find("] "); message.starts_with("[json.") && end != message.npos) {
      message.remove_prefix(end + 2);
    }
    return InvalidArgument("policy: invalid JSON: {}", message);
  } catch (const std::exception& e) {
    return InvalidArgument("policy: cannot parse JSON: {}", e.what());
  }
  MLC_RETURN_IF_ERROR(checker.error());
  return document;
}

}  // namespace

std::vector<std::string> DefaultTcbStatuses() {
  return {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
          "ConfigurationAndSWHardeningNeeded"};
}

const char* OutputModeName(OutputMode mode) {
  switch (mode) {
    case OutputMode::kProbabilities:
      return "probabilities";
    case OutputMode::kTopK:
      return "top_k";
    case OutputMode::kRounded:
      return "rounded";
    case OutputMode::kLabel:
      return "label";
    case OutputMode::kReverseSigmoid:
      return "reverse_sigmoid";
    case OutputMode::kGaussian:
      return "gaussian";
  }
  return "unknown";
}

const char* AlarmActionName(AlarmAction action) {
  switch (action) {
    case AlarmAction::kLog:
      return "log";
    case AlarmAction::kThrottle:
      return "throttle";
    case AlarmAction::kBlock:
      return "block";
  }
  return "unknown";
}

const char* EscrowModeName(EscrowMode mode) {
  switch (mode) {
    case EscrowMode::kAfterAlarm:
      return "after_alarm";
    case EscrowMode::kAlways:
      return "always";
  }
  return "unknown";
}

uint64_t PradaMaxStoredBytesLimit() { return kMaxPradaBytes; }

Result<Policy> ParsePolicy(std::string_view json_text) {
  if (json_text.size() > kMaxPolicyJsonBytes) {
    return InvalidArgument("policy: {} bytes is over the limit {} bytes", json_text.size(),
                           kMaxPolicyJsonBytes);
  }
  MLC_ASSIGN_OR_RETURN(Json document, ParseJson(json_text));
  // Nothing below throws: every access is guarded by a type check first.
  MLC_RETURN_IF_ERROR(
      CheckObject(document, "",
                  {"version", "description", "tee", "lease", "output", "defenses", "rate_limit"}));

  Policy policy;
  auto version = document.find("version");
  if (version == document.end()) return InvalidArgument("version: required field is missing");
  // Compared as a number, as JSON Schema's "const" does: 1 and 1.0 are both version 1.
  if (!version->is_number() || version->get<double>() != kPolicyVersion) {
    return InvalidArgument("version: {} is not supported (supported: {})", Show(*version),
                           kPolicyVersion);
  }
  policy.version = kPolicyVersion;

  if (auto it = document.find("description"); it != document.end()) {
    MLC_RETURN_IF_ERROR(ReadString(*it, "description", kMaxDescriptionBytes, &policy.description));
    MLC_RETURN_IF_ERROR(CheckPrintable(policy.description, "description"));
  }
  auto tee = document.find("tee");
  if (tee == document.end()) return InvalidArgument("tee: required field is missing");
  MLC_RETURN_IF_ERROR(ParseTee(*tee, &policy.tee));
  if (auto it = document.find("lease"); it != document.end()) {
    MLC_RETURN_IF_ERROR(ParseLease(*it, &policy.lease));
  }
  if (auto it = document.find("output"); it != document.end()) {
    MLC_RETURN_IF_ERROR(ParseOutput(*it, &policy.output));
  }
  if (auto it = document.find("defenses"); it != document.end()) {
    MLC_RETURN_IF_ERROR(ParseDefenses(*it, &policy.defenses));
  }
  if (auto it = document.find("rate_limit"); it != document.end()) {
    MLC_RETURN_IF_ERROR(ParseRateLimit(*it, &policy.rate_limit));
  }
  MLC_RETURN_IF_ERROR(CheckCombinations(policy));
  return policy;
}

std::string PolicyToJson(const Policy& policy) {
  using Ordered = nlohmann::ordered_json;
  Ordered measurements = Ordered::object();
  // Same order as the parser produces: tee.accept's order.
  for (const std::string& tee : policy.tee.accept) {
    for (const MeasurementList& list : policy.tee.measurements) {
      if (list.tee == tee) measurements[tee] = list.allowed;
    }
  }
  // Lists for a TEE not in tee.accept make the policy invalid; write them anyway (after the
  // others) so the parser reports the mistake instead of it disappearing here.
  for (const MeasurementList& list : policy.tee.measurements) {
    if (!PolicyAcceptsTee(policy, list.tee)) measurements[list.tee] = list.allowed;
  }

  Ordered document;
  document["version"] = policy.version;
  document["description"] = policy.description;
  document["tee"]["accept"] = policy.tee.accept;
  document["tee"]["measurements"] = std::move(measurements);
  document["tee"]["allow_debug"] = policy.tee.allow_debug;
  document["tee"]["tcb_statuses"] = policy.tee.tcb_statuses;
  document["tee"]["sgx"]["mr_signers"] = policy.tee.sgx.mr_signers;
  document["tee"]["sgx"]["isv_prod_id"] =
      policy.tee.sgx.isv_prod_id ? Ordered(*policy.tee.sgx.isv_prod_id) : Ordered(nullptr);
  document["tee"]["sgx"]["min_isv_svn"] = policy.tee.sgx.min_isv_svn;
  document["tee"]["snp"]["max_vmpl"] = policy.tee.snp.max_vmpl;
  document["lease"]["max_queries"] = policy.lease.max_queries;
  document["lease"]["max_days"] = policy.lease.max_days;
  document["lease"]["seal_every"] = policy.lease.seal_every;
  document["output"]["mode"] = OutputModeName(policy.output.mode);
  document["output"]["k"] = policy.output.k;
  document["output"]["decimals"] = policy.output.decimals;
  document["output"]["logits"] = policy.output.logits;
  document["output"]["tensor"] = policy.output.tensor;
  document["output"]["beta"] = policy.output.beta;
  document["output"]["gamma"] = policy.output.gamma;
  document["output"]["sigma"] = policy.output.sigma;
  const PradaPolicy& prada = policy.defenses.prada;
  Ordered& p = document["defenses"]["prada"];
  p["enabled"] = prada.enabled;
  p["delta"] = prada.delta;
  p["action"] = AlarmActionName(prada.action);
  p["throttle_per_second"] = prada.throttle_per_second;
  p["throttle_per_day"] = prada.throttle_per_day;
  p["max_stored"] = prada.max_stored;
  p["window"] = prada.window;
  p["test_every"] = prada.test_every;
  p["min_class_entries"] = prada.min_class_entries;
  p["max_checks"] = prada.max_checks;
  const WatermarkPolicy& watermark = policy.defenses.watermark;
  Ordered& w = document["defenses"]["watermark"];
  w["enabled"] = watermark.enabled;
  w["rate"] = watermark.rate;
  w["escrow"] = EscrowModeName(watermark.escrow);
  w["escrow_key"] = watermark.escrow_key;
  w["max_escrow"] = watermark.max_escrow;
  w["max_escrow_bytes"] = watermark.max_escrow_bytes;
  const MemGuardPolicy& memguard = policy.defenses.memguard;
  Ordered& m = document["defenses"]["memguard"];
  m["enabled"] = memguard.enabled;
  m["budget"] = memguard.budget;
  m["steps"] = memguard.steps;
  document["rate_limit"]["per_second"] = policy.rate_limit.per_second;
  document["rate_limit"]["per_day"] = policy.rate_limit.per_day;
  // Strings that came through ParsePolicy are valid UTF-8; `replace` keeps dump() from throwing
  // on a hand-built policy that is not (the result then fails to round-trip, which is right).
  return document.dump(-1, ' ', /*ensure_ascii=*/false, Ordered::error_handler_t::replace);
}

bool PolicyAcceptsTee(const Policy& policy, std::string_view tee) {
  return std::find(policy.tee.accept.begin(), policy.tee.accept.end(), tee) !=
         policy.tee.accept.end();
}

}  // namespace mlcapsule::capsule
