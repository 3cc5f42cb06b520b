// The software TEE: secret memory is unreadable from another process (with a heap control that
// is), hardening and the seccomp filter (forbidden calls kill, the core's real work still runs:
// secret allocation, counter, OpenMP threads, a oneDNN convolution), the platform's files, the
// socket framing, and the real mlcapsule-core started through StartProcessChannel.
//
// Everything that changes the process for good (non-dumpable, seccomp) runs in a forked child.
// GNU OpenMP is not fork-safe once its threads exist, so this process itself never enters an
// OpenMP region: only the children do.
#include <fcntl.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "base/bytes.h"
#include "base/sensitive_memory.h"
#include "capsule/core_frame.h"
#include "engine/session.h"
#include "engine/test_plans.h"
#include "host/core_channel.h"
#include "tee/software/sandbox.h"
#include "tee/software/secret_memory.h"
#include "tee/software/software_platform.h"

namespace mlcapsule::tee {
namespace {

namespace fs = std::filesystem;

// Runs `body` in a forked child; returns the child's wait status. The body's result is the exit
// code; it must not use GoogleTest assertions (they would report in the child).
int RunInChild(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "mlc-tee-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, ignored);
    fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Restores the heap provider when a test that installed another one ends.
struct ProviderReset {
  ~ProviderReset() { SetSensitiveMemoryProvider(nullptr); }
};

size_t CountSecretMappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  size_t count = 0;
  while (std::getline(maps, line)) count += line.find("secretmem") != std::string::npos;
  return count;
}

// The VmFlags line of the mapping that contains `address`.
std::string VmFlagsOf(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto target = reinterpret_cast<uintptr_t>(address);
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2 && line.find(' ') < 30) {
      inside = target >= start && target < end;
    } else if (inside && line.starts_with("VmFlags:")) {
      return line;
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Secret memory

TEST(SecretMemoryTest, MemfdSecretPagesAreUnreadableFromAnotherProcess) {
  if (!MemfdSecretAvailable()) GTEST_SKIP() << "memfd_secret is not available on this kernel";
  ProviderReset reset;
  std::string backend;
  ASSERT_TRUE(InstallSecretMemoryProvider(&backend).ok());
  ASSERT_EQ(backend, "memfd_secret");
  EXPECT_STREQ(CurrentSensitiveMemoryProvider().name, "memfd_secret");

  constexpr size_t kLarge = 64 << 10, kSmall = 32;
  auto* large = static_cast<uint8_t*>(AllocateSensitive(kLarge));
  auto* small = static_cast<uint8_t*>(AllocateSensitive(kSmall));
  ASSERT_EQ(reinterpret_cast<uintptr_t>(large) % 64, 0u);
  ASSERT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  for (size_t i = 0; i < kLarge; ++i) large[i] = static_cast<uint8_t>(i * 7 + 1);
  for (size_t i = 0; i < kSmall; ++i) small[i] = static_cast<uint8_t>(0xC0 + i);
  for (size_t i = 0; i < kLarge; ++i) ASSERT_EQ(large[i], static_cast<uint8_t>(i * 7 + 1));
  EXPECT_EQ(small[5], 0xC5);
  std::vector<uint8_t> heap(kLarge);  // the control: ordinary memory of the same process
  for (size_t i = 0; i < kLarge; ++i) heap[i] = static_cast<uint8_t>(i * 7 + 1);

  const pid_t parent = getpid();
  // Bit 0: the heap page was read and matched; bits 1, 2: the secret reads failed as expected.
  int status = RunInChild([&] {
    auto try_read = [&](const void* address, size_t bytes, std::vector<uint8_t>* out) {
      out->assign(bytes, 0);
      struct iovec local {
        out->data(), bytes
      };
      struct iovec remote {
        const_cast<void*>(address), bytes
      };
      return process_vm_readv(parent, &local, 1, &remote, 1, 0);
    };
    int result = 0;
    std::vector<uint8_t> got;
    if (try_read(heap.data(), kLarge, &got) == static_cast<ssize_t>(kLarge) && got == heap)
      result |= 1;
    errno = 0;
    if (try_read(large, kLarge, &got) < 0 && (errno == EFAULT || errno == EIO)) result |= 2;
    errno = 0;
    if (try_read(small, kSmall, &got) < 0 && (errno == EFAULT || errno == EIO)) result |= 4;
    return result;
  });
  ASSERT_TRUE(WIFEXITED(status)) << DescribeStatus(status);
  EXPECT_TRUE(WEXITSTATUS(status) & 1) << "control failed: the heap page should be readable";
  EXPECT_TRUE(WEXITSTATUS(status) & 2) << "a large memfd_secret allocation was readable";
  EXPECT_TRUE(WEXITSTATUS(status) & 4) << "a small (slab) memfd_secret allocation was readable";

  ReleaseSensitive(large, kLarge);
  ReleaseSensitive(small, kSmall);
}

TEST(SecretMemoryTest, SmallAllocationsShareSlabChunks) {
  if (!MemfdSecretAvailable()) GTEST_SKIP() << "memfd_secret is not available on this kernel";
  ProviderReset reset;
  std::string backend;
  ASSERT_TRUE(InstallSecretMemoryProvider(&backend).ok());
  const size_t before = CountSecretMappings();
  std::vector<uint8_t*> keys;
  for (int i = 0; i < 100; ++i) {
    keys.push_back(static_cast<uint8_t*>(AllocateSensitive(32)));
    std::memset(keys.back(), i, 32);
  }
  EXPECT_LE(CountSecretMappings() - before, 2u) << "100 keys should fit in one or two chunks";
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(keys[i]) % 64, 0u);
    EXPECT_EQ(keys[i][31], i) << "allocations overlap";
  }
  for (uint8_t* key : keys) ReleaseSensitive(key, 32);
  // Freed blocks are reused: no new chunk for the next key.
  const size_t after = CountSecretMappings();
  uint8_t* again = static_cast<uint8_t*>(AllocateSensitive(32));
  EXPECT_EQ(CountSecretMappings(), after);
  ReleaseSensitive(again, 32);
}

TEST(SecretMemoryTest, MlockFallbackLocksAndExcludesFromDumps) {
  ProviderReset reset;
  std::string backend;
  ::testing::internal::CaptureStderr();
  Status status = InstallSecretMemoryProvider(&backend, SecretMemoryMode::kForceMlock);
  const std::string warning = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(backend, "mlock");
  EXPECT_NE(warning.find("WARNING"), std::string::npos);
  EXPECT_NE(warning.find("LOST"), std::string::npos) << warning;

  constexpr size_t kBytes = 256 << 10;
  auto* block = static_cast<uint8_t*>(AllocateSensitive(kBytes));
  std::memset(block, 0x5A, kBytes);
  const std::string flags = VmFlagsOf(block);
  EXPECT_NE(flags.find(" lo"), std::string::npos) << "not mlock-ed: " << flags;
  EXPECT_NE(flags.find(" dd"), std::string::npos) << "not MADV_DONTDUMP: " << flags;
  ReleaseSensitive(block, kBytes);
}

// ---------------------------------------------------------------------------------------------
// Hardening and seccomp

TEST(SandboxTest, HardenProcessMakesItNonDumpable) {
  int status = RunInChild([] {
    if (!HardenProcess().ok()) return 10;
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) return 11;
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 12;
    struct rlimit core {};
    if (getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 || core.rlim_max != 0) return 13;
    return 0;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
  EXPECT_EQ(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1) << "the test process itself must not change";
}

// Each forbidden call, made after EnterSeccomp, kills the child with SIGSYS.
void ExpectKilledBySeccomp(const std::function<void()>& forbidden, const char* what) {
  int status = RunInChild([&] {
    if (!EnterSeccomp().ok()) return 10;
    forbidden();
    return 0;  // reached only if the call was not stopped
  });
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
      << what << ": " << DescribeStatus(status);
}

TEST(SandboxTest, DangerousCallsKillTheProcess) {
  ExpectKilledBySeccomp([] { (void)open("/etc/hostname", O_RDONLY); }, "open");
  ExpectKilledBySeccomp([] { (void)syscall(SYS_openat, AT_FDCWD, "/etc/hostname", O_RDONLY); },
                        "openat");
  ExpectKilledBySeccomp(
      [] {
        char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
        char* envp[] = {nullptr};
        execve("/bin/true", argv, envp);
      },
      "execve");
  ExpectKilledBySeccomp([] { (void)fork(); }, "fork (clone without CLONE_THREAD)");
  ExpectKilledBySeccomp([] { (void)socket(AF_INET, SOCK_STREAM, 0); }, "socket");
  ExpectKilledBySeccomp([] { (void)syscall(SYS_ptrace, 0, getppid(), 0, 0); }, "ptrace");
}

TEST(SandboxTest, UnlistedCallsFailWithEperm) {
  int status = RunInChild([] {
    if (!EnterSeccomp().ok()) return 10;
    errno = 0;
    if (syscall(SYS_uname, nullptr) != -1 || errno != EPERM) return 11;
    errno = 0;
    if (syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS) return 12;
    errno = 0;  // changing a limit is not allowed; reading one is
    struct rlimit limit {};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 13;
    if (setrlimit(RLIMIT_NOFILE, &limit) != -1 || errno != EPERM) return 14;
    return 0;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
}

TEST(SandboxTest, AbortStillWorks) {
  // AllocateSensitive aborts when secret memory runs out: that must end in SIGABRT, not SIGSYS.
  int status = RunInChild([] {
    if (!EnterSeccomp().ok()) return 10;
    std::abort();
  });
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) << DescribeStatus(status);
}

engine::Tensor PatternInput(int64_t batch) {
  engine::Tensor x = engine::Tensor::Make(engine::DType::kFloat32, {batch, 1, 6, 6});
  for (int64_t i = 0; i < x.NumElements(); ++i)
    x.Data<float>()[i] = std::sin(0.37f * static_cast<float>(i));
  return x;
}

// The core's start-up order, then its run-time work under the filter.
TEST(SandboxTest, CoreWorkRunsUnderSeccomp) {
  TempDir dir;
  int status = RunInChild([&] {
    if (!HardenProcess().ok()) return 10;
    std::string backend;
    if (!InstallSecretMemoryProvider(&backend).ok()) return 11;
    auto platform = SoftwarePlatform::Create(dir.Sub("state"));
    if (!platform.ok()) return 12;
    if (!WarmUpRuntimes().ok()) return 13;
    if (!EnterSeccomp().ok()) return 14;

    uint8_t random[64] = {};
    if (!(*platform)->Random(random).ok()) return 20;
    if (getrandom(random, sizeof(random), 0) != sizeof(random)) return 21;
    auto counter = (*platform)->IncrementCounter();
    if (!counter.ok() || *counter != 1) return 22;
    // Secret memory keeps working: new large and small allocations after the filter is on.
    void* weights = AllocateSensitive(1 << 20);
    std::memset(weights, 1, 1 << 20);
    ReleaseSensitive(weights, 1 << 20);
    capsule::SecretBytes key = capsule::RandomSecret(32);
    if (key.size() != 32) return 23;

    std::atomic<int> seen{0};
#pragma omp parallel num_threads(2)
    {
      seen.fetch_add(1);
      if (omp_get_num_threads() != 2) seen.fetch_add(100);
    }
    if (seen.load() != 2) return 30;

    auto fast = engine::Session::Create(engine::testing::SmallConvNet(),
                                        {.threads = 2, .fast_kernels = true});
    auto reference = engine::Session::Create(engine::testing::SmallConvNet(),
                                             {.threads = 1, .fast_kernels = false});
    if (!fast.ok() || !reference.ok()) return 40;
    for (int64_t batch : {1, 3}) {
      engine::Tensor x = PatternInput(batch);
      std::vector<engine::Tensor> a, b;
      if (!(*fast)->Run({x.View()}, &a).ok()) return 41;
      if (!(*reference)->Run({x.View()}, &b).ok()) return 42;
      for (int64_t i = 0; i < a[0].NumElements(); ++i)
        if (std::fabs(a[0].Data<float>()[i] - b[0].Data<float>()[i]) > 1e-4f) return 43;
    }
    return 0;
  });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
}

// ---------------------------------------------------------------------------------------------
// SoftwarePlatform

TEST(SoftwarePlatformTest, CounterPersistsAcrossRestarts) {
  TempDir dir;
  {
    auto platform = SoftwarePlatform::Create(dir.Sub("state"));
    ASSERT_TRUE(platform.ok()) << platform.status().ToString();
    EXPECT_EQ(*(*platform)->ReadCounter(), 0u);
    EXPECT_EQ(*(*platform)->IncrementCounter(), 1u);
    EXPECT_EQ(*(*platform)->IncrementCounter(), 2u);
    EXPECT_EQ(*(*platform)->ReadCounter(), 2u);
  }
  auto again = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*(*again)->ReadCounter(), 2u);
  EXPECT_EQ(*(*again)->IncrementCounter(), 3u);
  struct stat info {};
  ASSERT_EQ(stat(dir.Sub("state").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(dir.Sub("state/core-seal.key").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_EQ(info.st_size, 32);
}

TEST(SoftwarePlatformTest, OneCorePerStateDirectory) {
  TempDir dir;
  auto first = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_TRUE(first.ok());
  auto second = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use"), std::string::npos);
}

void FlipByte(const std::string& path, off_t offset) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint8_t byte = 0;
  ASSERT_EQ(pread(fd, &byte, 1, offset), 1);
  byte ^= 0x01;
  ASSERT_EQ(pwrite(fd, &byte, 1, offset), 1);
  close(fd);
}

TEST(SoftwarePlatformTest, CorruptCounterFileIsRefused) {
  TempDir dir;
  {
    auto platform = SoftwarePlatform::Create(dir.Sub("state"));
    ASSERT_TRUE(platform.ok());
    ASSERT_TRUE((*platform)->IncrementCounter().ok());
  }
  const std::string counter = dir.Sub("state/core-counter");
  FlipByte(counter, 8);  // the value: a rollback 1 -> 0
  auto rolled_back = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_FALSE(rolled_back.ok());
  EXPECT_EQ(rolled_back.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(rolled_back.status().message().find("checksum"), std::string::npos)
      << rolled_back.status().ToString();

  FlipByte(counter, 8);  // restored: accepted again
  ASSERT_TRUE(SoftwarePlatform::Create(dir.Sub("state")).ok());
  ASSERT_EQ(truncate(counter.c_str(), 20), 0);
  auto truncated = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
}

TEST(SoftwarePlatformTest, CounterFromAnotherKeyIsRefused) {
  TempDir dir;
  ASSERT_TRUE(SoftwarePlatform::Create(dir.Sub("state")).ok());
  // A new seal key file makes the existing counter unverifiable.
  ASSERT_EQ(unlink(dir.Sub("state/core-seal.key").c_str()), 0);
  auto platform = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kDataLoss);
}

TEST(SoftwarePlatformTest, SealingKeyIsStableAndBoundToTheMeasurement) {
  TempDir dir;
  std::vector<uint8_t> first, second, other;
  {
    auto platform = SoftwarePlatform::Create(dir.Sub("state"));
    ASSERT_TRUE(platform.ok());
    auto key = (*platform)->SealingKey();
    ASSERT_TRUE(key.ok());
    ASSERT_EQ(key->size(), 32u);
    first.assign(key->span().begin(), key->span().end());
  }
  {
    auto platform = SoftwarePlatform::Create(dir.Sub("state"));
    ASSERT_TRUE(platform.ok());
    auto key = (*platform)->SealingKey();
    second.assign(key->span().begin(), key->span().end());
  }
  EXPECT_EQ(first, second);
  {
    capsule::Digest another_binary{};
    another_binary.fill(0x42);
    auto platform = SoftwarePlatform::CreateWithMeasurement(dir.Sub("state"), another_binary);
    ASSERT_TRUE(platform.ok()) << platform.status().ToString();
    auto key = (*platform)->SealingKey();
    other.assign(key->span().begin(), key->span().end());
    // The counter is not bound to the measurement: an upgraded core keeps it.
    EXPECT_EQ(*(*platform)->ReadCounter(), 0u);
  }
  EXPECT_NE(first, other);
  EXPECT_NE(first, std::vector<uint8_t>(32, 0));
}

TEST(SoftwarePlatformTest, KeyFileOthersCanReadIsRefused) {
  TempDir dir;
  ASSERT_TRUE(SoftwarePlatform::Create(dir.Sub("state")).ok());
  const std::string key = dir.Sub("state/core-seal.key");
  ASSERT_EQ(chmod(key.c_str(), 0640), 0);
  auto platform = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(platform.status().message().find("0640"), std::string::npos)
      << platform.status().ToString();
  ASSERT_EQ(chmod(key.c_str(), 0604), 0);
  EXPECT_FALSE(SoftwarePlatform::Create(dir.Sub("state")).ok());
  ASSERT_EQ(chmod(key.c_str(), 0600), 0);
  EXPECT_TRUE(SoftwarePlatform::Create(dir.Sub("state")).ok());
}

TEST(SoftwarePlatformTest, EvidenceLayout) {
  TempDir dir;
  auto platform = SoftwarePlatform::Create(dir.Sub("state"));
  ASSERT_TRUE(platform.ok());
  auto measurement = HashFile("/proc/self/exe");
  ASSERT_TRUE(measurement.ok());
  EXPECT_EQ((*platform)->measurement(), *measurement);
  EXPECT_EQ((*platform)->evidence_type(), capsule::EvidenceType::kSoftware);

  capsule::ReportData report{};
  for (size_t i = 0; i < report.size(); ++i) report[i] = static_cast<uint8_t>(i + 1);
  auto evidence = (*platform)->Evidence(report);
  ASSERT_TRUE(evidence.ok());
  ASSERT_EQ(evidence->size(), kSoftwareEvidenceBytes);
  EXPECT_EQ(std::string(evidence->begin(), evidence->begin() + 8), "MLCSWEV1");
  EXPECT_TRUE(std::equal(measurement->begin(), measurement->end(), evidence->begin() + 8));
  EXPECT_TRUE(std::equal(report.begin(), report.end(), evidence->begin() + 40));

  const trusted::PlatformTime now = (*platform)->Now();
  EXPECT_FALSE(now.trusted);
  EXPECT_LE(std::llabs(now.unix_seconds - static_cast<int64_t>(time(nullptr))), 2);
  std::array<uint8_t, 32> a{}, b{};
  ASSERT_TRUE((*platform)->Random(a).ok());
  ASSERT_TRUE((*platform)->Random(b).ok());
  EXPECT_NE(a, b);
}

// ---------------------------------------------------------------------------------------------
// Framing

class FrameTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0); }
  void TearDown() override {
    CloseWriter();
    close(fds_[1]);
  }
  void CloseWriter() {
    if (fds_[0] >= 0) close(fds_[0]);
    fds_[0] = -1;
  }
  void WriteRaw(const void* data, size_t size) {
    ASSERT_EQ(write(fds_[0], data, size), static_cast<ssize_t>(size));
  }
  void WriteHeader(const char magic[4], uint32_t call, uint64_t length) {
    uint8_t header[16];
    std::memcpy(header, magic, 4);
    std::memcpy(header + 4, &call, 4);
    std::memcpy(header + 8, &length, 8);
    WriteRaw(header, sizeof(header));
  }
  int writer() const { return fds_[0]; }
  int reader() const { return fds_[1]; }

  // Call 1 takes up to 1 MiB, call 2 up to 100 bytes, call 3 nothing.
  const std::array<uint64_t, 4> limits_{0, 1 << 20, 100, 0};
  int fds_[2] = {-1, -1};
};

TEST_F(FrameTest, RequestRoundTripIsAligned) {
  std::vector<uint8_t> payload(1000);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(capsule::WriteRequest(writer(), 2, std::span(payload).first(100)).ok());
  ASSERT_TRUE(capsule::WriteRequest(writer(), 3, {}).ok());
  capsule::CoreRequest request;
  bool end = true;
  ASSERT_TRUE(capsule::ReadRequest(reader(), limits_, &request, &end).ok());
  EXPECT_FALSE(end);
  EXPECT_EQ(request.call, 2u);
  ASSERT_EQ(request.payload.size(), 100u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(request.payload.data()) % 64, 0u);
  EXPECT_TRUE(std::equal(payload.begin(), payload.begin() + 100, request.payload.data()));
  ASSERT_TRUE(capsule::ReadRequest(reader(), limits_, &request, &end).ok());
  EXPECT_EQ(request.call, 3u);
  EXPECT_EQ(request.payload.size(), 0u);
  CloseWriter();
  ASSERT_TRUE(capsule::ReadRequest(reader(), limits_, &request, &end).ok());
  EXPECT_TRUE(end) << "a clean close between frames is the end of the stream";
}

TEST_F(FrameTest, LargeRequestCrossesTheSocketBufferInPieces) {
  std::vector<uint8_t> payload(1 << 20);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 13);
  Status written;
  std::thread sender([&] { written = capsule::WriteRequest(writer(), 1, payload); });
  capsule::CoreRequest request;
  bool end = false;
  Status read = capsule::ReadRequest(reader(), limits_, &request, &end);
  sender.join();
  ASSERT_TRUE(written.ok()) << written.ToString();
  ASSERT_TRUE(read.ok()) << read.ToString();
  ASSERT_EQ(request.payload.size(), payload.size());
  EXPECT_EQ(std::memcmp(request.payload.data(), payload.data(), payload.size()), 0);
}

