// Capsule commands. Provider side: `keygen`, `pack`, `inspect`, `verify`, `lease issue`. Client
// side: `lease request`, `lease install`, `lease status`, `usage`, `run`. The client commands
// drive the trusted core through host::Client (the software TEE process by default).
#include <sys/stat.h>

#include <cstdio>
#include <ctime>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/file_util.h"
#include "base/log.h"
#include "base/sensitive_memory.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/licensing.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "cli/cli_common.h"
#include "host/client.h"
#include "host/license_client.h"

namespace mlcapsule::cli {
namespace {

using nlohmann::json;

json IoJson(const std::vector<capsule::IoTensor>& io) {
  json list = json::array();
  for (const capsule::IoTensor& t : io) {
    json dims = json::array();
    for (const capsule::IoDim& d : t.dims)
      dims.push_back(d.batch ? (d.value == 1 ? std::string("N") : std::to_string(d.value) + "N")
                             : std::to_string(d.value));
    list.push_back({{"name", t.name},
                    {"dtype", engine::DTypeName(static_cast<engine::DType>(t.dtype))},
                    {"shape", dims}});
  }
  return list;
}

Result<std::string> ReadCapsuleFile(const std::string& path) {
  return ReadFile(path, capsule::kMaxCapsuleFileBytes);
}

void Fail(const Status& status) { SetExitCode(ReportError(status)); }

// ---- keygen ----------------------------------------------------------------------------------

void RunKeygen(const std::string& out, const std::string& name, bool escrow, bool as_json) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return Fail(s);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return Fail(IoError("cannot create {}: {}", out, ec.message()));
  if (escrow) {
    // The watermark escrow key: cores seal watermarked inputs to its public half, which the
    // policy names; only the provider can open them (`watermark verify`).
    capsule::BoxKeyPair pair = capsule::GenerateBoxKeyPair();
    if (Status s = capsule::WriteEscrowKeyPair(out, name, pair); !s.ok()) return Fail(s);
    if (as_json) {
      json j = {{"kind", "escrow"},
                {"algorithm", "x25519"},
                {"secret_key_file", out + "/" + name + ".key"},
                {"public_key_file", out + "/" + name + ".pub"},
                {"public_key", capsule::ToHex(pair.public_key)}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf(
        "wrote %s/%s.key (X25519 escrow secret, mode 0600) and %s/%s.pub\nescrow public key: "
        "%s\nput it in the policy as defenses.watermark.escrow_key\n",
        out.c_str(), name.c_str(), out.c_str(), name.c_str(),
        capsule::ToHex(pair.public_key).c_str());
    return;
  }
  capsule::SigningKeyPair pair = capsule::GenerateSigningKeyPair();
  if (Status s = capsule::WriteKeyPair(out, name, pair); !s.ok()) return Fail(s);
  if (as_json) {
    json j = {{"kind", "signing"},
              {"algorithm", "ed25519"},
              {"secret_key_file", out + "/" + name + ".key"},
              {"public_key_file", out + "/" + name + ".pub"},
              {"public_key", capsule::ToHex(pair.public_key)}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("wrote %s/%s.key (secret, mode 0600) and %s/%s.pub\npublic key: %s\n", out.c_str(),
              name.c_str(), out.c_str(), name.c_str(), capsule::ToHex(pair.public_key).c_str());
}

// ---- pack ------------------------------------------------------------------------------------

struct PackOptions {
  std::string model, key, policy, out, name, memguard_classifier;
  std::vector<std::string> lease_signers;
  std::vector<std::string> input_shapes;
  uint32_t chunk_kib = capsule::kDefaultChunkBytes / 1024;
  bool json = false;
};

void RunPack(const PackOptions& o) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return Fail(s);
  auto provider = capsule::ReadSecretKeyFile(o.key);
  if (!provider.ok()) return Fail(provider.status());
  auto policy_text = ReadFile(o.policy, capsule::kMaxPolicyBytes);
  if (!policy_text.ok()) return Fail(policy_text.status());
  auto policy = capsule::ParsePolicy(*policy_text);
  if (!policy.ok()) return Fail(policy.status().WithContext(o.policy));
  compiler::CompileOptions options;
  for (const std::string& spec : o.input_shapes) {
    size_t eq = spec.find('=');
    auto dims = ParseDims(eq == std::string::npos ? spec : spec.substr(eq + 1));
    if (!dims.ok()) return Fail(dims.status());
    options.input_shapes[eq == std::string::npos ? "" : spec.substr(0, eq)] = *dims;
  }
  auto plan = LoadModel(o.model, options);
  if (!plan.ok()) return Fail(plan.status());
  capsule::PackInput input;
  input.model_name = o.name.empty() ? std::filesystem::path(o.model).stem().string() : o.name;
  if (input.model_name == "model")
    input.model_name = std::filesystem::path(o.model).parent_path().filename().string();
  input.policy_json = capsule::PolicyToJson(*policy);
  input.inputs = capsule::PlanIo(*plan, plan->inputs);
  input.outputs = capsule::PlanIo(*plan, plan->outputs);
  input.chunk_bytes = o.chunk_kib * 1024;
  for (const std::string& path : o.lease_signers) {
    auto key = capsule::ReadPublicKeyFile(path);
    if (!key.ok()) return Fail(key.status());
    input.lease_signers.push_back(*key);
  }
  const capsule::DefensePolicy& defenses = policy->defenses;
  if (defenses.prada.enabled && !input.inputs.empty()) {
    uint64_t elements = 1;
    for (size_t i = 1; i < input.inputs[0].dims.size(); ++i)
      elements *= static_cast<uint64_t>(input.inputs[0].dims[i].value);
    if (defenses.prada.max_stored * elements * 4 > capsule::PradaMaxStoredBytesLimit())
      return Fail(InvalidArgument(
          "{}: defenses.prada.max_stored {} x {} input elements x 4 bytes is over PRADA's "
          "memory limit of {} bytes; lower max_stored",
          o.policy, defenses.prada.max_stored, elements, capsule::PradaMaxStoredBytesLimit()));
  }
  if (defenses.memguard.enabled && o.memguard_classifier.empty())
    return Fail(InvalidArgument(
        "{}: defenses.memguard is enabled: give the defender's membership classifier with "
        "--memguard-classifier MODEL.onnx (`mlcapsule lab` trains one)",
        o.policy));
  if (!defenses.memguard.enabled && !o.memguard_classifier.empty())
    return Fail(InvalidArgument(
        "--memguard-classifier given but {} does not enable defenses.memguard", o.policy));
  std::string membership_bytes;
  if (!o.memguard_classifier.empty()) {
    auto membership = LoadModel(o.memguard_classifier, compiler::CompileOptions{});
    if (!membership.ok()) return Fail(membership.status().WithContext(o.memguard_classifier));
    membership_bytes = engine::SerializePlan(*membership);
    input.membership_plan = AsBytes(membership_bytes);
  }
  std::string plan_bytes = engine::SerializePlan(*plan);
  input.plan = AsBytes(plan_bytes);
  auto packed = capsule::PackCapsule(input, *provider);
  WipeMemory(plan_bytes.data(), plan_bytes.size());
  WipeMemory(membership_bytes.data(), membership_bytes.size());
  if (!packed.ok()) return Fail(packed.status());
  const std::string key_path = o.out + ".key";
  if (Status s = capsule::WriteCapsuleKeyFile(key_path, packed->capsule_id, packed->capsule_key);
      !s.ok())
    return Fail(s);
  Status s = WriteFile(o.out, std::string_view(reinterpret_cast<const char*>(packed->bytes.data()),
                                               packed->bytes.size()));
  if (!s.ok()) return Fail(s);
  if (o.json) {
    json j = {{"model", o.model},
              {"model_name", input.model_name},
              {"capsule_file", o.out},
              {"capsule_bytes", packed->bytes.size()},
              {"capsule_id", capsule::CapsuleIdHex(packed->capsule_id)},
              {"capsule_key_file", key_path},
              {"output_mode", capsule::OutputModeName(policy->output.mode)},
              {"plan_bytes", plan_bytes.size()},
              {"chunk_bytes", input.chunk_bytes}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf(
      "packed %s -> %s (%zu bytes, capsule %s, output mode %s)\ncapsule key -> %s (provider "
      "secret: keep it with the provider key; the license server needs it)\n",
      o.model.c_str(), o.out.c_str(), packed->bytes.size(),
      capsule::CapsuleIdHex(packed->capsule_id).c_str(),
      capsule::OutputModeName(policy->output.mode), key_path.c_str());
}

// ---- inspect / verify ------------------------------------------------------------------------

void RunInspect(const std::string& path) {
  auto bytes = ReadCapsuleFile(path);
  if (!bytes.ok()) return Fail(bytes.status());
  auto view = capsule::ParseCapsule(AsBytes(*bytes));
  if (!view.ok()) return Fail(view.status().WithContext(path));
  const capsule::CapsuleHeader& h = view->header;
  bool signature_ok = capsule::ParseAndVerifyCapsule(AsBytes(*bytes)).ok();
  json signers = json::array();
  for (const capsule::PublicKey& k : h.lease_signers) signers.push_back(capsule::ToHex(k));
  json policy = json::parse(h.policy_json, nullptr, false);
  json j = {
      {"file", path},
      {"format_version", capsule::kCapsuleVersion},
      {"capsule_id", capsule::CapsuleIdHex(h.capsule_id)},
      {"model_name", h.model_name},
      {"created_at", h.created_at},
      {"provider_key", capsule::ToHex(h.provider_key)},
      {"lease_signers", signers},
      {"signature_valid", signature_ok},
      {"inputs", IoJson(h.inputs)},
      {"outputs", IoJson(h.outputs)},
      {"plan_digest", capsule::ToHex(h.plan_digest)},
      {"plan_bytes", h.plan_bytes},
      {"chunk_bytes", h.chunk_bytes},
      {"chunk_count", h.chunk_count},
      {"cipher", "xchacha20poly1305-secretstream (libsodium), Ed25519 signature"},
      {"policy", policy},
  };
  // What the capsule lets leave the client's machine, in words (DESIGN.md: usage reports are
  // inspectable; the policy decides the rest).
  json leaves = json::array({"query counts and the usage-chain head",
                             "defense alerts (PRADA alarms, rate-limit refusals, state resets)"});
  if (auto parsed = capsule::ParsePolicy(h.policy_json); parsed.ok()) {
    const capsule::DefensePolicy& d = parsed->defenses;
    if (d.prada.enabled || d.watermark.enabled || d.memguard.enabled)
      leaves.push_back(
          "defense counters (queries seen and stored by PRADA, watermarked, escrowed)");
    if (d.watermark.enabled)
      leaves.push_back(
          d.watermark.escrow == capsule::EscrowMode::kAlways
              ? fmt::format("ALWAYS: every watermarked input ({}% of queries), encrypted to the "
                            "provider's escrow key",
                            d.watermark.rate * 100)
              : fmt::format("only after a PRADA alarm: watermarked inputs ({}% of queries), "
                            "encrypted to the provider's escrow key",
                            d.watermark.rate * 100));
  }
  j["data_leaving_client"] = leaves;
  std::printf("%s\n", j.dump(2).c_str());
}

void RunVerify(const std::string& path, bool as_json) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return Fail(s);
  auto bytes = ReadCapsuleFile(path);
  if (!bytes.ok()) return Fail(bytes.status());
  auto view = capsule::ParseAndVerifyCapsule(AsBytes(*bytes));
  if (!view.ok()) {
    int code =
        ReportError(view.status().WithContext(path)) == kExitUsage ? kExitUsage : kExitFailure;
    if (as_json && code == kExitFailure)
      std::printf("%s\n",
                  json({{"file", path}, {"intact", false}, {"reason", view.status().message()}})
                      .dump()
                      .c_str());
    return SetExitCode(code);
  }
  if (as_json) {
    json j = {{"file", path},
              {"intact", true},
              {"capsule_id", capsule::CapsuleIdHex(view->header.capsule_id)},
              {"model_name", view->header.model_name},
              {"provider_key", capsule::ToHex(view->header.provider_key)}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%s: intact; capsule %s signed by provider key %s\n", path.c_str(),
              capsule::CapsuleIdHex(view->header.capsule_id).c_str(),
              capsule::ToHex(view->header.provider_key).c_str());
}

// ---- client side: open a capsule in the software TEE -----------------------------------------

struct ClientArgs {
  std::string capsule;
  std::string state;
  int threads = 1;
  std::string core_binary;
  TeeArgs tee;
};

void AddClientOptions(CLI::App* cmd, ClientArgs* a) {
  cmd->add_option("CAPSULE", a->capsule, "Capsule file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--state", a->state,
                  "State directory of this capsule on this machine (sealed core state, TEE files); "
                  "default: CAPSULE.state");
  cmd->add_option("--threads", a->threads, "Inference threads inside the core")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--core", a->core_binary,
                  "Path of the mlcapsule-core binary (default: beside this executable)");
  AddTeeOptions(cmd, &a->tee);
}

Result<std::unique_ptr<host::Client>> OpenClient(const ClientArgs& a) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  host::ClientOptions options;
  options.state_dir = a.state.empty() ? a.capsule + ".state" : a.state;
  options.threads = a.threads;
  options.core_binary = a.core_binary;
  MLC_ASSIGN_OR_RETURN(options.platform_args, CorePlatformArgs(a.tee));
  options.launcher = CoreLauncher(a.tee);
  return host::Client::Open(a.capsule, options);
}

json InfoJson(const host::CoreInfo& info) {
  return {{"state", info.state == host::CoreStateKind::kReady ? "ready" : "needs-lease"},
          {"capsule_id", capsule::CapsuleIdHex(info.capsule_id)},
          {"license_id", info.license_id},
          {"queries_used", info.queries_used},
          {"query_quota", info.query_quota},
          {"expires_at", info.expires_at},
          {"total_queries", info.total_queries},
          {"inputs", IoJson(info.inputs)},
          {"outputs", IoJson(info.outputs)}};
}

Status InstallLeaseFile(host::Client& client, const std::string& path) {
  MLC_ASSIGN_OR_RETURN(std::string lease, ReadFile(path, capsule::kMaxLeaseBytes));
  return client.InstallLease(AsBytes(lease));
}

// ---- lease request / issue / install / status ------------------------------------------------

struct LeaseRequestOptions {
  ClientArgs client;
  std::string out, nonce_hex;
  bool no_report = false;
  bool json = false;
};

void RunLeaseRequest(const LeaseRequestOptions& o) {
  auto client = OpenClient(o.client);
  if (!client.ok()) return Fail(client.status());
  capsule::Nonce nonce{};
  if (o.nonce_hex.empty()) {
    capsule::RandomBytes(nonce);
  } else if (Status s = capsule::FromHex(o.nonce_hex, nonce, "--nonce"); !s.ok()) {
    return Fail(s);
  }
  bool attach = !o.no_report && (*client)->info().state == host::CoreStateKind::kReady;
  auto request = (*client)->MakeEvidenceRequest(nonce, attach);
  if (!request.ok()) return Fail(request.status());
  Status s = WriteFile(
      o.out, std::string_view(reinterpret_cast<const char*>(request->data()), request->size()));
  if (!s.ok()) return Fail(s);
  const std::string backend = (*client)->DescribeBackend();
  if (Status c = (*client)->Close(); !c.ok()) return Fail(c);
  if (o.json) {
    json j = {{"request_file", o.out},
              {"request_bytes", request->size()},
              {"backend", backend},
              {"usage_report_attached", attach}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("wrote evidence request %s (%zu bytes, %s%s): send it to the provider\n",
              o.out.c_str(), request->size(), backend.c_str(),
              attach ? ", with the latest usage report" : "");
}

struct LeaseIssueOptions {
  std::string key, capsule, capsule_key, request, out, license_id;
  uint64_t queries = 0;
  double days = 0;
};

void RunLeaseIssue(const LeaseIssueOptions& o) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return Fail(s);
  auto signer = capsule::ReadSecretKeyFile(o.key);
  if (!signer.ok()) return Fail(signer.status());
  auto bytes = ReadCapsuleFile(o.capsule);
  if (!bytes.ok()) return Fail(bytes.status());
  auto view = capsule::ParseAndVerifyCapsule(AsBytes(*bytes));
  if (!view.ok()) return Fail(view.status().WithContext(o.capsule));
  auto policy = capsule::ParsePolicy(view->header.policy_json);
  if (!policy.ok()) return Fail(policy.status());
  auto capsule_key = capsule::ReadCapsuleKeyFile(
      o.capsule_key.empty() ? o.capsule + ".key" : o.capsule_key, view->header.capsule_id);
  if (!capsule_key.ok()) return Fail(capsule_key.status());
  auto request = ReadFile(o.request, capsule::kMaxEvidenceRequestBytes);
  if (!request.ok()) return Fail(request.status());
  capsule::LeaseTerms terms;
  terms.license_id = o.license_id;
  terms.query_quota = o.queries;
  terms.valid_seconds = static_cast<int64_t>(o.days * 86400.0);
  terms.now = static_cast<int64_t>(std::time(nullptr));
  // Offline issuing keeps no ledger: the issue time orders leases of one chain point.
  terms.sequence = static_cast<uint64_t>(terms.now);
  auto checked = capsule::CheckEvidenceRequest(AsBytes(*request), view->header, *policy, terms);
  if (!checked.ok()) return Fail(checked.status().WithContext(o.request));
  auto lease =
      capsule::IssueLeaseForRequest(*checked, view->header, *policy, *capsule_key, *signer, terms);
  if (!lease.ok()) return Fail(lease.status());
  Status s = WriteFile(
      o.out, std::string_view(reinterpret_cast<const char*>(lease->data()), lease->size()));
  if (!s.ok()) return Fail(s);
  json j = {{"lease", o.out},
            {"license_id", o.license_id},
            {"query_quota", o.queries},
            {"valid_days", o.days},
            {"evidence", checked->evidence_summary},
            {"core_key", capsule::ToHex(checked->request.core_signing_key)}};
  if (checked->report) {
    const capsule::UsageReport& r = *checked->report;
    j["usage_report"] = {{"license_id", r.license_id},
                         {"from_count", r.from_count},
                         {"to_count", r.to_count},
                         {"queries_billed", r.to_count - r.from_count},
                         {"alerts", r.alerts.size()}};
  }
  std::printf("%s\n", j.dump().c_str());
}

struct LeaseInstallOptions {
  ClientArgs client;
  std::string lease;
};

void RunLeaseInstall(const LeaseInstallOptions& o) {
  auto client = OpenClient(o.client);
  if (!client.ok()) return Fail(client.status());
  if (Status s = InstallLeaseFile(**client, o.lease); !s.ok()) return Fail(s);
  json j = InfoJson((*client)->info());
  if (Status c = (*client)->Close(); !c.ok()) return Fail(c);
  std::printf("%s\n", j.dump().c_str());
}

void RunLeaseStatus(const ClientArgs& a) {
  auto client = OpenClient(a);
  if (!client.ok()) return Fail(client.status());
  json j = InfoJson((*client)->info());
  j["backend"] = (*client)->DescribeBackend();
  if (Status c = (*client)->Close(); !c.ok()) return Fail(c);
  std::printf("%s\n", j.dump(2).c_str());
}

// ---- usage -----------------------------------------------------------------------------------

struct UsageOptions {
  ClientArgs client;
  std::string out;
};

void RunUsage(const UsageOptions& o) {
  auto client = OpenClient(o.client);
  if (!client.ok()) return Fail(client.status());
  auto report = (*client)->UsageReport();
  if (!report.ok()) return Fail(report.status());
  if (Status c = (*client)->Close(); !c.ok()) return Fail(c);
  auto parsed = capsule::ParseUsageReport(*report);
  if (!parsed.ok()) return Fail(parsed.status());
  Status s = WriteFile(
      o.out, std::string_view(reinterpret_cast<const char*>(report->data()), report->size()));
  if (!s.ok()) return Fail(s);
  json alerts = json::array();
  for (const capsule::Alert& a : parsed->alerts)
    alerts.push_back({{"kind", a.kind}, {"at_count", a.at_count}, {"detail", a.detail}});
  json j = {{"report", o.out},
            {"license_id", parsed->license_id},
            {"report_sequence", parsed->report_sequence},
            {"from_count", parsed->from_count},
            {"to_count", parsed->to_count},
            {"queries_since_lease", parsed->to_count - parsed->from_count},
            {"to_head", capsule::ToHex(parsed->to_head)},
            {"alerts", alerts}};
  const capsule::DefenseSummary& d = parsed->defenses;
  j["defenses"] = {{"prada_observed", d.prada_observed},
                   {"prada_stored", d.prada_stored},
                   {"prada_last_w", d.prada_last_w < 0 ? json(nullptr) : json(d.prada_last_w)},
                   {"prada_alarmed", d.prada_alarmed != 0},
                   {"watermarked", d.watermarked},
                   {"escrowed", d.escrowed},
                   {"escrow_dropped", d.escrow_dropped},
                   {"memguard_applied", d.memguard_applied},
                   {"rate_limited", d.rate_limited}};
  j["escrow_records"] = parsed->escrow.size();
  std::printf("%s\n", j.dump().c_str());
}

// ---- run -------------------------------------------------------------------------------------

struct RunOptions {
  ClientArgs client;
  std::string lease;
  std::vector<std::string> inputs, outputs;
  std::string server, license, license_file, ca_cert;
  bool json = false;
};

Result<std::string> LicenseToken(const RunOptions& o) {
  if (!o.license.empty()) return o.license;
  if (!o.license_file.empty()) {
    MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(o.license_file, 1024));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return text;
  }
  if (const char* env = std::getenv("MLCAPSULE_LICENSE_TOKEN"); env != nullptr && *env != '\0')
    return std::string(env);
  return InvalidArgument(
      "--server needs a license token: --license TOKEN, --license-file FILE or "
      "$MLCAPSULE_LICENSE_TOKEN");
}

// Online: report usage and renew the lease when needed. Offline: say so and go on with the lease
// the core has.
// `record`, when given, gets what happened as JSON (for `run --json`).
Status SyncWithServer(host::Client& client, const RunOptions& o, bool after_run,
                      json* record = nullptr) {
  MLC_ASSIGN_OR_RETURN(std::string token, LicenseToken(o));
  MLC_ASSIGN_OR_RETURN(auto server, host::ServerConnection::Open(o.server, {.ca_cert = o.ca_cert}));
  host::SyncOptions options;
  if (after_run) options.renew_fraction = 2.0, options.renew_before_seconds = -1;  // report only
  Result<host::SyncResult> synced = host::SyncLicense(client, *server, token, options);
  if (!synced.ok()) {
    // A refused renewal does not take away what the current lease still allows.
    const host::CoreInfo& info = client.info();
    if (info.state != host::CoreStateKind::kReady || info.queries_used >= info.query_quota)
      return synced.status();
    if (record != nullptr)
      *record = {{"online", true},
                 {"refused", synced.status().message()},
                 {"used", info.queries_used},
                 {"quota", info.query_quota}};
    log::Warn("run", "license.sync",
              fmt::format("{}; going on with the current lease ({} of {} used)",
                          synced.status().message(), info.queries_used, info.query_quota),
              {{"online", true},
               {"refused", synced.status().message()},
               {"used", info.queries_used},
               {"quota", info.query_quota}});
    return Status::Ok();
  }
  const host::SyncResult& sync = *synced;
  if (record != nullptr) {
    *record = {{"online", sync.online}};
    if (!sync.online) {
      (*record)["reason"] = sync.offline_reason;
    } else {
      (*record)["reported"] = sync.reported;
      if (sync.reported) {
        (*record)["outcome"] = sync.report_outcome;
        (*record)["billed"] = sync.billed_queries;
      }
      (*record)["renewed"] = sync.renewed;
    }
  }
  if (!sync.online) {
    log::Warn("run", "license.sync",
              fmt::format("license server offline ({}): working offline within the lease",
                          sync.offline_reason),
              {{"online", false}, {"reason", sync.offline_reason}});
    return Status::Ok();
  }
  if (sync.reported)
    log::Info(
        "run", "license.sync",
        fmt::format("usage synced: {}, {} queries billed", sync.report_outcome,
                    sync.billed_queries),
        {{"online", true}, {"outcome", sync.report_outcome}, {"billed", sync.billed_queries}});
  // The attest answer without the lease bytes: ids, sequence, quota, expiry, evidence summary.
  if (sync.renewed)
    log::Info("run", "license.sync", "new lease", {{"online", true}, {"lease", sync.lease}});
  return Status::Ok();
}

void RunRun(const RunOptions& o) {
  auto client = OpenClient(o.client);
  if (!client.ok()) return Fail(client.status());
  host::Client& c = **client;
  if (!o.lease.empty()) {
    if (Status s = InstallLeaseFile(c, o.lease); !s.ok()) return Fail(s);
  }
  json sync_before, sync_after;
  if (!o.server.empty()) {
    if (Status s = SyncWithServer(c, o, /*after_run=*/false, &sync_before); !s.ok()) return Fail(s);
  }
  if (c.info().state != host::CoreStateKind::kReady)
    return Fail(FailedPrecondition(
        "{} has no lease in {}: run `mlcapsule lease request`, have the provider answer it, then "
        "pass --lease",
        o.client.capsule, o.client.state.empty() ? o.client.capsule + ".state" : o.client.state));
  std::vector<engine::Tensor> inputs;
  for (const std::string& path : o.inputs) {
    auto t = ReadTensorFile(path);
    if (!t.ok()) return Fail(t.status());
    inputs.push_back(std::move(t).value());
  }
  const auto& outputs_io = c.info().outputs;
  if (!o.outputs.empty() && o.outputs.size() != outputs_io.size())
    return Fail(InvalidArgument("the capsule returns {} outputs, {} given with --output",
                                outputs_io.size(), o.outputs.size()));
  std::vector<engine::TensorView> views;
  for (engine::Tensor& t : inputs) views.push_back(t.View());
  std::vector<engine::Tensor> outputs;
  if (Status s = c.Infer(views, &outputs); !s.ok()) return Fail(s);
  json outputs_json = json::array();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const engine::Tensor& t = outputs[i];
    const std::string name = i < outputs_io.size() ? outputs_io[i].name : "output";
    if (o.json) {
      json entry = {{"name", name}, {"dtype", engine::DTypeName(t.dtype)}, {"shape", t.dims}};
      if (!o.outputs.empty()) {
        if (Status w = WriteTensorFile(o.outputs[i], t, name); !w.ok()) return Fail(w);
        entry["file"] = o.outputs[i];
      } else {
        json values = json::array();
        for (int64_t k = 0; k < t.NumElements(); ++k) {
          if (t.dtype == engine::DType::kFloat32)
            values.push_back(t.Data<float>()[k]);
          else
            values.push_back(t.Data<int64_t>()[k]);
        }
        entry["values"] = std::move(values);
      }
      outputs_json.push_back(std::move(entry));
      continue;
    }
    if (!o.outputs.empty()) {
      if (Status w = WriteTensorFile(o.outputs[i], t, name); !w.ok()) return Fail(w);
      std::printf("%s: %s%s -> %s\n", name.c_str(), engine::DTypeName(t.dtype),
                  engine::DimsToString(t.dims).c_str(), o.outputs[i].c_str());
      continue;
    }
    PrintTensorPreview(name, t);
  }
  const host::CoreInfo& info = c.info();
  log::Info(
      "run", "run.queries",
      fmt::format("queries: {} of {} used under license {}", info.queries_used, info.query_quota,
                  info.license_id),
      {{"license", info.license_id}, {"used", info.queries_used}, {"quota", info.query_quota}});
  if (!o.server.empty()) {
    if (Status s = SyncWithServer(c, o, /*after_run=*/true, &sync_after); !s.ok()) return Fail(s);
  }
  json lease = {{"license_id", c.info().license_id},
                {"queries_used", c.info().queries_used},
                {"query_quota", c.info().query_quota},
                {"expires_at", c.info().expires_at}};
  if (Status s = c.Close(); !s.ok()) return Fail(s);
  if (o.json) {
    json j = {{"capsule", o.client.capsule}, {"outputs", outputs_json}, {"lease", lease}};
    if (!o.server.empty()) j["sync"] = {{"before", sync_before}, {"after", sync_after}};
    std::printf("%s\n", j.dump().c_str());
  }
}

// ---- lease sync --------------------------------------------------------------------------------

struct SyncCommandOptions {
  RunOptions run;  // client, server, token and CA options as for `run --server`
  bool renew = false;
};

// Online licensing without a query: report usage (when the core has a lease) and get or renew the
// lease. Unlike `run --server`, an unreachable server is a failure here: syncing is the job.
void RunLeaseSync(const SyncCommandOptions& o) {
  auto client = OpenClient(o.run.client);
  if (!client.ok()) return Fail(client.status());
  auto token = LicenseToken(o.run);
  if (!token.ok()) return Fail(token.status());
  auto server = host::ServerConnection::Open(o.run.server, {.ca_cert = o.run.ca_cert});
  if (!server.ok()) return Fail(server.status());
  host::SyncOptions options;
  options.force_renew = o.renew;
  auto synced = host::SyncLicense(**client, **server, *token, options);
  if (!synced.ok()) return Fail(synced.status());
  const host::SyncResult& sync = *synced;
  if (!sync.online)
    return Fail(
        Unavailable("license server {} unreachable: {}", o.run.server, sync.offline_reason));
  const host::CoreInfo& info = (*client)->info();
  json j = {{"online", true}, {"reported", sync.reported}, {"renewed", sync.renewed}};
  if (sync.reported) {
    j["outcome"] = sync.report_outcome;
    j["billed"] = sync.billed_queries;
  }
  if (sync.renewed) j["lease"] = sync.lease;
  j["state"] = InfoJson(info);
  log::Info("lease", "license.sync",
            fmt::format("synced: {}{}; lease {} of {} queries used", sync.reported ? "usage " : "",
                        sync.reported ? sync.report_outcome : "no usage to report",
                        info.queries_used, info.query_quota),
            {{"reported", sync.reported}, {"renewed", sync.renewed}});
  if (Status s = (*client)->Close(); !s.ok()) return Fail(s);
  if (o.run.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%s%s; lease: %s, %llu of %llu queries used\n",
              sync.reported ? fmt::format("usage report {} ({} queries billed)",
                                          sync.report_outcome, sync.billed_queries)
                                  .c_str()
                            : "no usage to report",
              sync.renewed ? ", new lease installed" : "", info.license_id.c_str(),
              static_cast<unsigned long long>(info.queries_used),
              static_cast<unsigned long long>(info.query_quota));
}

}  // namespace

void AddCapsuleCommands(CLI::App& app) {
  static std::string keygen_out = ".", keygen_name;
  static bool keygen_escrow = false, keygen_json = false;
  CLI::App* keygen = app.add_subcommand(
      "keygen",
      "Provider: make an Ed25519 signing key pair (NAME.key mode 0600, NAME.pub), or with "
      "--escrow an X25519 watermark escrow key pair");
  keygen->add_option("--out", keygen_out, "Directory to write the key files to")->required();
  keygen->add_option("--name", keygen_name,
                     "File stem of the key files (default: provider, or escrow with --escrow)");
  keygen->add_flag("--escrow", keygen_escrow,
                   "Make the watermark escrow key pair (X25519) whose public key goes into the "
                   "policy's defenses.watermark.escrow_key");
  keygen->add_flag("--json", keygen_json,
                   "Print one JSON object (key files, public key) instead of text");
  keygen->callback([] {
    RunKeygen(keygen_out,
              keygen_name.empty() ? (keygen_escrow ? "escrow" : "provider") : keygen_name,
              keygen_escrow, keygen_json);
  });

  static PackOptions pack;
  CLI::App* pack_cmd = app.add_subcommand(
      "pack",
      "Provider: compile an ONNX model (or a .plan), encrypt it under a fresh capsule key and "
      "sign it with a policy");
  pack_cmd->add_option("MODEL", pack.model, "ONNX model or plan")
      ->required()
      ->check(CLI::ExistingFile);
  pack_cmd->add_option("--key", pack.key, "Provider secret key file (from keygen)")
      ->required()
      ->check(CLI::ExistingFile);
  pack_cmd->add_option("--policy", pack.policy, "Policy JSON (docs/policy.md)")
      ->required()
      ->check(CLI::ExistingFile);
  pack_cmd->add_option("--out", pack.out, "Capsule file to write (the capsule key goes to OUT.key)")
      ->required();
  pack_cmd->add_option("--lease-signer", pack.lease_signers,
                       "Public key file of a license server allowed to sign leases (repeatable; "
                       "default: the provider key)");
  pack_cmd->add_option("--input-shape", pack.input_shapes, "Input shape override, as for compile");
  pack_cmd->add_option("--name", pack.name, "Model name in the header (default: file name)");
  pack_cmd
      ->add_option("--memguard-classifier", pack.memguard_classifier,
                   "ONNX model of the defender's membership classifier (float32 [N, C] "
                   "confidences in, member probability out), for policies that enable "
                   "defenses.memguard; it is encrypted with the model")
      ->check(CLI::ExistingFile);
  pack_cmd->add_option("--chunk-kib", pack.chunk_kib, "Encryption chunk size in KiB")
      ->check(CLI::Range(4u, 16u * 1024u));
  pack_cmd->add_flag("--json", pack.json,
                     "Print one JSON object (capsule id, sizes, files written) instead of text");
  pack_cmd->callback([] { RunPack(pack); });

  static std::string inspect_path;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "Print a capsule's header and policy as JSON (never its weights)");
  inspect->add_option("CAPSULE", inspect_path, "Capsule file")
      ->required()
      ->check(CLI::ExistingFile);
  inspect->callback([] { RunInspect(inspect_path); });

