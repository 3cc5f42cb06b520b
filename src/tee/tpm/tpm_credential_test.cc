// The TPM platform against the license server's side (label "tpm"; skipped without swtpm): its
// evidence passes server::evidence::VerifyTpm with the swtpm fixture's root, and a credential
// made in software by MakeTpmCredential for its AK name and EK certificate is activated by the
// TPM (also under the core's seccomp filter); one made for another AK name or another EK is
// refused with a clear message.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "server/evidence/evidence.h"
#include "server/evidence/testing/synthetic_tpm.h"
#include "server/evidence/tpm.h"
#include "tee/software/sandbox.h"
#include "tee/tpm/swtpm_harness.h"
#include "tee/tpm/swtpm_test.h"
#include "tee/tpm/tpm_platform.h"

namespace mlcapsule::tee {
namespace {

using server::evidence::MakeTpmCredential;
using server::evidence::TpmCredential;
using testing::Swtpm;
using testing::SwtpmFixture;
using testing::SwtpmTest;

std::vector<uint8_t> PemToDer(const std::string& path) {
  FILE* file = fopen(path.c_str(), "r");
  if (file == nullptr) return {};
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  fclose(file);
  if (cert == nullptr) return {};
  unsigned char* der = nullptr;
  const int length = i2d_X509(cert, &der);
  X509_free(cert);
  if (length <= 0) return {};
  std::vector<uint8_t> out(der, der + length);
  OPENSSL_free(der);
  return out;
}

class TpmCredentialTest : public SwtpmTest {
 protected:
  void SetUp() override {
    SwtpmTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    options_.device = tpm_->spec();
    options_.state_dir = dir_ + "/state";
    options_.measurement.emplace();
    options_.measurement->fill(0x42);
    options_.ek_chain_files = {fixture_->intermediate_pem()};
  }

  using SwtpmTest::MustCreate;
  std::unique_ptr<TpmPlatform> MustCreate() { return SwtpmTest::MustCreate(options_); }

  TpmOptions options_;
};

TEST_F(TpmCredentialTest, EvidenceVerifiesOnTheServer) {
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  capsule::ReportData report_data{};
  report_data.fill(0x5C);
  auto evidence = platform->Evidence(report_data);
  ASSERT_TRUE(evidence.ok()) << evidence.status().ToString();
  server::evidence::TrustAnchors anchors;
  const std::vector<uint8_t> root = PemToDer(fixture_->root_ca_pem());
  ASSERT_FALSE(root.empty());
  anchors.tpm_ek_roots = {root};
  server::evidence::Verifier verifier(anchors);
  auto verdict = verifier.Verify(capsule::EvidenceType::kTpm, *evidence, nullptr, time(nullptr));
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->report_data, report_data);
  EXPECT_EQ(verdict->measurement, std::vector<uint8_t>(32, 0x42));
  EXPECT_EQ(verdict->ak_name, platform->ak_name());
  EXPECT_EQ(verdict->tpm_ek_cert_der, platform->ek_certificate());

