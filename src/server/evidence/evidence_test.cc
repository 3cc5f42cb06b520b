// Intel SGX / TDX evidence verification against the real vectors (/work/shared/attest-vectors,
// found through MLCAPSULE_ATTEST_VECTORS; every vector test skips when they are absent), the
// negative tests of docs/dev/attestation-plan.md §9 (each asserting the name of the check that
// fails first), TCB evaluation on parsed structs (§5.6), the OpenSSL helpers, the pinned roots,
// the policy layer, and a synthetic PKI for what real Intel signatures cannot show (a revoked
// PCK, a Revoked TCB level).
#include "server/evidence/evidence.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "capsule/crypto.h"
#include "capsule/licensing.h"
#include "server/evidence/intel_quote.h"
#include "server/evidence/openssl_util.h"
#include "server/evidence/testing/synthetic_intel.h"

namespace mlcapsule::server::evidence {
namespace {

using capsule::EvidenceType;
using Json = nlohmann::json;

constexpr int64_t kNow = 1751328000;  // 2025-07-01T00:00:00Z

std::filesystem::path VectorsDir() {
  const char* dir = std::getenv("MLCAPSULE_ATTEST_VECTORS");
  return dir ? std::filesystem::path(dir) : std::filesystem::path();
}

bool HaveVectors() {
  const std::filesystem::path dir = VectorsDir();
  return !dir.empty() && std::filesystem::exists(dir / "dcap-qvl_sgx_quote.bin");
}

#define REQUIRE_VECTORS()                                                    \
  if (!HaveVectors())                                                        \
  GTEST_SKIP() << "attestation vectors not found (MLCAPSULE_ATTEST_VECTORS=" \
               << (std::getenv("MLCAPSULE_ATTEST_VECTORS")                   \
                       ? std::getenv("MLCAPSULE_ATTEST_VECTORS")             \
                       : "unset")                                            \
               << "); run through ctest with ../shared/attest-vectors present"

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<uint8_t> ReadBytes(const std::filesystem::path& path) {
  const std::string text = ReadText(path);
  return std::vector<uint8_t>(text.begin(), text.end());
}

std::string CheckName(const Status& status) {
  const std::string& message = status.message();
  const size_t colon = message.find(':');
  return colon == std::string::npos ? message : message.substr(0, colon);
}

// The verification must fail, and at `check`.
void ExpectFailsAt(const Result<Verdict>& result, const std::string& check) {
  ASSERT_FALSE(result.ok()) << "verified, expected a failure at " << check;
  EXPECT_EQ(CheckName(result.status()), check) << result.status().message();
}
void ExpectStatusAt(const Status& status, const std::string& check) {
  ASSERT_FALSE(status.ok()) << "passed, expected a failure at " << check;
  EXPECT_EQ(CheckName(status), check) << status.message();
}

uint32_t Le32(const std::vector<uint8_t>& b, size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (static_cast<uint32_t>(b[at + 3]) << 24);
}
void PutLe16(std::vector<uint8_t>* b, size_t at, uint16_t v) {
  (*b)[at] = v & 0xff;
  (*b)[at + 1] = v >> 8;
}
void PutLe32(std::vector<uint8_t>* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = (v >> (8 * i)) & 0xff;
}

// SGX v3 layout offsets used by the mutations (§3.1; the vector's QE auth data is 32 bytes).
constexpr size_t kSgxSigDataLen = 432;
constexpr size_t kSgxQeAuthLen = 1012;
constexpr size_t kSgxCertType = 1014 + 32;
constexpr size_t kSgxCertSize = 1016 + 32;
constexpr size_t kSgxPem = 1020 + 32;
// TDX v4 (§4.2).
constexpr size_t kTdxSigDataLen = 632;
constexpr size_t kTdxOuterType = 764;
constexpr size_t kTdxOuterSize = 766;
constexpr size_t kTdxInnerType = 1220 + 32;
constexpr size_t kTdxInnerSize = 1222 + 32;
constexpr size_t kTdxPem = 1226 + 32;

// The SGX quote with its PEM chain replaced (lengths fixed up).
std::vector<uint8_t> WithSgxChain(const std::vector<uint8_t>& quote, const std::string& pem) {
  std::vector<uint8_t> out(kSgxPem + pem.size() + 1, 0);
  std::copy_n(quote.begin(), kSgxPem, out.begin());
  std::copy(pem.begin(), pem.end(), out.begin() + kSgxPem);
  PutLe32(&out, kSgxCertSize, static_cast<uint32_t>(pem.size() + 1));
  PutLe32(&out, kSgxSigDataLen, static_cast<uint32_t>(out.size() - 436));
  return out;
}

std::string PemChainOf(const std::vector<uint8_t>& quote, size_t pem_at, size_t size_at) {
  const uint32_t size = Le32(quote, size_at);
  std::string pem(quote.begin() + pem_at, quote.begin() + pem_at + size);
  while (!pem.empty() && pem.back() == '\0') pem.pop_back();
  return pem;
}

class Vectors : public ::testing::Test {
 public:
  static const Verifier& Pinned() {
    static const Verifier* verifier = new Verifier(TrustAnchors::Pinned());
    return *verifier;
  }

 protected:
  void SetUp() override {
    if (!HaveVectors()) return;
    const std::filesystem::path dir = VectorsDir();
    sgx_quote_ = ReadBytes(dir / "dcap-qvl_sgx_quote.bin");
    tdx_quote_ = ReadBytes(dir / "dcap-qvl_tdx_quote_v4.bin");
    sgx_collateral_text_ = ReadText(dir / "dcap-qvl_sgx_quote_collateral.json");
    tdx_collateral_text_ = ReadText(dir / "dcap-qvl_tdx_quote_collateral.json");
    Result<IntelCollateral> sgx = ParseIntelCollateral(sgx_collateral_text_);
    Result<IntelCollateral> tdx = ParseIntelCollateral(tdx_collateral_text_);
    ASSERT_TRUE(sgx.ok()) << sgx.status().message();
    ASSERT_TRUE(tdx.ok()) << tdx.status().message();
    sgx_collateral_ = *sgx;
    tdx_collateral_ = *tdx;
  }
  Result<Verdict> Sgx(const std::vector<uint8_t>& quote, int64_t now = kNow) const {
    return Pinned().Verify(EvidenceType::kSgx, quote, &sgx_collateral_, now);
  }
  Result<Verdict> SgxWith(const IntelCollateral& collateral, int64_t now = kNow) const {
    return Pinned().Verify(EvidenceType::kSgx, sgx_quote_, &collateral, now);
  }
  Result<Verdict> Tdx(const std::vector<uint8_t>& quote, int64_t now = kNow) const {
    return Pinned().Verify(EvidenceType::kTdx, quote, &tdx_collateral_, now);
  }
  static std::vector<uint8_t> Flip(std::vector<uint8_t> bytes, size_t at) {
    bytes.at(at) ^= 0x01;
    return bytes;
  }