TEST_F(FrameTest, OversizedLengthIsRejectedBeforeAllocation) {
  // 2^62 bytes could not be allocated: an allocation attempt would fail as ResourceExhausted.
  WriteHeader(capsule::kRequestMagic, 2, uint64_t{1} << 62);
  capsule::CoreRequest request;
  bool end = false;
  Status status = capsule::ReadRequest(reader(), limits_, &request, &end);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("over the limit 100"), std::string::npos) << status.ToString();
  EXPECT_EQ(request.payload.size(), 0u);
}

TEST_F(FrameTest, OneByteOverTheLimitIsRejected) {
  WriteHeader(capsule::kRequestMagic, 3, 1);
  capsule::CoreRequest request;
  bool end = false;
  EXPECT_EQ(capsule::ReadRequest(reader(), limits_, &request, &end).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(FrameTest, UnknownCallAndBadMagicAreRejected) {
  for (uint32_t call : {0u, 4u, 0xFFFFFFFFu}) {
    WriteHeader(capsule::kRequestMagic, call, 0);
    capsule::CoreRequest request;
    bool end = false;
    Status status = capsule::ReadRequest(reader(), limits_, &request, &end);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << call;
    EXPECT_NE(status.message().find("not a known call"), std::string::npos) << status.ToString();
  }
  WriteHeader(capsule::kReplyMagic, 1, 0);
  capsule::CoreRequest request;
  bool end = false;
  EXPECT_EQ(capsule::ReadRequest(reader(), limits_, &request, &end).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(FrameTest, TruncatedPayloadIsRejected) {
  WriteHeader(capsule::kRequestMagic, 2, 100);
  std::vector<uint8_t> half(50, 7);
  WriteRaw(half.data(), half.size());
  CloseWriter();
  capsule::CoreRequest request;
  bool end = false;
  Status status = capsule::ReadRequest(reader(), limits_, &request, &end);
  EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status.ToString();
  EXPECT_FALSE(end);
}

TEST_F(FrameTest, TruncatedHeaderIsRejected) {
  WriteRaw("MLCQ\x01\0\0\0", 8);
  CloseWriter();
  capsule::CoreRequest request;
  bool end = false;
  Status status = capsule::ReadRequest(reader(), limits_, &request, &end);
  EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status.ToString();
  EXPECT_FALSE(end);
}

TEST_F(FrameTest, RepliesCarryOutputSealedStateOrAnError) {
  std::vector<uint8_t> output = {1, 2, 3}, sealed = {9, 8};
  ASSERT_TRUE(capsule::WriteReply(writer(), Status::Ok(), output, sealed).ok());
  ASSERT_TRUE(
      capsule::WriteReply(writer(), FailedPrecondition("no capsule is open"), output, sealed).ok());
  capsule::CoreReply reply;
  ASSERT_TRUE(capsule::ReadReply(reader(), &reply).ok());
  EXPECT_TRUE(reply.status.ok());
  EXPECT_EQ(reply.output, output);
  EXPECT_EQ(reply.sealed, sealed);
  ASSERT_TRUE(capsule::ReadReply(reader(), &reply).ok());
  EXPECT_EQ(reply.status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(reply.status.message(), "no capsule is open");
  EXPECT_TRUE(reply.output.empty());
  EXPECT_TRUE(reply.sealed.empty());
  CloseWriter();
  bool closed = false;
  EXPECT_EQ(capsule::ReadReply(reader(), &reply, &closed).code(), StatusCode::kDataLoss);
  EXPECT_TRUE(closed);
}

TEST_F(FrameTest, OversizedOrMalformedRepliesAreRejected) {
  uint8_t header[24] = {'M', 'L', 'C', 'R'};
  const uint64_t too_long = capsule::kMaxReplyOutputBytes + 1;
  std::memcpy(header + 8, &too_long, 8);
  WriteRaw(header, sizeof(header));
  capsule::CoreReply reply;
  EXPECT_EQ(capsule::ReadReply(reader(), &reply).code(), StatusCode::kInvalidArgument);

  uint8_t bad_code[24] = {'M', 'L', 'C', 'R', 77};
  WriteRaw(bad_code, sizeof(bad_code));
  EXPECT_EQ(capsule::ReadReply(reader(), &reply).code(), StatusCode::kInvalidArgument);

  uint8_t error_with_sealed[24] = {'M', 'L', 'C', 'R', 1};
  const uint64_t one = 1;
  std::memcpy(error_with_sealed + 16, &one, 8);
  WriteRaw(error_with_sealed, sizeof(error_with_sealed));
  EXPECT_EQ(capsule::ReadReply(reader(), &reply).code(), StatusCode::kInvalidArgument);
}

TEST_F(FrameTest, WritingToAClosedPeerIsAnErrorNotSigpipe) {
  close(fds_[1]);
  fds_[1] = socket(AF_UNIX, SOCK_STREAM, 0);  // something for TearDown to close
  Status status = capsule::WriteRequest(writer(), 1, std::vector<uint8_t>(10));
  EXPECT_EQ(status.code(), StatusCode::kIoError);
}

// ---------------------------------------------------------------------------------------------
// The real mlcapsule-core through the host's channel

std::string CoreBinary() {
  const char* dir = std::getenv("MLCAPSULE_BINARY_DIR");
  return dir != nullptr ? std::string(dir) + "/mlcapsule-core" : "";
}

pid_t PidOf(const std::string& description) {
  size_t at = description.find("pid ");
  return at == std::string::npos ? -1 : std::atoi(description.c_str() + at + 4);
}

class CoreProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CoreBinary().empty() || access(CoreBinary().c_str(), X_OK) != 0)
      GTEST_SKIP() << "mlcapsule-core not found (set MLCAPSULE_BINARY_DIR; ctest does)";
  }
  host::ProcessChannelOptions Options() const {
    host::ProcessChannelOptions options;
    options.core_binary = CoreBinary();
    options.state_dir = dir_.Sub("state");
    return options;
  }
  TempDir dir_;
};

TEST_F(CoreProcessTest, StartsConfinedAndAnswersCallsBeforeOpenWithErrors) {
  pid_t pid = -1;
  {
    auto channel = host::StartProcessChannel(Options());
    ASSERT_TRUE(channel.ok()) << channel.status().ToString();
    const std::string description = (*channel)->Describe();
    EXPECT_NE(description.find("software TEE (pid "), std::string::npos) << description;
    if (MemfdSecretAvailable()) {
      EXPECT_NE(description.find("memfd_secret"), std::string::npos);
    }
    pid = PidOf(description);
    ASSERT_GT(pid, 0);

    std::ifstream status_file("/proc/" + std::to_string(pid) + "/status");
    std::stringstream status_text;
    status_text << status_file.rdbuf();
    EXPECT_NE(status_text.str().find("Seccomp:\t2"), std::string::npos) << status_text.str();

    trusted::Reply reply;
    std::vector<uint8_t> tensors(4, 0);  // an empty tensor_list
    Status infer = (*channel)->Call(trusted::Call::kInfer, tensors, &reply);
    EXPECT_FALSE(infer.ok());
    EXPECT_TRUE(reply.output.empty());
    // The core is still there and still answers.
    Status report = (*channel)->Call(trusted::Call::kUsageReport, {}, &reply);
    EXPECT_FALSE(report.ok());
    EXPECT_EQ(kill(pid, 0), 0);
  }
  // The destructor closed the core and reaped it.
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

// The Gramine wiring outside Gramine: the core on its stdin/stdout (--stdio) with the sgx
// backend over a prepared attestation directory. Under sgx the core neither hardens itself nor
// enters seccomp (Gramine implements neither; the enclave replaces them).
TEST_F(CoreProcessTest, StdioChannelWithTheSgxBackend) {
  const std::string attestation = dir_.Sub("attestation");
  std::filesystem::create_directories(attestation + "/keys");
  std::ofstream(attestation + "/attestation_type") << "dcap\n";
  std::ofstream(attestation + "/user_report_data");
  std::ofstream(attestation + "/keys/_sgx_mrenclave") << std::string(16, '\x5a');
  host::ProcessChannelOptions options = Options();
  options.stdio = true;
  options.platform_args = {"--platform", "sgx", "--attestation-dir", attestation};
  pid_t pid = -1;
  {
    auto channel = host::StartProcessChannel(options);
    ASSERT_TRUE(channel.ok()) << channel.status().ToString();
    const std::string description = (*channel)->Describe();
    EXPECT_NE(description.find("sgx TEE (pid "), std::string::npos) << description;
    pid = PidOf(description);
    ASSERT_GT(pid, 0);
    std::ifstream status_file("/proc/" + std::to_string(pid) + "/status");
    std::stringstream status_text;
    status_text << status_file.rdbuf();
    EXPECT_NE(status_text.str().find("Seccomp:\t0"), std::string::npos) << status_text.str();
    trusted::Reply reply;
    Status report = (*channel)->Call(trusted::Call::kUsageReport, {}, &reply);
    EXPECT_FALSE(report.ok());  // no capsule open: an error, over the stdio channel
    EXPECT_EQ(kill(pid, 0), 0);
  }
  EXPECT_EQ(kill(pid, 0), -1);

  // A hostile attestation directory: the start-up error reaches the host.
  std::ofstream(attestation + "/attestation_type") << "epid\n";
  options.quiet = true;
  auto refused = host::StartProcessChannel(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("epid"), std::string::npos)
      << refused.status().ToString();
}

// The snp backend in the real core: configfs-tsm work goes to an attester process the core
// spawns before seccomp (a prepared report directory here; no SEV hardware, so the sealing key
// comes from the state directory). The attester's answers are tested in tee/cvm.
TEST_F(CoreProcessTest, SnpBackendSpawnsItsAttesterBeforeSeccomp) {
  const std::string root = dir_.Sub("tsm");
  std::filesystem::create_directories(root + "/entry");
  std::ofstream(root + "/entry/provider") << "sev_guest\n";
  host::ProcessChannelOptions options = Options();
  options.platform_args = {"--platform",         "snp",   "--tsm-root",  root,
                           "--tsm-entry",        "entry", "--sev-guest", dir_.Sub("no-sev-guest"),
                           "--snp-seal-key-file"};
  {
    auto channel = host::StartProcessChannel(options);
    ASSERT_TRUE(channel.ok()) << channel.status().ToString();
    const std::string description = (*channel)->Describe();
    EXPECT_NE(description.find("snp TEE (pid "), std::string::npos) << description;
    const pid_t pid = PidOf(description);
    ASSERT_GT(pid, 0);
    std::ifstream status_file("/proc/" + std::to_string(pid) + "/status");
    std::stringstream status_text;
    status_text << status_file.rdbuf();
    EXPECT_NE(status_text.str().find("Seccomp:\t2"), std::string::npos) << status_text.str();
    // The attester is the core's child.
    std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) +
                           "/children");
    pid_t child = 0;
    EXPECT_TRUE(children >> child) << "the core has no attester child";
  }
}

TEST_F(CoreProcessTest, UnknownBackendIsAUsageError) {
  host::ProcessChannelOptions options = Options();
  options.quiet = true;
  options.platform_args = {"--platform", "enclave9000"};
  auto refused = host::StartProcessChannel(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("exited with status 2"), std::string::npos)
      << refused.status().ToString();
}

TEST_F(CoreProcessTest, OverlongInputIsRefusedAndTheDeadCoreIsReported) {
  host::ProcessChannelOptions options = Options();
  options.quiet = true;  // the core's own message on stderr is expected here
  auto channel = host::StartProcessChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status().ToString();
  trusted::Reply reply;
  std::vector<uint8_t> nonce(trusted::kMaxEvidenceInputBytes + 1);
  Status status = (*channel)->Call(trusted::Call::kEvidence, nonce, &reply);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("over the limit"), std::string::npos) << status.ToString();
  // A protocol error ends the core (exit status 4); the next call says so.
  Status next = (*channel)->Call(trusted::Call::kUsageReport, {}, &reply);
  ASSERT_FALSE(next.ok());
  EXPECT_NE(next.message().find("exited with status 4"), std::string::npos) << next.ToString();
}

