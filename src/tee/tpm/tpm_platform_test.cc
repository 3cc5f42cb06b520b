// TpmPlatform against swtpm (label "tpm"; skipped when swtpm is not installed): provisioning and
// restart, the PCR 23 policy on the seed, the NV counter across swtpm restarts and SIGKILL,
// evidence (parsed, PCR 23 replayed, EK certificate chained with OpenSSL), a vanishing TPM, a
// redefined NV index, fault injection (lost responses, RETRY, NV_RATE), and the whole platform
// under the core's seccomp filter. One swtpm_setup per process; one swtpm per test.
#include "tee/tpm/tpm_platform.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/wait.h>
#include <time.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "capsule/tpm_evidence.h"
#include "tee/software/sandbox.h"
#include "tee/tpm/fd_tcti.h"
#include "tee/tpm/swtpm_harness.h"
#include "tee/tpm/swtpm_test.h"

namespace mlcapsule::tee {
namespace {

using testing::FaultInjectingTcti;
using testing::Swtpm;
using testing::SwtpmFixture;
using testing::SwtpmTest;

constexpr uint32_t kNvIncrementCommand = 0x00000134;  // TPM2_CC_NV_Increment

capsule::Digest MeasurementOf(uint8_t fill) {
  capsule::Digest digest{};
  digest.fill(fill);
  return digest;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

double MsSince(const struct timespec& start) {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - start.tv_sec) * 1e3 + (now.tv_nsec - start.tv_nsec) / 1e6;
}

struct timespec Now() {
  struct timespec now {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now;
}

// A direct ESYS connection to the swtpm, for what the test does behind the platform's back.
class TestEsys {
 public:
  static std::unique_ptr<TestEsys> Open(const std::string& spec) {
    auto transport = OpenTpmTransport(spec);
    if (!transport.ok()) return nullptr;
    std::unique_ptr<TestEsys> esys(new TestEsys());
    esys->transport_.emplace(std::move(transport).value());
    if (Esys_Initialize(&esys->context_, esys->transport_->context(), nullptr) != 0) return nullptr;
    return esys;
  }
  ~TestEsys() {
    if (context_ != nullptr) Esys_Finalize(&context_);
  }
  ESYS_CONTEXT* get() { return context_; }