  static std::string verify_path;
  static bool verify_json = false;
  CLI::App* verify = app.add_subcommand(
      "verify",
      "Check a capsule's provider signature over header and ciphertext (no key needed; "
      "exit 0 only if intact)");
  verify->add_option("CAPSULE", verify_path, "Capsule file")->required()->check(CLI::ExistingFile);
  verify->add_flag("--json", verify_json,
                   "Print one JSON object (intact, capsule id, signer) instead of text");
  verify->callback([] { RunVerify(verify_path, verify_json); });

  CLI::App* lease = app.add_subcommand("lease", "Licensing without a server (air-gapped clients)");
  lease->require_subcommand(1);
  static LeaseRequestOptions request;
  CLI::App* req = lease->add_subcommand(
      "request", "Client: export an evidence request (core keys bound to TEE evidence) to a file");
  AddClientOptions(req, &request.client);
  req->add_option("--out", request.out, "Request file to write")->required();
  req->add_option("--nonce", request.nonce_hex, "32-byte nonce in hex (default: random)");
  req->add_flag("--no-report", request.no_report,
                "Do not attach the latest usage report (it is attached when a lease is installed)");
  req->add_flag("--json", request.json,
                "Print one JSON object (request file, size, backend) instead of text");
  req->callback([] { RunLeaseRequest(request); });

