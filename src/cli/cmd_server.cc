// The provider's license server and its admin client:
//   mlcapsule server --db sqlite:PATH|postgresql://... --listen HOST:PORT --tls-cert --tls-key
//   mlcapsule admin --server URL SUBCOMMAND ...   (providers, customers, capsules, licenses,
//                                                  billing, alerts, reports; docs/server.md)
// The server trusts its key directory (mode 0700 files it made) and nothing a client sends. The
// admin client verifies a capsule file and its key locally before it uploads the capsule's
// header and key: the server cannot check the provider signature without the whole file.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "capsule/capsule_file.h"
#include "capsule/crypto.h"
#include "capsule/messages.h"
#include "cli/cli_common.h"
#include "host/license_client.h"
#include "server/evidence/openssl_util.h"
#include "server/http_server.h"
#include "server/license_service.h"
#include "server/server_keys.h"

namespace mlcapsule::cli {
namespace {

// The DER certificates in a file: PEM blocks (one or more), or one DER certificate.
Result<std::vector<std::vector<uint8_t>>> CertificatesFromPemOrDer(const std::string& text,
                                                                   const std::string& path) {
  if (text.find("-----BEGIN CERTIFICATE-----") != std::string::npos)
    return server::evidence::PemCertificateBlocks(text, path);
  std::span<const uint8_t> der(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  MLC_RETURN_IF_ERROR(server::evidence::ParseDerCertificate(der, path).status());
  return std::vector<std::vector<uint8_t>>{std::vector<uint8_t>(der.begin(), der.end())};
}

using nlohmann::json;

void Fail(const Status& status) { SetExitCode(ReportError(status)); }

// ---- server -----------------------------------------------------------------------------------

struct ServerOptions {
  std::string db = "sqlite:mlcapsule-server.db";
  std::string listen = "127.0.0.1:8443";
  std::string tls_cert, tls_key;
  bool plaintext = false;
  std::string keys = "mlcapsule-server-keys";
  std::vector<std::string> intel_collateral;
  std::vector<std::string> tpm_ek_ca;
  std::string intel_root_ca;
  uint32_t rate_per_minute = 600;
  int64_t nonce_seconds = 120;
  int threads = 96;
  bool access_log = false;
  std::string create_admin_token;
};

// The key directory: master.key (wraps capsule keys, keys nonces), server.key/.pub (signs
// leases). Made on first start; the capsule must pin server.pub (`pack --lease-signer`).
Status LoadKeys(const std::string& dir, capsule::SecretBytes* master,
                capsule::SigningKeyPair* signer) {
  std::error_code ec;
  if (!std::filesystem::exists(dir)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return IoError("cannot create the key directory {}: {}", dir, ec.message());
    ::chmod(dir.c_str(), 0700);
  }
  MLC_ASSIGN_OR_RETURN(*master, server::LoadMasterKey(dir + "/master.key", /*create=*/true));
  if (!std::filesystem::exists(dir + "/server.key")) {
    MLC_RETURN_IF_ERROR(capsule::WriteKeyPair(dir, "server", capsule::GenerateSigningKeyPair()));
    log::Info("server", "keys.created",
              fmt::format("made a lease signing key {}/server.key (+ .pub)", dir),
              {{"path", dir + "/server.key"}});
  }
  MLC_ASSIGN_OR_RETURN(*signer, capsule::ReadSecretKeyFile(dir + "/server.key"));
  return Status::Ok();
}

Result<std::unique_ptr<server::LicenseService>> OpenService(const ServerOptions& o) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  MLC_ASSIGN_OR_RETURN(std::unique_ptr<server::Store> store, server::OpenStore(o.db));
  MLC_RETURN_IF_ERROR(store->Migrate());
  capsule::SecretBytes master;
  capsule::SigningKeyPair signer;
  MLC_RETURN_IF_ERROR(LoadKeys(o.keys, &master, &signer));
  server::ServiceOptions options;
  options.default_rate_per_minute = o.rate_per_minute;
  options.nonce_seconds = o.nonce_seconds;
  for (const std::string& path : o.intel_collateral) {
    MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4 << 20));
    MLC_ASSIGN_OR_RETURN(auto collateral, server::evidence::ParseIntelCollateral(text));
    options.intel_collateral.push_back(std::move(collateral));
  }
  for (const std::string& path : o.tpm_ek_ca) {
    MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 20));
    MLC_ASSIGN_OR_RETURN(auto roots, CertificatesFromPemOrDer(text, path));
    for (auto& der : roots) options.anchors.tpm_ek_roots.push_back(std::move(der));
  }
  if (!o.intel_root_ca.empty()) {
    MLC_ASSIGN_OR_RETURN(std::string der, ReadFile(o.intel_root_ca, 64 << 10));
    options.anchors.intel_root_der.assign(der.begin(), der.end());
    log::Warn("server", "trust.intel_root_replaced",
              fmt::format("Intel root of trust replaced by {} (test PKIs only; real SGX/TDX "
                          "quotes will be refused)",
                          o.intel_root_ca),
              {{"path", o.intel_root_ca}});
  }
  return server::LicenseService::Create(std::move(store), std::move(master), std::move(signer),
                                        std::move(options));
}

