// The SGX (Gramine) platform against prepared /dev/attestation directories (no Gramine, no SGX):
//   - the real DCAP quote vector (../shared/attest-vectors, through MLCAPSULE_ATTEST_VECTORS;
//     skipped when absent) comes back byte for byte and passes the server's verifier and policy
//     with its report data, and is refused for any other, by the policy and by the platform;
//   - a named pipe as `quote`, served by a thread that quotes exactly what the platform wrote to
//     user_report_data with the synthetic Intel PKI: the full fresh-nonce path;
//   - bad input (attestation type, key size, empty/garbage/truncated/oversized/stale quotes, a
//     missing or unwritable user_report_data, a short write): a named error, never a crash, and the
//     counter and the keys unchanged;
//   - the sealing key and the counter across restarts and hardware keys.
// The tests run as root, so no failure here relies on file permissions.
#include "tee/sgx/gramine_platform.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "base/bytes.h"
#include "capsule/policy.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/synthetic_intel.h"

namespace mlcapsule::tee {
namespace {

namespace fs = std::filesystem;
namespace evidence = server::evidence;
using capsule::EvidenceType;

constexpr int64_t kNow = 1751328000;  // 2025-07-01T00:00:00Z: inside the vectors' windows

fs::path VectorsDir() {
  const char* dir = std::getenv("MLCAPSULE_ATTEST_VECTORS");
  return dir ? fs::path(dir) : fs::path();
}

bool HaveVectors() {
  const fs::path dir = VectorsDir();
  return !dir.empty() && fs::exists(dir / "dcap-qvl_sgx_quote.bin") &&
         fs::exists(dir / "dcap-qvl_sgx_quote_collateral.json");
}

#define REQUIRE_VECTORS()                                                    \
  if (!HaveVectors())                                                        \
  GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS=" \
               << (std::getenv("MLCAPSULE_ATTEST_VECTORS")                   \
                       ? std::getenv("MLCAPSULE_ATTEST_VECTORS")             \
                       : "unset")                                            \
               << "); run through ctest with ../shared/attest-vectors present"

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<uint8_t> ReadBytes(const fs::path& path) {
  const std::string text = ReadText(path);
  return std::vector<uint8_t>(text.begin(), text.end());
}

void WriteBytes(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

void WriteText(const fs::path& path, std::string_view text) { WriteBytes(path, AsBytes(text)); }

capsule::ReportData ReportDataOf(const std::vector<uint8_t>& quote) {
  capsule::ReportData data{};
  std::memcpy(data.data(), quote.data() + kSgxQuoteReportDataOffset, data.size());
  return data;
}

capsule::ReportData Pattern(uint8_t seed) {
  capsule::ReportData data{};
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(seed + 7 * i);
  return data;
}

bool Contains(const Status& status, std::string_view part) {
  return status.message().find(part) != std::string::npos;
}

// The license server's default acceptance of SGX evidence (no allow-lists).
evidence::EvidencePolicy SgxPolicy() {
  evidence::EvidencePolicy policy;
  policy.type_accepted = true;
  policy.tcb_statuses = capsule::DefaultTcbStatuses();
  return policy;
}

// A temporary directory holding ATTEST (a prepared /dev/attestation) and STATE.
class SgxPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "mlc-sgx-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    attest_ = root_ / "attestation";
    state_ = root_ / "state";
    fs::create_directories(attest_ / "keys");
    WriteText(attest_ / "attestation_type", "dcap");
    WriteText(attest_ / "user_report_data", "");
    SetKey(std::vector<uint8_t>(kSgxHardwareKeyBytes, 0x5a));
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  void SetKey(const std::vector<uint8_t>& key) { WriteBytes(attest_ / "keys/_sgx_mrenclave", key); }
  void SetQuote(const std::vector<uint8_t>& quote) { WriteBytes(attest_ / "quote", quote); }

  GramineOptions Options() const {
    GramineOptions options;
    options.attestation_dir = attest_.string();
    options.state_dir = state_.string();
    return options;
  }

  std::unique_ptr<GraminePlatform> MustCreate() {
    Result<std::unique_ptr<GraminePlatform>> platform = GraminePlatform::Create(Options());
    EXPECT_TRUE(platform.ok()) << platform.status().message();
    return platform.ok() ? std::move(*platform) : nullptr;
  }

  capsule::ReportData WrittenReportData() const {
    const std::vector<uint8_t> bytes = ReadBytes(attest_ / "user_report_data");
    EXPECT_EQ(bytes.size(), 64u);
    capsule::ReportData data{};
    std::memcpy(data.data(), bytes.data(), std::min(bytes.size(), data.size()));
    return data;
  }

  // The counter file's bytes (empty when it does not exist).
  std::vector<uint8_t> CounterFile() const {
    const fs::path path = state_ / std::string(kCounterFileName);
    return fs::exists(path) ? ReadBytes(path) : std::vector<uint8_t>();
  }

  fs::path root_, attest_, state_;
};

// A synthetic PKI shared by the tests that need a well-formed quote without the vectors.
const evidence::testing::SyntheticIntelPki& Pki() {
  static const evidence::testing::SyntheticIntelPki* pki = [] {
    auto made = evidence::testing::SyntheticIntelPki::Create({});
    if (!made.ok()) {
      ADD_FAILURE() << made.status().message();
      std::abort();
    }
    return made->release();
  }();
  return *pki;
}

std::vector<uint8_t> SyntheticQuote(const capsule::ReportData& report_data) {
  evidence::testing::SgxEnclaveSpec enclave;
  enclave.mr_enclave.fill(0x11);
  enclave.mr_signer.fill(0x22);
  enclave.report_data = report_data;
  Result<std::vector<uint8_t>> quote = Pki().MakeSgxQuote(enclave);
  EXPECT_TRUE(quote.ok()) << quote.status().message();
  return quote.ok() ? *quote : std::vector<uint8_t>();
}

// --- the real vector (plan §2.5) ---

TEST_F(SgxPlatformTest, VectorQuoteIsReturnedAndVerifiesForItsReportDataOnly) {
  REQUIRE_VECTORS();
  const std::vector<uint8_t> vector = ReadBytes(VectorsDir() / "dcap-qvl_sgx_quote.bin");
  Result<evidence::IntelCollateral> collateral =
      evidence::ParseIntelCollateral(ReadText(VectorsDir() / "dcap-qvl_sgx_quote_collateral.json"));
  ASSERT_TRUE(collateral.ok()) << collateral.status().message();
  SetQuote(vector);
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->evidence_type(), EvidenceType::kSgx);