  static LeaseIssueOptions issue;
  CLI::App* iss = lease->add_subcommand(
      "issue", "Provider: answer an evidence request with a lease file signed by a pinned key");
  iss->add_option("--key", issue.key, "Lease signing secret key (the provider key by default)")
      ->required()
      ->check(CLI::ExistingFile);
  iss->add_option("--capsule", issue.capsule, "The capsule")->required()->check(CLI::ExistingFile);
  iss->add_option("--capsule-key", issue.capsule_key, "Capsule key file (default: CAPSULE.key)");
  iss->add_option("--request", issue.request, "Evidence request file from the client")
      ->required()
      ->check(CLI::ExistingFile);
  iss->add_option("--license-id", issue.license_id, "License identifier")->required();
  iss->add_option("--queries", issue.queries, "Query quota of the lease")->required();
  iss->add_option("--days", issue.days, "Validity in days")->required();
  iss->add_option("--out", issue.out, "Lease file to write")->required();
  iss->callback([] { RunLeaseIssue(issue); });

  static LeaseInstallOptions install;
  CLI::App* ins = lease->add_subcommand("install", "Client: install a lease file into the core");
  AddClientOptions(ins, &install.client);
  ins->add_option("LEASE", install.lease, "Lease file")->required()->check(CLI::ExistingFile);
  ins->callback([] { RunLeaseInstall(install); });

