// The fd TCTI against a fake TPM on the other end of a socketpair: framing, the response size
// bound, truncation, timeouts, and device spec parsing. No TPM needed.
#include "tee/tpm/fd_tcti.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <optional>
#include <span>
#include <vector>

namespace mlcapsule::tee {
namespace {

// A TPM2_GetRandom(8) command.
constexpr std::array<uint8_t, 12> kCommand = {0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8};

std::vector<uint8_t> Response(uint32_t size_field, size_t actual_bytes) {
  std::vector<uint8_t> response(actual_bytes, 0xAB);
  const uint8_t header[10] = {0x80,
                              0x01,
                              static_cast<uint8_t>(size_field >> 24),
                              static_cast<uint8_t>(size_field >> 16),
                              static_cast<uint8_t>(size_field >> 8),
                              static_cast<uint8_t>(size_field),
                              0,
                              0,
                              0,
                              0};
  for (size_t i = 0; i < 10 && i < actual_bytes; ++i) response[i] = header[i];
  return response;
}

class FdTctiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    tcti_.emplace(FdTcti::Adopt(fds[0], "fake-tpm", /*response_timeout_ms=*/300));
    peer_ = fds[1];
  }
  void TearDown() override {
    if (peer_ >= 0) close(peer_);
  }
  void Send(std::span<const uint8_t> bytes) {
    ASSERT_EQ(write(peer_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  // Transmits kCommand and checks the peer got it.
  void TransmitCommand() {
    ASSERT_EQ(Tss2_Tcti_Transmit(tcti_->context(), kCommand.size(), kCommand.data()),
              TSS2_RC_SUCCESS);
    std::array<uint8_t, kCommand.size()> got{};
    ASSERT_EQ(read(peer_, got.data(), got.size()), static_cast<ssize_t>(got.size()));
    EXPECT_EQ(got, kCommand);
  }

  std::optional<FdTcti> tcti_;
  int peer_ = -1;
};

TEST_F(FdTctiTest, ReceivesAWholeResponseInTwoSteps) {
  TransmitCommand();
  const std::vector<uint8_t> response = Response(20, 20);
  Send(response);
  size_t size = 0;
  // tss2's SAPI first asks for the size with a null buffer.
  ASSERT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, nullptr, TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_RC_SUCCESS);
  EXPECT_EQ(size, 20u);
  std::array<uint8_t, 4096> buffer{};
  size = 12;  // too small: told the size, nothing lost
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_TCTI_RC_INSUFFICIENT_BUFFER);
  EXPECT_EQ(size, 20u);
  size = buffer.size();
  ASSERT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_RC_SUCCESS);
  ASSERT_EQ(size, 20u);
  EXPECT_TRUE(std::equal(response.begin(), response.end(), buffer.begin()));
  EXPECT_FALSE(tcti_->broken());
  // And the next command works.
  TransmitCommand();
}

TEST_F(FdTctiTest, RefusesAnOversizeSizeField) {
  TransmitCommand();
  Send(Response(5000, 10));
  std::array<uint8_t, 4096> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_TCTI_RC_MALFORMED_RESPONSE);
  EXPECT_TRUE(tcti_->broken());
  EXPECT_NE(tcti_->last_error().find("announced a response of 5000 bytes"), std::string::npos)
      << tcti_->last_error();
  // Broken for good: no resynchronisation on a stream that lost its framing.
  EXPECT_EQ(Tss2_Tcti_Transmit(tcti_->context(), kCommand.size(), kCommand.data()),
            TSS2_TCTI_RC_IO_ERROR);
}

TEST_F(FdTctiTest, RefusesAnUndersizeSizeField) {
  TransmitCommand();
  Send(Response(6, 10));
  std::array<uint8_t, 64> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_TCTI_RC_MALFORMED_RESPONSE);
  EXPECT_NE(tcti_->last_error().find("announced a response of 6 bytes"), std::string::npos);
}

TEST_F(FdTctiTest, ReportsATruncatedResponse) {
  TransmitCommand();
  Send(Response(40, 25));
  close(peer_);
  peer_ = -1;
  std::array<uint8_t, 4096> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_TCTI_RC_IO_ERROR);
  EXPECT_NE(tcti_->last_error().find("closed the connection after 25 of 40 response bytes"),
            std::string::npos)
      << tcti_->last_error();
}

