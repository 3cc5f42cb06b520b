// The Gramine manifest template writer on the real build/mlcapsule-core: the output is TOML that
// python3's tomllib parses (checked field by field through its JSON dump), production settings
// (no debug, DCAP, no insecure__ key), a power-of-two enclave that fits the estimate, enough
// threads, and trusted files that cover the core and every non-glibc library `readelf -d` says it
// needs. Then the ldd parser and the escaping on hostile input, and `mlcapsule tee
// gramine-manifest` itself (exit status, file written, refusals).
#include "tee/sgx/gramine_manifest.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace mlcapsule::tee {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

struct CommandResult {
  int exit_status = -1;
  std::string output;  // stdout (and stderr when the command redirects it)
};

// Runs `command` through the shell; the caller quotes its arguments.
CommandResult RunShell(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string Quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string BinaryDir() {
  const char* dir = std::getenv("MLCAPSULE_BINARY_DIR");
  return dir ? dir : ".";
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The manifest as python3's tomllib reads it, dumped to JSON; null (and a test failure) when it
// does not parse.
Json ParseToml(const std::string& manifest, const fs::path& scratch) {
  const fs::path file = scratch / "manifest.toml";
  std::ofstream(file, std::ios::binary) << manifest;
  const CommandResult parsed = RunShell(
      "python3 -c 'import tomllib,sys,json; print(json.dumps(tomllib.loads(sys.stdin.read())))'"
      " < " +
      Quote(file.string()) + " 2>&1");
  EXPECT_EQ(parsed.exit_status, 0) << parsed.output;
  if (parsed.exit_status != 0) return Json();
  return Json::parse(parsed.output, nullptr, /*allow_exceptions=*/false);
}

// The DT_NEEDED names of `binary` (readelf -d).
std::vector<std::string> NeededLibraries(const std::string& binary) {
  const CommandResult readelf = RunShell("LC_ALL=C readelf -d " + Quote(binary));
  EXPECT_EQ(readelf.exit_status, 0) << readelf.output;
  std::vector<std::string> needed;
  std::istringstream lines(readelf.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("(NEEDED)") == std::string::npos) continue;
    const size_t open = line.find('['), close = line.find(']');
    if (open != std::string::npos && close > open)
      needed.push_back(line.substr(open + 1, close - open - 1));
  }
  return needed;
}

uint64_t SizeOf(const std::string& text) {
  Result<uint64_t> size = ParseEnclaveSize(text);
  EXPECT_TRUE(size.ok()) << size.status().message();
  return size.ok() ? *size : 0;
}

class GramineManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    core_ = BinaryDir() + "/mlcapsule-core";
    if (!fs::exists(core_)) GTEST_SKIP() << "no mlcapsule-core at " << core_ << " (build it)";
    std::string pattern = (fs::temp_directory_path() / "mlc-manifest-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    scratch_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    if (!scratch_.empty()) fs::remove_all(scratch_, ignored);
  }

  GramineManifestOptions Options() const {
    GramineManifestOptions options;
    options.core_path = core_;
    options.state_dir = "/var/lib/mlcapsule/capsule-1";
    return options;
  }

  std::string core_;
  fs::path scratch_;
};

