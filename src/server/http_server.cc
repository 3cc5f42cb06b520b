// The license server's HTTP front end (http_server.h).
#include "server/http_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "capsule/messages.h"

namespace mlcapsule::server {
namespace {

constexpr int kListenBacklog = 1024;  // pending connections (capped by net.core.somaxconn)

// The largest client message (an evidence request carrying the largest usage report) travels as
// base64 in a JSON body, which must stay within the body limit.
static_assert((capsule::kMaxEvidenceRequestBytes + 2) / 3 * 4 + 1024 <= kMaxBodyBytes);
static_assert((capsule::kMaxUsageReportBytes + 2) / 3 * 4 + 1024 <= kMaxBodyBytes);

const char* CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kDataLoss:
      return "invalid_argument";
    case StatusCode::kUnsupported:
      return "unsupported";
    case StatusCode::kUnauthenticated:
      return "unauthenticated";
    case StatusCode::kPermissionDenied:
      return "permission_denied";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kAlreadyExists:
      return "already_exists";
    case StatusCode::kFailedPrecondition:
      return "failed_precondition";
    case StatusCode::kResourceExhausted:
      return "resource_exhausted";
    case StatusCode::kIoError:
    case StatusCode::kUnavailable:
      return "unavailable";
    default:
      return "internal";
  }
}

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Replace rather than throw on text that is not UTF-8 (an error message may quote input).
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void SendError(httplib::Response& res, const Status& status) {
  const int http = HttpStatusFor(status);
  if (http == 429) res.set_header("Retry-After", "1");
  SendJson(res, http,
           {{"error", {{"code", CodeName(status.code())}, {"message", status.message()}}}});
}

std::string BearerToken(const httplib::Request& req) {
  const std::string value = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (value.size() > 512 || value.compare(0, kBearer.size(), kBearer) != 0) return "";
  return value.substr(kBearer.size());
}

Result<json> ParseBody(const httplib::Request& req) {
  if (req.body.empty()) return InvalidArgument("the request needs a JSON body");
  // Depth is bounded by the strict field readers; the parser itself is iterative enough for
  // the 2 MiB body limit.
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return InvalidArgument("the request body is not valid JSON");
  return body;
}

void Reply(httplib::Response& res, const Result<json>& result, int ok_status = 200) {
  if (result.ok())
    SendJson(res, ok_status, *result);
  else
    SendError(res, result.status());
}

bool IsLoopback(const std::string& host) {
  return host == "127.0.0.1" || host == "::1" || host == "localhost" || host.rfind("127.", 0) == 0;
}