  std::vector<uint8_t> sgx_quote_, tdx_quote_;
  std::string sgx_collateral_text_, tdx_collateral_text_;
  IntelCollateral sgx_collateral_, tdx_collateral_;
};

// --- The vectors verify (§0) ---

TEST_F(Vectors, SgxQuoteVerifies) {
  REQUIRE_VECTORS();
  Result<Verdict> verdict = Sgx(sgx_quote_);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->type, EvidenceType::kSgx);
  EXPECT_EQ(capsule::ToHex(verdict->measurement),
            "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
  EXPECT_EQ(capsule::ToHex(verdict->mr_signer),
            "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
  const std::string hello = "Hello, world!";
  EXPECT_TRUE(std::equal(hello.begin(), hello.end(), verdict->report_data.begin()));
  EXPECT_TRUE(std::all_of(verdict->report_data.begin() + hello.size(), verdict->report_data.end(),
                          [](uint8_t b) { return b == 0; }));
  EXPECT_FALSE(verdict->debug);
  EXPECT_EQ(verdict->attributes, 0x05u);
  EXPECT_EQ(verdict->isv_prod_id, 0);
  EXPECT_EQ(verdict->isv_svn, 0);
  EXPECT_EQ(verdict->tcb_status, "ConfigurationAndSWHardeningNeeded");
  EXPECT_EQ(verdict->advisory_ids, (std::vector<std::string>{"INTEL-SA-00289", "INTEL-SA-00615"}));
  EXPECT_EQ(verdict->qe_tcb_status, "UpToDate");
  EXPECT_EQ(verdict->fmspc, "00A067110000");
  EXPECT_EQ(verdict->tcb_date, "2024-03-13T00:00:00Z");
  EXPECT_NE(verdict->Summary().find("ConfigurationAndSWHardeningNeeded"), std::string::npos);
  Json json = Json::parse(verdict->ToJson());
  EXPECT_EQ(json["type"], "sgx");
  EXPECT_EQ(json["tcb_status"], "ConfigurationAndSWHardeningNeeded");
  EXPECT_EQ(json["advisory_ids"], Json({"INTEL-SA-00289", "INTEL-SA-00615"}));
}

TEST_F(Vectors, TdxQuoteVerifies) {
  REQUIRE_VECTORS();
  Result<Verdict> verdict = Tdx(tdx_quote_);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->type, EvidenceType::kTdx);
  EXPECT_EQ(capsule::ToHex(verdict->measurement),
            "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b25"
            "38873118b7");
  EXPECT_FALSE(verdict->debug);
  EXPECT_EQ(verdict->attributes, 0x10000000u);
  EXPECT_EQ(verdict->tcb_status, "UpToDate");
  EXPECT_TRUE(verdict->advisory_ids.empty());
  EXPECT_EQ(verdict->qe_tcb_status, "UpToDate");
  EXPECT_EQ(verdict->tdx_module_status, "UpToDate");
  EXPECT_EQ(verdict->fmspc, "B0C06F000000");
  ASSERT_EQ(verdict->rtmrs.size(), 4u);
  EXPECT_TRUE(capsule::ToHex(verdict->rtmrs[0]).starts_with("44c0197b"));
  EXPECT_TRUE(capsule::ToHex(verdict->mr_seam).starts_with("5b38e33a"));
  EXPECT_EQ(verdict->mr_signer, std::vector<uint8_t>(48, 0));
  Json json = Json::parse(verdict->ToJson());
  EXPECT_EQ(json["type"], "tdx");
  EXPECT_EQ(json["rtmrs"].size(), 4u);
}

TEST_F(Vectors, FmspcHelpers) {
  REQUIRE_VECTORS();
  Result<std::string> sgx = QuoteFmspc(sgx_quote_);
  ASSERT_TRUE(sgx.ok()) << sgx.status().message();
  EXPECT_EQ(*sgx, "00A067110000");
  Result<std::string> tdx = QuoteFmspc(tdx_quote_);
  ASSERT_TRUE(tdx.ok()) << tdx.status().message();
  EXPECT_EQ(*tdx, "B0C06F000000");
  EXPECT_EQ(CollateralFmspc(sgx_collateral_), "00A067110000");
  EXPECT_EQ(CollateralTeeId(sgx_collateral_), "SGX");
  EXPECT_EQ(CollateralFmspc(tdx_collateral_), "B0C06F000000");
  EXPECT_EQ(CollateralTeeId(tdx_collateral_), "TDX");
  EXPECT_FALSE(QuoteFmspc(std::vector<uint8_t>(10)).ok());
}

// --- §9 rows 1-6: mutated SGX quotes fail at the named check ---

TEST_F(Vectors, SgxSignedFieldsFailTheQuoteSignature) {  // rows 1 and 4
  REQUIRE_VECTORS();
  for (size_t at :
       {size_t{368}, size_t{48 + 64}, size_t{8}, size_t{48 + 48}, size_t{436}, size_t{436 + 40}}) {
    SCOPED_TRACE(at);
    ExpectFailsAt(Sgx(Flip(sgx_quote_, at)), "quote_signature");
  }
}

TEST_F(Vectors, SgxQeReportFailsItsSignature) {  // row 2
  REQUIRE_VECTORS();
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 564)), "qe_report_signature");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 564 + 320)), "qe_report_signature");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 948)), "qe_report_signature");
}

TEST_F(Vectors, SgxAttestationKeyAndAuthDataFailTheBinding) {  // row 3
  REQUIRE_VECTORS();
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 1014)), "qe_binding");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 500)), "qe_binding");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 563)), "qe_binding");
}

TEST_F(Vectors, SgxLengthsAreCheckedAgainstTheBuffer) {  // row 5
  REQUIRE_VECTORS();
  std::vector<uint8_t> truncated(sgx_quote_.begin(), sgx_quote_.end() - 1);
  ExpectFailsAt(Sgx(truncated), "parse_error");
  std::vector<uint8_t> huge = sgx_quote_;
  PutLe32(&huge, kSgxSigDataLen, 0xFFFFFFFF);
  ExpectFailsAt(Sgx(huge), "parse_error");
  std::vector<uint8_t> cert_size = sgx_quote_;
  PutLe32(&cert_size, kSgxCertSize, Le32(sgx_quote_, kSgxCertSize) + 1);
  ExpectFailsAt(Sgx(cert_size), "parse_error");
  PutLe32(&cert_size, kSgxCertSize, 0xFFFFFFF0);
  ExpectFailsAt(Sgx(cert_size), "parse_error");
  std::vector<uint8_t> auth = sgx_quote_;
  PutLe16(&auth, kSgxQeAuthLen, 0xFFFF);
  ExpectFailsAt(Sgx(auth), "parse_error");
  for (size_t size : {size_t{0}, size_t{47}, size_t{48}, size_t{435}, size_t{436}, size_t{1019}}) {
    SCOPED_TRACE(size);
    ExpectFailsAt(Sgx(std::vector<uint8_t>(sgx_quote_.begin(), sgx_quote_.begin() + size)),
                  "parse_error");
  }
  // Every truncation fails cleanly (no crash, no read past the end: run under ASan).
  for (size_t size = 0; size < sgx_quote_.size(); size += 37) {
    EXPECT_FALSE(Sgx(std::vector<uint8_t>(sgx_quote_.begin(), sgx_quote_.begin() + size)).ok());
  }
  // The empty PEM chain (certification data of one NUL byte).
  std::vector<uint8_t> empty_chain(sgx_quote_.begin(), sgx_quote_.begin() + kSgxPem + 1);
  empty_chain.back() = 0;
  PutLe32(&empty_chain, kSgxCertSize, 1);
  PutLe32(&empty_chain, kSgxSigDataLen, static_cast<uint32_t>(empty_chain.size() - 436));
  ExpectFailsAt(Sgx(empty_chain), "parse_error");
}

TEST_F(Vectors, SgxUnsupportedFormatsFailBeforeAnyCrypto) {  // row 6
  REQUIRE_VECTORS();
  std::vector<uint8_t> quote = sgx_quote_;
  PutLe16(&quote, kSgxCertType, 1);
  ExpectFailsAt(Sgx(quote), "unsupported_format");
  quote = sgx_quote_;
  PutLe16(&quote, 0, 4);
  ExpectFailsAt(Sgx(quote), "unsupported_format");
  quote = sgx_quote_;
  PutLe16(&quote, 2, 3);
  ExpectFailsAt(Sgx(quote), "unsupported_format");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 12)), "unsupported_format");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 27)), "unsupported_format");
  ExpectFailsAt(Sgx(Flip(sgx_quote_, 4)), "unsupported_format");  // tee_type
  // An SGX quote presented as TDX (and the reverse) is refused by its header.
  ExpectFailsAt(Tdx(sgx_quote_), "unsupported_format");
  ExpectFailsAt(Sgx(tdx_quote_), "unsupported_format");
}

// --- rows 7, 9, 13: wrong chains and wrong collateral ---

TEST_F(Vectors, SgxQuoteWithTheTdxChainFailsThePckCrlIssuer) {  // row 7
  REQUIRE_VECTORS();
  const std::string tdx_chain = PemChainOf(tdx_quote_, kTdxPem, kTdxInnerSize);
  ASSERT_NE(tdx_chain.find("BEGIN CERTIFICATE"), std::string::npos);
  const std::vector<uint8_t> mixed = WithSgxChain(sgx_quote_, tdx_chain);
  Result<Verdict> result = Sgx(mixed);
  ExpectFailsAt(result, "collateral_mismatch");
  EXPECT_NE(result.status().message().find("pck_crl"), std::string::npos);
  // With the TDX collateral (whose PCK CRL is the Platform CA's) the tcbInfo does not fit.
  ExpectFailsAt(Pinned().Verify(EvidenceType::kSgx, mixed, &tdx_collateral_, kNow),
                "collateral_mismatch");
  // The same chain rebuilt around the original (a sanity check of WithSgxChain).
  const std::string sgx_chain = PemChainOf(sgx_quote_, kSgxPem, kSgxCertSize);
  Result<Verdict> rebuilt = Sgx(WithSgxChain(sgx_quote_, sgx_chain));
  EXPECT_TRUE(rebuilt.ok()) << rebuilt.status().message();
  // A chain of two certificates, and one of four (the leaf twice).
  const size_t second = sgx_chain.find("-----BEGIN", 10);
  const size_t third = sgx_chain.find("-----BEGIN", second + 10);
  ExpectFailsAt(Sgx(WithSgxChain(sgx_quote_, sgx_chain.substr(0, third))), "parse_error");
  ExpectFailsAt(Sgx(WithSgxChain(sgx_quote_, sgx_chain.substr(0, second) + sgx_chain)),
                "parse_error");
  // Intermediate and leaf swapped: the leaf position holds a CA.
  const std::string swapped = sgx_chain.substr(second, third - second) +
                              sgx_chain.substr(0, second) + sgx_chain.substr(third);
  ExpectFailsAt(Sgx(WithSgxChain(sgx_quote_, swapped)), "chain_invalid");
}

TEST_F(Vectors, SgxQuoteWithTheTdxCollateral) {  // row 9
  REQUIRE_VECTORS();
  ExpectFailsAt(SgxWith(tdx_collateral_), "collateral_mismatch");
  ExpectFailsAt(Pinned().Verify(EvidenceType::kTdx, tdx_quote_, &sgx_collateral_, kNow),
                "collateral_mismatch");
  ExpectFailsAt(Pinned().Verify(EvidenceType::kSgx, sgx_quote_, nullptr, kNow),
                "collateral_missing");
}

