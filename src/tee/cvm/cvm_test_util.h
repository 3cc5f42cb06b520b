// Test helpers shared by the tee/cvm tests (prepared configfs-tsm directories, the vectors in
// ../shared/attest-vectors). Tests only.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/status.h"

namespace mlcapsule::tee::cvm::testing {

namespace fs = std::filesystem;

// A fresh directory under the temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "mlc-cvm-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}
inline std::vector<uint8_t> ReadBytes(const fs::path& path) {
  const std::string text = ReadText(path);
  return {text.begin(), text.end()};
}
inline void WriteFile(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}
inline void WriteFile(const fs::path& path, std::string_view text) {
  WriteFile(path,
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// $MLCAPSULE_ATTEST_VECTORS (set by ctest), or empty.
inline fs::path VectorsDir() {
  const char* dir = std::getenv("MLCAPSULE_ATTEST_VECTORS");
  return dir ? fs::path(dir) : fs::path();
}

inline void ExpectError(const Status& status, StatusCode code, std::string_view part) {
  ASSERT_FALSE(status.ok()) << "succeeded; expected " << StatusCodeName(code) << ": " << part;
  EXPECT_EQ(status.code(), code) << status.ToString();
  EXPECT_NE(status.message().find(part), std::string::npos)
      << "'" << status.message() << "' lacks '" << part << "'";
}

}  // namespace mlcapsule::tee::cvm::testing