void RunServer(const ServerOptions& o) {
  auto address = ParseListenAddress(o.listen, /*loopback_only=*/false);
  if (!address.ok()) {
    ReportError(address.status());
    return SetExitCode(kExitUsage);
  }
  const sigset_t signals = BlockStopSignals();

  auto service = OpenService(o);
  if (!service.ok()) return Fail(service.status());
  if (!o.create_admin_token.empty()) {
    auto token = (*service)->CreateAdminToken(o.create_admin_token);
    if (!token.ok()) return Fail(token.status());
    std::printf("%s\n", token->c_str());
    log::Info("server", "admin_token.created",
              fmt::format("admin token '{}' created; it is shown once (the server keeps only its "
                          "hash)",
                          o.create_admin_token),
              {{"name", o.create_admin_token}});
    return SetExitCode(kExitOk);
  }
  server::HttpOptions http;
  http.host = address->host;
  http.port = address->port;
  http.tls_cert = o.tls_cert;
  http.tls_key = o.tls_key;
  http.plaintext = o.plaintext;
  http.threads = o.threads;
  http.access_log = o.access_log;
  auto front = server::HttpServer::Create(service->get(), http);
  if (!front.ok()) return Fail(front.status());
  std::printf("listening on %s://%s:%d\n", (*front)->tls() ? "https" : "http",
              address->url_host.c_str(), (*front)->port());
  std::printf("lease signer: %s (%s/server.pub)\n",
              capsule::ToHex((*service)->lease_signer()).c_str(), o.keys.c_str());
  std::fflush(stdout);
  // The database URL may hold a password (postgresql://user:secret@host/db): log its kind only.
  const std::string db_kind = o.db.rfind("sqlite:", 0) == 0 ? o.db : "postgresql";
  log::Info("server", "server.started",
            fmt::format("listening on {}://{}:{}", (*front)->tls() ? "https" : "http",
                        address->url_host, (*front)->port()),
            {{"address", address->url_host},
             {"port", (*front)->port()},
             {"tls", (*front)->tls()},
             {"tls_cert", o.tls_cert},
             {"db", db_kind},
             {"keys", o.keys},
             {"lease_signer", capsule::ToHex((*service)->lease_signer())},
             {"threads", o.threads},
             {"rate_limit", o.rate_per_minute},
             {"intel_collateral", o.intel_collateral.size()},
             {"tpm_ek_ca", o.tpm_ek_ca.size()}});
  server::HttpServer* running = front->get();
  const bool served = ServeUntilSignal(
      signals, "server", [&] { return running->Run().ok(); }, [&] { running->Stop(); });
  front->reset();
  service->reset();  // the report batcher drains before the store closes
  if (served)
    log::Info("server", "server.stopped", "stopped");
  else
    log::Error("server", "server.failed", "the HTTP server stopped with an error");
  SetExitCode(served ? kExitOk : kExitFailure);
}

// ---- admin client -----------------------------------------------------------------------------

struct AdminArgs {
  std::string server;
  std::string token_file;
  std::string ca_cert;
};

Result<std::string> ReadToken(const std::string& file, const char* env, const char* what) {
  if (!file.empty()) {
    MLC_ASSIGN_OR_RETURN(std::string text, ReadFile(file, 1024));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
      text.pop_back();
    return text;
  }
  if (const char* value = std::getenv(env); value != nullptr && *value != '\0')
    return std::string(value);
  return InvalidArgument("no {}: pass --token-file FILE or set {}", what, env);
}

struct AdminCall {
  std::string method;  // GET or POST
  std::string path;
  json body;
};

