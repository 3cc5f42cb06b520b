// mlcapsule-tee-bench: what attestation, sealing and the rollback counter cost per TEE backend
// (bench/README.md, "TEE backends"). Each figure is the median (and p90) of --n timed calls after
// one untimed call, on this machine:
//   - software: evidence, a counter increment (pwrite + fdatasync), verification;
//   - tpm on swtpm (started and stopped here, with its own EK CA): the platform's start,
//     evidence (PCR reset, two extends, quote, EK certificate read), a counter increment (NV),
//     the server's verification, MakeCredential, and ActivateCredential;
//   - sgx, tdx, snp: the server's verification of the real vectors in ../shared/attest-vectors at
//     2025-07-01 (the first call, which verifies and caches the collateral, shown apart).
// Hardware SGX/SNP/TDX evidence generation cannot be measured without the hardware.
//
// Usage: mlcapsule-tee-bench [--n 200] [--vectors DIR] [--json]
//        mlcapsule-tee-bench --read-counter TPM_SPEC STATE_DIR CORE_BINARY
// The second form prints the NV counter of a TPM-backed core's state directory (while no core
// uses it): bench/tee_backends.sh counts the increments of a run with it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "capsule/crypto.h"
#include "server/evidence/evidence.h"
#include "server/evidence/tpm.h"
#include "tee/software/software_platform.h"
#include "tee/tpm/swtpm_harness.h"
#include "tee/tpm/tpm_platform.h"

namespace mlcapsule {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;
constexpr int64_t kVectorTime = 1751328000;  // 2025-07-01T00:00:00Z

struct Figure {
  std::string backend, what;
  double median_ms = 0, p90_ms = 0, first_ms = 0;
  int n = 0;
};

std::vector<Figure> figures;
bool json_output = false;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Times `call` once untimed (reported as first_ms) and then n times. Stops the program with the
// error if a call fails: a figure of a failing call would be meaningless.
void Time(const std::string& backend, const std::string& what, int n,
          const std::function<Status()>& call) {
  Figure figure{backend, what};
  auto start = Clock::now();
  Status status = call();
  figure.first_ms = Ms(Clock::now() - start);
  if (!status.ok()) {
    std::fprintf(stderr, "mlcapsule-tee-bench: %s %s failed: %s\n", backend.c_str(), what.c_str(),
                 status.ToString().c_str());
    std::exit(1);
  }
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    start = Clock::now();
    status = call();
    times.push_back(Ms(Clock::now() - start));
    if (!status.ok()) {
      std::fprintf(stderr, "mlcapsule-tee-bench: %s %s failed: %s\n", backend.c_str(), what.c_str(),
                   status.ToString().c_str());
      std::exit(1);
    }
  }
  std::sort(times.begin(), times.end());
  figure.n = n;
  if (n > 0) {
    figure.median_ms = times[times.size() / 2];
    figure.p90_ms = times[std::min(times.size() - 1, times.size() * 9 / 10)];
  }
  if (!json_output)
    std::fprintf(stderr, "  %-8s %-44s median %8.3f ms  p90 %8.3f ms  first %8.3f ms\n",
                 backend.c_str(), what.c_str(), figure.median_ms, figure.p90_ms, figure.first_ms);
  figures.push_back(figure);
}

std::vector<uint8_t> Bytes(const std::string& text) {
  return std::vector<uint8_t>(text.begin(), text.end());
}

Status BenchSoftware(int n, const std::string& tmp) {
  MLC_ASSIGN_OR_RETURN(auto platform, tee::SoftwarePlatform::Create(tmp + "/software"));
  capsule::ReportData rd{};
  capsule::RandomBytes(rd);
  std::vector<uint8_t> evidence;
  Time("software", "evidence", n, [&]() -> Status {
    MLC_ASSIGN_OR_RETURN(evidence, platform->Evidence(rd));
    return Status::Ok();
  });
  Time("software", "counter increment (file, fdatasync)", n,
       [&]() { return platform->IncrementCounter().status(); });
  server::evidence::Verifier verifier(server::evidence::TrustAnchors::Pinned());
  Time("software", "verify (server)", n, [&]() {
    return verifier.Verify(capsule::EvidenceType::kSoftware, evidence, nullptr, 0).status();
  });
  return Status::Ok();
}