// A self-signed certificate with the subject of `like`, made with a fresh key.
std::string SelfSignedLike(X509* like, int64_t not_after_days = 3650) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7);
  X509_set_subject_name(cert.get(), X509_get_subject_name(like));
  X509_set_issuer_name(cert.get(), X509_get_subject_name(like));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -86400L * 3650);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * not_after_days);
  X509_set_pubkey(cert.get(), key.get());
  X509_sign(cert.get(), key.get(), EVP_sha256());
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert.get());
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

TEST_F(Vectors, SelfMadeRootWithTheSameSubjectIsRefused) {  // row 13
  REQUIRE_VECTORS();
  const std::string chain = PemChainOf(sgx_quote_, kSgxPem, kSgxCertSize);
  Result<std::vector<X509Ptr>> certs = ParsePemCertificates(chain, "chain");
  ASSERT_TRUE(certs.ok()) << certs.status().message();
  ASSERT_EQ(certs->size(), 3u);
  const std::string fake_root = SelfSignedLike((*certs)[2].get());
  const size_t third = chain.find("-----BEGIN", chain.find("-----BEGIN", 10) + 10);
  Result<Verdict> result = Sgx(WithSgxChain(sgx_quote_, chain.substr(0, third) + fake_root));
  ExpectFailsAt(result, "root_mismatch");
  // And the other way round: a verifier pinned to that fake root refuses Intel's real chain.
  Result<std::vector<X509Ptr>> fake = ParsePemCertificates(fake_root, "fake");
  ASSERT_TRUE(fake.ok());
  TrustAnchors anchors = TrustAnchors::Pinned();
  anchors.intel_root_der = CertificateDer((*fake)[0].get());
  Verifier other(anchors);
  ExpectFailsAt(other.Verify(EvidenceType::kSgx, sgx_quote_, &sgx_collateral_, kNow),
                "root_mismatch");
  // An unparsable configured root fails every Intel verification.
  anchors.intel_root_der = {0x30, 0x00};
  Verifier broken(anchors);
  ExpectFailsAt(broken.Verify(EvidenceType::kSgx, sgx_quote_, &sgx_collateral_, kNow),
                "chain_invalid");
}

TEST_F(Vectors, ReSignedPckLeafFailsTheChain) {
  REQUIRE_VECTORS();
  // The real PCK certificate (its key, extensions and names intact) re-signed by another key:
  // only the leaf's signature check can catch it, since the QE report is signed by its key.
  const std::string chain = PemChainOf(sgx_quote_, kSgxPem, kSgxCertSize);
  Result<std::vector<X509Ptr>> certs = ParsePemCertificates(chain, "chain");
  ASSERT_TRUE(certs.ok());
  X509Ptr forged(X509_dup((*certs)[0].get()));
  EvpPkeyPtr other_key(EVP_EC_gen("P-256"));
  ASSERT_GT(X509_sign(forged.get(), other_key.get(), EVP_sha256()), 0);
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), forged.get());
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  const size_t second = chain.find("-----BEGIN", 10);
  const std::string forged_chain =
      std::string(data, static_cast<size_t>(size)) + chain.substr(second);
  Result<Verdict> result = Sgx(WithSgxChain(sgx_quote_, forged_chain));
  ExpectFailsAt(result, "chain_invalid");
  EXPECT_NE(result.status().message().find("signature"), std::string::npos)
      << result.status().message();
}

TEST_F(Vectors, ConcurrentVerification) {
  REQUIRE_VECTORS();
  Verifier verifier(TrustAnchors::Pinned());  // fresh: the threads race to fill the caches
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const bool tdx = (i + t) % 2 == 0;
        Result<Verdict> verdict =
            tdx ? verifier.Verify(EvidenceType::kTdx, tdx_quote_, &tdx_collateral_, kNow)
                : verifier.Verify(EvidenceType::kSgx, sgx_quote_, &sgx_collateral_, kNow);
        if (!verdict.ok() ||
            verdict->tcb_status != (tdx ? "UpToDate" : "ConfigurationAndSWHardeningNeeded"))
          ++failures;
        if (verifier.Verify(EvidenceType::kSgx, Flip(sgx_quote_, 368), &sgx_collateral_, kNow).ok())
          ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

// --- row 8: collateral signatures over the exact text ---

TEST_F(Vectors, CollateralSignaturesCoverTheExactText) {
  REQUIRE_VECTORS();
  IntelCollateral spaced = sgx_collateral_;
  spaced.tcb_info.insert(1, " ");
  ExpectFailsAt(SgxWith(spaced), "collateral_signature");
  IntelCollateral qe_spaced = sgx_collateral_;
  qe_spaced.qe_identity.insert(1, " ");
  ExpectFailsAt(SgxWith(qe_spaced), "collateral_signature");
  IntelCollateral flipped = sgx_collateral_;
  flipped.tcb_info_signature[5] ^= 0x10;
  ExpectFailsAt(SgxWith(flipped), "collateral_signature");
  flipped = sgx_collateral_;
  flipped.qe_identity_signature[40] ^= 0x01;
  ExpectFailsAt(SgxWith(flipped), "collateral_signature");
  // A flipped hex digit in the collateral file itself.
  Json document = Json::parse(sgx_collateral_text_);
  std::string signature = document["tcb_info_signature"];
  signature[3] = signature[3] == '0' ? '1' : '0';
  document["tcb_info_signature"] = signature;
  Result<IntelCollateral> reparsed = ParseIntelCollateral(document.dump());
  ASSERT_TRUE(reparsed.ok()) << reparsed.status().message();
  ExpectFailsAt(SgxWith(*reparsed), "collateral_signature");
  // Re-serialising the signed JSON (sorted keys) breaks the signature, as the plan found.
  IntelCollateral sorted = sgx_collateral_;
  sorted.tcb_info = Json::parse(sgx_collateral_.tcb_info).dump();
  ASSERT_NE(sorted.tcb_info, sgx_collateral_.tcb_info);
  ExpectFailsAt(SgxWith(sorted), "collateral_signature");
  // The TCB Signing chain replaced by the PCK CRL's chain: the signer is not the TCB Signing cert.
  IntelCollateral wrong_chain = sgx_collateral_;
  wrong_chain.tcb_info_issuer_chain = sgx_collateral_.pck_crl_issuer_chain;
  ExpectFailsAt(SgxWith(wrong_chain), "collateral_signature");
  // Broken CRLs.
  IntelCollateral crl = sgx_collateral_;
  crl.pck_crl.back() ^= 0x01;
  ExpectFailsAt(SgxWith(crl), "crl_invalid");
  crl = sgx_collateral_;
  crl.root_ca_crl.back() ^= 0x01;
  ExpectFailsAt(SgxWith(crl), "crl_invalid");
  crl = sgx_collateral_;
  crl.pck_crl.resize(10);
  ExpectFailsAt(SgxWith(crl), "crl_invalid");
  crl = sgx_collateral_;
  std::swap(crl.pck_crl, crl.root_ca_crl);
  ExpectFailsAt(SgxWith(crl), "crl_invalid");
}

TEST_F(Vectors, CollateralJsonFormat) {
  REQUIRE_VECTORS();
  Json document = Json::parse(sgx_collateral_text_);
  Json extra = document;
  extra["surprise"] = "x";
  ExpectStatusAt(ParseIntelCollateral(extra.dump()).status(), "collateral_invalid");
  Json missing = document;
  missing.erase("pck_crl");
  ExpectStatusAt(ParseIntelCollateral(missing.dump()).status(), "collateral_invalid");
  Json short_signature = document;
  short_signature["qe_identity_signature"] = "abcd";
  ExpectStatusAt(ParseIntelCollateral(short_signature.dump()).status(), "collateral_invalid");
  Json not_hex = document;
  not_hex["root_ca_crl"] = "zz";
  ExpectStatusAt(ParseIntelCollateral(not_hex.dump()).status(), "collateral_invalid");
  Json number = document;
  number["tcb_info"] = 5;
  ExpectStatusAt(ParseIntelCollateral(number.dump()).status(), "collateral_invalid");
  ExpectStatusAt(ParseIntelCollateral("[").status(), "collateral_invalid");
  ExpectStatusAt(ParseIntelCollateral("[]").status(), "collateral_invalid");
}

// --- rows 10-12: time ---

TEST_F(Vectors, SgxCollateralWindowIsInclusive) {  // rows 10, 11
  REQUIRE_VECTORS();
  const int64_t start = *ParseIntelDate("2025-06-19T10:56:11Z");  // tcbInfo issueDate
  const int64_t end = *ParseIntelDate("2025-07-19T10:01:18Z");    // qeIdentity nextUpdate
  EXPECT_TRUE(Sgx(sgx_quote_, start).ok());
  EXPECT_TRUE(Sgx(sgx_quote_, end).ok());
  Result<Verdict> early = Sgx(sgx_quote_, start - 1);
  ExpectFailsAt(early, "collateral_not_yet_valid");
  EXPECT_NE(early.status().message().find("tcbInfo"), std::string::npos);
  Result<Verdict> late = Sgx(sgx_quote_, end + 1);
  ExpectFailsAt(late, "collateral_expired");
  EXPECT_NE(late.status().message().find("qeIdentity"), std::string::npos);
  // 2025-07-20: the PCK CRL (step 2) has expired before the JSON is looked at.
  Result<Verdict> after = Sgx(sgx_quote_, *ParseIntelDate("2025-07-20T00:00:00Z"));
  ExpectFailsAt(after, "collateral_expired");
  EXPECT_NE(after.status().message().find("pck_crl"), std::string::npos);
  // 2025-06-01: the PCK CRL is not yet valid.
  Result<Verdict> before = Sgx(sgx_quote_, *ParseIntelDate("2025-06-01T00:00:00Z"));
  ExpectFailsAt(before, "collateral_not_yet_valid");
  EXPECT_NE(before.status().message().find("pck_crl"), std::string::npos);
  // A cached collateral gives exact answers at any time: back inside the window, it verifies.
  EXPECT_TRUE(Sgx(sgx_quote_, kNow).ok());
}

TEST_F(Vectors, TdxWindowClosesWithThePckCrl) {  // row 10 for TDX (§1: 10:00:35Z, not 10:16:03Z)
  REQUIRE_VECTORS();
  const int64_t start = *ParseIntelDate("2025-06-19T10:32:27Z");  // qeIdentity issueDate
  const int64_t end = *ParseIntelDate("2025-07-19T10:00:35Z");    // PCK CRL nextUpdate
  EXPECT_TRUE(Tdx(tdx_quote_, start).ok());
  EXPECT_TRUE(Tdx(tdx_quote_, end).ok());
  ExpectFailsAt(Tdx(tdx_quote_, start - 1), "collateral_not_yet_valid");
  Result<Verdict> late = Tdx(tdx_quote_, end + 1);
  ExpectFailsAt(late, "collateral_expired");
  EXPECT_NE(late.status().message().find("pck_crl"), std::string::npos) << late.status().message();
}

TEST_F(Vectors, RootExpiredIn2050) {  // row 12
  REQUIRE_VECTORS();
  const int64_t year_2050 = *ParseIntelDate("2050-01-01T00:00:00Z");
  Result<Verdict> result = Sgx(sgx_quote_, year_2050);
  ExpectFailsAt(result, "chain_invalid");
  EXPECT_NE(result.status().message().find("Intel SGX Root CA"), std::string::npos);
  ExpectFailsAt(Tdx(tdx_quote_, year_2050), "chain_invalid");
  // The PCK leaf (2030-09-20) expires before the root.
  ExpectFailsAt(Sgx(sgx_quote_, *ParseIntelDate("2031-01-01T00:00:00Z")), "chain_invalid");
}

// --- row 14: revocation ---

TEST_F(Vectors, CrlLookupWithASerialFromTheTdxPckCrl) {
  REQUIRE_VECTORS();
  Result<X509CrlPtr> crl = ParseDerCrl(tdx_collateral_.pck_crl, "pck_crl");
  ASSERT_TRUE(crl.ok()) << crl.status().message();
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl->get());
  ASSERT_EQ(sk_X509_REVOKED_num(revoked), 44);
  for (int i : {0, 21, 43}) {
    const ASN1_INTEGER* serial = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i));
    std::unique_ptr<BIGNUM, OpenSslFree<BN_free>> number(ASN1_INTEGER_to_BN(serial, nullptr));
    std::vector<uint8_t> bytes(static_cast<size_t>(BN_num_bytes(number.get())));
    BN_bn2bin(number.get(), bytes.data());
    EXPECT_TRUE(intel::CrlListsSerial(crl->get(), bytes)) << i;
    bytes.back() ^= 0x01;
    EXPECT_FALSE(intel::CrlListsSerial(crl->get(), bytes)) << i;
  }
  // The TDX PCK leaf itself is not listed.
  Result<std::vector<X509Ptr>> chain =
      ParsePemCertificates(PemChainOf(tdx_quote_, kTdxPem, kTdxInnerSize), "chain");
  ASSERT_TRUE(chain.ok());
  std::unique_ptr<BIGNUM, OpenSslFree<BN_free>> leaf_serial(
      ASN1_INTEGER_to_BN(X509_get0_serialNumber((*chain)[0].get()), nullptr));
  std::vector<uint8_t> leaf_bytes(static_cast<size_t>(BN_num_bytes(leaf_serial.get())));
  BN_bn2bin(leaf_serial.get(), leaf_bytes.data());
  EXPECT_FALSE(intel::CrlListsSerial(crl->get(), leaf_bytes));
  // The SGX Processor CA's CRL is empty.
  Result<X509CrlPtr> sgx_crl = ParseDerCrl(sgx_collateral_.pck_crl, "pck_crl");
  ASSERT_TRUE(sgx_crl.ok());
  STACK_OF(X509_REVOKED)* none = X509_CRL_get_REVOKED(sgx_crl->get());
  EXPECT_TRUE(none == nullptr || sk_X509_REVOKED_num(none) == 0);
}

