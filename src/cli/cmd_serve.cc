// `mlcapsule serve MODEL.capsule --state DIR [--listen 127.0.0.1:PORT]`: a loopback HTTP endpoint
// over one host::Client, so that apps in any language can run the capsule (docs/serve.md).
//
// It trusts nothing it receives: every request body is bounded (kMaxRequestBodyBytes, 413 above),
// every JSON value is checked against the capsule's declared inputs before a tensor is built, and
// binary bodies go through the bounded tensor_list parser. It listens on loopback addresses only:
// the endpoint has no authentication, and the capsule's answers are the licensee's to share, not
// the network's. The core runs one call at a time, so all calls into the client hold one mutex.
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "capsule/crypto.h"
#include "capsule/tensor_wire.h"
#include "cli/cli_common.h"
#include "host/client.h"

namespace mlcapsule::cli {
namespace {

using Json = nlohmann::json;
// Answers: float32 values printed as the shortest text that reads back as the same float32, and
// outputs kept in the model's order.
using AnswerJson = nlohmann::basic_json<nlohmann::ordered_map, std::vector, std::string, bool,
                                        std::int64_t, std::uint64_t, float>;

constexpr size_t kMaxRequestBodyBytes = size_t{256} << 20;
constexpr const char* kTensorContentType = "application/x-mlcapsule-tensors";
constexpr const char* kJsonContentType = "application/json";
constexpr int kHttpWorkerThreads = 4;

struct ServeOptions {
  std::string model;
  std::string state;
  std::string listen = "127.0.0.1:8080";
  int threads = 1;
  std::string core_binary;
  TeeArgs tee;
  bool verbose = false;
};

// "invalid-argument", "resource-exhausted", ...: the `code` field of error bodies.
std::string CodeSlug(StatusCode code) {
  std::string slug = StatusCodeName(code);
  for (char& c : slug)
    if (c == ' ' || c == '/') c = '-';
  if (slug == "i-o-error") slug = "io-error";
  if (slug == "internal-error") slug = "internal";
  return slug;
}

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kDataLoss:
    case StatusCode::kUnsupported:
      return 400;  // the request's tensors are malformed or do not fit the model
    case StatusCode::kFailedPrecondition:
      return 409;  // no lease installed, or it expired: licensing is needed first
    case StatusCode::kResourceExhausted:
      return 429;  // the lease's query quota is used up, or a rate limit
    case StatusCode::kPermissionDenied:
      return 403;  // the capsule's policy or a defense refused the query
    default:
      return 500;
  }
}

void SendError(httplib::Response& res, int http_status, const std::string& code,
               const std::string& message) {
  res.status = http_status;
  Json body = {{"error", message}, {"code", code}};
  res.set_content(body.dump(), kJsonContentType);
}

void SendStatus(httplib::Response& res, const Status& status) {
  SendError(res, HttpStatusFor(status.code()), CodeSlug(status.code()), status.message());
}

// The media type without parameters, lowercased ("application/json; charset=utf-8" -> ...).
std::string MediaType(const httplib::Request& req) {
  std::string type = req.get_header_value("Content-Type");
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return type;
}

Json ShapeJson(const std::vector<capsule::IoDim>& dims) {
  Json shape = Json::array();
  for (const capsule::IoDim& d : dims) {
    if (!d.batch)
      shape.push_back(d.value);
    else
      shape.push_back(d.value == 1 ? std::string("N") : fmt::format("{}*N", d.value));
  }
  return shape;
}

Json IoJson(const std::vector<capsule::IoTensor>& list) {
  Json out = Json::array();
  for (const capsule::IoTensor& io : list) {
    const char* dtype = engine::IsKnownDType(io.dtype)
                            ? engine::DTypeName(static_cast<engine::DType>(io.dtype))
                            : "unknown";
    out.push_back({{"name", io.name}, {"dtype", dtype}, {"shape", ShapeJson(io.dims)}});
  }
  return out;
}

