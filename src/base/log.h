// Structured logs of the untrusted processes (the license server, `serve`, and the client
// commands that talk to the server): one line per event on stderr, as human text or as one JSON
// object per line, filtered by level. Set once at start-up (`--log-level`, `--log-format`), then
// called from any thread. Never linked into the trusted core or libmlcapsule.so (apps embed it and
// own their stderr). Callers must not pass secrets (tokens, keys, inputs, answers) as fields.
//
//   log::SetLevel(log::Level::kInfo);   // from --log-level
//   log::SetFormat(log::Format::kJson);  // from --log-format
//   log::Info("server", "attest.accepted", "attestation accepted",
//             {{"license", license_id}, {"sequence", 2}, {"evidence", "software"}});
//   // text: 2026-11-23T01:02:03.456Z info server: attestation accepted event=attest.accepted
//   //       license=bob-1 sequence=2 evidence=software
//   // json: {"time":"2026-11-23T01:02:03.456Z","level":"info","component":"server",
//   //        "event":"attest.accepted","msg":"attestation accepted","license":"bob-1",...}
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace mlcapsule::log {

// A JSON object of event fields, kept in the order written.
using Fields = nlohmann::ordered_json;

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };
enum class Format { kText, kJson };

// "trace", "debug", "info", "warn", "error", "off" (and "warning"); nullopt for anything else.
std::optional<Level> ParseLevel(std::string_view name);
// "text" or "json"; nullopt for anything else.
std::optional<Format> ParseFormat(std::string_view name);
const char* LevelName(Level level);

// Defaults: kInfo, kText. Not synchronized with logging threads: call before they start.
void SetLevel(Level level);
void SetFormat(Format format);
Level CurrentLevel();
Format CurrentFormat();
bool Enabled(Level level);

// One event: `fields` is a JSON object whose members follow the fixed keys (time, level,
// component, event, msg; a field with one of those names is renamed with a trailing '_').
void Write(Level level, std::string_view component, std::string_view event,
           std::string_view message, const Fields& fields = Fields::object());
inline void Trace(std::string_view c, std::string_view e, std::string_view m,
                  const Fields& f = Fields::object()) {
  Write(Level::kTrace, c, e, m, f);
}
inline void Debug(std::string_view c, std::string_view e, std::string_view m,
                  const Fields& f = Fields::object()) {
  Write(Level::kDebug, c, e, m, f);
}
inline void Info(std::string_view c, std::string_view e, std::string_view m,
                 const Fields& f = Fields::object()) {
  Write(Level::kInfo, c, e, m, f);
}
inline void Warn(std::string_view c, std::string_view e, std::string_view m,
                 const Fields& f = Fields::object()) {
  Write(Level::kWarn, c, e, m, f);
}
inline void Error(std::string_view c, std::string_view e, std::string_view m,
                  const Fields& f = Fields::object()) {
  Write(Level::kError, c, e, m, f);
}

// The line Write would print (without the newline); for tests. Text that is not UTF-8 is
// replaced (U+FFFD) rather than rejected: messages may quote untrusted input.
std::string FormatLine(Format format, Level level, std::chrono::system_clock::time_point time,
                       std::string_view component, std::string_view event, std::string_view message,
                       const Fields& fields);
// RFC 3339 UTC with milliseconds: 2026-11-23T01:02:03.456Z.
std::string FormatTime(std::chrono::system_clock::time_point time);

}  // namespace mlcapsule::log
