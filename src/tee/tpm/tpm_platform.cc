// The TPM 2.0 Platform (tpm_platform.h has the objects, the state file grammar and what it is
// worth). Everything the TPM and STATE/tpm-state return is checked before use: sizes against
// the structures' limits, the quote against what was asked, the NV index's name against the one
// stored when provisioning. Every transient object and session is flushed on every path (with no
// resource manager, leaked objects fill the TPM's few slots).
#include "tee/tpm/tpm_platform.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/bytes.h"
#include "base/unique_fd.h"
#include "capsule/tpm_evidence.h"
#include "tee/common/file_counter.h"

namespace mlcapsule::tee {
namespace {

constexpr uint64_t kMaxStateBlobBytes = 1 << 10;
constexpr uint64_t kMaxNameBytes = sizeof(TPMU_NAME);
constexpr size_t kMaxStateFileBytes = 16 << 10;
constexpr size_t kMaxChainFileBytes = 64 << 10;
constexpr size_t kSeedBytes = 32;
constexpr int kBusyRetries = 5;  // TPM_RC_RETRY/YIELDED/TESTING, after ESYS's own resubmissions
constexpr std::string_view kPemBegin = "-----BEGIN CERTIFICATE-----";
constexpr std::string_view kPemEnd = "-----END CERTIFICATE-----";

// TCG default EK (template L-1) authPolicy: PolicySecret(TPM_RH_ENDORSEMENT).
constexpr uint8_t kEkPolicy[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
                                   0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
                                   0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};

std::string Errno() { return std::strerror(errno); }

using Fd = UniqueFd;

// Memory ESYS returned (Esys_Free); WipeFree first wipes it (unsealed data, secrets).
struct EsysFree {
  void operator()(void* pointer) const { Esys_Free(pointer); }
};
template <typename T>
using EsysPtr = std::unique_ptr<T, EsysFree>;
template <typename T>
struct WipeFree {
  void operator()(T* pointer) const {
    if (pointer != nullptr) sodium_memzero(pointer, sizeof(T));
    Esys_Free(pointer);
  }
};
template <typename T>
using SecretEsysPtr = std::unique_ptr<T, WipeFree<T>>;

// TPM format-one codes without their handle/session/parameter number; format-zero codes as is.
// 0 for a return code from a software layer (ESYS, SAPI, MU, TCTI).
uint32_t TpmCode(TSS2_RC rc) {
  if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER) return 0;
  if ((rc & TPM2_RC_FMT1) != 0) return TPM2_RC_FMT1 | (rc & 0x3F);
  return rc & 0xFFF;
}

bool IsTransportFailure(TSS2_RC rc) {
  const TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  if (layer == TSS2_TCTI_RC_LAYER) return true;
  // A response the SAPI could not frame: the TPM (or what pretends to be one) is not sane.
  return rc == TSS2_SYS_RC_INSUFFICIENT_RESPONSE || rc == TSS2_SYS_RC_MALFORMED_RESPONSE;
}

std::string Decode(TSS2_RC rc) { return fmt::format("{} (0x{:x})", Tss2_RC_Decode(rc), rc); }

std::string Hex32(uint32_t value) { return fmt::format("0x{:08x}", value); }

using capsule::Sha256;

void SleepMs(int64_t ms) {
  struct timespec delay {};
  delay.tv_sec = ms / 1000;
  delay.tv_nsec = (ms % 1000) * 1000000;
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &delay, &delay) == EINTR) {
  }
}

TPML_PCR_SELECTION Pcr23Selection() {
  TPML_PCR_SELECTION selection{};
  selection.count = 1;
  selection.pcrSelections[0].hash = TPM2_ALG_SHA256;
  selection.pcrSelections[0].sizeofSelect = 3;
  selection.pcrSelections[0].pcrSelect[capsule::kTpmPcrIndex / 8] =
      static_cast<uint8_t>(1u << (capsule::kTpmPcrIndex % 8));
  return selection;
}

TPM2B_PUBLIC SrkTemplate() {
  TPM2B_PUBLIC srk{};
  TPMT_PUBLIC& area = srk.publicArea;
  area.type = TPM2_ALG_ECC;
  area.nameAlg = TPM2_ALG_SHA256;
  area.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
  area.parameters.eccDetail.symmetric.keyBits.aes = 128;
  area.parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  area.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
  area.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  area.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  area.unique.ecc.x.size = 32;
  area.unique.ecc.y.size = 32;
  return srk;
}

TPM2B_PUBLIC AkTemplate() {
  TPM2B_PUBLIC ak{};
  TPMT_PUBLIC& area = ak.publicArea;
  area.type = TPM2_ALG_ECC;
  area.nameAlg = TPM2_ALG_SHA256;
  area.objectAttributes = kTpmAkAttributes;
  area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
  area.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
  area.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
  area.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
  area.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
  return ak;
}

TPM2B_PUBLIC SeedTemplate(const TPM2B_DIGEST& policy) {
  TPM2B_PUBLIC seed{};
  TPMT_PUBLIC& area = seed.publicArea;
  area.type = TPM2_ALG_KEYEDHASH;
  area.nameAlg = TPM2_ALG_SHA256;
  // No userWithAuth: only a policy session (the PCR policy) may unseal.
  area.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA;
  area.authPolicy = policy;
  area.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
  return seed;
}

// TCG EK Credential Profile, template L-1 (RSA-2048, AES-128-CFB, PolicySecret(endorsement)).
TPM2B_PUBLIC EkTemplate() {
  TPM2B_PUBLIC ek{};
  TPMT_PUBLIC& area = ek.publicArea;
  area.type = TPM2_ALG_RSA;
  area.nameAlg = TPM2_ALG_SHA256;
  area.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
  area.authPolicy.size = sizeof(kEkPolicy);
  std::memcpy(area.authPolicy.buffer, kEkPolicy, sizeof(kEkPolicy));
  area.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
  area.parameters.rsaDetail.symmetric.keyBits.aes = 128;
  area.parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
  area.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
  area.parameters.rsaDetail.keyBits = 2048;
  area.parameters.rsaDetail.exponent = 0;
  area.unique.rsa.size = 256;
  return ek;
}

TPMT_SYM_DEF NullSymmetric() {
  TPMT_SYM_DEF symmetric{};
  symmetric.algorithm = TPM2_ALG_NULL;
  return symmetric;
}

template <typename T>
using MarshalFn = TSS2_RC (*)(const T*, uint8_t[], size_t, size_t*);
template <typename T>
using UnmarshalFn = TSS2_RC (*)(const uint8_t[], size_t, size_t*, T*);

template <typename T>
Result<std::vector<uint8_t>> Marshal(const T& value, MarshalFn<T> marshal, std::string_view what) {
  std::vector<uint8_t> out(sizeof(T) + 64);
  size_t offset = 0;
  const TSS2_RC rc = marshal(&value, out.data(), out.size(), &offset);
  if (rc != TSS2_RC_SUCCESS) return InternalError("cannot marshal the {}: {}", what, Decode(rc));
  out.resize(offset);
  return out;
}

// Unmarshals exactly `bytes` (trailing bytes and oversize TPM2B fields are refused).
template <typename T>
Status Unmarshal(std::span<const uint8_t> bytes, UnmarshalFn<T> unmarshal, T* out,
                 std::string_view what) {
  size_t offset = 0;
  const TSS2_RC rc = unmarshal(bytes.data(), bytes.size(), &offset, out);
  if (rc != TSS2_RC_SUCCESS)
    return InvalidArgument("{} ({} bytes) is not a valid TPM structure: {}", what, bytes.size(),
                           Decode(rc));
  if (offset != bytes.size())
    return InvalidArgument("{} has {} trailing bytes after its {} bytes", what,
                           bytes.size() - offset, offset);
  return Status::Ok();
}

