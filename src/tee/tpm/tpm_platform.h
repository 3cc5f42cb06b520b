// The TPM 2.0 TEE's Platform (trusted/platform.h) for `mlcapsule-core --platform tpm`: evidence is
// a TPM2_Quote over PCR 23, the sealing key comes from a seed the TPM releases only while PCR 23
// holds this core's measurement, and the monotonic counter is a TPM NV counter, so restoring an
// old copy of the state directory cannot roll sealed state back (docs/dev/tee-backends-plan.md
// §4). Create runs before seccomp: it connects to the TPM (fd_tcti.h), reads STATE/tpm-state,
// and runs every code path once; afterwards the platform uses only read/write/poll on the TPM
// descriptor, getrandom and the clock. It talks to the TPM through libtss2 ESYS with no resource
// manager in between (swtpm over TCP) or the kernel's (/dev/tpmrm0).
//
// TPM objects and handles:
//   SRK      ECC P-256 restricted storage primary key under the owner hierarchy (TCG SRK
//            template, unique = 32+32 zero bytes), re-created at every start (deterministic) and
//            flushed as soon as its children are loaded.
//   AK       ECC P-256 restricted ECDSA-SHA256 signing key under the SRK, objectAttributes
//            0x00050072 (fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign),
//            empty auth. Loaded at start, kept as a saved context (TPM2_ContextSave) and loaded
//            only for each quote or activation, then flushed: no transient slot is held between
//            calls, and none leaks when the core dies between them.
//   seed     32 random bytes in a KEYEDHASH sealed data object under the SRK (fixedTPM|
//            fixedParent|noDA, no userWithAuth) whose authPolicy is PolicyPCR(sha256:{23} =
//            SHA-256(0^32 || measurement)): it unseals only after PCR 23 was reset and extended
//            with this core's measurement. Unsealed once at start, then the object is flushed.
//   counter  NV index `counter_index` (default 0x01500A00), TPM2_NT_COUNTER, AUTHREAD|AUTHWRITE|
//            NO_DA, not ORDERLY (an orderly counter reads high after a power loss), 8 bytes,
//            auth = keyed BLAKE2b-256(seed, "mlcapsule/v1/tpm-counter-auth") sent in a password
//            session. Defined and incremented once when provisioning (a new counter cannot be
//            read before its first increment).
//   EK       the RSA-2048 endorsement key: persistent 0x81010001 when present, else re-created
//            from the TCG default template (L-1) for each credential activation. Its certificate
//            is read from NV 0x01C00002 at start (chunks <= TPM2_PT_NV_BUFFER_MAX).
//   PCR 23   sha256 bank, reset at locality 0 (PC client profile), then extended with the
//            measurement (and, for evidence, SHA-256("mlcapsule/v1/tpm-rd" || report data)).
//
// Derived values:
//   sealing key  keyed BLAKE2b-256(seed, "mlcapsule/v1/tpm-seal" || measurement)
//   evidence     capsule::EncodeTpmEvidence (capsule/tpm_evidence.h): the quote's attest and
//                signature, the AK's TPMT_PUBLIC, the EK certificate and `ek_chain_files`.
//   time         CLOCK_REALTIME, reported as untrusted.
//
// Files (STATE = options.state_dir, created 0700):
//   STATE/tpm-state  written once when provisioning (temporary file, fsync, link: atomic), 0600,
//                    flock'ed for the platform's life (one core per state directory):
//     tpm_state := magic:"MLCTPMS1" version:u32(=1) counter_index:u32
//                  counter_name:blob(<=68)   ; TPM2B_NAME data of the NV index after its first
//                                            ; increment (nameAlg || SHA-256(TPMS_NV_PUBLIC))
//                  measurement:u8[32]        ; the measurement that provisioned it (messages only)
//                  ak_public:blob(<=1 KiB) ak_private:blob(<=1 KiB)      ; TPM2B_PUBLIC/PRIVATE
//                  seed_public:blob(<=1 KiB) seed_private:blob(<=1 KiB)  ; as marshalled by tss2
//                  check:u8[32]              ; BLAKE2b-256 of all bytes before (corruption only:
//                                            ; the TPM checks the private blobs' integrity)
//     blob := length:u32 bytes; integers little-endian.
//
// Start-up: with no STATE/tpm-state the platform provisions (owner and endorsement auth empty):
// it takes the first undefined NV index of [counter_index, counter_index + kTpmCounterIndexRange)
// (the others belong to other state directories or programs, or to a provisioning that died
// before writing tpm-state: undefine those with owner auth), creates the AK and the seed, defines
// and increments the counter, records its index in tpm-state, then
// starts as below. With tpm-state: SRK, load AK and seed, reset PCR 23, extend the measurement,
// unseal the seed in a policy session, compare the NV index's name with the stored one (a
// redefined index is refused), read the counter, read the EK certificate, run one quote.
// A core with another measurement cannot unseal the seed (FailedPrecondition naming both
// measurements): a new core binary needs a new state directory and counter index. Its sealed
// state would not open anyway (the sealing key depends on the measurement).
//
// Errors: every TPM return code is decoded (Tss2_RC_Decode) into the message. The TPM going away
// (EOF, a reset connection, no response) gives IoError "TPM ... unreachable" from then on: the
// core cannot reconnect under seccomp; it keeps its in-memory state and the host restarts it.
// TPM_RC_RETRY/YIELDED/TESTING are retried with a bounded backoff; TPM_RC_NV_RATE (the TPM
// throttles NV writes) is ResourceExhausted, advising a larger lease.seal_every. When an
// increment's response is lost, the counter is read again: the expected value + 1 means it was
// applied, the expected value means it was not (one retry), anything else is DataLoss. If the
// process dies after the TPM applied an increment but before the host stored the new sealed
// blob, that blob is refused at the next start (counter != sealed): the client needs a new lease;
// the provider loses nothing.
//
// What this protects (plan §4.7): the EK certificate ties evidence to one TPM chip; the NV
// counter is a hardware monotonic counter (no snapshot/restore of sealed state, even by root);
// the seed does not open on another machine or from a copied disk. What it does not: PCR 23 is
// resettable at locality 0, so root (or the core's own user, with access to the TPM device) can
// run a modified core, reset PCR 23, extend the allowed measurement, and then quote, unseal and
// obtain capsule keys. There is no confidentiality against root without measured boot and boot
// PCRs in the policy (future work). The counter auth crosses the TPM transport in clear (a
// password session): whoever sniffs it can only increment the counter (a denial of service root
// has anyway). Another process may extend PCR 23 between our extends and the quote: the quote is
// checked and retried once. A discrete TPM's bus can be attacked physically.
//
//   tee::TpmOptions options;
//   options.device = "/dev/tpmrm0";            // or "tcp:127.0.0.1:2321" (swtpm)
//   options.state_dir = "/var/lib/mlcapsule/core";
//   MLC_ASSIGN_OR_RETURN(auto platform, tee::TpmPlatform::Create(options));
//   MLC_RETURN_IF_ERROR(EnterSeccomp());
//   MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> evidence, platform->Evidence(report_data));
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "capsule/crypto.h"
#include "tee/tpm/fd_tcti.h"
#include "trusted/platform.h"

