// The capsule oracle: the provider's packing and lease issuing, and a real client querying the
// capsule through the software TEE (see oracle.h).
#include "lab/oracle.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/file_util.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/licensing.h"
#include "capsule/messages.h"
#include "capsule/policy.h"
#include "compiler/compiler.h"
#include "engine/plan.h"
#include "host/client.h"
#include "host/license_client.h"
#include "lab/data.h"

namespace mlcapsule::lab {
namespace {

using nlohmann::json;

std::string ExecutableDir() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

struct CapsuleOracle::State {
  OracleOptions options;
  capsule::SigningKeyPair provider;
  capsule::PackedCapsule packed;
  capsule::CapsuleHeader header;
  capsule::Policy policy;
  std::unique_ptr<host::Client> client;
  uint64_t lease_sequence = 0;
  int reports = 0;
  int64_t prada_alarm_at = -1;
  std::string escrow_key_path;
  std::string bin_dir;
  std::string license_id;
  // Attached (a customer of a license server) instead of provider and customer in one process.
  std::unique_ptr<host::ServerConnection> server;
  std::string license_token;
};

namespace {

// The provider's side of a (re)lease, done in process: check the client's evidence request
// (with its usage report when renewing) and install the lease it earns.
Status RenewLease(CapsuleOracle::State& st, bool attach_report) {
  capsule::Nonce nonce{};
  capsule::RandomBytes(nonce);
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> request,
                       st.client->MakeEvidenceRequest(nonce, attach_report));
  capsule::LeaseTerms terms;
  terms.license_id = st.license_id;
  terms.query_quota = std::min<uint64_t>(st.options.quota, st.policy.lease.max_queries);
  terms.valid_seconds = 86400;
  terms.now = static_cast<int64_t>(std::time(nullptr));
  terms.sequence = ++st.lease_sequence;
  MLC_ASSIGN_OR_RETURN(capsule::CheckedRequest checked,
                       capsule::CheckEvidenceRequest(request, st.header, st.policy, terms));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> lease,
                       capsule::IssueLeaseForRequest(checked, st.header, st.policy,
                                                     st.packed.capsule_key, st.provider, terms));
  return st.client->InstallLease(lease);
}

}  // namespace

CapsuleOracle::~CapsuleOracle() {
  if (!state_) return;
  if (state_->client) (void)state_->client->Close();
  state_->client.reset();
  if (state_->options.remove_work_dir) {
    std::error_code ec;
    std::filesystem::remove_all(state_->options.work_dir, ec);
  }
}

