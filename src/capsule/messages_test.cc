// Protocol messages and key files: round trips, every byte flip and truncation rejected, signer
// pinning, limits, and key-file permissions.
#include "capsule/messages.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "base/bytes.h"

namespace mlcapsule::capsule {
namespace {

bool Contains(const Status& status, std::string_view text) {
  return status.message().find(text) != std::string::npos;
}

template <size_t N>
std::array<uint8_t, N> Filled(uint8_t value) {
  std::array<uint8_t, N> out{};
  out.fill(value);
  return out;
}

std::vector<uint8_t> U32(uint32_t v) {
  std::vector<uint8_t> out(4);
  std::memcpy(out.data(), &v, 4);
  return out;
}

class MessagesTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InitCrypto().ok()); }
};

// ---- helpers shared by the protocol ----

TEST_F(MessagesTest, EvidenceTypeNames) {
  for (EvidenceType type : {EvidenceType::kSoftware, EvidenceType::kSgx, EvidenceType::kTdx,
                            EvidenceType::kSnp, EvidenceType::kTpm}) {
    EvidenceType parsed{};
    ASSERT_TRUE(EvidenceTypeFromName(EvidenceTypeName(type), &parsed)) << EvidenceTypeName(type);
    EXPECT_EQ(parsed, type);
  }
  EXPECT_STREQ(EvidenceTypeName(EvidenceType::kSnp), "snp");
  EvidenceType untouched = EvidenceType::kTpm;
  EXPECT_FALSE(EvidenceTypeFromName("SGX", &untouched));
  EXPECT_FALSE(EvidenceTypeFromName("", &untouched));
  EXPECT_EQ(untouched, EvidenceType::kTpm);
  EXPECT_STREQ(EvidenceTypeName(static_cast<EvidenceType>(9)), "unknown");
}

TEST_F(MessagesTest, ReportDataAndChainGenesisFollowTheirDefinitions) {
  Nonce nonce = Filled<32>(1);
  CapsuleId id = Filled<16>(2);
  PublicKey box = Filled<32>(3), signing = Filled<32>(4);
  ReportData data = ComputeReportData(nonce, id, box, signing);
  EXPECT_EQ(data, Hash64({AsBytes("mlcapsule/v1"), nonce, id, box, signing}));
  // Every input is committed to.
  EXPECT_NE(data, ComputeReportData(Filled<32>(9), id, box, signing));
  EXPECT_NE(data, ComputeReportData(nonce, Filled<16>(9), box, signing));
  EXPECT_NE(data, ComputeReportData(nonce, id, Filled<32>(9), signing));
  EXPECT_NE(data, ComputeReportData(nonce, id, box, Filled<32>(9)));

  Digest genesis = ChainGenesis(id, signing);
  EXPECT_EQ(genesis, Hash({AsBytes("mlcapsule/v1/chain"), id, signing}));
  EXPECT_NE(genesis, ChainGenesis(Filled<16>(9), signing));
  EXPECT_NE(genesis, ChainGenesis(id, Filled<32>(9)));
}

// ---- evidence request ----

EvidenceRequest MakeRequest(bool with_report) {
  EvidenceRequest request;
  request.capsule_id = Filled<16>(0x11);
  request.nonce = Filled<32>(0x22);
  request.core_box_key = Filled<32>(0x33);
  request.core_signing_key = Filled<32>(0x44);
  request.evidence_type = EvidenceType::kSgx;
  request.evidence = {1, 2, 3, 4, 5};
  if (with_report) request.usage_report = std::vector<uint8_t>{9, 8, 7};
  return request;
}

TEST_F(MessagesTest, EvidenceRequestRoundTrip) {
  for (bool with_report : {false, true}) {
    EvidenceRequest request = MakeRequest(with_report);
    std::vector<uint8_t> bytes = SerializeEvidenceRequest(request);
    EXPECT_EQ(std::memcmp(bytes.data(), "MLCEVREQ", 8), 0);
    Result<EvidenceRequest> parsed = ParseEvidenceRequest(bytes);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(parsed->capsule_id, request.capsule_id);
    EXPECT_EQ(parsed->nonce, request.nonce);
    EXPECT_EQ(parsed->core_box_key, request.core_box_key);
    EXPECT_EQ(parsed->core_signing_key, request.core_signing_key);
    EXPECT_EQ(parsed->evidence_type, request.evidence_type);
    EXPECT_EQ(parsed->evidence, request.evidence);
    EXPECT_EQ(parsed->usage_report, request.usage_report);
    EXPECT_EQ(SerializeEvidenceRequest(*parsed), bytes);
  }
}