  const capsule::ReportData report_data = ReportDataOf(vector);
  // "Hello, world!" and 51 zero bytes (PROVENANCE.txt).
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(report_data.data()), 13), "Hello, world!");
  Result<std::vector<uint8_t>> quote = platform->Evidence(report_data);
  ASSERT_TRUE(quote.ok()) << quote.status().message();
  EXPECT_EQ(*quote, vector);
  EXPECT_EQ(WrittenReportData(), report_data);

  const evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
  Result<evidence::Verdict> verdict =
      verifier.Verify(EvidenceType::kSgx, *quote, &*collateral, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->report_data, report_data);
  const Status accepted = evidence::CheckPolicy(*verdict, SgxPolicy(), &report_data);
  EXPECT_TRUE(accepted.ok()) << accepted.message();

  // The server refuses the same quote for a fresh nonce's report data...
  capsule::ReportData other = report_data;
  other[63] ^= 1;
  const Status refused = evidence::CheckPolicy(*verdict, SgxPolicy(), &other);
  EXPECT_EQ(refused.code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(Contains(refused, "report data")) << refused.message();

  // ...and the platform already does: the directory still serves the vector's quote.
  const uint64_t counter = *platform->ReadCounter();
  Result<std::vector<uint8_t>> stale = platform->Evidence(other);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(stale.status(),
                       "the report data in the quote is not what was written to user_report_data"))
      << stale.status().message();
  EXPECT_EQ(WrittenReportData(), other);
  EXPECT_EQ(*platform->ReadCounter(), counter);
}

