// In-process channel for tests (in_process_channel.h): copies each input once, as the process
// transport does, then calls the boundary directly.
#include "host/in_process_channel.h"

#include <vector>

namespace mlcapsule::host {
namespace {

class InProcessChannel : public CoreChannel {
 public:
  explicit InProcessChannel(trusted::TestPlatform* platform) : boundary_(platform) {}
  Status Call(trusted::Call call, std::span<const uint8_t> input, trusted::Reply* reply) override {
    copy_.assign(input.begin(), input.end());
    return boundary_.Call(call, copy_, reply);
  }
  std::string Describe() const override { return "in-process (INSECURE, tests only)"; }

 private:
  trusted::Boundary boundary_;
  std::vector<uint8_t> copy_;
};

}  // namespace

std::unique_ptr<CoreChannel> MakeInProcessChannelForTests(trusted::TestPlatform* platform) {
  return std::make_unique<InProcessChannel>(platform);
}

}  // namespace mlcapsule::host
