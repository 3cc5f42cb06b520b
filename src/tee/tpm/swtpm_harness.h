// Test support for the TPM 2.0 backend (not linked into mlcapsule-core): a software TPM (swtpm)
// per test, provisioned once per process with an EK certificate from a CA of our own, and a
// fault-injecting TCTI. Needs the `swtpm` and `swtpm-tools` packages at run time; SwtpmFixture::
// Shared() answers NotFound without them, and tests skip.
//
// SwtpmFixture (once per process, ~1.5 s): runs
//   swtpm_setup --tpm2 --tpmstate DIR/state --create-ek-cert --create-platform-cert
//               --config DIR/conf/swtpm_setup.conf --write-ek-cert-files DIR/ek --logfile DIR/log
// with a swtpm_setup.conf and swtpm-localca.conf written here (statedir, signingkey, issuercert,
// certserial under DIR/ca), so the EK certificate chains to DIR/ca/swtpm-localca-rootca-cert.pem
// through DIR/ca/issuercert.pem. The provisioned TPM has an RSA-2048 EK at 0x81010001 with its
// certificate at NV 0x01C00002 (and an ECC P-384 EK). DIR is removed at process exit.
//
// Swtpm: copies the provisioned state into a fresh directory, picks a free port pair P, P+1 on
// 127.0.0.1 and posix_spawns (no --daemon: the PID is our child)
//   swtpm socket --tpm2 --tpmstate dir=X --server type=tcp,port=P,bindaddr=127.0.0.1
//                --ctrl type=tcp,port=P+1,bindaddr=127.0.0.1 --flags not-need-init,startup-clear
//                --log file=X/log,level=1
// then waits until P accepts connections (another port pair if swtpm exits first, 5 tries).
// Stop() sends SIGTERM and waits up to 2 s before SIGKILL; Kill() is SIGKILL (the TPM vanishes,
// nothing is saved beyond what swtpm already wrote); Restart() starts again on the same state.
//
//   MLC_ASSIGN_OR_RETURN(const SwtpmFixture* fixture, SwtpmFixture::Shared());
//   MLC_ASSIGN_OR_RETURN(std::unique_ptr<Swtpm> tpm, Swtpm::Start(*fixture));
//   options.device = tpm->spec();  // "tcp:127.0.0.1:P"
//
// In a GoogleTest:
//   auto fixture = SwtpmFixture::Shared();
//   if (fixture.status().code() == StatusCode::kNotFound) GTEST_SKIP() <<
//   fixture.status().message(); ASSERT_TRUE(fixture.ok()) << fixture.status().ToString();
#pragma once

#include <sys/types.h>
#include <tss2/tss2_tcti.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::tee::testing {

class SwtpmFixture {
 public:
  // The process-wide fixture, provisioned on first use. NotFound when swtpm, swtpm_setup,
  // swtpm_localca or certtool is not installed; another error when provisioning fails.
  static Result<const SwtpmFixture*> Shared();

  const std::string& dir() const { return dir_; }
  const std::string& state_dir() const { return state_dir_; }  // holds tpm2-00.permall
  const std::string& root_ca_pem() const { return root_ca_pem_; }
  const std::string& intermediate_pem() const { return intermediate_pem_; }
  const std::string& ek_cert_der_file() const { return ek_cert_der_file_; }  // ek-rsa2048.crt

  ~SwtpmFixture();

 private:
  SwtpmFixture() = default;
  static Result<std::unique_ptr<SwtpmFixture>> Provision();
  std::string dir_, state_dir_, root_ca_pem_, intermediate_pem_, ek_cert_der_file_;
};

class Swtpm {
 public:
  // A running swtpm on a copy of the fixture's state.
  static Result<std::unique_ptr<Swtpm>> Start(const SwtpmFixture& fixture);
  ~Swtpm();  // stops it (by PID) and removes its directory
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;

  // SIGTERM, up to 2 s, then SIGKILL. OK when it is not running.
  Status Stop();
  // SIGKILL and reap.
  void Kill();
  // Starts again on the same state directory (after Stop or Kill); the port may change.
  Status Restart();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string spec() const;  // "tcp:127.0.0.1:P"
  const std::string& state_dir() const { return state_dir_; }

 private:
  Swtpm() = default;
  Status Launch();
  std::string dir_, state_dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// A TCTI between ESYS and another TCTI that injects faults into chosen commands (by command
// code, 0 = any): the fault-injecting platform of STYLE.md for the TPM backend.
class FaultInjectingTcti {
 public:
  enum class Fault {
    kDropResponse,  // forward the command, read the TPM's response, answer TSS2_TCTI_RC_IO_ERROR
    kRetry,         // do not forward; answer TPM_RC_RETRY
    kNvRate,        // do not forward; answer TPM_RC_NV_RATE
  };
  explicit FaultInjectingTcti(TSS2_TCTI_CONTEXT* inner);
  ~FaultInjectingTcti();
  FaultInjectingTcti(const FaultInjectingTcti&) = delete;
  FaultInjectingTcti& operator=(const FaultInjectingTcti&) = delete;

  TSS2_TCTI_CONTEXT* context();
  // The next `count` commands with `command_code` get `fault`.
  void Inject(uint32_t command_code, Fault fault, int count = 1);
  // How many faults were injected so far.
  int injected() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace mlcapsule::tee::testing