// --- the FIFO emulator: a quote for exactly the report data written (plan §5) ---

// Serves one quote on the named pipe `quote`: waits (at most 20 s) for the platform to open it,
// reads what the platform wrote to user_report_data, and answers with `make(report_data)`.
std::thread ServeQuote(fs::path attest,
                       std::function<std::vector<uint8_t>(const capsule::ReportData&)> make,
                       bool* served) {
  *served = false;
  return std::thread([attest = std::move(attest), make = std::move(make), served] {
    const std::string fifo = (attest / "quote").string();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int fd = -1;
    // Non-blocking: fails with ENXIO until the platform has the pipe open for reading, so a
    // platform that fails before it gets there cannot hang the test.
    while ((fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0 && errno == ENXIO &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (fd < 0) return;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    const std::vector<uint8_t> written = ReadBytes(attest / "user_report_data");
    capsule::ReportData report_data{};
    if (written.size() == report_data.size())
      std::memcpy(report_data.data(), written.data(), report_data.size());
    const std::vector<uint8_t> quote = make(report_data);
    size_t done = 0;
    while (done < quote.size()) {
      // In pieces, as a pseudo-file or a slow host may answer.
      const size_t piece = std::min<size_t>(quote.size() - done, 1000);
      const ssize_t n = write(fd, quote.data() + done, piece);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    close(fd);
    *served = done == quote.size();
  });
}

TEST_F(SgxPlatformTest, FifoQuoteForAFreshNonceVerifiesEndToEnd) {
  ASSERT_EQ(mkfifo((attest_ / "quote").c_str(), 0600), 0) << std::strerror(errno);
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  Result<evidence::IntelCollateral> collateral =
      evidence::ParseIntelCollateral(Pki().CollateralJson());
  ASSERT_TRUE(collateral.ok()) << collateral.status().message();
  const evidence::Verifier verifier(Pki().Anchors());

  capsule::ReportData previous{};
  for (int round = 0; round < 2; ++round) {
    // A fresh nonce's report data, as the core computes it from the server's nonce.
    capsule::ReportData report_data{};
    ASSERT_TRUE(platform->Random(report_data).ok());
    ASSERT_NE(report_data, previous);
    previous = report_data;
    bool served = false;
    std::thread server = ServeQuote(attest_, SyntheticQuote, &served);
    Result<std::vector<uint8_t>> quote = platform->Evidence(report_data);
    server.join();
    ASSERT_TRUE(served);
    ASSERT_TRUE(quote.ok()) << quote.status().message();
    EXPECT_EQ(ReportDataOf(*quote), report_data);

    Result<evidence::Verdict> verdict =
        verifier.Verify(EvidenceType::kSgx, *quote, &*collateral, kNow);
    ASSERT_TRUE(verdict.ok()) << verdict.status().message();
    const Status accepted = evidence::CheckPolicy(*verdict, SgxPolicy(), &report_data);
    EXPECT_TRUE(accepted.ok()) << accepted.message();
  }

  // A host that answers with a quote it made earlier, for other report data.
  bool served = false;
  std::thread server = ServeQuote(
      attest_, [](const capsule::ReportData&) { return SyntheticQuote(Pattern(9)); }, &served);
  Result<std::vector<uint8_t>> stale = platform->Evidence(Pattern(1));
  server.join();
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(stale.status(), "not what was written to user_report_data"));
}

// --- bad input: a named error, no crash, nothing lost ---

TEST_F(SgxPlatformTest, AttestationTypeMustBeDcap) {
  WriteText(attest_ / "attestation_type", "epid");
  Result<std::unique_ptr<GraminePlatform>> platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(platform.status(), "says 'epid'")) << platform.status().message();
  EXPECT_TRUE(Contains(platform.status(), "attestation_type"));
  EXPECT_FALSE(fs::exists(state_)) << "the state directory was touched before the checks passed";

  WriteText(attest_ / "attestation_type", "none\n");
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "says 'none'")) << platform.status().message();

  WriteText(attest_ / "attestation_type", std::string("dc\x01p", 4));
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "says 'dc\\x01p'")) << platform.status().message();

  WriteText(attest_ / "attestation_type", std::string(100, 'd'));
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "more than 64 bytes")) << platform.status().message();

  // Gramine's own text may end with a newline.
  WriteText(attest_ / "attestation_type", " dcap\n");
  EXPECT_TRUE(GraminePlatform::Create(Options()).ok());
}

