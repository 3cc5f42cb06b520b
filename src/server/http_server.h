// The license server's HTTP/1.1 + JSON front end (docs/server-api.yaml is the OpenAPI
// description). cpp-httplib with OpenSSL; TLS unless the operator explicitly asks for plaintext
// on a loopback address (tests, a TLS-terminating proxy on the same host). Every request body is
// bounded (413 beyond kMaxBodyBytes); errors are JSON {"error": {"code", "message"}} with a 4xx
// for anything the client got wrong, and nothing is written for a request that fails.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/status.h"
#include "server/license_service.h"

namespace httplib {
class Server;
}

namespace mlcapsule::server {

inline constexpr size_t kMaxBodyBytes = 2 << 20;  // the largest: a capsule header upload

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8443;                // 0: any free port (see HttpServer::port)
  std::string tls_cert, tls_key;  // PEM files; both or neither
  bool plaintext = false;         // allowed on loopback addresses only
  int threads = 96;               // connection threads (one per open keep-alive connection)
  bool access_log = false;        // one line per request on stderr
};

class HttpServer {
 public:
  static Result<std::unique_ptr<HttpServer>> Create(LicenseService* service,
                                                    const HttpOptions& options);
  ~HttpServer();
  int port() const { return port_; }
  bool tls() const { return tls_; }
  // Serves until Stop() (from another thread or a signal handler thread).
  Status Run();
  void Stop();

 private:
  HttpServer() = default;
  void Routes();
  LicenseService* service_ = nullptr;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  bool tls_ = false;
};

}  // namespace mlcapsule::server