TEST_F(MessagesTest, EvidenceRequestRejectsMalformedBytes) {
  std::vector<uint8_t> bytes = SerializeEvidenceRequest(MakeRequest(true));
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_FALSE(ParseEvidenceRequest(std::span(bytes).first(n)).ok()) << "length " << n;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  Result<EvidenceRequest> trailing = ParseEvidenceRequest(longer);
  ASSERT_FALSE(trailing.ok());
  EXPECT_TRUE(Contains(trailing.status(), "trailing")) << trailing.status().ToString();

  auto edited = [&](size_t offset, std::vector<uint8_t> value) {
    std::vector<uint8_t> copy = bytes;
    std::memcpy(copy.data() + offset, value.data(), value.size());
    return ParseEvidenceRequest(copy).status();
  };
  EXPECT_TRUE(Contains(edited(0, {'X'}), "evidence request has bad magic"));
  EXPECT_TRUE(Contains(edited(8, U32(2)), "version 2"));
  // magic 8 + version 4 + capsule_id 16 + nonce 32 + two keys 64 = 124: evidence type.
  EXPECT_TRUE(Contains(edited(124, {0}), "evidence type 0"));
  EXPECT_TRUE(Contains(edited(124, {6}), "evidence type 6"));
  EXPECT_TRUE(Contains(edited(125, U32(kMaxEvidenceBytes + 1)), "over the limit 65536"));
  // evidence blob (4 + 5 bytes) then the report flag.
  EXPECT_TRUE(Contains(edited(134, {2}), "usage report flag is 2"));

  std::vector<uint8_t> huge(kMaxEvidenceRequestBytes + 1);
  Result<EvidenceRequest> too_large = ParseEvidenceRequest(huge);
  ASSERT_FALSE(too_large.ok());
  EXPECT_TRUE(
      Contains(too_large.status(), "over the limit " + std::to_string(kMaxEvidenceRequestBytes)));
  // The largest usage report fits beside the largest evidence.
  EvidenceRequest largest = MakeRequest(true);
  largest.evidence.assign(kMaxEvidenceBytes, 0x5a);
  largest.usage_report = std::vector<uint8_t>(kMaxUsageReportBytes, 0xa5);
  largest.capsule_id = Filled<16>(0x77);
  EXPECT_TRUE(ParseEvidenceRequest(SerializeEvidenceRequest(largest)).ok());
}

// ---- lease ----

struct LeaseFixture {
  SigningKeyPair provider = GenerateSigningKeyPair();
  SigningKeyPair server = GenerateSigningKeyPair();
  BoxKeyPair core_box = GenerateBoxKeyPair();
  SigningKeyPair core_signing = GenerateSigningKeyPair();
  SecretBytes capsule_key = RandomSecret(kSymmetricKeyBytes);
  CapsuleHeader header;
  LeaseBody body;

  LeaseFixture() {
    header.capsule_id = Filled<16>(0x5a);
    header.provider_key = provider.public_key;
    header.lease_signers = {Filled<32>(0x77), server.public_key};
    body.capsule_id = header.capsule_id;
    body.license_id = "license-0042";
    body.lease_id = Filled<16>(0x66);
    body.sequence = 3;
    body.issued_at = 1700000000;
    body.not_before = 1700000000;
    body.expires_at = 1700000000 + 86400;
    body.query_quota = 10000;
    body.chain_base_count = 250;
    body.chain_base = Filled<32>(0x99);
    body.core_box_key = core_box.public_key;
    body.core_signing_key = core_signing.public_key;
  }
  std::vector<uint8_t> Issue(const SigningKeyPair& signer) {
    Result<std::vector<uint8_t>> lease = IssueLease(body, capsule_key, signer);
    EXPECT_TRUE(lease.ok()) << lease.status().ToString();
    return lease.ok() ? *lease : std::vector<uint8_t>{};
  }
};

TEST_F(MessagesTest, LeaseRoundTripAndKeyUnwrap) {
  LeaseFixture f;
  std::vector<uint8_t> bytes = f.Issue(f.server);
  EXPECT_EQ(std::memcmp(bytes.data(), "MLCLEASE", 8), 0);
  Result<Lease> lease = ParseAndVerifyLease(bytes, f.header);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  const LeaseBody& body = lease->body;
  EXPECT_EQ(body.capsule_id, f.body.capsule_id);
  EXPECT_EQ(body.license_id, f.body.license_id);
  EXPECT_EQ(body.lease_id, f.body.lease_id);
  EXPECT_EQ(body.sequence, f.body.sequence);
  EXPECT_EQ(body.issued_at, f.body.issued_at);
  EXPECT_EQ(body.not_before, f.body.not_before);
  EXPECT_EQ(body.expires_at, f.body.expires_at);
  EXPECT_EQ(body.query_quota, f.body.query_quota);
  EXPECT_EQ(body.chain_base_count, f.body.chain_base_count);
  EXPECT_EQ(body.chain_base, f.body.chain_base);
  EXPECT_EQ(body.core_box_key, f.body.core_box_key);
  EXPECT_EQ(body.core_signing_key, f.body.core_signing_key);
  EXPECT_EQ(lease->signer, f.server.public_key);

  // Only the core's box key unwraps the capsule key.
  Result<SecretBytes> key = OpenSealed(f.core_box, body.wrapped_capsule_key);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_TRUE(ConstantTimeEqual(key->span(), f.capsule_key.span()));
  EXPECT_FALSE(OpenSealed(GenerateBoxKeyPair(), body.wrapped_capsule_key).ok());
}

