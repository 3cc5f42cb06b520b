// Fuzz target: every parser of the capsule library on the same bytes (each checks its own magic,
// so a mutation that keeps one magic explores that parser). What parses goes one step further:
// a capsule is verified and decrypted with a fixed key, a lease is verified against a header
// that pins its signer, a usage report is verified; an evidence request and a tensor list must
// re-encode to exactly the input bytes (each has one encoding). The capsule payload layout, the
// sealed update a core hands the host, and the escrow record plaintext (defense/watermark.h) are
// parsed too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "capsule/capsule_file.h"
#include "capsule/messages.h"
#include "capsule/tensor_wire.h"
#include "defense/watermark.h"
#include "trusted/boundary.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!mlcapsule::capsule::InitCrypto().ok()) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlcapsule;
  using namespace mlcapsule::capsule;
  std::span<const uint8_t> bytes(data, size);

  if (auto capsule = ParseCapsule(bytes); capsule.ok()) {
    (void)ParseAndVerifyCapsule(bytes);
    // The plan size is bounded by the input (the sizes must add up to it), so this allocation is.
    SecretBytes key(kSymmetricKeyBytes);
    (void)DecryptPayload(*capsule, key);
  }

  if (auto lease = ParseLease(bytes); lease.ok()) {
    CapsuleHeader header;
    header.capsule_id = lease->body.capsule_id;
    header.lease_signers = {lease->signer};
    (void)ParseAndVerifyLease(bytes, header);
  }

  if (auto request = ParseEvidenceRequest(bytes); request.ok()) {
    std::vector<uint8_t> again = SerializeEvidenceRequest(*request);
    if (again.size() != size || !std::equal(again.begin(), again.end(), data)) std::abort();
  }

  if (auto report = ParseUsageReport(bytes); report.ok()) (void)ParseAndVerifyUsageReport(bytes);

  (void)ParsePayloadLayout(bytes);
  (void)trusted::SplitSealedUpdate(bytes);
  if (auto record = defense::ParseEscrowRecord(bytes); record.ok()) {
    // One encoding: a record that parses re-serializes to the same bytes.
    std::vector<uint8_t> again = defense::SerializeEscrowRecord(*record);
    if (again.size() != size || !std::equal(again.begin(), again.end(), data)) std::abort();
  }

  if (auto tensors = ParseTensorList(bytes); tensors.ok()) {
    std::string again;
    AppendTensorList(*tensors, &again);
    if (again.size() != size || again.compare(0, size, reinterpret_cast<const char*>(data), size))
      std::abort();
    if (!ParseTensorListCopy(bytes).ok()) std::abort();
  }
  return 0;
}