Result<int64_t> QueryInt(const httplib::Request& req, const char* name, int64_t fallback) {
  if (!req.has_param(name)) return fallback;
  const std::string v = req.get_param_value(name);
  try {
    size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return static_cast<int64_t>(n);
  } catch (const std::exception&) {
    return InvalidArgument("query parameter {}='{}' is not an integer", name, v.substr(0, 32));
  }
}

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Create(LicenseService* service,
                                                       const HttpOptions& options) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->service_ = service;
  if (options.tls_cert.empty() != options.tls_key.empty())
    return InvalidArgument("--tls-cert and --tls-key go together");
  if (options.tls_cert.empty()) {
    if (!options.plaintext)
      return InvalidArgument(
          "the license server speaks TLS: pass --tls-cert and --tls-key (or --plaintext on a "
          "loopback address, for tests)");
    if (!IsLoopback(options.host))
      return PermissionDenied("plaintext HTTP is allowed on loopback addresses only, not {}",
                              options.host);
    server->http_ = std::make_unique<httplib::Server>();
  } else {
    auto tls =
        std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(), options.tls_key.c_str());
    if (!tls->is_valid())
      return InvalidArgument("cannot load the TLS certificate {} and key {}", options.tls_cert,
                             options.tls_key);
    server->http_ = std::move(tls);
    server->tls_ = true;
  }
  const int threads = std::max(4, options.threads);
  server->http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->http_->set_payload_max_length(kMaxBodyBytes);
  server->http_->set_keep_alive_max_count(100000);
  server->http_->set_keep_alive_timeout(30);
  server->http_->set_read_timeout(30, 0);
  server->http_->set_tcp_nodelay(true);
  // One http.request event per request: info with --access-log, debug otherwise. Never the
  // headers (the Authorization header carries a token) nor the bodies.
  const log::Level request_level = options.access_log ? log::Level::kInfo : log::Level::kDebug;
  server->http_->set_logger(
      [request_level](const httplib::Request& req, const httplib::Response& res) {
        if (!log::Enabled(request_level)) return;
        log::Write(request_level, "server", "http.request",
                   fmt::format("{} {} {}", req.method, req.path.substr(0, 256), res.status),
                   {{"method", req.method},
                    {"path", req.path.substr(0, 256)},
                    {"status", res.status},
                    {"bytes_in", req.body.size()},
                    {"bytes_out", res.body.size()},
                    {"remote", req.remote_addr}});
      });
  server->Routes();
  // cpp-httplib 0.11 listens with a backlog of 5 (compiled into the library): 64 clients
  // connecting at once overflow it (dropped handshakes, failed first requests). Keep the
  // listening socket to raise its backlog once bound; listen() again on Linux only resizes it.
  int listen_socket = -1;
  server->http_->set_socket_options([&listen_socket](socket_t socket) {
    httplib::default_socket_options(socket);
    listen_socket = socket;
  });
  if (options.port == 0) {
    server->port_ = server->http_->bind_to_any_port(options.host);
    if (server->port_ <= 0) return IoError("cannot listen on {}", options.host);
  } else {
    if (!server->http_->bind_to_port(options.host, options.port))
      return IoError("cannot listen on {}:{} (in use, or not an address of this machine)",
                     options.host, options.port);
    server->port_ = options.port;
  }
  server->http_->set_socket_options(httplib::default_socket_options);  // drops the reference
  if (listen_socket >= 0 && ::listen(listen_socket, kListenBacklog) != 0)
    return IoError("cannot set the listen backlog to {}: {}", kListenBacklog, std::strerror(errno));
  return server;
}

HttpServer::~HttpServer() = default;

Status HttpServer::Run() {
  if (!http_->listen_after_bind()) return IoError("the HTTP server stopped with an error");
  return Status::Ok();
}

void HttpServer::Stop() { http_->stop(); }