TEST_F(MessagesTest, TeeBoundLeaseCarriesTheCredentialAndMasksTheKey) {
  LeaseFixture f;
  std::vector<uint8_t> unbound = f.Issue(f.server);
  uint32_t version = 0;
  std::memcpy(&version, unbound.data() + 8, 4);
  EXPECT_EQ(version, 1u);  // unbound leases keep version 1

  f.body.tee_binding = TeeBinding{std::vector<uint8_t>(70, 0x11), std::vector<uint8_t>(258, 0x22)};
  // A bound lease without the credential's secret cannot be issued.
  Result<std::vector<uint8_t>> missing = IssueLease(f.body, f.capsule_key, f.server);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(Contains(missing.status(), "needs the secret")) << missing.status().ToString();

  SecretBytes secret(32);
  RandomBytes(secret.span());
  Result<std::vector<uint8_t>> bytes = IssueLease(f.body, f.capsule_key, f.server, &secret);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  std::memcpy(&version, bytes->data() + 8, 4);
  EXPECT_EQ(version, 2u);
  Result<Lease> lease = ParseAndVerifyLease(*bytes, f.header);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(lease->body.tee_binding.has_value());
  EXPECT_EQ(lease->body.tee_binding->id_object, f.body.tee_binding->id_object);
  EXPECT_EQ(lease->body.tee_binding->encrypted_secret, f.body.tee_binding->encrypted_secret);

  // The box key alone yields the masked key; the secret's mask recovers the capsule key.
  Result<SecretBytes> masked = OpenSealed(f.core_box, lease->body.wrapped_capsule_key);
  ASSERT_TRUE(masked.ok()) << masked.status().ToString();
  EXPECT_FALSE(ConstantTimeEqual(masked->span(), f.capsule_key.span()));
  SecretBytes mask = TeeBoundMask(secret);
  for (size_t i = 0; i < masked->size(); ++i) masked->data()[i] ^= mask.data()[i];
  EXPECT_TRUE(ConstantTimeEqual(masked->span(), f.capsule_key.span()));

  // Every byte of the binding is signed.
  for (size_t i = 0; i < bytes->size(); ++i) {
    std::vector<uint8_t> changed = *bytes;
    changed[i] ^= 0x01;
    EXPECT_FALSE(ParseAndVerifyLease(changed, f.header).ok()) << "byte " << i;
  }
  // A version-2 lease must say it is bound (tee_bound is the byte after the wrapped key).
  const size_t bound_flag = bytes->size() - 32 - 64 - (4 + 258) - (4 + 70) - 1;
  ASSERT_EQ((*bytes)[bound_flag], 1);
  std::vector<uint8_t> flag_zero = *bytes;
  flag_zero[bound_flag] = 0;
  Result<Lease> unflagged = ParseLease(flag_zero);
  ASSERT_FALSE(unflagged.ok());
  EXPECT_TRUE(Contains(unflagged.status(), "tee_bound")) << unflagged.status().ToString();
  // An oversized credential part is refused.
  f.body.tee_binding->id_object.assign(kMaxTeeBindingPartBytes + 1, 0x33);
  Result<std::vector<uint8_t>> oversize = IssueLease(f.body, f.capsule_key, f.server, &secret);
  ASSERT_FALSE(oversize.ok());
  EXPECT_TRUE(Contains(oversize.status(), "id_object")) << oversize.status().ToString();
}

TEST_F(MessagesTest, EveryLeaseByteFlipIsRejected) {
  LeaseFixture f;
  std::vector<uint8_t> bytes = f.Issue(f.server);
  ASSERT_TRUE(ParseAndVerifyLease(bytes, f.header).ok());
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      std::vector<uint8_t> changed = bytes;
      changed[i] ^= bit;
      EXPECT_FALSE(ParseAndVerifyLease(changed, f.header).ok()) << "byte " << i;
    }
  }
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_FALSE(ParseLease(std::span(bytes).first(n)).ok()) << "length " << n;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(ParseLease(longer).ok());
}