TEST_F(GramineManifestTest, ProductionSettingsAndTheCoreWithItsLibraries) {
  GramineManifestOptions options = Options();
  options.capsule_bytes = 300 << 20;  // estimate: 256 MiB + 900 MiB -> 2 GiB
  options.threads = 6;
  options.isv_prod_id = 7;
  options.isv_svn = 2;
  Result<std::string> manifest = GramineManifest(options);
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  EXPECT_EQ(manifest->find("insecure__"), std::string::npos);
  const Json doc = ParseToml(*manifest, scratch_);
  ASSERT_TRUE(doc.is_object());

  const Json& sgx = doc["sgx"];
  EXPECT_EQ(sgx["debug"], false);
  EXPECT_EQ(sgx["remote_attestation"], "dcap");
  const uint64_t enclave = SizeOf(sgx["enclave_size"].get<std::string>());
  EXPECT_TRUE(std::has_single_bit(enclave)) << enclave;
  EXPECT_GE(enclave, kEnclaveBaseBytes + 3 * options.capsule_bytes);
  EXPECT_EQ(sgx["enclave_size"], "2G");
  EXPECT_GE(sgx["max_threads"].get<int>(), 6 + 4);
  EXPECT_EQ(sgx["isvprodid"], 7);
  EXPECT_EQ(sgx["isvsvn"], 2);

  const Json& loader = doc["loader"];
  EXPECT_EQ(loader["entrypoint"]["uri"], "file:{{ gramine.libos }}");
  EXPECT_EQ(loader["log_level"], "error");
  EXPECT_EQ(loader["argv"], Json::parse(R"(["mlcapsule-core", "--stdio", "--platform", "sgx",
                                           "--state", "/state"])"));
  EXPECT_EQ(loader["env"]["OMP_NUM_THREADS"], "6");
  EXPECT_EQ(loader["env"]["LD_LIBRARY_PATH"], "/lib:/usr/lib/x86_64-linux-gnu");
  EXPECT_EQ(doc["libos"]["entrypoint"], "/mlcapsule/mlcapsule-core");
  EXPECT_EQ(doc["sys"]["disallow_subprocesses"], true);
  EXPECT_EQ(doc["sys"]["stack"]["size"], "2M");

  const std::string bundle = fs::canonical(BinaryDir()).string();
  std::map<std::string, std::string> mounts;
  for (const Json& mount : doc["fs"]["mounts"])
    mounts[mount["path"].get<std::string>()] = mount.value("uri", mount.value("type", ""));
  EXPECT_EQ(mounts["/lib"], "file:{{ gramine.runtimedir() }}");
  EXPECT_EQ(mounts["/usr/lib/x86_64-linux-gnu"], "file:/usr/lib/x86_64-linux-gnu");
  EXPECT_EQ(mounts["/mlcapsule"], "file:" + bundle);
  EXPECT_EQ(mounts["/state"], "file:/var/lib/mlcapsule/capsule-1");
  EXPECT_EQ(mounts["/tmp"], "tmpfs");
  EXPECT_EQ(sgx["allowed_files"], Json::array({"file:/var/lib/mlcapsule/capsule-1/"}));

  std::set<std::string> trusted;
  for (const Json& uri : sgx["trusted_files"]) trusted.insert(uri.get<std::string>());
  EXPECT_TRUE(trusted.count("file:{{ gramine.libos }}"));
  EXPECT_TRUE(trusted.count("file:{{ gramine.runtimedir() }}/"));
  EXPECT_TRUE(trusted.count("file:" + bundle + "/mlcapsule-core"));
  // Every library the core names, except glibc's (Gramine's own glibc is in the runtime dir),
  // as a file the enclave's loader finds under LD_LIBRARY_PATH.
  const std::set<std::string> glibc = {"libc.so.6",       "libm.so.6",  "ld-linux-x86-64.so.2",
                                       "libpthread.so.0", "libdl.so.2", "librt.so.1"};
  const std::vector<std::string> needed = NeededLibraries(core_);
  ASSERT_GE(needed.size(), 5u);  // oneDNN, libsodium, libstdc++, ... and glibc
  size_t checked = 0;
  for (const std::string& name : needed) {
    const std::string uri = "file:/usr/lib/x86_64-linux-gnu/" + name;
    if (glibc.count(name)) {
      EXPECT_FALSE(trusted.count(uri)) << name << " is glibc's: Gramine brings its own";
      continue;
    }
    EXPECT_TRUE(trusted.count(uri)) << name << " is missing from sgx.trusted_files";
    ++checked;
  }
  EXPECT_GE(checked, 4u);
  // ldd also lists what the libraries need (oneDNN's libOpenCL), so there may be more.
  EXPECT_GE(trusted.size(), 3 + checked);
}

TEST_F(GramineManifestTest, EnclaveSize) {
  EXPECT_EQ(*EstimateEnclaveSize(0), kEnclaveBaseBytes);
  EXPECT_EQ(*EstimateEnclaveSize(1), uint64_t{512} << 20);
  EXPECT_EQ(*EstimateEnclaveSize(uint64_t{1} << 30), uint64_t{4} << 30);
  EXPECT_FALSE(EstimateEnclaveSize(uint64_t{1} << 40).ok());
  EXPECT_EQ(*ParseEnclaveSize("512M"), uint64_t{512} << 20);
  EXPECT_EQ(*ParseEnclaveSize("8g"), uint64_t{8} << 30);
  EXPECT_EQ(*ParseEnclaveSize("1073741824"), uint64_t{1} << 30);
  EXPECT_FALSE(ParseEnclaveSize("").ok());
  EXPECT_FALSE(ParseEnclaveSize("G").ok());
  EXPECT_FALSE(ParseEnclaveSize("-1G").ok());
  EXPECT_FALSE(ParseEnclaveSize("1.5G").ok());
  EXPECT_FALSE(ParseEnclaveSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseEnclaveSize("2048T").ok());
  EXPECT_EQ(FormatEnclaveSize(uint64_t{1} << 30), "1G");
  EXPECT_EQ(FormatEnclaveSize(uint64_t{1536} << 20), "1536M");

  GramineManifestOptions options = Options();
  options.capsule_bytes = 300 << 20;
  options.enclave_size = uint64_t{8} << 30;  // an override wins over the estimate
  Result<std::string> manifest = GramineManifest(options);
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  EXPECT_NE(manifest->find("sgx.enclave_size = \"8G\"\n"), std::string::npos);

  options.enclave_size = uint64_t{3} << 30;
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(manifest.status().message().find("3G (3221225472 bytes) is not a power of two"),
            std::string::npos)
      << manifest.status().message();
  options.enclave_size = uint64_t{128} << 20;
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("128M is outside 256M..1024G"), std::string::npos)
      << manifest.status().message();

  options = Options();
  options.threads = 0;
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("threads 0 is outside 1..1024"), std::string::npos);
}

