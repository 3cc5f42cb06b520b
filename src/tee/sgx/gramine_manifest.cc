// The Gramine manifest template writer (gramine_manifest.h). Host paths end up in TOML strings
// that gramine-manifest first renders as a jinja2 template, so each one is checked twice: valid
// UTF-8 (TOML requires it) and free of jinja delimiters (else rendering would evaluate it), and
// then escaped as a TOML basic string.
#include "tee/sgx/gramine_manifest.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace mlcapsule::tee {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLdd = "/usr/bin/ldd";
constexpr size_t kMaxLddOutputBytes = 1 << 20;

constexpr std::array<std::string_view, 20> kGlibcLibraries = {"ld-linux-x86-64.so.2",
                                                              "libc.so.6",
                                                              "libm.so.6",
                                                              "libmvec.so.1",
                                                              "libpthread.so.0",
                                                              "libdl.so.2",
                                                              "librt.so.1",
                                                              "libresolv.so.2",
                                                              "libutil.so.1",
                                                              "libnsl.so.1",
                                                              "libanl.so.1",
                                                              "libBrokenLocale.so.1",
                                                              "libthread_db.so.1",
                                                              "libc_malloc_debug.so.0",
                                                              "libnss_files.so.2",
                                                              "libnss_dns.so.2",
                                                              "libnss_compat.so.2",
                                                              "libnss_hesiod.so.2",
                                                              "libmemusage.so",
                                                              "libpcprofile.so"};

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t extra = 0;
    uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= text.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    static constexpr uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
      return false;
    i += extra + 1;
  }
  return true;
}

// A host path that goes into the template.
Status CheckTemplatePath(std::string_view path, std::string_view what) {
  if (!IsValidUtf8(path))
    return InvalidArgument("{} {} is not valid UTF-8, which a TOML manifest cannot hold", what,
                           TomlString(path));
  for (std::string_view delimiter : {"{{", "{%", "{#"}) {
    if (path.find(delimiter) != std::string_view::npos)
      return InvalidArgument(
          "{} {} contains '{}', which gramine-manifest would read as a template expression; "
          "rename it",
          what, TomlString(path), delimiter);
  }
  return Status::Ok();
}

// `path` made absolute with symbolic links resolved where they exist.
Result<fs::path> Canonical(const fs::path& path, std::string_view what) {
  std::error_code error;
  fs::path absolute = fs::absolute(path, error);
  if (error) return IoError("cannot resolve {} {}: {}", what, path.string(), error.message());
  fs::path canonical = fs::weakly_canonical(absolute, error);
  if (error) return IoError("cannot resolve {} {}: {}", what, path.string(), error.message());
  return canonical.lexically_normal();
}

std::string WithoutTrailingSlash(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}

// "PATH (0x00007f...)" -> "PATH".
std::string_view WithoutLoadAddress(std::string_view text) {
  const size_t at = text.rfind(" (0x");
  if (at != std::string_view::npos && text.back() == ')') text = text.substr(0, at);
  return Trim(text);
}

std::string_view BaseName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string StringArray(const std::vector<std::string>& items) {
  std::string out = "[\n";
  for (const std::string& item : items) out += "  " + TomlString(item) + ",\n";
  return out + "]";
}

}  // namespace

std::string TomlString(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04X}", c);
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

bool IsGlibcLibrary(std::string_view name) {
  return std::find(kGlibcLibraries.begin(), kGlibcLibraries.end(), name) != kGlibcLibraries.end();
}

Result<uint64_t> EstimateEnclaveSize(uint64_t capsule_bytes) {
  if (capsule_bytes > (kMaxEnclaveBytes - kEnclaveBaseBytes) / 3)
    return InvalidArgument("a capsule of {} bytes needs more than the {} byte enclave limit",
                           capsule_bytes, kMaxEnclaveBytes);
  return std::bit_ceil(kEnclaveBaseBytes + 3 * capsule_bytes);
}