TEST_F(SgxPlatformTest, HardwareKeyMustBe16Bytes) {
  SetKey(std::vector<uint8_t>(15, 1));
  Result<std::unique_ptr<GraminePlatform>> platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(platform.status(), "_sgx_mrenclave has 15 bytes, expected 16"))
      << platform.status().message();
  EXPECT_FALSE(fs::exists(state_));

  SetKey(std::vector<uint8_t>(4096, 1));
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "has more than 16 bytes")) << platform.status().message();

  SetKey({});
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "has 0 bytes")) << platform.status().message();

  fs::remove(attest_ / "keys/_sgx_mrenclave");
  platform = GraminePlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(platform.status(), "keys/_sgx_mrenclave: No such file or directory"))
      << platform.status().message();
  EXPECT_FALSE(fs::exists(state_));
}

TEST_F(SgxPlatformTest, NoAttestationDeviceOrStateDirectory) {
  GramineOptions options = Options();
  options.attestation_dir = (root_ / "missing").string();
  Result<std::unique_ptr<GraminePlatform>> platform = GraminePlatform::Create(options);
  ASSERT_FALSE(platform.ok());
  EXPECT_TRUE(Contains(platform.status(), "missing/attestation_type: No such file or directory"))
      << platform.status().message();
  options = Options();
  options.state_dir.clear();
  platform = GraminePlatform::Create(options);
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(platform.status(), "state directory is not set"));
}

// Each bad quote is refused with a message naming what is wrong; the counter, the keys and the
// platform itself are unaffected (a good quote afterwards works).
TEST_F(SgxPlatformTest, BadQuotesAreRefusedAndNothingIsLost) {
  const capsule::ReportData report_data = Pattern(3);
  const std::vector<uint8_t> good = SyntheticQuote(report_data);
  ASSERT_GT(good.size(), 1000u);
  SetQuote(good);
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  ASSERT_EQ(*platform->IncrementCounter(), 1u);
  const std::vector<uint8_t> counter_file = CounterFile();
  const capsule::SecretBytes sealing_key = std::move(*platform->SealingKey());

  std::vector<uint8_t> wrong_version = good;
  wrong_version[0] = 4;
  std::vector<uint8_t> wrong_key_type = good;
  wrong_key_type[2] = 3;
  std::vector<uint8_t> oversized = good;
  oversized.resize(capsule::kMaxEvidenceBytes + 1, 0);
  struct Case {
    const char* name;
    std::vector<uint8_t> quote;
    capsule::ReportData report_data;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"empty", {}, report_data, "quote is empty"},
      {"garbage", std::vector<uint8_t>(4600, 0xab), report_data, "has version 43947, expected 3"},
      {"too short", std::vector<uint8_t>(good.begin(), good.begin() + 431), report_data,
       "has 431 bytes, fewer than the 436"},
      {"truncated", std::vector<uint8_t>(good.begin(), good.end() - 1), report_data,
       "is truncated: its signature data length says"},
      {"version", wrong_version, report_data, "has version 4, expected 3"},
      {"key type", wrong_key_type, report_data, "has attestation key type 3, expected 2"},
      {"oversized", oversized, report_data, "holds more than 65536 bytes"},
      {"other report data", good, Pattern(4),
       "the report data in the quote is not what was written to user_report_data"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SetQuote(c.quote);
    Result<std::vector<uint8_t>> quote = platform->Evidence(c.report_data);
    ASSERT_FALSE(quote.ok());
    EXPECT_EQ(quote.status().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(quote.status(), c.message)) << quote.status().message();
    EXPECT_EQ(*platform->ReadCounter(), 1u);
    EXPECT_EQ(CounterFile(), counter_file);
  }

  // Trailing bytes after the signature data (a padded buffer) are the server's to judge; exactly
  // the evidence limit is still accepted.
  std::vector<uint8_t> padded = good;
  padded.resize(capsule::kMaxEvidenceBytes, 0);
  SetQuote(padded);
  Result<std::vector<uint8_t>> accepted = platform->Evidence(report_data);
  ASSERT_TRUE(accepted.ok()) << accepted.status().message();
  EXPECT_EQ(*accepted, padded);

  fs::remove(attest_ / "quote");
  Result<std::vector<uint8_t>> missing = platform->Evidence(report_data);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(missing.status(), "/quote: No such file or directory"))
      << missing.status().message();

  SetQuote(good);
  accepted = platform->Evidence(report_data);
  ASSERT_TRUE(accepted.ok()) << accepted.status().message();
  EXPECT_EQ(*accepted, good);
  EXPECT_TRUE(capsule::ConstantTimeEqual(platform->SealingKey()->span(), sealing_key.span()));
  EXPECT_EQ(*platform->IncrementCounter(), 2u);
}