TEST_F(MessagesTest, LeaseFromUnpinnedSignerIsRejected) {
  LeaseFixture f;
  SigningKeyPair stranger = GenerateSigningKeyPair();
  std::vector<uint8_t> bytes = f.Issue(stranger);
  ASSERT_TRUE(ParseLease(bytes).ok());  // well formed, validly self-signed
  Result<Lease> lease = ParseAndVerifyLease(bytes, f.header);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), StatusCode::kPermissionDenied);
  std::string expected = fmt::format("lease is signed by key {}.. which the capsule does not pin",
                                     ToHex(std::span(stranger.public_key).first(4)));
  EXPECT_TRUE(Contains(lease.status(), expected)) << lease.status().ToString();

  // The provider key is not a lease signer when the capsule pins others.
  EXPECT_FALSE(ParseAndVerifyLease(f.Issue(f.provider), f.header).ok());
}

TEST_F(MessagesTest, EmptySignerListPinsTheProviderKey) {
  LeaseFixture f;
  f.header.lease_signers.clear();
  EXPECT_TRUE(ParseAndVerifyLease(f.Issue(f.provider), f.header).ok());
  Result<Lease> server = ParseAndVerifyLease(f.Issue(f.server), f.header);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(Contains(server.status(), "does not pin")) << server.status().ToString();
}

TEST_F(MessagesTest, LeaseForAnotherCapsuleIsRejected) {
  LeaseFixture f;
  f.body.capsule_id = Filled<16>(0x01);
  Result<Lease> lease = ParseAndVerifyLease(f.Issue(f.server), f.header);
  ASSERT_FALSE(lease.ok());
  EXPECT_TRUE(Contains(lease.status(), "lease is for capsule 0101")) << lease.status().ToString();
}

TEST_F(MessagesTest, LeaseSignatureIsDomainSeparated) {
  LeaseFixture f;
  std::vector<uint8_t> bytes = f.Issue(f.server);
  // The same bytes signed under another message type's domain do not verify as a lease.
  Signature other = Sign(f.server.secret, kUsageReportSignatureDomain,
                         {std::span(bytes).first(bytes.size() - 64)});
  std::memcpy(bytes.data() + bytes.size() - 64, other.data(), 64);
  Result<Lease> lease = ParseAndVerifyLease(bytes, f.header);
  ASSERT_FALSE(lease.ok());
  EXPECT_TRUE(Contains(lease.status(), "signature does not verify")) << lease.status().ToString();
}

TEST_F(MessagesTest, LeaseLimits) {
  LeaseFixture f;
  f.body.sequence = 0;
  EXPECT_TRUE(Contains(IssueLease(f.body, f.capsule_key, f.server).status(), "sequence is 0"));
  f.body.sequence = 1;
  f.body.query_quota = 0;
  EXPECT_TRUE(Contains(IssueLease(f.body, f.capsule_key, f.server).status(), "query quota is 0"));
  f.body.query_quota = 1;
  f.body.license_id = std::string(129, 'x');
  EXPECT_TRUE(Contains(IssueLease(f.body, f.capsule_key, f.server).status(), "129 bytes"));
  f.body.license_id = "ok";
  EXPECT_FALSE(IssueLease(f.body, RandomSecret(16), f.server).ok());
  LeaseBody zero_key = f.body;
  zero_key.core_box_key = {};
  EXPECT_TRUE(Contains(IssueLease(zero_key, f.capsule_key, f.server).status(),
                       "not a usable X25519 public key"));
  EXPECT_TRUE(IssueLease(f.body, f.capsule_key, f.server).ok());

  // A parsed license id length over the limit names the field.
  std::vector<uint8_t> bytes = f.Issue(f.server);
  std::vector<uint8_t> big = U32(200);
  std::memcpy(bytes.data() + 8 + 4 + 16, big.data(), 4);
  Result<Lease> lease = ParseLease(bytes);
  ASSERT_FALSE(lease.ok());
  EXPECT_TRUE(Contains(lease.status(), "license id length 200 is over the limit 128"))
      << lease.status().ToString();
  EXPECT_FALSE(ParseLease(std::vector<uint8_t>(kMaxLeaseBytes + 1)).ok());
}

// ---- usage report ----

UsageReport MakeReport(const SigningKeyPair& core) {
  UsageReport report;
  report.capsule_id = Filled<16>(0x12);
  report.license_id = "license-0042";
  report.lease_id = Filled<16>(0x34);
  report.report_sequence = 7;
  report.core_signing_key = core.public_key;
  report.from_count = 100;
  report.from_head = Filled<32>(0x56);
  report.to_count = 180;
  report.to_head = Filled<32>(0x78);
  report.created_at = 1700001234;
  report.alerts = {Alert{"prada", 150, "query distribution shift (W=0.71 < 0.95)"},
                   Alert{"rate-limit", 170, ""}};
  return report;
}

