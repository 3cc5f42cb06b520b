// Fuzz target: the TPM evidence container (capsule/tpm_evidence.h) and the server's TPM verifier
// (server/evidence/tpm.h) on hostile bytes. The first byte picks what the rest is:
//   0  a whole evidence container, verified against a synthetic EK CA
//   1  a TPMT_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE for the three TPM structure parsers
//   2  patches (offset:u16 LE, value:u8) to a valid synthetic evidence, so mutations reach every
//      check up to the quote signature
//   3  the attest, 4 the AK public area, 5 the signature of an otherwise valid evidence
// ParseTpmEvidence also reads every input. Nothing may crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "capsule/crypto.h"
#include "capsule/tpm_evidence.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/synthetic_tpm.h"
#include "server/evidence/tpm.h"

namespace {

using namespace mlcapsule;
using namespace mlcapsule::server::evidence;

constexpr int64_t kNow = 1751328000;  // inside the synthetic certificates' window

struct Fixture {
  std::unique_ptr<testing::SyntheticTpm> tpm;
  std::unique_ptr<Verifier> verifier;
  capsule::TpmEvidence parts;     // a valid evidence
  std::vector<uint8_t> evidence;  // the same, encoded
};
Fixture* fixture = nullptr;

void VerifyParts(const capsule::TpmEvidence& parts) {
  (void)fixture->verifier->Verify(capsule::EvidenceType::kTpm, capsule::EncodeTpmEvidence(parts),
                                  nullptr, kNow);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!capsule::InitCrypto().ok()) std::abort();
  fixture = new Fixture();
  auto tpm = testing::SyntheticTpm::Create({});
  if (!tpm.ok()) std::abort();
  fixture->tpm = std::move(tpm).value();
  fixture->verifier = std::make_unique<Verifier>(fixture->tpm->Anchors());
  testing::TpmQuoteSpec spec;
  spec.measurement[0] = 1;
  spec.report_data[0] = 2;
  auto parts = fixture->tpm->MakeEvidenceParts(spec);
  if (!parts.ok()) std::abort();
  fixture->parts = std::move(parts).value();
  fixture->evidence = capsule::EncodeTpmEvidence(fixture->parts);
  // The fixture must be valid, or the patch cases test nothing.
  if (!fixture->verifier->Verify(capsule::EvidenceType::kTpm, fixture->evidence, nullptr, kNow)
           .ok())
    std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      (void)fixture->verifier->Verify(capsule::EvidenceType::kTpm, rest, nullptr, kNow);
      break;
    case 1:
      (void)ParseTpmPublic(rest);
      (void)ParseTpmAttest(rest);
      (void)ParseTpmSignature(rest);
      (void)TpmObjectName(rest);
      break;
    case 2: {
      std::vector<uint8_t> evidence = fixture->evidence;
      for (size_t i = 0; i + 3 <= rest.size(); i += 3) {
        const size_t at = rest[i] | (size_t{rest[i + 1]} << 8);
        if (at < evidence.size()) evidence[at] = rest[i + 2];
      }
      (void)fixture->verifier->Verify(capsule::EvidenceType::kTpm, evidence, nullptr, kNow);
      break;
    }
    case 3: {
      capsule::TpmEvidence parts = fixture->parts;
      parts.attest.assign(rest.begin(), rest.end());
      VerifyParts(parts);
      break;
    }
    case 4: {
      capsule::TpmEvidence parts = fixture->parts;
      parts.ak_public.assign(rest.begin(), rest.end());
      VerifyParts(parts);
      break;
    }
    case 5: {
      capsule::TpmEvidence parts = fixture->parts;
      parts.signature.assign(rest.begin(), rest.end());
      VerifyParts(parts);
      break;
    }
  }
  (void)capsule::ParseTpmEvidence(rest);
  return 0;
}