 private:
  TestEsys() = default;
  std::optional<FdTcti> transport_;
  ESYS_CONTEXT* context_ = nullptr;
};

class TpmPlatformTest : public SwtpmTest {
 protected:
  TpmOptions Options(const std::string& name = "state", uint8_t measurement = 0x11) {
    TpmOptions options;
    options.device = tpm_->spec();
    options.state_dir = dir_ + "/" + name;
    options.measurement = MeasurementOf(measurement);
    return options;
  }
};

TEST_F(TpmPlatformTest, ProvisionsOnceThenReopensWithTheSameKeyAndCounter) {
  capsule::SecretBytes first_key;
  std::vector<uint8_t> ak_name;
  {
    auto platform = MustCreate(Options());
    ASSERT_NE(platform, nullptr);
    EXPECT_EQ(platform->evidence_type(), capsule::EvidenceType::kTpm);
    auto key = platform->SealingKey();
    ASSERT_TRUE(key.ok());
    EXPECT_EQ(key->size(), 32u);
    first_key = std::move(key).value();
    auto counter = platform->ReadCounter();
    ASSERT_TRUE(counter.ok()) << counter.status().ToString();
    EXPECT_GE(*counter, 1u);  // incremented once when provisioned
    ak_name = platform->ak_name();
    EXPECT_EQ(ak_name.size(), 34u);
    EXPECT_TRUE(std::filesystem::exists(dir_ + "/state/tpm-state"));
    EXPECT_EQ(std::filesystem::status(dir_ + "/state/tpm-state").permissions() &
                  std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    // One core per state directory.
    auto second = TpmPlatform::Create(Options());
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("in use by another mlcapsule-core"), std::string::npos)
        << second.status().message();
  }
  auto again = MustCreate(Options());
  ASSERT_NE(again, nullptr);
  auto key = again->SealingKey();
  ASSERT_TRUE(key.ok());
  EXPECT_TRUE(capsule::ConstantTimeEqual(key->span(), first_key.span()));
  EXPECT_EQ(again->ak_name(), ak_name);
  auto counter = again->ReadCounter();
  ASSERT_TRUE(counter.ok());
  EXPECT_EQ(*counter, 1u);
}

TEST_F(TpmPlatformTest, AnotherMeasurementCannotUnsealTheSeed) {
  capsule::SecretBytes first_key;
  {
    auto platform = MustCreate(Options("state", 0x11));
    ASSERT_NE(platform, nullptr);
    first_key = std::move(platform->SealingKey()).value();
  }
  auto other = TpmPlatform::Create(Options("state", 0x22));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  const std::string& message = other.status().message();
  EXPECT_NE(message.find("refuses to unseal the seed"), std::string::npos) << message;
  EXPECT_NE(message.find("PCR 23 policy fails"), std::string::npos) << message;
  EXPECT_NE(message.find(capsule::ToHex(MeasurementOf(0x11))), std::string::npos) << message;
  EXPECT_NE(message.find(capsule::ToHex(MeasurementOf(0x22))), std::string::npos) << message;
  // On its own state (another counter index) the other binary gets another key.
  TpmOptions options = Options("other", 0x22);
  options.counter_index = kDefaultTpmCounterIndex + 1;
  auto platform = MustCreate(options);
  ASSERT_NE(platform, nullptr);
  auto key = platform->SealingKey();
  ASSERT_TRUE(key.ok());
  EXPECT_FALSE(capsule::ConstantTimeEqual(key->span(), first_key.span()));
}

TEST_F(TpmPlatformTest, CounterSurvivesSwtpmRestartAndSigkill) {
  {
    auto platform = MustCreate(Options());
    ASSERT_NE(platform, nullptr);
    for (uint64_t expected = 2; expected <= 4; ++expected) {
      auto value = platform->IncrementCounter();
      ASSERT_TRUE(value.ok()) << value.status().ToString();
      EXPECT_EQ(*value, expected);
    }
  }
  ASSERT_TRUE(tpm_->Restart().ok());
  {
    auto platform = MustCreate(Options());
    ASSERT_NE(platform, nullptr);
    EXPECT_EQ(platform->ReadCounter().value(), 4u);
    auto value = platform->IncrementCounter();
    ASSERT_TRUE(value.ok()) << value.status().ToString();
    EXPECT_EQ(*value, 5u);
    // Power loss: not orderly, so the value is on "disk" already.
    tpm_->Kill();
  }
  ASSERT_TRUE(tpm_->Restart().ok());
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->ReadCounter().value(), 5u);
}

TEST_F(TpmPlatformTest, EvidenceParsesAndReplays) {
  TpmOptions options = Options();
  options.ek_chain_files = {fixture_->intermediate_pem()};
  auto platform = MustCreate(options);
  ASSERT_NE(platform, nullptr);
  capsule::ReportData report_data{};
  for (size_t i = 0; i < report_data.size(); ++i) report_data[i] = static_cast<uint8_t>(i * 7);
  auto bytes = platform->Evidence(report_data);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto evidence = capsule::ParseTpmEvidence(*bytes);
  ASSERT_TRUE(evidence.ok()) << evidence.status().ToString();
  EXPECT_EQ(evidence->report_data, report_data);
  EXPECT_EQ(evidence->measurement, MeasurementOf(0x11));
  EXPECT_EQ(evidence->ak_public, platform->ak_public());

  // PCR 23 holds the replayed value.
  auto pcr = platform->ReadPcr23();
  ASSERT_TRUE(pcr.ok()) << pcr.status().ToString();
  EXPECT_EQ(*pcr, capsule::TpmPcr23(MeasurementOf(0x11), report_data));

  // The quote: extraData = TpmQualifyingData(rd), PCR selection sha256:{23}.
  TPMS_ATTEST attest{};
  size_t offset = 0;
  ASSERT_EQ(Tss2_MU_TPMS_ATTEST_Unmarshal(evidence->attest.data(), evidence->attest.size(), &offset,
                                          &attest),
            TSS2_RC_SUCCESS);
  EXPECT_EQ(offset, evidence->attest.size());
  EXPECT_EQ(attest.magic, TPM2_GENERATED_VALUE);
  EXPECT_EQ(attest.type, TPM2_ST_ATTEST_QUOTE);
  const std::array<uint8_t, 32> qualifying = capsule::TpmQualifyingData(report_data);
  ASSERT_EQ(attest.extraData.size, 32);
  EXPECT_TRUE(std::equal(qualifying.begin(), qualifying.end(), attest.extraData.buffer));
  ASSERT_EQ(attest.attested.quote.pcrSelect.count, 1u);
  EXPECT_EQ(attest.attested.quote.pcrSelect.pcrSelections[0].hash, TPM2_ALG_SHA256);
  EXPECT_EQ(attest.attested.quote.pcrSelect.pcrSelections[0].pcrSelect[2], 0x80);
  // The AK: restricted ECDSA P-256 signing key with exactly the expected attributes.
  TPMT_PUBLIC ak{};
  offset = 0;
  ASSERT_EQ(Tss2_MU_TPMT_PUBLIC_Unmarshal(evidence->ak_public.data(), evidence->ak_public.size(),
                                          &offset, &ak),
            TSS2_RC_SUCCESS);
  EXPECT_EQ(ak.objectAttributes, kTpmAkAttributes);
  EXPECT_EQ(ak.type, TPM2_ALG_ECC);
  EXPECT_EQ(ak.parameters.eccDetail.curveID, TPM2_ECC_NIST_P256);
  TPMT_SIGNATURE signature{};
  offset = 0;
  ASSERT_EQ(Tss2_MU_TPMT_SIGNATURE_Unmarshal(evidence->signature.data(), evidence->signature.size(),
                                             &offset, &signature),
            TSS2_RC_SUCCESS);
  EXPECT_EQ(signature.sigAlg, TPM2_ALG_ECDSA);

  // The EK certificate is the fixture's, DER, and chains to the fixture's root through the
  // intermediate shipped in the evidence.
  EXPECT_EQ(evidence->ek_cert, ReadFile(fixture_->ek_cert_der_file()));
  ASSERT_EQ(evidence->ek_chain.size(), 1u);
  const unsigned char* cursor = evidence->ek_cert.data();
  std::unique_ptr<X509, decltype(&X509_free)> ek_cert(
      d2i_X509(nullptr, &cursor, static_cast<long>(evidence->ek_cert.size())), X509_free);
  ASSERT_NE(ek_cert, nullptr);
  cursor = evidence->ek_chain[0].data();
  std::unique_ptr<X509, decltype(&X509_free)> intermediate(
      d2i_X509(nullptr, &cursor, static_cast<long>(evidence->ek_chain[0].size())), X509_free);
  ASSERT_NE(intermediate, nullptr);
  FILE* root_file = fopen(fixture_->root_ca_pem().c_str(), "r");
  ASSERT_NE(root_file, nullptr);
  std::unique_ptr<X509, decltype(&X509_free)> root(
      PEM_read_X509(root_file, nullptr, nullptr, nullptr), X509_free);
  fclose(root_file);
  ASSERT_NE(root, nullptr);
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
  ASSERT_EQ(X509_STORE_add_cert(store.get(), root.get()), 1);
  struct StackFree {
    void operator()(STACK_OF(X509) * stack) const { sk_X509_free(stack); }
  };
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  sk_X509_push(untrusted.get(), intermediate.get());
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> context(X509_STORE_CTX_new(),
                                                                          X509_STORE_CTX_free);
  ASSERT_EQ(X509_STORE_CTX_init(context.get(), store.get(), ek_cert.get(), untrusted.get()), 1);
  EXPECT_EQ(X509_verify_cert(context.get()), 1)
      << X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get()));

