// The in-process channel: the core runs inside the calling process on the test platform. It
// protects nothing (the host can read every key and weight) and exists for unit tests only; the
// host never falls back to it. Its Describe() says so.
#pragma once

#include <memory>

#include "host/core_channel.h"
#include "trusted/test_platform.h"

namespace mlcapsule::host {

// `platform` (outlives the channel) lets tests inject faults and move the clock.
std::unique_ptr<CoreChannel> MakeInProcessChannelForTests(trusted::TestPlatform* platform);

}  // namespace mlcapsule::host
