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
    const std::span<const uint8_t> pieces[1] = {input};
    return CallGather(call, pieces, reply);
  }
  // Joins the pieces into the one copy the core works on, as the process transport does.
  Status CallGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                    trusted::Reply* reply) override {
    copy_.clear();
    for (std::span<const uint8_t> piece : pieces)
      copy_.insert(copy_.end(), piece.begin(), piece.end());
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
