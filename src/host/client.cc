// The untrusted client runtime (client.h). It reads the capsule (public ciphertext + header),
// hands it to the core, and writes each sealed state the core returns atomically into the state
// directory, which it locks so that two processes never drive one core state at once.
#include "host/client.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/bytes.h"
#include "base/file_util.h"
#include "capsule/tensor_wire.h"

namespace mlcapsule::host {
namespace {}  // namespace

Result<CoreInfo> ParseCoreInfo(std::span<const uint8_t> bytes) {
  ByteReader r(bytes, "core info");
  CoreInfo info;
  uint8_t state = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&state, "state"));
  if (state != 1 && state != 2) return DataLoss("core info: state {} is not 1 or 2", state);
  info.state = static_cast<CoreStateKind>(state);
  MLC_RETURN_IF_ERROR(r.Bytes(info.capsule_id.data(), info.capsule_id.size(), "capsule id"));
  MLC_RETURN_IF_ERROR(r.Str(&info.license_id, capsule::kMaxLicenseIdBytes, "license id"));
  MLC_RETURN_IF_ERROR(r.Pod(&info.queries_used, "queries used"));
  MLC_RETURN_IF_ERROR(r.Pod(&info.query_quota, "query quota"));
  MLC_RETURN_IF_ERROR(r.Pod(&info.expires_at, "expires at"));
  MLC_RETURN_IF_ERROR(r.Pod(&info.total_queries, "total queries"));
  MLC_RETURN_IF_ERROR(r.Str(&info.policy_json, capsule::kMaxPolicyBytes, "policy"));
  MLC_RETURN_IF_ERROR(capsule::ReadIoList(r, "core info", "input", &info.inputs));
  MLC_RETURN_IF_ERROR(capsule::ReadIoList(r, "core info", "output", &info.outputs));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  return info;
}

namespace {

// The kOpen message is capsule_length:u64 capsule sealed_state:blob32 journal:blob64 threads:u32
// (boundary.h).
// It is built around the capsule's bytes so a large capsule is not copied once more.
constexpr size_t kOpenPrefix = sizeof(uint64_t);
constexpr size_t kOpenSuffixReserve = 4 + trusted::kMaxSealedStateBytes + 8 + 4;

Status CheckOptionsAndStateDir(const ClientOptions& options) {
  if (options.state_dir.empty()) return InvalidArgument("a state directory is required");
  if (options.threads < 1 || options.threads > 256)
    return InvalidArgument("threads {} is out of range 1..256", options.threads);
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec)
    return IoError("cannot create the state directory {}: {}", options.state_dir, ec.message());
  return Status::Ok();
}

Result<std::string> ReadCapsuleIntoOpenMessage(const std::string& path) {
  MLC_ASSIGN_OR_RETURN(ReadableFile file, ReadableFile::Open(path));
  const uint64_t size = file.size();
  if (size > capsule::kMaxCapsuleFileBytes)
    return InvalidArgument("{} has {} bytes, over the capsule limit {}", path, size,
                           capsule::kMaxCapsuleFileBytes);
  std::string message;
  message.reserve(kOpenPrefix + size + kOpenSuffixReserve);
  message.resize(kOpenPrefix + size);
  std::memcpy(message.data(), &size, sizeof(size));
  MLC_RETURN_IF_ERROR(file.ReadExactly(message.data() + kOpenPrefix, size));
  return message;
}

}  // namespace

Result<std::unique_ptr<Client>> Client::Open(const std::string& capsule_path,
                                             const ClientOptions& options) {
  if (options.backend != Backend::kSoftware)
    return InvalidArgument(
        "Client::Open starts the software TEE only; the in-process backend must be built "
        "explicitly with OpenWithChannel (tests only)");
  // The directory exists before the core starts: the software platform opens its files there.
  MLC_RETURN_IF_ERROR(CheckOptionsAndStateDir(options));
  // Start the core first: its start-up overlaps with reading the capsule.
  ProcessChannelOptions process;
  process.core_binary = options.core_binary;
  process.state_dir = options.state_dir;
  process.core_threads = options.threads;
  process.platform_args = options.platform_args;
  process.launcher = options.launcher;
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<CoreChannel> channel, StartProcessChannel(process));
  MLC_ASSIGN_OR_RETURN(std::string message, ReadCapsuleIntoOpenMessage(capsule_path));
  return OpenMessage(std::move(message), options, std::move(channel));
}