void HttpServer::Routes() {
  httplib::Server& h = *http_;
  LicenseService* s = service_;
  h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    SendError(res, InternalError("the server failed on this request"));
  });
  h.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      SendJson(res, 413,
               {{"error",
                 {{"code", "payload_too_large"},
                  {"message", fmt::format("the request body is over the limit of {} bytes",
                                          kMaxBodyBytes)}}}});
    } else if (res.status == 404)
      SendError(res, NotFound("no endpoint {} {} (see docs/server-api.yaml)", req.method,
                              req.path.substr(0, 128)));
    else
      SendJson(res, res.status, {{"error", {{"code", "http"}, {"message", "HTTP error"}}}});
  });

  h.Get("/v1/health",
        [s](const httplib::Request&, httplib::Response& res) { SendJson(res, 200, s->Health()); });

  // Client API: license token.
  h.Post("/v1/nonce", [s](const httplib::Request& req, httplib::Response& res) {
    Reply(res, s->Nonce(BearerToken(req)));
  });
  h.Post("/v1/attest", [s](const httplib::Request& req, httplib::Response& res) {
    auto body = ParseBody(req);
    Reply(res, body.ok() ? s->Attest(BearerToken(req), *body) : Result<json>(body.status()));
  });
  h.Post("/v1/usage", [s](const httplib::Request& req, httplib::Response& res) {
    auto body = ParseBody(req);
    Result<json> answer =
        body.ok() ? s->Usage(BearerToken(req), *body) : Result<json>(body.status());
    if (!answer.ok())
      log::Warn("server", "usage.refused", "usage report refused",
                {{"status", HttpStatusFor(answer.status())},
                 {"reason", answer.status().message()},
                 {"remote", req.remote_addr}});
    Reply(res, answer);
  });
  h.Get("/v1/license", [s](const httplib::Request& req, httplib::Response& res) {
    Reply(res, s->LicenseStatus(BearerToken(req)));
  });

  // Admin API: admin token. Each handler authenticates first, then reads the body.
  auto admin = [s](auto&& body_fn) {
    return [s, body_fn](const httplib::Request& req, httplib::Response& res) {
      if (Status a = s->CheckAdmin(BearerToken(req)); !a.ok()) {
        log::Warn("server", "admin.refused", "admin request refused",
                  {{"method", req.method},
                   {"path", req.path.substr(0, 256)},
                   {"remote", req.remote_addr},
                   {"reason", a.message()}});
        return SendError(res, a);
      }
      body_fn(req, res);
      // Changes made by an operator; the answer may hold a token (license add): not logged.
      if (req.method == "POST" && res.status < 300)
        log::Info(
            "server", "admin.changed", fmt::format("admin {} {}", req.method, req.path),
            {{"method", req.method}, {"path", req.path.substr(0, 256)}, {"status", res.status}});
    };
  };
  auto with_body = [](const httplib::Request& req, httplib::Response& res, auto&& fn) {
    auto body = ParseBody(req);
    if (!body.ok()) return SendError(res, body.status());
    Reply(res, fn(*body), 201);
  };
  h.Post("/v1/admin/providers", admin([s, with_body](const auto& req, auto& res) {
           with_body(req, res, [s](const json& b) { return s->CreateProvider(b); });
         }));
  h.Get("/v1/admin/providers",
        admin([s](const auto&, auto& res) { Reply(res, s->ListProviders()); }));
  h.Post("/v1/admin/customers", admin([s, with_body](const auto& req, auto& res) {
           with_body(req, res, [s](const json& b) { return s->CreateCustomer(b); });
         }));
  h.Get("/v1/admin/customers", admin([s](const auto& req, auto& res) {
          Reply(res, s->ListCustomers(req.get_param_value("provider_id")));
        }));
  h.Post("/v1/admin/capsules", admin([s, with_body](const auto& req, auto& res) {
           with_body(req, res, [s](const json& b) { return s->CreateCapsule(b); });
         }));
  h.Get("/v1/admin/capsules",
        admin([s](const auto&, auto& res) { Reply(res, s->ListCapsules()); }));
  h.Post("/v1/admin/licenses", admin([s, with_body](const auto& req, auto& res) {
           with_body(req, res, [s](const json& b) { return s->CreateLicense(b); });
         }));
  h.Get("/v1/admin/licenses", admin([s](const auto& req, auto& res) {
          Reply(res, s->ListLicenses(req.get_param_value("customer_id")));
        }));
  h.Get(R"(/v1/admin/licenses/([A-Za-z0-9_.\-]{1,64}))",
        admin([s](const auto& req, auto& res) { Reply(res, s->GetLicense(req.matches[1])); }));
  h.Post(R"(/v1/admin/licenses/([A-Za-z0-9_.\-]{1,64})/revoke)",
         admin([s](const auto& req, auto& res) { Reply(res, s->RevokeLicense(req.matches[1])); }));
  h.Post(R"(/v1/admin/licenses/([A-Za-z0-9_.\-]{1,64})/resolve-forks)",
         admin([s](const auto& req, auto& res) { Reply(res, s->ResolveForks(req.matches[1])); }));
  h.Get(R"(/v1/admin/licenses/([A-Za-z0-9_.\-]{1,64})/reports)",
        admin([s](const auto& req, auto& res) {
          auto after = QueryInt(req, "after", 0);
          auto limit = QueryInt(req, "limit", LicenseService::kDefaultReportPage);
          if (!after.ok()) return SendError(res, after.status());
          if (!limit.ok()) return SendError(res, limit.status());
          Reply(res, s->UsageReports(req.matches[1], *after, *limit));
        }));
  h.Get("/v1/admin/billing", admin([s](const auto& req, auto& res) {
          auto from = QueryInt(req, "from", 0);
          auto to = QueryInt(req, "to", std::numeric_limits<int64_t>::max());
          if (!from.ok()) return SendError(res, from.status());
          if (!to.ok()) return SendError(res, to.status());
          Reply(res, s->Billing(req.get_param_value("customer_id"), *from, *to));
        }));
  h.Get("/v1/admin/alerts", admin([s](const auto& req, auto& res) {
          auto after = QueryInt(req, "after", 0);
          if (!after.ok()) return SendError(res, after.status());
          Reply(res, s->Alerts(req.get_param_value("license_id"), *after));
        }));
}

}  // namespace mlcapsule::server
