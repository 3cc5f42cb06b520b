// The Gramine manifest template for running mlcapsule-core inside an SGX enclave (`mlcapsule tee
// gramine-manifest`; docs/dev/tee-backends-plan.md §2.4). Gramine is usually absent where the
// manifest is written, so this writes a TEMPLATE: the provider renders it with gramine-manifest
// (which fills in `{{ gramine.libos }}` and `{{ gramine.runtimedir() }}`), signs it with
// gramine-sgx-sign, and the host starts the core with gramine-sgx. No trusted code is linked.
//
// What the manifest pins, and so what MRENCLAVE covers: the LibOS, Gramine's glibc, the core,
// every shared library the core needs (as `ldd CORE` finds them on this machine), the fixed
// command line ["mlcapsule-core", "--stdio", "--platform", "sgx", "--state", "/state"], the
// environment (LD_LIBRARY_PATH, OMP_NUM_THREADS), the mounts and the SGX settings. Every rebuild or
// library update therefore changes MRENCLAVE; providers allow-list the signer instead
// (tee.sgx.mr_signers + isv_prod_id + min_isv_svn in the capsule policy). Written for Gramine 1.8
// or later (the table form of loader.entrypoint). No `insecure__` option is ever written.
//
//   manifest := "# ..." comment lines, then TOML (https://toml.io/en/v1.0.0):
//     libos.entrypoint = "/mlcapsule/<core file name>"
//     loader.entrypoint.uri = "file:{{ gramine.libos }}"
//     loader.log_level = "error"
//     loader.argv = ["mlcapsule-core", "--stdio", "--platform", "sgx", "--state", "/state"]
//     loader.env.LD_LIBRARY_PATH = "/lib:/usr/lib/x86_64-linux-gnu" [":/mlcapsule"]
//     loader.env.OMP_NUM_THREADS = "<threads>"
//     fs.mounts = [ /lib -> {{ gramine.runtimedir() }}, /usr/lib/x86_64-linux-gnu -> same,
//                   /mlcapsule -> the core's directory, /state -> the state directory,
//                   tmpfs /tmp ]
//     sys.disallow_subprocesses = true
//     sys.stack.size = "2M"
//     sgx.debug = false
//     sgx.remote_attestation = "dcap"
//     sgx.enclave_size = "<power of two>"    ; K, M or G
//     sgx.max_threads = <threads + 4>
//     sgx.isvprodid = <u16>
//     sgx.isvsvn = <u16>
//     sgx.trusted_files = [libos, runtime dir, the core, its non-glibc libraries]
//     sgx.allowed_files = ["file:<state directory>/"]   (core-counter and its temporary file)
//
//   tee::GramineManifestOptions options;
//   options.core_path = "/opt/mlcapsule/mlcapsule-core";
//   options.state_dir = "/var/lib/mlcapsule/capsule-1";
//   options.capsule_bytes = 50 << 20;
//   MLC_ASSIGN_OR_RETURN(std::string manifest, tee::GramineManifest(options));
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace mlcapsule::tee {

inline constexpr uint64_t kEnclaveBaseBytes = uint64_t{256} << 20;  // the core, its libraries
inline constexpr uint64_t kMaxEnclaveBytes = uint64_t{1} << 40;     // 1 TiB: more is a mistake
inline constexpr uint32_t kMaxEnclaveThreads = 1024;
inline constexpr uint32_t kGramineInternalThreads = 4;  // Gramine's own threads need these
inline constexpr std::string_view kEnclaveBundleMount = "/mlcapsule";
inline constexpr std::string_view kEnclaveStateMount = "/state";
inline constexpr std::string_view kHostLibraryDir = "/usr/lib/x86_64-linux-gnu";

struct GramineManifestOptions {
  std::string core_path;       // mlcapsule-core on this machine (its directory becomes /mlcapsule)
  std::string state_dir;       // the host directory mounted at /state (one per capsule)
  uint64_t capsule_bytes = 0;  // the largest capsule the enclave will run (0: not given)
  uint32_t threads = 4;        // OMP_NUM_THREADS, 1..kMaxEnclaveThreads
  uint64_t enclave_size = 0;   // 0: EstimateEnclaveSize(capsule_bytes); else a power of two
  uint16_t isv_prod_id = 0;
  uint16_t isv_svn = 0;
  // `ldd core_path`'s output, for tests; unset: ldd is run (it may load the core's libraries,
  // so core_path must be a binary the caller trusts, as it is the provider's own).
  std::optional<std::string> ldd_output;
};

// The manifest template, or an error naming the option or library at fault (a library ldd did
// not find, one outside the directories the enclave mounts, an enclave size that is not a power
// of two or below the base, a path gramine-manifest would misread as a template expression).
Result<std::string> GramineManifest(const GramineManifestOptions& options);

// kEnclaveBaseBytes + 3 x the capsule (the plan, its weights decrypted, the activations), rounded
// up to a power of two (SGX requires one).
Result<uint64_t> EstimateEnclaveSize(uint64_t capsule_bytes);
// "512M", "8G", "1073741824" (suffixes K, M, G, T, binary). Any size; GramineManifest checks it.
Result<uint64_t> ParseEnclaveSize(std::string_view text);
// As Gramine writes sizes: the largest of G, M, K that divides `bytes` ("1G", "1536M").
std::string FormatEnclaveSize(uint64_t bytes);

// One line of `ldd` output that names a library file.
struct SharedLibrary {
  std::string name;  // the DT_NEEDED name ("libdnnl.so.2"), or the file name for the interpreter
  std::string path;  // as ldd printed it ("/lib/x86_64-linux-gnu/libdnnl.so.2")
};
// Every library in `output` (duplicates dropped, linux-vdso skipped); "not found" is an error
// naming the library and `binary`.
Result<std::vector<SharedLibrary>> ParseLddOutput(std::string_view output, std::string_view binary);
// glibc's own libraries (libc.so.6, libm.so.6, ld-linux-x86-64.so.2, ...): inside the enclave
// Gramine's patched glibc from its runtime directory replaces them.
bool IsGlibcLibrary(std::string_view name);
// Runs /usr/bin/ldd on `binary` with a clean environment (PATH, LC_ALL=C): stdout, bounded.
Result<std::string> RunLdd(const std::string& binary);

// A TOML basic string: quoted, with `"`, `\` and control characters escaped.
std::string TomlString(std::string_view text);

}  // namespace mlcapsule::tee
