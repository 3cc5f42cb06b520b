// Structured logs (log.h). Lines are built here (JSON with nlohmann::json, so escaping is
// right) and written through one spdlog stderr sink with the pattern "%v": spdlog serializes
// writers from many threads and flushes each line. Debian's spdlog uses the external libfmt
// (SPDLOG_FMT_EXTERNAL), the same libfmt9 the project links.
#include "base/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>

namespace mlcapsule::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};
std::atomic<Format> g_format{Format::kText};

spdlog::logger& Logger() {
  // Built on first use and never destroyed: threads may still log while static destructors run.
  static spdlog::logger* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto* l = new spdlog::logger("mlcapsule", std::move(sink));
    l->set_pattern("%v");
    l->set_level(spdlog::level::trace);  // filtering is ours (Enabled), before formatting
    l->flush_on(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

std::string Dump(const Fields& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, Fields::error_handler_t::replace);
}

// Control characters (newlines above all) would break the one-line-per-event rule.
void AppendEscapedText(std::string* out, std::string_view text) {
  for (char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (ch == '\n') {
      *out += "\\n";
    } else if (ch == '\r') {
      *out += "\\r";
    } else if (ch == '\t') {
      *out += "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", byte);
      *out += escaped;
    } else {
      *out += ch;
    }
  }
}

// key=value: plain when the value is a simple word, JSON (quoted, escaped) otherwise.
void AppendTextValue(std::string* out, const Fields& value) {
  if (!value.is_string()) {
    *out += Dump(value);
    return;
  }
  const std::string& s = value.get_ref<const std::string&>();
  bool plain = !s.empty();
  for (char ch : s) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte <= 0x20 || byte == 0x7f || ch == '"' || ch == '=' || ch == '\\') plain = false;
  }
  *out += plain ? s : Dump(value);
}

bool IsReservedKey(std::string_view key) {
  return key == "time" || key == "level" || key == "component" || key == "event" || key == "msg";
}

}  // namespace

std::optional<Level> ParseLevel(std::string_view name) {
  if (name == "trace") return Level::kTrace;
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn" || name == "warning") return Level::kWarn;
  if (name == "error") return Level::kError;
  if (name == "off") return Level::kOff;
  return std::nullopt;
}

std::optional<Format> ParseFormat(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return std::nullopt;
}

const char* LevelName(Level level) {
  switch (level) {
    case Level::kTrace:
      return "trace";
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
    case Level::kOff:
      return "off";
  }
  return "off";
}

void SetLevel(Level level) { g_level = level; }
void SetFormat(Format format) { g_format = format; }
Level CurrentLevel() { return g_level; }
Format CurrentFormat() { return g_format; }

bool Enabled(Level level) {
  const Level threshold = g_level;
  return level != Level::kOff && threshold != Level::kOff && level >= threshold;
}

std::string FormatTime(std::chrono::system_clock::time_point time) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  const int millis = static_cast<int>(ms.count() % 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[96];  // room for any int, so that the compiler can prove no truncation
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                millis < 0 ? 0 : millis);
  return text;
}

std::string FormatLine(Format format, Level level, std::chrono::system_clock::time_point time,
                       std::string_view component, std::string_view event, std::string_view message,
                       const Fields& fields) {
  if (format == Format::kJson) {
    Fields line;  // ordered: the fixed keys first, then the fields as written
    line["time"] = FormatTime(time);
    line["level"] = LevelName(level);
    line["component"] = std::string(component);
    if (!event.empty()) line["event"] = std::string(event);
    line["msg"] = std::string(message);
    if (fields.is_object())
      for (const auto& [key, value] : fields.items())
        line[IsReservedKey(key) ? key + "_" : key] = value;
    return line.dump(-1, ' ', /*ensure_ascii=*/false, Fields::error_handler_t::replace);
  }
  std::string out = FormatTime(time);
  out += ' ';
  out += LevelName(level);
  out += ' ';
  AppendEscapedText(&out, component);
  out += ": ";
  AppendEscapedText(&out, message);
  if (!event.empty()) {
    out += " event=";
    AppendTextValue(&out, Fields(std::string(event)));
  }
  if (fields.is_object())
    for (const auto& [key, value] : fields.items()) {
      out += ' ';
      AppendEscapedText(&out, key);
      out += '=';
      AppendTextValue(&out, value);
    }
  return out;
}

void Write(Level level, std::string_view component, std::string_view event,
           std::string_view message, const Fields& fields) {
  if (!Enabled(level)) return;
  std::string line = FormatLine(g_format, level, std::chrono::system_clock::now(), component, event,
                                message, fields);
  // A text value that is not UTF-8 was copied as is; in JSON it was replaced. Either way one line.
  Logger().log(spdlog::level::info, "{}", line);
}

}  // namespace mlcapsule::log