Result<uint64_t> ParseEnclaveSize(std::string_view text) {
  std::string_view digits = text;
  unsigned shift = 0;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        break;
    }
    if (shift != 0) digits.remove_suffix(1);
  }
  if (digits.empty() || digits.size() > 19 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return InvalidArgument(
        "enclave size '{}' is not a number of bytes with an optional K, M, G or T suffix",
        text.substr(0, 40));
  uint64_t value = 0;
  for (char c : digits) value = value * 10 + static_cast<uint64_t>(c - '0');
  if (value > (kMaxEnclaveBytes >> shift))
    return InvalidArgument("enclave size '{}' is over the {} byte limit", text, kMaxEnclaveBytes);
  return value << shift;
}

std::string FormatEnclaveSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (uint64_t{1} << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes != 0 && bytes % (uint64_t{1} << 20) == 0) return fmt::format("{}M", bytes >> 20);
  if (bytes != 0 && bytes % (uint64_t{1} << 10) == 0) return fmt::format("{}K", bytes >> 10);
  return fmt::format("{}", bytes);
}

Result<std::vector<SharedLibrary>> ParseLddOutput(std::string_view output,
                                                  std::string_view binary) {
  std::vector<SharedLibrary> libraries;
  size_t line_number = 0;
  while (!output.empty()) {
    const size_t end = output.find('\n');
    const std::string_view line = Trim(output.substr(0, end));
    output = end == std::string_view::npos ? std::string_view() : output.substr(end + 1);
    ++line_number;
    if (line.empty()) continue;
    SharedLibrary library;
    const size_t arrow = line.find(" => ");
    if (arrow != std::string_view::npos) {
      library.name = std::string(Trim(line.substr(0, arrow)));
      const std::string_view target = Trim(line.substr(arrow + 4));
      if (target.starts_with("not found"))
        return FailedPrecondition(
            "ldd found no {} for {}: install it, or the enclave could not load the core",
            library.name, binary);
      library.path = std::string(WithoutLoadAddress(target));
      if (library.path.empty()) continue;  // "linux-vdso.so.1 =>  (0x...)": in the kernel
    } else {
      const std::string_view entry = WithoutLoadAddress(line);
      if (entry.starts_with("linux-vdso") || entry.starts_with("linux-gate")) continue;
      if (!entry.starts_with("/"))
        return InvalidArgument("ldd output for {}, line {}: '{}' names no library file", binary,
                               line_number, line.substr(0, 200));
      library.path = std::string(entry);
      library.name = std::string(BaseName(entry));
    }
    if (!library.path.starts_with("/"))
      return InvalidArgument("ldd output for {}, line {}: '{}' is not an absolute path", binary,
                             line_number, library.path.substr(0, 200));
    const bool seen = std::any_of(libraries.begin(), libraries.end(),
                                  [&](const SharedLibrary& l) { return l.path == library.path; });
    if (!seen) libraries.push_back(std::move(library));
  }
  return libraries;
}

Result<std::string> RunLdd(const std::string& binary) {
  // Two pipes: stdout is the library list, stderr ldd's complaints (kept for the error message).
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0)
    return IoError("cannot make a pipe for ldd: {}", std::strerror(errno));
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int error = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return IoError("cannot make a pipe for ldd: {}", std::strerror(error));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::string path_arg = binary;
  char* argv[] = {const_cast<char*>("ldd"), const_cast<char*>("--"), path_arg.data(), nullptr};
  char* envp[] = {const_cast<char*>("PATH=/usr/bin:/bin"), const_cast<char*>("LC_ALL=C"), nullptr};
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, kLdd, &actions, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (spawned != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return FailedPrecondition("cannot run {} (Debian package libc-bin): {}", kLdd,
                              std::strerror(spawned));
  }
  std::string output, errors;
  bool over = false;
  struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&output, &errors};
  int open_count = 2;
  char buffer[4096];
  while (open_count > 0 && !over) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;  // closed below; poll ignores negative descriptors
        --open_count;
        continue;
      }
      if (sinks[i]->size() + static_cast<size_t>(n) > kMaxLddOutputBytes) {
        over = true;
        kill(pid, SIGKILL);  // our own child
        break;
      }
      sinks[i]->append(buffer, static_cast<size_t>(n));
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (over) return ResourceExhausted("ldd {} wrote more than {} bytes", binary, kMaxLddOutputBytes);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string& said = errors.empty() ? output : errors;
    return FailedPrecondition(
        "ldd {} failed (status {}): {}; the core must be a dynamically linked executable", binary,
        WIFEXITED(status) ? WEXITSTATUS(status) : -1,
        Trim(std::string_view(said).substr(0, std::min<size_t>(said.find('\n'), 200))));
  }
  return output;
}