// MakeReport with a defense summary and two escrow records (opaque sealed boxes here).
UsageReport MakeReportWithDefenses(const SigningKeyPair& core) {
  UsageReport report = MakeReport(core);
  report.defenses.prada_observed = 180;
  report.defenses.prada_stored = 120;
  report.defenses.prada_last_w = 0.71;
  report.defenses.prada_alarmed = 1;
  report.defenses.watermarked = 3;
  report.defenses.escrowed = 2;
  report.defenses.escrow_dropped = 1;
  report.defenses.memguard_applied = 180;
  report.defenses.rate_limited = 4;
  report.escrow = {std::vector<uint8_t>(kMinEscrowRecordBytes, 0x01),
                   std::vector<uint8_t>(1000, 0x02)};
  return report;
}

// The signed bytes of `report` as version 1 wrote them: no defenses, no escrow records.
std::vector<uint8_t> SignVersion1(const UsageReport& report, const SigningKeyPair& core) {
  UsageReport plain = report;
  plain.defenses = {};
  plain.escrow.clear();
  std::vector<uint8_t> bytes = SignUsageReport(plain, core.secret);
  bytes.resize(bytes.size() - 64 - (65 + 2));  // signature, defenses, escrow count
  const uint32_t version = 1;
  std::memcpy(bytes.data() + 8, &version, 4);
  const Signature signature = Sign(core.secret, kUsageReportSignatureDomain, {bytes});
  bytes.insert(bytes.end(), signature.begin(), signature.end());
  return bytes;
}

TEST_F(MessagesTest, UsageReportRoundTrip) {
  SigningKeyPair core = GenerateSigningKeyPair();
  UsageReport report = MakeReport(core);
  std::vector<uint8_t> bytes = SignUsageReport(report, core.secret);
  EXPECT_EQ(std::memcmp(bytes.data(), "MLCUSAGE", 8), 0);
  Result<UsageReport> parsed = ParseAndVerifyUsageReport(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->capsule_id, report.capsule_id);
  EXPECT_EQ(parsed->license_id, report.license_id);
  EXPECT_EQ(parsed->lease_id, report.lease_id);
  EXPECT_EQ(parsed->report_sequence, report.report_sequence);
  EXPECT_EQ(parsed->core_signing_key, report.core_signing_key);
  EXPECT_EQ(parsed->from_count, report.from_count);
  EXPECT_EQ(parsed->from_head, report.from_head);
  EXPECT_EQ(parsed->to_count, report.to_count);
  EXPECT_EQ(parsed->to_head, report.to_head);
  EXPECT_EQ(parsed->created_at, report.created_at);
  ASSERT_EQ(parsed->alerts.size(), 2u);
  EXPECT_EQ(parsed->alerts[0].kind, "prada");
  EXPECT_EQ(parsed->alerts[0].at_count, 150u);
  EXPECT_EQ(parsed->alerts[0].detail, report.alerts[0].detail);
  EXPECT_EQ(parsed->alerts[1].kind, "rate-limit");
  EXPECT_EQ(parsed->alerts[1].detail, "");
  EXPECT_EQ(parsed->version, 2u);
  EXPECT_EQ(parsed->defenses, DefenseSummary{});
  EXPECT_EQ(parsed->defenses.prada_last_w, -1.0);
  EXPECT_TRUE(parsed->escrow.empty());
  EXPECT_EQ(SignUsageReport(*parsed, core.secret), bytes);  // Ed25519 is deterministic
  EXPECT_EQ(UsageReportBytes(report), bytes.size());
}

TEST_F(MessagesTest, UsageReportCarriesDefensesAndEscrowSigned) {
  SigningKeyPair core = GenerateSigningKeyPair();
  UsageReport report = MakeReportWithDefenses(core);
  std::vector<uint8_t> bytes = SignUsageReport(report, core.secret);
  EXPECT_EQ(UsageReportBytes(report), bytes.size());
  Result<UsageReport> parsed = ParseAndVerifyUsageReport(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->defenses, report.defenses);
  EXPECT_EQ(parsed->escrow, report.escrow);
  EXPECT_EQ(SignUsageReport(*parsed, core.secret), bytes);
  // Every byte is covered by the signature, escrow records included.
  for (size_t i = 0; i < bytes.size(); i += 7) {
    std::vector<uint8_t> changed = bytes;
    changed[i] ^= 0x40;
    EXPECT_FALSE(ParseAndVerifyUsageReport(changed).ok()) << "byte " << i;
  }
}

