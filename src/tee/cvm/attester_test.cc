// The attester (attester.h). This binary is its own helper: started with --attester, its main()
// runs AttesterMain exactly as mlcapsule-core's will, so SpawnAttester("/proc/self/exe", ...)
// exercises the production spawn, socket and framing. Hostile or dying helpers are forked
// children speaking the frame format by hand. The vector tests skip when the vectors are absent.
#include "tee/cvm/attester.h"
#include "tee/cvm/cvm_test_util.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "base/bytes.h"
#include "capsule/policy.h"
#include "server/evidence/evidence.h"
#include "tee/cvm/snp_platform.h"
#include "tee/cvm/tdx_platform.h"

namespace mlcapsule::tee::cvm {
namespace {

using namespace ::mlcapsule::tee::cvm::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;
namespace evidence = server::evidence;

constexpr int64_t kNow = 1751328000;

// A prepared configfs-tsm entry at ROOT/entry.
void PrepareEntry(const std::string& root, std::string_view provider,
                  std::span<const uint8_t> outblob, std::span<const uint8_t> auxblob) {
  const fs::path entry = fs::path(root) / "entry";
  fs::create_directories(entry);
  WriteFile(entry / "provider", std::string(provider) + "\n");
  WriteFile(entry / "generation", "0\n");
  WriteFile(entry / "privlevel_floor", "0\n");
  WriteFile(entry / "privlevel", "");
  WriteFile(entry / "inblob", "");
  WriteFile(entry / "outblob", outblob);
  WriteFile(entry / "auxblob", auxblob);
}

ReporterOptions Reporter(CvmKind kind, const std::string& root) {
  ReporterOptions options;
  options.kind = kind;
  options.tsm.root = root;
  options.tsm.entry_name = "entry";
  options.sev_guest_device = root + "/no-sev-guest";
  return options;
}

Result<std::unique_ptr<AttesterClient>> Spawn(const ReporterOptions& options) {
  return SpawnAttester("/proc/self/exe", AttesterArguments(options), std::chrono::seconds(20));
}

bool HaveVectors() {
  return !VectorsDir().empty() && fs::exists(VectorsDir() / "go-sev-guest_snp_attestation.bin");
}
#define REQUIRE_VECTORS()                                                                  \
  if (!HaveVectors())                                                                      \
  GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS); run through " \
                  "ctest with ../shared/attest-vectors present"

TEST(Attester, Arguments) {
  ReporterOptions options;
  options.kind = CvmKind::kTdx;
  options.vmpl = 2;
  EXPECT_EQ(
      AttesterArguments(options),
      (std::vector<std::string>{"--attester", "tdx", "--tsm-root", "/sys/kernel/config/tsm/report",
                                "--sev-guest", "/dev/sev-guest", "--vmpl", "2"}));
  options.tsm.entry_name = "e";
  EXPECT_EQ(AttesterArguments(options).back(), "e");
  char arg0[] = "core", arg1[] = "--attester", arg2[] = "--fd";
  char* attester[] = {arg0, arg1, nullptr};
  char* core[] = {arg0, arg2, nullptr};
  EXPECT_TRUE(IsAttesterInvocation(2, attester));
  EXPECT_FALSE(IsAttesterInvocation(2, core));
  EXPECT_FALSE(IsAttesterInvocation(1, attester));
}

TEST(Attester, SnpVectorThroughTheSpawnedHelper) {
  REQUIRE_VECTORS();
  TempDir root, state;
  const std::vector<uint8_t> report = ReadBytes(VectorsDir() / "go-sev-guest_snp_attestation.bin");
  const std::vector<uint8_t> vcek = ReadBytes(VectorsDir() / "go-sev-guest_vcek_milan.der");
  const std::vector<std::pair<Guid, std::vector<uint8_t>>> certificates = {{kVcekGuid, vcek}};
  PrepareEntry(root.path(), "sev_guest", report, BuildCertTable(certificates));
  capsule::ReportData rd{};
  std::memcpy(rd.data(), report.data() + kSnpReportDataOffset, rd.size());

  Result<std::unique_ptr<AttesterClient>> attester = Spawn(Reporter(CvmKind::kSnp, root.path()));
  ASSERT_TRUE(attester.ok()) << attester.status().ToString();
  const pid_t pid = (*attester)->pid();
  EXPECT_GT(pid, 0);
  SnpPlatformOptions options;
  options.state_dir = state.path() + "/state";
  options.sev_guest_device = state.path() + "/no-sev-guest";
  options.seal_key_file_fallback = true;
  options.reporter = std::move(attester).value();
  Result<std::unique_ptr<SnpPlatform>> platform = SnpPlatform::Create(std::move(options));
  ASSERT_TRUE(platform.ok()) << platform.status().ToString();

  for (int round = 0; round < 3; ++round) {  // one helper, many requests
    Result<std::vector<uint8_t>> ev = (*platform)->Evidence(rd);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
    Result<evidence::Verdict> verdict =
        verifier.Verify(capsule::EvidenceType::kSnp, *ev, nullptr, kNow);
    ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
    capsule::Policy policy;
    policy.tee.accept = {"snp"};
    policy.tee.allow_debug = true;
    EXPECT_TRUE(evidence::CheckPolicy(*verdict,
                                      evidence::PolicyFor(policy, capsule::EvidenceType::kSnp), &rd)
                    .ok());
  }
  EXPECT_EQ(ReadBytes(fs::path(root.path()) / "entry" / "inblob"),
            std::vector<uint8_t>(rd.begin(), rd.end()));

  // The helper's errors come back with their code; it keeps serving.
  WriteFile(fs::path(root.path()) / "entry" / "provider", "tdx_guest\n");
  ExpectError((*platform)->Evidence(rd).status(), StatusCode::kFailedPrecondition,
              "attester: the configfs-tsm provider");
  WriteFile(fs::path(root.path()) / "entry" / "provider", "sev_guest\n");
  capsule::ReportData other = rd;
  other[5] = 0xFF;
  ExpectError((*platform)->Evidence(other).status(), StatusCode::kInvalidArgument,
              "REPORT_DATA in the SNP report");
  EXPECT_TRUE((*platform)->Evidence(rd).ok());

  platform->reset();  // closes the socket: the helper exits and is reaped
  EXPECT_EQ(kill(pid, 0), -1) << "the helper outlived its client";
}

TEST(Attester, TdxVectorThroughTheSpawnedHelper) {
  REQUIRE_VECTORS();
  TempDir root, state;
  const std::vector<uint8_t> quote = ReadBytes(VectorsDir() / "dcap-qvl_tdx_quote_v4.bin");
  PrepareEntry(root.path(), "tdx_guest", quote, {});
  capsule::ReportData rd{};
  std::memcpy(rd.data(), quote.data() + kTdxQuoteReportDataOffset, rd.size());
  Result<std::unique_ptr<AttesterClient>> attester = Spawn(Reporter(CvmKind::kTdx, root.path()));
  ASSERT_TRUE(attester.ok()) << attester.status().ToString();
  TdxPlatformOptions options;
  options.state_dir = state.path() + "/state";
  options.reporter = std::move(attester).value();
  Result<std::unique_ptr<TdxPlatform>> platform = TdxPlatform::Create(std::move(options));
  ASSERT_TRUE(platform.ok()) << platform.status().ToString();
  Result<std::vector<uint8_t>> ev = (*platform)->Evidence(rd);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  Result<evidence::IntelCollateral> collateral =
      evidence::ParseIntelCollateral(ReadText(VectorsDir() / "dcap-qvl_tdx_quote_collateral.json"));
  ASSERT_TRUE(collateral.ok());
  evidence::Verifier verifier(evidence::TrustAnchors::Pinned());
  Result<evidence::Verdict> verdict =
      verifier.Verify(capsule::EvidenceType::kTdx, *ev, &*collateral, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  capsule::Policy policy;
  policy.tee.accept = {"tdx"};
  EXPECT_TRUE(
      evidence::CheckPolicy(*verdict, evidence::PolicyFor(policy, capsule::EvidenceType::kTdx), &rd)
          .ok());
}

TEST(Attester, KilledHelperIsUnavailableAndTheCallerLives) {
  TempDir root, state;
  PrepareEntry(root.path(), "tdx_guest", AsBytes("quote"), {});
  Result<std::unique_ptr<AttesterClient>> attester = Spawn(Reporter(CvmKind::kTdx, root.path()));
  ASSERT_TRUE(attester.ok()) << attester.status().ToString();
  const pid_t pid = (*attester)->pid();
  TdxPlatformOptions options;
  options.state_dir = state.path() + "/state";
  options.reporter = std::move(attester).value();
  Result<std::unique_ptr<TdxPlatform>> platform = TdxPlatform::Create(std::move(options));
  ASSERT_TRUE(platform.ok()) << platform.status().ToString();
  capsule::ReportData rd{};
  // The helper answers (a quote too short to pass the platform's check): it is alive.
  ExpectError((*platform)->Evidence(rd).status(), StatusCode::kInvalidArgument,
              "the TDX quote is 5 bytes");
  ASSERT_TRUE((*platform)->IncrementCounter().ok());

  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ExpectError((*platform)->Evidence(rd).status(), StatusCode::kUnavailable,
              "the attester (pid " + std::to_string(pid) + ")");
  ExpectError((*platform)->Evidence(rd).status(), StatusCode::kUnavailable,
              "no more reports until the core restarts");
  EXPECT_EQ(*(*platform)->ReadCounter(), 1u);
  EXPECT_EQ(*(*platform)->IncrementCounter(), 2u) << "the platform keeps working";
}

TEST(Attester, HelperThatCannotStart) {
  ExpectError(SpawnAttester("/proc/self/exe", {"--attester", "sgx"}).status(),
              StatusCode::kInvalidArgument, "must start with --attester snp|tdx");
  ExpectError(SpawnAttester("/nonexistent/mlcapsule-core", {"--attester", "snp"}).status(),
              StatusCode::kIoError, "cannot start the attester /nonexistent/mlcapsule-core");
  // A usage error: the helper exits before its hello.
  ExpectError(SpawnAttester("/proc/self/exe", {"--attester", "snp", "--bogus", "1"},
                            std::chrono::seconds(20))
                  .status(),
              StatusCode::kUnavailable, "the attester did not start");
}

// --- hand-made helpers on a socketpair ---

// Forks a child that runs `body` on its end of a socketpair, then _exits with what it returns.
struct Child {
  pid_t pid = -1;
  int fd = -1;  // the parent's end
};
Child Fork(std::function<int(int fd)> body) {
  int sockets[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    close(sockets[0]);
    _exit(body(sockets[1]));
  }
  close(sockets[1]);
  return {pid, sockets[0]};
}

void Send(int fd, std::span<const uint8_t> bytes) { (void)!write(fd, bytes.data(), bytes.size()); }
void SendHello(int fd, CvmKind kind) {
  const std::string hello = std::string(kAttesterHelloPrefix) + CvmKindName(kind);
  ByteWriter writer;
  writer.Pod<uint32_t>(0);
  writer.Str(hello);
  writer.Pod<uint32_t>(0);
  Send(fd, writer.span());
}
bool ReadRequest(int fd) {
  uint8_t frame[kAttesterRequestBytes];
  size_t done = 0;
  while (done < sizeof(frame)) {
    const ssize_t n = read(fd, frame + done, sizeof(frame) - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A client on a forked helper that says hello and then does `after_hello`.
std::unique_ptr<AttesterClient> Hostile(std::function<void(int fd)> after_hello,
                                        std::chrono::seconds timeout = std::chrono::seconds(20)) {
  Child child = Fork([after_hello](int fd) {
    SendHello(fd, CvmKind::kSnp);
    after_hello(fd);
    return 0;
  });
  auto client = std::make_unique<AttesterClient>(child.fd, child.pid, CvmKind::kSnp, timeout);
  EXPECT_TRUE(client->ReadHello().ok());
  return client;
}

TEST(AttesterClient, DiesMidAnswer) {
  auto client = Hostile([](int fd) {
    if (!ReadRequest(fd)) return;
    ByteWriter writer;
    writer.Pod<uint32_t>(0);
    writer.Pod<uint32_t>(1184);
    writer.Bytes(std::vector<uint8_t>(100, 1));
    Send(fd, writer.span());
  });
  capsule::ReportData rd{};
  ExpectError(client->Request(rd).status(), StatusCode::kUnavailable,
              "closed its socket mid-answer (did it die?)");
  ExpectError(client->Request(rd).status(), StatusCode::kUnavailable,
              "no more reports until the core restarts");
}

TEST(AttesterClient, DiesBeforeAnswering) {
  auto client = Hostile([](int fd) { (void)ReadRequest(fd); });
  capsule::ReportData rd{};
  ExpectError(client->Request(rd).status(), StatusCode::kUnavailable,
              "closed its socket (it exited)");
}

TEST(AttesterClient, OversizeFramesAreRefusedBeforeAllocation) {
  struct Case {
    uint32_t code, first, second;
    std::string part;
  };
  const Case cases[] = {
      {0, 0x7FFFFFFF, 0,
       "sent an oversize frame: outblob length 2147483647 is over the limit 32768"},
      {0, 4, 32769, "sent an oversize frame: auxblob length 32769 is over the limit 32768"},
      {1, 5000, 0, "sent an oversize frame: message length 5000 is over the limit 4096"},
      {1, 2, 1, "auxblob length 1 is over the limit 0"},
      {99, 0, 0, "sent an unknown status code 99"},
  };
  for (const Case& test : cases) {
    SCOPED_TRACE(test.part);
    auto client = Hostile([test](int fd) {
      if (!ReadRequest(fd)) return;
      ByteWriter writer;
      writer.Pod<uint32_t>(test.code);
      writer.Pod<uint32_t>(test.first);
      if (test.first < 64) {
        writer.Bytes(std::vector<uint8_t>(test.first, 'x'));
        writer.Pod<uint32_t>(test.second);
      }
      Send(fd, writer.span());
      (void)ReadRequest(fd);  // wait for the client to hang up
    });
    capsule::ReportData rd{};
    ExpectError(client->Request(rd).status(), StatusCode::kUnavailable, test.part);
    ExpectError(client->Request(rd).status(), StatusCode::kUnavailable, "no more reports");
  }
}

TEST(AttesterClient, SilentHelperTimesOut) {
  auto client = Hostile([](int fd) { (void)ReadRequest(fd), (void)ReadRequest(fd); },
                        std::chrono::seconds(1));
  capsule::ReportData rd{};
  ExpectError(client->Request(rd).status(), StatusCode::kUnavailable, "did not answer within 1 s");
}

TEST(AttesterClient, HelloOfAnotherKindIsRefused) {
  TempDir root;
  Child child = Fork([&](int fd) { return RunAttester(fd, Reporter(CvmKind::kSnp, root.path())); });
  AttesterClient client(child.fd, child.pid, CvmKind::kTdx, std::chrono::seconds(20));
  ExpectError(client.ReadHello(), StatusCode::kUnavailable,
              "said 'mlcapsule-attester/1 snp' instead of the hello 'mlcapsule-attester/1 tdx'");
}

TEST(RunAttester, ExitStatusAndKindCheck) {
  TempDir root;
  PrepareEntry(root.path(), "sev_guest", AsBytes("r"), {});
  Child child = Fork([&](int fd) { return RunAttester(fd, Reporter(CvmKind::kSnp, root.path())); });
  {
    // A client of the wrong kind past the hello: the helper refuses the frame and keeps going.
    AttesterClient client(dup(child.fd), -1, CvmKind::kTdx, std::chrono::seconds(20));
    uint8_t hello[8 + 24 + 4];
    ASSERT_EQ(read(child.fd, hello, sizeof(hello)), static_cast<ssize_t>(sizeof(hello)));
    capsule::ReportData rd{};
    ExpectError(client.Request(rd).status(), StatusCode::kInvalidArgument,
                "attester: the snp attester was asked for report kind 2");
    // The SNP report "r" comes back unvalidated: the attester checks nothing.
    uint8_t frame[kAttesterRequestBytes] = {1};
    Send(child.fd, frame);
    uint8_t answer[4 + 4 + 1 + 4];
    size_t done = 0;
    while (done < sizeof(answer)) {
      const ssize_t n = read(child.fd, answer + done, sizeof(answer) - done);
      ASSERT_GT(n, 0);
      done += static_cast<size_t>(n);
    }
    EXPECT_EQ(answer[0], 0);
    EXPECT_EQ(answer[4], 1);
    EXPECT_EQ(answer[8], 'r');
  }
  close(child.fd);
  int status = 0;
  ASSERT_EQ(waitpid(child.pid, &status, 0), child.pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "a clean end of stream";

  child = Fork([&](int fd) { return RunAttester(fd, Reporter(CvmKind::kSnp, root.path())); });
  Send(child.fd, AsBytes("short"));
  shutdown(child.fd, SHUT_WR);
  ASSERT_EQ(waitpid(child.pid, &status, 0), child.pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 4) << "a truncated request";
  close(child.fd);
}

}  // namespace
}  // namespace mlcapsule::tee::cvm

// As mlcapsule-core's main() will: the attester first, before anything else runs.
int main(int argc, char** argv) {
  if (mlcapsule::tee::cvm::IsAttesterInvocation(argc, argv))
    return mlcapsule::tee::cvm::AttesterMain(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