Status BenchTpm(int n, const std::string& tmp) {
  Result<const tee::testing::SwtpmFixture*> fixture = tee::testing::SwtpmFixture::Shared();
  if (!fixture.ok()) {
    std::fprintf(stderr, "mlcapsule-tee-bench: tpm skipped: %s\n",
                 fixture.status().ToString().c_str());
    return Status::Ok();
  }
  MLC_ASSIGN_OR_RETURN(auto swtpm, tee::testing::Swtpm::Start(**fixture));
  tee::TpmOptions options;
  options.device = swtpm->spec();
  options.state_dir = tmp + "/tpm";
  capsule::Digest measurement{};
  capsule::RandomBytes(measurement);
  options.measurement = measurement;
  options.ek_chain_files = {(*fixture)->intermediate_pem()};
  std::unique_ptr<tee::TpmPlatform> platform;
  // The first start provisions (AK, sealed seed, NV counter); later starts load and unseal.
  Time("tpm", "start (first: provisioning)", 5, [&]() -> Status {
    platform.reset();
    MLC_ASSIGN_OR_RETURN(platform, tee::TpmPlatform::Create(options));
    return Status::Ok();
  });
  capsule::ReportData rd{};
  capsule::RandomBytes(rd);
  std::vector<uint8_t> evidence;
  Time("tpm", "evidence (reset, 2 extends, quote, EK cert)", n, [&]() -> Status {
    MLC_ASSIGN_OR_RETURN(evidence, platform->Evidence(rd));
    return Status::Ok();
  });
  Time("tpm", "counter increment (NV)", n, [&]() { return platform->IncrementCounter().status(); });
  Time("tpm", "counter read (NV)", n, [&]() { return platform->ReadCounter().status(); });

  server::evidence::TrustAnchors anchors = server::evidence::TrustAnchors::Pinned();
  MLC_ASSIGN_OR_RETURN(std::string root_pem, ReadFile((*fixture)->root_ca_pem(), 1 << 20));
  MLC_ASSIGN_OR_RETURN(anchors.tpm_ek_roots,
                       server::evidence::PemCertificateBlocks(root_pem, "swtpm root CA"));
  server::evidence::Verifier verifier(anchors);
  const int64_t now = std::time(nullptr);
  server::evidence::Verdict verdict;
  Time("tpm", "verify (server)", n, [&]() -> Status {
    MLC_ASSIGN_OR_RETURN(verdict,
                         verifier.Verify(capsule::EvidenceType::kTpm, evidence, nullptr, now));
    return Status::Ok();
  });
  capsule::SecretBytes secret(32);
  capsule::RandomBytes(secret.span());
  server::evidence::TpmCredential credential;
  Time("tpm", "MakeCredential (server)", n, [&]() -> Status {
    MLC_ASSIGN_OR_RETURN(credential, server::evidence::MakeTpmCredential(
                                         verdict.tpm_ek_cert_der, verdict.ak_name, secret.span()));
    return Status::Ok();
  });
  Time("tpm", "ActivateCredential (core, lease install)", n, [&]() -> Status {
    MLC_ASSIGN_OR_RETURN(
        capsule::SecretBytes got,
        platform->ActivateCredential(credential.id_object, credential.encrypted_secret));
    if (!capsule::ConstantTimeEqual(got.span(), secret.span()))
      return InternalError("ActivateCredential returned another secret");
    return Status::Ok();
  });
  platform.reset();
  return swtpm->Stop();
}

Status BenchVectors(int n, const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir / "dcap-qvl_sgx_quote.bin")) {
    std::fprintf(stderr, "mlcapsule-tee-bench: sgx/tdx/snp skipped: no vectors in %s\n",
                 dir.c_str());
    return Status::Ok();
  }
  namespace ev = server::evidence;
  ev::Verifier verifier(ev::TrustAnchors::Pinned());
  for (const char* tee : {"sgx", "tdx"}) {
    const std::string stem = std::string("dcap-qvl_") + tee;
    const std::string quote_name =
        stem + (std::string(tee) == "sgx" ? "_quote.bin" : "_quote_v4.bin");
    MLC_ASSIGN_OR_RETURN(std::string quote, ReadFile(dir / quote_name, 1 << 20));
    MLC_ASSIGN_OR_RETURN(std::string text,
                         ReadFile(dir / (stem + "_quote_collateral.json"), 4 << 20));
    MLC_ASSIGN_OR_RETURN(ev::IntelCollateral collateral, ev::ParseIntelCollateral(text));
    const std::vector<uint8_t> bytes = Bytes(quote);
    const capsule::EvidenceType type =
        std::string(tee) == "sgx" ? capsule::EvidenceType::kSgx : capsule::EvidenceType::kTdx;
    Time(tee, "verify (server; first call caches collateral)", n,
         [&]() { return verifier.Verify(type, bytes, &collateral, kVectorTime).status(); });
  }
  MLC_ASSIGN_OR_RETURN(std::string report,
                       ReadFile(dir / "go-sev-guest_snp_attestation.bin", 1 << 20));
  MLC_ASSIGN_OR_RETURN(std::string vcek, ReadFile(dir / "go-sev-guest_vcek_milan.der", 1 << 20));
  const std::vector<uint8_t> evidence = ev::EncodeSnpEvidence(Bytes(report), Bytes(vcek));
  Time("snp", "verify (server)", n, [&]() {
    return verifier.Verify(capsule::EvidenceType::kSnp, evidence, nullptr, kVectorTime).status();
  });
  return Status::Ok();
}

