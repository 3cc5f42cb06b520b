// The client side of the license server protocol (license_client.h).
#include "host/license_client.h"

#include <httplib.h>

#include <chrono>

#include "capsule/crypto.h"
#include "capsule/messages.h"

namespace mlcapsule::host {
namespace {

using nlohmann::json;

// The largest answer: a page of recorded usage reports (admin API, about 2 MiB of reports in
// base64 plus their fields).
constexpr size_t kMaxAnswerBytes = 4 << 20;

Status StatusForHttp(int http, std::string message) {
  switch (http) {
    case 400:
    case 413:
      return Status(StatusCode::kInvalidArgument, std::move(message));
    case 401:
      return Status(StatusCode::kUnauthenticated, std::move(message));
    case 403:
      return Status(StatusCode::kPermissionDenied, std::move(message));
    case 404:
      return Status(StatusCode::kNotFound, std::move(message));
    case 409:
      return Status(StatusCode::kFailedPrecondition, std::move(message));
    case 429:
      return Status(StatusCode::kResourceExhausted, std::move(message));
    case 503:
      return Status(StatusCode::kIoError, std::move(message));
    default:
      return Status(StatusCode::kInternal, std::move(message));
  }
}

bool IsLoopbackUrl(const std::string& url) {
  for (const char* prefix : {"http://127.", "http://localhost", "http://[::1]"})
    if (url.rfind(prefix, 0) == 0) return true;
  return false;
}

int64_t WallClock() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<std::unique_ptr<ServerConnection>> ServerConnection::Open(const std::string& url,
                                                                 const ServerOptions& options) {
  const bool https = url.rfind("https://", 0) == 0;
  if (!https && !IsLoopbackUrl(url))
    return InvalidArgument(
        "license server URL '{}': use https:// (plain http:// only to a loopback test server)",
        url);
  std::unique_ptr<ServerConnection> c(new ServerConnection());
  c->url_ = url;
  c->http_ = std::make_unique<httplib::Client>(url);
  if (!c->http_->is_valid()) return InvalidArgument("license server URL '{}' is not valid", url);
  if (https && !options.ca_cert.empty()) c->http_->set_ca_cert_path(options.ca_cert.c_str());
  c->http_->set_connection_timeout(options.timeout_seconds, 0);
  c->http_->set_read_timeout(options.timeout_seconds, 0);
  c->http_->set_write_timeout(options.timeout_seconds, 0);
  c->http_->set_keep_alive(true);
  // cpp-httplib writes a request's headers and body separately: without TCP_NODELAY the body
  // waits for the server's delayed ACK (~40 ms per request on Linux).
  c->http_->set_tcp_nodelay(true);
  return c;
}

ServerConnection::~ServerConnection() = default;

Result<json> ServerConnection::Answer(const std::string& what, const void* opaque) {
  const auto& result = *static_cast<const httplib::Result*>(opaque);
  if (!result)
    return IoError("license server {} unreachable ({}): {}", url_, what,
                   httplib::to_string(result.error()));
  if (result->body.size() > kMaxAnswerBytes)
    return InvalidArgument("license server answer to {} is {} bytes, over {}", what,
                           result->body.size(), kMaxAnswerBytes);
  json body = json::parse(result->body, nullptr, false);
  if (result->status >= 200 && result->status < 300) {
    if (body.is_discarded())
      return InvalidArgument("license server answered {} with something that is not JSON", what);
    return body;
  }
  std::string message = "HTTP " + std::to_string(result->status);
  if (!body.is_discarded() && body.contains("error") && body["error"].is_object() &&
      body["error"].contains("message") && body["error"]["message"].is_string())
    message = body["error"]["message"].get<std::string>();
  return StatusForHttp(result->status, "license server: " + message);
}

Result<json> ServerConnection::Get(const std::string& path, const std::string& token) {
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto result = http_->Get(path.c_str(), headers);
  return Answer("GET " + path, &result);
}

Result<json> ServerConnection::Post(const std::string& path, const std::string& token,
                                    const json& body) {
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto result = http_->Post(path.c_str(), headers, body.dump(), "application/json");
  return Answer("POST " + path, &result);
}

Result<SyncResult> SyncLicense(Client& client, ServerConnection& server,
                               const std::string& license_token, const SyncOptions& options) {
  SyncResult sync;
  const bool has_lease = client.info().state == CoreStateKind::kReady;
  auto offline = [&](const Status& s) -> Result<SyncResult> {
    if (s.code() != StatusCode::kIoError) return s;
    sync.online = false;
    sync.offline_reason = s.message();
    return sync;
  };
  if (has_lease) {
    MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> report, client.UsageReport());
    auto answer =
        server.Post("/v1/usage", license_token, {{"usage_report", capsule::ToBase64(report)}});
    if (!answer.ok()) return offline(answer.status());
    sync.online = true;
    sync.reported = true;
    sync.report_outcome = answer->value("outcome", "");
    sync.billed_queries = answer->value("billed_queries", uint64_t{0});
  }
  const CoreInfo& info = client.info();
  const bool renew = options.force_renew || !has_lease ||
                     static_cast<double>(info.queries_used) >=
                         options.renew_fraction * static_cast<double>(info.query_quota) ||
                     info.expires_at - WallClock() <= options.renew_before_seconds;
  if (!renew) return sync;

  auto nonce_answer = server.Post("/v1/nonce", license_token, json::object());
  if (!nonce_answer.ok()) return offline(nonce_answer.status());
  sync.online = true;
  capsule::Nonce nonce{};
  if (!nonce_answer->contains("nonce") || !(*nonce_answer)["nonce"].is_string())
    return InvalidArgument("license server: the nonce answer has no nonce");
  MLC_RETURN_IF_ERROR(
      capsule::FromHex((*nonce_answer)["nonce"].get<std::string>(), nonce, "server nonce"));
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> request,
                       client.MakeEvidenceRequest(nonce, /*attach_report=*/has_lease));
  auto lease_answer =
      server.Post("/v1/attest", license_token, {{"evidence_request", capsule::ToBase64(request)}});
  if (!lease_answer.ok()) return offline(lease_answer.status());
  if (!lease_answer->contains("lease") || !(*lease_answer)["lease"].is_string())
    return InvalidArgument("license server: the attest answer has no lease");
  MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> lease,
                       capsule::FromBase64((*lease_answer)["lease"].get<std::string>(),
                                           capsule::kMaxLeaseBytes, "lease"));
  MLC_RETURN_IF_ERROR(client.InstallLease(lease));
  sync.renewed = true;
  lease_answer->erase("lease");
  sync.lease = std::move(*lease_answer);
  return sync;
}

}  // namespace mlcapsule::host