TEST_F(MessagesTest, VersionOneUsageReportsStillParse) {
  SigningKeyPair core = GenerateSigningKeyPair();
  const UsageReport report = MakeReportWithDefenses(core);
  const std::vector<uint8_t> bytes = SignVersion1(report, core);
  Result<UsageReport> parsed = ParseAndVerifyUsageReport(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->version, 1u);
  EXPECT_EQ(parsed->to_count, report.to_count);
  EXPECT_EQ(parsed->alerts.size(), 2u);
  EXPECT_EQ(parsed->defenses, DefenseSummary{});
  EXPECT_TRUE(parsed->escrow.empty());
  std::vector<uint8_t> future = bytes;
  const uint32_t three = 3;
  std::memcpy(future.data() + 8, &three, 4);
  Result<UsageReport> unsupported = ParseUsageReport(future);
  ASSERT_FALSE(unsupported.ok());
  EXPECT_EQ(unsupported.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(Contains(unsupported.status(), "versions 1..2"));
}

TEST_F(MessagesTest, EveryUsageReportByteFlipIsRejected) {
  SigningKeyPair core = GenerateSigningKeyPair();
  std::vector<uint8_t> bytes = SignUsageReport(MakeReport(core), core.secret);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::vector<uint8_t> changed = bytes;
    changed[i] ^= 0x01;
    EXPECT_FALSE(ParseAndVerifyUsageReport(changed).ok()) << "byte " << i;
  }
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_FALSE(ParseUsageReport(std::span(bytes).first(n)).ok()) << "length " << n;
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(ParseUsageReport(longer).ok());
  // A report signed by another key than the one it names does not verify.
  SigningKeyPair other = GenerateSigningKeyPair();
  EXPECT_FALSE(ParseAndVerifyUsageReport(SignUsageReport(MakeReport(core), other.secret)).ok());
}

