// The client machine's side of the license server protocol (DESIGN.md, "Key release and
// metering"): get a nonce, have the trusted core make evidence bound to it, exchange it for a
// lease, and send signed usage reports. The server is untrusted from here as much as the host is
// from the core: the core checks every lease itself (signer pinned in the capsule, bound to its
// own keys). A server that cannot be reached is an IoError, so the caller keeps working offline
// within the lease it has.
//
//   MLC_ASSIGN_OR_RETURN(auto server, ServerConnection::Open("https://licenses.example:8443",
//                                                            {.ca_cert = "ca.pem"}));
//   MLC_ASSIGN_OR_RETURN(SyncResult sync, SyncLicense(*client, *server, token, {}));
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"
#include "host/client.h"

namespace httplib {
class Client;
}

namespace mlcapsule::host {

struct ServerOptions {
  std::string ca_cert;       // PEM bundle to verify the server with ("" = the system's)
  int timeout_seconds = 10;  // connect and read
};

class ServerConnection {
 public:
  // `url`: https://HOST:PORT (http:// only for loopback test servers).
  static Result<std::unique_ptr<ServerConnection>> Open(const std::string& url,
                                                        const ServerOptions& options);
  ~ServerConnection();
  // The JSON answer of a 2xx; the server's error message as a Status otherwise (its HTTP status
  // mapped back: 400 InvalidArgument, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound,
  // 409 FailedPrecondition/AlreadyExists, 429 ResourceExhausted); IoError when unreachable.
  Result<nlohmann::json> Get(const std::string& path, const std::string& token);
  Result<nlohmann::json> Post(const std::string& path, const std::string& token,
                              const nlohmann::json& body);
  const std::string& url() const { return url_; }

 private:
  ServerConnection() = default;
  Result<nlohmann::json> Answer(const std::string& what, const void* result);
  std::string url_;
  std::unique_ptr<httplib::Client> http_;
};

struct SyncOptions {
  double renew_fraction = 0.8;           // renew once this share of the lease quota is used
  int64_t renew_before_seconds = 86400;  // or when the lease ends within this
  bool force_renew = false;
};

struct SyncResult {
  bool online = false;          // the server answered
  std::string offline_reason;   // why not, when it did not
  bool reported = false;        // a usage report was recorded
  std::string report_outcome;   // "accepted", "duplicate", "stale"
  uint64_t billed_queries = 0;  // what that report added to the bill
  bool renewed = false;         // a new lease is installed
  nlohmann::json lease;         // the server's description of the new lease
};

// Reports usage (when the core has a lease) and renews the lease when it is missing, nearly used
// up or about to end. Offline (server unreachable), it returns online = false and leaves the core
// as it was; every other failure is an error.
Result<SyncResult> SyncLicense(Client& client, ServerConnection& server,
                               const std::string& license_token, const SyncOptions& options);

}  // namespace mlcapsule::host