constexpr const char* kLddOutput =
    "\tlinux-vdso.so.1 (0x00007ffd6b9d2000)\n"
    "\tlibdnnl.so.2 => /lib/x86_64-linux-gnu/libdnnl.so.2 (0x00007f0e1d200000)\n"
    "\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0e1d120000)\n"
    "\tlibdnnl.so.2 => /lib/x86_64-linux-gnu/libdnnl.so.2 (0x00007f0e1d200000)\n"
    "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1fb1d000)\n";

TEST_F(GramineManifestTest, LddOutput) {
  Result<std::vector<SharedLibrary>> libraries = ParseLddOutput(kLddOutput, "CORE");
  ASSERT_TRUE(libraries.ok()) << libraries.status().message();
  ASSERT_EQ(libraries->size(), 3u);  // vdso skipped, the duplicate dropped
  EXPECT_EQ((*libraries)[0].name, "libdnnl.so.2");
  EXPECT_EQ((*libraries)[0].path, "/lib/x86_64-linux-gnu/libdnnl.so.2");
  EXPECT_EQ((*libraries)[2].name, "ld-linux-x86-64.so.2");
  EXPECT_TRUE(IsGlibcLibrary("ld-linux-x86-64.so.2"));
  EXPECT_TRUE(IsGlibcLibrary("libm.so.6"));
  EXPECT_FALSE(IsGlibcLibrary("libstdc++.so.6"));

  Result<std::vector<SharedLibrary>> missing =
      ParseLddOutput("\tlibdnnl.so.2 => not found\n", "/opt/core");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("ldd found no libdnnl.so.2 for /opt/core"),
            std::string::npos)
      << missing.status().message();
  EXPECT_FALSE(ParseLddOutput("\tstatically linked\n", "CORE").ok());
  EXPECT_FALSE(ParseLddOutput("\tlibx.so => relative/libx.so (0x1)\n", "CORE").ok());

  // The manifest refuses a library ldd did not find, and one the enclave would not see.
  GramineManifestOptions options = Options();
  options.ldd_output = "\tlibdnnl.so.2 => not found\n";
  Result<std::string> manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("ldd found no libdnnl.so.2"), std::string::npos);
  options.ldd_output = "\tlibodd.so.1 => /opt/odd/libodd.so.1 (0x1)\n";
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(manifest.status().message().find("libodd.so.1 (/opt/odd/libodd.so.1) is in /opt/odd, "
                                             "which the enclave does not mount"),
            std::string::npos)
      << manifest.status().message();

  // A library beside the core is found through /mlcapsule.
  const std::string bundle = fs::canonical(BinaryDir()).string();
  options.ldd_output = "\tlibown.so.1 => " + bundle + "/libown.so.1 (0x1)\n";
  manifest = GramineManifest(options);
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  const Json doc = ParseToml(*manifest, scratch_);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["loader"]["env"]["LD_LIBRARY_PATH"], "/lib:/usr/lib/x86_64-linux-gnu:/mlcapsule");
  EXPECT_EQ(doc["sgx"]["trusted_files"].back(), "file:" + bundle + "/libown.so.1");
}

TEST_F(GramineManifestTest, HostPathsAreEscapedOrRefused) {
  EXPECT_EQ(TomlString("a\"b\\c\nd\x01\x7f"), "\"a\\\"b\\\\c\\nd\\u0001\\u007F\"");
  GramineManifestOptions options = Options();
  const std::string odd = "/var/lib/odd \"dir\"\\with\ttabs\nand lines/\xc3\xa9t\xc3\xa9";
  options.state_dir = odd;
  Result<std::string> manifest = GramineManifest(options);
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  const Json doc = ParseToml(*manifest, scratch_);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["sgx"]["allowed_files"][0], "file:" + odd + "/");

  options.state_dir = "/var/lib/{{ 7 * 7 }}";
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(manifest.status().message().find("would read as a template expression"),
            std::string::npos)
      << manifest.status().message();
  options.state_dir = "/var/lib/{% raw %}";
  EXPECT_FALSE(GramineManifest(options).ok());
  options.state_dir = "/var/lib/\xff\xfe";
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("is not valid UTF-8"), std::string::npos);
  options.state_dir = "";
  EXPECT_FALSE(GramineManifest(options).ok());
  options.state_dir = "/";
  EXPECT_FALSE(GramineManifest(options).ok());

  options = Options();
  options.core_path = (scratch_ / "no-such-core").string();
  manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_NE(manifest.status().message().find("no-such-core: No such file"), std::string::npos)
      << manifest.status().message();
}