Result<std::unique_ptr<CapsuleOracle>> CapsuleOracle::Create(const CapsuleSpec& spec,
                                                             const OracleOptions& options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  std::unique_ptr<CapsuleOracle> oracle(new CapsuleOracle());
  oracle->state_ = std::make_unique<State>();
  State& st = *oracle->state_;
  st.options = options;
  st.bin_dir = options.bin_dir.empty() ? ExecutableDir() : options.bin_dir;
  const std::filesystem::path dir = options.work_dir;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);  // a capsule run always starts from a fresh client state
  std::filesystem::create_directories(dir / "reports", ec);
  if (ec)
    return IoError("{}: cannot create the oracle's directory: {}", dir.string(), ec.message());

  std::string policy_json = spec.policy_json;
  if (const size_t at = policy_json.find("\"generate\""); at != std::string::npos) {
    capsule::BoxKeyPair escrow = capsule::GenerateBoxKeyPair();
    MLC_RETURN_IF_ERROR(capsule::WriteEscrowKeyPair(dir.string(), "escrow", escrow));
    policy_json = fmt::format("{}\"{}\"{}", policy_json.substr(0, at),
                              capsule::ToHex(escrow.public_key), policy_json.substr(at + 10));
    st.escrow_key_path = (dir / "escrow.key").string();
    oracle->has_escrow_ = true;
  }
  MLC_ASSIGN_OR_RETURN(st.policy, capsule::ParsePolicy(policy_json));
  st.provider = capsule::GenerateSigningKeyPair();

  compiler::CompileOptions compile;
  MLC_ASSIGN_OR_RETURN(engine::Plan plan, compiler::CompileOnnx(spec.model_onnx, compile));
  std::string plan_bytes = engine::SerializePlan(plan);
  std::string membership_bytes;
  capsule::PackInput input;
  input.plan = AsBytes(plan_bytes);
  input.model_name = spec.name;
  input.policy_json = capsule::PolicyToJson(st.policy);
  input.inputs = capsule::PlanIo(plan, plan.inputs);
  input.outputs = capsule::PlanIo(plan, plan.outputs);
  if (!spec.membership_onnx.empty()) {
    MLC_ASSIGN_OR_RETURN(engine::Plan membership,
                         compiler::CompileOnnx(spec.membership_onnx, compile));
    membership_bytes = engine::SerializePlan(membership);
    input.membership_plan = AsBytes(membership_bytes);
  }
  MLC_ASSIGN_OR_RETURN(st.packed, capsule::PackCapsule(input, st.provider));
  MLC_ASSIGN_OR_RETURN(capsule::CapsuleView view, capsule::ParseCapsule(st.packed.bytes));
  st.header = view.header;
  oracle->capsule_path_ = (dir / (spec.name + ".capsule")).string();
  MLC_RETURN_IF_ERROR(WriteFile(
      oracle->capsule_path_, std::string_view(reinterpret_cast<const char*>(st.packed.bytes.data()),
                                              st.packed.bytes.size())));

  host::ClientOptions client_options;
  client_options.state_dir = (dir / "state").string();
  client_options.core_binary = st.bin_dir + "/mlcapsule-core";
  MLC_ASSIGN_OR_RETURN(st.client, host::Client::Open(oracle->capsule_path_, client_options));
  // The first lease: no usage report yet.
  st.license_id = "lab-" + spec.name;
  MLC_RETURN_IF_ERROR(RenewLease(st, /*attach_report=*/false));
  const host::CoreInfo& info = st.client->info();
  if (info.outputs.empty() || info.outputs[0].dims.size() > 2)
    return InvalidArgument("{}: the lab needs one output [batch, classes] or [batch]", spec.name);
  oracle->label_only_ = info.outputs[0].dtype == 7;
  // Classes: the model's logits width (the label output has none; take it from the plan).
  const capsule::IoTensor& model_out = input.outputs[0];
  oracle->classes_ = static_cast<int>(model_out.dims.back().value);
  return oracle;
}

Result<std::unique_ptr<CapsuleOracle>> CapsuleOracle::Attach(const AttachOptions& options) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  std::unique_ptr<CapsuleOracle> oracle(new CapsuleOracle());
  oracle->state_ = std::make_unique<State>();
  State& st = *oracle->state_;
  st.options.work_dir = options.work_dir;
  st.options.batch = options.batch;
  st.bin_dir = ExecutableDir();
  st.license_token = options.license_token;
  const std::filesystem::path dir = options.work_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir / "reports", ec);
  if (ec) return IoError("{}: cannot create the directory: {}", dir.string(), ec.message());
  oracle->capsule_path_ = options.capsule_path;

  host::ClientOptions client_options;
  client_options.state_dir = options.state_dir;
  client_options.core_binary =
      options.core_binary.empty() ? st.bin_dir + "/mlcapsule-core" : options.core_binary;
  MLC_ASSIGN_OR_RETURN(st.client, host::Client::Open(options.capsule_path, client_options));
  MLC_ASSIGN_OR_RETURN(
      st.server, host::ServerConnection::Open(options.server_url, {.ca_cert = options.ca_cert}));
  MLC_ASSIGN_OR_RETURN(host::SyncResult synced,
                       host::SyncLicense(*st.client, *st.server, st.license_token, {}));
  if (!synced.online) return IoError("cannot get a lease: {}", synced.offline_reason);
  const host::CoreInfo& info = st.client->info();
  if (info.state != host::CoreStateKind::kReady)
    return FailedPrecondition("{}: the license server gave no lease", options.capsule_path);
  if (info.outputs.empty() || info.outputs[0].dims.size() > 2)
    return InvalidArgument("{}: the lab needs one output [batch, classes] or [batch]",
                           options.capsule_path);
  oracle->label_only_ = info.outputs[0].dtype == 7;
  // Classes: the output's width [batch, C]. A label output [batch] does not say; the lab's models
  // are Fashion-MNIST classifiers.
  const capsule::IoTensor& out = info.outputs[0];
  oracle->classes_ =
      out.dims.size() == 2 ? static_cast<int>(out.dims.back().value) : kFashionClasses;
  if (oracle->classes_ < 2 || oracle->classes_ > 4096)
    return InvalidArgument("{}: output width {} is not a class count (2 to 4096)",
                           options.capsule_path, oracle->classes_);
  return oracle;
}

