// The core's defenses (defenses.h, docs/defenses.md). Everything here runs inside the TEE on
// untrusted input: rows are checked before any state changes, and every held byte is bounded by
// the policy.
#include "trusted/defenses.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/sensitive_memory.h"
#include "defense/output_policy.h"
#include "defense/watermark.h"
#include "engine/plan.h"

namespace mlcapsule::trusted {
namespace {

constexpr char kJournalDomain[8] = {'M', 'L', 'C', 'J', 'R', 'N', 'L', '1'};
constexpr size_t kJournalRecordHeader = 8 + 4 + 4;
constexpr size_t kMaxHeld = 4096;
// PRADA's accepted input range (defense/prada.h): larger magnitudes could overflow distances.
constexpr float kMaxPradaMagnitude = 16777216.0f;

// The associated data of a journal record: "MLCJRNL1" capsule_id first_entry entry_count.
ByteWriter JournalAd(const capsule::CapsuleId& capsule_id, uint64_t first, uint32_t count) {
  ByteWriter ad;
  ad.Bytes(kJournalDomain, sizeof(kJournalDomain));
  ad.Bytes(capsule_id);
  ad.Pod<uint64_t>(first);
  ad.Pod<uint32_t>(count);
  return ad;
}

// Index of the highest score, NaN lowest, ties to the lower index (as the output policy ranks).
int ArgMax(const float* row, int classes) {
  int best = -1;
  for (int c = 0; c < classes; ++c) {
    if (std::isnan(row[c])) continue;
    if (best < 0 || row[c] > row[best]) best = c;
  }
  return best < 0 ? 0 : best;
}

// Elements of one row: the product of the dimensions after the batch dimension.
uint64_t RowElements(const capsule::IoTensor& io) {
  uint64_t n = 1;
  for (size_t i = 1; i < io.dims.size(); ++i) n *= static_cast<uint64_t>(io.dims[i].value);
  return n;
}

}  // namespace

Result<std::unique_ptr<Defenses>> Defenses::Create(const capsule::Policy& policy,
                                                   const capsule::CapsuleHeader& header,
                                                   int selected_output, Platform* platform) {
  auto d = std::unique_ptr<Defenses>(new Defenses());
  d->policy_ = policy;
  d->capsule_id_ = header.capsule_id;
  const capsule::DefensePolicy& p = policy.defenses;
  const capsule::IoTensor& scores = header.outputs[static_cast<size_t>(selected_output)];
  d->classes_ = static_cast<int>(scores.dims.back().value);
  d->needs_rows_ = p.prada.enabled || p.watermark.enabled || p.memguard.enabled;
  if (d->needs_rows_) {
    const char* which = p.prada.enabled       ? "defenses.prada"
                        : p.watermark.enabled ? "defenses.watermark"
                                              : "defenses.memguard";
    if (scores.dims.size() != 2 || !scores.dims[0].batch || scores.dims[1].batch)
      return InvalidArgument(
          "{}: needs the output '{}' to be scores of shape [N, C] (batch first), it has rank {}",
          which, scores.name, scores.dims.size());
    for (const capsule::IoTensor& in : header.inputs) {
      if (in.dims.empty() || !in.dims[0].batch)
        return InvalidArgument(
            "{}: needs every input to have the batch as its first dimension "
            "('{}' does not)",
            which, in.name);
      for (size_t i = 1; i < in.dims.size(); ++i)
        if (in.dims[i].batch)
          return InvalidArgument("{}: input '{}' has a batch-scaled dimension {} past the first",
                                 which, in.name, i);
    }
  }
  if (p.watermark.enabled && d->classes_ < 2)
    return InvalidArgument("defenses.watermark: needs at least 2 classes, the model has {}",
                           d->classes_);
  if (p.watermark.enabled) {
    MLC_RETURN_IF_ERROR(
        capsule::FromHex(p.watermark.escrow_key, d->escrow_key_, "defenses.watermark.escrow_key"));
  }
  if (p.prada.enabled) {
    const capsule::IoTensor& first = header.inputs[0];
    if (first.dtype != static_cast<uint8_t>(engine::DType::kFloat32))
      return InvalidArgument("defenses.prada: needs a float32 first input; '{}' is not",
                             first.name);
    const uint64_t elements = RowElements(first);
    if (elements < 1 || elements > (uint64_t{1} << 24))
      return InvalidArgument("defenses.prada: input '{}' has {} elements per query, outside 1..{}",
                             first.name, elements, uint64_t{1} << 24);
    if (p.prada.max_stored * elements * 4 > capsule::PradaMaxStoredBytesLimit())
      return InvalidArgument(
          "defenses.prada.max_stored: {} queries of {} floats need {} bytes, over the limit {}",
          p.prada.max_stored, elements, p.prada.max_stored * elements * 4,
          capsule::PradaMaxStoredBytesLimit());
    d->row_elements_ = static_cast<int64_t>(elements);
    defense::PradaConfig config;
    config.dim = static_cast<uint32_t>(elements);
    config.classes = static_cast<uint32_t>(d->classes_);
    config.delta = p.prada.delta;
    config.max_stored = p.prada.max_stored;
    config.window = p.prada.window;
    config.test_every = p.prada.test_every;
    config.min_class_entries = p.prada.min_class_entries;
    config.max_checks = p.prada.max_checks;
    d->prada_config_ = config;
    MLC_ASSIGN_OR_RETURN(d->prada_, defense::Prada::Create(config));
  }
  std::array<uint8_t, 32> seed{};
  MLC_RETURN_IF_ERROR(platform->Random(seed));
  d->rng_ = std::make_unique<defense::Rng>(std::span<const uint8_t, 32>(seed));
  WipeMemory(seed.data(), seed.size());
  return d;
}

Status Defenses::Attach(std::span<const uint8_t> watermark_key,
                        std::span<const uint8_t> membership_plan) {
  watermark_key_ = capsule::SecretBytes(watermark_key.data(), watermark_key.size());
  if (policy_.defenses.memguard.enabled) {
    if (membership_plan.empty())
      return FailedPrecondition(
          "defenses.memguard is enabled but the capsule carries no membership classifier (pack "
          "it with --memguard-classifier)");
    // The classifier's weights are the provider's too: sensitive memory, like the model's.
    capsule::SecretBytes copy(membership_plan.data(), membership_plan.size());
    size_t allocation_bytes = 0;
    const size_t size = copy.size();
    uint8_t* base = copy.ReleaseAllocation(&allocation_bytes);
    MLC_ASSIGN_OR_RETURN(engine::Plan plan, engine::ParsePlan(engine::AlignedBuffer::AdoptSensitive(
                                                base, allocation_bytes, 0, size)));
    engine::SessionOptions options;
    options.threads = 1;  // a tiny MLP: one thread, no pool to wake per step
    MLC_ASSIGN_OR_RETURN(membership_, engine::Session::Create(std::move(plan), options));
    MLC_ASSIGN_OR_RETURN(defense::MembershipClassifier classifier,
                         defense::ClassifierFromSession(membership_.get(), classes_));
    MLC_ASSIGN_OR_RETURN(
        defense::MemGuard memguard,
        defense::MemGuard::Create(policy_.defenses.memguard, classes_, std::move(classifier)));
    memguard_ = std::make_unique<defense::MemGuard>(std::move(memguard));
  }
  attached_ = true;
  return Status::Ok();
}

Status Defenses::Admit(std::span<const engine::TensorView> inputs, int64_t batch, int64_t now,
                       uint64_t at_count, std::vector<capsule::Alert>* alerts) {
  if (blocked_) {
    refused_ += static_cast<uint64_t>(batch);
    return PermissionDenied(
        "queries are blocked: PRADA detected a model-extraction pattern and the capsule's policy "
        "(defenses.prada.action = block) stops this core; the provider has the alarm");
  }
  if (prada_) {
    const engine::TensorView& x = inputs[0];
    const float* values = x.As<const float>();
    const int64_t n = x.NumElements();
    for (int64_t i = 0; i < n; ++i) {
      const float v = values[i];
      if (!(std::fabs(v) <= kMaxPradaMagnitude))  // NaN fails this too
        return InvalidArgument(
            "infer: input element {} is {}; this capsule's policy runs PRADA, which accepts "
            "finite values of magnitude <= 2^24 only (the query was not answered or counted)",
            i, v);
    }
  }
  return AdmitRate(now, static_cast<uint64_t>(batch), at_count, alerts);
}

Status Defenses::AdmitRate(int64_t now, uint64_t batch, uint64_t at_count,
                           std::vector<capsule::Alert>* alerts) {
  uint64_t per_second = policy_.rate_limit.per_second;
  uint64_t per_day = policy_.rate_limit.per_day;
  const capsule::PradaPolicy& prada = policy_.defenses.prada;
  const bool throttled =
      prada_ && prada_->alarmed() && prada.action == capsule::AlarmAction::kThrottle;
  if (throttled) {
    per_second = per_second == 0 ? prada.throttle_per_second
                                 : std::min(per_second, prada.throttle_per_second);
    per_day = per_day == 0 ? prada.throttle_per_day : std::min(per_day, prada.throttle_per_day);
  }
  if (per_second == 0 && per_day == 0) return Status::Ok();
  if (now != second_) second_ = now, second_count_ = 0;
  const int64_t day = now >= 0 ? now / 86400 : -1 - (-now - 1) / 86400;
  if (day != day_) day_ = day, day_count_ = 0;
  const char* why = nullptr;
  uint64_t limit = 0;
  int64_t wait = 0;
  if (per_second != 0 && second_count_ + batch > per_second) {
    why = "per second", limit = per_second, wait = 1;
  } else if (per_day != 0 && day_count_ + batch > per_day) {
    why = "per day", limit = per_day, wait = (day + 1) * 86400 - now;
  }
  if (why == nullptr) {
    second_count_ += batch;
    day_count_ += batch;
    return Status::Ok();
  }
  refused_ += batch;
  if (alerted_day_ != day) {
    alerted_day_ = day;
    alerts->push_back({"rate-limit", at_count,
                       fmt::format("queries refused over the limit of {} {}{}", limit, why,
                                   throttled ? " (throttled after a PRADA alarm)" : "")});
  }
  if (batch > limit)
    return ResourceExhausted("rate limit: a batch of {} is over the limit of {} queries {}{}",
                             batch, limit, why,
                             throttled ? " (throttled after a PRADA alarm)" : "");
  return ResourceExhausted("rate limit: {} queries {}{} reached; try again in {} s", limit, why,
                           throttled ? " (throttled after a PRADA alarm)" : "", wait);
}

Status Defenses::Apply(std::span<const engine::TensorView> inputs, engine::Tensor* scores,
                       uint64_t first_count, std::vector<engine::Tensor>* client_outputs,
                       std::vector<capsule::Alert>* alerts) {
  if (needs_rows_) {
    const int64_t rows = scores->NumElements() / classes_;
    float* all = scores->Data<float>();
    const capsule::PradaPolicy& prada_policy = policy_.defenses.prada;
    const capsule::WatermarkPolicy& mark = policy_.defenses.watermark;
    for (int64_t r = 0; r < rows; ++r) {
      float* row = all + r * classes_;
      const int cls = ArgMax(row, classes_);
      const uint64_t at = first_count + static_cast<uint64_t>(r) + 1;
      if (prada_) {
        const float* x = inputs[0].As<const float>() + r * row_elements_;
        defense::PradaObservation seen;
        MLC_RETURN_IF_ERROR(
            prada_->Observe(std::span<const float>(x, static_cast<size_t>(row_elements_)),
                            static_cast<uint32_t>(cls), &seen));
        if (seen.at_cap && !cap_reported_) {
          cap_reported_ = true;
          alerts->push_back({"prada-cap", at,
                             fmt::format("PRADA holds its maximum of {} stored queries; the "
                                         "growing sets no longer grow",
                                         prada_policy.max_stored)});
        }
        if (seen.alarm && !alarm_reported_) {
          alarm_reported_ = true;
          alerts->push_back(
              {"prada", at,
               fmt::format("Shapiro-Wilk W = {:.4f} < delta {} after {} queries ({} stored); "
                           "action: {}",
                           seen.w, prada_policy.delta, prada_->observed(), prada_->stored(),
                           capsule::AlarmActionName(prada_policy.action))});
          if (prada_policy.action == capsule::AlarmAction::kBlock) blocked_ = true;
          for (Held& held : pending_) Escrow(std::move(held), at);
          pending_.clear();
        }
      }
      if (mark.enabled && attached_) {
        if (defense::WatermarkSelects(watermark_key_, mark.rate, inputs, r)) {
          const uint32_t label =
              defense::WatermarkLabel(watermark_key_, inputs, r, static_cast<uint32_t>(cls),
                                      static_cast<uint32_t>(classes_));
          std::swap(row[cls], row[label]);
          if (std::isnan(row[label])) row[label] = row[cls];  // keep the label on top
          ++watermarked_;
          if (defense::SealedEscrowRecordBytes(inputs) > mark.max_escrow_bytes) {
            ++escrow_dropped_;  // one sample is over the whole escrow budget
            continue;
          }
          auto sealed = defense::SealEscrowRecord(
              escrow_key_, defense::EscrowRecordFromRow(
                               capsule_id_, at, static_cast<uint32_t>(classes_), label, inputs, r));
          if (!sealed.ok()) {
            ++escrow_dropped_;
            continue;
          }
          Held held{at, std::move(sealed).value()};
          const bool release = mark.escrow == capsule::EscrowMode::kAlways ||
                               (prada_ != nullptr && prada_->alarmed());
          if (release) {
            Escrow(std::move(held), at);
          } else {
            pending_.push_back(std::move(held));
            // Held inside only: keep the most recent within the same bounds as the escrow.
            while (pending_.size() > std::min<size_t>(mark.max_escrow, kMaxHeld) ||
                   HeldBytes(pending_) > mark.max_escrow_bytes)
              pending_.erase(pending_.begin());
          }
        }
      }
    }
  }
  // MemGuard runs inside, on the probabilities (after softmax, before any rounding).
  MLC_RETURN_IF_ERROR(defense::ApplyOutputPolicy(policy_.output, scores->View(), rng_.get(),
                                                 memguard_.get(), client_outputs,
                                                 &memguard_applied_));
  return Status::Ok();
}

uint64_t Defenses::HeldBytes(const std::vector<Held>& list) const {
  uint64_t total = 0;
  for (const Held& h : list) total += h.record.size();
  return total;
}

void Defenses::Escrow(Held held, uint64_t released_at) {
  // Acknowledged by the first lease that continues from a report made after the release (a held
  // record of an early query released by a later alarm must still reach a report).
  held.at_count = released_at;
  const capsule::WatermarkPolicy& mark = policy_.defenses.watermark;
  if (escrow_.size() >= std::min<size_t>(mark.max_escrow, kMaxHeld) ||
      HeldBytes(escrow_) + held.record.size() > mark.max_escrow_bytes) {
    ++escrow_dropped_;
    return;
  }
  escrow_.push_back(std::move(held));
  ++escrowed_;
}

void Defenses::WriteState(ByteWriter* out) const {
  out->Pod<int64_t>(second_);
  out->Pod<uint64_t>(second_count_);
  out->Pod<int64_t>(day_);
  out->Pod<uint64_t>(day_count_);
  out->Pod<uint64_t>(refused_);
  out->Pod<int64_t>(alerted_day_);
  out->Pod<uint8_t>(prada_ ? 1 : 0);
  if (prada_) {
    ByteWriter scalars;
    prada_->WriteScalars(&scalars);
    out->Blob(scalars.span());
    out->Pod<uint64_t>(journal_bytes_);
    out->Pod<uint64_t>(journal_entries_);
    out->Bytes(journal_digest_);
    out->Pod<uint8_t>(alarm_reported_ ? 1 : 0);
    out->Pod<uint8_t>(cap_reported_ ? 1 : 0);
    out->Pod<uint8_t>(blocked_ ? 1 : 0);
  }
  out->Pod<uint64_t>(watermarked_);
  out->Pod<uint64_t>(escrowed_);
  out->Pod<uint64_t>(escrow_dropped_);
  out->Pod<uint64_t>(memguard_applied_);
  for (const std::vector<Held>* list : {&escrow_, &pending_}) {
    out->Pod<uint16_t>(static_cast<uint16_t>(list->size()));
    for (const Held& h : *list) {
      out->Pod<uint64_t>(h.at_count);
      out->Blob(h.record);
    }
  }
}

Status Defenses::ReadState(ByteReader& in) {
  MLC_RETURN_IF_ERROR(in.Pod(&second_, "rate second"));
  MLC_RETURN_IF_ERROR(in.Pod(&second_count_, "rate second count"));
  MLC_RETURN_IF_ERROR(in.Pod(&day_, "rate day"));
  MLC_RETURN_IF_ERROR(in.Pod(&day_count_, "rate day count"));
  MLC_RETURN_IF_ERROR(in.Pod(&refused_, "refused count"));
  MLC_RETURN_IF_ERROR(in.Pod(&alerted_day_, "rate alert day"));
  uint8_t has_prada = 0;
  MLC_RETURN_IF_ERROR(in.Pod(&has_prada, "PRADA flag"));
  if (has_prada != (prada_ ? 1 : 0))
    return DataLoss("sealed state: PRADA state {} but the policy {} PRADA",
                    has_prada ? "present" : "absent", prada_ ? "enables" : "does not enable");
  if (prada_) {
    MLC_RETURN_IF_ERROR(in.Blob(&prada_scalars_, kMaxSealedDefenseBytes, "PRADA state"));
    MLC_RETURN_IF_ERROR(in.Pod(&journal_bytes_, "journal length"));
    MLC_RETURN_IF_ERROR(in.Pod(&journal_entries_, "journal entries"));
    MLC_RETURN_IF_ERROR(in.Bytes(journal_digest_.data(), journal_digest_.size(), "journal digest"));
    uint8_t flags[3] = {};
    MLC_RETURN_IF_ERROR(in.Bytes(flags, sizeof(flags), "PRADA flags"));
    alarm_reported_ = flags[0] != 0;
    cap_reported_ = flags[1] != 0;
    blocked_ = flags[2] != 0;
  }
  MLC_RETURN_IF_ERROR(in.Pod(&watermarked_, "watermarked count"));
  MLC_RETURN_IF_ERROR(in.Pod(&escrowed_, "escrowed count"));
  MLC_RETURN_IF_ERROR(in.Pod(&escrow_dropped_, "escrow dropped count"));
  MLC_RETURN_IF_ERROR(in.Pod(&memguard_applied_, "memguard count"));
  for (std::vector<Held>* list : {&escrow_, &pending_}) {
    uint16_t count = 0;
    MLC_RETURN_IF_ERROR(in.Count(&count, kMaxHeld, 12, "escrow count"));
    list->assign(count, Held{});
    for (Held& h : *list) {
      MLC_RETURN_IF_ERROR(in.Pod(&h.at_count, "escrow count"));
      MLC_RETURN_IF_ERROR(in.Blob(&h.record, kMaxSealedDefenseBytes, "escrow record"));
    }
  }
  return Status::Ok();
}

uint64_t Defenses::pending_journal_bytes() const {
  if (!prada_) return 0;
  return (prada_->stored() - journal_entries_) * (static_cast<uint64_t>(row_elements_) * 4 + 8);
}

Status Defenses::MakeJournalAppend(const capsule::CapsuleId& capsule_id,
                                   const capsule::SecretBytes& sealing_key, uint64_t* keep,
                                   std::vector<uint8_t>* append) {
  *keep = journal_bytes_;
  append->clear();
  if (!prada_ || prada_->stored() == journal_entries_) return Status::Ok();
  const uint64_t first = journal_entries_;
  const uint64_t count = prada_->stored() - first;
  ByteWriter plain;
  prada_->WriteEntries(first, &plain);
  const ByteWriter ad = JournalAd(capsule_id, first, static_cast<uint32_t>(count));
  std::vector<uint8_t> sealed = capsule::AeadEncrypt(sealing_key, plain.span(), ad.span());
  WipeMemory(plain.out().data(), plain.out().size());
  ByteWriter record;
  record.Pod<uint64_t>(first);
  record.Pod<uint32_t>(static_cast<uint32_t>(count));
  record.Pod<uint32_t>(static_cast<uint32_t>(sealed.size()));
  record.Bytes(sealed);
  append->assign(record.span().begin(), record.span().end());
  journal_digest_ = capsule::Hash({journal_digest_, record.span()});
  journal_bytes_ += append->size();
  journal_entries_ = first + count;
  return Status::Ok();
}

void Defenses::RestoreJournal(std::span<const uint8_t> journal,
                              const capsule::CapsuleId& capsule_id,
                              const capsule::SecretBytes& sealing_key, uint64_t at_count,
                              std::vector<capsule::Alert>* alerts) {
  if (!prada_) return;
  auto replay = [&]() -> Status {
    if (journal.size() < journal_bytes_)
      return DataLoss("the journal has {} bytes, the sealed state commits to {}", journal.size(),
                      journal_bytes_);
    ByteReader r(journal.first(static_cast<size_t>(journal_bytes_)), "journal");
    capsule::Digest digest{};
    uint64_t entries = 0;
    while (r.remaining() > 0) {
      const size_t start = static_cast<size_t>(journal_bytes_) - r.remaining();
      uint64_t first = 0;
      uint32_t count = 0, length = 0;
      MLC_RETURN_IF_ERROR(r.Pod(&first, "record first entry"));
      MLC_RETURN_IF_ERROR(r.Pod(&count, "record entry count"));
      MLC_RETURN_IF_ERROR(r.Pod(&length, "record length"));
      std::span<const uint8_t> sealed;
      MLC_RETURN_IF_ERROR(r.View(length, &sealed, "record"));
      if (first != entries)
        return DataLoss("journal record at byte {} starts at entry {}, expected {}", start, first,
                        entries);
      digest = capsule::Hash(
          {digest, journal.subspan(start, kJournalRecordHeader + static_cast<size_t>(length))});
      const ByteWriter ad = JournalAd(capsule_id, first, count);
      MLC_ASSIGN_OR_RETURN(capsule::SecretBytes plain,
                           capsule::AeadDecrypt(sealing_key, sealed, ad.span(), "journal record"));
      ByteReader entries_reader(plain.span(), "journal record");
      MLC_RETURN_IF_ERROR(prada_->ReadEntries(entries_reader, count));
      MLC_RETURN_IF_ERROR(entries_reader.ExpectEnd());
      entries += count;
    }
    if (entries != journal_entries_ || !capsule::ConstantTimeEqual(digest, journal_digest_))
      return DataLoss("the journal's records do not match the sealed state's digest");
    ByteReader scalars(prada_scalars_, "PRADA state");
    MLC_RETURN_IF_ERROR(prada_->ReadScalars(scalars));
    return scalars.ExpectEnd();
  };
  Status replayed = replay();
  prada_scalars_.clear();
  if (replayed.ok()) return;
  // Detection restarts from zero, visibly: the alert goes into the next usage report.
  auto fresh = defense::Prada::Create(prada_config_);
  if (fresh.ok()) prada_ = std::move(fresh).value();
  journal_bytes_ = 0;
  journal_entries_ = 0;
  journal_digest_ = {};
  alerts->push_back({"defense-state", at_count,
                     fmt::format("PRADA's journal is missing or damaged ({}); detection "
                                 "restarted from zero at query {}",
                                 replayed.message(), at_count)});
}

std::vector<std::vector<uint8_t>> Defenses::EscrowForReport() const {
  std::vector<std::vector<uint8_t>> out;
  out.reserve(escrow_.size());
  for (const Held& h : escrow_) out.push_back(h.record);
  return out;
}

capsule::DefenseSummary Defenses::Summary() const {
  capsule::DefenseSummary s;
  if (prada_) {
    s.prada_observed = prada_->observed();
    s.prada_stored = prada_->stored();
    s.prada_last_w = std::isnan(prada_->last_w()) ? -1.0 : prada_->last_w();
    s.prada_alarmed = prada_->alarmed() ? 1 : 0;
  }
  s.watermarked = watermarked_;
  s.escrowed = escrowed_;
  s.escrow_dropped = escrow_dropped_;
  s.memguard_applied = memguard_applied_;
  s.rate_limited = refused_;
  return s;
}

void Defenses::Acknowledge(uint64_t count) {
  std::erase_if(escrow_, [count](const Held& h) { return h.at_count <= count; });
}

}  // namespace mlcapsule::trusted