// End to end with a synthetic PKI (real Intel CRLs cannot be forged).
TEST(SyntheticPki, RevokedPckFailsAtPckRevoked) {
  testing::SyntheticIntelOptions options;
  options.pck_revoked_serials = {options.pck_serial, 12345};
  Result<std::unique_ptr<testing::SyntheticIntelPki>> pki =
      testing::SyntheticIntelPki::Create(options);
  ASSERT_TRUE(pki.ok()) << pki.status().message();
  Result<std::vector<uint8_t>> quote = (*pki)->MakeSgxQuote({});
  ASSERT_TRUE(quote.ok()) << quote.status().message();
  Result<IntelCollateral> collateral = ParseIntelCollateral((*pki)->CollateralJson());
  ASSERT_TRUE(collateral.ok()) << collateral.status().message();
  Verifier verifier((*pki)->Anchors());
  ExpectFailsAt(verifier.Verify(EvidenceType::kSgx, *quote, &*collateral, kNow), "pck_revoked");
  // The pinned Intel root refuses the synthetic chain outright.
  ExpectFailsAt(Vectors::Pinned().Verify(EvidenceType::kSgx, *quote, &*collateral, kNow),
                "root_mismatch");
}

TEST(SyntheticPki, RevokedTcbLevelIsReportedAndRefusedByPolicy) {
  testing::SyntheticIntelOptions options;
  testing::SyntheticTcbLevel level;
  level.sgx_components = options.pck_components;
  level.pce_svn = options.pck_pce_svn;
  level.status = "Revoked";
  level.advisory_ids = {"INTEL-SA-99999"};
  options.tcb_levels = {level};
  Result<std::unique_ptr<testing::SyntheticIntelPki>> pki =
      testing::SyntheticIntelPki::Create(options);
  ASSERT_TRUE(pki.ok()) << pki.status().message();
  Result<std::vector<uint8_t>> quote = (*pki)->MakeSgxQuote({});
  ASSERT_TRUE(quote.ok());
  Result<IntelCollateral> collateral = ParseIntelCollateral((*pki)->CollateralJson());
  ASSERT_TRUE(collateral.ok());
  Verifier verifier((*pki)->Anchors());
  Result<Verdict> verdict = verifier.Verify(EvidenceType::kSgx, *quote, &*collateral, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->tcb_status, "Revoked");
  capsule::Policy policy;
  policy.tee.accept = {"sgx"};
  Status status = CheckPolicy(*verdict, PolicyFor(policy, EvidenceType::kSgx), nullptr);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(status.message().find("TCB status Revoked is not accepted"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("INTEL-SA-99999"), std::string::npos);
}

// --- rows 15-17: TDX ---

TEST_F(Vectors, TdxSignedFieldsFailTheQuoteSignature) {  // row 15
  REQUIRE_VECTORS();
  for (size_t at :
       {size_t{184}, size_t{520}, size_t{168}, size_t{568}, size_t{631}, size_t{8}, size_t{636}}) {
    SCOPED_TRACE(at);
    ExpectFailsAt(Tdx(Flip(tdx_quote_, at)), "quote_signature");
  }
  ExpectFailsAt(Tdx(Flip(tdx_quote_, 770)), "qe_report_signature");
  ExpectFailsAt(Tdx(Flip(tdx_quote_, 1220)), "qe_binding");
  ExpectFailsAt(Tdx(Flip(tdx_quote_, 700)), "qe_binding");
}

TEST_F(Vectors, TdxCertificationDataTypesAndSizes) {  // row 16
  REQUIRE_VECTORS();
  std::vector<uint8_t> quote = tdx_quote_;
  PutLe16(&quote, kTdxOuterType, 5);
  ExpectFailsAt(Tdx(quote), "unsupported_format");
  quote = tdx_quote_;
  PutLe16(&quote, kTdxInnerType, 6);
  ExpectFailsAt(Tdx(quote), "unsupported_format");
  quote = tdx_quote_;
  PutLe32(&quote, kTdxOuterSize, Le32(tdx_quote_, kTdxOuterSize) + 1);
  ExpectFailsAt(Tdx(quote), "parse_error");
  quote = tdx_quote_;
  PutLe32(&quote, kTdxOuterSize, Le32(tdx_quote_, kTdxOuterSize) - 1);
  ExpectFailsAt(Tdx(quote), "parse_error");
  quote = tdx_quote_;
  PutLe32(&quote, kTdxInnerSize, Le32(tdx_quote_, kTdxInnerSize) + 1);
  ExpectFailsAt(Tdx(quote), "parse_error");
  quote = tdx_quote_;
  PutLe32(&quote, kTdxSigDataLen, 0xFFFFFFFF);
  ExpectFailsAt(Tdx(quote), "parse_error");
  quote = tdx_quote_;
  PutLe32(&quote, 4, 0);  // tee_type SGX in a v4 quote
  ExpectFailsAt(Tdx(quote), "unsupported_format");
  for (size_t size = 0; size < 4936; size += 41) {
    EXPECT_FALSE(Tdx(std::vector<uint8_t>(tdx_quote_.begin(), tdx_quote_.begin() + size)).ok());
  }
}

TEST_F(Vectors, TdxTrailingBytesAreIgnored) {  // row 17
  REQUIRE_VECTORS();
  ASSERT_EQ(tdx_quote_.size(), 5006u);
  std::vector<uint8_t> changed = tdx_quote_;
  for (size_t i = 4936; i < changed.size(); ++i) changed[i] = static_cast<uint8_t>(i * 7 + 1);
  Result<Verdict> verdict = Tdx(changed);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->tcb_status, "UpToDate");
  std::vector<uint8_t> trimmed(tdx_quote_.begin(), tdx_quote_.begin() + 4936);
  EXPECT_TRUE(Tdx(trimmed).ok());
  std::vector<uint8_t> longer = tdx_quote_;
  longer.resize(6000, 0xAB);
  EXPECT_TRUE(Tdx(longer).ok());
}