TEST_F(GramineManifestTest, LddRunsOnTheCoreAndRefusesAFileThatIsNoExecutable) {
  Result<std::string> output = RunLdd(core_);
  ASSERT_TRUE(output.ok()) << output.status().message();
  EXPECT_NE(output->find("libdnnl.so.2 => "), std::string::npos) << *output;

  const fs::path text = scratch_ / "not-a-core";
  std::ofstream(text) << "#!/bin/sh\necho hello\n";
  GramineManifestOptions options = Options();
  options.core_path = text.string();
  Result<std::string> manifest = GramineManifest(options);
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(manifest.status().message().find("not-a-core failed (status 1): not a dynamic "
                                             "executable"),
            std::string::npos)
      << manifest.status().message();
}

// --- through the command line ---

TEST_F(GramineManifestTest, CommandLine) {
  const std::string mlcapsule = BinaryDir() + "/mlcapsule";
  if (!fs::exists(mlcapsule)) GTEST_SKIP() << "no mlcapsule binary at " << mlcapsule;
  const fs::path out = scratch_ / "mlcapsule-core.manifest.template";
  const fs::path capsule = scratch_ / "model.capsule";
  {
    std::ofstream file(capsule, std::ios::binary);
    file << std::string(100 << 10, 'x');  // only its size is read
  }
  CommandResult run = RunShell(
      Quote(mlcapsule) + " tee gramine-manifest --state " + Quote((scratch_ / "state").string()) +
      " --capsule " + Quote(capsule.string()) + " --threads 3 --isv-prod-id 5 --isv-svn 9" +
      " --out " + Quote(out.string()) + " 2>&1");
  ASSERT_EQ(run.exit_status, 0) << run.output;
  EXPECT_NE(run.output.find("gramine-sgx-sign"), std::string::npos) << run.output;
  ASSERT_TRUE(fs::exists(out));
  const Json doc = ParseToml(ReadText(out), scratch_);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["sgx"]["max_threads"], 7);
  EXPECT_EQ(doc["sgx"]["isvprodid"], 5);
  EXPECT_EQ(doc["sgx"]["isvsvn"], 9);
  EXPECT_EQ(doc["sgx"]["enclave_size"], "512M");  // 256 MiB + 300 KiB, rounded up
  EXPECT_EQ(doc["sgx"]["debug"], false);

  const fs::path refused = scratch_ / "refused.template";
  run = RunShell(Quote(mlcapsule) +
                 " tee gramine-manifest --state /var/lib/x --enclave-size 3G --out " +
                 Quote(refused.string()) + " 2>&1");
  EXPECT_EQ(run.exit_status, 2) << run.output;
  EXPECT_NE(run.output.find("is not a power of two"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(refused));
  run = RunShell(Quote(mlcapsule) + " tee gramine-manifest --state /var/lib/x --threads 0 --out " +
                 Quote(refused.string()) + " 2>&1");
  EXPECT_NE(run.exit_status, 0);
  EXPECT_NE(run.output.find("--threads"), std::string::npos) << run.output;
  run = RunShell(Quote(mlcapsule) + " tee gramine-manifest --out " + Quote(refused.string()) +
                 " 2>&1");
  EXPECT_NE(run.exit_status, 0);
  EXPECT_NE(run.output.find("--state is required"), std::string::npos) << run.output;
  run = RunShell(Quote(mlcapsule) + " tee gramine-manifest --state /var/lib/x --core " +
                 Quote((scratch_ / "missing-core").string()) + " --out " + Quote(refused.string()) +
                 " 2>&1");
  EXPECT_EQ(run.exit_status, 1) << run.output;
  EXPECT_NE(run.output.find("missing-core"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(refused));

  run = RunShell(Quote(mlcapsule) + " tee 2>&1");
  EXPECT_EQ(run.exit_status, 0) << run.output;
  EXPECT_NE(run.output.find("gramine-manifest"), std::string::npos) << run.output;
  run = RunShell(Quote(mlcapsule) + " tee gramine-manifest --help 2>&1");
  EXPECT_EQ(run.exit_status, 0);
  EXPECT_NE(run.output.find("gramine-sgx-sign"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("mr_signers"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace mlcapsule::tee
