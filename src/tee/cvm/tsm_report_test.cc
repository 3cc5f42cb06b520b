// configfs-tsm (tsm_report.h) against prepared directories: the protocol's reads and writes, the
// bounds, every error naming its path, mkdir/rmdir of a real entry name, and the generation
// checks driven by a FIFO emulator that counts as the kernel does.
#include "tee/cvm/tsm_report.h"
#include "tee/cvm/cvm_test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace mlcapsule::tee::cvm {
namespace {

using namespace ::mlcapsule::tee::cvm::testing;  // NOLINT: test helpers

namespace fs = std::filesystem;

std::string AsText(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

capsule::ReportData Rd(uint8_t seed) {
  capsule::ReportData rd{};
  for (size_t i = 0; i < rd.size(); ++i) rd[i] = static_cast<uint8_t>(seed + i);
  return rd;
}

// ROOT/entry with the attributes of a sev_guest or tdx_guest entry; inblob and privlevel empty.
fs::path PrepareEntry(const std::string& root, std::string_view provider, std::string_view outblob,
                      std::optional<std::string_view> auxblob = std::string_view()) {
  const fs::path entry = fs::path(root) / "entry";
  fs::create_directories(entry);
  WriteFile(entry / "provider", std::string(provider) + "\n");
  WriteFile(entry / "generation", "0\n");
  WriteFile(entry / "privlevel_floor", "0\n");
  WriteFile(entry / "privlevel", "");
  WriteFile(entry / "inblob", "");
  WriteFile(entry / "outblob", outblob);
  if (auxblob.has_value()) WriteFile(entry / "auxblob", *auxblob);
  return entry;
}

TsmOptions Prepared(const std::string& root) {
  TsmOptions options;
  options.root = root;
  options.entry_name = "entry";
  return options;
}

TEST(TsmReport, PreparedSnpEntry) {
  TempDir root;
  const fs::path entry = PrepareEntry(root.path(), "sev_guest", "REPORT", "CERTS");
  const capsule::ReportData rd = Rd(7);
  Result<TsmBlobs> blobs = RequestTsmReport(Prepared(root.path()), kProviderSevGuest, rd, 0);
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(AsText(blobs->outblob), "REPORT");
  EXPECT_EQ(AsText(blobs->auxblob), "CERTS");
  EXPECT_EQ(ReadText(entry / "inblob"), std::string(rd.begin(), rd.end()));
  EXPECT_EQ(ReadText(entry / "privlevel"), "0\n");
  EXPECT_TRUE(fs::exists(entry)) << "a prepared entry belongs to the caller";
}

TEST(TsmReport, PreparedTdxEntryWritesNoPrivlevelAndMayLackAuxblob) {
  TempDir root;
  const fs::path entry = PrepareEntry(root.path(), "tdx_guest", "QUOTE", std::nullopt);
  Result<TsmBlobs> blobs =
      RequestTsmReport(Prepared(root.path()), kProviderTdxGuest, Rd(1), std::nullopt);
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(AsText(blobs->outblob), "QUOTE");
  EXPECT_TRUE(blobs->auxblob.empty());
  EXPECT_EQ(ReadText(entry / "privlevel"), "");
}

TEST(TsmReport, WrongProvider) {
  TempDir root;
  PrepareEntry(root.path(), "tdx_guest", "QUOTE");
  ExpectError(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kFailedPrecondition, "is 'tdx_guest', not 'sev_guest'");
  const fs::path entry = PrepareEntry(root.path(), "sev_guest\x01", "QUOTE");
  ExpectError(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kFailedPrecondition, "'sev_guest\\x01'");
  EXPECT_EQ(ReadText(entry / "inblob"), "") << "nothing is written for the wrong provider";
}

TEST(TsmReport, NoConfigfsIsUnavailable) {
  TempDir dir;
  TsmOptions options;
  options.root = dir.path() + "/missing/tsm/report";
  Result<TsmBlobs> blobs = RequestTsmReport(options, kProviderTdxGuest, Rd(1), std::nullopt);
  ExpectError(blobs.status(), StatusCode::kUnavailable, options.root);
  EXPECT_NE(blobs.status().message().find("No such file or directory"), std::string::npos);
  EXPECT_TRUE(IsNoTsmProvider(blobs.status()));

  // A root that is a file: mkdir under it fails with ENOTDIR, also "no provider".
  WriteFile(fs::path(dir.path()) / "file", "x");
  options.root = dir.path() + "/file";
  blobs = RequestTsmReport(options, kProviderSevGuest, Rd(1), 0);
  ExpectError(blobs.status(), StatusCode::kUnavailable, "Not a directory");
  EXPECT_TRUE(IsNoTsmProvider(blobs.status()));

  options.root = dir.path();
  options.entry_name = "absent";
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kUnavailable, "the prepared entry");
  EXPECT_FALSE(IsNoTsmProvider(IoError("no configfs-tsm provider")));
}

TEST(TsmReport, MakesAndRemovesItsOwnEntry) {
  // Without entry_name the code makes mlcapsule-<pid>-<hex> as on configfs; a plain directory
  // has no attributes, so the provider read fails, naming the path, and the entry is removed.
  TempDir root;
  Result<TsmBlobs> blobs =
      RequestTsmReport(TsmOptions{root.path(), ""}, kProviderSevGuest, Rd(1), 0);
  ExpectError(blobs.status(), StatusCode::kNotFound, "/mlcapsule-" + std::to_string(getpid()));
  EXPECT_NE(blobs.status().message().find("/provider"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(root.path())) << "the entry was not removed";
}

TEST(TsmReport, PrivlevelChecks) {
  TempDir root;
  const fs::path entry = PrepareEntry(root.path(), "sev_guest", "REPORT");
  WriteFile(entry / "privlevel_floor", "2\n");
  ExpectError(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 1).status(),
              StatusCode::kFailedPrecondition, "privlevel 1 is below the provider's floor 2");
  ASSERT_TRUE(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 2).ok());
  EXPECT_EQ(ReadText(entry / "privlevel"), "2\n");
  ExpectError(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 4).status(),
              StatusCode::kInvalidArgument, "privlevel 4 is out of range 0..3");
  fs::remove(entry / "privlevel_floor");
  ExpectError(RequestTsmReport(Prepared(root.path()), kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kNotFound, "privlevel_floor");
}