void RunAdmin(const AdminArgs& a, const std::function<Result<AdminCall>()>& make) {
  if (Status s = capsule::InitCrypto(); !s.ok()) return Fail(s);
  auto token = ReadToken(a.token_file, "MLCAPSULE_ADMIN_TOKEN", "admin token");
  if (!token.ok()) return Fail(token.status());
  auto call = make();
  if (!call.ok()) return Fail(call.status());
  auto server = host::ServerConnection::Open(a.server, {.ca_cert = a.ca_cert});
  if (!server.ok()) return Fail(server.status());
  auto answer = call->method == "GET" ? (*server)->Get(call->path, *token)
                                      : (*server)->Post(call->path, *token, call->body);
  if (!answer.ok()) return Fail(answer.status());
  std::printf("%s\n", answer->dump(2).c_str());
}

// `admin reports`: pages through a license's recorded usage reports and writes each one's exact
// signed bytes to DIR/LICENSE-ID.report (what `usage --out` writes, what `watermark verify`
// reads). Each report's signature is checked before it is written; a file that exists already
// is left alone when it holds the same bytes and is an error otherwise.
struct ReportsOptions {
  std::string license;
  std::string out;
  int64_t after = 0;
};

Status ExportReports(const AdminArgs& a, const ReportsOptions& o, json* summary) {
  MLC_RETURN_IF_ERROR(capsule::InitCrypto());
  MLC_ASSIGN_OR_RETURN(std::string token,
                       ReadToken(a.token_file, "MLCAPSULE_ADMIN_TOKEN", "admin token"));
  const bool id_ok =
      !o.license.empty() && o.license.size() <= 64 &&
      std::all_of(o.license.begin(), o.license.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-';
      });
  if (!id_ok) return InvalidArgument("--license '{}' is not a license id", o.license);
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) return IoError("cannot create {}: {}", o.out, ec.message());
  MLC_ASSIGN_OR_RETURN(auto server, host::ServerConnection::Open(a.server, {.ca_cert = a.ca_cert}));
  int64_t after = o.after;
  uint64_t written = 0, unchanged = 0, escrow_records = 0;
  for (;;) {
    MLC_ASSIGN_OR_RETURN(json page, server->Get(fmt::format("/v1/admin/licenses/{}/reports?"
                                                            "after={}&limit=100",
                                                            o.license, after),
                                                token));
    if (!page.contains("reports") || !page["reports"].is_array() || !page.contains("next_after") ||
        !page["next_after"].is_number_integer())
      return InvalidArgument("the license server's report page is not what this client expects");
    const json& reports = page["reports"];
    if (reports.empty()) break;
    for (const json& entry : reports) {
      if (!entry.contains("id") || !entry["id"].is_number_integer() || !entry.contains("bytes") ||
          !entry["bytes"].is_string())
        return InvalidArgument("the license server sent a report without id or bytes");
      const int64_t id = entry["id"].get<int64_t>();
      if (id <= after)
        return InvalidArgument("the license server sent report {} after {}: ids must grow", id,
                               after);
      MLC_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                           capsule::FromBase64(entry["bytes"].get<std::string>(),
                                               capsule::kMaxUsageReportBytes, "report bytes"));
      Result<capsule::UsageReport> report = capsule::ParseAndVerifyUsageReport(bytes);
      if (!report.ok()) return report.status().WithContext(fmt::format("report {}", id));
      if (report->license_id != o.license)
        return InvalidArgument("report {} is for license {}, not {}", id,
                               report->license_id.substr(0, 128), o.license);
      escrow_records += report->escrow.size();
      const std::string path = fmt::format("{}/{}-{:010}.report", o.out, o.license, id);
      const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      if (std::filesystem::exists(path, ec)) {
        MLC_ASSIGN_OR_RETURN(std::string existing, ReadFile(path, capsule::kMaxUsageReportBytes));
        if (existing != text)
          return FailedPrecondition("{} exists and holds other bytes than report {}: move it away",
                                    path, id);
        ++unchanged;
      } else {
        MLC_RETURN_IF_ERROR(WriteFile(path, text));
        ++written;
      }
      after = id;
    }
  }
  *summary = {{"license_id", o.license}, {"out", o.out},     {"written", written},
              {"unchanged", unchanged},  {"last_id", after}, {"escrow_records", escrow_records}};
  return Status::Ok();
}

std::string Query(std::initializer_list<std::pair<const char*, std::string>> params) {
  std::string q;
  for (const auto& [name, value] : params) {
    if (value.empty()) continue;
    q += (q.empty() ? "?" : "&") + std::string(name) + "=" + value;
  }
  return q;
}

