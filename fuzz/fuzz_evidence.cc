// Fuzz target: the TEE evidence verifiers (src/server/evidence) on hostile bytes. The first byte
// picks the evidence type, the rest is the evidence: an SGX or TDX quote (checked against
// collateral from a synthetic Intel PKI, whose root the verifier is told to trust, so mutations of
// a well-formed synthetic quote reach every check up to the signatures), an SNP evidence blob or
// bare report (with the real VCEK when ../shared/attest-vectors is there), or software evidence.
// Type 5 reads the bytes as patches (offset:u16 LE, value:u8) to a valid synthetic quote, so that
// mutations reach the checks behind the signatures. The same bytes are also read as Intel
// collateral JSON. Nothing may crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "capsule/crypto.h"
#include "server/evidence/evidence.h"
#include "server/evidence/testing/synthetic_intel.h"

namespace {

using namespace mlcapsule;
using namespace mlcapsule::server::evidence;

constexpr int64_t kNow = 1751328000;  // inside the synthetic collateral's window

struct Fixture {
  std::unique_ptr<testing::SyntheticIntelPki> pki;
  std::unique_ptr<Verifier> verifier;
  IntelCollateral collateral;
  std::vector<uint8_t> vcek;
  std::vector<uint8_t> quote;  // a valid synthetic SGX quote
};
Fixture* fixture = nullptr;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!capsule::InitCrypto().ok()) std::abort();
  fixture = new Fixture();
  auto pki = testing::SyntheticIntelPki::Create({});
  if (!pki.ok()) std::abort();
  fixture->pki = std::move(pki).value();
  auto collateral = ParseIntelCollateral(fixture->pki->CollateralJson());
  if (!collateral.ok()) std::abort();
  fixture->collateral = std::move(collateral).value();
  fixture->verifier = std::make_unique<Verifier>(fixture->pki->Anchors());
  auto quote = fixture->pki->MakeSgxQuote({});
  if (!quote.ok()) std::abort();
  fixture->quote = std::move(quote).value();
  const char* vectors = std::getenv("MLCAPSULE_ATTEST_VECTORS");
  fixture->vcek = ReadAll(std::string(vectors ? vectors : "../shared/attest-vectors") +
                          "/go-sev-guest_vcek_milan.der");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> evidence(data + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      (void)fixture->verifier->Verify(capsule::EvidenceType::kSgx, evidence, &fixture->collateral,
                                      kNow);
      (void)QuoteFmspc(evidence);
      break;
    case 1:
      (void)fixture->verifier->Verify(capsule::EvidenceType::kTdx, evidence, &fixture->collateral,
                                      kNow);
      break;
    case 2:
      (void)fixture->verifier->Verify(capsule::EvidenceType::kSnp, evidence, nullptr, kNow);
      break;
    case 3:
      if (!fixture->vcek.empty())
        (void)fixture->verifier->VerifySnpParts(evidence, fixture->vcek, kNow);
      break;
    case 4:
      (void)fixture->verifier->Verify(capsule::EvidenceType::kSoftware, evidence, nullptr, kNow);
      break;
    case 5: {
      std::vector<uint8_t> quote = fixture->quote;
      for (size_t i = 0; i + 3 <= evidence.size(); i += 3) {
        const size_t at = evidence[i] | (size_t{evidence[i + 1]} << 8);
        if (at < quote.size()) quote[at] = evidence[i + 2];
      }
      (void)fixture->verifier->Verify(capsule::EvidenceType::kSgx, quote, &fixture->collateral,
                                      kNow);
      break;
    }
  }
  (void)ParseIntelCollateral(
      std::string_view(reinterpret_cast<const char*>(evidence.data()), evidence.size()));
  return 0;
}