TEST_F(MessagesTest, UsageReportLimits) {
  SigningKeyPair core = GenerateSigningKeyPair();
  UsageReport report = MakeReport(core);
  report.to_count = 99;
  Result<UsageReport> backwards = ParseUsageReport(SignUsageReport(report, core.secret));
  ASSERT_FALSE(backwards.ok());
  EXPECT_TRUE(Contains(backwards.status(), "to_count 99 is below from_count 100"));

  report = MakeReport(core);
  report.alerts[0].kind = std::string(65, 'k');
  EXPECT_TRUE(Contains(ParseUsageReport(SignUsageReport(report, core.secret)).status(),
                       "alert kind length 65 is over the limit 64"));
  report = MakeReport(core);
  report.alerts[1].detail = std::string(1025, 'd');
  EXPECT_TRUE(Contains(ParseUsageReport(SignUsageReport(report, core.secret)).status(),
                       "alert detail length 1025 is over the limit 1024"));

  // alert_count sits right after created_at, before the defenses (65 bytes) and the escrow
  // count; 257 is over the limit.
  report = MakeReport(core);
  report.alerts.clear();
  std::vector<uint8_t> bytes = SignUsageReport(report, core.secret);
  const size_t alert_count = bytes.size() - 64 - 2 - 65 - 2;
  uint16_t too_many = 257;
  std::memcpy(bytes.data() + alert_count, &too_many, 2);
  Result<UsageReport> parsed = ParseUsageReport(bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(Contains(parsed.status(), "alert count 257 is over the limit 256"))
      << parsed.status().ToString();

  // The whole report is bounded by 1 MiB: escrow records that fit one by one exceed it together.
  report = MakeReport(core);
  report.alerts.assign(kMaxAlerts, Alert{"prada", 1, std::string(kMaxAlertDetailBytes, 'd')});
  ASSERT_TRUE(ParseUsageReport(SignUsageReport(report, core.secret)).ok());
  report.escrow.assign(2, std::vector<uint8_t>(600 << 10, 0x03));
  Result<UsageReport> oversized = ParseUsageReport(SignUsageReport(report, core.secret));
  ASSERT_FALSE(oversized.ok());
  EXPECT_TRUE(Contains(oversized.status(), "over the limit 1048576"));
}

TEST_F(MessagesTest, DefenseSummaryAndEscrowLimits) {
  SigningKeyPair core = GenerateSigningKeyPair();
  auto reason = [&](const UsageReport& report) {
    return ParseUsageReport(SignUsageReport(report, core.secret)).status();
  };
  UsageReport report = MakeReportWithDefenses(core);
  for (double w : {std::numeric_limits<double>::quiet_NaN(), -0.5, 1.5,
                   std::numeric_limits<double>::infinity()}) {
    report.defenses.prada_last_w = w;
    EXPECT_TRUE(Contains(reason(report), "prada_last_w")) << w;
  }
  for (double w : {-1.0, 0.0, 1.0, 0.5}) {
    report.defenses.prada_last_w = w;
    EXPECT_TRUE(reason(report).ok()) << w;
  }
  report = MakeReportWithDefenses(core);
  report.defenses.prada_alarmed = 2;
  EXPECT_TRUE(Contains(reason(report), "prada_alarmed is 2"));

  report = MakeReportWithDefenses(core);
  report.escrow = {std::vector<uint8_t>(kMinEscrowRecordBytes - 1, 1)};
  EXPECT_TRUE(Contains(reason(report), "below the 49 of a sealed box"));
  report.escrow = {std::vector<uint8_t>(kMaxEscrowRecordBytes + 1, 1)};
  EXPECT_TRUE(Contains(reason(report), "over the limit"));
  report.escrow = {};

  // The escrow count is the u16 just before the signature (no records): 4097 is over the limit,
  // and a count the remaining bytes cannot hold is truncation, found before any allocation.
  std::vector<uint8_t> bytes = SignUsageReport(report, core.secret);
  const size_t count_at = bytes.size() - 64 - 2;
  uint16_t count = 4097;
  std::memcpy(bytes.data() + count_at, &count, 2);
  EXPECT_TRUE(Contains(ParseUsageReport(bytes).status(), "escrow record count 4097 is over"));
  count = 4096;
  std::memcpy(bytes.data() + count_at, &count, 2);
  EXPECT_TRUE(Contains(ParseUsageReport(bytes).status(), "needs more bytes"));

  // 4096 records of the smallest size are a valid report.
  report.escrow.assign(kMaxEscrowRecords, std::vector<uint8_t>(kMinEscrowRecordBytes, 7));
  Result<UsageReport> many = ParseUsageReport(SignUsageReport(report, core.secret));
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_EQ(many->escrow.size(), kMaxEscrowRecords);
}

// ---- key files ----

class KeyFileTest : public MessagesTest {
 protected:
  void SetUp() override {
    MessagesTest::SetUp();
    char pattern[] = "/tmp/mlc-keyfile-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void WriteText(const std::string& path, const std::string& text, mode_t mode) {
    std::ofstream(path, std::ios::binary) << text;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }
  std::string dir_;
};

TEST_F(KeyFileTest, KeyPairRoundTrip) {
  SigningKeyPair pair = GenerateSigningKeyPair();
  ASSERT_TRUE(WriteKeyPair(dir_, "provider", pair).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/provider.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  Result<SigningKeyPair> secret = ReadSecretKeyFile(dir_ + "/provider.key");
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(secret->public_key, pair.public_key);
  EXPECT_TRUE(ConstantTimeEqual(secret->secret.span(), pair.secret.span()));
  Result<PublicKey> pub = ReadPublicKeyFile(dir_ + "/provider.pub");
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(*pub, pair.public_key);

  std::ifstream in(dir_ + "/provider.pub");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "MLCPUB1\n" + ToHex(pair.public_key) + "\n");
}

TEST_F(KeyFileTest, OverwriteIsRefused) {
  SigningKeyPair first = GenerateSigningKeyPair();
  ASSERT_TRUE(WriteKeyPair(dir_, "provider", first).ok());
  Status again = WriteKeyPair(dir_, "provider", GenerateSigningKeyPair());
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(Contains(again, "refusing to overwrite")) << again.ToString();
  Result<SigningKeyPair> kept = ReadSecretKeyFile(dir_ + "/provider.key");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->public_key, first.public_key);

  // A stray public key alone also blocks a new pair (no secret is written next to it).
  WriteText(dir_ + "/other.pub", "x", 0644);
  EXPECT_FALSE(WriteKeyPair(dir_, "other", GenerateSigningKeyPair()).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/other.key"));
}

TEST_F(KeyFileTest, ReadableSecretKeyIsRefused) {
  ASSERT_TRUE(WriteKeyPair(dir_, "provider", GenerateSigningKeyPair()).ok());
  const std::string path = dir_ + "/provider.key";
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    Result<SigningKeyPair> pair = ReadSecretKeyFile(path);
    ASSERT_FALSE(pair.ok()) << std::oct << mode;
    EXPECT_EQ(pair.status().code(), StatusCode::kPermissionDenied);
    EXPECT_TRUE(Contains(pair.status(), "chmod 600")) << pair.status().ToString();
  }
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_TRUE(ReadSecretKeyFile(path).ok());
}