Result<int64_t> ParseDate(const std::string& text, int64_t fallback) {
  if (text.empty()) return fallback;
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%d", &tm);
  if (end == nullptr || *end != '\0') return InvalidArgument("date '{}' is not YYYY-MM-DD", text);
  return static_cast<int64_t>(timegm(&tm));
}

void AddAdminCommands(CLI::App& app) {
  static AdminArgs args;
  CLI::App* admin = app.add_subcommand(
      "admin",
      "Provider: manage the license server (providers, customers, capsules, licenses, "
      "billing, alerts, usage reports) over its HTTPS API");
  admin->add_option("--server", args.server, "License server URL (https://HOST:PORT)")->required();
  admin->add_option("--token-file", args.token_file,
                    "File holding the admin token (default: $MLCAPSULE_ADMIN_TOKEN)");
  admin->add_option("--ca-cert", args.ca_cert, "PEM CA bundle to verify the server with");
  admin->require_subcommand(1);

  auto add = [&](CLI::App* parent, const char* name, const char* help) {
    CLI::App* c = parent->add_subcommand(name, help);
    return c;
  };
  CLI::App* provider = admin->add_subcommand("provider", "Providers")->require_subcommand(1);
  static std::string provider_id, provider_name;
  CLI::App* pa = add(provider, "add", "Register a provider");
  pa->add_option("--name", provider_name, "Display name")->required();
  pa->add_option("--id", provider_id, "Identifier (default: generated)");
  pa->callback([] {
    RunAdmin(args, [] {
      json body = {{"name", provider_name}};
      if (!provider_id.empty()) body["id"] = provider_id;
      return Result<AdminCall>(AdminCall{"POST", "/v1/admin/providers", body});
    });
  });
  add(provider, "list", "List providers")->callback([] {
    RunAdmin(args, [] { return Result<AdminCall>(AdminCall{"GET", "/v1/admin/providers", {}}); });
  });

  CLI::App* customer = admin->add_subcommand("customer", "Customers")->require_subcommand(1);
  static std::string customer_id, customer_provider, customer_name;
  CLI::App* ca = add(customer, "add", "Register a customer of a provider");
  ca->add_option("--provider", customer_provider, "Provider id")->required();
  ca->add_option("--name", customer_name, "Display name")->required();
  ca->add_option("--id", customer_id, "Identifier (default: generated)");
  ca->callback([] {
    RunAdmin(args, [] {
      json body = {{"provider_id", customer_provider}, {"name", customer_name}};
      if (!customer_id.empty()) body["id"] = customer_id;
      return Result<AdminCall>(AdminCall{"POST", "/v1/admin/customers", body});
    });
  });
  static std::string list_provider;
  CLI::App* cl = add(customer, "list", "List customers");
  cl->add_option("--provider", list_provider, "Only this provider's");
  cl->callback([] {
    RunAdmin(args, [] {
      return Result<AdminCall>(
          AdminCall{"GET", "/v1/admin/customers" + Query({{"provider_id", list_provider}}), {}});
    });
  });

  CLI::App* capsule_cmd = admin->add_subcommand("capsule", "Capsules")->require_subcommand(1);
  static std::string capsule_path, capsule_key_path, capsule_provider, capsule_name;
  CLI::App* cpa = add(capsule_cmd, "add",
                      "Register a capsule: verifies the file and its key here, then uploads the "
                      "signed header and the capsule key (stored wrapped under the master key)");
  cpa->add_option("CAPSULE", capsule_path, "The .capsule file")
      ->required()
      ->check(CLI::ExistingFile);
  cpa->add_option("--key", capsule_key_path, "Capsule key file (default: CAPSULE.key)");
  cpa->add_option("--provider", capsule_provider, "Provider id")->required();
  cpa->add_option("--name", capsule_name, "Display name (default: the model name)");
  cpa->callback([] {
    RunAdmin(args, []() -> Result<AdminCall> {
      MLC_ASSIGN_OR_RETURN(std::string bytes,
                           ReadFile(capsule_path, capsule::kMaxCapsuleFileBytes));
      const std::span<const uint8_t> file(reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size());
      MLC_ASSIGN_OR_RETURN(capsule::CapsuleView view, capsule::ParseAndVerifyCapsule(file));
      MLC_ASSIGN_OR_RETURN(capsule::SecretBytes key,
                           capsule::ReadCapsuleKeyFile(
                               capsule_key_path.empty() ? capsule_path + ".key" : capsule_key_path,
                               view.header.capsule_id));
      // The key must open this capsule: decrypting checks every chunk and the plan digest.
      MLC_ASSIGN_OR_RETURN(capsule::SecretBytes plan, capsule::DecryptPayload(view, key));
      (void)plan;
      json body = {{"provider_id", capsule_provider},
                   {"header", capsule::ToBase64(view.header_region)},
                   {"capsule_key", capsule::ToHex(key.span())}};
      if (!capsule_name.empty()) body["name"] = capsule_name;
      return AdminCall{"POST", "/v1/admin/capsules", body};
    });
  });
  add(capsule_cmd, "list", "List capsules")->callback([] {
    RunAdmin(args, [] { return Result<AdminCall>(AdminCall{"GET", "/v1/admin/capsules", {}}); });
  });

  CLI::App* license = admin->add_subcommand("license", "Licenses")->require_subcommand(1);
  static std::string lic_customer, lic_capsule, lic_id, lic_currency = "EUR";
  static uint64_t lic_queries = 0, lic_lease_queries = 0, lic_rate = 0;
  static double lic_lease_days = 7, lic_days = 365, lic_price = 0;
  CLI::App* la = add(license, "add",
                     "Issue a license: prints its token once (give it to the customer; the "
                     "server keeps only its hash)");
  la->add_option("--customer", lic_customer, "Customer id")->required();
  la->add_option("--capsule", lic_capsule, "Capsule id (hex, from `capsule list`)")->required();
  la->add_option("--queries", lic_queries, "Total queries over the license's life")->required();
  la->add_option("--lease-queries", lic_lease_queries,
                 "Most queries one lease may carry (default: --queries)");
  la->add_option("--lease-days", lic_lease_days, "Validity of one lease in days")
      ->capture_default_str();
  la->add_option("--days", lic_days, "Validity of the license in days")->capture_default_str();
  la->add_option("--price", lic_price, "Price per query (in --currency)")->capture_default_str();
  la->add_option("--currency", lic_currency, "ISO 4217 currency code")->capture_default_str();
  la->add_option("--rate", lic_rate, "Requests per minute (0: the server default)");
  la->add_option("--id", lic_id, "Identifier (default: generated)");
  la->callback([] {
    RunAdmin(args, [] {
      json body = {{"customer_id", lic_customer}, {"capsule_id", lic_capsule},
                   {"query_quota", lic_queries},  {"lease_days", lic_lease_days},
                   {"valid_days", lic_days},      {"price_per_query", lic_price},
                   {"currency", lic_currency},    {"rate_per_minute", lic_rate}};
      if (lic_lease_queries) body["lease_queries"] = lic_lease_queries;
      if (!lic_id.empty()) body["id"] = lic_id;
      return Result<AdminCall>(AdminCall{"POST", "/v1/admin/licenses", body});
    });
  });
  static std::string list_customer;
  CLI::App* ll = add(license, "list", "List licenses");
  ll->add_option("--customer", list_customer, "Only this customer's");
  ll->callback([] {
    RunAdmin(args, [] {
      return Result<AdminCall>(
          AdminCall{"GET", "/v1/admin/licenses" + Query({{"customer_id", list_customer}}), {}});
    });
  });
  static std::string target_license;
  for (const char* verb : {"show", "revoke", "resolve-forks"}) {
    CLI::App* c = add(license, verb,
                      std::string(verb) == "show"     ? "A license with its usage and current lease"
                      : std::string(verb) == "revoke" ? "Revoke a license (no further lease)"
                                                      : "Mark its fork alerts resolved (after "
                                                        "investigation), allowing renewal again");
    c->add_option("LICENSE", target_license, "License id")->required();
    const std::string v = verb;
    c->callback([v] {
      RunAdmin(args, [v] {
        const std::string base = "/v1/admin/licenses/" + target_license;
        if (v == "show") return Result<AdminCall>(AdminCall{"GET", base, {}});
        return Result<AdminCall>(AdminCall{"POST", base + "/" + v, json::object()});
      });
    });
  }

  static std::string bill_customer, bill_from, bill_to;
  CLI::App* billing = admin->add_subcommand("billing", "What a customer owes for a period");
  billing->add_option("--customer", bill_customer, "Customer id")->required();
  billing->add_option("--from", bill_from, "First day (YYYY-MM-DD, UTC; default: the beginning)");
  billing->add_option("--to", bill_to, "Day after the last (YYYY-MM-DD, UTC; default: now)");
  billing->callback([] {
    RunAdmin(args, []() -> Result<AdminCall> {
      MLC_ASSIGN_OR_RETURN(int64_t from, ParseDate(bill_from, 0));
      MLC_ASSIGN_OR_RETURN(int64_t to,
                           ParseDate(bill_to, static_cast<int64_t>(std::time(nullptr)) + 1));
      return AdminCall{"GET",
                       "/v1/admin/billing" + Query({{"customer_id", bill_customer},
                                                    {"from", std::to_string(from)},
                                                    {"to", std::to_string(to)}}),
                       {}};
    });
  });

  static ReportsOptions reports;
  CLI::App* reports_cmd = admin->add_subcommand(
      "reports",
      "Write a license's recorded usage reports (exact signed bytes, one file each) to a "
      "directory, for `watermark verify`");
  reports_cmd->add_option("--license", reports.license, "License id")->required();
  reports_cmd->add_option("--out", reports.out, "Directory to write LICENSE-ID.report files to")
      ->required();
  reports_cmd->add_option("--after", reports.after, "Only reports with a larger id")
      ->check(CLI::NonNegativeNumber);
  reports_cmd->callback([] {
    json summary;
    if (Status s = ExportReports(args, reports, &summary); !s.ok()) return Fail(s);
    std::printf("%s\n", summary.dump(2).c_str());
  });

  static std::string alerts_license;
  static int64_t alerts_after = 0;
  CLI::App* alerts = admin->add_subcommand("alerts", "Forks, replays and defense alarms");
  alerts->add_option("--license", alerts_license, "Only this license's");
  alerts->add_option("--after", alerts_after, "Only alerts with a larger id");
  alerts->callback([] {
    RunAdmin(args, [] {
      return Result<AdminCall>(AdminCall{
          "GET",
          "/v1/admin/alerts" + Query({{"license_id", alerts_license},
                                      {"after", alerts_after ? std::to_string(alerts_after) : ""}}),
          {}});
    });
  });
}

}  // namespace