TEST_F(CoreProcessTest, KilledCoreIsReportedWithItsSignal) {
  auto channel = host::StartProcessChannel(Options());
  ASSERT_TRUE(channel.ok()) << channel.status().ToString();
  const pid_t pid = PidOf((*channel)->Describe());
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  trusted::Reply reply;
  Status status = (*channel)->Call(trusted::Call::kUsageReport, {}, &reply);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("killed by signal 9"), std::string::npos) << status.ToString();
}

TEST_F(CoreProcessTest, StartUpErrorsReachTheHost) {
  {
    auto first = host::StartProcessChannel(Options());
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    host::ProcessChannelOptions options = Options();
    options.quiet = true;
    auto second = host::StartProcessChannel(options);
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.status().message().find("in use by another"), std::string::npos)
        << second.status().ToString();
  }
  ASSERT_EQ(chmod(dir_.Sub("state/core-seal.key").c_str(), 0644), 0);
  host::ProcessChannelOptions options = Options();
  options.quiet = true;
  auto refused = host::StartProcessChannel(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().ToString();
}

TEST_F(CoreProcessTest, MissingBinaryNamesWhereItLooked) {
  host::ProcessChannelOptions options = Options();
  options.core_binary = dir_.Sub("no-such-core");
  auto channel = host::StartProcessChannel(options);
  ASSERT_FALSE(channel.ok());
  EXPECT_EQ(channel.status().code(), StatusCode::kNotFound);
  EXPECT_NE(channel.status().message().find("no-such-core"), std::string::npos);
  // Without an explicit path it looks beside this test binary, where there is no core.
  options.core_binary.clear();
  channel = host::StartProcessChannel(options);
  ASSERT_FALSE(channel.ok());
  EXPECT_NE(channel.status().message().find("/mlcapsule-core"), std::string::npos)
      << channel.status().ToString();
}

}  // namespace
}  // namespace mlcapsule::tee