  // Another report data: another PCR 23, another quote.
  capsule::ReportData other = report_data;
  other[0] ^= 1;
  auto second = platform->Evidence(other);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(platform->ReadPcr23().value(), capsule::TpmPcr23(MeasurementOf(0x11), other));
}

TEST_F(TpmPlatformTest, VanishedTpmGivesClearErrorsAndKeepsState) {
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  ASSERT_EQ(platform->IncrementCounter().value(), 2u);
  tpm_->Kill();
  capsule::ReportData report_data{};
  auto evidence = platform->Evidence(report_data);
  ASSERT_FALSE(evidence.ok());
  EXPECT_EQ(evidence.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(evidence.status().message().find("unreachable"), std::string::npos)
      << evidence.status().message();
  EXPECT_NE(evidence.status().message().find("does not reconnect"), std::string::npos);
  auto increment = platform->IncrementCounter();
  ASSERT_FALSE(increment.ok());
  EXPECT_EQ(increment.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(increment.status().message().find("unreachable"), std::string::npos);
  EXPECT_FALSE(platform->ReadCounter().ok());
  EXPECT_TRUE(platform->SealingKey().ok());  // in memory

  // Swtpm back, a new core: the counter is intact.
  ASSERT_TRUE(tpm_->Restart().ok());
  platform.reset();
  auto again = MustCreate(Options());
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->ReadCounter().value(), 2u);
}

TEST_F(TpmPlatformTest, IncrementWhenTheTpmDiesIsUnavailableAndSaysSo) {
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  tpm_->Kill();
  auto value = platform->IncrementCounter();
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(value.status().message().find("whether it was applied is unknown"), std::string::npos)
      << value.status().message();
  EXPECT_NE(value.status().message().find(tpm_->spec()), std::string::npos);
}

TEST_F(TpmPlatformTest, LostIncrementResponseIsResolvedByReReading) {
  std::unique_ptr<FaultInjectingTcti> fault;
  TpmOptions options = Options();
  options.wrap_tcti = [&](TSS2_TCTI_CONTEXT* inner) {
    fault = std::make_unique<FaultInjectingTcti>(inner);
    return fault->context();
  };
  auto platform = MustCreate(options);
  ASSERT_NE(platform, nullptr);
  const uint64_t start = platform->ReadCounter().value();
  // The TPM applies the increment, the response is lost: expected + 1 is read back.
  fault->Inject(kNvIncrementCommand, FaultInjectingTcti::Fault::kDropResponse);
  auto value = platform->IncrementCounter();
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  EXPECT_EQ(*value, start + 1);
  EXPECT_EQ(fault->injected(), 1);
  EXPECT_EQ(platform->ReadCounter().value(), start + 1);

  // TPM_RC_RETRY beyond ESYS's own resubmissions: the platform backs off and succeeds.
  fault->Inject(kNvIncrementCommand, FaultInjectingTcti::Fault::kRetry, 8);
  value = platform->IncrementCounter();
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  EXPECT_EQ(*value, start + 2);
  EXPECT_EQ(fault->injected(), 9);

  // Busy for good: an error, not a hang.
  fault->Inject(kNvIncrementCommand, FaultInjectingTcti::Fault::kRetry, 1000);
  value = platform->IncrementCounter();
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), StatusCode::kIoError);
  EXPECT_NE(value.status().message().find("stayed busy"), std::string::npos)
      << value.status().message();
}