void AddServerCommands(CLI::App& app) {
  static ServerOptions o;
  CLI::App* cmd = app.add_subcommand(
      "server",
      "Provider: run the license and attestation server (HTTPS + JSON; docs/server.md, "
      "docs/server-api.yaml)");
  cmd->add_option("--db", o.db, "Storage: sqlite:PATH, or postgresql://... (a libpq URL)")
      ->capture_default_str();
  cmd->add_option("--listen", o.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  cmd->add_option("--tls-cert", o.tls_cert, "PEM certificate (chain) of the server");
  cmd->add_option("--tls-key", o.tls_key, "PEM private key of the server");
  cmd->add_flag("--plaintext", o.plaintext,
                "Serve plain HTTP (loopback addresses only; for tests or behind a local TLS "
                "proxy)");
  cmd->add_option("--keys", o.keys,
                  "Key directory: master.key (wraps capsule keys) and server.key/.pub (signs "
                  "leases), made on first start; instances sharing a database share it")
      ->capture_default_str();
  cmd->add_option("--intel-collateral", o.intel_collateral,
                  "Intel PCS collateral (dcap-qvl JSON) for SGX/TDX quotes; repeatable, chosen by "
                  "FMSPC");
  cmd->add_option("--tpm-ek-ca", o.tpm_ek_ca,
                  "A CA (PEM or DER; a PEM file may hold several) that TPM endorsement-key "
                  "certificates must chain to: the TPM vendors' roots, or swtpm's local CA in "
                  "tests; repeatable. Without one, TPM evidence is refused (ek_chain)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--intel-root-ca", o.intel_root_ca,
                  "Replace the pinned Intel SGX Root CA (DER) - test PKIs only");
  cmd->add_option("--rate-limit", o.rate_per_minute, "Default requests per minute per license")
      ->capture_default_str();
  cmd->add_option("--nonce-seconds", o.nonce_seconds, "Lifetime of a nonce")
      ->check(CLI::Range(10, 3600))
      ->capture_default_str();
  cmd->add_option("--threads", o.threads, "Connection threads (one per open connection)")
      ->check(CLI::Range(4, 4096))
      ->capture_default_str();
  cmd->add_flag("--access-log", o.access_log,
                "Log every request (http.request events) at info level; they are debug otherwise");
  cmd->add_option("--create-admin-token", o.create_admin_token,
                  "Create an admin token with this name, print it once and exit (bootstrap)");
  cmd->callback([] { RunServer(o); });
  AddAdminCommands(app);
}

}  // namespace mlcapsule::cli