Result<std::string> GramineManifest(const GramineManifestOptions& options) {
  // Options first: nothing is run before they are all known to be good.
  if (options.core_path.empty()) return InvalidArgument("the core binary is not set");
  if (options.state_dir.empty())
    return InvalidArgument(
        "the state directory is not set (the host directory mounted at {}; one per capsule)",
        kEnclaveStateMount);
  if (options.threads < 1 || options.threads > kMaxEnclaveThreads)
    return InvalidArgument("threads {} is outside 1..{}", options.threads, kMaxEnclaveThreads);
  MLC_ASSIGN_OR_RETURN(const uint64_t estimate, EstimateEnclaveSize(options.capsule_bytes));
  const uint64_t enclave_size = options.enclave_size == 0 ? estimate : options.enclave_size;
  if (!std::has_single_bit(enclave_size))
    return InvalidArgument("enclave size {} ({} bytes) is not a power of two, which SGX requires",
                           FormatEnclaveSize(enclave_size), enclave_size);
  if (enclave_size < kEnclaveBaseBytes || enclave_size > kMaxEnclaveBytes)
    return InvalidArgument("enclave size {} is outside {}..{} (the core alone needs {})",
                           FormatEnclaveSize(enclave_size), FormatEnclaveSize(kEnclaveBaseBytes),
                           FormatEnclaveSize(kMaxEnclaveBytes),
                           FormatEnclaveSize(kEnclaveBaseBytes));

  MLC_ASSIGN_OR_RETURN(const fs::path core, Canonical(options.core_path, "the core binary"));
  struct stat info {};
  if (stat(core.c_str(), &info) != 0)
    return IoError("cannot find the core binary {}: {}", core.string(), std::strerror(errno));
  if (!S_ISREG(info.st_mode))
    return InvalidArgument("the core binary {} is not a regular file", core.string());
  const std::string bundle = WithoutTrailingSlash(core.parent_path().string());
  const std::string core_name = core.filename().string();
  MLC_RETURN_IF_ERROR(CheckTemplatePath(core.string(), "the core binary"));
  MLC_ASSIGN_OR_RETURN(const fs::path state_path,
                       Canonical(options.state_dir, "the state directory"));
  const std::string state = WithoutTrailingSlash(state_path.string());
  MLC_RETURN_IF_ERROR(CheckTemplatePath(state, "the state directory"));
  if (state == "/")
    return InvalidArgument("the state directory cannot be / (it is mounted read-write at {})",
                           kEnclaveStateMount);

  std::string ldd_output;
  if (options.ldd_output) {
    ldd_output = *options.ldd_output;
  } else {
    MLC_ASSIGN_OR_RETURN(ldd_output, RunLdd(core.string()));
  }
  MLC_ASSIGN_OR_RETURN(std::vector<SharedLibrary> libraries,
                       ParseLddOutput(ldd_output, core.string()));

  std::vector<std::string> trusted = {"file:{{ gramine.libos }}",
                                      "file:{{ gramine.runtimedir() }}/", "file:" + core.string()};
  bool libraries_in_bundle = false;
  for (const SharedLibrary& library : libraries) {
    if (IsGlibcLibrary(library.name) || IsGlibcLibrary(BaseName(library.path))) continue;
    // Where the loader inside the enclave finds it: the directory with links resolved (/lib is
    // /usr/lib on Debian), under the file name ldd printed (the soname link itself).
    const fs::path path(library.path);
    MLC_ASSIGN_OR_RETURN(const fs::path directory,
                         Canonical(path.parent_path(), "the directory of " + library.name));
    const std::string dir = WithoutTrailingSlash(directory.string());
    if (dir == bundle) {
      libraries_in_bundle = true;
    } else if (dir != kHostLibraryDir) {
      return FailedPrecondition(
          "{} ({}) is in {}, which the enclave does not mount: put it beside the core in {} or "
          "install it in {}",
          library.name, library.path, dir, bundle, kHostLibraryDir);
    }
    const std::string file = dir + "/" + path.filename().string();
    MLC_RETURN_IF_ERROR(CheckTemplatePath(file, "the library"));
    const std::string uri = "file:" + file;
    if (std::find(trusted.begin(), trusted.end(), uri) == trusted.end()) trusted.push_back(uri);
  }

  std::string library_path = "/lib:" + std::string(kHostLibraryDir);
  if (libraries_in_bundle) library_path += ":" + std::string(kEnclaveBundleMount);
  const std::vector<std::string> argv = {
      "mlcapsule-core", "--stdio", "--platform", "sgx", "--state", std::string(kEnclaveStateMount)};
  std::string argv_text = "[";
  for (size_t i = 0; i < argv.size(); ++i) argv_text += (i ? ", " : "") + TomlString(argv[i]);
  argv_text += "]";

  std::string out;
  out +=
      "# mlcapsule-core inside an SGX enclave under Gramine 1.8 or later: a manifest TEMPLATE,\n"
      "# written by `mlcapsule tee gramine-manifest`. Render it, sign it, run it (same "
      "directory):\n"
      "#   gramine-manifest THIS_FILE mlcapsule-core.manifest\n"
      "#   gramine-sgx-sign --manifest mlcapsule-core.manifest --output "
      "mlcapsule-core.manifest.sgx\n"
      "#   gramine-sgx mlcapsule-core        (the host starts it and talks over stdin/stdout)\n"
      "# Everything below is measured into MRENCLAVE; allow-list the signer in the capsule policy\n"
      "# (tee.sgx.mr_signers, isv_prod_id, min_isv_svn). Do not add insecure options.\n\n";
  out += fmt::format("libos.entrypoint = {}\n",
                     TomlString(std::string(kEnclaveBundleMount) + "/" + core_name));
  out += "loader.entrypoint.uri = \"file:{{ gramine.libos }}\"\n";
  out += "loader.log_level = \"error\"\n";
  out += fmt::format("loader.argv = {}\n", argv_text);
  out += fmt::format("loader.env.LD_LIBRARY_PATH = {}\n", TomlString(library_path));
  out += fmt::format("loader.env.OMP_NUM_THREADS = {}\n\n",
                     TomlString(std::to_string(options.threads)));
  out += "fs.mounts = [\n";
  out += "  { path = \"/lib\", uri = \"file:{{ gramine.runtimedir() }}\" },\n";
  out += fmt::format("  {{ path = {}, uri = {} }},\n", TomlString(kHostLibraryDir),
                     TomlString("file:" + std::string(kHostLibraryDir)));
  out += fmt::format("  {{ path = {}, uri = {} }},\n", TomlString(kEnclaveBundleMount),
                     TomlString("file:" + bundle));
  out += fmt::format("  {{ path = {}, uri = {} }},\n", TomlString(kEnclaveStateMount),
                     TomlString("file:" + state));
  out += "  { type = \"tmpfs\", path = \"/tmp\" },\n";
  out += "]\n\n";
  out += "sys.disallow_subprocesses = true\n";
  out += "sys.stack.size = \"2M\"\n\n";
  out += "sgx.debug = false\n";
  out += "sgx.remote_attestation = \"dcap\"\n";
  out += fmt::format("sgx.enclave_size = {}\n", TomlString(FormatEnclaveSize(enclave_size)));
  out += fmt::format("sgx.max_threads = {}\n", options.threads + kGramineInternalThreads);
  out += fmt::format("sgx.isvprodid = {}\n", options.isv_prod_id);
  out += fmt::format("sgx.isvsvn = {}\n", options.isv_svn);
  out += fmt::format("sgx.trusted_files = {}\n", StringArray(trusted));
  // The state directory holds only the counter (and, while it is first created, its temporary
  // file, renamed into place: Gramine has no hard links). The counter is MAC'd by the core
  // (integrity), but the host can replace it with an older copy (no freshness):
  // docs/tee-backends.md says what that costs.
  out += fmt::format("sgx.allowed_files = {}\n", StringArray({"file:" + state + "/"}));
  return out;
}

}  // namespace mlcapsule::tee