std::string UtcTime(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return "";
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Nested JSON arrays of numbers -> the shape of the nesting (rectangular) and flat values.
// `depth` is bounded by the rank limit, so the recursion is too.
Status FlattenJson(const Json& value, size_t depth, std::vector<int64_t>* shape,
                   std::vector<const Json*>* flat, const std::string& what) {
  if (!value.is_array()) {
    if (depth != shape->size())
      return InvalidArgument("{}: a number at depth {} where the nesting has depth {}", what, depth,
                             shape->size());
    flat->push_back(&value);
    return Status::Ok();
  }
  if (depth == shape->size()) {
    if (depth >= static_cast<size_t>(engine::kMaxRank))
      return InvalidArgument("{}: arrays nested deeper than the rank limit {}", what,
                             engine::kMaxRank);
    if (!flat->empty())
      return InvalidArgument("{}: an array at depth {} where numbers were found before", what,
                             depth);
    shape->push_back(static_cast<int64_t>(value.size()));
  } else if (depth > shape->size() || (*shape)[depth] != static_cast<int64_t>(value.size())) {
    return InvalidArgument(
        "{}: the nested arrays are not rectangular (an array of {} at depth "
        "{})",
        what, value.size(), depth);
  }
  for (const Json& item : value)
    MLC_RETURN_IF_ERROR(FlattenJson(item, depth + 1, shape, flat, what));
  return Status::Ok();
}

// One input: {"shape":[...], "data":[...], "dtype":"float32"} or a (nested) array alone.
Result<engine::Tensor> TensorFromJson(const Json& value, const capsule::IoTensor& declared) {
  const std::string what = fmt::format("input '{}'", declared.name);
  const Json* data = &value;
  std::vector<int64_t> shape;
  bool has_shape = false;
  if (value.is_object()) {
    for (const auto& [key, field] : value.items())
      if (key != "shape" && key != "data" && key != "dtype")
        return InvalidArgument("{}: unknown field '{}' (allowed: shape, data, dtype)", what, key);
    if (!value.contains("data")) return InvalidArgument("{}: has no \"data\" array", what);
    data = &value.at("data");
    if (value.contains("dtype")) {
      const Json& dtype = value.at("dtype");
      const char* declared_name =
          engine::IsKnownDType(declared.dtype)
              ? engine::DTypeName(static_cast<engine::DType>(declared.dtype))
              : "unknown";
      if (!dtype.is_string() || dtype.get<std::string>() != declared_name)
        return InvalidArgument("{}: dtype {} given, the model takes {}", what, dtype.dump(),
                               declared_name);
    }
    if (value.contains("shape")) {
      const Json& shape_json = value.at("shape");
      if (!shape_json.is_array() || shape_json.size() > static_cast<size_t>(engine::kMaxRank))
        return InvalidArgument("{}: shape must be an array of at most {} sizes", what,
                               engine::kMaxRank);
      for (const Json& d : shape_json) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0 ||
            d.get<int64_t>() > engine::kMaxTensorElements)
          return InvalidArgument("{}: shape entry {} is not a size in 0..{}", what, d.dump(),
                                 engine::kMaxTensorElements);
        shape.push_back(d.get<int64_t>());
      }
      has_shape = true;
    }
  }
  if (!data->is_array()) return InvalidArgument("{}: \"data\" must be an array of numbers", what);
  std::vector<int64_t> nested_shape;
  std::vector<const Json*> flat;
  MLC_RETURN_IF_ERROR(FlattenJson(*data, 0, &nested_shape, &flat, what));
  if (!has_shape) shape = nested_shape;
  MLC_ASSIGN_OR_RETURN(int64_t elements, engine::CheckedNumElements(shape, what));
  if (static_cast<size_t>(elements) != flat.size())
    return InvalidArgument("{}: shape {} holds {} values, \"data\" has {}", what,
                           engine::DimsToString(shape), elements, flat.size());

  if (declared.dtype == static_cast<uint8_t>(engine::DType::kFloat32)) {
    engine::Tensor tensor = engine::Tensor::Make(engine::DType::kFloat32, shape);
    float* out = tensor.Data<float>();
    for (size_t i = 0; i < flat.size(); ++i) {
      const Json& v = *flat[i];
      if (!v.is_number())
        return InvalidArgument("{}: value {} at index {} is not a number", what, v.dump(), i);
      const double d = v.get<double>();
      if (std::fabs(d) > std::numeric_limits<float>::max())
        return InvalidArgument("{}: value {} at index {} is out of the float32 range", what,
                               v.dump(), i);
      out[i] = static_cast<float>(d);
    }
    return tensor;
  }
  if (declared.dtype == static_cast<uint8_t>(engine::DType::kInt64)) {
    engine::Tensor tensor = engine::Tensor::Make(engine::DType::kInt64, shape);
    int64_t* out = tensor.Data<int64_t>();
    for (size_t i = 0; i < flat.size(); ++i) {
      const Json& v = *flat[i];
      if (!v.is_number_integer() ||
          (v.is_number_unsigned() &&
           v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
        return InvalidArgument("{}: value {} at index {} is not an int64", what, v.dump(), i);
      out[i] = v.get<int64_t>();
    }
    return tensor;
  }
  return Unsupported("{}: the model declares element type {}", what, declared.dtype);
}

// {"inputs": {"NAME": tensor, ...}} or {"inputs": [tensor, ...]} in the model's input order.
Result<std::vector<engine::Tensor>> InputsFromJson(const std::string& body,
                                                   const std::vector<capsule::IoTensor>& declared) {
  const Json root = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgument("the request body is not valid JSON");
  if (!root.is_object() || !root.contains("inputs"))
    return InvalidArgument("the request body must be an object with an \"inputs\" member");
  const Json& inputs = root.at("inputs");
  std::vector<engine::Tensor> tensors;
  if (inputs.is_array()) {
    if (inputs.size() != declared.size())
      return InvalidArgument("{} inputs given, the model takes {}", inputs.size(), declared.size());
    for (size_t i = 0; i < declared.size(); ++i) {
      MLC_ASSIGN_OR_RETURN(engine::Tensor t, TensorFromJson(inputs[i], declared[i]));
      tensors.push_back(std::move(t));
    }
    return tensors;
  }
  if (!inputs.is_object())
    return InvalidArgument("\"inputs\" must be an object (by name) or an array (in order)");
  for (const auto& [name, value] : inputs.items()) {
    bool known = false;
    for (const capsule::IoTensor& io : declared) known = known || io.name == name;
    if (!known) {
      std::string names;
      for (const capsule::IoTensor& io : declared) names += (names.empty() ? "" : ", ") + io.name;
      return InvalidArgument("the model has no input '{}' (inputs: {})", name, names);
    }
  }
  for (const capsule::IoTensor& io : declared) {
    if (!inputs.contains(io.name)) return InvalidArgument("input '{}' is missing", io.name);
    MLC_ASSIGN_OR_RETURN(engine::Tensor t, TensorFromJson(inputs.at(io.name), io));
    tensors.push_back(std::move(t));
  }
  return tensors;
}

AnswerJson OutputsToJson(const std::vector<engine::Tensor>& outputs,
                         const std::vector<capsule::IoTensor>& declared) {
  AnswerJson answer;
  AnswerJson& by_name = answer["outputs"];
  by_name = AnswerJson::object();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const engine::Tensor& t = outputs[i];
    const std::string name = i < declared.size() ? declared[i].name : fmt::format("output_{}", i);
    AnswerJson data = AnswerJson::array();
    const int64_t n = t.NumElements();
    if (t.dtype == engine::DType::kFloat32) {
      for (int64_t k = 0; k < n; ++k) data.push_back(t.Data<float>()[k]);  // NaN/inf -> null
    } else {
      for (int64_t k = 0; k < n; ++k) data.push_back(t.Data<int64_t>()[k]);
    }
    by_name[name] = {
        {"shape", t.dims}, {"dtype", engine::DTypeName(t.dtype)}, {"data", std::move(data)}};
  }
  return answer;
}