TEST(TsmReport, MalformedAttributes) {
  TempDir root;
  const fs::path entry = PrepareEntry(root.path(), "sev_guest", "REPORT");
  const TsmOptions options = Prepared(root.path());

  WriteFile(entry / "generation", "12a\n");
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "generation holds '12a', not a decimal number");
  WriteFile(entry / "generation", std::string(100, '1'));
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "generation holds more than 64 bytes");
  WriteFile(entry / "generation", "0\n");

  WriteFile(entry / "outblob", "");
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "outblob is empty");
  WriteFile(entry / "outblob", std::string(kMaxOutblobBytes + 1, 'x'));
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "outblob holds more than 32768 bytes");
  WriteFile(entry / "outblob", std::string(kMaxOutblobBytes, 'x'));
  EXPECT_TRUE(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).ok()) << "the limit itself";

  WriteFile(entry / "auxblob", std::string(kMaxAuxblobBytes + 1, 'x'));
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "auxblob holds more than 32768 bytes");
  fs::remove(entry / "auxblob");
  fs::create_directory(entry / "auxblob");
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
              StatusCode::kInvalidArgument, "auxblob is not a configfs attribute");
  fs::remove(entry / "auxblob");

  fs::remove(entry / "inblob");
  ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(), StatusCode::kIoError,
              "inblob for writing: No such file or directory");
  WriteFile(entry / "inblob", "");
  chmod((entry / "inblob").c_str(), 0400);
  if (geteuid() != 0) {  // root writes anyway
    ExpectError(RequestTsmReport(options, kProviderSevGuest, Rd(1), 0).status(),
                StatusCode::kIoError, "Permission denied");
  }
}

// --- the FIFO emulator: ROOT/entry/generation counts like the kernel's ---

