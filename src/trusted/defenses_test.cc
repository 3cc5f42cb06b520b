// The defenses as the core runs them, through the boundary on the in-memory test platform: rate
// limits, PRADA (refusing what it cannot analyse, alarming, blocking, surviving restarts through
// the sealed state and its journal, and saying so when it cannot), DAWN watermarking with escrow.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "base/bytes.h"
#include "capsule/licensing.h"
#include "capsule/messages.h"
#include "capsule/tensor_wire.h"
#include "defense/watermark.h"
#include "engine/session.h"
#include "host/test_capsule.h"
#include "trusted/boundary.h"
#include "trusted/test_platform.h"

namespace mlcapsule::trusted {
namespace {

using testing::TestProvider;

constexpr int kInputs = testing::kClassifierInputs;    // 8
constexpr int kClasses = testing::kClassifierClasses;  // 4

std::string Policy(const std::string& extra, const std::string& output = "probabilities") {
  return R"({"version":1,"tee":{"accept":["software"]},"lease":{"max_queries":100000,)"
         R"("max_days":30,"seal_every":10},"output":{"mode":")" +
         output + R"(","logits":true})" + (extra.empty() ? "" : "," + extra) + "}";
}

// What a host keeps: the sealed state and the journal, updated from every reply.
struct HostStore {
  std::vector<uint8_t> state, journal;
  void Apply(const Reply& reply) {
    if (reply.sealed_state.empty()) return;
    auto update = SplitSealedUpdate(reply.sealed_state);
    ASSERT_TRUE(update.ok()) << update.status().ToString();
    ASSERT_LE(update->journal_keep, journal.size());
    journal.resize(update->journal_keep);
    journal.insert(journal.end(), update->journal_append.begin(), update->journal_append.end());
    state.assign(update->state.begin(), update->state.end());
  }
};

std::vector<uint8_t> OpenMessage(const std::vector<uint8_t>& capsule, const HostStore& store) {
  ByteWriter w;
  w.Pod<uint64_t>(capsule.size());
  w.Bytes(capsule);
  w.Blob(store.state);
  w.Pod<uint64_t>(store.journal.size());
  w.Bytes(store.journal);
  w.Pod<uint32_t>(1);
  return {w.span().begin(), w.span().end()};
}

std::vector<uint8_t> Encode(const engine::Tensor& t) {
  engine::TensorView v{t.dtype, t.dims, const_cast<uint8_t*>(t.bytes.data())};
  std::string out;
  capsule::AppendTensorList(std::span<const engine::TensorView>(&v, 1), &out);
  return {out.begin(), out.end()};
}

engine::Tensor Row(const std::vector<float>& values) {
  return engine::Tensor::FromFloats({1, kInputs}, values);
}

std::vector<float> RandomRow(std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(kInputs);
  for (float& x : v) x = normal(rng);
  return v;
}

class DefensesTest : public ::testing::Test {
 protected:
  void Make(const std::string& policy_json) {
    ASSERT_TRUE(capsule::InitCrypto().ok());
    provider_ = std::make_unique<TestProvider>(TestProvider::Make(
        testing::ClassifierPlan(testing::DefaultClassifierWeights()), policy_json));
  }

  Status Do(Call call, const std::vector<uint8_t>& input, Reply* reply = nullptr) {
    Reply local;
    Reply* r = reply ? reply : &local;
    Status s = boundary_->Call(call, input, r);
    store_.Apply(*r);
    return s;
  }

  // A fresh core (as after a restart) on the stored state; licensed when the state has no lease.
  void Start(bool license = true) {
    boundary_ = std::make_unique<Boundary>(&platform_);
    Reply reply;
    const bool fresh = store_.state.empty();
    Status opened = Do(Call::kOpen, OpenMessage(provider_->packed.bytes, store_), &reply);
    ASSERT_TRUE(opened.ok()) << opened.ToString();
    if (!fresh || !license) return;
    std::vector<uint8_t> nonce(33, 0);
    ASSERT_TRUE(Do(Call::kEvidence, nonce, &reply).ok());
    auto lease = provider_->Lease(reply.output, 100000, 30 * 86400, platform_.Now().unix_seconds);
    ASSERT_TRUE(lease.ok()) << lease.status().ToString();
    Status installed = Do(Call::kInstallLease, *lease, &reply);
    ASSERT_TRUE(installed.ok()) << installed.ToString();
  }