class CapsuleEndpoint {
 public:
  explicit CapsuleEndpoint(std::unique_ptr<host::Client> client) : client_(std::move(client)) {}

  void Register(httplib::Server& server) {
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
    server.Get("/v1/info", Guard([this](const httplib::Request& req, httplib::Response& res) {
                 Info(req, res);
               }));
    server.Post("/v1/infer", Guard([this](const httplib::Request& req, httplib::Response& res) {
                  Infer(req, res);
                }));
    server.Post("/v1/usage-report",
                Guard([this](const httplib::Request& req, httplib::Response& res) {
                  UsageReport(req, res);
                }));
    server.Post("/v1/evidence-request",
                Guard([this](const httplib::Request& req, httplib::Response& res) {
                  EvidenceRequest(req, res);
                }));
    server.Post("/v1/lease", Guard([this](const httplib::Request& req, httplib::Response& res) {
                  InstallLease(req, res);
                }));
  }

  Status Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    return client_->Close();
  }

 private:
  template <typename Handler>
  static httplib::Server::Handler Guard(Handler handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const std::exception& e) {
        SendError(res, 500, "internal", fmt::format("internal error: {}", e.what()));
      }
    };
  }

  void SetQuotaHeader(httplib::Response& res) {
    const host::CoreInfo& info = client_->info();
    const uint64_t left =
        info.query_quota > info.queries_used ? info.query_quota - info.queries_used : 0;
    res.set_header("X-MLCapsule-Queries-Left", std::to_string(left));
  }

  void Info(const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mutex_);
    res.set_content(InfoJson().dump(), kJsonContentType);
  }

  // Caller holds mutex_.
  Json InfoJson() {
    const host::CoreInfo& info = client_->info();
    const bool ready = info.state == host::CoreStateKind::kReady;
    Json body;
    body["state"] = ready ? "ready" : "needs-lease";
    body["capsule_id"] = capsule::CapsuleIdHex(info.capsule_id);
    body["model_name"] = client_->header().model_name;
    body["backend"] = client_->DescribeBackend();
    body["license_id"] = info.license_id.empty() ? Json() : Json(info.license_id);
    body["queries_used"] = info.queries_used;
    body["query_quota"] = info.query_quota;
    body["queries_left"] =
        info.query_quota > info.queries_used ? info.query_quota - info.queries_used : 0;
    body["total_queries"] = info.total_queries;
    body["expires_at"] = info.expires_at;
    body["expires_at_utc"] = info.expires_at > 0 ? Json(UtcTime(info.expires_at)) : Json();
    body["inputs"] = IoJson(info.inputs);
    body["outputs"] = IoJson(info.outputs);
    Json policy = Json::parse(info.policy_json, nullptr, false);
    body["policy"] = policy.is_discarded() ? Json() : policy;
    return body;
  }

  void Infer(const httplib::Request& req, httplib::Response& res) {
    const std::string type = MediaType(req);
    const bool binary = type == kTensorContentType;
    if (!binary && type != kJsonContentType)
      return SendError(res, 415, "unsupported-media-type",
                       fmt::format("Content-Type '{}' is not {} or {}", type, kJsonContentType,
                                   kTensorContentType));
    std::vector<engine::Tensor> owned;
    std::vector<engine::TensorView> views;
    const std::span<const uint8_t> body(reinterpret_cast<const uint8_t*>(req.body.data()),
                                        req.body.size());
    if (binary) {
      // Views into the request body (it outlives the call); the host copies them to the core.
      Result<std::vector<engine::TensorView>> parsed = capsule::ParseTensorList(body);
      if (!parsed.ok()) return SendStatus(res, parsed.status());
      views = std::move(parsed).value();
    }

    std::lock_guard<std::mutex> lock(mutex_);
    const host::CoreInfo& info = client_->info();
    if (info.state != host::CoreStateKind::kReady)
      return SendError(res, 409, CodeSlug(StatusCode::kFailedPrecondition),
                       "the capsule needs a lease: make an evidence request, get a lease from the "
                       "provider and install it (docs/serve.md)");
    if (!binary) {
      Result<std::vector<engine::Tensor>> parsed = InputsFromJson(req.body, info.inputs);
      if (!parsed.ok()) return SendStatus(res, parsed.status());
      owned = std::move(parsed).value();
      for (engine::Tensor& t : owned) views.push_back(t.View());
    }
    std::vector<engine::Tensor> outputs;
    Status status = client_->Infer(views, &outputs);
    SetQuotaHeader(res);
    if (!status.ok()) return SendStatus(res, status);
    if (binary) {
      std::vector<engine::TensorView> out_views;
      for (engine::Tensor& t : outputs) out_views.push_back(t.View());
      std::string encoded;
      capsule::AppendTensorList(out_views, &encoded);
      res.set_content(std::move(encoded), kTensorContentType);
    } else {
      res.set_content(OutputsToJson(outputs, info.outputs).dump(), kJsonContentType);
    }
  }

  void UsageReport(const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mutex_);
    Result<std::vector<uint8_t>> report = client_->UsageReport();
    if (!report.ok()) return SendStatus(res, report.status());
    res.set_content(std::string(report->begin(), report->end()), "application/octet-stream");
  }

  // Body: empty (a fresh random nonce) or the license server's 32-byte nonce. The latest usage
  // report is attached when a lease is installed, unless ?report=0.
  void EvidenceRequest(const httplib::Request& req, httplib::Response& res) {
    capsule::Nonce nonce{};
    if (req.body.empty()) {
      capsule::RandomBytes(nonce);
    } else if (req.body.size() == nonce.size()) {
      std::memcpy(nonce.data(), req.body.data(), nonce.size());
    } else {
      return SendError(res, 400, CodeSlug(StatusCode::kInvalidArgument),
                       fmt::format("the nonce has {} bytes, expected {} (or an empty body)",
                                   req.body.size(), nonce.size()));
    }
    const std::string report = req.get_param_value("report");
    if (!report.empty() && report != "0" && report != "1")
      return SendError(res, 400, CodeSlug(StatusCode::kInvalidArgument),
                       fmt::format("report={} is not 0 or 1", report));
    std::lock_guard<std::mutex> lock(mutex_);
    const bool attach = report != "0" && client_->info().state == host::CoreStateKind::kReady;
    Result<std::vector<uint8_t>> request = client_->MakeEvidenceRequest(nonce, attach);
    if (!request.ok()) return SendStatus(res, request.status());
    res.set_content(std::string(request->begin(), request->end()), "application/octet-stream");
  }

  // Body: the lease bytes. Answers the new /v1/info.
  void InstallLease(const httplib::Request& req, httplib::Response& res) {
    if (req.body.empty() || req.body.size() > capsule::kMaxLeaseBytes)
      return SendError(res, 400, CodeSlug(StatusCode::kInvalidArgument),
                       fmt::format("the lease has {} bytes, allowed 1..{}", req.body.size(),
                                   capsule::kMaxLeaseBytes));
    std::lock_guard<std::mutex> lock(mutex_);
    Status status = client_->InstallLease(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(req.body.data()), req.body.size()));
    if (!status.ok()) return SendStatus(res, status);
    res.set_content(InfoJson().dump(), kJsonContentType);
  }

  std::mutex mutex_;  // the core runs one call at a time
  std::unique_ptr<host::Client> client_;
};

