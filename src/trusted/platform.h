// What the guarded core needs from the TEE it runs in (leveldb's Env for enclaves): randomness,
// evidence bound to 64 bytes of report data, a sealing key, a monotonic counter and the best
// time the TEE can know. The core does no I/O of its own; everything outside comes through here
// or through the boundary (trusted/boundary.h). Implementations live in src/tee/: software (a
// separate confined process), and, for unit tests only, the in-process platform in
// trusted/test_platform.h (never selected silently: it protects nothing).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"

namespace mlcapsule::trusted {

struct PlatformTime {
  int64_t unix_seconds = 0;
  // False when the time comes from a clock the adversary controls (the software backend reads
  // the host's clock). The core still never lets time go backwards within its sealed state.
  bool trusted = false;
};

class Platform {
 public:
  virtual ~Platform() = default;

  // "software", "sgx", ... (the evidence type the server checks against the policy).
  virtual capsule::EvidenceType evidence_type() const = 0;
  // Cryptographically secure random bytes.
  virtual Status Random(std::span<uint8_t> out) = 0;
  // TEE evidence whose user data is `report_data` (for the software backend: its measurement
  // and the report data, unsigned; docs/core-protocol.md says what that is worth).
  virtual Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) = 0;
  // A 32-byte key that only this TEE (same measurement, same machine) can derive again.
  virtual Result<capsule::SecretBytes> SealingKey() = 0;
  // The monotonic counter protecting sealed state from rollback: read, and increment (returns
  // the new value). Must never go backwards except by an attack the backend admits to.
  virtual Result<uint64_t> ReadCounter() = 0;
  virtual Result<uint64_t> IncrementCounter() = 0;
  virtual PlatformTime Now() = 0;
  // TEE-bound key release (docs/tee-backends.md): a lease may carry a credential that only this
  // TEE can open (TPM 2.0 credential activation: `id_object` is the TPM2B_ID_OBJECT and
  // `encrypted_secret` the TPM2B_ENCRYPTED_SECRET, both with their 2-byte size prefix, made for
  // this platform's attestation key and endorsement key). Returns the secret it protects. A
  // backend without such a binding answers Unsupported, and the core refuses a lease that
  // carries one.
  virtual Result<capsule::SecretBytes> ActivateCredential(
      std::span<const uint8_t> id_object, std::span<const uint8_t> encrypted_secret) {
    (void)id_object;
    (void)encrypted_secret;
    return Unsupported("this TEE ({}) has no credential activation: the lease is bound to a TPM",
                       capsule::EvidenceTypeName(evidence_type()));
  }
};

}  // namespace mlcapsule::trusted
