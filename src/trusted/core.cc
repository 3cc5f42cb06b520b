// The guarded core (core.h). Every byte it is handed is untrusted: lengths are checked against
// named limits before anything is allocated, signatures and MACs are checked before contents are
// used, and errors say what was refused and why. Secrets (core keys, capsule key, the decrypted
// plan and its weights) live in sensitive memory and are wiped on Close and destruction.
#include "trusted/core.h"

#include <algorithm>
#include <cstring>
#include <future>

#include "base/bytes.h"
#include "base/sensitive_memory.h"
#include "capsule/tensor_wire.h"
#include "defense/output_policy.h"
#include "engine/plan.h"
#include "trusted/defenses.h"

namespace mlcapsule::trusted {
namespace {

using capsule::Digest;
using capsule::SecretBytes;

// One step of the usage chain: head' = BLAKE2b-256("mlcapsule/v1/query" || head || count || batch
// || time). It commits to how many queries were answered and when, nothing about their contents.
Digest ExtendChain(const Digest& head, uint64_t count, uint64_t batch, int64_t time) {
  static constexpr std::string_view kDomain = "mlcapsule/v1/query";
  uint8_t tail[24];
  std::memcpy(tail, &count, 8);
  std::memcpy(tail + 8, &batch, 8);
  std::memcpy(tail + 16, &time, 8);
  return capsule::Hash({AsBytes(kDomain), head, tail});
}

}  // namespace

Core::Core(Platform* platform) : platform_(platform) {}

Core::~Core() { WipeAll(); }

void Core::WipeAll() {
  session_.reset();
  model_outputs_.clear();
  client_tensors_.clear();  // the plan's weights and packed copies are wiped as they are released
  capsule_key_ = SecretBytes();
  identity_.reset();
  lease_.reset();
  lease_bytes_.clear();
  capsule_bytes_.clear();
  capsule_bytes_.shrink_to_fit();
  capsule_.reset();
  history_.clear();
  alerts_.clear();
  defenses_.reset();
  total_count_ = 0;
  head_ = {};
}

Status Core::RequireOpen(const char* call) const {
  if (!capsule_) return FailedPrecondition("{}: no capsule is open (call open first)", call);
  return Status::Ok();
}

int64_t Core::Now() {
  // Time never goes backwards within the sealed state, whatever the platform's clock says.
  last_time_ = std::max(last_time_, platform_->Now().unix_seconds);
  return last_time_;
}

Status Core::Open(std::span<const uint8_t> input, Reply* reply) {
  if (capsule_) return FailedPrecondition("open: a capsule is already open in this core");
  ByteReader r(input, "open request");
  uint64_t capsule_size = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&capsule_size, "capsule length"));
  if (capsule_size > r.remaining())
    return DataLoss("open request: capsule length {} exceeds the {} bytes sent", capsule_size,
                    r.remaining());
  std::span<const uint8_t> capsule_view;
  MLC_RETURN_IF_ERROR(r.View(capsule_size, &capsule_view, "capsule"));
  std::span<const uint8_t> sealed;
  MLC_RETURN_IF_ERROR(r.BlobView(&sealed, kMaxSealedStateBytes, "sealed state"));
  uint64_t journal_size = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&journal_size, "journal length"));
  if (journal_size > kMaxJournalBytes || journal_size > r.remaining())
    return DataLoss("open request: journal length {} exceeds the limit {} or the bytes sent",
                    journal_size, kMaxJournalBytes);
  std::span<const uint8_t> journal;
  MLC_RETURN_IF_ERROR(r.View(journal_size, &journal, "journal"));
  uint32_t threads = 1;
  MLC_RETURN_IF_ERROR(r.Pod(&threads, "threads"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  if (threads < 1 || threads > 256)
    return InvalidArgument("open request: threads {} is out of range 1..256", threads);
  threads_ = static_cast<int>(threads);

  // The bytes are kept (the ciphertext is needed until a lease arrives); parse the copy.
  capsule_bytes_.assign(capsule_view.begin(), capsule_view.end());
  auto parsed = capsule::ParseCapsule(capsule_bytes_);
  if (!parsed.ok()) {
    capsule_bytes_.clear();
    return parsed.status().WithContext("open");
  }
  // The provider signature is checked on a second thread while this one restores the sealed
  // state and decrypts the plan. Nothing leaves the core, and no counter moves, before it has
  // verified: every exit below waits for it, and a bad signature wipes everything.
  const capsule::CapsuleView to_verify = *parsed;
  std::future<Status> signature = std::async(std::launch::async, [this, &to_verify] {
    return capsule::VerifyCapsuleSignature(capsule_bytes_, to_verify);
  });
  Status opened = OpenVerifiedLater(std::move(parsed).value(), sealed, journal);
  Status verified = signature.get();  // capsule_bytes_ stays untouched until here
  if (!verified.ok()) {
    WipeAll();
    return verified.WithContext("open");
  }
  if (!opened.ok()) {
    WipeAll();
    return opened;
  }
  ReleaseCiphertextIfLoaded();
  if (!sealed.empty()) {
    // Reseal at once under a new counter value, so this blob cannot be opened a second time.
    MLC_RETURN_IF_ERROR(Seal(reply));
  }
  reply->output = CoreInfo();
  return Status::Ok();
}

Status Core::OpenVerifiedLater(capsule::CapsuleView view, std::span<const uint8_t> sealed,
                               std::span<const uint8_t> journal) {
  auto policy = capsule::ParsePolicy(view.header.policy_json);
  if (!policy.ok()) return policy.status().WithContext("open: capsule policy");
  auto client_io = defense::OutputPolicyIo(policy->output, view.header.outputs);
  if (!client_io.ok()) return client_io.status().WithContext("open: capsule policy");
  std::vector<std::string> output_names;
  for (const capsule::IoTensor& t : view.header.outputs) output_names.push_back(t.name);
  auto selected = defense::FindPolicyOutput(policy->output, output_names);
  if (!selected.ok()) return selected.status().WithContext("open: capsule policy");
  auto defenses = Defenses::Create(*policy, view.header, *selected, platform_);
  if (!defenses.ok()) return defenses.status().WithContext("open: capsule policy");
  policy_ = std::move(policy).value();
  client_outputs_ = std::move(client_io).value();
  policy_output_index_ = *selected;
  defenses_ = std::move(defenses).value();
  capsule_ = std::move(view);
  if (!sealed.empty()) MLC_RETURN_IF_ERROR(RestoreSealed(sealed, journal).WithContext("open"));
  return Status::Ok();
}

Status Core::RestoreSealed(std::span<const uint8_t> sealed, std::span<const uint8_t> journal) {
  ByteReader r(sealed, "sealed state");
  char magic[8];
  MLC_RETURN_IF_ERROR(r.Bytes(magic, sizeof(magic), "magic"));
  if (std::memcmp(magic, kSealedMagic, sizeof(magic)) != 0)
    return DataLoss("sealed state: bad magic (not an MLCapsule sealed state)");
  uint32_t version = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&version, "version"));
  if (version != kSealedVersion)
    return Unsupported("sealed state: version {} is not supported (expected {})", version,
                       kSealedVersion);
  capsule::CapsuleId capsule_id{};
  MLC_RETURN_IF_ERROR(r.Bytes(capsule_id.data(), capsule_id.size(), "capsule id"));
  uint64_t counter = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&counter, "counter"));
  const std::span<const uint8_t> associated = r.consumed();
  std::span<const uint8_t> ciphertext;
  MLC_RETURN_IF_ERROR(r.BlobView(&ciphertext, kMaxSealedStateBytes, "sealed payload"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  if (capsule_id != capsule_->header.capsule_id)
    return InvalidArgument("sealed state belongs to capsule {}, not to this capsule {}",
                           capsule::CapsuleIdHex(capsule_id),
                           capsule::CapsuleIdHex(capsule_->header.capsule_id));
  MLC_ASSIGN_OR_RETURN(SecretBytes sealing_key, platform_->SealingKey());
  MLC_ASSIGN_OR_RETURN(SecretBytes plain,
                       capsule::AeadDecrypt(sealing_key, ciphertext, associated, "sealed state"));
  MLC_ASSIGN_OR_RETURN(uint64_t current, platform_->ReadCounter());
  if (counter < current)
    return FailedPrecondition(
        "sealed state is older than this TEE's monotonic counter ({} < {}): a restored older "
        "state is refused (rollback); install a new lease to continue",
        counter, current);
  if (counter > current)
    return FailedPrecondition(
        "this TEE's monotonic counter ({}) is behind the sealed state ({}): the counter was reset "
        "or rolled back; refusing",
        current, counter);

  ByteReader s(plain.span(), "sealed state payload");
  Identity identity;
  identity.box.secret = SecretBytes(capsule::kBoxSecretBytes);
  identity.signing.secret = SecretBytes(capsule::kSigningSecretBytes);
  MLC_RETURN_IF_ERROR(s.Bytes(identity.box.secret.data(), capsule::kBoxSecretBytes, "box key"));
  MLC_RETURN_IF_ERROR(s.Bytes(identity.box.public_key.data(), 32, "box public key"));
  MLC_RETURN_IF_ERROR(
      s.Bytes(identity.signing.secret.data(), capsule::kSigningSecretBytes, "signing key"));
  MLC_ASSIGN_OR_RETURN(identity.signing,
                       capsule::SigningKeyPairFromSecret(identity.signing.secret.span()));
  uint8_t has_lease = 0;
  MLC_RETURN_IF_ERROR(s.Pod(&has_lease, "has lease"));
  std::vector<uint8_t> lease_bytes;
  SecretBytes capsule_key;
  if (has_lease > 1) return DataLoss("sealed state: has_lease is {}, not 0 or 1", has_lease);
  if (has_lease == 1) {
    MLC_RETURN_IF_ERROR(s.Blob(&lease_bytes, capsule::kMaxLeaseBytes, "lease"));
    capsule_key = SecretBytes(capsule::kSymmetricKeyBytes);
    MLC_RETURN_IF_ERROR(s.Bytes(capsule_key.data(), capsule_key.size(), "capsule key"));
  }
  MLC_RETURN_IF_ERROR(s.Pod(&total_count_, "total count"));
  MLC_RETURN_IF_ERROR(s.Bytes(head_.data(), head_.size(), "chain head"));
  MLC_RETURN_IF_ERROR(s.Pod(&reserved_until_, "reserved until"));
  MLC_RETURN_IF_ERROR(s.Pod(&report_sequence_, "report sequence"));
  MLC_RETURN_IF_ERROR(s.Pod(&last_time_, "last time"));
  uint8_t history_count = 0;
  MLC_RETURN_IF_ERROR(s.Count(&history_count, kChainHistory, 40, "history count"));
  history_.assign(history_count, ChainPoint{});
  for (ChainPoint& p : history_) {
    MLC_RETURN_IF_ERROR(s.Pod(&p.count, "history count"));
    MLC_RETURN_IF_ERROR(s.Bytes(p.head.data(), p.head.size(), "history head"));
  }
  uint16_t alert_count = 0;
  MLC_RETURN_IF_ERROR(s.Count(&alert_count, capsule::kMaxAlerts, 16, "alert count"));
  alerts_.assign(alert_count, capsule::Alert{});
  for (capsule::Alert& a : alerts_) {
    MLC_RETURN_IF_ERROR(s.Str(&a.kind, capsule::kMaxAlertKindBytes, "alert kind"));
    MLC_RETURN_IF_ERROR(s.Pod(&a.at_count, "alert count"));
    MLC_RETURN_IF_ERROR(s.Str(&a.detail, capsule::kMaxAlertDetailBytes, "alert detail"));
  }
  MLC_RETURN_IF_ERROR(defenses_->ReadState(s));
  MLC_RETURN_IF_ERROR(s.ExpectEnd());
  if (reserved_until_ < total_count_)
    return DataLoss("sealed state: reserved count {} is below the count {}", reserved_until_,
                    total_count_);
  if (reserved_until_ > total_count_) {
    // The previous run ended without its closing seal (killed, crashed): the block it had
    // reserved is charged in full, and the chain records the charge.
    const uint64_t charged = reserved_until_ - total_count_;
    if (policy_.defenses.prada.enabled)
      RaiseAlert({"defense-state", reserved_until_,
                  fmt::format("the core restarted without closing: PRADA resumed from its state "
                              "at query {}; up to {} queries answered after it were not analysed",
                              total_count_, charged)});
    total_count_ = reserved_until_;
    head_ = ExtendChain(head_, total_count_, charged, last_time_);
  }
  {
    MLC_ASSIGN_OR_RETURN(SecretBytes sealing_key, platform_->SealingKey());
    std::vector<capsule::Alert> events;
    defenses_->RestoreJournal(journal, capsule_->header.capsule_id, sealing_key, total_count_,
                              &events);
    for (capsule::Alert& a : events) RaiseAlert(std::move(a));
  }
  identity_ = std::move(identity);
  if (has_lease == 1) {
    // The sealed lease is checked again as if new: the capsule may pin other signers now.
    MLC_ASSIGN_OR_RETURN(capsule::Lease lease,
                         capsule::ParseAndVerifyLease(lease_bytes, capsule_->header));
    lease_bytes_ = std::move(lease_bytes);
    MLC_RETURN_IF_ERROR(ActivateLease(std::move(lease), std::move(capsule_key)));
  }
  return Status::Ok();
}

Status Core::Seal(Reply* reply) {
  if (!identity_) return Status::Ok();  // nothing worth keeping yet
  ByteWriter s;
  s.Bytes(identity_->box.secret.span());
  s.Bytes(identity_->box.public_key);
  s.Bytes(identity_->signing.secret.span());
  s.Pod<uint8_t>(lease_ ? 1 : 0);
  if (lease_) {
    s.Blob(lease_bytes_);
    s.Bytes(capsule_key_.span());
  }
  s.Pod<uint64_t>(total_count_);
  s.Bytes(head_);
  s.Pod<uint64_t>(reserved_until_);
  s.Pod<uint64_t>(report_sequence_);
  s.Pod<int64_t>(last_time_);
  s.Pod<uint8_t>(static_cast<uint8_t>(history_.size()));
  for (const ChainPoint& p : history_) {
    s.Pod<uint64_t>(p.count);
    s.Bytes(p.head);
  }
  s.Pod<uint16_t>(static_cast<uint16_t>(alerts_.size()));
  for (const capsule::Alert& a : alerts_) {
    s.Str(a.kind);
    s.Pod<uint64_t>(a.at_count);
    s.Str(a.detail);
  }
  MLC_ASSIGN_OR_RETURN(SecretBytes sealing_key, platform_->SealingKey());
  // The journal record first: the state written below commits to it.
  uint64_t journal_keep = 0;
  std::vector<uint8_t> journal_append;
  MLC_RETURN_IF_ERROR(defenses_->MakeJournalAppend(capsule_->header.capsule_id, sealing_key,
                                                   &journal_keep, &journal_append));
  defenses_->WriteState(&s);
  // The plaintext holds keys: move it into sensitive memory and wipe the writer's copy.
  SecretBytes plain(reinterpret_cast<const uint8_t*>(s.out().data()), s.out().size());
  WipeMemory(s.out().data(), s.out().size());

  MLC_ASSIGN_OR_RETURN(uint64_t counter, platform_->IncrementCounter());
  ByteWriter w;
  w.Bytes(kSealedMagic, sizeof(kSealedMagic));
  w.Pod<uint32_t>(kSealedVersion);
  w.Bytes(capsule_->header.capsule_id);
  w.Pod<uint64_t>(counter);
  std::vector<uint8_t> ciphertext = capsule::AeadEncrypt(sealing_key, plain.span(), w.span());
  w.Blob(ciphertext);
  // A second seal within one call keeps the first one's journal append (sealed_update grammar).
  if (!reply->sealed_state.empty()) {
    MLC_ASSIGN_OR_RETURN(SealedUpdate earlier, SplitSealedUpdate(reply->sealed_state));
    std::vector<uint8_t> joined(earlier.journal_append.begin(), earlier.journal_append.end());
    joined.insert(joined.end(), journal_append.begin(), journal_append.end());
    journal_keep = earlier.journal_keep;
    journal_append = std::move(joined);
  }
  ByteWriter update;
  update.Blob(w.span());
  update.Pod<uint64_t>(journal_keep);
  update.Blob(journal_append);
  reply->sealed_state.assign(update.span().begin(), update.span().end());
  dirty_ = false;
  return Status::Ok();
}

Status Core::Evidence(std::span<const uint8_t> input, Reply* reply) {
  MLC_RETURN_IF_ERROR(RequireOpen("evidence"));
  ByteReader r(input, "evidence request");
  capsule::Nonce nonce{};
  MLC_RETURN_IF_ERROR(r.Bytes(nonce.data(), nonce.size(), "nonce"));
  uint8_t attach_report = 0;
  MLC_RETURN_IF_ERROR(r.Pod(&attach_report, "attach report"));
  MLC_RETURN_IF_ERROR(r.ExpectEnd());
  if (attach_report > 1)
    return InvalidArgument("evidence request: attach_report is {}, not 0 or 1", attach_report);

  bool changed = false;
  if (!identity_) {
    // A fresh core identity: its keys never leave the core, and the usage chain starts here.
    identity_ = Identity{capsule::GenerateBoxKeyPair(), capsule::GenerateSigningKeyPair()};
    total_count_ = 0;
    reserved_until_ = 0;
    head_ = capsule::ChainGenesis(capsule_->header.capsule_id, identity_->signing.public_key);
    history_ = {ChainPoint{0, head_}};
    changed = true;
  }
  capsule::EvidenceRequest request;
  request.capsule_id = capsule_->header.capsule_id;
  request.nonce = nonce;
  request.core_box_key = identity_->box.public_key;
  request.core_signing_key = identity_->signing.public_key;
  request.evidence_type = platform_->evidence_type();
  MLC_ASSIGN_OR_RETURN(request.evidence, platform_->Evidence(capsule::ComputeReportData(
                                             nonce, request.capsule_id, request.core_box_key,
                                             request.core_signing_key)));
  if (attach_report == 1 && lease_) {
    request.usage_report = MakeUsageReport();
    changed = true;
  }
  reply->output = capsule::SerializeEvidenceRequest(request);
  if (changed) MLC_RETURN_IF_ERROR(Seal(reply));
  return Status::Ok();
}

Status Core::CheckLeaseTime(int64_t now) const {
  const capsule::LeaseBody& b = lease_->body;
  if (now < b.not_before)
    return FailedPrecondition("the lease is not valid before {} (now {})", b.not_before, now);
  if (now >= b.expires_at)
    return FailedPrecondition("the lease expired at {} (now {}); get a new lease", b.expires_at,
                              now);
  return Status::Ok();
}

Status Core::InstallLease(std::span<const uint8_t> input, Reply* reply) {
  MLC_RETURN_IF_ERROR(RequireOpen("install lease"));
  if (!identity_)
    return FailedPrecondition(
        "install lease: this core has no keys yet; make an evidence request first");
  MLC_ASSIGN_OR_RETURN(capsule::Lease lease, capsule::ParseAndVerifyLease(input, capsule_->header));
  const capsule::LeaseBody& b = lease.body;
  if (b.core_box_key != identity_->box.public_key ||
      b.core_signing_key != identity_->signing.public_key)
    return PermissionDenied("the lease was issued to another core key ({}...), not to this core",
                            capsule::ToHex(std::span(b.core_signing_key).first(8)));
  if (lease_) {
    const capsule::LeaseBody& old = lease_->body;
    bool newer = b.chain_base_count > old.chain_base_count ||
                 (b.chain_base_count == old.chain_base_count && b.sequence > old.sequence);
    if (!newer)
      return PermissionDenied(
          "replayed or older lease refused: it continues from query {} (sequence {}), the "
          "installed lease from query {} (sequence {})",
          b.chain_base_count, b.sequence, old.chain_base_count, old.sequence);
  }
  // The lease must continue from a chain head this core really reached and reported.
  bool known = false;
  for (const ChainPoint& p : history_)
    if (p.count == b.chain_base_count && capsule::ConstantTimeEqual(p.head, b.chain_base))
      known = true;
  if (!known)
    return PermissionDenied(
        "the lease continues from usage-chain head {}... at query {}, which this core never "
        "reported",
        capsule::ToHex(std::span(b.chain_base).first(8)), b.chain_base_count);
  if (b.query_quota > policy_.lease.max_queries)
    return PermissionDenied("the lease grants {} queries, over the policy's lease.max_queries {}",
                            b.query_quota, policy_.lease.max_queries);
  if (b.expires_at - b.not_before > policy_.lease.max_days * 86400)
    return PermissionDenied("the lease is valid for {} s, over the policy's lease.max_days {}",
                            b.expires_at - b.not_before, policy_.lease.max_days);
  MLC_ASSIGN_OR_RETURN(SecretBytes capsule_key,
                       capsule::OpenSealed(identity_->box, b.wrapped_capsule_key));
  if (capsule_key.size() != capsule::kSymmetricKeyBytes)
    return PermissionDenied("the lease's wrapped capsule key has {} bytes, expected {}",
                            capsule_key.size(), capsule::kSymmetricKeyBytes);
  if (b.tee_binding) {
    // Bound to this TEE's hardware (a TPM's EK and AK): only it can recover the mask.
    Result<SecretBytes> secret =
        platform_->ActivateCredential(b.tee_binding->id_object, b.tee_binding->encrypted_secret);
    if (!secret.ok()) return secret.status().WithContext("the lease is bound to a TEE credential");
    SecretBytes mask = capsule::TeeBoundMask(*secret);
    for (size_t i = 0; i < capsule_key.size(); ++i) capsule_key.data()[i] ^= mask.data()[i];
  }
  std::vector<uint8_t> lease_bytes(input.begin(), input.end());
  // Decrypt and load first: a lease whose key does not open this capsule changes nothing.
  std::optional<capsule::Lease> previous = std::move(lease_);
  SecretBytes previous_key = std::move(capsule_key_);
  Status activated = ActivateLease(std::move(lease), std::move(capsule_key));
  if (!activated.ok()) {
    lease_ = std::move(previous);
    capsule_key_ = std::move(previous_key);
    return activated.WithContext("install lease");
  }
  lease_bytes_ = std::move(lease_bytes);
  ReleaseCiphertextIfLoaded();
  // Alerts up to the acknowledged point were reported; drop them.
  std::erase_if(alerts_, [&](const capsule::Alert& a) {
    return a.at_count <= lease_->body.chain_base_count;
  });
  defenses_->Acknowledge(lease_->body.chain_base_count);
  MLC_RETURN_IF_ERROR(Seal(reply));
  reply->output = CoreInfo();
  return Status::Ok();
}

Status Core::ActivateLease(capsule::Lease lease, SecretBytes capsule_key) {
  if (!session_) {
    if (capsule_bytes_.empty())
      return InternalError("the capsule's ciphertext is no longer held by the core");
    MLC_ASSIGN_OR_RETURN(SecretBytes payload, capsule::DecryptPayload(*capsule_, capsule_key));
    MLC_ASSIGN_OR_RETURN(capsule::PayloadLayout layout,
                         capsule::ParsePayloadLayout(payload.span()));
    // The defenses copy their parts (watermark key, membership plan) before the payload's
    // allocation goes to the plan.
    MLC_RETURN_IF_ERROR(defenses_->Attach(
        payload.span().subspan(layout.watermark_key_offset, capsule::kWatermarkKeyBytes),
        payload.span().subspan(layout.membership_offset, layout.membership_bytes)));
    // The plan keeps its weights where they were decrypted (sensitive memory, no second copy:
    // in the software TEE every fresh memfd_secret page costs a TLB shootdown).
    size_t allocation_bytes = 0;
    uint8_t* base = payload.ReleaseAllocation(&allocation_bytes);
    MLC_ASSIGN_OR_RETURN(engine::Plan plan,
                         engine::ParsePlan(engine::AlignedBuffer::AdoptSensitive(
                             base, allocation_bytes, layout.plan_offset, layout.plan_bytes)));
    if (capsule::PlanIo(plan, plan.inputs) != capsule_->header.inputs ||
        capsule::PlanIo(plan, plan.outputs) != capsule_->header.outputs)
      return DataLoss("the decrypted plan's inputs/outputs differ from the capsule header's");
    engine::SessionOptions options;
    options.threads = threads_;
    MLC_ASSIGN_OR_RETURN(session_, engine::Session::Create(std::move(plan), options));
  }
  lease_ = std::move(lease);
  capsule_key_ = std::move(capsule_key);
  return Status::Ok();
}

void Core::ReleaseCiphertextIfLoaded() {
  if (!session_ || capsule_bytes_.empty()) return;
  capsule_->ciphertext = {};
  capsule_->header_region = {};
  capsule_bytes_.clear();
  capsule_bytes_.shrink_to_fit();
}

Status Core::Infer(std::span<const uint8_t> input, Reply* reply) {
  MLC_RETURN_IF_ERROR(RequireOpen("infer"));
  if (!lease_ || !session_)
    return FailedPrecondition(
        "infer: no lease is installed (make an evidence request, get a "
        "lease from the provider and install it)");
  MLC_ASSIGN_OR_RETURN(std::vector<engine::TensorView> inputs, capsule::ParseTensorList(input));
  const engine::Plan& plan = session_->plan();
  if (inputs.size() != plan.inputs.size())
    return InvalidArgument("infer: {} input tensors given, the model takes {}", inputs.size(),
                           plan.inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const engine::PlanTensor& t = plan.tensors[static_cast<size_t>(plan.inputs[i])];
    if (inputs[i].dtype != t.type.dtype)
      return InvalidArgument("infer: input '{}' is {}, the model takes {}", t.name,
                             engine::DTypeName(inputs[i].dtype), engine::DTypeName(t.type.dtype));
  }
  MLC_ASSIGN_OR_RETURN(int64_t batch, engine::InferBatchSize(plan, inputs));

  // Quota first (host time is untrusted), then time, then count and chain, then compute.
  const capsule::LeaseBody& b = lease_->body;
  const uint64_t used = total_count_ - b.chain_base_count;
  if (used + static_cast<uint64_t>(batch) > b.query_quota)
    return ResourceExhausted(
        "query quota exhausted: {} of {} queries of this lease used, {} asked; report usage and "
        "get a new lease",
        used, b.query_quota, batch);
  const int64_t now = Now();
  MLC_RETURN_IF_ERROR(CheckLeaseTime(now));
  {
    std::vector<capsule::Alert> events;
    Status admitted = defenses_->Admit(inputs, batch, now, total_count_, &events);
    for (capsule::Alert& a : events) RaiseAlert(std::move(a));
    if (!events.empty()) dirty_ = true;
    if (!admitted.ok()) return admitted;
  }
  const uint64_t next = total_count_ + static_cast<uint64_t>(batch);
  if (next > reserved_until_) {
    // Charge the next block before answering (see reserved_until_).
    reserved_until_ = std::min(next + policy_.lease.seal_every, b.chain_base_count + b.query_quota);
    MLC_RETURN_IF_ERROR(Seal(reply));
  }
  const uint64_t first_count = total_count_;
  total_count_ = next;
  head_ = ExtendChain(head_, total_count_, static_cast<uint64_t>(batch), now);
  dirty_ = true;

  MLC_RETURN_IF_ERROR(session_->Run(inputs, &model_outputs_));
  {
    std::vector<capsule::Alert> events;
    Status applied =
        defenses_->Apply(inputs, &model_outputs_[static_cast<size_t>(policy_output_index_)],
                         first_count, &client_tensors_, &events);
    for (capsule::Alert& a : events) RaiseAlert(std::move(a));
    MLC_RETURN_IF_ERROR(applied);
  }
  // PRADA's new stored queries go to the journal at the next seal; seal early when they grow.
  if (defenses_->pending_journal_bytes() > kMaxJournalAppendBytes / 2)
    MLC_RETURN_IF_ERROR(Seal(reply));
  std::vector<engine::TensorView> views;
  views.reserve(client_tensors_.size());
  for (engine::Tensor& t : client_tensors_) views.push_back(t.View());
  std::string encoded;
  capsule::AppendTensorList(views, &encoded);
  reply->output.assign(encoded.begin(), encoded.end());
  return Status::Ok();
}

std::vector<uint8_t> Core::MakeUsageReport() {
  capsule::UsageReport report;
  report.capsule_id = capsule_->header.capsule_id;
  report.license_id = lease_->body.license_id;
  report.lease_id = lease_->body.lease_id;
  report.report_sequence = ++report_sequence_;
  report.core_signing_key = identity_->signing.public_key;
  report.from_count = lease_->body.chain_base_count;
  report.from_head = lease_->body.chain_base;
  report.to_count = total_count_;
  report.to_head = head_;
  report.created_at = Now();
  report.alerts = alerts_;
  report.escrow = defenses_->EscrowForReport();
  report.defenses = defenses_->Summary();
  // Remember the reported point: the next lease may continue from it.
  if (history_.empty() || history_.back().count != total_count_ || history_.back().head != head_) {
    history_.push_back({total_count_, head_});
    if (history_.size() > kChainHistory) history_.erase(history_.begin());
  }
  return capsule::SignUsageReport(std::move(report), identity_->signing.secret);
}

void Core::RaiseAlert(capsule::Alert alert) {
  if (alerts_.size() >= capsule::kMaxAlerts) return;  // the report's limit; earlier ones stay
  if (alert.detail.size() > capsule::kMaxAlertDetailBytes)
    alert.detail.resize(capsule::kMaxAlertDetailBytes);
  alerts_.push_back(std::move(alert));
  dirty_ = true;
}

Status Core::UsageReport(std::span<const uint8_t> input, Reply* reply) {
  MLC_RETURN_IF_ERROR(RequireOpen("usage report"));
  if (!input.empty())
    return InvalidArgument("usage report: takes no input ({} bytes given)", input.size());
  if (!lease_) return FailedPrecondition("usage report: no lease is installed, nothing to report");
  reply->output = MakeUsageReport();
  return Seal(reply);
}

Status Core::Close(Reply* reply) {
  Status sealed = Status::Ok();
  if (capsule_ && identity_ && (dirty_ || reserved_until_ != total_count_)) {
    reserved_until_ = total_count_;  // an orderly close returns the unused reservation
    sealed = Seal(reply);
  }
  WipeAll();
  return sealed;
}

std::vector<uint8_t> Core::CoreInfo() const {
  ByteWriter w;
  w.Pod<uint8_t>(
      static_cast<uint8_t>(lease_ && session_ ? CoreState::kReady : CoreState::kNeedsLease));
  w.Bytes(capsule_->header.capsule_id);
  w.Str(lease_ ? lease_->body.license_id : "");
  w.Pod<uint64_t>(lease_ ? total_count_ - lease_->body.chain_base_count : 0);
  w.Pod<uint64_t>(lease_ ? lease_->body.query_quota : 0);
  w.Pod<int64_t>(lease_ ? lease_->body.expires_at : 0);
  w.Pod<uint64_t>(total_count_);
  w.Str(capsule_->header.policy_json);
  capsule::WriteIoList(capsule_->header.inputs, &w);
  capsule::WriteIoList(client_outputs_, &w);
  return {w.span().begin(), w.span().end()};
}

}  // namespace mlcapsule::trusted