namespace mlcapsule::tee {

inline constexpr uint32_t kDefaultTpmCounterIndex = 0x01500A00;
// Provisioning takes the first undefined NV index of [counter_index, counter_index + 16): one
// counter per state directory, so several capsules share a TPM (NV space is small; a real TPM
// may hold fewer counters than that).
inline constexpr uint32_t kTpmCounterIndexRange = 16;
inline constexpr uint32_t kTpmEkCertIndex = 0x01C00002;         // RSA-2048 EK certificate
inline constexpr uint32_t kTpmEkPersistentHandle = 0x81010001;  // RSA-2048 EK
inline constexpr uint32_t kTpmAkAttributes = 0x00050072;
inline constexpr std::string_view kTpmStateFileName = "tpm-state";
inline constexpr std::string_view kTpmStateMagic = "MLCTPMS1";
inline constexpr uint32_t kTpmStateVersion = 1;
inline constexpr std::string_view kTpmSealDomain = "mlcapsule/v1/tpm-seal";
inline constexpr std::string_view kTpmCounterAuthDomain = "mlcapsule/v1/tpm-counter-auth";

struct TpmOptions {
  // "tcp:HOST:PORT" (swtpm's data channel) or a device path (fd_tcti.h).
  std::string device = "/dev/tpmrm0";
  std::string state_dir;
  // The core's measurement; default: tee::HashFile("/proc/self/exe").
  std::optional<capsule::Digest> measurement;
  uint32_t counter_index = kDefaultTpmCounterIndex;
  // Intermediate CA certificates (PEM, possibly several per file, or DER) shipped in the
  // evidence with the EK certificate; at most capsule::kMaxTpmChainCerts in all.
  std::vector<std::string> ek_chain_files;
  int response_timeout_ms = FdTcti::kDefaultResponseTimeoutMs;
  // Tests only (fault injection): given the transport's TCTI, returns the TCTI ESYS talks to.
  // The returned context must outlive the platform.
  std::function<TSS2_TCTI_CONTEXT*(TSS2_TCTI_CONTEXT*)> wrap_tcti;
};

// Not thread-safe (ESYS is not): the core calls it from one thread.
class TpmPlatform final : public trusted::Platform {
 public:
  // Connects, provisions when STATE/tpm-state is missing, and starts (see above). Must run
  // before EnterSeccomp.
  static Result<std::unique_ptr<TpmPlatform>> Create(const TpmOptions& options);
  ~TpmPlatform() override;
  TpmPlatform(const TpmPlatform&) = delete;
  TpmPlatform& operator=(const TpmPlatform&) = delete;

  capsule::EvidenceType evidence_type() const override { return capsule::EvidenceType::kTpm; }
  Status Random(std::span<uint8_t> out) override;
  Result<std::vector<uint8_t>> Evidence(const capsule::ReportData& report_data) override;
  Result<capsule::SecretBytes> SealingKey() override;
  Result<uint64_t> ReadCounter() override;
  Result<uint64_t> IncrementCounter() override;
  trusted::PlatformTime Now() override;
  Result<capsule::SecretBytes> ActivateCredential(
      std::span<const uint8_t> id_object, std::span<const uint8_t> encrypted_secret) override;

  const capsule::Digest& measurement() const { return measurement_; }
  // The AK's TPM name (0x000B || SHA-256(TPMT_PUBLIC)): what MakeCredential binds to.
  const std::vector<uint8_t>& ak_name() const { return ak_name_; }
  // The AK's marshalled TPMT_PUBLIC and the EK certificate (DER), as the evidence carries them.
  const std::vector<uint8_t>& ak_public() const { return ak_public_; }
  const std::vector<uint8_t>& ek_certificate() const { return ek_cert_; }
  // PCR 23 of the SHA-256 bank as the TPM holds it now (diagnostics and tests).
  Result<std::array<uint8_t, 32>> ReadPcr23();

  struct Impl;

 private:
  TpmPlatform();
  std::unique_ptr<Impl> impl_;
  capsule::Digest measurement_{};
  std::vector<uint8_t> ak_name_;
  std::vector<uint8_t> ak_public_;
  std::vector<uint8_t> ek_cert_;
};

}  // namespace mlcapsule::tee
