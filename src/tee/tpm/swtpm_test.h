// The GoogleTest fixture the TPM tests share: a fresh swtpm (from the process-wide provisioned
// state, swtpm_harness.h) and a scratch directory per test; skipped with the reason when swtpm is
// not installed. Tests only.
//
//   class MyTest : public SwtpmTest {};
//   TEST_F(MyTest, Works) { auto platform = MustCreate(options); ... tpm_->Kill(); ... }
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "tee/tpm/swtpm_harness.h"
#include "tee/tpm/tpm_platform.h"

namespace mlcapsule::tee::testing {

class SwtpmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fixture = SwtpmFixture::Shared();
    if (fixture.status().code() == StatusCode::kNotFound)
      GTEST_SKIP() << fixture.status().message();
    ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
    fixture_ = *fixture;
    auto tpm = Swtpm::Start(*fixture_);
    ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
    tpm_ = std::move(tpm).value();
    char pattern[] = "/tmp/mlc-tpm-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code error;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
  }

  std::unique_ptr<TpmPlatform> MustCreate(const TpmOptions& options) {
    auto platform = TpmPlatform::Create(options);
    EXPECT_TRUE(platform.ok()) << platform.status().ToString();
    if (!platform.ok()) return nullptr;
    return std::move(platform).value();
  }

  const SwtpmFixture* fixture_ = nullptr;
  std::unique_ptr<Swtpm> tpm_;
  std::string dir_;
};

}  // namespace mlcapsule::tee::testing