// The length of the DER element at the start of `bytes` (a certificate is one SEQUENCE; NV
// certificate indices may be padded after it). 0 when it is not a SEQUENCE with a definite
// length that fits.
size_t DerLength(std::span<const uint8_t> bytes) {
  if (bytes.size() < 2 || bytes[0] != 0x30) return 0;
  size_t header = 2, length = bytes[1];
  if (length & 0x80) {
    const size_t count = length & 0x7F;
    if (count == 0 || count > 3 || bytes.size() < 2 + count) return 0;
    length = 0;
    for (size_t i = 0; i < count; ++i) length = (length << 8) | bytes[2 + i];
    header += count;
  }
  if (header + length > bytes.size()) return 0;
  return header + length;
}

Result<std::vector<uint8_t>> ReadSmallFile(const std::string& path, size_t max_bytes) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("cannot open {}: {}", path, Errno());
  std::vector<uint8_t> bytes(max_bytes + 1);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read {}: {}", path, Errno());
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > max_bytes) return InvalidArgument("{} is over {} bytes", path, max_bytes);
  bytes.resize(done);
  return bytes;
}

// A PEM file (one or more CERTIFICATE blocks) or one DER certificate.
Status LoadChainFile(const std::string& path, std::vector<std::vector<uint8_t>>* chain) {
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadSmallFile(path, kMaxChainFileBytes));
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::vector<std::vector<uint8_t>> found;
  if (text.find(kPemBegin) != std::string_view::npos) {
    size_t pos = 0;
    while ((pos = text.find(kPemBegin, pos)) != std::string_view::npos) {
      const size_t body = pos + kPemBegin.size();
      const size_t end = text.find(kPemEnd, body);
      if (end == std::string_view::npos)
        return InvalidArgument("{}: a certificate block has no {} line", path, kPemEnd);
      std::string base64;
      for (char c : text.substr(body, end - body))
        if (c != '\n' && c != '\r' && c != ' ' && c != '\t') base64.push_back(c);
      MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> der,
                           capsule::FromBase64(base64, capsule::kMaxTpmCertBytes,
                                               fmt::format("certificate in {}", path)));
      found.push_back(std::move(der));
      pos = end + kPemEnd.size();
    }
  } else {
    found.push_back(std::move(bytes));
  }
  for (const std::vector<uint8_t>& der : found) {
    if (der.size() > capsule::kMaxTpmCertBytes)
      return InvalidArgument("{}: a certificate of {} bytes is over the limit {}", path, der.size(),
                             capsule::kMaxTpmCertBytes);
    if (DerLength(der) != der.size())
      return InvalidArgument("{} is neither PEM nor one DER certificate", path);
    if (chain->size() >= capsule::kMaxTpmChainCerts)
      return InvalidArgument("the EK chain files hold more than {} certificates",
                             capsule::kMaxTpmChainCerts);
    chain->push_back(der);
  }
  return Status::Ok();
}

// STATE/tpm-state (grammar in tpm_platform.h).
struct StateFile {
  uint32_t counter_index = 0;
  std::vector<uint8_t> counter_name;
  capsule::Digest measurement{};
  std::vector<uint8_t> ak_public, ak_private, seed_public, seed_private;
};

std::vector<uint8_t> EncodeState(const StateFile& state) {
  ByteWriter writer;
  writer.Bytes(kTpmStateMagic.data(), kTpmStateMagic.size());
  writer.Pod<uint32_t>(kTpmStateVersion);
  writer.Pod<uint32_t>(state.counter_index);
  writer.Blob(state.counter_name);
  writer.Bytes(state.measurement);
  writer.Blob(state.ak_public);
  writer.Blob(state.ak_private);
  writer.Blob(state.seed_public);
  writer.Blob(state.seed_private);
  const capsule::Digest check = capsule::Hash({writer.span()});
  writer.Bytes(check);
  const std::span<const uint8_t> bytes = writer.span();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

Result<StateFile> ParseState(std::span<const uint8_t> bytes, const std::string& path) {
  if (bytes.size() < kTpmStateMagic.size() + 32)
    return DataLoss("{} has {} bytes: it is truncated", path, bytes.size());
  const std::span<const uint8_t> body = bytes.first(bytes.size() - 32);
  const capsule::Digest check = capsule::Hash({body});
  if (!capsule::ConstantTimeEqual(check, bytes.last(32)))
    return DataLoss("{} fails its checksum: it is corrupt", path);
  ByteReader reader(body, path);
  char magic[kTpmStateMagic.size()] = {};
  MLC_RETURN_IF_ERROR(reader.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kTpmStateMagic.data(), sizeof(magic)) != 0)
    return DataLoss("{} does not start with {}", path, kTpmStateMagic);
  uint32_t version = 0;
  MLC_RETURN_IF_ERROR(reader.Pod(&version, "version"));
  if (version != kTpmStateVersion)
    return Unsupported("{} has version {}; this core reads version {}", path, version,
                       kTpmStateVersion);
  StateFile state;
  MLC_RETURN_IF_ERROR(reader.Pod(&state.counter_index, "counter_index"));
  MLC_RETURN_IF_ERROR(reader.Blob(&state.counter_name, kMaxNameBytes, "counter_name"));
  MLC_RETURN_IF_ERROR(
      reader.Bytes(state.measurement.data(), state.measurement.size(), "measurement"));
  MLC_RETURN_IF_ERROR(reader.Blob(&state.ak_public, kMaxStateBlobBytes, "ak_public"));
  MLC_RETURN_IF_ERROR(reader.Blob(&state.ak_private, kMaxStateBlobBytes, "ak_private"));
  MLC_RETURN_IF_ERROR(reader.Blob(&state.seed_public, kMaxStateBlobBytes, "seed_public"));
  MLC_RETURN_IF_ERROR(reader.Blob(&state.seed_private, kMaxStateBlobBytes, "seed_private"));
  MLC_RETURN_IF_ERROR(reader.ExpectEnd());
  return state;
}