  Result<std::vector<float>> Infer(const std::vector<float>& row) {
    Reply reply;
    MLC_RETURN_IF_ERROR(Do(Call::kInfer, Encode(Row(row)), &reply));
    MLC_ASSIGN_OR_RETURN(std::vector<engine::TensorView> out,
                         capsule::ParseTensorList(reply.output));
    const float* p = out[0].As<const float>();
    return std::vector<float>(p, p + kClasses);
  }

  capsule::UsageReport Report() {
    Reply reply;
    Status s = Do(Call::kUsageReport, {}, &reply);
    EXPECT_TRUE(s.ok()) << s.ToString();
    auto report = capsule::ParseAndVerifyUsageReport(reply.output);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : capsule::UsageReport{};
  }

  static bool HasAlert(const capsule::UsageReport& r, const std::string& kind,
                       const std::string& text = "") {
    for (const capsule::Alert& a : r.alerts)
      if (a.kind == kind && a.detail.find(text) != std::string::npos) return true;
    return false;
  }

  // A stream PRADA must flag: a few far-apart points, each followed by exact repeats (minimum
  // distances of zero among a few large ones: far from normal).
  Status FeedExtractionLikeStream(int queries, std::mt19937& rng) {
    std::vector<float> base;
    for (int q = 0; q < queries; ++q) {
      if (q % 10 == 0) base = RandomRow(rng, 5.0f);
      auto answer = Infer(base);
      if (!answer.ok()) return answer.status();
    }
    return Status::Ok();
  }

  TestPlatform platform_;
  std::unique_ptr<TestProvider> provider_;
  std::unique_ptr<Boundary> boundary_;
  HostStore store_;
};