  static ClientArgs status_args;
  CLI::App* st = lease->add_subcommand("status", "Client: the core's lease and usage as JSON");
  AddClientOptions(st, &status_args);
  st->callback([] { RunLeaseStatus(status_args); });

  static SyncCommandOptions sync;
  CLI::App* sy = lease->add_subcommand(
      "sync",
      "Client: with the license server, attest and get a lease when there is none, report usage "
      "and renew the lease when it is nearly used up (as `run --server` does, without a query)");
  AddClientOptions(sy, &sync.run.client);
  sy->add_option("--server", sync.run.server, "License server URL (https://HOST:PORT)")->required();
  sy->add_option("--license", sync.run.license,
                 "License token (prefer --license-file or $MLCAPSULE_LICENSE_TOKEN)");
  sy->add_option("--license-file", sync.run.license_file, "File holding the license token");
  sy->add_option("--ca-cert", sync.run.ca_cert, "PEM CA bundle to verify the license server");
  sy->add_flag("--renew", sync.renew, "Renew the lease even when the current one has room");
  sy->add_flag("--json", sync.run.json,
               "Print one JSON object: reported, outcome, billed, renewed, the new lease, and "
               "the core's state");
  sy->callback([] { RunLeaseSync(sync); });

  static UsageOptions usage;
  CLI::App* use = app.add_subcommand(
      "usage", "Client: export a usage report signed by the core (counts, chain head, alerts)");
  AddClientOptions(use, &usage.client);
  use->add_option("--out", usage.out, "Report file to write")->required();
  use->callback([] { RunUsage(usage); });