Status WriteAll(int fd, std::span<const uint8_t> bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError("cannot write {}: {}", path, Errno());
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Creates dir/name with `bytes` (0600), atomically: a synced temporary file linked into place.
// AlreadyExists when another process created it first.
Status CreateFileAtomically(const std::string& dir, std::string_view name,
                            std::span<const uint8_t> bytes) {
  Fd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) return IoError("cannot open the state directory {}: {}", dir, Errno());
  const std::string final_name(name);
  const std::string temp_name = final_name + ".tmp." + std::to_string(getpid());
  const std::string temp_path = dir + "/" + temp_name;
  (void)unlinkat(dir_fd.get(), temp_name.c_str(), 0);
  Fd fd(openat(dir_fd.get(), temp_name.c_str(),
               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return IoError("cannot create {}: {}", temp_path, Errno());
  Status status = WriteAll(fd.get(), bytes, temp_path);
  if (status.ok() && fsync(fd.get()) != 0)
    status = IoError("cannot sync {}: {}", temp_path, Errno());
  if (status.ok() &&
      linkat(dir_fd.get(), temp_name.c_str(), dir_fd.get(), final_name.c_str(), 0) != 0) {
    status = errno == EEXIST ? AlreadyExists("{}/{} was created by another process", dir, name)
                             : IoError("cannot create {}/{}: {}", dir, name, Errno());
  }
  (void)unlinkat(dir_fd.get(), temp_name.c_str(), 0);
  if (status.ok() && fsync(dir_fd.get()) != 0)
    status = IoError("cannot sync the state directory {}: {}", dir, Errno());
  return status;
}

Status FillRandom(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InternalError("getrandom failed: {}", Errno());
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

struct TpmPlatform::Impl {
  std::string device;
  uint32_t counter_index = kDefaultTpmCounterIndex;
  std::optional<FdTcti> transport;
  TSS2_TCTI_CONTEXT* tcti = nullptr;
  ESYS_CONTEXT* esys = nullptr;
  // The AK as a saved context: loaded for each use and flushed after it, so that no transient
  // slot is held between calls (and none leaks when the process dies between them).
  EsysPtr<TPMS_CONTEXT> ak_context;
  ESYS_TR nv = ESYS_TR_NONE;          // the counter index (an ESYS handle, nothing in the TPM)
  ESYS_TR ek = ESYS_TR_NONE;          // persistent EK, or NONE (created per activation)
  std::vector<uint8_t> counter_name;  // as recorded in STATE/tpm-state
  int state_fd = -1;                  // STATE/tpm-state, flock'ed
  bool unreachable = false;
  std::string unreachable_reason;
  uint64_t counter = 0;
  capsule::Digest measurement{};
  capsule::SecretBytes sealing_key;
  capsule::SecretBytes counter_auth;
  std::vector<std::vector<uint8_t>> ek_chain;

  ~Impl() {
    if (esys != nullptr) {
      Esys_Finalize(&esys);
    }
    if (state_fd >= 0) close(state_fd);
  }

  // Flushes a transient object or session when it goes out of scope.
  class Scoped {
   public:
    explicit Scoped(Impl* impl) : impl_(impl) {}
    Scoped(const Scoped&) = delete;
    Scoped& operator=(const Scoped&) = delete;
    ~Scoped() { Reset(); }
    ESYS_TR* out() { return &handle_; }
    ESYS_TR get() const { return handle_; }
    ESYS_TR release() { return std::exchange(handle_, ESYS_TR_NONE); }
    void Reset() {
      if (handle_ != ESYS_TR_NONE && !impl_->unreachable)
        (void)Esys_FlushContext(impl_->esys, handle_);
      handle_ = ESYS_TR_NONE;
    }

   private:
    Impl* impl_;
    ESYS_TR handle_ = ESYS_TR_NONE;
  };

  std::string TransportDetail() const {
    if (transport && !transport->last_error().empty()) return transport->last_error();
    return "the transport failed";
  }

  Status Unreachable(std::string_view what, TSS2_RC rc) {
    if (!unreachable) {
      unreachable = true;
      unreachable_reason = fmt::format("{} failed: {} [{}]", what, TransportDetail(), Decode(rc));
    }
    return Unavailable(
        "TPM {} unreachable: {}; the core does not reconnect after start-up (its state is kept "
        "in memory): restart it once the TPM is back",
        device, unreachable_reason);
  }

  Status CheckReachable() const {
    if (!unreachable) return Status::Ok();
    return Unavailable(
        "TPM {} unreachable: {}; the core does not reconnect after start-up (its state is kept "
        "in memory): restart it once the TPM is back",
        device, unreachable_reason);
  }

  // The Status for a failed TPM call `what`.
  Status Fail(std::string_view what, TSS2_RC rc) {
    if (IsTransportFailure(rc) || (transport && transport->broken())) return Unreachable(what, rc);
    switch (TpmCode(rc)) {
      case TPM2_RC_NV_RATE:
        return ResourceExhausted(
            "{}: the TPM is rate-limiting NV writes against wear ({}); seal less often (a larger "
            "lease.seal_every) and retry later",
            what, Decode(rc));
      case TPM2_RC_OBJECT_MEMORY:
      case TPM2_RC_SESSION_MEMORY:
        return ResourceExhausted(
            "{}: the TPM has no free object or session slot ({}); another program holds them, "
            "or objects leaked on a TPM without resource manager (use /dev/tpmrm0, or restart "
            "swtpm)",
            what, Decode(rc));
      case TPM2_RC_RETRY:
      case TPM2_RC_YIELDED:
      case TPM2_RC_TESTING:
      case TPM2_RC_NV_UNAVAILABLE:
        return IoError("{}: the TPM stayed busy ({}) after {} retries", what, Decode(rc),
                       kBusyRetries);
      default:
        return InternalError("{} failed: {}", what, Decode(rc));
    }
  }

  // Runs one ESYS call, retrying the TPM's "busy" warnings with a bounded backoff (20 ms, x2).
  template <typename F>
  TSS2_RC Run(F&& call) {
    int64_t delay_ms = 20;
    for (int attempt = 0;; ++attempt) {
      const TSS2_RC rc = call();
      const uint32_t code = TpmCode(rc);
      const bool busy = code == TPM2_RC_RETRY || code == TPM2_RC_YIELDED ||
                        code == TPM2_RC_TESTING || code == TPM2_RC_NV_UNAVAILABLE;
      if (!busy || attempt >= kBusyRetries) return rc;
      SleepMs(delay_ms);
      delay_ms *= 2;
    }
  }

  Status CreateSrk(Scoped* srk) {
    const TPM2B_SENSITIVE_CREATE sensitive{};
    const TPM2B_PUBLIC in_public = SrkTemplate();
    const TPM2B_DATA outside{};
    const TPML_PCR_SELECTION creation_pcr{};
    const TSS2_RC rc = Run([&] {
      return Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sensitive, &in_public, &outside, &creation_pcr,
                                srk->out(), nullptr, nullptr, nullptr, nullptr);
    });
    if (rc != TSS2_RC_SUCCESS)
      return Fail(
          "creating the storage root key (ECC P-256 primary under the owner hierarchy, "
          "empty owner auth)",
          rc);
    return Status::Ok();
  }

  // PCR 23 := extend(reset, event) for each event.
  Status ResetAndExtendPcr23(std::initializer_list<std::span<const uint8_t>> events) {
    TSS2_RC rc = Run([&] {
      return Esys_PCR_Reset(esys, ESYS_TR_PCR23, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
    });
    if (rc != TSS2_RC_SUCCESS) return Fail("resetting PCR 23 (needs locality 0)", rc);
    for (std::span<const uint8_t> event : events) {
      TPML_DIGEST_VALUES digests{};
      digests.count = 1;
      digests.digests[0].hashAlg = TPM2_ALG_SHA256;
      std::memcpy(digests.digests[0].digest.sha256, event.data(), 32);
      rc = Run([&] {
        return Esys_PCR_Extend(esys, ESYS_TR_PCR23, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               &digests);
      });
      if (rc != TSS2_RC_SUCCESS) return Fail("extending PCR 23", rc);
    }
    return Status::Ok();
  }

  Status StartSession(TPM2_SE type, Scoped* session) {
    const TPMT_SYM_DEF symmetric = NullSymmetric();
    const TSS2_RC rc = Run([&] {
      return Esys_StartAuthSession(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, nullptr, type, &symmetric, TPM2_ALG_SHA256,
                                   session->out());
    });
    if (rc != TSS2_RC_SUCCESS) return Fail("starting a policy session", rc);
    return Status::Ok();
  }

  // The policy digest of PolicyPCR(sha256:{23} = pcr23), computed by the TPM in a trial session.
  Result<TPM2B_DIGEST> PcrPolicyDigest(const std::array<uint8_t, 32>& pcr23) {
    Scoped session(this);
    MLC_RETURN_IF_ERROR(StartSession(TPM2_SE_TRIAL, &session));
    TPM2B_DIGEST pcr_digest{};
    const std::array<uint8_t, 32> digest = Sha256({pcr23});
    pcr_digest.size = 32;
    std::memcpy(pcr_digest.buffer, digest.data(), 32);
    const TPML_PCR_SELECTION selection = Pcr23Selection();
    TSS2_RC rc = Run([&] {
      return Esys_PolicyPCR(esys, session.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                            &pcr_digest, &selection);
    });
    if (rc != TSS2_RC_SUCCESS) return Fail("computing the PCR 23 policy (trial PolicyPCR)", rc);
    TPM2B_DIGEST* raw = nullptr;
    rc = Run([&] {
      return Esys_PolicyGetDigest(esys, session.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                  &raw);
    });
    EsysPtr<TPM2B_DIGEST> policy(raw);
    if (rc != TSS2_RC_SUCCESS) return Fail("reading the PCR 23 policy digest", rc);
    return *policy;
  }

  // TPM2_Create under `parent`; returns the marshalled TPM2B_PUBLIC and TPM2B_PRIVATE.
  Status CreateChild(ESYS_TR parent, const TPM2B_SENSITIVE_CREATE& sensitive,
                     const TPM2B_PUBLIC& in_public, std::string_view what,
                     std::vector<uint8_t>* public_blob, std::vector<uint8_t>* private_blob) {
    const TPM2B_DATA outside{};
    const TPML_PCR_SELECTION creation_pcr{};
    TPM2B_PRIVATE* out_private = nullptr;
    TPM2B_PUBLIC* out_public = nullptr;
    const TSS2_RC rc = Run([&] {
      return Esys_Create(esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
                         &in_public, &outside, &creation_pcr, &out_private, &out_public, nullptr,
                         nullptr, nullptr);
    });
    EsysPtr<TPM2B_PRIVATE> private_part(out_private);
    EsysPtr<TPM2B_PUBLIC> public_part(out_public);
    if (rc != TSS2_RC_SUCCESS) return Fail(fmt::format("creating the {}", what), rc);
    MLC_ASSIGN_OR_RETURN(*public_blob,
                         Marshal<TPM2B_PUBLIC>(*public_part, Tss2_MU_TPM2B_PUBLIC_Marshal, what));
    MLC_ASSIGN_OR_RETURN(
        *private_blob, Marshal<TPM2B_PRIVATE>(*private_part, Tss2_MU_TPM2B_PRIVATE_Marshal, what));
    return Status::Ok();
  }

  Status Load(ESYS_TR parent, const std::vector<uint8_t>& public_blob,
              const std::vector<uint8_t>& private_blob, std::string_view what,
              const std::string& state_path, Scoped* object) {
    TPM2B_PUBLIC in_public{};
    TPM2B_PRIVATE in_private{};
    Status status = Unmarshal<TPM2B_PUBLIC>(public_blob, Tss2_MU_TPM2B_PUBLIC_Unmarshal, &in_public,
                                            fmt::format("{} {} public", state_path, what));
    if (status.ok())
      status = Unmarshal<TPM2B_PRIVATE>(private_blob, Tss2_MU_TPM2B_PRIVATE_Unmarshal, &in_private,
                                        fmt::format("{} {} private", state_path, what));
    if (!status.ok()) return DataLoss("{}", status.message());
    const TSS2_RC rc = Run([&] {
      return Esys_Load(esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &in_private,
                       &in_public, object->out());
    });
    if (rc == TSS2_RC_SUCCESS) return Status::Ok();
    const uint32_t code = TpmCode(rc);
    if (code == TPM2_RC_INTEGRITY || code == TPM2_RC_VALUE || code == TPM2_RC_SIZE ||
        code == TPM2_RC_KEY || code == TPM2_RC_BINDING)
      return FailedPrecondition(
          "the TPM refuses the {} in {} ({}): the state was made by another TPM, or this TPM's "
          "owner hierarchy was cleared since; sealed state cannot be opened here",
          what, state_path, Decode(rc));
    return Fail(fmt::format("loading the {} from {}", what, state_path), rc);
  }

  Result<ESYS_TR> FromTpmPublic(TPM2_HANDLE handle, std::string_view what, bool* missing) {
    ESYS_TR object = ESYS_TR_NONE;
    const TSS2_RC rc = Run([&] {
      return Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object);
    });
    if (rc == TSS2_RC_SUCCESS) {
      *missing = false;
      return object;
    }
    if (TpmCode(rc) == TPM2_RC_HANDLE) {
      *missing = true;
      return ESYS_TR_NONE;
    }
    return Fail(fmt::format("reading the public area of {} {}", what, Hex32(handle)), rc);
  }

  Result<std::vector<uint8_t>> NameOf(ESYS_TR object, std::string_view what) {
    TPM2B_NAME* raw = nullptr;
    const TSS2_RC rc = Esys_TR_GetName(esys, object, &raw);
    EsysPtr<TPM2B_NAME> name(raw);
    if (rc != TSS2_RC_SUCCESS) return Fail(fmt::format("reading the name of the {}", what), rc);
    return std::vector<uint8_t>(name->name, name->name + name->size);
  }

  Result<uint64_t> ReadNvCounter() {
    MLC_RETURN_IF_ERROR(CheckReachable());
    TPM2B_MAX_NV_BUFFER* raw = nullptr;
    const TSS2_RC rc = Run([&] {
      return Esys_NV_Read(esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0, &raw);
    });
    EsysPtr<TPM2B_MAX_NV_BUFFER> data(raw);
    const uint32_t code = TpmCode(rc);
    if (code == TPM2_RC_AUTH_FAIL || code == TPM2_RC_BAD_AUTH)
      return FailedPrecondition(
          "the NV counter {} refuses this state's auth value ({}): the index was redefined by "
          "someone else",
          Hex32(counter_index), Decode(rc));
    if (rc != TSS2_RC_SUCCESS)
      return Fail(fmt::format("reading the NV counter {}", Hex32(counter_index)), rc);
    if (data->size != 8)
      return DataLoss("the NV counter {} returned {} bytes, expected 8", Hex32(counter_index),
                      data->size);
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value = (value << 8) | data->buffer[i];
    return value;
  }

  // The EK certificate from its NV index, trimmed to its DER length.
  Result<std::vector<uint8_t>> ReadEkCertificate() {
    bool missing = false;
    MLC_ASSIGN_OR_RETURN(ESYS_TR index,
                         FromTpmPublic(kTpmEkCertIndex, "the EK certificate NV index", &missing));
    if (missing)
      return FailedPrecondition(
          "this TPM has no RSA-2048 EK certificate in NV {} (TCG EK credential profile): it "
          "cannot prove which TPM it is, so the license server would refuse its evidence",
          Hex32(kTpmEkCertIndex));
    struct Closer {
      ESYS_CONTEXT* esys;
      ESYS_TR handle;
      ~Closer() { (void)Esys_TR_Close(esys, &handle); }
    } closer{esys, index};
    TPM2B_NV_PUBLIC* raw_public = nullptr;
    TSS2_RC rc = Run([&] {
      return Esys_NV_ReadPublic(esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &raw_public,
                                nullptr);
    });
    EsysPtr<TPM2B_NV_PUBLIC> nv_public(raw_public);
    if (rc != TSS2_RC_SUCCESS) return Fail("reading the EK certificate index's public area", rc);
    const uint16_t size = nv_public->nvPublic.dataSize;
    if (size == 0 || size > capsule::kMaxTpmCertBytes)
      return FailedPrecondition("the EK certificate in NV {} has {} bytes; at most {} are read",
                                Hex32(kTpmEkCertIndex), size, capsule::kMaxTpmCertBytes);
    const TPMA_NV attributes = nv_public->nvPublic.attributes;
    ESYS_TR auth = index;
    if ((attributes & TPMA_NV_AUTHREAD) == 0) {
      if ((attributes & TPMA_NV_OWNERREAD) == 0)
        return FailedPrecondition(
            "the EK certificate in NV {} can be read neither with its own auth nor the owner's "
            "(attributes {})",
            Hex32(kTpmEkCertIndex), Hex32(attributes));
      auth = ESYS_TR_RH_OWNER;
    }
    MLC_ASSIGN_OR_RETURN(uint16_t chunk, NvBufferMax());
    std::vector<uint8_t> cert;
    cert.reserve(size);
    while (cert.size() < size) {
      const uint16_t want = static_cast<uint16_t>(std::min<size_t>(chunk, size - cert.size()));
      const uint16_t offset = static_cast<uint16_t>(cert.size());
      TPM2B_MAX_NV_BUFFER* raw = nullptr;
      rc = Run([&] {
        return Esys_NV_Read(esys, auth, index, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, want,
                            offset, &raw);
      });
      EsysPtr<TPM2B_MAX_NV_BUFFER> data(raw);
      if (rc != TSS2_RC_SUCCESS)
        return Fail(fmt::format("reading the EK certificate from NV {} at offset {}",
                                Hex32(kTpmEkCertIndex), offset),
                    rc);
      if (data->size != want)
        return DataLoss("reading the EK certificate at offset {}: {} bytes instead of {}", offset,
                        data->size, want);
      cert.insert(cert.end(), data->buffer, data->buffer + data->size);
    }
    const size_t der = DerLength(cert);
    if (der == 0)
      return FailedPrecondition("the EK certificate in NV {} ({} bytes) is not DER",
                                Hex32(kTpmEkCertIndex), cert.size());
    cert.resize(der);
    return cert;
  }

  // TPM2_PT_NV_BUFFER_MAX (the largest NV read), bounded by tss2's buffer.
  Result<uint16_t> NvBufferMax() {
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA* raw = nullptr;
    const TSS2_RC rc = Run([&] {
      return Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                TPM2_CAP_TPM_PROPERTIES, TPM2_PT_NV_BUFFER_MAX, 1, &more, &raw);
    });
    EsysPtr<TPMS_CAPABILITY_DATA> data(raw);
    if (rc != TSS2_RC_SUCCESS) return Fail("reading TPM2_PT_NV_BUFFER_MAX", rc);
    uint32_t value = 512;  // the PC client minimum
    const TPML_TAGGED_TPM_PROPERTY& properties = data->data.tpmProperties;
    if (properties.count >= 1 && properties.tpmProperty[0].property == TPM2_PT_NV_BUFFER_MAX)
      value = properties.tpmProperty[0].value;
    if (value == 0) value = 512;
    return static_cast<uint16_t>(std::min<uint32_t>(value, 1024));
  }

  // PCR_Reset, extend(measurement), extend(rd event), quote. Checks the quote against what was
  // asked; *raced is set when PCR 23 held something else (another process extended it).
  Status Quote(const capsule::ReportData& report_data, capsule::TpmEvidence* evidence,
               bool* raced) {
    *raced = false;
    const std::array<uint8_t, 32> event = capsule::TpmReportDataEvent(report_data);
    MLC_RETURN_IF_ERROR(ResetAndExtendPcr23({measurement, event}));
    const std::array<uint8_t, 32> qualifying = capsule::TpmQualifyingData(report_data);
    TPM2B_DATA qualifying_data{};
    qualifying_data.size = 32;
    std::memcpy(qualifying_data.buffer, qualifying.data(), 32);
    TPMT_SIG_SCHEME scheme{};
    scheme.scheme = TPM2_ALG_ECDSA;
    scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    const TPML_PCR_SELECTION selection = Pcr23Selection();
    Scoped ak(this);
    MLC_RETURN_IF_ERROR(LoadAk(&ak));
    TPM2B_ATTEST* raw_attest = nullptr;
    TPMT_SIGNATURE* raw_signature = nullptr;
    const TSS2_RC rc = Run([&] {
      return Esys_Quote(esys, ak.get(), ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                        &qualifying_data, &scheme, &selection, &raw_attest, &raw_signature);
    });
    EsysPtr<TPM2B_ATTEST> attest_bytes(raw_attest);
    EsysPtr<TPMT_SIGNATURE> signature(raw_signature);
    if (rc != TSS2_RC_SUCCESS) return Fail("quoting PCR 23 with the attestation key", rc);
    const std::span<const uint8_t> attest_span(attest_bytes->attestationData, attest_bytes->size);
    TPMS_ATTEST attest{};
    Status status = Unmarshal<TPMS_ATTEST>(attest_span, Tss2_MU_TPMS_ATTEST_Unmarshal, &attest,
                                           "the quote's TPMS_ATTEST");
    if (!status.ok()) return InternalError("{}", status.message());
    if (attest.magic != TPM2_GENERATED_VALUE || attest.type != TPM2_ST_ATTEST_QUOTE)
      return InternalError("the TPM's quote has magic {} and type 0x{:04x}, not a quote",
                           Hex32(attest.magic), attest.type);
    if (attest.extraData.size != 32 ||
        std::memcmp(attest.extraData.buffer, qualifying.data(), 32) != 0)
      return InternalError("the TPM's quote does not carry the qualifying data it was given");
    const std::array<uint8_t, 32> expected = Sha256({capsule::TpmPcr23(measurement, report_data)});
    const TPM2B_DIGEST& pcr_digest = attest.attested.quote.pcrDigest;
    if (pcr_digest.size != 32 || std::memcmp(pcr_digest.buffer, expected.data(), 32) != 0) {
      *raced = true;
      return Status::Ok();
    }
    MLC_ASSIGN_OR_RETURN(
        evidence->signature,
        Marshal<TPMT_SIGNATURE>(*signature, Tss2_MU_TPMT_SIGNATURE_Marshal, "quote signature"));
    evidence->attest.assign(attest_span.begin(), attest_span.end());
    return Status::Ok();
  }

  Status LoadAk(Scoped* ak_handle) {
    const TSS2_RC rc =
        Run([&] { return Esys_ContextLoad(esys, ak_context.get(), ak_handle->out()); });
    if (rc != TSS2_RC_SUCCESS) return Fail("loading the attestation key's saved context", rc);
    return Status::Ok();
  }

  // ESYS handles of the counter (name checked against STATE/tpm-state, auth set) and of the
  // persistent EK, if there is one.
  Status OpenHandles(const std::string& state_path) {
    bool missing = false;
    MLC_ASSIGN_OR_RETURN(nv, FromTpmPublic(counter_index, "the counter NV index", &missing));
    if (missing)
      return FailedPrecondition(
          "the NV counter {} recorded in {} no longer exists (it was undefined, or the TPM was "
          "cleared): the rollback protection is gone, so this state cannot be used; start over "
          "with a new state directory",
          Hex32(counter_index), state_path);
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> nv_name, NameOf(nv, "NV counter"));
    if (nv_name != counter_name)
      return FailedPrecondition(
          "NV index {} is not the counter recorded in {}: its name is {}, expected {} (it was "
          "undefined and redefined, with other attributes or by someone else); refusing it",
          Hex32(counter_index), state_path, capsule::ToHex(nv_name), capsule::ToHex(counter_name));
    TPM2B_AUTH auth{};
    auth.size = static_cast<uint16_t>(counter_auth.size());
    std::memcpy(auth.buffer, counter_auth.data(), counter_auth.size());
    const TSS2_RC rc = Esys_TR_SetAuth(esys, nv, &auth);
    sodium_memzero(&auth, sizeof(auth));
    if (rc != TSS2_RC_SUCCESS) return Fail("setting the NV counter's auth", rc);
    MLC_ASSIGN_OR_RETURN(ek, FromTpmPublic(kTpmEkPersistentHandle, "the EK", &missing));
    if (missing) ek = ESYS_TR_NONE;
    return Status::Ok();
  }

  // After a transport error that left the transport usable (a TCTI that loses one response):
  // ESYS refuses every later call after a non-TPM error, so start a fresh ESYS context on the
  // same TCTI and open the handles again. No transient object is loaded at this point.
  Status ResetEsys() {
    Esys_Finalize(&esys);
    nv = ek = ESYS_TR_NONE;
    const TSS2_RC rc = Esys_Initialize(&esys, tcti, nullptr);
    if (rc != TSS2_RC_SUCCESS) {
      esys = nullptr;
      return Unreachable("re-initialising ESYS after a transport error", rc);
    }
    return OpenHandles(fmt::format("STATE/{}", kTpmStateFileName));
  }

  // Starts a policy session satisfying the EK's policy: PolicySecret(TPM_RH_ENDORSEMENT).
  Status EndorsementPolicy(Scoped* session) {
    MLC_RETURN_IF_ERROR(StartSession(TPM2_SE_POLICY, session));
    TPM2B_TIMEOUT* timeout = nullptr;
    TPMT_TK_AUTH* ticket = nullptr;
    const TSS2_RC rc = Run([&] {
      return Esys_PolicySecret(esys, ESYS_TR_RH_ENDORSEMENT, session->get(), ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, nullptr, nullptr, nullptr, 0, &timeout,
                               &ticket);
    });
    EsysPtr<TPM2B_TIMEOUT> timeout_owner(timeout);
    EsysPtr<TPMT_TK_AUTH> ticket_owner(ticket);
    if (rc != TSS2_RC_SUCCESS)
      return Fail("PolicySecret(endorsement hierarchy) for the EK (endorsement auth must be empty)",
                  rc);
    return Status::Ok();
  }
};