TEST_F(TpmPlatformTest, NvRateIsResourceExhausted) {
  std::unique_ptr<FaultInjectingTcti> fault;
  TpmOptions options = Options();
  options.wrap_tcti = [&](TSS2_TCTI_CONTEXT* inner) {
    fault = std::make_unique<FaultInjectingTcti>(inner);
    return fault->context();
  };
  auto platform = MustCreate(options);
  ASSERT_NE(platform, nullptr);
  const uint64_t start = platform->ReadCounter().value();
  fault->Inject(kNvIncrementCommand, FaultInjectingTcti::Fault::kNvRate);
  auto value = platform->IncrementCounter();
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(value.status().message().find("lease.seal_every"), std::string::npos)
      << value.status().message();
  // Nothing was applied, and the platform still works.
  EXPECT_EQ(platform->ReadCounter().value(), start);
  EXPECT_EQ(platform->IncrementCounter().value(), start + 1);
}

TEST_F(TpmPlatformTest, RefusesARedefinedCounterIndex) {
  { ASSERT_NE(MustCreate(Options()), nullptr); }
  {
    auto esys = TestEsys::Open(tpm_->spec());
    ASSERT_NE(esys, nullptr);
    ESYS_TR index = ESYS_TR_NONE;
    ASSERT_EQ(Esys_TR_FromTPMPublic(esys->get(), kDefaultTpmCounterIndex, ESYS_TR_NONE,
                                    ESYS_TR_NONE, ESYS_TR_NONE, &index),
              TSS2_RC_SUCCESS);
    ASSERT_EQ(Esys_NV_UndefineSpace(esys->get(), ESYS_TR_RH_OWNER, index, ESYS_TR_PASSWORD,
                                    ESYS_TR_NONE, ESYS_TR_NONE),
              TSS2_RC_SUCCESS);
    // Same handle, an ordinary (writable) index of the same size, empty auth.
    TPM2B_NV_PUBLIC nv_public{};
    nv_public.nvPublic.nvIndex = kDefaultTpmCounterIndex;
    nv_public.nvPublic.nameAlg = TPM2_ALG_SHA256;
    nv_public.nvPublic.attributes = TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA;
    nv_public.nvPublic.dataSize = 8;
    const TPM2B_AUTH auth{};
    ESYS_TR redefined = ESYS_TR_NONE;
    ASSERT_EQ(Esys_NV_DefineSpace(esys->get(), ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                  ESYS_TR_NONE, &auth, &nv_public, &redefined),
              TSS2_RC_SUCCESS);
  }
  auto platform = TpmPlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(platform.status().message().find("is not the counter recorded in"), std::string::npos)
      << platform.status().message();
  EXPECT_NE(platform.status().message().find("redefined"), std::string::npos);

  // Undefined and not redefined: refused too.
  {
    auto esys = TestEsys::Open(tpm_->spec());
    ASSERT_NE(esys, nullptr);
    ESYS_TR index = ESYS_TR_NONE;
    ASSERT_EQ(Esys_TR_FromTPMPublic(esys->get(), kDefaultTpmCounterIndex, ESYS_TR_NONE,
                                    ESYS_TR_NONE, ESYS_TR_NONE, &index),
              TSS2_RC_SUCCESS);
    ASSERT_EQ(Esys_NV_UndefineSpace(esys->get(), ESYS_TR_RH_OWNER, index, ESYS_TR_PASSWORD,
                                    ESYS_TR_NONE, ESYS_TR_NONE),
              TSS2_RC_SUCCESS);
  }
  platform = TpmPlatform::Create(Options());
  ASSERT_FALSE(platform.ok());
  EXPECT_EQ(platform.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(platform.status().message().find("no longer exists"), std::string::npos)
      << platform.status().message();
}

TEST_F(TpmPlatformTest, EachStateDirectoryGetsItsOwnCounter) {
  // Two capsules on one TPM, one after the other (swtpm serves one connection at a time; a
  // kernel resource manager serves several).
  uint64_t first_value = 0, second_value = 0;
  {
    auto first = MustCreate(Options("first"));
    ASSERT_NE(first, nullptr);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(first->IncrementCounter().ok());
    first_value = first->ReadCounter().value();
  }
  {
    auto second = MustCreate(Options("second"));
    ASSERT_NE(second, nullptr);
    second_value = second->ReadCounter().value();
    // A new TPM counter starts at the highest count any counter of the TPM had (TPM 2.0 Part 1),
    // so it is not below the first's; what matters is that the two move separately.
    EXPECT_GE(second_value, 1u);
    ASSERT_TRUE(second->IncrementCounter().ok());
  }
  {
    auto first = MustCreate(Options("first"));
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(first->ReadCounter().value(), first_value);  // the other's increment is not ours
  }
  auto second = MustCreate(Options("second"));
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->ReadCounter().value(), second_value + 1);
}

