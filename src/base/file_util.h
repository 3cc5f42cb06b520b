// Whole-file reads and writes with explicit size limits (untrusted files are bounded before
// allocation). Not used inside the trusted core, which does no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule {

// Reads `path` completely; refuses files larger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path, uint64_t max_bytes);
// Writes atomically (temporary file + rename).
Status WriteFile(const std::string& path, std::string_view bytes);

}  // namespace mlcapsule