Status CapsuleOracle::Query(std::span<const float> images, int64_t rows,
                            std::vector<float>* answers) {
  constexpr int64_t kPixels = 784;
  if (static_cast<int64_t>(images.size()) != rows * kPixels)
    return InvalidArgument("oracle: {} floats for {} images", images.size(), rows);
  answers->assign(static_cast<size_t>(rows * classes_), 0.0f);
  const int64_t batch = state_->options.batch;
  std::vector<engine::Tensor> outputs;
  for (int64_t begin = 0; begin < rows; begin += batch) {
    const int64_t n = std::min(batch, rows - begin);
    engine::TensorView view{engine::DType::kFloat32, engine::Dims{n, 1, 28, 28},
                            const_cast<float*>(images.data() + begin * kPixels)};
    MLC_RETURN_IF_ERROR(state_->client->Infer({view}, &outputs));
    const engine::Tensor& out = outputs.at(0);
    float* dst = answers->data() + begin * classes_;
    if (label_only_) {
      const int64_t* labels = out.Data<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        if (labels[i] < 0 || labels[i] >= classes_)
          return DataLoss("oracle: label {} out of range", labels[i]);
        dst[i * classes_ + labels[i]] = 1.0f;
      }
    } else {
      if (out.NumElements() != n * classes_)
        return DataLoss("oracle: {} output values for {} rows", out.NumElements(), n);
      std::copy(out.Data<float>(), out.Data<float>() + n * classes_, dst);
    }
    queries_ += n;
  }
  return Status::Ok();
}

Result<OracleSync> CapsuleOracle::Sync() {
  State& st = *state_;
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> report_bytes, st.client->UsageReport());
  MLC_ASSIGN_OR_RETURN(capsule::UsageReport report, capsule::ParseUsageReport(report_bytes));
  const std::string path =
      fmt::format("{}/reports/report-{:04d}.bin", st.options.work_dir, st.reports++);
  MLC_RETURN_IF_ERROR(WriteFile(
      path,
      std::string_view(reinterpret_cast<const char*>(report_bytes.data()), report_bytes.size())));
  for (const capsule::Alert& a : report.alerts) {
    if (a.kind == "prada" && st.prada_alarm_at < 0)
      st.prada_alarm_at = static_cast<int64_t>(a.at_count);
  }
  // Renewal: the report travels with a fresh evidence request; the new lease acknowledges it.
  if (st.server) {
    MLC_ASSIGN_OR_RETURN(
        host::SyncResult synced,
        host::SyncLicense(*st.client, *st.server, st.license_token, {.force_renew = true}));
    if (!synced.online) return IoError("cannot sync usage: {}", synced.offline_reason);
  } else {
    MLC_RETURN_IF_ERROR(RenewLease(st, /*attach_report=*/true));
  }
  OracleSync sync;
  sync.prada_alarm_at = st.prada_alarm_at;
  sync.watermarked = report.defenses.watermarked;
  sync.escrowed = report.defenses.escrowed;
  sync.escrow_dropped = report.defenses.escrow_dropped;
  sync.memguard_applied = report.defenses.memguard_applied;
  sync.reports = st.reports;
  return sync;
}

Result<WatermarkVerdict> CapsuleOracle::VerifyWatermark(const std::string& suspect_onnx) const {
  const State& st = *state_;
  if (!has_escrow_) return FailedPrecondition("oracle: this capsule's policy escrows nothing");
  const std::string command =
      fmt::format("{} watermark verify --json --escrow-key {} --model {} {} 2>&1",
                  ShellQuote(st.bin_dir + "/mlcapsule"), ShellQuote(st.escrow_key_path),
                  ShellQuote(suspect_onnx), ShellQuote(st.options.work_dir + "/reports"));
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return IoError("cannot run {}", command);
  std::string output;
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, got);
  pclose(pipe);
  const size_t start = output.find('{');
  if (start == std::string::npos)
    return InternalError("watermark verify printed no JSON: {}", output);
  try {
    json j = json::parse(output.substr(start));
    WatermarkVerdict v;
    v.samples = j.at("samples").get<uint64_t>();
    v.matches = j.at("matches").get<uint64_t>();
    v.accuracy = j.at("watermark_accuracy").get<double>();
    v.log2_chance = j.at("log2_chance").get<double>();
    v.identified = j.at("identified").get<bool>();
    v.verdict = j.at("verdict").get<std::string>();
    return v;
  } catch (const std::exception& e) {
    return InternalError("watermark verify: unexpected output ({}): {}", e.what(), output);
  }
}

}  // namespace mlcapsule::lab
