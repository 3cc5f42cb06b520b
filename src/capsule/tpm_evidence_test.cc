// The TPM evidence container (tpm_evidence.h): round trip, every limit, truncation at every
// offset, trailing bytes, and the PCR 23 replay against a hand-written one (OpenSSL-free:
// libsodium's SHA-256 over explicitly concatenated buffers).
#include "capsule/tpm_evidence.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <cstring>
#include <string>

#include "base/bytes.h"
#include "capsule/crypto.h"

namespace mlcapsule::capsule {
namespace {

TpmEvidence Sample() {
  TpmEvidence e;
  for (size_t i = 0; i < e.report_data.size(); ++i) e.report_data[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < e.measurement.size(); ++i)
    e.measurement[i] = static_cast<uint8_t>(0xA0 + i);
  e.ek_cert.assign(300, 0x30);
  e.ek_chain = {std::vector<uint8_t>(200, 0x31), std::vector<uint8_t>(100, 0x32)};
  e.ak_public.assign(88, 0x23);
  e.attest.assign(145, 0xFF);
  e.signature.assign(72, 0x18);
  return e;
}

void ExpectEqual(const TpmEvidence& a, const TpmEvidence& b) {
  EXPECT_EQ(a.report_data, b.report_data);
  EXPECT_EQ(a.measurement, b.measurement);
  EXPECT_EQ(a.ek_cert, b.ek_cert);
  EXPECT_EQ(a.ek_chain, b.ek_chain);
  EXPECT_EQ(a.ak_public, b.ak_public);
  EXPECT_EQ(a.attest, b.attest);
  EXPECT_EQ(a.signature, b.signature);
}

void ExpectParseError(std::span<const uint8_t> bytes, const std::string& fragment) {
  Result<TpmEvidence> parsed = ParseTpmEvidence(bytes);
  ASSERT_FALSE(parsed.ok()) << fragment;
  EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message().rfind("parse_error: ", 0), 0u) << parsed.status().ToString();
  EXPECT_NE(parsed.status().message().find(fragment), std::string::npos)
      << parsed.status().ToString();
}

std::array<uint8_t, 32> Sha256Of(const std::vector<uint8_t>& bytes) {
  std::array<uint8_t, 32> out{};
  crypto_hash_sha256(out.data(), bytes.data(), bytes.size());
  return out;
}

TEST(TpmEvidence, RoundTripAndLayout) {
  const TpmEvidence e = Sample();
  const std::vector<uint8_t> bytes = EncodeTpmEvidence(e);
  // magic 8, version 4, report data 64, measurement 32, 4+300, count 1, 4+200, 4+100, 4+88,
  // 4+145, 4+72.
  EXPECT_EQ(bytes.size(), 8u + 4 + 64 + 32 + 304 + 1 + 204 + 104 + 92 + 149 + 76);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "MLCTPMEV");
  EXPECT_EQ(bytes[8], 1);  // version, little-endian
  EXPECT_EQ(bytes[9] | bytes[10] | bytes[11], 0);
  EXPECT_EQ(bytes[12], 0);  // report_data[0]
  EXPECT_EQ(bytes[76], 0xA0);
  Result<TpmEvidence> parsed = ParseTpmEvidence(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ExpectEqual(*parsed, e);

  TpmEvidence empty;  // every blob empty, no chain
  Result<TpmEvidence> parsed_empty = ParseTpmEvidence(EncodeTpmEvidence(empty));
  ASSERT_TRUE(parsed_empty.ok()) << parsed_empty.status().ToString();
  ExpectEqual(*parsed_empty, empty);
}

TEST(TpmEvidence, LimitsAreAcceptedAtAndRefusedAbove) {
  TpmEvidence at = Sample();
  at.ek_cert.assign(kMaxTpmCertBytes, 1);
  at.ek_chain.assign(kMaxTpmChainCerts, std::vector<uint8_t>(kMaxTpmCertBytes, 2));
  at.ak_public.assign(kMaxTpmPublicBytes, 3);
  at.attest.assign(kMaxTpmAttestBytes, 4);
  at.signature.assign(kMaxTpmSignatureBytes, 5);
  Result<TpmEvidence> parsed = ParseTpmEvidence(EncodeTpmEvidence(at));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ExpectEqual(*parsed, at);

  struct Case {
    const char* field;
    void (*mutate)(TpmEvidence*);
  };
  const Case cases[] = {
      {"ek_cert length 4097", [](TpmEvidence* e) { e->ek_cert.assign(kMaxTpmCertBytes + 1, 1); }},
      {"ek_chain_count 5",
       [](TpmEvidence* e) { e->ek_chain.assign(kMaxTpmChainCerts + 1, std::vector<uint8_t>(1)); }},
      {"ek_chain certificate length 4097",
       [](TpmEvidence* e) { e->ek_chain[1].assign(kMaxTpmCertBytes + 1, 2); }},
      {"ak_public length 1025",
       [](TpmEvidence* e) { e->ak_public.assign(kMaxTpmPublicBytes + 1, 3); }},
      {"attest length 1025", [](TpmEvidence* e) { e->attest.assign(kMaxTpmAttestBytes + 1, 4); }},
      {"signature length 513",
       [](TpmEvidence* e) { e->signature.assign(kMaxTpmSignatureBytes + 1, 5); }},
  };
  for (const Case& c : cases) {
    TpmEvidence e = Sample();
    c.mutate(&e);
    ExpectParseError(EncodeTpmEvidence(e), c.field);
  }
}

TEST(TpmEvidence, ChainCountBeyondTheBytesLeftIsRefusedBeforeAllocating) {
  TpmEvidence e = Sample();
  e.ek_chain.clear();
  std::vector<uint8_t> bytes = EncodeTpmEvidence(e);
  // The count byte sits after magic, version, report data, measurement and the EK blob; the
  // parser must see 4 certificates need >= 16 bytes and compare that with what is left.
  const size_t count_offset = 8 + 4 + 64 + 32 + 4 + 300;
  ASSERT_EQ(bytes[count_offset], 0);
  bytes.resize(count_offset + 1);
  bytes[count_offset] = 4;
  ExpectParseError(bytes, "ek_chain_count 4 needs more bytes");
}

TEST(TpmEvidence, TruncationAtEveryOffsetFails) {
  const std::vector<uint8_t> bytes = EncodeTpmEvidence(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<TpmEvidence> parsed = ParseTpmEvidence(std::span<const uint8_t>(bytes).first(n));
    ASSERT_FALSE(parsed.ok()) << "accepted a prefix of " << n << " bytes";
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(parsed.status().message().rfind("parse_error: ", 0), 0u);
  }
  ExpectParseError(std::span<const uint8_t>(bytes).first(50), "truncated reading report_data");
  ExpectParseError(std::span<const uint8_t>(bytes).first(bytes.size() - 1),
                   "truncated reading signature");
}

TEST(TpmEvidence, MagicVersionAndTrailingBytesAreChecked) {
  std::vector<uint8_t> bytes = EncodeTpmEvidence(Sample());
  std::vector<uint8_t> bad_magic = bytes;
  bad_magic[0] = 'X';
  ExpectParseError(bad_magic, "does not start with MLCTPMEV");
  std::vector<uint8_t> bad_version = bytes;
  bad_version[8] = 2;
  ExpectParseError(bad_version, "version 2 is not supported");
  std::vector<uint8_t> trailing = bytes;
  trailing.push_back(0);
  ExpectParseError(trailing, "1 unexpected trailing bytes");
}

TEST(TpmEvidence, PcrReplayMatchesAHandComputedExtendChain) {
  ReportData report_data{};
  Digest measurement{};
  for (size_t i = 0; i < report_data.size(); ++i) report_data[i] = static_cast<uint8_t>(3 * i + 1);
  for (size_t i = 0; i < measurement.size(); ++i) measurement[i] = static_cast<uint8_t>(0xF0 ^ i);

  std::vector<uint8_t> rd_input(kTpmReportDataDomain.begin(), kTpmReportDataDomain.end());
  rd_input.insert(rd_input.end(), report_data.begin(), report_data.end());
  const std::array<uint8_t, 32> event = Sha256Of(rd_input);
  EXPECT_EQ(TpmReportDataEvent(report_data), event);

  std::vector<uint8_t> quote_input(kTpmQuoteDomain.begin(), kTpmQuoteDomain.end());
  quote_input.insert(quote_input.end(), report_data.begin(), report_data.end());
  EXPECT_EQ(TpmQualifyingData(report_data), Sha256Of(quote_input));
  EXPECT_NE(TpmQualifyingData(report_data), event);  // the two domains differ

  std::vector<uint8_t> first(32, 0);  // PCR 23 after reset
  first.insert(first.end(), measurement.begin(), measurement.end());
  const std::array<uint8_t, 32> after_measurement = Sha256Of(first);
  std::vector<uint8_t> second(after_measurement.begin(), after_measurement.end());
  second.insert(second.end(), event.begin(), event.end());
  EXPECT_EQ(TpmPcr23(measurement, report_data), Sha256Of(second));

  // Known answer for all-zero inputs: SHA-256(SHA-256(0^64) || SHA-256("mlcapsule/v1/tpm-rd" ||
  // 0^64)), computed with Python's hashlib.
  const std::array<uint8_t, 32> zero_pcr = TpmPcr23(Digest{}, ReportData{});
  EXPECT_EQ(ToHex(zero_pcr), "cf83d5071120d7d46b69ebce100f234d3e054ce896918c9314d06398237adbec");
}

}  // namespace
}  // namespace mlcapsule::capsule