TEST_F(KeyFileTest, MalformedKeyFilesAreRejected) {
  SigningKeyPair pair = GenerateSigningKeyPair();
  const std::string hex = ToHex(pair.secret.span());
  const std::string path = dir_ + "/bad.key";
  auto read = [&](const std::string& text) {
    std::filesystem::remove(path);
    WriteText(path, text, 0600);
    return ReadSecretKeyFile(path).status();
  };
  EXPECT_TRUE(read("MLCKEY1\n" + hex + "\n").ok());
  EXPECT_TRUE(Contains(read("MLCKEY2\n" + hex + "\n"), "does not start with"));
  EXPECT_TRUE(Contains(read("MLCKEY1\n" + hex), "truncated"));
  EXPECT_TRUE(Contains(read("MLCKEY1\n" + hex + "\nextra"), "unexpected bytes"));
  EXPECT_TRUE(Contains(read("MLCKEY1\n" + hex.substr(2) + "\n"), "126 hex characters"));
  std::string inconsistent = hex;
  inconsistent[100] = inconsistent[100] == '0' ? '1' : '0';  // in the public half
  EXPECT_TRUE(Contains(read("MLCKEY1\n" + inconsistent + "\n"), "does not match"));
  EXPECT_TRUE(Contains(read(std::string(2000, 'x')), "too large"));
  EXPECT_FALSE(ReadSecretKeyFile(dir_ + "/missing.key").ok());

  const std::string pub_path = dir_ + "/bad.pub";
  WriteText(pub_path, "MLCPUB1\n" + std::string(64, 'z') + "\n", 0644);
  EXPECT_TRUE(Contains(ReadPublicKeyFile(pub_path).status(), "not valid hex"));
}

TEST_F(KeyFileTest, EscrowKeyPairRoundTripAndPermissions) {
  BoxKeyPair pair = GenerateBoxKeyPair();
  ASSERT_TRUE(WriteEscrowKeyPair(dir_, "escrow", pair).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/escrow.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Result<BoxKeyPair> secret = ReadEscrowSecretKeyFile(dir_ + "/escrow.key");
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(secret->public_key, pair.public_key);
  EXPECT_TRUE(ConstantTimeEqual(secret->secret.span(), pair.secret.span()));
  Result<PublicKey> pub = ReadEscrowPublicKeyFile(dir_ + "/escrow.pub");
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(*pub, pair.public_key);
  // The key opens what is sealed to its public half.
  const std::vector<uint8_t> sealed = SealTo(*pub, AsBytes("escrowed"));
  Result<SecretBytes> opened = OpenSealed(*secret, sealed);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(opened->data()), opened->size()), "escrowed");

  EXPECT_TRUE(Contains(WriteEscrowKeyPair(dir_, "escrow", pair), "refusing to overwrite"));
  // Signing and escrow key files are not interchangeable.
  EXPECT_TRUE(Contains(ReadSecretKeyFile(dir_ + "/escrow.key").status(), "does not start with"));
  EXPECT_TRUE(Contains(ReadEscrowPublicKeyFile(dir_ + "/escrow.key").status(), "not a MLCEPUB1"));
  ASSERT_TRUE(WriteKeyPair(dir_, "provider", GenerateSigningKeyPair()).ok());
  EXPECT_FALSE(ReadEscrowSecretKeyFile(dir_ + "/provider.key").ok());

  const std::string path = dir_ + "/escrow.key";
  for (mode_t mode : {0644, 0640, 0604}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    Result<BoxKeyPair> readable = ReadEscrowSecretKeyFile(path);
    ASSERT_FALSE(readable.ok()) << std::oct << mode;
    EXPECT_EQ(readable.status().code(), StatusCode::kPermissionDenied);
    EXPECT_TRUE(Contains(readable.status(), "chmod 600"));
  }
}

TEST_F(KeyFileTest, CapsuleKeyFile) {
  CapsuleId id = Filled<16>(0xc4);
  SecretBytes key = RandomSecret(kSymmetricKeyBytes);
  const std::string path = dir_ + "/model.capsule.key";
  ASSERT_TRUE(WriteCapsuleKeyFile(path, id, key).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  Result<SecretBytes> read = ReadCapsuleKeyFile(path, id);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_TRUE(ConstantTimeEqual(read->span(), key.span()));

  Result<SecretBytes> other = ReadCapsuleKeyFile(path, Filled<16>(0x01));
  ASSERT_FALSE(other.ok());
  EXPECT_TRUE(Contains(other.status(), "holds the key of capsule c4c4"))
      << other.status().ToString();

  Status overwrite = WriteCapsuleKeyFile(path, id, key);
  EXPECT_TRUE(Contains(overwrite, "refusing to overwrite")) << overwrite.ToString();

  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  Result<SecretBytes> readable = ReadCapsuleKeyFile(path, id);
  ASSERT_FALSE(readable.ok());
  EXPECT_TRUE(Contains(readable.status(), "chmod 600")) << readable.status().ToString();
}

}  // namespace
}  // namespace mlcapsule::capsule