Result<std::unique_ptr<Client>> Client::OpenWithChannel(std::span<const uint8_t> capsule_bytes,
                                                        const ClientOptions& options,
                                                        std::unique_ptr<CoreChannel> channel) {
  MLC_RETURN_IF_ERROR(CheckOptionsAndStateDir(options));
  std::string message;
  message.reserve(kOpenPrefix + capsule_bytes.size() + kOpenSuffixReserve);
  const uint64_t size = capsule_bytes.size();
  message.append(reinterpret_cast<const char*>(&size), sizeof(size));
  message.append(reinterpret_cast<const char*>(capsule_bytes.data()), capsule_bytes.size());
  return OpenMessage(std::move(message), options, std::move(channel));
}

Result<std::unique_ptr<Client>> Client::OpenMessage(std::string message,
                                                    const ClientOptions& options,
                                                    std::unique_ptr<CoreChannel> channel) {
  const std::span<const uint8_t> capsule_bytes =
      AsBytes(std::string_view(message).substr(kOpenPrefix));
  // The header is public: parse it here too, for the host's own checks and messages.
  MLC_ASSIGN_OR_RETURN(capsule::CapsuleView view, capsule::ParseCapsule(capsule_bytes));
  std::unique_ptr<Client> client(new Client());
  client->options_ = options;
  client->header_ = view.header;
  client->channel_ = std::move(channel);

  const std::filesystem::path dir(options.state_dir);
  const std::string lock_path = (dir / kLockFile).string();
  client->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (client->lock_fd_ < 0) return IoError("cannot open {}: {}", lock_path, std::strerror(errno));
  if (::flock(client->lock_fd_, LOCK_EX | LOCK_NB) != 0)
    return FailedPrecondition("the state directory {} is in use by another process",
                              options.state_dir);
  // One state directory per capsule: the TEE's counter and keys belong to one core state.
  const std::string id_hex = capsule::CapsuleIdHex(view.header.capsule_id);
  const std::string id_path = (dir / kCapsuleIdFile).string();
  if (std::filesystem::exists(id_path)) {
    MLC_ASSIGN_OR_RETURN(std::string stored, ReadFile(id_path, 256));
    while (!stored.empty() && (stored.back() == '\n' || stored.back() == '\r')) stored.pop_back();
    if (stored != id_hex)
      return FailedPrecondition(
          "the state directory {} belongs to capsule {}, not {}: use one directory per capsule",
          options.state_dir, stored, id_hex);
  } else {
    MLC_RETURN_IF_ERROR(WriteFile(id_path, id_hex + "\n"));
  }
  std::string sealed;
  const std::string sealed_path = (dir / kSealedStateFile).string();
  if (std::filesystem::exists(sealed_path)) {
    MLC_ASSIGN_OR_RETURN(sealed, ReadFile(sealed_path, trusted::kMaxSealedStateBytes));
  }
  std::string journal;
  const std::string journal_path = (dir / kJournalFile).string();
  if (!sealed.empty() && std::filesystem::exists(journal_path)) {
    MLC_ASSIGN_OR_RETURN(journal, ReadFile(journal_path, trusted::kMaxJournalBytes));
  }
  const uint32_t sealed_size = static_cast<uint32_t>(sealed.size());
  const uint64_t journal_size = journal.size();
  const uint32_t threads = static_cast<uint32_t>(options.threads);
  message.append(reinterpret_cast<const char*>(&sealed_size), sizeof(sealed_size));
  message.append(sealed);
  message.append(reinterpret_cast<const char*>(&journal_size), sizeof(journal_size));
  message.append(journal);
  message.append(reinterpret_cast<const char*>(&threads), sizeof(threads));
  trusted::Reply reply;
  MLC_RETURN_IF_ERROR(client->CallCore(trusted::Call::kOpen, AsBytes(message), &reply));
  MLC_ASSIGN_OR_RETURN(client->info_, ParseCoreInfo(reply.output));
  return client;
}

Client::~Client() {
  Status s = Close();
  (void)s;  // errors were reported by the caller's explicit Close, if it cared
}