// --- row 18: TDX module identity on parsed structs ---

TEST_F(Vectors, TdxModuleIdentity) {
  REQUIRE_VECTORS();
  Result<intel::TcbInfo> tcb_info = intel::ParseTcbInfo(tdx_collateral_.tcb_info);
  ASSERT_TRUE(tcb_info.ok()) << tcb_info.status().message();
  ASSERT_EQ(tcb_info->tdx_module_identities.size(), 2u);
  const std::span<const uint8_t> td_report(tdx_quote_.data() + 48, 584);
  Result<const intel::TdxModuleIdentity*> module = intel::CheckTdxModule(*tcb_info, td_report);
  ASSERT_TRUE(module.ok()) << module.status().message();
  EXPECT_EQ((*module)->id, "TDX_01");

  intel::TcbInfo without = *tcb_info;
  std::erase_if(without.tdx_module_identities,
                [](const intel::TdxModuleIdentity& m) { return m.id == "TDX_01"; });
  Result<const intel::TdxModuleIdentity*> missing = intel::CheckTdxModule(without, td_report);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(CheckName(missing.status()), "tdx_module_mismatch") << missing.status().message();
  EXPECT_NE(missing.status().message().find("TDX_01"), std::string::npos);

  intel::TcbInfo signer = *tcb_info;
  for (auto& m : signer.tdx_module_identities) m.mr_signer[0] = 1;
  ExpectStatusAt(intel::CheckTdxModule(signer, td_report).status(), "tdx_module_mismatch");

  std::vector<uint8_t> report(td_report.begin(), td_report.end());
  report[intel::kTdSeamAttributes] = 1;
  ExpectStatusAt(intel::CheckTdxModule(*tcb_info, report).status(), "tdx_module_mismatch");

  // Module major version 0: the generic tdxModule entry.
  report.assign(td_report.begin(), td_report.end());
  report[1] = 0;
  Result<const intel::TdxModuleIdentity*> generic = intel::CheckTdxModule(*tcb_info, report);
  ASSERT_TRUE(generic.ok());
  EXPECT_EQ(*generic, &*tcb_info->tdx_module);
}

// --- row 19: TCB evaluation, the §5.6 table on the real tcbInfo and QE identity ---

class TcbTable : public Vectors {
 protected:
  void SetUp() override {
    Vectors::SetUp();
    if (!HaveVectors()) return;
    sgx_tcb_ = *intel::ParseTcbInfo(sgx_collateral_.tcb_info);
    sgx_qe_ = *intel::ParseQeIdentity(sgx_collateral_.qe_identity);
    tdx_tcb_ = *intel::ParseTcbInfo(tdx_collateral_.tcb_info);
    tdx_qe_ = *intel::ParseQeIdentity(tdx_collateral_.qe_identity);
  }
  intel::TcbOutcome Sgx(std::array<uint8_t, 16> components, uint16_t pce_svn,
                        uint16_t qe_svn) const {
    intel::TcbInputs inputs;
    inputs.pck.components = components;
    inputs.pck.pce_svn = pce_svn;
    inputs.qe_isv_svn = qe_svn;
    return intel::EvaluateTcb(sgx_tcb_, sgx_qe_, inputs);
  }
  intel::TcbOutcome Tdx(std::array<uint8_t, 16> tee_tcb_svn, uint16_t pce_svn) const {
    intel::TcbInputs inputs;
    inputs.pck.components = {3, 3, 2, 2, 4, 1, 0, 5};
    inputs.pck.pce_svn = pce_svn;
    inputs.qe_isv_svn = 6;
    inputs.tee_tcb_svn = tee_tcb_svn;
    for (const auto& module : tdx_tcb_.tdx_module_identities) {
      if (module.id == fmt::format("TDX_{:02X}", tee_tcb_svn[1])) inputs.tdx_module = &module;
    }
    if (tee_tcb_svn[1] == 0) inputs.tdx_module = &*tdx_tcb_.tdx_module;
    return intel::EvaluateTcb(tdx_tcb_, tdx_qe_, inputs);
  }
  intel::TcbInfo sgx_tcb_, tdx_tcb_;
  intel::QeIdentity sgx_qe_, tdx_qe_;
};

using Ids = std::vector<std::string>;
constexpr std::array<uint8_t, 16> kSgxPck = {11, 11, 2, 2, 255, 1, 0};

TEST_F(TcbTable, Sgx) {
  REQUIRE_VECTORS();
  intel::TcbOutcome vector = Sgx(kSgxPck, 13, 10);
  EXPECT_EQ(vector.status, "ConfigurationAndSWHardeningNeeded");
  EXPECT_EQ(vector.advisory_ids, (Ids{"INTEL-SA-00289", "INTEL-SA-00615"}));
  EXPECT_EQ(vector.qe_status, "UpToDate");

  std::array<uint8_t, 16> comp7 = kSgxPck;
  comp7[6] = 12;
  intel::TcbOutcome sw = Sgx(comp7, 13, 10);
  EXPECT_EQ(sw.status, "SWHardeningNeeded");
  EXPECT_EQ(sw.advisory_ids, (Ids{"INTEL-SA-00615"}));

  std::array<uint8_t, 16> low = kSgxPck;
  low[0] = low[1] = 10;
  intel::TcbOutcome old = Sgx(low, 13, 10);
  EXPECT_EQ(old.status, "OutOfDateConfigurationNeeded");
  EXPECT_EQ(old.advisory_ids, (Ids{"INTEL-SA-00289", "INTEL-SA-00828", "INTEL-SA-00615"}));

  intel::TcbOutcome pce12 = Sgx(kSgxPck, 12, 10);
  EXPECT_EQ(pce12.status, "OutOfDateConfigurationNeeded");
  EXPECT_EQ(pce12.tcb_date, "2021-11-10T00:00:00Z");
  EXPECT_EQ(pce12.advisory_ids.size(), 7u);

  EXPECT_EQ(Sgx(kSgxPck, 4, 10).status, "NotSupported");
  std::array<uint8_t, 16> comp5 = kSgxPck;
  comp5[4] = 254;
  EXPECT_EQ(Sgx(comp5, 13, 10).status, "NotSupported");

  intel::TcbOutcome qe7 = Sgx(kSgxPck, 13, 7);
  EXPECT_EQ(qe7.platform_status, "ConfigurationAndSWHardeningNeeded");
  EXPECT_EQ(qe7.qe_status, "OutOfDate");
  EXPECT_EQ(qe7.status, "OutOfDateConfigurationNeeded");
  EXPECT_EQ(qe7.advisory_ids, (Ids{"INTEL-SA-00289", "INTEL-SA-00615"}));

  intel::TcbOutcome qe0 = Sgx(kSgxPck, 13, 0);
  EXPECT_EQ(qe0.qe_status, "NotSupported");
  EXPECT_EQ(qe0.status, "NotSupported");
}

TEST_F(TcbTable, Tdx) {
  REQUIRE_VECTORS();
  intel::TcbOutcome vector = Tdx({6, 1, 3}, 11);
  EXPECT_EQ(vector.status, "UpToDate");
  EXPECT_EQ(vector.tdx_module_status, "UpToDate");
  EXPECT_TRUE(vector.advisory_ids.empty());
  EXPECT_EQ(Tdx({6, 1, 1}, 11).status, "NotSupported");
  intel::TcbOutcome pce10 = Tdx({6, 1, 3}, 10);
  EXPECT_EQ(pce10.status, "OutOfDate");
  EXPECT_EQ(pce10.advisory_ids.size(), 14u);
  EXPECT_EQ(Tdx({4, 0, 3}, 11).status, "NotSupported");
  // The module's own level: SVN 2 is TDX_01's OutOfDate level; SVN 1 matches none.
  intel::TcbOutcome module_old = Tdx({2, 1, 3}, 11);
  EXPECT_EQ(module_old.tdx_module_status, "OutOfDate");
  EXPECT_EQ(module_old.status, "OutOfDate");
  EXPECT_EQ(Tdx({1, 1, 3}, 11).status, "NotSupported");
}