TEST_F(TpmPlatformTest, RefusesMalformedCredentials) {
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  // A TPM2B whose size is over the structure's buffer.
  const std::vector<uint8_t> oversize = {0xFF, 0xFF, 1, 2, 3};
  const std::vector<uint8_t> secret = {0x00, 0x02, 0xAA, 0xBB};
  auto result = platform->ActivateCredential(oversize, secret);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("id_object"), std::string::npos)
      << result.status().message();
  // Trailing bytes after a valid TPM2B.
  const std::vector<uint8_t> id_object = {0x00, 0x02, 0x01, 0x02};
  const std::vector<uint8_t> trailing = {0x00, 0x01, 0xAA, 0xBB};
  result = platform->ActivateCredential(id_object, trailing);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("encrypted_secret has 1 trailing bytes"),
            std::string::npos)
      << result.status().message();
  // Well-formed but made for nobody: the TPM refuses it.
  std::vector<uint8_t> garbage_secret(2 + 256, 0x5A);
  garbage_secret[0] = 0x01;
  garbage_secret[1] = 0x00;
  std::vector<uint8_t> garbage_id(2 + 2 + 32 + 18, 0x33);
  garbage_id[0] = 0;
  garbage_id[1] = 2 + 32 + 18;
  garbage_id[2] = 0;
  garbage_id[3] = 32;
  result = platform->ActivateCredential(garbage_id, garbage_secret);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kPermissionDenied) << result.status().ToString();
  EXPECT_NE(result.status().message().find("refuses the credential"), std::string::npos)
      << result.status().message();
  // And the platform still works (the EK session and objects were flushed).
  EXPECT_TRUE(platform->Evidence(capsule::ReportData{}).ok());
}

