// `mlcapsule tee`: tools for running the trusted core in a hardware TEE
// (docs/dev/tee-backends-plan.md). Today: `tee gramine-manifest`, which writes the Gramine
// manifest template that puts mlcapsule-core in an SGX enclave (tee/sgx/gramine_manifest.h).
// Each subcommand is one Add*Command function below, registered in AddTeeCommand.
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "cli/cli_common.h"
#include "tee/sgx/gramine_manifest.h"

namespace mlcapsule::cli {
namespace {

constexpr const char* kCoreBinaryName = "mlcapsule-core";

void Usage(const std::string& message) {
  std::fprintf(stderr, "mlcapsule: error: %s\n", message.c_str());
  SetExitCode(kExitUsage);
}

// mlcapsule-core beside the running executable ("" when /proc/self/exe cannot be read).
std::string CoreBesideThisExecutable() {
  std::vector<char> self(PATH_MAX + 1);
  const ssize_t n = readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) return "";
  std::string directory(self.data(), static_cast<size_t>(n));
  const size_t slash = directory.rfind('/');
  directory.resize(slash == std::string::npos ? 0 : slash);
  return directory + "/" + kCoreBinaryName;
}

// --- tee gramine-manifest ---

struct GramineManifestArgs {
  std::string core;
  std::string capsule;
  std::string state;
  uint32_t threads = 4;
  std::string enclave_size;
  uint16_t isv_prod_id = 0;
  uint16_t isv_svn = 0;
  std::string out;
};

void RunGramineManifest(const GramineManifestArgs& args) {
  tee::GramineManifestOptions options;
  options.core_path = args.core.empty() ? CoreBesideThisExecutable() : args.core;
  if (options.core_path.empty())
    return Usage("cannot find mlcapsule-core beside this executable; pass --core PATH");
  options.state_dir = args.state;
  options.threads = args.threads;
  options.isv_prod_id = args.isv_prod_id;
  options.isv_svn = args.isv_svn;
  if (!args.capsule.empty()) {
    struct stat info {};
    if (stat(args.capsule.c_str(), &info) != 0)
      return SetExitCode(ReportError(
          IoError("cannot read the capsule {}: {}", args.capsule, std::strerror(errno))));
    options.capsule_bytes = static_cast<uint64_t>(info.st_size);
  }
  Result<uint64_t> estimate = tee::EstimateEnclaveSize(options.capsule_bytes);
  if (!estimate.ok()) return SetExitCode(ReportError(estimate.status()));
  if (!args.enclave_size.empty()) {
    Result<uint64_t> size = tee::ParseEnclaveSize(args.enclave_size);
    if (!size.ok()) return Usage("--enclave-size: " + size.status().message());
    options.enclave_size = *size;
  }

  Result<std::string> manifest = tee::GramineManifest(options);
  if (!manifest.ok()) {
    // Bad option values are usage errors; a missing library or an unreadable core is a failure.
    if (manifest.status().code() == StatusCode::kInvalidArgument)
      return Usage(manifest.status().message());
    return SetExitCode(ReportError(manifest.status()));
  }
  Status written = WriteFile(args.out, *manifest);
  if (!written.ok()) return SetExitCode(ReportError(written));

  const uint64_t size = options.enclave_size == 0 ? *estimate : options.enclave_size;
  if (options.enclave_size != 0 && options.enclave_size < *estimate)
    std::fprintf(stderr,
                 "mlcapsule: warning: --enclave-size %s is below the estimate %s for this "
                 "capsule; the core may run out of enclave memory\n",
                 tee::FormatEnclaveSize(options.enclave_size).c_str(),
                 tee::FormatEnclaveSize(*estimate).c_str());
  if (args.capsule.empty() && args.enclave_size.empty())
    std::fprintf(stderr,
                 "mlcapsule: note: no --capsule or --enclave-size: the enclave is sized for the "
                 "core alone (%s)\n",
                 tee::FormatEnclaveSize(size).c_str());
  std::printf(
      "wrote %s (enclave %s, %u OpenMP threads, ISVPRODID %u, ISVSVN %u)\n"
      "next, where Gramine is installed:\n"
      "  gramine-manifest %s mlcapsule-core.manifest\n"
      "  gramine-sgx-sign --manifest mlcapsule-core.manifest --output "
      "mlcapsule-core.manifest.sgx\n",
      args.out.c_str(), tee::FormatEnclaveSize(size).c_str(), options.threads, options.isv_prod_id,
      options.isv_svn, args.out.c_str());
  SetExitCode(kExitOk);
}

void AddGramineManifestCommand(CLI::App& tee) {
  static GramineManifestArgs args;
  CLI::App* command = tee.add_subcommand(
      "gramine-manifest",
      "Write the Gramine manifest template that runs mlcapsule-core inside an SGX enclave");
  command->add_option("--core", args.core,
                      "The mlcapsule-core binary to measure (default: beside this executable); "
                      "its directory is mounted in the enclave at /mlcapsule");
  command
      ->add_option("--state", args.state,
                   "Host directory for the core's counter, mounted at /state (one per capsule: "
                   "the counter protects that capsule's sealed state)")
      ->required();
  command
      ->add_option("--capsule", args.capsule,
                   "The largest capsule the enclave will run, to size the enclave (256 MiB + "
                   "3 x its size, rounded up to a power of two)")
      ->check(CLI::ExistingFile);
  command->add_option("--threads", args.threads, "OpenMP threads (sgx.max_threads is this + 4)")
      ->check(CLI::Range(1u, tee::kMaxEnclaveThreads));
  command->add_option("--enclave-size", args.enclave_size,
                      "Enclave size instead of the estimate: a power of two, e.g. 2G or 512M");
  command->add_option("--isv-prod-id", args.isv_prod_id,
                      "sgx.isvprodid: the product id your policy's tee.sgx.isv_prod_id requires");
  command->add_option("--isv-svn", args.isv_svn,
                      "sgx.isvsvn: the security version; raise it with each security fix and "
                      "set tee.sgx.min_isv_svn to refuse older enclaves");
  command->add_option("--out", args.out, "The manifest template to write")->required();
  command->footer(
      "What to do next, on a machine with Gramine (1.8 or later) and the SGX DCAP stack:\n"
      "  1. gramine-manifest OUT mlcapsule-core.manifest   (fills in Gramine's own paths)\n"
      "  2. gramine-sgx-sign --manifest mlcapsule-core.manifest --output "
      "mlcapsule-core.manifest.sgx\n"
      "     (with your enclave signing key: its hash is the MRSIGNER)\n"
      "  3. The host runs the core as `gramine-sgx mlcapsule-core` in that directory; the core\n"
      "     talks over stdin/stdout and attests with DCAP quotes.\n"
      "  4. In the capsule policy accept \"sgx\" and allow-list by signer, not by MRENCLAVE:\n"
      "     tee.sgx.mr_signers = [your MRSIGNER], tee.sgx.isv_prod_id = --isv-prod-id,\n"
      "     tee.sgx.min_isv_svn = --isv-svn. MRENCLAVE changes with every rebuild, library\n"
      "     update or manifest option, the signer does not.\n"
      "The manifest lists the core's shared libraries as `ldd` finds them here: run this where\n"
      "the enclave will run, or with the same libraries installed.");
  command->callback([] { RunGramineManifest(args); });
}

}  // namespace

void AddTeeCommand(CLI::App& app) {
  CLI::App* tee = app.add_subcommand(
      "tee",
      "Hardware TEE tools: prepare the trusted core for SGX (docs/dev/tee-backends-plan.md)");
  AddGramineManifestCommand(*tee);
  // Without a subcommand: the list of them.
  tee->callback([tee] {
    if (tee->get_subcommands().empty()) {
      std::printf("%s", tee->help().c_str());
      SetExitCode(kExitOk);
    }
  });
}

}  // namespace mlcapsule::cli