// The TPM counter of a core's state (opened as that core: its measurement unseals the seed).
int ReadCounter(const std::string& spec, const std::string& state, const std::string& core) {
  Result<capsule::Digest> measurement = tee::HashFile(core);
  if (!measurement.ok()) {
    std::fprintf(stderr, "mlcapsule-tee-bench: %s\n", measurement.status().ToString().c_str());
    return 1;
  }
  tee::TpmOptions options;
  options.device = spec;
  options.state_dir = state;
  options.measurement = *measurement;
  Result<std::unique_ptr<tee::TpmPlatform>> platform = tee::TpmPlatform::Create(options);
  Result<uint64_t> value = platform.ok() ? (*platform)->ReadCounter() : platform.status();
  if (!value.ok()) {
    std::fprintf(stderr, "mlcapsule-tee-bench: %s\n", value.status().ToString().c_str());
    return 1;
  }
  std::printf("%llu\n", static_cast<unsigned long long>(*value));
  return 0;
}

int Main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--read-counter") == 0) {
    if (Status s = capsule::InitCrypto(); !s.ok()) return 1;
    return ReadCounter(argv[2], argv[3], argv[4]);
  }
  int n = 200;
  std::filesystem::path vectors;
  if (const char* env = std::getenv("MLCAPSULE_ATTEST_VECTORS")) vectors = env;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--n" && i + 1 < argc) {
      n = std::atoi(argv[++i]);
    } else if (flag == "--vectors" && i + 1 < argc) {
      vectors = argv[++i];
    } else if (flag == "--json") {
      json_output = true;
    } else {
      std::fprintf(stderr,
                   "usage: mlcapsule-tee-bench [--n 200] [--vectors DIR] [--json]\n"
                   "Times evidence, sealing counters and verification per TEE backend "
                   "(bench/README.md).\n");
      return flag == "--help" ? 0 : 2;
    }
  }
  if (n < 1 || n > 100000) {
    std::fprintf(stderr, "mlcapsule-tee-bench: --n must be 1..100000\n");
    return 2;
  }
  if (Status s = capsule::InitCrypto(); !s.ok()) return 1;
  char tmp_template[] = "/tmp/mlcapsule-tee-bench-XXXXXX";
  if (mkdtemp(tmp_template) == nullptr) return 1;
  const std::string tmp = tmp_template;
  Status status = BenchSoftware(n, tmp);
  if (status.ok()) status = BenchTpm(n, tmp);
  if (status.ok() && !vectors.empty()) status = BenchVectors(n, vectors);
  std::filesystem::remove_all(tmp);
  if (!status.ok()) {
    std::fprintf(stderr, "mlcapsule-tee-bench: %s\n", status.ToString().c_str());
    return 1;
  }
  if (json_output) {
    for (const Figure& f : figures)
      std::printf("%s\n", Json{{"backend", f.backend},
                               {"what", f.what},
                               {"n", f.n},
                               {"median_ms", f.median_ms},
                               {"p90_ms", f.p90_ms},
                               {"first_ms", f.first_ms}}
                              .dump()
                              .c_str());
  } else {
    std::printf(
        "| backend | operation | median ms | p90 ms | first call ms |\n|---|---|---|---|---|\n");
    for (const Figure& f : figures)
      std::printf("| %s | %s | %.4f | %.4f | %.4f |\n", f.backend.c_str(), f.what.c_str(),
                  f.median_ms, f.p90_ms, f.first_ms);
  }
  return 0;
}

}  // namespace
}  // namespace mlcapsule

int main(int argc, char** argv) { return mlcapsule::Main(argc, argv); }