TEST_F(SgxPlatformTest, UserReportDataThatCannotBeWritten) {
  const capsule::ReportData report_data = Pattern(5);
  SetQuote(SyntheticQuote(report_data));
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  const std::vector<uint8_t> counter_file = CounterFile();
  const fs::path file = attest_ / "user_report_data";

  fs::remove(file);
  Result<std::vector<uint8_t>> quote = platform->Evidence(report_data);
  ASSERT_FALSE(quote.ok());
  EXPECT_EQ(quote.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(quote.status(), "user_report_data for writing: No such file or directory"))
      << quote.status().message();

  fs::create_directory(file);
  quote = platform->Evidence(report_data);
  ASSERT_FALSE(quote.ok());
  EXPECT_TRUE(Contains(quote.status(), "user_report_data for writing: Is a directory"))
      << quote.status().message();
  fs::remove(file);

  // A device that refuses the write.
  fs::create_symlink("/dev/full", file);
  quote = platform->Evidence(report_data);
  ASSERT_FALSE(quote.ok());
  EXPECT_EQ(quote.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(quote.status(), "cannot write " + file.string() + ": No space left"))
      << quote.status().message();
  fs::remove(file);

  // A short write, made real with a file size limit of 10 bytes (in a child: the limit is
  // per process).
  WriteText(file, "");
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    signal(SIGXFSZ, SIG_IGN);
    const struct rlimit limit = {10, 10};
    setrlimit(RLIMIT_FSIZE, &limit);
    Result<std::vector<uint8_t>> result = platform->Evidence(report_data);
    const std::string message = result.ok()
                                    ? "ok"
                                    : fmt::format("{} {}", static_cast<int>(result.status().code()),
                                                  result.status().message());
    (void)!write(pipe_fds[1], message.data(), message.size());
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string message;
  char buffer[512];
  ssize_t n;
  while ((n = read(pipe_fds[0], buffer, sizeof(buffer))) > 0) message.append(buffer, n);
  close(pipe_fds[0]);
  int wait_status = 0;
  ASSERT_EQ(waitpid(pid, &wait_status, 0), pid);
  EXPECT_EQ(message, fmt::format("{} wrote 10 of 64 bytes to {}",
                                 static_cast<int>(StatusCode::kUnavailable), file.string()));

  EXPECT_EQ(CounterFile(), counter_file);
  WriteText(file, "");
  quote = platform->Evidence(report_data);
  ASSERT_TRUE(quote.ok()) << quote.status().message();
  EXPECT_EQ(WrittenReportData(), report_data);
}

