// A self-signed TLS certificate for a license server on loopback: what `mlcapsule demo` uses (and
// what a test bench needs) instead of running the `openssl req` command. P-256 key, SHA-256
// signature, subjectAltName with the given IP addresses and DNS names, basicConstraints CA:TRUE so
// the certificate is its own trust anchor (the client passes it as --ca-cert). Not for production:
// a real deployment uses a certificate from the operator's CA (docs/operations.md).
//
//   MLC_ASSIGN_OR_RETURN(server::SelfSignedCert cert,
//                        server::MakeSelfSignedCert({.ip_addresses = {"127.0.0.1"}}));
//   MLC_RETURN_IF_ERROR(server::WriteSelfSignedCert(cert, "tls.crt", "tls.key"));
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace mlcapsule::server {

struct SelfSignedCertOptions {
  std::string common_name = "127.0.0.1";
  std::vector<std::string> ip_addresses = {"127.0.0.1"};  // IPv4 or IPv6 literals
  std::vector<std::string> dns_names;
  int valid_days = 2;
};

struct SelfSignedCert {
  std::string certificate_pem;
  std::string private_key_pem;  // PKCS#8, unencrypted
};

Result<SelfSignedCert> MakeSelfSignedCert(const SelfSignedCertOptions& options);
// Writes the key (a new file, mode 0600 from its creation: CreateNewFile refuses an existing file
// or a symlink) and the certificate (mode 0644, replaced atomically).
Status WriteSelfSignedCert(const SelfSignedCert& cert, const std::string& cert_path,
                           const std::string& key_path);

}  // namespace mlcapsule::server