TEST_F(FdTctiTest, WritingToAVanishedPeerIsAnErrorNotSigpipe) {
  close(peer_);
  peer_ = -1;
  EXPECT_EQ(Tss2_Tcti_Transmit(tcti_->context(), kCommand.size(), kCommand.data()),
            TSS2_TCTI_RC_IO_ERROR);
  EXPECT_NE(tcti_->last_error().find("writing a command to the TPM at fake-tpm failed"),
            std::string::npos)
      << tcti_->last_error();
}

TEST_F(FdTctiTest, FiniteTimeoutKeepsThePartialResponse) {
  TransmitCommand();
  const std::vector<uint8_t> response = Response(16, 16);
  Send(std::span<const uint8_t>(response).first(12));
  std::array<uint8_t, 64> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), 20), TSS2_TCTI_RC_TRY_AGAIN);
  EXPECT_FALSE(tcti_->broken());
  Send(std::span<const uint8_t>(response).subspan(12));
  size = buffer.size();
  ASSERT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), 1000), TSS2_RC_SUCCESS);
  EXPECT_EQ(size, 16u);
  EXPECT_TRUE(std::equal(response.begin(), response.end(), buffer.begin()));
}

TEST_F(FdTctiTest, BlockingReceiveGivesUpAfterTheResponseTimeout) {
  TransmitCommand();
  std::array<uint8_t, 64> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), TSS2_TCTI_TIMEOUT_BLOCK),
            TSS2_TCTI_RC_IO_ERROR);
  EXPECT_NE(tcti_->last_error().find("no (complete) response within 300 ms"), std::string::npos)
      << tcti_->last_error();
}

TEST_F(FdTctiTest, RefusesProtocolMisuse) {
  std::array<uint8_t, 64> buffer{};
  size_t size = buffer.size();
  EXPECT_EQ(Tss2_Tcti_Receive(tcti_->context(), &size, buffer.data(), 10),
            TSS2_TCTI_RC_BAD_SEQUENCE);
  const std::array<uint8_t, 4> tiny = {1, 2, 3, 4};
  EXPECT_EQ(Tss2_Tcti_Transmit(tcti_->context(), tiny.size(), tiny.data()), TSS2_TCTI_RC_BAD_VALUE);
  TransmitCommand();
  // A second command before the response was read would desynchronise the stream.
  EXPECT_EQ(Tss2_Tcti_Transmit(tcti_->context(), kCommand.size(), kCommand.data()),
            TSS2_TCTI_RC_BAD_SEQUENCE);
  EXPECT_TRUE(tcti_->broken());
}

TEST(OpenTpmTransportTest, ParsesSpecs) {
  auto bad = OpenTpmTransport("swtpm:host=127.0.0.1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("neither tcp:HOST:PORT"), std::string::npos);
  auto no_port = OpenTpmTransport("tcp:127.0.0.1");
  ASSERT_FALSE(no_port.ok());
  EXPECT_NE(no_port.status().message().find("is not tcp:HOST:PORT"), std::string::npos);
  auto bad_port = OpenTpmTransport("tcp:127.0.0.1:70000");
  ASSERT_FALSE(bad_port.ok());
  EXPECT_NE(bad_port.status().message().find("port '70000' is not 1..65535"), std::string::npos);
  auto missing = OpenTpmTransport("/nonexistent/tpmrm0");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kIoError);
  EXPECT_NE(missing.status().message().find("/nonexistent/tpmrm0"), std::string::npos);
}

TEST(OpenTpmTransportTest, ConnectionRefusedNamesTheSpec) {
  // Port 1 on loopback: nothing listens there (and binding it needs privileges nobody uses).
  auto refused = OpenTpmTransport("tcp:127.0.0.1:1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kIoError);
  EXPECT_NE(refused.status().message().find("cannot connect to the TPM at tcp:127.0.0.1:1"),
            std::string::npos)
      << refused.status().message();
}

}  // namespace
}  // namespace mlcapsule::tee