// `generation` is a FIFO the test holds open read-write (so it never blocks and always has a
// writer) with one line per value the entry will show, in order: each read of the protocol takes
// exactly one line. Sentinel lines after them show a reader that read too often, and the lines
// left over after the request say how many it read.
class GenerationFifo : public ::testing::Test {
 protected:
  static constexpr std::string_view kSentinel = "999\n";
  void SetUp() override {
    entry_ = PrepareEntry(root_.path(), "sev_guest", "REPORT", "CERTS");
    const fs::path generation = entry_ / "generation";
    fs::remove(generation);
    ASSERT_EQ(mkfifo(generation.c_str(), 0600), 0);
    fd_ = open(generation.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
  }
  // Runs one request with `values` in the FIFO; *reads: how many lines it took.
  Result<TsmBlobs> Request(const std::vector<std::string>& values, int* reads) {
    std::string lines;
    for (const std::string& value : values) lines += value + "\n";
    for (int i = 0; i < 3; ++i) lines += kSentinel;
    EXPECT_EQ(write(fd_, lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
    Result<TsmBlobs> blobs = RequestTsmReport(Prepared(root_.path()), kProviderSevGuest, Rd(3), 0);
    char left[256];
    const ssize_t n = read(fd_, left, sizeof(left));
    const std::string rest(left, n > 0 ? static_cast<size_t>(n) : 0);
    *reads = static_cast<int>(values.size()) + 3 -
             static_cast<int>(std::count(rest.begin(), rest.end(), '\n'));
    return blobs;
  }
  TempDir root_;
  fs::path entry_;
  int fd_ = -1;
};

TEST_F(GenerationFifo, OneWriteOneGeneration) {
  int reads = 0;
  Result<TsmBlobs> blobs = Request({"7", "8", "8"}, &reads);
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(AsText(blobs->outblob), "REPORT");
  EXPECT_EQ(reads, 3);
}

TEST_F(GenerationFifo, RaceThenCleanRetry) {
  int reads = 0;
  Result<TsmBlobs> blobs = Request({"0", "1", "2", "3", "4", "4"}, &reads);
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(reads, 6);
}

TEST_F(GenerationFifo, AnotherWriterTwiceIsAborted) {
  int reads = 0;
  Result<TsmBlobs> blobs = Request({"0", "1", "2", "5", "6", "7"}, &reads);
  ExpectError(blobs.status(), StatusCode::kAborted,
              "configfs-tsm: entry changed by another writer (generation 0->1->2, and 5->6->7 on "
              "the retry");
  EXPECT_EQ(reads, 6);
}

TEST_F(GenerationFifo, SilentlyRefusedWriteIsAborted) {
  // configfs ignores a refused inblob write (-EBUSY): only the unchanged generation shows it.
  int reads = 0;
  Result<TsmBlobs> blobs = Request({"4", "4", "4", "4", "4", "4"}, &reads);
  ExpectError(blobs.status(), StatusCode::kAborted, "generation 4->4->4, and 4->4->4");
  EXPECT_EQ(reads, 6);
}

TEST(TsmReport, OutblobIsReadAfterInblobIsClosed) {
  // outblob as a FIFO whose writer answers from what inblob holds when outblob is opened: the
  // platform's report data must be in place by then (written and closed).
  TempDir root;
  const fs::path entry = PrepareEntry(root.path(), "tdx_guest", "");
  fs::remove(entry / "outblob");
  ASSERT_EQ(mkfifo((entry / "outblob").c_str(), 0600), 0);
  std::string answered;
  std::thread emulator([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int fd = -1;
    while ((fd = open((entry / "outblob").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
      if (std::chrono::steady_clock::now() > deadline) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    answered = "quote for " + capsule::ToHex(AsBytes(ReadText(entry / "inblob")));
    (void)!write(fd, answered.data(), answered.size());
    close(fd);
  });
  const capsule::ReportData rd = Rd(9);
  Result<TsmBlobs> blobs =
      RequestTsmReport(Prepared(root.path()), kProviderTdxGuest, rd, std::nullopt);
  emulator.join();
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(AsText(blobs->outblob), "quote for " + capsule::ToHex(rd));
}

}  // namespace
}  // namespace mlcapsule::tee::cvm