TEST(CheckSgxQuote, NamesTheSourceAndAcceptsTheSyntheticLayout) {
  const capsule::ReportData report_data = Pattern(6);
  const std::vector<uint8_t> quote = SyntheticQuote(report_data);
  EXPECT_TRUE(CheckSgxQuote(quote, report_data, "Q").ok());
  EXPECT_EQ(evidence::testing::kSgxQuoteReportDataOffset, kSgxQuoteReportDataOffset);
  const Status status = CheckSgxQuote({}, report_data, "/dev/attestation/quote");
  EXPECT_EQ(status.message().rfind("/dev/attestation/quote is empty", 0), 0u) << status.message();
}

// --- the keys and the counter across restarts ---

TEST_F(SgxPlatformTest, SealingKeyFollowsTheHardwareKeyAndTheCounterPersists) {
  const std::vector<uint8_t> hardware_key(kSgxHardwareKeyBytes, 0x5a);
  capsule::SecretBytes first_key;
  {
    auto platform = MustCreate();
    ASSERT_NE(platform, nullptr);
    first_key = std::move(*platform->SealingKey());
    EXPECT_EQ(first_key.size(), 32u);
    EXPECT_EQ(*platform->ReadCounter(), 0u);
    EXPECT_EQ(*platform->IncrementCounter(), 1u);
    EXPECT_EQ(*platform->IncrementCounter(), 2u);
    EXPECT_EQ(*platform->IncrementCounter(), 3u);
    // One core per state directory.
    Result<std::unique_ptr<GraminePlatform>> second = GraminePlatform::Create(Options());
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  }
  // The derivation is fixed: keyed BLAKE2b-256(hardware key, "mlcapsule/v1/sgx-seal").
  const capsule::SecretBytes expected =
      capsule::KeyedHash(capsule::SecretBytes(hardware_key.data(), hardware_key.size()),
                         {AsBytes("mlcapsule/v1/sgx-seal")});
  EXPECT_TRUE(capsule::ConstantTimeEqual(first_key.span(), expected.span()));
  {
    auto platform = MustCreate();
    ASSERT_NE(platform, nullptr);
    EXPECT_TRUE(capsule::ConstantTimeEqual(platform->SealingKey()->span(), first_key.span()));
    EXPECT_EQ(*platform->ReadCounter(), 3u);
    EXPECT_EQ(*platform->IncrementCounter(), 4u);
  }
  {
    auto platform = MustCreate();
    ASSERT_NE(platform, nullptr);
    EXPECT_EQ(*platform->ReadCounter(), 4u);
  }

  // Another enclave (another MRENCLAVE key) derives another sealing key, and cannot take over
  // this enclave's counter: its MAC does not verify.
  std::vector<uint8_t> other_key = hardware_key;
  other_key[15] ^= 1;
  SetKey(other_key);
  const std::vector<uint8_t> counter_file = CounterFile();
  Result<std::unique_ptr<GraminePlatform>> other = GraminePlatform::Create(Options());
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(other.status(), "fails its checksum")) << other.status().message();
  EXPECT_EQ(CounterFile(), counter_file);

  GramineOptions fresh_state = Options();
  fresh_state.state_dir = (root_ / "state2").string();
  Result<std::unique_ptr<GraminePlatform>> fresh = GraminePlatform::Create(fresh_state);
  ASSERT_TRUE(fresh.ok()) << fresh.status().message();
  EXPECT_FALSE(capsule::ConstantTimeEqual((*fresh)->SealingKey()->span(), first_key.span()));
  EXPECT_EQ(*(*fresh)->ReadCounter(), 0u);
}

TEST_F(SgxPlatformTest, TimeIsTheUntrustedHostClock) {
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  const trusted::PlatformTime now = platform->Now();
  EXPECT_FALSE(now.trusted);
  EXPECT_NEAR(static_cast<double>(now.unix_seconds), static_cast<double>(std::time(nullptr)), 5);
}

}  // namespace
}  // namespace mlcapsule::tee