TEST(TcbConvergence, OutOfDateAndRevokedComponents) {
  intel::TcbInfo tcb;
  tcb.levels.resize(1);
  tcb.levels[0].status = "ConfigurationNeeded";
  tcb.levels[0].advisory_ids = {"A", "B"};
  intel::QeIdentity qe;
  qe.levels = {{.isv_svn = 5, .tcb_date = "", .status = "Revoked", .advisory_ids = {"B", "C"}},
               {.isv_svn = 1, .tcb_date = "", .status = "OutOfDate", .advisory_ids = {"D"}}};
  intel::TcbInputs inputs;
  inputs.qe_isv_svn = 5;
  intel::TcbOutcome revoked = intel::EvaluateTcb(tcb, qe, inputs);
  EXPECT_EQ(revoked.status, "Revoked");
  EXPECT_EQ(revoked.advisory_ids, (Ids{"A", "B", "C"}));
  inputs.qe_isv_svn = 3;
  intel::TcbOutcome old = intel::EvaluateTcb(tcb, qe, inputs);
  EXPECT_EQ(old.status, "OutOfDateConfigurationNeeded");
  EXPECT_EQ(old.advisory_ids, (Ids{"A", "B", "D"}));
  tcb.levels[0].status = "SWHardeningNeeded";
  EXPECT_EQ(intel::EvaluateTcb(tcb, qe, inputs).status, "OutOfDate");
  tcb.levels[0].status = "Revoked";
  EXPECT_EQ(intel::EvaluateTcb(tcb, qe, inputs).status, "Revoked");
}

// --- QE identity, PCK extension, collateral parsing ---

TEST_F(Vectors, QeIdentityMismatches) {
  REQUIRE_VECTORS();
  Result<intel::QeIdentity> identity = intel::ParseQeIdentity(sgx_collateral_.qe_identity);
  ASSERT_TRUE(identity.ok()) << identity.status().message();
  const std::span<const uint8_t> qe_report(sgx_quote_.data() + 564, 384);
  EXPECT_TRUE(intel::CheckQeIdentity(*identity, qe_report).ok());
  intel::QeIdentity changed = *identity;
  changed.mr_signer[31] ^= 1;
  ExpectStatusAt(intel::CheckQeIdentity(changed, qe_report), "qe_identity_mismatch");
  changed = *identity;
  changed.isv_prod_id = 2;
  ExpectStatusAt(intel::CheckQeIdentity(changed, qe_report), "qe_identity_mismatch");
  changed = *identity;
  changed.attributes[0] = 0x13;  // expects DEBUG: the QE is not in debug mode
  ExpectStatusAt(intel::CheckQeIdentity(changed, qe_report), "qe_identity_mismatch");
  changed = *identity;
  changed.miscselect[0] = 1;
  ExpectStatusAt(intel::CheckQeIdentity(changed, qe_report), "qe_identity_mismatch");
  // A debug QE (attributes bit 1) fails under the real mask.
  std::vector<uint8_t> debug_qe(qe_report.begin(), qe_report.end());
  debug_qe[intel::kReportAttributes] |= 0x02;
  ExpectStatusAt(intel::CheckQeIdentity(*identity, debug_qe), "qe_identity_mismatch");
  // The TD QE identity does not describe the SGX QE.
  Result<intel::QeIdentity> td_qe = intel::ParseQeIdentity(tdx_collateral_.qe_identity);
  ASSERT_TRUE(td_qe.ok());
  ExpectStatusAt(intel::CheckQeIdentity(*td_qe, qe_report), "qe_identity_mismatch");
}

TEST_F(Vectors, PckExtensionValues) {
  REQUIRE_VECTORS();
  Result<std::vector<X509Ptr>> chain =
      ParsePemCertificates(PemChainOf(sgx_quote_, kSgxPem, kSgxCertSize), "chain");
  ASSERT_TRUE(chain.ok());
  Result<intel::PckInfo> pck = intel::ParsePckExtension((*chain)[0].get());
  ASSERT_TRUE(pck.ok()) << pck.status().message();
  EXPECT_EQ(pck->components, kSgxPck);
  EXPECT_EQ(pck->pce_svn, 13);
  EXPECT_EQ(intel::UpperHex(pck->fmspc), "00A067110000");
  EXPECT_EQ(intel::UpperHex(pck->pce_id), "0000");
  EXPECT_EQ(capsule::ToHex(pck->cpu_svn), "0b0b0202ff0100000000000000000000");
  // The TDX (Platform CA) leaf.
  chain = ParsePemCertificates(PemChainOf(tdx_quote_, kTdxPem, kTdxInnerSize), "chain");
  ASSERT_TRUE(chain.ok());
  pck = intel::ParsePckExtension((*chain)[0].get());
  ASSERT_TRUE(pck.ok()) << pck.status().message();
  EXPECT_EQ(pck->components, (std::array<uint8_t, 16>{3, 3, 2, 2, 4, 1, 0, 5}));
  EXPECT_EQ(pck->pce_svn, 11);
  EXPECT_EQ(intel::UpperHex(pck->fmspc), "B0C06F000000");
  // A certificate without the extension (the PCK CA).
  ExpectStatusAt(intel::ParsePckExtension((*chain)[1].get()).status(), "parse_error");
}