TEST_F(TpmPlatformTest, NoObjectsLeakAcrossManyCalls) {
  // swtpm keeps 3 transient objects and 64 sessions, and has no resource manager: a leak per
  // call would fail long before 40 calls.
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  std::vector<uint8_t> garbage_secret(2 + 256, 0x5A);
  garbage_secret[0] = 0x01;
  garbage_secret[1] = 0x00;
  std::vector<uint8_t> garbage_id = {0, 4, 0, 2, 1, 2};
  for (int i = 0; i < 40; ++i) {
    capsule::ReportData report_data{};
    report_data[0] = static_cast<uint8_t>(i);
    ASSERT_TRUE(platform->Evidence(report_data).ok()) << i;
    ASSERT_TRUE(platform->IncrementCounter().ok()) << i;
    EXPECT_FALSE(platform->ActivateCredential(garbage_id, garbage_secret).ok());
  }
  platform.reset();
  for (int i = 0; i < 5; ++i) ASSERT_NE(MustCreate(Options()), nullptr) << i;
}

// The whole platform after EnterSeccomp, in a child process (the filter cannot be removed).
TEST_F(TpmPlatformTest, WorksUnderTheCoreSeccompFilter) {
  { ASSERT_NE(MustCreate(Options()), nullptr); }  // provisioned outside
  fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Exit codes name the step that failed; _exit keeps the parent's fixture alive.
    auto platform = TpmPlatform::Create(Options());
    if (!platform.ok()) {
      fprintf(stderr, "create: %s\n", platform.status().ToString().c_str());
      _exit(10);
    }
    if (!HardenProcess().ok() || !EnterSeccomp().ok()) _exit(11);
    capsule::ReportData report_data{};
    report_data[5] = 5;
    auto evidence = (*platform)->Evidence(report_data);
    if (!evidence.ok()) {
      fprintf(stderr, "evidence: %s\n", evidence.status().ToString().c_str());
      _exit(12);
    }
    auto value = (*platform)->IncrementCounter();
    if (!value.ok() || *value != 2) {
      fprintf(stderr, "increment: %s\n", value.status().ToString().c_str());
      _exit(13);
    }
    if (!(*platform)->ReadCounter().ok() || !(*platform)->SealingKey().ok()) _exit(14);
    std::array<uint8_t, 16> random{};
    if (!(*platform)->Random(random).ok()) _exit(15);
    std::vector<uint8_t> secret(2 + 256, 0x5A);
    secret[0] = 0x01;
    secret[1] = 0x00;
    const std::vector<uint8_t> id = {0, 4, 0, 2, 1, 2};
    auto activated = (*platform)->ActivateCredential(id, secret);
    if (activated.ok() || activated.status().code() != StatusCode::kPermissionDenied) {
      fprintf(stderr, "activate: %s\n", activated.status().ToString().c_str());
      _exit(16);
    }
    platform->reset();  // flushes what it holds (swtpm has no resource manager)
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_FALSE(WIFSIGNALED(status)) << "the child was killed by signal " << WTERMSIG(status)
                                    << " (SIGSYS = " << SIGSYS << ": a forbidden system call)";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed step (see stderr)";
  // The child's increment reached the TPM.
  auto platform = MustCreate(Options());
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->ReadCounter().value(), 2u);
}

