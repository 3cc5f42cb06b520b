// The guarded path through the real software TEE: the core runs in the separate mlcapsule-core
// process. Checks that no plaintext weight reaches the host (its memory and every file the run
// wrote) and that the core process is confined.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/bytes.h"
#include "base/file_util.h"
#include "base/sensitive_memory.h"
#include "capsule/licensing.h"
#include "capsule/messages.h"
#include "host/client.h"
#include "host/test_capsule.h"

namespace mlcapsule::host {
namespace {

namespace fs = std::filesystem;
constexpr uint8_t kMask = 0xA5;
constexpr size_t kCanaryFloats = testing::kClassifierInputs * testing::kClassifierClasses;

// The canary weights, masked: this process only ever holds canary ^ kMask, so finding the
// unmasked bytes in its memory means they came from somewhere else.
std::vector<uint8_t> MaskedCanary() {
  std::vector<uint8_t> masked(kCanaryFloats * 4);
  uint32_t state = 0x9E3779B9u;
  for (size_t i = 0; i < kCanaryFloats; ++i) {
    state = state * 1664525u + 1013904223u;
    // A float in [0.5, 1) with distinctive low mantissa bits.
    uint32_t bits = 0x3F000000u | (state >> 9);
    bits ^= 0xA5A5A5A5u;  // mask every byte with kMask before it is stored anywhere
    std::memcpy(&masked[i * 4], &bits, 4);
  }
  return masked;
}

std::string CoreBinary() {
  const char* dir = std::getenv("MLCAPSULE_BINARY_DIR");
  return dir ? (fs::path(dir) / "mlcapsule-core").string() : "";
}

// Counts places where `masked` ^ kMask occurs in [data, data + size).
size_t CountUnmasked(const uint8_t* data, size_t size, const std::vector<uint8_t>& masked) {
  const size_t n = 64;  // 16 floats of the canary are plenty to be unique
  if (size < n) return 0;
  const uint8_t first = masked[0] ^ kMask;
  size_t found = 0;
  for (size_t i = 0; i + n <= size;) {
    const void* hit = std::memchr(data + i, first, size - n + 1 - i);
    if (hit == nullptr) break;
    size_t at = static_cast<size_t>(static_cast<const uint8_t*>(hit) - data);
    size_t k = 1;
    while (k < n && (data[at + k] ^ kMask) == masked[k]) ++k;
    if (k == n) ++found;
    i = at + 1;
  }
  return found;
}

// Scans every readable mapping of this process through /proc/self/mem.
size_t ScanOwnMemory(const std::vector<uint8_t>& masked) {
  std::ifstream maps("/proc/self/maps");
  int mem = ::open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
  if (mem < 0) return SIZE_MAX;
  size_t found = 0;
  std::string line;
  std::vector<uint8_t> buffer(1 << 20);
  while (std::getline(maps, line)) {
    unsigned long start = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &start, &end, perms) != 3) continue;
    if (perms[0] != 'r' || line.find("[vvar]") != std::string::npos ||
        line.find("[vsyscall]") != std::string::npos)
      continue;
    // Reservations of terabytes (AddressSanitizer's shadow memory) are not data of this test;
    // nothing the host holds comes near 4 GiB.
    if (end - start > (1ul << 32)) continue;
    for (unsigned long at = start; at < end; at += buffer.size() - 64) {
      size_t want = std::min<unsigned long>(buffer.size(), end - at);
      ssize_t got = ::pread(mem, buffer.data(), want, static_cast<off_t>(at));
      if (got <= 0) break;
      found += CountUnmasked(buffer.data(), static_cast<size_t>(got), masked);
      if (static_cast<size_t>(got) < buffer.size()) break;
    }
  }
  ::close(mem);
  return found;
}

size_t ScanFiles(const fs::path& dir, const std::vector<uint8_t>& masked, std::string* where) {
  size_t found = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    auto bytes = ReadFile(entry.path().string(), uint64_t{1} << 30);
    if (!bytes.ok()) continue;
    size_t n =
        CountUnmasked(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), masked);
    if (n) *where += entry.path().string() + " ";
    found += n;
  }
  return found;
}

class HostProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CoreBinary().empty() || !fs::exists(CoreBinary()))
      GTEST_SKIP() << "mlcapsule-core not found (set MLCAPSULE_BINARY_DIR; ctest does)";
    ASSERT_TRUE(capsule::InitCrypto().ok());
    dir_ = fs::temp_directory_path() / ("mlc-host-process-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

TEST_F(HostProcessTest, NoPlaintextWeightLeavesTheTrustedProcess) {
  const std::vector<uint8_t> masked = MaskedCanary();
  const fs::path capsule_path = dir_ / "canary.capsule";
  // The provider side runs in a child process: only it ever holds the plaintext weights.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::vector<float> weights(kCanaryFloats);
    std::vector<uint8_t> plain(masked);
    for (uint8_t& b : plain) b ^= kMask;
    std::memcpy(weights.data(), plain.data(), plain.size());
    testing::TestProvider provider = testing::TestProvider::Make(testing::ClassifierPlan(weights),
                                                                 testing::kDefaultTestPolicy, 4096);
    Status a =
        WriteFile(capsule_path.string(),
                  std::string_view(reinterpret_cast<const char*>(provider.packed.bytes.data()),
                                   provider.packed.bytes.size()));
    Status b = capsule::WriteKeyPair(dir_.string(), "provider", provider.key);
    Status c = capsule::WriteCapsuleKeyFile(
        capsule_path.string() + ".key", provider.packed.capsule_id, provider.packed.capsule_key);
    ::_exit(a.ok() && b.ok() && c.ok() ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

  {
    ClientOptions options;
    options.state_dir = (dir_ / "state").string();
    options.core_binary = CoreBinary();
    auto client = Client::Open(capsule_path.string(), options);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    EXPECT_NE((*client)->DescribeBackend().find("software"), std::string::npos);
    capsule::Nonce nonce{};
    capsule::RandomBytes(nonce);
    auto request = (*client)->MakeEvidenceRequest(nonce, false);
    ASSERT_TRUE(request.ok()) << request.status().ToString();
    // The provider's lease: needs its key and the capsule key, never the weights.
    auto bytes = ReadFile(capsule_path.string(), 1 << 20);
    auto view = capsule::ParseAndVerifyCapsule(AsBytes(*bytes));
    ASSERT_TRUE(view.ok());
    auto policy = capsule::ParsePolicy(view->header.policy_json);
    auto signer = capsule::ReadSecretKeyFile((dir_ / "provider.key").string());
    auto capsule_key =
        capsule::ReadCapsuleKeyFile(capsule_path.string() + ".key", view->header.capsule_id);
    ASSERT_TRUE(policy.ok() && signer.ok() && capsule_key.ok());
    capsule::LeaseTerms terms{"license-1", 50, 86400, static_cast<int64_t>(::time(nullptr)), 1};
    auto checked = capsule::CheckEvidenceRequest(*request, view->header, *policy, terms);
    ASSERT_TRUE(checked.ok()) << checked.status().ToString();
    auto lease = capsule::IssueLeaseForRequest(*checked, view->header, *policy, *capsule_key,
                                               *signer, terms);
    ASSERT_TRUE(lease.ok());
    ASSERT_TRUE((*client)->InstallLease(*lease).ok());
    for (int i = 0; i < 20; ++i) {
      engine::Tensor x = engine::Tensor::Make(engine::DType::kFloat32, {2, 8});
      for (int64_t k = 0; k < x.NumElements(); ++k)
        x.Data<float>()[k] = 0.1f * static_cast<float>(k + i);
      std::vector<engine::Tensor> out;
      ASSERT_TRUE((*client)->Infer({x.View()}, &out).ok());
      ASSERT_EQ(out[0].dims, (engine::Dims{2, 4}));
    }
    ASSERT_TRUE((*client)->UsageReport().ok());
    ASSERT_TRUE((*client)->Close().ok());
  }
  EXPECT_EQ(ScanOwnMemory(masked), 0u) << "canary weights found in the host's memory";
  std::string where;
  EXPECT_EQ(ScanFiles(dir_, masked, &where), 0u) << "canary weights found in: " << where;

  // Positive control: the scanners do find the canary when it is really there.
  std::vector<uint8_t> plain(masked);
  for (uint8_t& b : plain) b ^= kMask;
  EXPECT_GE(ScanOwnMemory(masked), 1u);
  ASSERT_TRUE(WriteFile((dir_ / "control.bin").string(),
                        std::string_view(reinterpret_cast<const char*>(plain.data()), plain.size()))
                  .ok());
  WipeMemory(plain.data(), plain.size());
  where.clear();
  EXPECT_EQ(ScanFiles(dir_, masked, &where), 1u);
}

TEST_F(HostProcessTest, CoreProcessIsConfinedAndNonDumpable) {
  testing::TestProvider provider = testing::TestProvider::Make(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()), testing::kDefaultTestPolicy);
  const fs::path capsule_path = dir_ / "m.capsule";
  ASSERT_TRUE(WriteFile(capsule_path.string(), std::string_view(reinterpret_cast<const char*>(
                                                                    provider.packed.bytes.data()),
                                                                provider.packed.bytes.size()))
                  .ok());
  ClientOptions options;
  options.state_dir = (dir_ / "state").string();
  options.core_binary = CoreBinary();
  auto client = Client::Open(capsule_path.string(), options);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::string describe = (*client)->DescribeBackend();
  size_t at = describe.find("pid ");
  ASSERT_NE(at, std::string::npos) << describe;
  const int pid = std::atoi(describe.c_str() + at + 4);
  ASSERT_GT(pid, 0);
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::stringstream text;
  text << status.rdbuf();
  EXPECT_NE(text.str().find("Seccomp:\t2"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("NoNewPrivs:\t1"), std::string::npos);
  // Non-dumpable: the kernel hands a non-dumpable process's /proc/PID files to root. That is
  // only visible when this test is not root itself (as root every owner is 0 anyway; the flag is
  // then checked by tee_software_test, inside the hardened process).
  if (::geteuid() != 0) {
    struct stat st {};
    ASSERT_EQ(::stat(("/proc/" + std::to_string(pid) + "/mem").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
  }
}

}  // namespace
}  // namespace mlcapsule::host