Status Client::StoreSealed(const std::vector<uint8_t>& sealed) {
  if (sealed.empty()) return Status::Ok();
  MLC_ASSIGN_OR_RETURN(trusted::SealedUpdate update, trusted::SplitSealedUpdate(sealed));
  const std::filesystem::path dir(options_.state_dir);
  // The journal first: the state about to be stored commits to it.
  const std::string journal_path = (dir / kJournalFile).string();
  std::error_code ec;
  const bool exists = std::filesystem::exists(journal_path, ec);
  if (update.journal_keep > 0 || !update.journal_append.empty() || exists) {
    int fd = ::open(journal_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return IoError("cannot open {}: {}", journal_path, std::strerror(errno));
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat info {};
    if (::fstat(fd, &info) != 0)
      return IoError("cannot stat {}: {}", journal_path, std::strerror(errno));
    if (static_cast<uint64_t>(info.st_size) < update.journal_keep)
      return DataLoss(
          "{} has {} bytes but the core's state continues from {}: an earlier journal write was "
          "lost; restore the state directory from a backup",
          journal_path, info.st_size, update.journal_keep);
    if (static_cast<uint64_t>(info.st_size) != update.journal_keep &&
        ::ftruncate(fd, static_cast<off_t>(update.journal_keep)) != 0)
      return IoError("cannot truncate {}: {}", journal_path, std::strerror(errno));
    size_t done = 0;
    while (done < update.journal_append.size()) {
      ssize_t n =
          ::pwrite(fd, update.journal_append.data() + done, update.journal_append.size() - done,
                   static_cast<off_t>(update.journal_keep + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return IoError("cannot write {}: {}", journal_path, std::strerror(errno));
      done += static_cast<size_t>(n);
    }
    if (!update.journal_append.empty() && ::fdatasync(fd) != 0)
      return IoError("cannot sync {}: {}", journal_path, std::strerror(errno));
  }
  const std::string path = (dir / kSealedStateFile).string();
  return WriteFile(path, std::string_view(reinterpret_cast<const char*>(update.state.data()),
                                          update.state.size()));
}

Status Client::CallCore(trusted::Call call, std::span<const uint8_t> input, trusted::Reply* reply) {
  const std::span<const uint8_t> pieces[1] = {input};
  return CallCoreGather(call, pieces, reply);
}

Status Client::CallCoreGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                              trusted::Reply* reply) {
  if (closed_) return FailedPrecondition("{}: the client is closed", trusted::CallName(call));
  Status status = channel_->CallGather(call, pieces, reply);
  // A sealed state is stored even when the call failed: the core's counter has moved on.
  Status stored = StoreSealed(reply->sealed_state);
  if (!status.ok()) return status;
  return stored;
}

Result<std::vector<uint8_t>> Client::MakeEvidenceRequest(const capsule::Nonce& nonce,
                                                         bool attach_report) {
  uint8_t input[33];
  std::memcpy(input, nonce.data(), 32);
  input[32] = attach_report ? 1 : 0;
  trusted::Reply reply;
  MLC_RETURN_IF_ERROR(CallCore(trusted::Call::kEvidence, input, &reply));
  return std::move(reply.output);
}

Status Client::InstallLease(std::span<const uint8_t> lease) {
  trusted::Reply reply;
  MLC_RETURN_IF_ERROR(CallCore(trusted::Call::kInstallLease, lease, &reply));
  MLC_ASSIGN_OR_RETURN(info_, ParseCoreInfo(reply.output));
  return Status::Ok();
}

Status Client::Infer(std::span<const engine::TensorView> inputs,
                     std::vector<engine::Tensor>* outputs) {
  // The tensors go to the core from where they are (one gathered write, no host-side copy).
  capsule::TensorListPieces(inputs, &encode_buffer_, &encode_pieces_);
  trusted::Reply reply;
  MLC_RETURN_IF_ERROR(CallCoreGather(trusted::Call::kInfer, encode_pieces_, &reply));
  MLC_ASSIGN_OR_RETURN(*outputs, capsule::ParseTensorListCopy(reply.output));
  // The host's copy of the count (the core enforces the real one): the batch size is the first
  // batch-scaled dimension of the first input divided by its multiple.
  int64_t batch = 1;
  if (!inputs.empty() && !header_.inputs.empty()) {
    const auto& dims = header_.inputs[0].dims;
    for (size_t i = 0; i < dims.size() && i < inputs[0].dims.size(); ++i)
      if (dims[i].batch && dims[i].value > 0) {
        batch = inputs[0].dims[i] / dims[i].value;
        break;
      }
  }
  info_.total_queries += static_cast<uint64_t>(batch);
  info_.queries_used += static_cast<uint64_t>(batch);
  return Status::Ok();
}

Status CoreChannel::CallGather(trusted::Call call, std::span<const std::span<const uint8_t>> pieces,
                               trusted::Reply* reply) {
  std::vector<uint8_t> joined;
  for (auto piece : pieces) joined.insert(joined.end(), piece.begin(), piece.end());
  return Call(call, joined, reply);
}

Result<std::vector<uint8_t>> Client::UsageReport() {
  trusted::Reply reply;
  MLC_RETURN_IF_ERROR(CallCore(trusted::Call::kUsageReport, {}, &reply));
  return std::move(reply.output);
}

Status Client::Close() {
  if (closed_) return Status::Ok();
  trusted::Reply reply;
  Status status = channel_ ? CallCore(trusted::Call::kClose, {}, &reply) : Status::Ok();
  closed_ = true;
  channel_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  return status;
}

}  // namespace mlcapsule::host
