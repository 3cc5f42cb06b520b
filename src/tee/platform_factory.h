// Chooses and creates the TEE backend of `mlcapsule-core` (`--platform`), and says how the core
// must start under it. Every backend implements trusted::Platform; the core above it is the same
// (docs/tee-backends.md has what each protects and how to deploy it).
//
//   backend   evidence                               sealing key               counter
//   software  MLCSWEV1 (unsigned)                    STATE/core-seal.key       file (MAC'd)
//   sgx       DCAP quote from /dev/attestation        EGETKEY (MRENCLAVE)       file (MAC'd)
//   snp       report + VCEK via configfs-tsm/ioctl    SNP_GET_DERIVED_KEY       file (MAC'd)
//   tdx       quote v4 via configfs-tsm               key file on the CVM disk  file (MAC'd)
//   tpm       TPM2_Quote over PCR 23 + EK chain       TPM-sealed seed (PCR 23)  TPM NV counter
//
//   PlatformOptions options;
//   options.backend = "tpm";
//   options.state_dir = "/var/lib/mlcapsule/core";
//   options.tpm = "tcp:127.0.0.1:2321";
//   MLC_ASSIGN_OR_RETURN(std::unique_ptr<trusted::Platform> platform, CreatePlatform(options));
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "trusted/platform.h"

namespace mlcapsule::tee {

struct PlatformOptions {
  std::string backend = "software";  // software | sgx | snp | tdx | tpm
  std::string state_dir;
  std::string attestation_dir = "/dev/attestation";        // sgx
  std::string tsm_root = "/sys/kernel/config/tsm/report";  // snp, tdx
  std::string tsm_entry;  // snp, tdx: an existing entry of a prepared (non-configfs) root; tests
  std::string sev_guest = "/dev/sev-guest";  // snp (legacy ioctl, derived key)
  std::string snp_vcek;             // snp: the VCEK (DER) when the host supplies no certificates
  bool seal_key_file = false;       // snp: sealing key from STATE instead of the derived key
  std::string tpm = "/dev/tpmrm0";  // tpm: a device path or tcp:HOST:PORT (swtpm)
  std::vector<std::string> tpm_ek_chain;    // tpm: EK intermediates to ship in the evidence
  uint32_t tpm_counter_index = 0x01500A00;  // tpm: the first NV index provisioning may take
  // snp, tdx: configfs needs mkdir/open/rmdir per report, which the core's seccomp filter kills,
  // so the core spawns an attester process (this executable with --attester) before seccomp.
  // false: in-process (tests, and cores that do not confine themselves).
  bool use_attester = true;
};

// The backend names, for --help and errors.
inline constexpr std::string_view kBackendNames = "software, sgx, snp, tdx, tpm";

// The backends compiled into this build, e.g. "software, sgx, snp, tdx, tpm" (tpm needs libtss2).
std::string BuiltBackends();

// How the core confines itself under a backend: under Gramine (sgx) the enclave replaces the
// process hardening and seccomp, and Gramine implements neither prctl nor seccomp.
struct Confinement {
  bool harden_process = true;  // prctl non-dumpable, no_new_privs, RLIMIT_CORE 0
  bool seccomp = true;
};
Result<Confinement> ConfinementFor(std::string_view backend);

// Creates the backend; everything that needs a file or a connection happens here (before
// seccomp). Errors name the backend and what failed.
Result<std::unique_ptr<trusted::Platform>> CreatePlatform(const PlatformOptions& options);

}  // namespace mlcapsule::tee