void RunServe(const ServeOptions& o) {
  Result<ListenAddress> address = ParseListenAddress(o.listen, /*loopback_only=*/true);
  if (!address.ok()) {
    ReportError(address.status());
    return SetExitCode(kExitUsage);
  }
  // SIGINT/SIGTERM are blocked from here on (in every thread started later, the HTTP workers
  // included) and taken by one thread with sigwait, which stops the server: no work in a signal
  // handler. Blocking them before the capsule opens defers a signal that comes during the open
  // to a clean stop. (The core process resets its own mask; keeping it alive through a terminal
  // Ctrl-C, which reaches the whole process group, is the process channel's business.)
  const sigset_t signals = BlockStopSignals();

  if (Status s = capsule::InitCrypto(); !s.ok()) return SetExitCode(ReportError(s));
  host::ClientOptions options;
  options.state_dir = o.state.empty() ? o.model + ".state" : o.state;
  options.threads = o.threads;
  options.core_binary = o.core_binary;
  options.launcher = CoreLauncher(o.tee);
  if (auto args = CorePlatformArgs(o.tee); args.ok()) {
    options.platform_args = std::move(args).value();
  } else {
    return SetExitCode(ReportError(args.status()));
  }
  Result<std::unique_ptr<host::Client>> client = host::Client::Open(o.model, options);
  if (!client.ok()) return SetExitCode(ReportError(client.status().WithContext(o.model)));
  const host::CoreInfo& info = (*client)->info();
  const std::string capsule_hex = capsule::CapsuleIdHex(info.capsule_id);
  const char* lease_state = info.state == host::CoreStateKind::kReady ? "ready" : "needs a lease";
  log::Info("serve", "serve.capsule",
            fmt::format("capsule {} ({}), {}, trusted core: {}", capsule_hex,
                        (*client)->header().model_name, lease_state, (*client)->DescribeBackend()),
            {{"capsule", capsule_hex},
             {"model", (*client)->header().model_name},
             {"lease", lease_state},
             {"core", (*client)->DescribeBackend()}});
  CapsuleEndpoint endpoint(std::move(client).value());

  httplib::Server server;
  server.new_task_queue = [] { return new httplib::ThreadPool(kHttpWorkerThreads); };
  server.set_payload_max_length(kMaxRequestBodyBytes);
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own JSON error
    if (res.status == 413)
      SendError(
          res, 413, "payload-too-large",
          fmt::format("the request body is over the limit of {} bytes", kMaxRequestBodyBytes));
    else if (res.status == 404)
      SendError(res, 404, "not-found", fmt::format("no endpoint {} {}", req.method, req.path));
    else if (res.status == 400)
      SendError(res, 400, "bad-request",
                "malformed HTTP request (a POST needs a body with a Content-Length header; with "
                "curl, -d '' sends an empty one)");
    else
      SendError(res, res.status, "http-error", fmt::format("HTTP status {}", res.status));
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        SendError(res, 500, "internal", "internal error");
      });
  // http.request: info with -v, debug otherwise; never the bodies (inputs and answers).
  const log::Level request_level = o.verbose ? log::Level::kInfo : log::Level::kDebug;
  server.set_logger([request_level](const httplib::Request& req, const httplib::Response& res) {
    if (!log::Enabled(request_level)) return;
    log::Write(request_level, "serve", "http.request",
               fmt::format("{} {} -> {} ({} bytes in, {} out)", req.method, req.path.substr(0, 256),
                           res.status, req.body.size(), res.body.size()),
               {{"method", req.method},
                {"path", req.path.substr(0, 256)},
                {"status", res.status},
                {"bytes_in", req.body.size()},
                {"bytes_out", res.body.size()}});
  });
  endpoint.Register(server);

  int port = address->port;
  const bool bound = port == 0 ? (port = server.bind_to_any_port(address->host)) > 0
                               : server.bind_to_port(address->host, port);
  if (!bound) {
    ReportError(IoError("cannot listen on {}: {}", o.listen, std::strerror(errno)));
    (void)endpoint.Close();
    return SetExitCode(kExitFailure);
  }

  std::printf("listening on http://%s:%d\n", address->url_host.c_str(), port);
  std::fflush(stdout);
  const bool served = ServeUntilSignal(
      signals, "serve", [&] { return server.listen_after_bind(); }, [&] { server.stop(); });

  Status closed = endpoint.Close();
  if (!closed.ok()) return SetExitCode(ReportError(closed));
  if (!served) return SetExitCode(ReportError(IoError("the HTTP server on {} failed", o.listen)));
  SetExitCode(kExitOk);
}

}  // namespace

void AddServeCommand(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve a capsule on a loopback HTTP endpoint (JSON and binary tensors; docs/serve.md)");
  cmd->add_option("MODEL", options->model, "The .capsule file")->required();
  cmd->add_option("--state", options->state,
                  "The capsule's state directory (sealed state, lease; one per capsule; default "
                  "MODEL.state)");
  cmd->add_option("--listen", options->listen,
                  "HOST:PORT to listen on; loopback only (127.0.0.1, [::1]); port 0 picks a free "
                  "port")
      ->capture_default_str();
  cmd->add_option("-t,--threads", options->threads, "Inference threads of the trusted core")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--core", options->core_binary,
                  "The mlcapsule-core binary (default: beside this executable)");
  AddTeeOptions(cmd, &options->tee);
  cmd->add_flag("-v,--verbose", options->verbose,
                "Log every request (http.request events) at info level; they are debug otherwise");
  cmd->callback([options] { RunServe(*options); });
}

}  // namespace mlcapsule::cli