  static RunOptions run;
  CLI::App* run_cmd = app.add_subcommand(
      "run", "Client: run a capsule on local tensors (.npy or .pb) inside the software TEE");
  AddClientOptions(run_cmd, &run.client);
  run_cmd->add_option("--lease", run.lease, "Install this lease first")->check(CLI::ExistingFile);
  run_cmd->add_option("-i,--input", run.inputs, "Input tensor files in the model's input order")
      ->required();
  run_cmd->add_option("-o,--output", run.outputs, "Output files (.npy or .pb), one per output");
  run_cmd->add_option("--server", run.server,
                      "License server URL: get and renew leases automatically and sync usage "
                      "(offline, the run goes on within the current lease)");
  run_cmd->add_option("--license", run.license,
                      "License token for --server (prefer --license-file or "
                      "$MLCAPSULE_LICENSE_TOKEN: arguments are visible to other users)");
  run_cmd->add_option("--license-file", run.license_file, "File holding the license token");
  run_cmd->add_option("--ca-cert", run.ca_cert, "PEM CA bundle to verify the license server");
  run_cmd->add_flag("--json", run.json,
                    "Print one JSON object (outputs as arrays, or their files with -o; lease "
                    "counts; with --server what the syncs did) instead of text");
  run_cmd->callback([] { RunRun(run); });
}

}  // namespace mlcapsule::cli