TEST_F(Vectors, TcbInfoParsing) {
  REQUIRE_VECTORS();
  Result<intel::TcbInfo> sgx = intel::ParseTcbInfo(sgx_collateral_.tcb_info);
  ASSERT_TRUE(sgx.ok()) << sgx.status().message();
  EXPECT_EQ(sgx->id, "SGX");
  EXPECT_EQ(sgx->levels.size(), 11u);
  EXPECT_FALSE(sgx->tdx_module.has_value());
  Json document = Json::parse(sgx_collateral_.tcb_info);
  Json v2 = document;
  v2["version"] = 2;
  ExpectStatusAt(intel::ParseTcbInfo(v2.dump()).status(), "collateral_mismatch");
  Json unknown = document;
  unknown["tcbLevels"][0]["tcbStatus"] = "TDRelaunchAdvised";
  ExpectStatusAt(intel::ParseTcbInfo(unknown.dump()).status(), "collateral_invalid");
  Json short_components = document;
  short_components["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].erase(0);
  ExpectStatusAt(intel::ParseTcbInfo(short_components.dump()).status(), "collateral_invalid");
  Json big_svn = document;
  big_svn["tcbLevels"][0]["tcb"]["sgxtcbcomponents"][0]["svn"] = 256;
  ExpectStatusAt(intel::ParseTcbInfo(big_svn.dump()).status(), "collateral_invalid");
  Json bad_date = document;
  bad_date["nextUpdate"] = "2025-07-19 10:56:11";
  ExpectStatusAt(intel::ParseTcbInfo(bad_date.dump()).status(), "collateral_invalid");
  Json no_levels = document;
  no_levels["tcbLevels"] = Json::array();
  ExpectStatusAt(intel::ParseTcbInfo(no_levels.dump()).status(), "collateral_invalid");
  ExpectStatusAt(intel::ParseTcbInfo("{").status(), "collateral_invalid");
  // TDX: the module entries are required.
  Json tdx = Json::parse(tdx_collateral_.tcb_info);
  tdx.erase("tdxModule");
  ExpectStatusAt(intel::ParseTcbInfo(tdx.dump()).status(), "collateral_invalid");
}

// --- OpenSSL helpers ---

TEST(OpenSslUtil, DerReader) {
  const std::vector<uint8_t> svn_255 = {0x02, 0x02, 0x00, 0xFF};
  DerReader reader(svn_255, "test");
  int64_t value = 0;
  ASSERT_TRUE(reader.Integer(&value, "svn").ok());
  EXPECT_EQ(value, 255);
  EXPECT_TRUE(reader.empty());
  const std::vector<uint8_t> minus_one = {0x02, 0x01, 0xFF};
  DerReader negative(minus_one, "test");
  ASSERT_TRUE(negative.Integer(&value, "value").ok());
  EXPECT_EQ(value, -1);
  // OID 1.2.840.113741.1.13.1 inside a SEQUENCE with a long-form length.
  const std::vector<uint8_t> oid = {0x30, 0x81, 0x0b, 0x06, 0x09, 0x2a, 0x86,
                                    0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01};
  DerReader outer(oid, "test");
  DerReader inner(std::span<const uint8_t>(), "");
  ASSERT_TRUE(outer.Sequence(&inner, "seq").ok());
  std::string text;
  ASSERT_TRUE(inner.Oid(&text, "oid").ok());
  EXPECT_EQ(text, "1.2.840.113741.1.13.1");
  EXPECT_TRUE(inner.ExpectEnd().ok());
  // Hostile encodings.
  for (const std::vector<uint8_t>& bad : std::vector<std::vector<uint8_t>>{
           {0x02},                                   // truncated header
           {0x02, 0x05, 0x01},                       // length past the end
           {0x30, 0x80, 0x00, 0x00},                 // indefinite length
           {0x30, 0x85, 1, 2, 3, 4, 5},              // 5-byte length
           {0x02, 0x84, 0xff, 0xff, 0xff},           // truncated long length
           {0x02, 0x00},                             // empty INTEGER
           {0x02, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9},  // INTEGER over 8 bytes
           {0x04, 0x01, 0x00},                       // OCTET STRING where INTEGER expected
       }) {
    DerReader hostile(bad, "hostile");
    EXPECT_FALSE(hostile.Integer(&value, "value").ok()) << capsule::ToHex(bad);
  }
  const std::vector<uint8_t> bad_oid = {0x06, 0x02, 0x2a, 0x86};  // last arc unterminated
  DerReader oid_reader(bad_oid, "test");
  EXPECT_FALSE(oid_reader.Oid(&text, "oid").ok());
  const std::vector<uint8_t> boolean = {0x01, 0x01, 0xFF, 0x0A, 0x01, 0x01};
  DerReader bools(boolean, "test");
  bool flag = false;
  ASSERT_TRUE(bools.Boolean(&flag, "flag").ok());
  EXPECT_TRUE(flag);
  ASSERT_TRUE(bools.Enumerated(&value, "type").ok());
  EXPECT_EQ(value, 1);
}

TEST(OpenSslUtil, IntelDates) {
  Result<int64_t> date = ParseIntelDate("2025-07-01T00:00:00Z");
  ASSERT_TRUE(date.ok());
  EXPECT_EQ(*date, kNow);
  EXPECT_EQ(FormatUtc(kNow), "2025-07-01T00:00:00Z");
  EXPECT_EQ(*ParseIntelDate("2049-12-31T23:59:59Z"), 2524607999);
  EXPECT_EQ(*ParseIntelDate("2024-02-29T12:00:00Z"), 1709208000);
  for (const char* bad :
       {"2025-07-01T00:00:00", "2025-07-01T00:00:00.000Z", "2025-07-01 00:00:00Z",
        "2025-02-30T00:00:00Z", "2025-13-01T00:00:00Z", "2025-07-01T24:00:00Z",
        "2025-07-01T00:60:00Z", "2025-07-01t00:00:00z", "+025-07-01T00:00:00Z", ""}) {
    EXPECT_FALSE(ParseIntelDate(bad).ok()) << bad;
  }
}

TEST(OpenSslUtil, KeysAndSignatures) {
  EXPECT_FALSE(P256KeyFromRaw(std::vector<uint8_t>(64, 0x01)).ok());  // not on the curve
  EXPECT_FALSE(P256KeyFromRaw(std::vector<uint8_t>(63, 0x01)).ok());
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  ASSERT_TRUE(key);
  // Round trip: the key's raw point -> EVP_PKEY, and a signature made here verifies through
  // EcdsaSignatureToDer from its r||s.
  uint8_t point[65];
  size_t point_size = 0;
  ASSERT_EQ(EVP_PKEY_get_octet_string_param(key.get(), "encoded-pub-key", point, sizeof(point),
                                            &point_size),
            1);
  ASSERT_EQ(point_size, 65u);
  Result<EvpPkeyPtr> raw = P256KeyFromRaw(std::span<const uint8_t>(point + 1, 64));
  ASSERT_TRUE(raw.ok()) << raw.status().message();
  const std::string message = "signed bytes";
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  ASSERT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()), 1);
  size_t der_size = 0;
  ASSERT_EQ(EVP_DigestSign(ctx.get(), nullptr, &der_size, AsBytes(message).data(), message.size()),
            1);
  std::vector<uint8_t> der(der_size);
  ASSERT_EQ(
      EVP_DigestSign(ctx.get(), der.data(), &der_size, AsBytes(message).data(), message.size()), 1);
  der.resize(der_size);
  const uint8_t* p = der.data();
  std::unique_ptr<ECDSA_SIG, OpenSslFree<ECDSA_SIG_free>> sig(
      d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  ASSERT_TRUE(sig);
  uint8_t rs[64];
  BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), rs, 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), rs + 32, 32);
  Result<std::vector<uint8_t>> rebuilt = EcdsaSignatureToDer(
      std::span<const uint8_t>(rs, 32), std::span<const uint8_t>(rs + 32, 32), false);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(*rebuilt, der);
  EXPECT_TRUE(
      VerifySignature(raw->get(), EVP_sha256(), *rebuilt, AsBytes(message), "quote_signature")
          .ok());
  Status bad = VerifySignature(raw->get(), EVP_sha256(), *rebuilt, AsBytes("other bytes"),
                               "quote_signature");
  ExpectStatusAt(bad, "quote_signature");
  // Little-endian r and s (AMD's layout) give the same DER.
  uint8_t r_le[72] = {}, s_le[72] = {};
  std::reverse_copy(rs, rs + 32, r_le);
  std::reverse_copy(rs + 32, rs + 64, s_le);
  Result<std::vector<uint8_t>> from_le = EcdsaSignatureToDer(r_le, s_le, true);
  ASSERT_TRUE(from_le.ok());
  EXPECT_EQ(*from_le, der);
  EXPECT_FALSE(
      EcdsaSignatureToDer(std::vector<uint8_t>(32, 0), std::span<const uint8_t>(rs, 32), false)
          .ok());
  EXPECT_TRUE(OpenSslErrors().empty());
}

TEST(OpenSslUtil, PemParsing) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Test"), -1, -1, 0);
  const std::string one = SelfSignedLike(cert.get());
  Result<std::vector<X509Ptr>> certs = ParsePemCertificates(one + one + std::string(3, '\0'), "x");
  ASSERT_TRUE(certs.ok()) << certs.status().message();
  EXPECT_EQ(certs->size(), 2u);
  EXPECT_EQ(CommonName((*certs)[0].get()), "Test");
  EXPECT_TRUE(OpenSslErrors().empty());
  EXPECT_FALSE(ParsePemCertificates("", "x").ok());
  EXPECT_FALSE(ParsePemCertificates("no certificate here", "x").ok());
  std::string broken = one;
  broken[broken.size() / 2] = '*';
  EXPECT_FALSE(ParsePemCertificates(one + broken, "x").ok());
  EXPECT_FALSE(ParsePemCertificates(one.substr(0, 10) + std::string(1, '\0') + one, "x").ok());
  const std::vector<uint8_t> der = CertificateDer((*certs)[0].get());
  EXPECT_TRUE(ParseDerCertificate(der, "x").ok());
  EXPECT_TRUE(ParseCertificate(der, "x").ok());
  EXPECT_TRUE(ParseCertificate(AsBytes(one), "x").ok());
  std::vector<uint8_t> trailing = der;
  trailing.push_back(0);
  EXPECT_FALSE(ParseDerCertificate(trailing, "x").ok());
  EXPECT_FALSE(ParseDerCertificate(std::span<const uint8_t>(der).first(der.size() - 1), "x").ok());
  EXPECT_TRUE(OpenSslErrors().empty());
}

TEST(PinnedRoots, Sha256OfEachRoot) {
  auto sha256 = [](const std::vector<uint8_t>& der) {
    uint8_t digest[32];
    unsigned int size = 0;
    EXPECT_EQ(EVP_Digest(der.data(), der.size(), digest, &size, EVP_sha256(), nullptr), 1);
    return intel::UpperHex(std::span<const uint8_t>(digest, size));
  };
  const TrustAnchors anchors = TrustAnchors::Pinned();
  EXPECT_EQ(sha256(anchors.intel_root_der),
            "44A0196B2B99F889B8E149E95B807A350E7424964399E885A7CBB8CCFAB674D3");
  EXPECT_EQ(sha256(anchors.amd_ark_der),
            "69D063B45344D26A2E94E1F4210DE49EF555308287D4C174445C95639A540BCD");
  EXPECT_EQ(sha256(anchors.amd_ask_der),
            "67D303BD3905FD38DB8B20E0793699870E7FA612EAAD5DEC358293FD8C0BAC1B");
  Result<X509Ptr> root = ParseDerCertificate(anchors.intel_root_der, "root");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(CommonName(root->get()), "Intel SGX Root CA");
  Result<ValidityWindow> window = CertificateValidity(root->get());
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(FormatUtc(window->not_after).substr(0, 10), "2049-12-31");
}

// --- Policy (row 28) ---

class PolicyChecks : public Vectors {
 protected:
  static capsule::Policy HardwarePolicy() {
    capsule::Policy policy;
    policy.tee.accept = {"sgx", "tdx"};
    policy.tee.measurements = {
        {"sgx", {"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"}}};
    return policy;
  }
  static std::string Refusal(const Verdict& verdict, const capsule::Policy& policy,
                             const capsule::ReportData* expected) {
    Status status = CheckPolicy(verdict, PolicyFor(policy, verdict.type), expected);
    EXPECT_FALSE(status.ok()) << "accepted";
    if (status.ok()) return "";
    EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
    EXPECT_TRUE(status.message().starts_with("policy: ")) << status.message();
    return status.message();
  }
};

TEST_F(PolicyChecks, SgxVectorAcceptedWithItsBinding) {
  REQUIRE_VECTORS();
  Result<Verdict> verdict = Sgx(sgx_quote_);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  const capsule::ReportData expected = verdict->report_data;
  EXPECT_TRUE(
      CheckPolicy(*verdict, PolicyFor(HardwarePolicy(), EvidenceType::kSgx), &expected).ok());
  EXPECT_TRUE(CheckPolicy(*verdict, PolicyFor(HardwarePolicy(), EvidenceType::kSgx), nullptr).ok());
}