// Not a check: the numbers for the report (median of 5 on swtpm over loopback TCP).
TEST_F(TpmPlatformTest, Timings) {
  std::vector<double> provision, create, evidence, increment, activate;
  for (int i = 0; i < 3; ++i) {
    TpmOptions options = Options("provision" + std::to_string(i));
    options.counter_index = kDefaultTpmCounterIndex + 0x10 + static_cast<uint32_t>(i);
    struct timespec start = Now();
    ASSERT_NE(MustCreate(options), nullptr);
    provision.push_back(MsSince(start));
  }
  { ASSERT_NE(MustCreate(Options()), nullptr); }
  std::vector<uint8_t> secret(2 + 256, 0x5A);
  secret[0] = 0x01;
  secret[1] = 0x00;
  const std::vector<uint8_t> id = {0, 4, 0, 2, 1, 2};
  for (int i = 0; i < 5; ++i) {
    struct timespec start = Now();
    auto platform = MustCreate(Options());
    ASSERT_NE(platform, nullptr);
    create.push_back(MsSince(start));
    start = Now();
    ASSERT_TRUE(platform->Evidence(capsule::ReportData{}).ok());
    evidence.push_back(MsSince(start));
    start = Now();
    ASSERT_TRUE(platform->IncrementCounter().ok());
    increment.push_back(MsSince(start));
    start = Now();
    EXPECT_FALSE(platform->ActivateCredential(id, secret).ok());  // up to the TPM's refusal
    activate.push_back(MsSince(start));
  }
  auto median = [](std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
  };
  std::cout << "swtpm medians: first Create (provisioning) " << median(provision) << " ms, Create "
            << median(create) << " ms, Evidence " << median(evidence) << " ms, IncrementCounter "
            << median(increment) << " ms, refused ActivateCredential " << median(activate)
            << " ms\n";
}

}  // namespace
}  // namespace mlcapsule::tee