  // Without the intermediate in the evidence the chain does not verify.
  TpmOptions bare = options_;
  bare.ek_chain_files.clear();
  bare.state_dir = dir_ + "/state";
  platform.reset();
  auto unchained = TpmPlatform::Create(bare);
  ASSERT_TRUE(unchained.ok()) << unchained.status().ToString();
  evidence = (*unchained)->Evidence(report_data);
  ASSERT_TRUE(evidence.ok());
  verdict = verifier.Verify(capsule::EvidenceType::kTpm, *evidence, nullptr, time(nullptr));
  ASSERT_FALSE(verdict.ok());
  EXPECT_EQ(verdict.status().message().rfind("ek_chain", 0), 0u) << verdict.status().message();
}

TEST_F(TpmCredentialTest, ActivatesACredentialMadeForItsAkAndEk) {
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  std::vector<uint8_t> secret(32);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(0xC0 + i);
  auto credential = MakeTpmCredential(platform->ek_certificate(), platform->ak_name(), secret);
  ASSERT_TRUE(credential.ok()) << credential.status().ToString();
  auto activated =
      platform->ActivateCredential(credential->id_object, credential->encrypted_secret);
  ASSERT_TRUE(activated.ok()) << activated.status().ToString();
  EXPECT_EQ(std::vector<uint8_t>(activated->span().begin(), activated->span().end()), secret);

  // After a restart of the core (the AK is loaded from STATE again) it still activates.
  platform.reset();
  platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  activated = platform->ActivateCredential(credential->id_object, credential->encrypted_secret);
  ASSERT_TRUE(activated.ok()) << activated.status().ToString();
  EXPECT_EQ(std::vector<uint8_t>(activated->span().begin(), activated->span().end()), secret);
}

TEST_F(TpmCredentialTest, RefusesACredentialForAnotherAkName) {
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  std::vector<uint8_t> other_name = platform->ak_name();
  ASSERT_EQ(other_name.size(), 34u);
  other_name[33] ^= 0x01;
  const std::vector<uint8_t> secret(32, 0x77);
  auto credential = MakeTpmCredential(platform->ek_certificate(), other_name, secret);
  ASSERT_TRUE(credential.ok()) << credential.status().ToString();
  auto activated =
      platform->ActivateCredential(credential->id_object, credential->encrypted_secret);
  ASSERT_FALSE(activated.ok());
  EXPECT_EQ(activated.status().code(), StatusCode::kPermissionDenied);
  const std::string& message = activated.status().message();
  EXPECT_NE(message.find("refuses the credential"), std::string::npos) << message;
  EXPECT_NE(message.find("integrity check failed"), std::string::npos) << message;
  EXPECT_NE(message.find("0x1df"), std::string::npos) << message;
  // Nothing leaked: the right credential still works afterwards.
  auto good = MakeTpmCredential(platform->ek_certificate(), platform->ak_name(), secret);
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(platform->ActivateCredential(good->id_object, good->encrypted_secret).ok());
}

TEST_F(TpmCredentialTest, RefusesACredentialForAnotherEk) {
  auto platform = MustCreate();
  ASSERT_NE(platform, nullptr);
  auto other_tpm = server::evidence::testing::SyntheticTpm::Create({});
  ASSERT_TRUE(other_tpm.ok()) << other_tpm.status().ToString();
  const std::vector<uint8_t> secret(32, 0x66);
  auto credential = MakeTpmCredential((*other_tpm)->ek_cert_der(), platform->ak_name(), secret);
  ASSERT_TRUE(credential.ok()) << credential.status().ToString();
  auto activated =
      platform->ActivateCredential(credential->id_object, credential->encrypted_secret);
  ASSERT_FALSE(activated.ok());
  EXPECT_EQ(activated.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(activated.status().message().find("not made for this TPM's endorsement key"),
            std::string::npos)
      << activated.status().message();
}

TEST_F(TpmCredentialTest, ActivatesUnderTheCoreSeccompFilter) {
  std::vector<uint8_t> secret(32, 0x3D);
  TpmCredential credential;
  {
    auto platform = MustCreate();
    ASSERT_NE(platform, nullptr);
    auto made = MakeTpmCredential(platform->ek_certificate(), platform->ak_name(), secret);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    credential = *made;
  }
  fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto platform = TpmPlatform::Create(options_);
    if (!platform.ok()) _exit(10);
    if (!HardenProcess().ok() || !EnterSeccomp().ok()) _exit(11);
    auto activated =
        (*platform)->ActivateCredential(credential.id_object, credential.encrypted_secret);
    if (!activated.ok()) {
      fprintf(stderr, "activate: %s\n", activated.status().ToString().c_str());
      _exit(12);
    }
    if (std::vector<uint8_t>(activated->span().begin(), activated->span().end()) != secret)
      _exit(13);
    platform->reset();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_FALSE(WIFSIGNALED(status)) << "killed by signal " << WTERMSIG(status);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed step (see stderr)";
}

}  // namespace
}  // namespace mlcapsule::tee
