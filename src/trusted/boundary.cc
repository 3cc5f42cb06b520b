// The boundary shim: checks each call's input length against its named limit and forwards to the
// core. No logic lives here (STYLE.md): a reviewer reads boundary.h and this file to know the
// whole attack surface of the trusted side.
#include "trusted/boundary.h"

#include "trusted/core.h"

namespace mlcapsule::trusted {

Boundary::Boundary(Platform* platform) : core_(std::make_unique<Core>(platform)) {}
Boundary::~Boundary() = default;

Status Boundary::Call(trusted::Call call, std::span<const uint8_t> input, Reply* reply) {
  reply->output.clear();
  reply->sealed_state.clear();
  if (!IsKnownCall(static_cast<uint32_t>(call)))
    return InvalidArgument("unknown boundary call {}", static_cast<uint32_t>(call));
  if (input.size() > MaxInputBytes(call))
    return InvalidArgument("{}: input of {} bytes is over the limit {}", CallName(call),
                           input.size(), MaxInputBytes(call));
  Status status;
  switch (call) {
    case Call::kOpen:
      status = core_->Open(input, reply);
      break;
    case Call::kEvidence:
      status = core_->Evidence(input, reply);
      break;
    case Call::kInstallLease:
      status = core_->InstallLease(input, reply);
      break;
    case Call::kInfer:
      status = core_->Infer(input, reply);
      break;
    case Call::kUsageReport:
      status = core_->UsageReport(input, reply);
      break;
    case Call::kClose:
      status = core_->Close(reply);
      break;
  }
  if (!status.ok()) reply->output.clear();  // an error carries its message only
  return status;
}

}  // namespace mlcapsule::trusted
