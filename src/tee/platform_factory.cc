// The backend factory of mlcapsule-core (platform_factory.h). A backend this build lacks (no
// libtss2 at build time) is refused by name, never replaced by another.
#include "tee/platform_factory.h"

#include "tee/software/software_platform.h"
#if MLCAPSULE_HAVE_SGX
#include "tee/sgx/gramine_platform.h"
#endif
#if MLCAPSULE_HAVE_CVM
#include "tee/cvm/attester.h"
#include "tee/cvm/snp_platform.h"
#include "tee/cvm/tdx_platform.h"
#endif
#if MLCAPSULE_HAVE_TPM
#include "tee/tpm/tpm_platform.h"
#endif

namespace mlcapsule::tee {
namespace {

template <typename T>
Result<std::unique_ptr<trusted::Platform>> Upcast(Result<std::unique_ptr<T>> platform) {
  if (!platform.ok()) return platform.status();
  return std::unique_ptr<trusted::Platform>(std::move(platform).value());
}

#if MLCAPSULE_HAVE_CVM
// configfs-tsm in an attester process (the core's seccomp forbids mkdir/open/rmdir), or in this
// process when the caller does not confine itself.
Result<std::unique_ptr<cvm::TsmReporter>> MakeReporter(const PlatformOptions& options,
                                                       cvm::CvmKind kind) {
  cvm::ReporterOptions reporter;
  reporter.kind = kind;
  reporter.tsm.root = options.tsm_root;
  reporter.tsm.entry_name = options.tsm_entry;
  reporter.sev_guest_device = options.sev_guest;
  if (!options.use_attester) return cvm::MakeInProcessReporter(std::move(reporter));
  MLC_ASSIGN_OR_RETURN(auto attester,
                       cvm::SpawnAttester("/proc/self/exe", cvm::AttesterArguments(reporter)));
  return std::unique_ptr<cvm::TsmReporter>(std::move(attester));
}
#endif

}  // namespace

std::string BuiltBackends() {
  std::string names = "software";
#if MLCAPSULE_HAVE_SGX
  names += ", sgx";
#endif
#if MLCAPSULE_HAVE_CVM
  names += ", snp, tdx";
#endif
#if MLCAPSULE_HAVE_TPM
  names += ", tpm";
#endif
  return names;
}

Result<Confinement> ConfinementFor(std::string_view backend) {
  if (backend == "software" || backend == "snp" || backend == "tdx" || backend == "tpm")
    return Confinement{};
  if (backend == "sgx") return Confinement{.harden_process = false, .seccomp = false};
  return InvalidArgument("unknown TEE backend \"{}\" (expected one of: {})", backend,
                         kBackendNames);
}

Result<std::unique_ptr<trusted::Platform>> CreatePlatform(const PlatformOptions& options) {
  MLC_RETURN_IF_ERROR(ConfinementFor(options.backend).status());
  const std::string& backend = options.backend;
  if (backend == "software") return Upcast(SoftwarePlatform::Create(options.state_dir));
#if MLCAPSULE_HAVE_SGX
  if (backend == "sgx") {
    GramineOptions sgx;
    sgx.attestation_dir = options.attestation_dir;
    sgx.state_dir = options.state_dir;
    return Upcast(GraminePlatform::Create(sgx));
  }
#endif
#if MLCAPSULE_HAVE_CVM
  if (backend == "snp") {
    cvm::SnpPlatformOptions snp;
    snp.tsm.root = options.tsm_root;
    snp.tsm.entry_name = options.tsm_entry;
    snp.sev_guest_device = options.sev_guest;
    snp.vcek_file = options.snp_vcek;
    snp.state_dir = options.state_dir;
    snp.seal_key_file_fallback = options.seal_key_file;
    MLC_ASSIGN_OR_RETURN(snp.reporter, MakeReporter(options, cvm::CvmKind::kSnp));
    return Upcast(cvm::SnpPlatform::Create(std::move(snp)));
  }
  if (backend == "tdx") {
    cvm::TdxPlatformOptions tdx;
    tdx.tsm.root = options.tsm_root;
    tdx.tsm.entry_name = options.tsm_entry;
    tdx.state_dir = options.state_dir;
    MLC_ASSIGN_OR_RETURN(tdx.reporter, MakeReporter(options, cvm::CvmKind::kTdx));
    return Upcast(cvm::TdxPlatform::Create(std::move(tdx)));
  }
#endif
#if MLCAPSULE_HAVE_TPM
  if (backend == "tpm") {
    TpmOptions tpm;
    tpm.device = options.tpm;
    tpm.state_dir = options.state_dir;
    tpm.ek_chain_files = options.tpm_ek_chain;
    tpm.counter_index = options.tpm_counter_index;
    return Upcast(TpmPlatform::Create(tpm));
  }
#endif
  return Unsupported("the {} backend is not built into this mlcapsule-core{}", backend,
                     backend == "tpm" ? " (libtss2-dev was missing when it was built)" : "");
}

}  // namespace mlcapsule::tee