TpmPlatform::TpmPlatform() : impl_(std::make_unique<Impl>()) {}
TpmPlatform::~TpmPlatform() = default;

namespace {

// Provisioning (no STATE/tpm-state): see tpm_platform.h.
Status Provision(TpmPlatform::Impl& impl, const std::string& state_dir) {
  using Scoped = TpmPlatform::Impl::Scoped;
  // Each state directory (one per capsule) owns its own counter: the first undefined index in
  // [counter_index, counter_index + kTpmCounterIndexRange).
  const uint32_t first = impl.counter_index;
  bool found = false;
  for (uint32_t i = 0; i < kTpmCounterIndexRange && !found; ++i) {
    bool missing = false;
    MLC_ASSIGN_OR_RETURN(ESYS_TR existing,
                         impl.FromTpmPublic(first + i, "a counter NV index", &missing));
    if (missing) {
      impl.counter_index = first + i;
      found = true;
    } else {
      (void)Esys_TR_Close(impl.esys, &existing);
    }
  }
  if (!found)
    return ResourceExhausted(
        "NV indices {}..{} are all defined: other state directories (one per capsule) or programs "
        "own them, or earlier provisionings died before writing {}/{}. Remove the state "
        "directories of capsules no longer used and undefine their indices with owner auth (for "
        "example `tpm2_nvundefine {}`), or start the core with another --tpm-counter-index",
        Hex32(first), Hex32(first + kTpmCounterIndexRange - 1), state_dir, kTpmStateFileName,
        Hex32(first));

  StateFile state;
  state.counter_index = impl.counter_index;
  state.measurement = impl.measurement;
  Scoped srk(&impl);
  MLC_RETURN_IF_ERROR(impl.CreateSrk(&srk));

  // The seed, sealed to PCR 23 = extend(zeros, measurement).
  capsule::SecretBytes seed(kSeedBytes);
  MLC_RETURN_IF_ERROR(FillRandom(seed.span()));
  std::array<uint8_t, 32> zeros{};
  MLC_ASSIGN_OR_RETURN(TPM2B_DIGEST policy,
                       impl.PcrPolicyDigest(Sha256({zeros, impl.measurement})));
  {
    TPM2B_SENSITIVE_CREATE sensitive{};
    sensitive.sensitive.data.size = kSeedBytes;
    std::memcpy(sensitive.sensitive.data.buffer, seed.data(), kSeedBytes);
    Status status = impl.CreateChild(srk.get(), sensitive, SeedTemplate(policy),
                                     "sealed seed object", &state.seed_public, &state.seed_private);
    sodium_memzero(&sensitive, sizeof(sensitive));
    MLC_RETURN_IF_ERROR(status);
  }
  const TPM2B_SENSITIVE_CREATE no_sensitive{};
  MLC_RETURN_IF_ERROR(impl.CreateChild(srk.get(), no_sensitive, AkTemplate(),
                                       "attestation key (ECC P-256, ECDSA-SHA256)",
                                       &state.ak_public, &state.ak_private));
  srk.Reset();

  // The counter: defined, then incremented once (a counter cannot be read before).
  capsule::SecretBytes auth = capsule::KeyedHash(seed, {AsBytes(kTpmCounterAuthDomain)});
  TPM2B_AUTH nv_auth{};
  nv_auth.size = static_cast<uint16_t>(auth.size());
  std::memcpy(nv_auth.buffer, auth.data(), auth.size());
  TPM2B_NV_PUBLIC nv_public{};
  nv_public.nvPublic.nvIndex = impl.counter_index;
  nv_public.nvPublic.nameAlg = TPM2_ALG_SHA256;
  nv_public.nvPublic.attributes = TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA |
                                  (TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT);
  nv_public.nvPublic.dataSize = 8;
  ESYS_TR nv = ESYS_TR_NONE;
  TSS2_RC rc = impl.Run([&] {
    return Esys_NV_DefineSpace(impl.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, &nv_auth, &nv_public, &nv);
  });
  sodium_memzero(&nv_auth, sizeof(nv_auth));
  if (rc != TSS2_RC_SUCCESS)
    return impl.Fail(fmt::format("defining the NV counter {} (owner auth must be empty)",
                                 Hex32(impl.counter_index)),
                     rc);
  nv_auth.size = static_cast<uint16_t>(auth.size());
  std::memcpy(nv_auth.buffer, auth.data(), auth.size());
  rc = Esys_TR_SetAuth(impl.esys, nv, &nv_auth);
  sodium_memzero(&nv_auth, sizeof(nv_auth));
  // From here on, a failure undefines the index again: nothing else can know its auth.
  auto undefine = [&] {
    if (!impl.unreachable)
      (void)Esys_NV_UndefineSpace(impl.esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                  ESYS_TR_NONE);
  };
  Status status = Status::Ok();
  if (rc != TSS2_RC_SUCCESS) status = impl.Fail("setting the NV counter's auth", rc);
  if (status.ok())
    rc = impl.Run([&] {
      return Esys_NV_Increment(impl.esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
    });
  if (status.ok() && rc != TSS2_RC_SUCCESS)
    status = impl.Fail("the first increment of the NV counter", rc);
  if (status.ok()) {
    // The name after the first write (TPMA_NV_WRITTEN is part of it).
    TPM2B_NV_PUBLIC* raw_public = nullptr;
    TPM2B_NAME* raw_name = nullptr;
    rc = impl.Run([&] {
      return Esys_NV_ReadPublic(impl.esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                &raw_public, &raw_name);
    });
    EsysPtr<TPM2B_NV_PUBLIC> public_owner(raw_public);
    EsysPtr<TPM2B_NAME> name(raw_name);
    if (rc != TSS2_RC_SUCCESS)
      status = impl.Fail("reading the NV counter's name", rc);
    else
      state.counter_name.assign(name->name, name->name + name->size);
  }
  if (status.ok()) status = CreateFileAtomically(state_dir, kTpmStateFileName, EncodeState(state));
  if (!status.ok()) {
    undefine();
    return status;
  }
  (void)Esys_TR_Close(impl.esys, &nv);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<TpmPlatform>> TpmPlatform::Create(const TpmOptions& options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  if (options.state_dir.empty()) return InvalidArgument("the core's state directory is not set");
  std::unique_ptr<TpmPlatform> platform(new TpmPlatform());
  Impl& impl = *platform->impl_;
  impl.device = options.device;
  impl.counter_index = options.counter_index;
  if ((options.counter_index >> 24) != TPM2_HT_NV_INDEX)
    return InvalidArgument("counter index {} is not an NV index handle (0x01xxxxxx)",
                           Hex32(options.counter_index));
  if (options.measurement) {
    impl.measurement = *options.measurement;
  } else {
    MLC_ASSIGN_OR_RETURN(impl.measurement, HashFile("/proc/self/exe"));
  }
  platform->measurement_ = impl.measurement;
  for (const std::string& path : options.ek_chain_files)
    MLC_RETURN_IF_ERROR(LoadChainFile(path, &impl.ek_chain));
  MLC_RETURN_IF_ERROR(EnsureStateDirectory(options.state_dir));

  // ESYS logs every TPM error to stderr; the platform reports them itself. TSS2_LOG, when set,
  // still wins (debugging).
  (void)setenv("TSS2_LOG", "all+none", /*overwrite=*/0);
  MLC_ASSIGN_OR_RETURN(FdTcti transport,
                       OpenTpmTransport(options.device, options.response_timeout_ms));
  impl.transport.emplace(std::move(transport));
  impl.tcti = impl.transport->context();
  if (options.wrap_tcti) impl.tcti = options.wrap_tcti(impl.tcti);
  TSS2_RC rc = Esys_Initialize(&impl.esys, impl.tcti, nullptr);
  if (rc != TSS2_RC_SUCCESS) {
    impl.esys = nullptr;
    return impl.Fail("initialising the TPM software stack (ESYS)", rc);
  }

  const std::string state_path = options.state_dir + "/" + std::string(kTpmStateFileName);
  Fd state_fd(open(state_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (state_fd.get() < 0 && errno == ENOENT) {
    MLC_RETURN_IF_ERROR(Provision(impl, options.state_dir));
    state_fd.reset(open(state_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  }
  if (state_fd.get() < 0) return IoError("cannot open {}: {}", state_path, Errno());
  if (flock(state_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return FailedPrecondition("the state directory {} is in use by another mlcapsule-core",
                                options.state_dir);
    return IoError("cannot lock {}: {}", state_path, Errno());
  }
  struct stat info {};
  if (fstat(state_fd.get(), &info) != 0) return IoError("cannot stat {}: {}", state_path, Errno());
  if (!S_ISREG(info.st_mode)) return FailedPrecondition("{} is not a regular file", state_path);
  if (static_cast<uint64_t>(info.st_size) > kMaxStateFileBytes)
    return DataLoss("{} has {} bytes, over the limit {}", state_path, info.st_size,
                    kMaxStateFileBytes);
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> state_bytes,
                       ReadSmallFile(state_path, kMaxStateFileBytes));
  MLC_ASSIGN_OR_RETURN(StateFile state, ParseState(state_bytes, state_path));
  if (state.counter_index < options.counter_index ||
      state.counter_index >= options.counter_index + kTpmCounterIndexRange)
    return FailedPrecondition(
        "{} was provisioned with the counter NV index {}, outside the range {}..{} this core was "
        "started with",
        state_path, Hex32(state.counter_index), Hex32(options.counter_index),
        Hex32(options.counter_index + kTpmCounterIndexRange - 1));
  impl.counter_index = state.counter_index;  // the index provisioning picked for this directory
  impl.state_fd = state_fd.release();

  // AK and seed under a fresh SRK; unseal the seed with PCR 23 = extend(zeros, measurement).
  capsule::SecretBytes seed;
  {
    Impl::Scoped srk(&impl);
    MLC_RETURN_IF_ERROR(impl.CreateSrk(&srk));
    Impl::Scoped ak(&impl);
    MLC_RETURN_IF_ERROR(impl.Load(srk.get(), state.ak_public, state.ak_private, "attestation key",
                                  state_path, &ak));
    Impl::Scoped sealed(&impl);
    MLC_RETURN_IF_ERROR(impl.Load(srk.get(), state.seed_public, state.seed_private,
                                  "sealed seed object", state_path, &sealed));
    srk.Reset();
    for (int attempt = 0;; ++attempt) {
      MLC_RETURN_IF_ERROR(impl.ResetAndExtendPcr23({impl.measurement}));
      Impl::Scoped session(&impl);
      MLC_RETURN_IF_ERROR(impl.StartSession(TPM2_SE_POLICY, &session));
      const TPML_PCR_SELECTION selection = Pcr23Selection();
      const TPM2B_DIGEST current{};  // empty: the TPM uses PCR 23 as it is now
      rc = impl.Run([&] {
        return Esys_PolicyPCR(impl.esys, session.get(), ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                              &current, &selection);
      });
      if (rc != TSS2_RC_SUCCESS) return impl.Fail("PolicyPCR(sha256:{23}) for the seed", rc);
      TPM2B_SENSITIVE_DATA* raw = nullptr;
      rc = impl.Run([&] {
        return Esys_Unseal(impl.esys, sealed.get(), session.get(), ESYS_TR_NONE, ESYS_TR_NONE,
                           &raw);
      });
      SecretEsysPtr<TPM2B_SENSITIVE_DATA> data(raw);
      if (rc == TSS2_RC_SUCCESS) {
        if (data->size != kSeedBytes)
          return DataLoss("the sealed seed in {} has {} bytes, expected {}", state_path, data->size,
                          kSeedBytes);
        seed = capsule::SecretBytes(data->buffer, data->size);
        break;
      }
      if (TpmCode(rc) != TPM2_RC_POLICY_FAIL) return impl.Fail("unsealing the seed", rc);
      if (attempt == 0 && state.measurement == impl.measurement) continue;  // PCR 23 raced
      return FailedPrecondition(
          "the TPM refuses to unseal the seed in {}: its PCR 23 policy fails ({}). The state was "
          "provisioned for core measurement {}; this core's measurement is {}{}",
          state_path, Decode(rc), capsule::ToHex(state.measurement),
          capsule::ToHex(impl.measurement),
          state.measurement == impl.measurement
              ? " (the same: another process keeps changing PCR 23)"
              : ". A different core binary cannot open this state: give it a new state "
                "directory and counter index");
    }
    TPMS_CONTEXT* saved = nullptr;
    rc = impl.Run([&] { return Esys_ContextSave(impl.esys, ak.get(), &saved); });
    impl.ak_context.reset(saved);
    if (rc != TSS2_RC_SUCCESS) return impl.Fail("saving the attestation key's context", rc);
    MLC_ASSIGN_OR_RETURN(platform->ak_name_, impl.NameOf(ak.get(), "attestation key"));
  }
  impl.sealing_key = capsule::KeyedHash(seed, {AsBytes(kTpmSealDomain), impl.measurement});
  impl.counter_auth = capsule::KeyedHash(seed, {AsBytes(kTpmCounterAuthDomain)});
  {
    TPM2B_PUBLIC ak_public{};
    MLC_RETURN_IF_ERROR(Unmarshal<TPM2B_PUBLIC>(state.ak_public, Tss2_MU_TPM2B_PUBLIC_Unmarshal,
                                                &ak_public, "ak_public"));
    MLC_ASSIGN_OR_RETURN(platform->ak_public_,
                         Marshal<TPMT_PUBLIC>(ak_public.publicArea, Tss2_MU_TPMT_PUBLIC_Marshal,
                                              "attestation key public area"));
  }

  // The counter: same index, same name (attributes and nameAlg) as when provisioned.
  impl.counter_name = state.counter_name;
  MLC_RETURN_IF_ERROR(impl.OpenHandles(state_path));
  MLC_ASSIGN_OR_RETURN(impl.counter, impl.ReadNvCounter());

  MLC_ASSIGN_OR_RETURN(platform->ek_cert_, impl.ReadEkCertificate());

  // Run the remaining code paths once before seccomp: a quote (PCR commands, the quote check)
  // and the endorsement policy session of ActivateCredential (ESYS's and OpenSSL's lazy set-up).
  MLC_RETURN_IF_ERROR(platform->Evidence(capsule::ReportData{}).status());
  {
    Impl::Scoped session(&impl);
    MLC_RETURN_IF_ERROR(impl.EndorsementPolicy(&session));
  }
  return platform;
}

Status TpmPlatform::Random(std::span<uint8_t> out) { return FillRandom(out); }

Result<std::vector<uint8_t>> TpmPlatform::Evidence(const capsule::ReportData& report_data) {
  Impl& impl = *impl_;
  MLC_RETURN_IF_ERROR(impl.CheckReachable());
  capsule::TpmEvidence evidence;
  bool raced = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    MLC_RETURN_IF_ERROR(impl.Quote(report_data, &evidence, &raced));
    if (!raced) break;
  }
  if (raced)
    return IoError(
        "PCR 23 did not hold this core's value when the TPM quoted it, twice: another process "
        "extends PCR 23 (only one TPM core may run per machine)");
  evidence.report_data = report_data;
  evidence.measurement = impl.measurement;
  evidence.ek_cert = ek_cert_;
  evidence.ek_chain = impl.ek_chain;
  evidence.ak_public = ak_public_;
  return capsule::EncodeTpmEvidence(evidence);
}

Result<capsule::SecretBytes> TpmPlatform::SealingKey() { return impl_->sealing_key.Clone(); }

Result<uint64_t> TpmPlatform::ReadCounter() {
  MLC_ASSIGN_OR_RETURN(uint64_t value, impl_->ReadNvCounter());
  impl_->counter = value;
  return value;
}

Result<uint64_t> TpmPlatform::IncrementCounter() {
  Impl& impl = *impl_;
  MLC_RETURN_IF_ERROR(impl.CheckReachable());
  const uint64_t expected = impl.counter;
  const std::string what = fmt::format("incrementing the NV counter {}", Hex32(impl.counter_index));
  for (int attempt = 0;; ++attempt) {
    const TSS2_RC rc = impl.Run([&] {
      return Esys_NV_Increment(impl.esys, impl.nv, impl.nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE);
    });
    if (rc != TSS2_RC_SUCCESS && !IsTransportFailure(rc)) return impl.Fail(what, rc);
    if (rc != TSS2_RC_SUCCESS) {
      if (impl.transport->broken()) {
        (void)impl.Unreachable(what, rc);
        return Unavailable(
            "{}: the TPM {} went away during the increment; whether it was applied is unknown "
            "({}); the core keeps its state in memory: restart it once the TPM is back",
            what, impl.device, impl.unreachable_reason);
      }
      MLC_RETURN_IF_ERROR(impl.ResetEsys());
    }
    // Read the value back: after success to learn it (another holder of the auth could have
    // incremented too), after a lost response to learn whether the increment was applied.
    Result<uint64_t> value = impl.ReadNvCounter();
    if (!value.ok()) {
      if (rc != TSS2_RC_SUCCESS && impl.unreachable)
        return Unavailable(
            "{}: the TPM {} went away during the increment; whether it was applied is unknown "
            "({}); the core keeps its state in memory: restart it once the TPM is back",
            what, impl.device, impl.unreachable_reason);
      return value.status();
    }
    if (rc == TSS2_RC_SUCCESS) {
      if (*value <= expected)
        return DataLoss("{}: the counter reads {} after an increment from {}", what, *value,
                        expected);
      impl.counter = *value;
      return *value;
    }
    if (*value == expected + 1) {
      impl.counter = *value;
      return *value;
    }
    if (*value == expected && attempt == 0) continue;  // not applied: once more
    return DataLoss(
        "{}: the response was lost and the counter now reads {} (expected {} or {}); it is "
        "not known which sealed state is current",
        what, *value, expected, expected + 1);
  }
}

trusted::PlatformTime TpmPlatform::Now() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  return {static_cast<int64_t>(now.tv_sec), false};
}

Result<capsule::SecretBytes> TpmPlatform::ActivateCredential(
    std::span<const uint8_t> id_object, std::span<const uint8_t> encrypted_secret) {
  Impl& impl = *impl_;
  TPM2B_ID_OBJECT credential{};
  TPM2B_ENCRYPTED_SECRET secret{};
  MLC_RETURN_IF_ERROR(Unmarshal<TPM2B_ID_OBJECT>(id_object, Tss2_MU_TPM2B_ID_OBJECT_Unmarshal,
                                                 &credential, "the credential's id_object"));
  MLC_RETURN_IF_ERROR(
      Unmarshal<TPM2B_ENCRYPTED_SECRET>(encrypted_secret, Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal,
                                        &secret, "the credential's encrypted_secret"));
  MLC_RETURN_IF_ERROR(impl.CheckReachable());
  Impl::Scoped created_ek(&impl);
  ESYS_TR ek = impl.ek;
  if (ek == ESYS_TR_NONE) {
    const TPM2B_SENSITIVE_CREATE sensitive{};
    const TPM2B_PUBLIC in_public = EkTemplate();
    const TPM2B_DATA outside{};
    const TPML_PCR_SELECTION creation_pcr{};
    const TSS2_RC rc = impl.Run([&] {
      return Esys_CreatePrimary(impl.esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &sensitive, &in_public, &outside, &creation_pcr,
                                created_ek.out(), nullptr, nullptr, nullptr, nullptr);
    });
    if (rc != TSS2_RC_SUCCESS)
      return impl.Fail("creating the EK from the TCG default RSA-2048 template", rc);
    ek = created_ek.get();
  }
  Impl::Scoped ak(&impl);
  MLC_RETURN_IF_ERROR(impl.LoadAk(&ak));
  Impl::Scoped session(&impl);
  MLC_RETURN_IF_ERROR(impl.EndorsementPolicy(&session));
  TPM2B_DIGEST* raw = nullptr;
  const TSS2_RC rc = impl.Run([&] {
    return Esys_ActivateCredential(impl.esys, ak.get(), ek, ESYS_TR_PASSWORD, session.get(),
                                   ESYS_TR_NONE, &credential, &secret, &raw);
  });
  SecretEsysPtr<TPM2B_DIGEST> info(raw);
  if (rc == TSS2_RC_SUCCESS) return capsule::SecretBytes(info->buffer, info->size);
  const uint32_t code = TpmCode(rc);
  // swtpm (libtpms) answers TPM_RC_FAILURE when the secret does not decrypt under its EK.
  if (code == TPM2_RC_INTEGRITY || code == TPM2_RC_VALUE || code == TPM2_RC_SIZE ||
      code == TPM2_RC_SCHEME || code == TPM2_RC_ECC_POINT || code == TPM2_RC_KEY ||
      code == TPM2_RC_FAILURE)
    return PermissionDenied(
        "the TPM refuses the credential ({}): it was not made for this TPM's endorsement key "
        "and attestation key (name {})",
        Decode(rc), capsule::ToHex(ak_name_));
  return impl.Fail("activating the credential", rc);
}

Result<std::array<uint8_t, 32>> TpmPlatform::ReadPcr23() {
  Impl& impl = *impl_;
  MLC_RETURN_IF_ERROR(impl.CheckReachable());
  const TPML_PCR_SELECTION selection = Pcr23Selection();
  uint32_t update_counter = 0;
  TPML_PCR_SELECTION* raw_selection = nullptr;
  TPML_DIGEST* raw_values = nullptr;
  const TSS2_RC rc = impl.Run([&] {
    return Esys_PCR_Read(impl.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &selection,
                         &update_counter, &raw_selection, &raw_values);
  });
  EsysPtr<TPML_PCR_SELECTION> selection_out(raw_selection);
  EsysPtr<TPML_DIGEST> values(raw_values);
  if (rc != TSS2_RC_SUCCESS) return impl.Fail("reading PCR 23", rc);
  if (values->count != 1 || values->digests[0].size != 32)
    return InternalError("the TPM returned {} PCR values for PCR 23", values->count);
  std::array<uint8_t, 32> pcr{};
  std::memcpy(pcr.data(), values->digests[0].buffer, 32);
  return pcr;
}

}  // namespace mlcapsule::tee