int ArgMax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST_F(DefensesTest, RateLimitsRefuseWithoutCountingAndAlertOncePerDay) {
  Make(Policy(R"("rate_limit":{"per_second":3,"per_day":5})"));
  platform_.set_now(1'800'000'000);
  Start();
  std::mt19937 rng(1);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  auto refused = Infer(RandomRow(rng));
  ASSERT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("per second"), std::string::npos);
  platform_.set_now(1'800'000'001);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  refused = Infer(RandomRow(rng));
  ASSERT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("per day"), std::string::npos);
  capsule::UsageReport r = Report();
  EXPECT_EQ(r.to_count, 5u) << "refused queries are not counted";
  EXPECT_EQ(r.defenses.rate_limited, 2u);
  int rate_alerts = 0;
  for (const capsule::Alert& a : r.alerts) rate_alerts += a.kind == "rate-limit";
  EXPECT_EQ(rate_alerts, 1);
  platform_.set_now(1'800'000'000 + 86400);  // the next UTC day
  EXPECT_TRUE(Infer(RandomRow(rng)).ok());
}

TEST_F(DefensesTest, PradaRefusesInputsItCannotAnalyseAndKeepsItsState) {
  Make(Policy(R"("defenses":{"prada":{"enabled":true}})"));
  Start();
  std::mt19937 rng(2);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  const capsule::DefenseSummary before = Report().defenses;
  for (float bad : {NAN, INFINITY, -INFINITY, 1e30f}) {
    std::vector<float> row = RandomRow(rng);
    row[3] = bad;
    auto answer = Infer(row);
    EXPECT_EQ(answer.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  capsule::UsageReport r = Report();
  EXPECT_EQ(r.to_count, 5u);
  EXPECT_EQ(r.defenses.prada_observed, before.prada_observed);
  EXPECT_EQ(r.defenses.prada_stored, before.prada_stored);
}

TEST_F(DefensesTest, PradaAlarmBlocksAndIsReported) {
  Make(Policy(R"("defenses":{"prada":{"enabled":true,"delta":0.9,"action":"block"}})"));
  Start();
  std::mt19937 rng(3);
  Status fed = FeedExtractionLikeStream(400, rng);
  ASSERT_EQ(fed.code(), StatusCode::kPermissionDenied) << fed.ToString();
  EXPECT_NE(fed.message().find("PRADA"), std::string::npos);
  capsule::UsageReport r = Report();
  EXPECT_TRUE(HasAlert(r, "prada", "W = ")) << r.alerts.size();
  EXPECT_EQ(r.defenses.prada_alarmed, 1);
  EXPECT_LT(r.defenses.prada_last_w, 0.9);
  // Still blocked after a restart from the sealed state.
  ASSERT_TRUE(Do(Call::kClose, {}).ok());
  Start();
  EXPECT_EQ(Infer(RandomRow(rng)).status().code(), StatusCode::kPermissionDenied);
}

TEST_F(DefensesTest, PradaThrottleLimitsTheRateAfterTheAlarm) {
  Make(Policy(
      R"("defenses":{"prada":{"enabled":true,"action":"throttle","throttle_per_second":2}})"));
  platform_.set_now(1'800'000'000);
  Start();
  std::mt19937 rng(4);
  // Before the alarm nothing limits the rate (every query in the same second).
  std::vector<float> base;
  Status refused;
  int answered = 0;
  for (int q = 0; q < 400 && refused.ok(); ++q) {
    if (q % 10 == 0) base = RandomRow(rng, 5.0f);
    auto answer = Infer(base);
    refused = answer.status();
    answered += answer.ok();
  }
  ASSERT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused.ToString();
  EXPECT_NE(refused.message().find("throttled"), std::string::npos) << refused.message();
  EXPECT_GT(answered, 20);
  platform_.set_now(1'800'000'001);
  EXPECT_TRUE(Infer(base).ok());
  EXPECT_TRUE(Infer(base).ok());
  EXPECT_EQ(Infer(base).status().code(), StatusCode::kResourceExhausted);
}

TEST_F(DefensesTest, PradaStateSurvivesCloseAndReopen) {
  Make(Policy(R"("defenses":{"prada":{"enabled":true}})"));
  Start();
  std::mt19937 rng(5);
  for (int i = 0; i < 57; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  const capsule::DefenseSummary before = Report().defenses;
  EXPECT_EQ(before.prada_observed, 57u);
  EXPECT_GT(before.prada_stored, 4u);
  ASSERT_TRUE(Do(Call::kClose, {}).ok());
  EXPECT_FALSE(store_.journal.empty());
  Start();
  capsule::UsageReport r = Report();
  EXPECT_EQ(r.defenses.prada_observed, 57u);
  EXPECT_EQ(r.defenses.prada_stored, before.prada_stored);
  EXPECT_FALSE(HasAlert(r, "defense-state"));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  EXPECT_EQ(Report().defenses.prada_observed, 60u);
}

TEST_F(DefensesTest, RestartWithoutClosingIsReported) {
  Make(Policy(R"("defenses":{"prada":{"enabled":true}})"));
  Start();
  std::mt19937 rng(6);
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  boundary_.reset();  // killed: no closing seal; the host has the state from the last block seal
  Start();
  capsule::UsageReport r = Report();
  EXPECT_TRUE(HasAlert(r, "defense-state", "restarted without closing")) << r.alerts.size();
  EXPECT_LE(r.defenses.prada_observed, 25u);
}

TEST_F(DefensesTest, DamagedOrMissingJournalRestartsPradaVisibly) {
  Make(Policy(R"("defenses":{"prada":{"enabled":true}})"));
  Start();
  std::mt19937 rng(7);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  ASSERT_TRUE(Do(Call::kClose, {}).ok());
  const HostStore good = store_;
  const uint64_t good_counter = platform_.counter();
  ASSERT_GT(good.journal.size(), 40u);
  for (int variant = 0; variant < 3; ++variant) {
    store_ = good;
    platform_.set_counter(good_counter);  // each variant starts from the same stored state
    if (variant == 0) store_.journal[store_.journal.size() / 2] ^= 0x40;  // a flipped byte
    if (variant == 1) store_.journal.resize(store_.journal.size() - 5);   // truncated
    if (variant == 2) store_.journal.clear();                             // deleted
    Start();
    capsule::UsageReport r = Report();
    EXPECT_TRUE(HasAlert(r, "defense-state", "journal")) << variant;
    EXPECT_EQ(r.defenses.prada_stored, 0u) << variant;
    // It goes on, and its new journal is consistent again.
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
    ASSERT_TRUE(Do(Call::kClose, {}).ok());
    Start();
    // The alert stays until a lease acknowledges it; the new journal raises no second one.
    capsule::UsageReport again = Report();
    int journal_alerts = 0;
    for (const capsule::Alert& a : again.alerts)
      journal_alerts += a.kind == "defense-state" && a.detail.find("journal") != std::string::npos;
    EXPECT_EQ(journal_alerts, 1) << variant;
    EXPECT_EQ(again.defenses.prada_observed, 5u) << variant;
    ASSERT_TRUE(Do(Call::kClose, {}).ok());
  }
}

TEST_F(DefensesTest, WatermarkIsDeterministicAndEscrowedToTheProvider) {
  capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
  Make(Policy(R"("defenses":{"watermark":{"enabled":true,"rate":0.5,"escrow":"always",)"
              R"("escrow_key":")" +
              capsule::ToHex(escrow.public_key) + R"("}})"));
  Start();
  // The plain model's labels, to see which answers carry the watermark.
  auto session = engine::Session::Create(
      testing::ClassifierPlan(testing::DefaultClassifierWeights()), engine::SessionOptions{});
  ASSERT_TRUE(session.ok());
  std::mt19937 rng(8);
  std::map<std::vector<float>, int> returned;
  int marked = 0;
  for (int i = 0; i < 60; ++i) {
    std::vector<float> row = RandomRow(rng);
    auto first = Infer(row);
    auto again = Infer(row);
    ASSERT_TRUE(first.ok() && again.ok());
    EXPECT_EQ(*first, *again) << "the same input must get the same answer";
    engine::Tensor input = Row(row);
    engine::TensorView view = input.View();
    std::vector<engine::Tensor> plain;
    ASSERT_TRUE((*session)->Run(std::span<const engine::TensorView>(&view, 1), &plain).ok());
    std::vector<float> logits(plain[0].Data<float>(), plain[0].Data<float>() + kClasses);
    const bool watermarked = ArgMax(*first) != ArgMax(logits);
    marked += watermarked;
    if (watermarked) returned[row] = ArgMax(*first);
  }
  EXPECT_GT(marked, 15);  // rate 0.5 of 60 distinct inputs
  EXPECT_LT(marked, 45);
  capsule::UsageReport r = Report();
  EXPECT_EQ(r.defenses.watermarked, 2u * static_cast<uint64_t>(marked));
  ASSERT_EQ(r.escrow.size(), r.defenses.escrowed);
  ASSERT_GE(r.escrow.size(), static_cast<size_t>(marked));
  size_t matched = 0;
  for (const std::vector<uint8_t>& sealed : r.escrow) {
    auto record = defense::OpenEscrowRecord(escrow, sealed);
    ASSERT_TRUE(record.ok()) << record.status().ToString();
    ASSERT_EQ(record->inputs.size(), 1u);
    const float* x = record->inputs[0].Data<float>();
    std::vector<float> row(x, x + kInputs);
    auto it = returned.find(row);
    ASSERT_NE(it, returned.end()) << "an escrowed input that was not watermarked";
    EXPECT_EQ(static_cast<int>(record->label), it->second);
    EXPECT_EQ(record->classes, static_cast<uint32_t>(kClasses));
    ++matched;
  }
  EXPECT_EQ(matched, r.escrow.size());
  // Another key cannot open them.
  EXPECT_FALSE(defense::OpenEscrowRecord(capsule::GenerateBoxKeyPair(), r.escrow[0]).ok());
}

TEST_F(DefensesTest, EscrowAfterAlarmKeepsInputsInsideUntilPradaAlarms) {
  capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
  Make(Policy(R"("defenses":{"prada":{"enabled":true},"watermark":{"enabled":true,)"
              R"("rate":0.5,"escrow":"after_alarm","escrow_key":")" +
              capsule::ToHex(escrow.public_key) + R"("}})"));
  Start();
  std::mt19937 rng(9);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  capsule::UsageReport before = Report();
  EXPECT_GT(before.defenses.watermarked, 0u);
  EXPECT_TRUE(before.escrow.empty()) << "no input leaves the client before an alarm";
  ASSERT_TRUE(FeedExtractionLikeStream(400, rng).ok());  // action log: answers go on
  capsule::UsageReport after = Report();
  ASSERT_EQ(after.defenses.prada_alarmed, 1);
  EXPECT_FALSE(after.escrow.empty());
  for (const std::vector<uint8_t>& sealed : after.escrow)
    EXPECT_TRUE(defense::OpenEscrowRecord(escrow, sealed).ok());
}

TEST_F(DefensesTest, RecordsReleasedByAnAlarmSurviveALeaseFromAnEarlierReport) {
  capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
  Make(Policy(R"("defenses":{"prada":{"enabled":true},"watermark":{"enabled":true,)"
              R"("rate":0.5,"escrow":"after_alarm","escrow_key":")" +
              capsule::ToHex(escrow.public_key) + R"("}})"));
  Start();
  std::mt19937 rng(10);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Infer(RandomRow(rng)).ok());
  // A renewal request carrying the report at query 20 (nothing escrowed yet) ...
  Reply reply;
  std::vector<uint8_t> evidence(33, 0);
  evidence[32] = 1;
  ASSERT_TRUE(Do(Call::kEvidence, evidence, &reply).ok());
  auto lease = provider_->Lease(reply.output, 100000, 30 * 86400, platform_.Now().unix_seconds);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  // ... then an alarm releases the records of queries 1..20 held inside, and only then does the
  // renewed lease (continuing from query 20) arrive.
  ASSERT_TRUE(FeedExtractionLikeStream(400, rng).ok());
  ASSERT_TRUE(Do(Call::kInstallLease, *lease, &reply).ok());
  capsule::UsageReport r = Report();
  ASSERT_EQ(r.defenses.prada_alarmed, 1);
  bool early = false;
  for (const std::vector<uint8_t>& sealed : r.escrow) {
    auto record = defense::OpenEscrowRecord(escrow, sealed);
    ASSERT_TRUE(record.ok());
    early |= record->query_count <= 20;
  }
  EXPECT_TRUE(early) << "records of queries before the acknowledged report must still be reported";
}

TEST(SealedUpdateTest, MalformedUpdatesAreErrors) {
  EXPECT_FALSE(SplitSealedUpdate({}).ok());
  ByteWriter w;
  w.Blob(std::vector<uint8_t>(10, 1));
  w.Pod<uint64_t>(7);
  w.Blob(std::vector<uint8_t>(3, 2));
  auto ok = SplitSealedUpdate(w.span());
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->state.size(), 10u);
  EXPECT_EQ(ok->journal_keep, 7u);
  EXPECT_EQ(ok->journal_append.size(), 3u);
  std::vector<uint8_t> bytes(w.span().begin(), w.span().end());
  bytes.push_back(0);
  EXPECT_FALSE(SplitSealedUpdate(bytes).ok());
  bytes.resize(bytes.size() - 3);
  EXPECT_FALSE(SplitSealedUpdate(bytes).ok());
}

}  // namespace
}  // namespace mlcapsule::trusted