TEST_F(PolicyChecks, Refusals) {
  REQUIRE_VECTORS();
  Result<Verdict> sgx = Sgx(sgx_quote_);
  ASSERT_TRUE(sgx.ok());
  const capsule::ReportData good = sgx->report_data;

  capsule::Policy wrong_measurement = HardwarePolicy();
  wrong_measurement.tee.measurements[0].allowed = {std::string(64, 'a')};
  EXPECT_EQ(Refusal(*sgx, wrong_measurement, &good),
            "policy: measurement 33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb "
            "is not on the allow-list for sgx");

  Verdict debug = *sgx;
  debug.debug = true;
  EXPECT_TRUE(Refusal(debug, HardwarePolicy(), &good).starts_with("policy: debug enclave refused"));
  capsule::Policy allow_debug = HardwarePolicy();
  allow_debug.tee.allow_debug = true;
  EXPECT_TRUE(CheckPolicy(debug, PolicyFor(allow_debug, EvidenceType::kSgx), &good).ok());

  capsule::ReportData other = good;
  other[63] ^= 1;
  EXPECT_TRUE(Refusal(*sgx, HardwarePolicy(), &other)
                  .starts_with("policy: report data does not match the nonce binding"));

  capsule::Policy strict = HardwarePolicy();
  strict.tee.tcb_statuses = {"UpToDate"};
  const std::string tcb = Refusal(*sgx, strict, &good);
  EXPECT_NE(tcb.find("TCB status ConfigurationAndSWHardeningNeeded is not accepted"),
            std::string::npos)
      << tcb;
  EXPECT_NE(tcb.find("INTEL-SA-00289, INTEL-SA-00615"), std::string::npos) << tcb;

  capsule::Policy tdx_only = HardwarePolicy();
  tdx_only.tee.accept = {"tdx"};
  tdx_only.tee.measurements.clear();
  EXPECT_NE(Refusal(*sgx, tdx_only, &good).find("evidence type sgx is not accepted"),
            std::string::npos);

  capsule::Policy signer = HardwarePolicy();
  signer.tee.sgx.mr_signers = {std::string(64, 'b')};
  EXPECT_NE(Refusal(*sgx, signer, &good).find("MRSIGNER 815f42f1"), std::string::npos);
  signer.tee.sgx.mr_signers.push_back(
      "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
  EXPECT_TRUE(CheckPolicy(*sgx, PolicyFor(signer, EvidenceType::kSgx), &good).ok());

  capsule::Policy product = HardwarePolicy();
  product.tee.sgx.isv_prod_id = 1;
  EXPECT_NE(Refusal(*sgx, product, &good).find("ISVPRODID 0 is not the required 1"),
            std::string::npos);
  product.tee.sgx.isv_prod_id = 0;
  EXPECT_TRUE(CheckPolicy(*sgx, PolicyFor(product, EvidenceType::kSgx), &good).ok());

  capsule::Policy svn = HardwarePolicy();
  svn.tee.sgx.min_isv_svn = 1;
  EXPECT_NE(Refusal(*sgx, svn, &good).find("ISVSVN 0 is below the minimum 1"), std::string::npos);

  Result<Verdict> tdx = Tdx(tdx_quote_);
  ASSERT_TRUE(tdx.ok());
  EXPECT_TRUE(CheckPolicy(*tdx, PolicyFor(strict, EvidenceType::kTdx), nullptr).ok());
  Verdict tdx_debug = *tdx;
  tdx_debug.debug = true;
  EXPECT_TRUE(Refusal(tdx_debug, strict, nullptr).starts_with("policy: debug enclave refused"));
}

TEST(PolicyLayer, SnpVmplAndMigrationAgent) {
  Verdict verdict;
  verdict.type = EvidenceType::kSnp;
  verdict.measurement.assign(48, 0x11);
  verdict.vmpl = 1;
  verdict.guest_policy = 0x30000;
  capsule::Policy policy;
  policy.tee.accept = {"snp"};
  Status status = CheckPolicy(verdict, PolicyFor(policy, EvidenceType::kSnp), nullptr);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.message(), "policy: VMPL 1 is above the maximum 0");
  policy.tee.snp.max_vmpl = 1;
  EXPECT_TRUE(CheckPolicy(verdict, PolicyFor(policy, EvidenceType::kSnp), nullptr).ok());
  verdict.guest_policy |= uint64_t{1} << 18;
  status = CheckPolicy(verdict, PolicyFor(policy, EvidenceType::kSnp), nullptr);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("migration agent"), std::string::npos);
}

TEST(PolicyLayer, SoftwareEvidenceNeedsThePolicyToNameIt) {
  std::vector<uint8_t> evidence = {'M', 'L', 'C', 'S', 'W', 'E', 'V', '1'};
  evidence.resize(8 + 32 + 64, 0x42);
  Verifier verifier(TrustAnchors::Pinned());
  Result<Verdict> verdict = verifier.Verify(EvidenceType::kSoftware, evidence, nullptr, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_EQ(verdict->measurement, std::vector<uint8_t>(32, 0x42));
  capsule::Policy hardware;
  hardware.tee.accept = {"sgx"};
  Status refused = CheckPolicy(*verdict, PolicyFor(hardware, EvidenceType::kSoftware), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.message(), "policy: evidence type software is not accepted by the policy");
  capsule::Policy software;
  software.tee.accept = {"software"};
  EXPECT_TRUE(CheckPolicy(*verdict, PolicyFor(software, EvidenceType::kSoftware), nullptr).ok());
  evidence.pop_back();
  ExpectFailsAt(verifier.Verify(EvidenceType::kSoftware, evidence, nullptr, kNow), "parse_error");
  // TPM evidence is verified now (tpm_test.cc); software evidence is not TPM evidence.
  ExpectFailsAt(verifier.Verify(EvidenceType::kTpm, evidence, nullptr, kNow), "parse_error");
}

TEST(SnpEvidence, ContainerIsLengthPrefixed) {
  Verifier verifier(TrustAnchors::Pinned());
  const std::vector<uint8_t> report(1184, 0), vcek(10, 0);
  std::vector<uint8_t> blob = EncodeSnpEvidence(report, vcek);
  EXPECT_EQ(blob.size(), 8 + 4 + 1184 + 4 + 10);
  // The container decodes (the report then fails inside the SNP verifier, not here).
  Result<Verdict> result = verifier.Verify(EvidenceType::kSnp, blob, nullptr, kNow);
  ASSERT_FALSE(result.ok());
  blob.push_back(0);
  ExpectFailsAt(verifier.Verify(EvidenceType::kSnp, blob, nullptr, kNow), "parse_error");
  blob[0] = 'X';
  ExpectFailsAt(verifier.Verify(EvidenceType::kSnp, blob, nullptr, kNow), "parse_error");
  ExpectFailsAt(verifier.Verify(EvidenceType::kSnp, std::vector<uint8_t>(3), nullptr, kNow),
                "parse_error");
}

TEST_F(Vectors, SnpVectorThroughTheContainer) {
  REQUIRE_VECTORS();
  const std::vector<uint8_t> report = ReadBytes(VectorsDir() / "go-sev-guest_snp_attestation.bin");
  const std::vector<uint8_t> vcek = ReadBytes(VectorsDir() / "go-sev-guest_vcek_milan.der");
  Result<Verdict> verdict =
      Pinned().Verify(EvidenceType::kSnp, EncodeSnpEvidence(report, vcek), nullptr, kNow);
  ASSERT_TRUE(verdict.ok()) << verdict.status().message();
  EXPECT_TRUE(verdict->debug);
  capsule::Policy policy;
  policy.tee.accept = {"snp"};
  Status status = CheckPolicy(*verdict, PolicyFor(policy, EvidenceType::kSnp), nullptr);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(status.message().starts_with("policy: debug enclave refused"));
  policy.tee.allow_debug = true;
  EXPECT_TRUE(CheckPolicy(*verdict, PolicyFor(policy, EvidenceType::kSnp), nullptr).ok());
  Json json = Json::parse(verdict->ToJson());
  EXPECT_EQ(json["type"], "snp");
  EXPECT_EQ(json["debug"], true);
}

// --- Throughput (information only: no timed assertion) ---

TEST_F(Vectors, PerQuoteVerifyTime) {
  REQUIRE_VECTORS();
  ASSERT_TRUE(Sgx(sgx_quote_).ok());  // warm the caches
  constexpr int kIterations = 200;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kIterations; ++i) {
    Result<Verdict> verdict = Sgx(sgx_quote_);
    ASSERT_TRUE(verdict.ok());
  }
  const double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      kIterations;
  std::printf(
      "[ info     ] SGX vector: %.0f us per verification (%d iterations, one thread, "
      "cached collateral)\n",
      micros, kIterations);
  // A fresh verifier pays the collateral checks once.
  const auto cold_start = std::chrono::steady_clock::now();
  Verifier cold(TrustAnchors::Pinned());
  ASSERT_TRUE(cold.Verify(EvidenceType::kSgx, sgx_quote_, &sgx_collateral_, kNow).ok());
  std::printf(
      "[ info     ] first verification with a fresh Verifier: %.0f us\n",
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - cold_start)
          .count());
}

}  // namespace
}  // namespace mlcapsule::server::evidence
