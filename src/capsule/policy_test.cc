// Policy parser: defaults, canonical round trip, every unknown-field path, every range boundary,
// wrong types, the rules between fields (watermark escrow key, MemGuard's output modes), JSON-level
// attacks (duplicates, nesting, size), the example policies (examples/policies/ and the JSON blocks
// of docs/policy.md), and that docs/policy.schema.json says the same as the parser.
#include "capsule/policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace mlcapsule::capsule {
namespace {

using Json = nlohmann::json;

// The smallest valid policy: everything else takes its default.
Json Minimal() { return Json{{"version", 1}, {"tee", {{"accept", {"software"}}}}}; }

Json With(Json document, const std::string& pointer, Json value) {
  document[Json::json_pointer(pointer)] = std::move(value);
  return document;
}

Result<Policy> Parse(const Json& document) { return ParsePolicy(document.dump()); }

// The error message of parsing `document`; fails the test when it parses.
std::string ErrorOf(const std::string& text) {
  Result<Policy> policy = ParsePolicy(text);
  EXPECT_FALSE(policy.ok()) << "parsed unexpectedly: " << text;
  if (policy.ok()) return "";
  EXPECT_EQ(policy.status().code(), StatusCode::kInvalidArgument);
  return policy.status().message();
}
std::string ErrorOf(const Json& document) { return ErrorOf(document.dump()); }

void ExpectSamePolicy(const Policy& a, const Policy& b) {
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.description, b.description);
  EXPECT_EQ(a.tee.accept, b.tee.accept);
  ASSERT_EQ(a.tee.measurements.size(), b.tee.measurements.size());
  for (size_t i = 0; i < a.tee.measurements.size(); ++i) {
    EXPECT_EQ(a.tee.measurements[i].tee, b.tee.measurements[i].tee);
    EXPECT_EQ(a.tee.measurements[i].allowed, b.tee.measurements[i].allowed);
  }
  EXPECT_EQ(a.tee.allow_debug, b.tee.allow_debug);
  EXPECT_EQ(a.tee.tcb_statuses, b.tee.tcb_statuses);
  EXPECT_EQ(a.tee.sgx.mr_signers, b.tee.sgx.mr_signers);
  EXPECT_EQ(a.tee.sgx.isv_prod_id, b.tee.sgx.isv_prod_id);
  EXPECT_EQ(a.tee.sgx.min_isv_svn, b.tee.sgx.min_isv_svn);
  EXPECT_EQ(a.tee.snp.max_vmpl, b.tee.snp.max_vmpl);
  EXPECT_EQ(a.lease.max_queries, b.lease.max_queries);
  EXPECT_EQ(a.lease.max_days, b.lease.max_days);
  EXPECT_EQ(a.lease.seal_every, b.lease.seal_every);
  EXPECT_EQ(a.output.mode, b.output.mode);
  EXPECT_EQ(a.output.k, b.output.k);
  EXPECT_EQ(a.output.decimals, b.output.decimals);
  EXPECT_EQ(a.output.logits, b.output.logits);
  EXPECT_EQ(a.output.tensor, b.output.tensor);
  // Reals compare exactly: the canonical form writes the shortest text that reads back the same.
  EXPECT_EQ(a.output.beta, b.output.beta);
  EXPECT_EQ(a.output.gamma, b.output.gamma);
  EXPECT_EQ(a.output.sigma, b.output.sigma);
  const PradaPolicy &pa = a.defenses.prada, &pb = b.defenses.prada;
  EXPECT_EQ(pa.enabled, pb.enabled);
  EXPECT_EQ(pa.delta, pb.delta);
  EXPECT_EQ(pa.action, pb.action);
  EXPECT_EQ(pa.throttle_per_second, pb.throttle_per_second);
  EXPECT_EQ(pa.throttle_per_day, pb.throttle_per_day);
  EXPECT_EQ(pa.max_stored, pb.max_stored);
  EXPECT_EQ(pa.window, pb.window);
  EXPECT_EQ(pa.test_every, pb.test_every);
  EXPECT_EQ(pa.min_class_entries, pb.min_class_entries);
  EXPECT_EQ(pa.max_checks, pb.max_checks);
  const WatermarkPolicy &wa = a.defenses.watermark, &wb = b.defenses.watermark;
  EXPECT_EQ(wa.enabled, wb.enabled);
  EXPECT_EQ(wa.rate, wb.rate);
  EXPECT_EQ(wa.escrow, wb.escrow);
  EXPECT_EQ(wa.escrow_key, wb.escrow_key);
  EXPECT_EQ(wa.max_escrow, wb.max_escrow);
  EXPECT_EQ(wa.max_escrow_bytes, wb.max_escrow_bytes);
  EXPECT_EQ(a.defenses.memguard.enabled, b.defenses.memguard.enabled);
  EXPECT_EQ(a.defenses.memguard.budget, b.defenses.memguard.budget);
  EXPECT_EQ(a.defenses.memguard.steps, b.defenses.memguard.steps);
  EXPECT_EQ(a.rate_limit.per_second, b.rate_limit.per_second);
  EXPECT_EQ(a.rate_limit.per_day, b.rate_limit.per_day);
}

const std::string kSgx(64, 'a');
const std::string kTdx(96, 'b');
const std::string kEscrowKey =
    "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f";  // any 32 bytes, in hex

constexpr OutputMode kAllOutputModes[] = {OutputMode::kProbabilities,  OutputMode::kTopK,
                                          OutputMode::kRounded,        OutputMode::kLabel,
                                          OutputMode::kReverseSigmoid, OutputMode::kGaussian};

TEST(PolicyTest, MinimalPolicyTakesDefaults) {
  Result<Policy> policy = Parse(Minimal());
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_EQ(policy->version, 1);
  EXPECT_EQ(policy->description, "");
  EXPECT_EQ(policy->tee.accept, std::vector<std::string>{"software"});
  EXPECT_TRUE(policy->tee.measurements.empty());
  EXPECT_FALSE(policy->tee.allow_debug);
  EXPECT_EQ(policy->tee.tcb_statuses,
            (std::vector<std::string>{"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                      "ConfigurationAndSWHardeningNeeded"}));
  EXPECT_TRUE(policy->tee.sgx.mr_signers.empty());
  EXPECT_FALSE(policy->tee.sgx.isv_prod_id.has_value());
  EXPECT_EQ(policy->tee.sgx.min_isv_svn, 0);
  EXPECT_EQ(policy->tee.snp.max_vmpl, 0u);
  EXPECT_EQ(policy->lease.max_queries, 100000u);
  EXPECT_EQ(policy->lease.max_days, 30);
  EXPECT_EQ(policy->lease.seal_every, 1000u);
  EXPECT_EQ(policy->output.mode, OutputMode::kProbabilities);
  EXPECT_EQ(policy->output.k, 1);
  EXPECT_EQ(policy->output.decimals, 2);
  EXPECT_FALSE(policy->output.logits);
  EXPECT_EQ(policy->output.tensor, "");
  EXPECT_EQ(policy->output.beta, 0.4);
  EXPECT_EQ(policy->output.gamma, 2.0);
  EXPECT_EQ(policy->output.sigma, 0.05);
  // Every defense is off and there is no rate limit, as docs/policy.md documents.
  const PradaPolicy& prada = policy->defenses.prada;
  EXPECT_FALSE(prada.enabled);
  EXPECT_EQ(prada.delta, 0.9);
  EXPECT_EQ(prada.action, AlarmAction::kLog);
  EXPECT_EQ(prada.throttle_per_second, 1u);
  EXPECT_EQ(prada.throttle_per_day, 1000u);
  EXPECT_EQ(prada.max_stored, 100000u);
  EXPECT_EQ(prada.window, 5000u);
  EXPECT_EQ(prada.test_every, 10u);
  EXPECT_EQ(prada.min_class_entries, 10u);
  EXPECT_EQ(prada.max_checks, 0u);
  const WatermarkPolicy& watermark = policy->defenses.watermark;
  EXPECT_FALSE(watermark.enabled);
  EXPECT_EQ(watermark.rate, 0.01);
  EXPECT_EQ(watermark.escrow, EscrowMode::kAfterAlarm);
  EXPECT_EQ(watermark.escrow_key, "");
  EXPECT_EQ(watermark.max_escrow, 64u);
  EXPECT_EQ(watermark.max_escrow_bytes, 262144u);
  EXPECT_FALSE(policy->defenses.memguard.enabled);
  EXPECT_EQ(policy->defenses.memguard.budget, 0.5);
  EXPECT_EQ(policy->defenses.memguard.steps, 100u);
  EXPECT_EQ(policy->rate_limit.per_second, 0u);
  EXPECT_EQ(policy->rate_limit.per_day, 0u);
  EXPECT_EQ(PradaMaxStoredBytesLimit(), uint64_t{2} << 30);
  // Empty sections are the same as absent ones.
  Json empty_sections = Minimal();
  empty_sections["lease"] = Json::object();
  empty_sections["output"] = Json::object();
  empty_sections["defenses"] = Json::object();
  empty_sections["rate_limit"] = Json::object();
  empty_sections["tee"]["measurements"] = Json::object();
  empty_sections["tee"]["sgx"] = Json::object();
  empty_sections["tee"]["snp"] = Json::object();
  Result<Policy> again = Parse(empty_sections);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectSamePolicy(*policy, *again);
  empty_sections["defenses"]["prada"] = Json::object();
  empty_sections["defenses"]["watermark"] = Json::object();
  empty_sections["defenses"]["memguard"] = Json::object();
  Result<Policy> empty_defenses = Parse(empty_sections);
  ASSERT_TRUE(empty_defenses.ok()) << empty_defenses.status().ToString();
  ExpectSamePolicy(*policy, *empty_defenses);
}

TEST(PolicyTest, UnsetFieldsOfASectionKeepTheirDefaults) {
  Json document = With(Minimal(), "/defenses/prada", {{"enabled", true}, {"window", 100}});
  document["defenses"]["watermark"] = {{"rate", 0.2}};
  document["defenses"]["memguard"] = {{"steps", 7}};
  document["rate_limit"] = {{"per_day", 5000}};
  document["output"] = {{"mode", "gaussian"}, {"sigma", 0.3}};
  Result<Policy> policy = Parse(document);
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  Policy expected;
  expected.tee.accept = {"software"};
  expected.defenses.prada.enabled = true;
  expected.defenses.prada.window = 100;
  expected.defenses.watermark.rate = 0.2;
  expected.defenses.memguard.steps = 7;
  expected.rate_limit.per_day = 5000;
  expected.output.mode = OutputMode::kGaussian;
  expected.output.sigma = 0.3;
  ExpectSamePolicy(*policy, expected);
}

TEST(PolicyTest, CanonicalJsonIsExact) {
  Result<Policy> policy = Parse(Minimal());
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(PolicyToJson(*policy),
            R"({"version":1,"description":"","tee":{"accept":["software"],"measurements":{},)"
            R"("allow_debug":false,"tcb_statuses":["UpToDate","SWHardeningNeeded",)"
            R"("ConfigurationNeeded","ConfigurationAndSWHardeningNeeded"],)"
            R"("sgx":{"mr_signers":[],"isv_prod_id":null,"min_isv_svn":0},"snp":{"max_vmpl":0}},)"
            R"("lease":{"max_queries":100000,"max_days":30,)"
            R"("seal_every":1000},"output":{"mode":"probabilities","k":1,"decimals":2,)"
            R"("logits":false,"tensor":"","beta":0.4,"gamma":2.0,"sigma":0.05},)"
            R"("defenses":{"prada":{"enabled":false,"delta":0.9,"action":"log",)"
            R"("throttle_per_second":1,"throttle_per_day":1000,"max_stored":100000,)"
            R"("window":5000,"test_every":10,"min_class_entries":10,"max_checks":0},)"
            R"("watermark":{"enabled":false,"rate":0.01,"escrow":"after_alarm","escrow_key":"",)"
            R"("max_escrow":64,"max_escrow_bytes":262144},)"
            R"("memguard":{"enabled":false,"budget":0.5,"steps":100}},)"
            R"("rate_limit":{"per_second":0,"per_day":0}})");
}

TEST(PolicyTest, FullPolicyRoundTrips) {
  // Keys deliberately out of canonical order, measurements in a different order from accept.
  // Every field differs from its default, except output.mode: MemGuard needs probabilities
  // (HandBuiltPolicyRoundTrips covers the other modes).
  std::string text = R"({
    "rate_limit": {"per_day": 86400000, "per_second": 50},
    "defenses": {
      "memguard": {"steps": 250, "budget": 0.75, "enabled": true},
      "watermark": {"max_escrow_bytes": 65536, "max_escrow": 128, "escrow_key": ")" +
                     kEscrowKey + R"(",
                    "escrow": "always", "rate": 0.05, "enabled": true},
      "prada": {"max_checks": 512, "min_class_entries": 20, "test_every": 25, "window": 1000, "max_stored": 50000,
                "throttle_per_day": 500, "throttle_per_second": 2, "action": "throttle",
                "delta": 0.95, "enabled": true}},
    "output": {"sigma": 0.125, "gamma": 7.5, "beta": 1.25,
               "tensor": "logits", "logits": true, "decimals": 3, "k": 5, "mode": "probabilities"},
    "lease": {"seal_every": 250, "max_days": 90, "max_queries": 123456789012},
    "tee": {"allow_debug": true, "snp": {"max_vmpl": 2},
            "sgx": {"min_isv_svn": 3, "isv_prod_id": 7, "mr_signers": [")" +
                     kSgx + R"("]},
            "tcb_statuses": ["OutOfDate", "UpToDate"],
            "measurements": {"tdx": [")" +
                     kTdx + R"("], "sgx": [")" + kSgx + R"(", ")" + std::string(64, '0') + R"("]},
            "accept": ["sgx", "tdx", "snp"]},
    "description": "Caf\u00e9 \"model\"\twith\nnewline \u2713",
    "version": 1})";
  Result<Policy> policy = ParsePolicy(text);
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_EQ(policy->description, "Caf\xc3\xa9 \"model\"\twith\nnewline \xe2\x9c\x93");
  EXPECT_EQ(policy->tee.accept, (std::vector<std::string>{"sgx", "tdx", "snp"}));
  ASSERT_EQ(policy->tee.measurements.size(), 2u);
  EXPECT_EQ(policy->tee.measurements[0].tee, "sgx");  // tee.accept's order
  EXPECT_EQ(policy->tee.measurements[0].allowed,
            (std::vector<std::string>{kSgx, std::string(64, '0')}));
  EXPECT_EQ(policy->tee.measurements[1].tee, "tdx");
  EXPECT_EQ(policy->tee.measurements[1].allowed, std::vector<std::string>{kTdx});
  EXPECT_TRUE(policy->tee.allow_debug);
  EXPECT_EQ(policy->tee.tcb_statuses, (std::vector<std::string>{"OutOfDate", "UpToDate"}));
  EXPECT_EQ(policy->tee.sgx.mr_signers, std::vector<std::string>{kSgx});
  EXPECT_EQ(policy->tee.sgx.isv_prod_id, 7);
  EXPECT_EQ(policy->tee.sgx.min_isv_svn, 3);
  EXPECT_EQ(policy->tee.snp.max_vmpl, 2u);
  EXPECT_EQ(policy->lease.max_queries, 123456789012u);
  EXPECT_EQ(policy->lease.max_days, 90);
  EXPECT_EQ(policy->lease.seal_every, 250u);
  EXPECT_EQ(policy->output.mode, OutputMode::kProbabilities);
  EXPECT_EQ(policy->output.k, 5);
  EXPECT_EQ(policy->output.decimals, 3);
  EXPECT_TRUE(policy->output.logits);
  EXPECT_EQ(policy->output.tensor, "logits");
  EXPECT_EQ(policy->output.beta, 1.25);
  EXPECT_EQ(policy->output.gamma, 7.5);
  EXPECT_EQ(policy->output.sigma, 0.125);
  const PradaPolicy& prada = policy->defenses.prada;
  EXPECT_TRUE(prada.enabled);
  EXPECT_EQ(prada.delta, 0.95);
  EXPECT_EQ(prada.action, AlarmAction::kThrottle);
  EXPECT_EQ(prada.throttle_per_second, 2u);
  EXPECT_EQ(prada.throttle_per_day, 500u);
  EXPECT_EQ(prada.max_stored, 50000u);
  EXPECT_EQ(prada.window, 1000u);
  EXPECT_EQ(prada.test_every, 25u);
  EXPECT_EQ(prada.min_class_entries, 20u);
  EXPECT_EQ(prada.max_checks, 512u);
  const WatermarkPolicy& watermark = policy->defenses.watermark;
  EXPECT_TRUE(watermark.enabled);
  EXPECT_EQ(watermark.rate, 0.05);
  EXPECT_EQ(watermark.escrow, EscrowMode::kAlways);
  EXPECT_EQ(watermark.escrow_key, kEscrowKey);
  EXPECT_EQ(watermark.max_escrow, 128u);
  EXPECT_EQ(watermark.max_escrow_bytes, 65536u);
  EXPECT_TRUE(policy->defenses.memguard.enabled);
  EXPECT_EQ(policy->defenses.memguard.budget, 0.75);
  EXPECT_EQ(policy->defenses.memguard.steps, 250u);
  EXPECT_EQ(policy->rate_limit.per_second, 50u);
  EXPECT_EQ(policy->rate_limit.per_day, 86400000u);

  std::string canonical = PolicyToJson(*policy);
  EXPECT_TRUE(canonical.starts_with(R"({"version":1,"description":"Caf)")) << canonical;
  EXPECT_NE(canonical.find(R"("measurements":{"sgx":[)"), std::string::npos) << canonical;
  EXPECT_TRUE(canonical.ends_with(R"("rate_limit":{"per_second":50,"per_day":86400000}})"))
      << canonical;
  Result<Policy> again = ParsePolicy(canonical);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectSamePolicy(*policy, *again);
  EXPECT_EQ(PolicyToJson(*again), canonical);
}

TEST(PolicyTest, HandBuiltPolicyRoundTrips) {
  for (OutputMode mode : kAllOutputModes) {
    SCOPED_TRACE(OutputModeName(mode));
    Policy policy;
    policy.description = "hand built";
    policy.tee.accept = {"tpm", "software"};
    policy.tee.measurements = {{"tpm", {kTdx}}};
    policy.tee.tcb_statuses = {"UpToDate"};
    policy.tee.sgx = {{kSgx, std::string(64, 'c')}, std::nullopt, 65535};
    if (mode == OutputMode::kTopK) policy.tee.sgx.isv_prod_id = 0;
    policy.tee.snp.max_vmpl = 3;
    policy.lease = {1, 1, 1};
    // Reals with long expansions: the canonical text must read back to the same bits.
    policy.output = {.mode = mode,
                     .k = 1000,
                     .decimals = 0,
                     .logits = true,
                     .tensor = "out",
                     .beta = 0.1 + 0.2,
                     .gamma = 100,
                     .sigma = 1.0 / 3};
    policy.defenses.prada = {.enabled = true,
                             .delta = std::nextafter(1.0, 0.0),
                             .action = AlarmAction::kBlock,
                             .throttle_per_second = 1'000'000,
                             .throttle_per_day = 1'000'000'000,
                             .max_stored = 1'000'000,
                             .window = 20,
                             .test_every = 1000,
                             .min_class_entries = 2};
    policy.defenses.watermark = {.enabled = true,
                                 .rate = 0.5,
                                 .escrow = EscrowMode::kAlways,
                                 .escrow_key = kEscrowKey,
                                 .max_escrow = 4096,
                                 .max_escrow_bytes = 4096};
    // MemGuard only where the output mode allows it (MemGuardNeedsProbabilities).
    policy.defenses.memguard = {
        .enabled = mode == OutputMode::kProbabilities, .budget = 1e-9, .steps = 10000};
    policy.rate_limit = {.per_second = 1'000'000'000, .per_day = 1'000'000'000'000};
    std::string canonical = PolicyToJson(policy);
    Result<Policy> parsed = ParsePolicy(canonical);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    ExpectSamePolicy(policy, *parsed);
    EXPECT_EQ(PolicyToJson(*parsed), canonical);
  }
  // A hand-built policy that breaks a rule is written as it is, and the parser then says so.
  Policy no_key;
  no_key.tee.accept = {"sgx"};
  no_key.defenses.watermark.enabled = true;
  EXPECT_EQ(ErrorOf(PolicyToJson(no_key)),
            "defenses.watermark.escrow_key: required when the watermark is enabled (the escrowed "
            "inputs are encrypted to it)");
  Policy label_memguard;
  label_memguard.tee.accept = {"sgx"};
  label_memguard.output.mode = OutputMode::kLabel;
  label_memguard.defenses.memguard.enabled = true;
  EXPECT_TRUE(ErrorOf(PolicyToJson(label_memguard)).starts_with("defenses.memguard: "));
}

TEST(PolicyTest, OutputModeNames) {
  EXPECT_STREQ(OutputModeName(OutputMode::kProbabilities), "probabilities");
  EXPECT_STREQ(OutputModeName(OutputMode::kTopK), "top_k");
  EXPECT_STREQ(OutputModeName(OutputMode::kRounded), "rounded");
  EXPECT_STREQ(OutputModeName(OutputMode::kLabel), "label");
  EXPECT_STREQ(OutputModeName(OutputMode::kReverseSigmoid), "reverse_sigmoid");
  EXPECT_STREQ(OutputModeName(OutputMode::kGaussian), "gaussian");
  for (OutputMode mode : kAllOutputModes) {
    const char* name = OutputModeName(mode);
    Result<Policy> policy = Parse(With(Minimal(), "/output/mode", name));
    ASSERT_TRUE(policy.ok()) << name;
    EXPECT_EQ(policy->output.mode, mode);
  }
  for (const char* name : {"reverse-sigmoid", "ReverseSigmoid", "Gaussian", "noise", ""}) {
    EXPECT_EQ(ErrorOf(With(Minimal(), "/output/mode", name)),
              fmt::format("output.mode: unknown value \"{}\" (known: probabilities, top_k, "
                          "rounded, label, reverse_sigmoid, gaussian)",
                          name));
  }
}

TEST(PolicyTest, DefenseEnumNames) {
  EXPECT_STREQ(AlarmActionName(AlarmAction::kLog), "log");
  EXPECT_STREQ(AlarmActionName(AlarmAction::kThrottle), "throttle");
  EXPECT_STREQ(AlarmActionName(AlarmAction::kBlock), "block");
  for (AlarmAction action : {AlarmAction::kLog, AlarmAction::kThrottle, AlarmAction::kBlock}) {
    Result<Policy> policy =
        Parse(With(Minimal(), "/defenses/prada/action", AlarmActionName(action)));
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    EXPECT_EQ(policy->defenses.prada.action, action);
  }
  EXPECT_STREQ(EscrowModeName(EscrowMode::kAfterAlarm), "after_alarm");
  EXPECT_STREQ(EscrowModeName(EscrowMode::kAlways), "always");
  for (EscrowMode escrow : {EscrowMode::kAfterAlarm, EscrowMode::kAlways}) {
    Result<Policy> policy =
        Parse(With(Minimal(), "/defenses/watermark/escrow", EscrowModeName(escrow)));
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    EXPECT_EQ(policy->defenses.watermark.escrow, escrow);
  }
  for (const char* name : {"Throttle", "warn", "deny", "log "}) {
    EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/prada/action", name)),
              fmt::format("defenses.prada.action: unknown value \"{}\" (known: log, throttle, "
                          "block)",
                          name));
  }
  for (const char* name : {"after-alarm", "never", "ALWAYS"}) {
    EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/escrow", name)),
              fmt::format("defenses.watermark.escrow: unknown value \"{}\" (known: after_alarm, "
                          "always)",
                          name));
  }
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/prada/action", 1)),
            "defenses.prada.action: expected a string, got integer 1");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/escrow", true)),
            "defenses.watermark.escrow: expected a string, got boolean true");
}

TEST(PolicyTest, AcceptsTee) {
  Result<Policy> policy = Parse(With(Minimal(), "/tee/accept", {"sgx", "snp"}));
  ASSERT_TRUE(policy.ok());
  EXPECT_TRUE(PolicyAcceptsTee(*policy, "sgx"));
  EXPECT_TRUE(PolicyAcceptsTee(*policy, "snp"));
  EXPECT_FALSE(PolicyAcceptsTee(*policy, "software"));
  EXPECT_FALSE(PolicyAcceptsTee(*policy, "SGX"));
  EXPECT_FALSE(PolicyAcceptsTee(*policy, ""));
}

TEST(PolicyTest, UnknownFieldsNameTheirFullPath) {
  EXPECT_EQ(ErrorOf(With(Minimal(), "/versio", 1)),
            "versio: unknown field (known: version, description, tee, lease, output, defenses, "
            "rate_limit)");
  EXPECT_EQ(
      ErrorOf(With(Minimal(), "/tee/acept", Json::array())),
      "tee.acept: unknown field (known: accept, measurements, allow_debug, tcb_statuses, sgx, "
      "snp)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx/mrsigner", 1)),
            "tee.sgx.mrsigner: unknown field (known: mr_signers, isv_prod_id, min_isv_svn)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/snp/vmpl", 1)),
            "tee.snp.vmpl: unknown field (known: max_vmpl)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/lease/max_query", 5)),
            "lease.max_query: unknown field (known: max_queries, max_days, seal_every)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/output/kk", 3)),
            "output.kk: unknown field (known: mode, k, decimals, logits, tensor, beta, gamma, "
            "sigma)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/zz", Json::object())),
            "defenses.zz: unknown field (known: prada, watermark, memguard)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/prada/zz", 1)),
            "defenses.prada.zz: unknown field (known: enabled, delta, action, "
            "throttle_per_second, throttle_per_day, max_stored, window, test_every, "
            "min_class_entries, max_checks)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/zz", 1)),
            "defenses.watermark.zz: unknown field (known: enabled, rate, escrow, escrow_key, "
            "max_escrow, max_escrow_bytes)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/memguard/zz", 1)),
            "defenses.memguard.zz: unknown field (known: enabled, budget, steps)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/rate_limit/per_minute", 1)),
            "rate_limit.per_minute: unknown field (known: per_second, per_day)");
  // A field at the wrong level, and a defense that does not exist (yet).
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/rate_limit", Json::object())),
            "defenses.rate_limit: unknown field (known: prada, watermark, memguard)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/prada/per_second", 1)),
            "defenses.prada.per_second: unknown field (known: enabled, delta, action, "
            "throttle_per_second, throttle_per_day, max_stored, window, test_every, "
            "min_class_entries, max_checks)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/prada", Json::object())),
            "prada: unknown field (known: version, description, tee, lease, output, defenses, "
            "rate_limit)");
  // A name that is not an identifier is quoted, so it cannot inject into the message.
  EXPECT_EQ(ErrorOf(With(Minimal(), "/output/a b\u001b", 1)),
            "output.\"a b\\u001b\": unknown field (known: mode, k, decimals, logits, tensor, "
            "beta, gamma, sigma)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/escrow key", 1)),
            "defenses.watermark.\"escrow key\": unknown field (known: enabled, rate, escrow, "
            "escrow_key, max_escrow, max_escrow_bytes)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/measurements/sev", {kSgx})),
            "tee.measurements.sev: unknown TEE (known: software, sgx, tdx, snp, tpm)");
}

TEST(PolicyTest, HardwareEvidenceFields) {
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/tcb_statuses", Json::array())),
            "tee.tcb_statuses: 0 entries, expected 1..6 (known: UpToDate, SWHardeningNeeded, "
            "ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, "
            "OutOfDateConfigurationNeeded)");
  EXPECT_TRUE(ErrorOf(With(Minimal(), "/tee/tcb_statuses", {"UpToDate", "Revoked"}))
                  .starts_with("tee.tcb_statuses[1]: unknown or never acceptable TCB status "
                               "\"Revoked\""));
  EXPECT_TRUE(ErrorOf(With(Minimal(), "/tee/tcb_statuses", {"NotSupported"}))
                  .starts_with("tee.tcb_statuses[0]: unknown or never acceptable"));
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/tcb_statuses", {"UpToDate", "UpToDate"})),
            "tee.tcb_statuses[1]: duplicate TCB status \"UpToDate\"");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/tcb_statuses", "UpToDate")),
            "tee.tcb_statuses: expected an array of TCB status names, got string \"UpToDate\"");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/tcb_statuses", {1})),
            "tee.tcb_statuses[0]: expected a TCB status name, got integer 1");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx", 1)), "tee.sgx: expected an object, got integer 1");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx/mr_signers", {std::string(64, 'A')})),
            "tee.sgx.mr_signers[0]: \"" + std::string(64, 'A') +
                "\" is not 64 lowercase hex characters (a 32-byte MRSIGNER)");
  EXPECT_TRUE(ErrorOf(With(Minimal(), "/tee/sgx/mr_signers", {kTdx}))
                  .starts_with("tee.sgx.mr_signers[0]: "));
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx/mr_signers", {kSgx, kSgx})),
            "tee.sgx.mr_signers[1]: duplicate MRSIGNER " + kSgx);
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx/isv_prod_id", 65536)),
            "tee.sgx.isv_prod_id: 65536 is out of range 0..65535");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/sgx/min_isv_svn", -1)),
            "tee.sgx.min_isv_svn: -1 is out of range 0..65535");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/snp/max_vmpl", 4)),
            "tee.snp.max_vmpl: 4 is out of range 0..3");
  // isv_prod_id null is the default (any product), as the canonical form writes it.
  Result<Policy> null_id = Parse(With(Minimal(), "/tee/sgx/isv_prod_id", nullptr));
  ASSERT_TRUE(null_id.ok()) << null_id.status().ToString();
  EXPECT_FALSE(null_id->tee.sgx.isv_prod_id.has_value());
  Result<Policy> zero_id = Parse(With(Minimal(), "/tee/sgx/isv_prod_id", 0));
  ASSERT_TRUE(zero_id.ok());
  EXPECT_EQ(zero_id->tee.sgx.isv_prod_id, 0);
  EXPECT_NE(PolicyToJson(*zero_id).find(R"("isv_prod_id":0)"), std::string::npos);
  Result<Policy> again = ParsePolicy(PolicyToJson(*zero_id));
  ASSERT_TRUE(again.ok());
  ExpectSamePolicy(*zero_id, *again);
}

TEST(PolicyTest, RequiredFields) {
  Json no_version = Minimal();
  no_version.erase("version");
  EXPECT_EQ(ErrorOf(no_version), "version: required field is missing");
  Json no_tee = Minimal();
  no_tee.erase("tee");
  EXPECT_EQ(ErrorOf(no_tee), "tee: required field is missing");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee", Json::object())),
            "tee.accept: required field is missing");
}

TEST(PolicyTest, Version) {
  EXPECT_TRUE(Parse(With(Minimal(), "/version", 1.0)).ok());
  EXPECT_EQ(ErrorOf(With(Minimal(), "/version", 2)), "version: 2 is not supported (supported: 1)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/version", 0)), "version: 0 is not supported (supported: 1)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/version", "1")),
            "version: \"1\" is not supported (supported: 1)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/version", 1.5)),
            "version: 1.5 is not supported (supported: 1)");
}

struct IntegerField {
  const char* pointer;
  const char* path;
  uint64_t min, max;
};
const IntegerField kIntegerFields[] = {
    {"/lease/max_queries", "lease.max_queries", 1, 1000000000000},
    {"/lease/max_days", "lease.max_days", 1, 3650},
    {"/lease/seal_every", "lease.seal_every", 1, 1000000},
    {"/output/k", "output.k", 1, 1000},
    {"/output/decimals", "output.decimals", 0, 8},
    {"/defenses/prada/throttle_per_second", "defenses.prada.throttle_per_second", 1, 1000000},
    {"/defenses/prada/throttle_per_day", "defenses.prada.throttle_per_day", 1, 1000000000},
    {"/defenses/prada/max_stored", "defenses.prada.max_stored", 1, 1000000},
    {"/defenses/prada/window", "defenses.prada.window", 20, 5000},
    {"/defenses/prada/test_every", "defenses.prada.test_every", 1, 1000},
    {"/defenses/prada/min_class_entries", "defenses.prada.min_class_entries", 2, 1000},
    {"/defenses/prada/max_checks", "defenses.prada.max_checks", 0, 1000000},
    {"/defenses/watermark/max_escrow", "defenses.watermark.max_escrow", 1, 4096},
    {"/defenses/watermark/max_escrow_bytes", "defenses.watermark.max_escrow_bytes", 4096, 524288},
    {"/defenses/memguard/steps", "defenses.memguard.steps", 1, 10000},
    {"/rate_limit/per_second", "rate_limit.per_second", 0, 1000000000},
    {"/rate_limit/per_day", "rate_limit.per_day", 0, 1000000000000},
};

TEST(PolicyTest, IntegerRangeBoundaries) {
  for (const IntegerField& field : kIntegerFields) {
    SCOPED_TRACE(field.path);
    for (uint64_t inside : {field.min, field.max}) {
      Result<Policy> policy = Parse(With(Minimal(), field.pointer, inside));
      ASSERT_TRUE(policy.ok()) << inside << ": " << policy.status().ToString();
      // The value landed in the right field: it is in the canonical JSON at that place.
      Json canonical = Json::parse(PolicyToJson(*policy));
      EXPECT_EQ(canonical[Json::json_pointer(field.pointer)], inside);
    }
    std::string range = fmt::format("out of range {}..{}", field.min, field.max);
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, field.max + 1)),
              fmt::format("{}: {} is {}", field.path, field.max + 1, range));
    int64_t below = static_cast<int64_t>(field.min) - 1;
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, below)),
              fmt::format("{}: {} is {}", field.path, below, range));
    // Far outside, in both directions, and beyond 64 bits (nlohmann parses that as a double).
    EXPECT_NE(ErrorOf(With(Minimal(), field.pointer, UINT64_MAX)).find(range), std::string::npos);
    EXPECT_NE(ErrorOf(With(Minimal(), field.pointer, INT64_MIN)).find(range), std::string::npos);
    std::string text = With(Minimal(), field.pointer, 987654321).dump();
    size_t at = text.find("987654321");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 9, "1e30");
    std::string message = ErrorOf(text);
    EXPECT_NE(message.find(field.path), std::string::npos) << message;
    EXPECT_NE(message.find(range), std::string::npos) << message;
  }
}

// Real-valued fields: all are open at 0; prada.delta is open at 1 too (Shapiro-Wilk's W is at most
// 1 and below 1 for almost every sample, so delta = 1 would alarm on every stream).
struct NumberField {
  const char* pointer;
  const char* path;
  double max;
  bool max_inclusive;
};
const NumberField kNumberFields[] = {
    {"/output/beta", "output.beta", 10, true},
    {"/output/gamma", "output.gamma", 100, true},
    {"/output/sigma", "output.sigma", 1, true},
    {"/defenses/prada/delta", "defenses.prada.delta", 1, false},
    {"/defenses/watermark/rate", "defenses.watermark.rate", 0.5, true},
    {"/defenses/memguard/budget", "defenses.memguard.budget", 2, true},
};

TEST(PolicyTest, NumberRangeBoundaries) {
  for (const NumberField& field : kNumberFields) {
    SCOPED_TRACE(field.path);
    const std::string range =
        fmt::format("({}, {}{}", 0, field.max, field.max_inclusive ? "]" : ")");
    const double largest = field.max_inclusive ? field.max : std::nextafter(field.max, 0.0);
    for (double inside : {1e-9, std::nextafter(0.0, 1.0), field.max / 2, largest}) {
      Result<Policy> policy = Parse(With(Minimal(), field.pointer, inside));
      ASSERT_TRUE(policy.ok()) << inside << ": " << policy.status().ToString();
      Json canonical = Json::parse(PolicyToJson(*policy));
      EXPECT_EQ(canonical[Json::json_pointer(field.pointer)], inside);
    }
    // An integer is a number.
    if (largest >= 1) {
      Result<Policy> integer = Parse(With(Minimal(), field.pointer, 1));
      ASSERT_TRUE(integer.ok()) << integer.status().ToString();
      EXPECT_EQ(PolicyToJson(*integer), PolicyToJson(*Parse(With(Minimal(), field.pointer, 1.0))));
    }
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, 0)),
              fmt::format("{}: 0 is out of range {}", field.path, range));
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, -0.0)),
              fmt::format("{}: -0.0 is out of range {}", field.path, range));
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, -1)),
              fmt::format("{}: -1 is out of range {}", field.path, range));
    const double above = field.max_inclusive ? std::nextafter(field.max, 1e9) : field.max;
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, above)),
              fmt::format("{}: {} is out of range {}", field.path, Json(above).dump(), range));
    // Far above: the message names the field and says it is out of range.
    for (Json far : {Json(1000), Json(1e300), Json(UINT64_MAX)}) {
      std::string message = ErrorOf(With(Minimal(), field.pointer, far));
      EXPECT_TRUE(
          message.starts_with(fmt::format("{}: {} is out of range (0, ", field.path, far.dump())))
          << message;
    }
    // Beyond double's range: the JSON reader refuses it, so no infinity reaches the policy.
    std::string text = With(Minimal(), field.pointer, 0.123).dump();
    size_t at = text.find("0.123");
    ASSERT_NE(at, std::string::npos);
    for (const char* huge : {"1e400", "-1e400"}) {
      EXPECT_EQ(ErrorOf(std::string(text).replace(at, 5, huge)),
                fmt::format("policy: invalid JSON: number overflow parsing '{}'", huge));
    }
    // JSON has no NaN or infinity; the strings people write for them are strings.
    for (const char* not_a_number : {"NaN", "nan", "Infinity", "-Infinity", "inf", "0.5", "1e-3"}) {
      EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, not_a_number)),
                fmt::format("{}: expected a number, got string \"{}\"", field.path, not_a_number));
    }
    for (const char* token : {"NaN", "Infinity", "-Infinity", ".5", "0x1p-1"}) {
      EXPECT_TRUE(
          ErrorOf(std::string(text).replace(at, 5, token)).starts_with("policy: invalid JSON: "))
          << token;
    }
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, nullptr)),
              fmt::format("{}: expected a number, got null null", field.path));
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, true)),
              fmt::format("{}: expected a number, got boolean true", field.path));
    EXPECT_EQ(ErrorOf(With(Minimal(), field.pointer, Json::array({0.5}))),
              fmt::format("{}: expected a number, got array [0.5]", field.path));
  }
}

TEST(PolicyTest, IntegralFloatsAreIntegers) {
  // JSON Schema's "integer" includes 3.0 and 1e12; the parser agrees.
  Result<Policy> policy = ParsePolicy(
      R"({"version":1,"tee":{"accept":["sgx"]},"lease":{"max_queries":1e12},"output":{"k":3.0}})");
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_EQ(policy->lease.max_queries, 1000000000000u);
  EXPECT_EQ(policy->output.k, 3);
  EXPECT_EQ(ErrorOf(With(Minimal(), "/output/k", 2.5)),
            "output.k: expected an integer in 1..1000, got number 2.5");

  // The same in the defenses and rate limits, with exponents written every legal way.
  Result<Policy> defenses = ParsePolicy(R"({"version":1,"tee":{"accept":["sgx"]},
      "defenses":{"prada":{"window":1e3,"test_every":2.5e1,"throttle_per_day":1E9,
                           "throttle_per_second":1e+2,"max_stored":1.0e5,"min_class_entries":5.0},
                  "watermark":{"max_escrow_bytes":4.096e3,"max_escrow":1000e-1},
                  "memguard":{"steps":1e4}},
      "rate_limit":{"per_second":1e9,"per_day":1e12}})");
  ASSERT_TRUE(defenses.ok()) << defenses.status().ToString();
  EXPECT_EQ(defenses->defenses.prada.window, 1000u);
  EXPECT_EQ(defenses->defenses.prada.test_every, 25u);
  EXPECT_EQ(defenses->defenses.prada.throttle_per_day, 1000000000u);
  EXPECT_EQ(defenses->defenses.prada.throttle_per_second, 100u);
  EXPECT_EQ(defenses->defenses.prada.max_stored, 100000u);
  EXPECT_EQ(defenses->defenses.prada.min_class_entries, 5u);
  EXPECT_EQ(defenses->defenses.watermark.max_escrow_bytes, 4096u);
  EXPECT_EQ(defenses->defenses.watermark.max_escrow, 100u);
  EXPECT_EQ(defenses->defenses.memguard.steps, 10000u);
  EXPECT_EQ(defenses->rate_limit.per_second, 1000000000u);
  EXPECT_EQ(defenses->rate_limit.per_day, 1000000000000u);
  // The canonical form writes them as plain integers.
  std::string canonical = PolicyToJson(*defenses);
  EXPECT_NE(canonical.find(R"("window":1000,)"), std::string::npos) << canonical;
  EXPECT_NE(canonical.find(R"("per_day":1000000000000})"), std::string::npos) << canonical;

  auto with_text = [](const std::string& pointer, const std::string& number) {
    std::string text = With(Minimal(), pointer, 987654321).dump();
    return text.replace(text.find("987654321"), 9, number);
  };
  EXPECT_EQ(ErrorOf(with_text("/defenses/prada/window", "2.05e1")),
            "defenses.prada.window: expected an integer in 20..5000, got number 20.5");
  EXPECT_EQ(ErrorOf(with_text("/defenses/prada/window", "1e4")),
            "defenses.prada.window: 10000.0 is out of range 20..5000");
  EXPECT_EQ(ErrorOf(with_text("/defenses/prada/test_every", "1e-1")),
            "defenses.prada.test_every: expected an integer in 1..1000, got number 0.1");
  EXPECT_EQ(ErrorOf(with_text("/rate_limit/per_day", "1.000000000001e12")),
            "rate_limit.per_day: 1000000000001.0 is out of range 0..1000000000000");
  EXPECT_EQ(ErrorOf(with_text("/rate_limit/per_second", "-1e0")),
            "rate_limit.per_second: -1.0 is out of range 0..1000000000");
  EXPECT_EQ(ErrorOf(with_text("/defenses/memguard/steps", "1e400")),
            "policy: invalid JSON: number overflow parsing '1e400'");
  EXPECT_TRUE(
      ErrorOf(with_text("/defenses/memguard/steps", "NaN")).starts_with("policy: invalid JSON: "));
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/memguard/steps", "1e3")),
            "defenses.memguard.steps: expected an integer in 1..10000, got string \"1e3\"");
}

TEST(PolicyTest, WrongTypesNameTheFieldAndValue) {
  struct Case {
    const char* pointer;
    Json value;
    const char* message;
  };
  const Case cases[] = {
      {"/output/k", "3", "output.k: expected an integer in 1..1000, got string \"3\""},
      {"/output/k", true, "output.k: expected an integer in 1..1000, got boolean true"},
      {"/output/decimals", nullptr, "output.decimals: expected an integer in 0..8, got null null"},
      {"/lease/max_days", Json::array({30}),
       "lease.max_days: expected an integer in 1..3650, got array [30]"},
      {"/lease/max_queries", Json::object(),
       "lease.max_queries: expected an integer in 1..1000000000000, got object {}"},
      {"/lease/seal_every", "1000",
       "lease.seal_every: expected an integer in 1..1000000, got string \"1000\""},
      {"/output/logits", "true", "output.logits: expected true or false, got string \"true\""},
      {"/output/logits", 1, "output.logits: expected true or false, got integer 1"},
      {"/tee/allow_debug", 0, "tee.allow_debug: expected true or false, got integer 0"},
      {"/output/mode", 1, "output.mode: expected a string, got integer 1"},
      {"/output/mode", "top-k",
       "output.mode: unknown value \"top-k\" (known: probabilities, top_k, rounded, label, "
       "reverse_sigmoid, gaussian)"},
      {"/output/mode", "TOP_K",
       "output.mode: unknown value \"TOP_K\" (known: probabilities, top_k, rounded, label, "
       "reverse_sigmoid, gaussian)"},
      {"/output/tensor", nullptr, "output.tensor: expected a string, got null null"},
      {"/description", 5, "description: expected a string, got integer 5"},
      {"/output", Json::array(), "output: expected an object, got array []"},
      {"/lease", 3, "lease: expected an object, got integer 3"},
      {"/tee", "sgx", "tee: expected an object, got string \"sgx\""},
      {"/tee/accept", "sgx", "tee.accept: expected an array of TEE names, got string \"sgx\""},
      {"/tee/accept", Json::array({1}), "tee.accept[0]: expected a TEE name, got integer 1"},
      {"/tee/measurements", Json::array(),
       "tee.measurements: expected an object mapping TEE names to lists, got array []"},
      {"/tee/measurements/software", "x",
       "tee.measurements.software: expected an array of measurements, got string \"x\""},
      {"/tee/measurements/software", Json::array({1}),
       "tee.measurements.software[0]: expected a hex string, got integer 1"},
      {"/defenses", Json::array(), "defenses: expected an object, got array []"},
      {"/defenses", true, "defenses: expected an object, got boolean true"},
      {"/defenses/prada", 1, "defenses.prada: expected an object, got integer 1"},
      {"/defenses/watermark", "on", "defenses.watermark: expected an object, got string \"on\""},
      {"/defenses/memguard", nullptr, "defenses.memguard: expected an object, got null null"},
      {"/rate_limit", 100, "rate_limit: expected an object, got integer 100"},
      {"/defenses/prada/enabled", "true",
       "defenses.prada.enabled: expected true or false, got string \"true\""},
      {"/defenses/watermark/enabled", 1,
       "defenses.watermark.enabled: expected true or false, got integer 1"},
      {"/defenses/memguard/enabled", nullptr,
       "defenses.memguard.enabled: expected true or false, got null null"},
      {"/defenses/prada/window", "5000",
       "defenses.prada.window: expected an integer in 20..5000, got string \"5000\""},
      {"/defenses/prada/max_stored", false,
       "defenses.prada.max_stored: expected an integer in 1..1000000, got boolean false"},
      {"/defenses/watermark/max_escrow_bytes", Json::object(),
       "defenses.watermark.max_escrow_bytes: expected an integer in 4096..524288, got object {}"},
      {"/rate_limit/per_second", nullptr,
       "rate_limit.per_second: expected an integer in 0..1000000000, got null null"},
      {"/rate_limit/per_day", "unlimited",
       "rate_limit.per_day: expected an integer in 0..1000000000000, got string \"unlimited\""},
      {"/defenses/watermark/escrow_key", 1,
       "defenses.watermark.escrow_key: expected a string, got integer 1"},
      {"/defenses/watermark/escrow_key", nullptr,
       "defenses.watermark.escrow_key: expected a string, got null null"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ErrorOf(With(Minimal(), c.pointer, c.value)), c.message) << c.pointer;
  }
}

TEST(PolicyTest, WatermarkEscrowKey) {
  const std::string required =
      "defenses.watermark.escrow_key: required when the watermark is enabled (the escrowed "
      "inputs are encrypted to it)";
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/enabled", true)), required);
  // PRADA on, so that the default escrow (after_alarm) is allowed (EscrowAfterAlarmNeedsPrada).
  Json enabled = With(With(Minimal(), "/defenses/prada/enabled", true), "/defenses/watermark",
                      {{"enabled", true}, {"escrow_key", ""}});
  EXPECT_EQ(ErrorOf(enabled), required);
  // The other fields do not stand in for the key.
  EXPECT_EQ(ErrorOf(With(enabled, "/defenses/watermark/escrow", "always")), required);

  Result<Policy> with_key = Parse(With(enabled, "/defenses/watermark/escrow_key", kEscrowKey));
  ASSERT_TRUE(with_key.ok()) << with_key.status().ToString();
  EXPECT_TRUE(with_key->defenses.watermark.enabled);
  EXPECT_EQ(with_key->defenses.watermark.escrow_key, kEscrowKey);
  // Off, the key may be empty or set (a provider preparing a key before turning the watermark on).
  Result<Policy> off_empty = Parse(With(Minimal(), "/defenses/watermark/escrow_key", ""));
  ASSERT_TRUE(off_empty.ok()) << off_empty.status().ToString();
  EXPECT_EQ(off_empty->defenses.watermark.escrow_key, "");
  Result<Policy> off_with_key =
      Parse(With(Minimal(), "/defenses/watermark/escrow_key", kEscrowKey));
  ASSERT_TRUE(off_with_key.ok()) << off_with_key.status().ToString();
  EXPECT_FALSE(off_with_key->defenses.watermark.enabled);
  EXPECT_EQ(off_with_key->defenses.watermark.escrow_key, kEscrowKey);
  Result<Policy> again = ParsePolicy(PolicyToJson(*off_with_key));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectSamePolicy(*off_with_key, *again);

  std::string upper = kEscrowKey;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return std::toupper(c); });
  std::string one_upper = kEscrowKey;
  one_upper[10] = 'F';
  std::string not_hex = kEscrowKey;
  not_hex[63] = 'g';
  // A malformed key is reported as such, whether the watermark is on or off.
  for (const std::string& bad :
       {kEscrowKey.substr(0, 63), kEscrowKey.substr(0, 62), std::string("00"), upper, one_upper,
        not_hex, "0x" + kEscrowKey.substr(2), " " + kEscrowKey.substr(1),
        kEscrowKey.substr(0, 63) + "\n", std::string(64, '-')}) {
    const std::string message =
        "defenses.watermark.escrow_key: " + Json(bad).dump() +
        " is not 64 lowercase hex characters (an X25519 public key; `mlcapsule keygen --escrow` "
        "writes one)";
    EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/escrow_key", bad)), message) << bad;
    EXPECT_EQ(ErrorOf(With(enabled, "/defenses/watermark/escrow_key", bad)), message) << bad;
  }
  // Longer than a key: refused, naming the field.
  for (const std::string& bad : {kEscrowKey + "0", kEscrowKey + kEscrowKey}) {
    EXPECT_TRUE(ErrorOf(With(enabled, "/defenses/watermark/escrow_key", bad))
                    .starts_with("defenses.watermark.escrow_key: "))
        << bad;
  }
}

TEST(PolicyTest, MemGuardNeedsProbabilities) {
  for (OutputMode mode : kAllOutputModes) {
    SCOPED_TRACE(OutputModeName(mode));
    Json document = With(Minimal(), "/output/mode", OutputModeName(mode));
    // Off, MemGuard allows every mode.
    EXPECT_TRUE(Parse(With(document, "/defenses/memguard/enabled", false)).ok());
    Json on = With(document, "/defenses/memguard/enabled", true);
    if (mode == OutputMode::kProbabilities) {
      Result<Policy> policy = Parse(on);
      ASSERT_TRUE(policy.ok()) << policy.status().ToString();
      EXPECT_TRUE(policy->defenses.memguard.enabled);
    } else {
      EXPECT_EQ(ErrorOf(on),
                fmt::format("defenses.memguard: perturbs the full confidence vector, so "
                            "output.mode must be probabilities (it is {})",
                            OutputModeName(mode)));
    }
  }
  // Without an output section the mode is probabilities.
  Result<Policy> default_mode = Parse(With(Minimal(), "/defenses/memguard/enabled", true));
  ASSERT_TRUE(default_mode.ok()) << default_mode.status().ToString();
  // A field error inside the sections is reported before the rule between them.
  Json both = With(Minimal(), "/output/mode", "label");
  both["defenses"]["memguard"] = {{"enabled", true}, {"steps", 0}};
  EXPECT_EQ(ErrorOf(both), "defenses.memguard.steps: 0 is out of range 1..10000");
}

TEST(PolicyTest, EscrowAfterAlarmNeedsPrada) {
  const std::string needs_prada =
      "defenses.watermark.escrow: after_alarm needs defenses.prada enabled (without PRADA no "
      "alarm ever releases the escrow); enable PRADA or choose always";
  Json watermark =
      With(Minimal(), "/defenses/watermark", {{"enabled", true}, {"escrow_key", kEscrowKey}});
  // after_alarm is the default escrow.
  EXPECT_EQ(ErrorOf(watermark), needs_prada);
  EXPECT_EQ(ErrorOf(With(watermark, "/defenses/watermark/escrow", "after_alarm")), needs_prada);
  EXPECT_EQ(ErrorOf(With(watermark, "/defenses/prada", {{"enabled", false}, {"action", "block"}})),
            needs_prada);
  Result<Policy> with_prada = Parse(With(watermark, "/defenses/prada/enabled", true));
  ASSERT_TRUE(with_prada.ok()) << with_prada.status().ToString();
  EXPECT_EQ(with_prada->defenses.watermark.escrow, EscrowMode::kAfterAlarm);
  Result<Policy> always = Parse(With(watermark, "/defenses/watermark/escrow", "always"));
  ASSERT_TRUE(always.ok()) << always.status().ToString();
  EXPECT_FALSE(always->defenses.prada.enabled);
  // The rule is about an enabled watermark only.
  EXPECT_TRUE(Parse(With(watermark, "/defenses/watermark/enabled", false)).ok());
  // A missing key is reported before the rule between the sections.
  EXPECT_EQ(ErrorOf(With(Minimal(), "/defenses/watermark/enabled", true)),
            "defenses.watermark.escrow_key: required when the watermark is enabled (the escrowed "
            "inputs are encrypted to it)");
}

TEST(PolicyTest, TeeAccept) {
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/accept", Json::array())),
            "tee.accept: must list at least one TEE (known: software, sgx, tdx, snp, tpm)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/accept", {"sgx", "sev"})),
            "tee.accept[1]: unknown TEE \"sev\" (known: software, sgx, tdx, snp, tpm)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/accept", {"sgx", "tdx", "sgx"})),
            "tee.accept[2]: duplicate TEE \"sgx\"");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/tee/accept", {"Software"})),
            "tee.accept[0]: unknown TEE \"Software\" (known: software, sgx, tdx, snp, tpm)");
  Result<Policy> all =
      Parse(With(Minimal(), "/tee/accept", {"software", "sgx", "tdx", "snp", "tpm"}));
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->tee.accept.size(), 5u);
  // Six entries can only be six with a duplicate; the count is checked first.
  EXPECT_NE(ErrorOf(With(Minimal(), "/tee/accept", {"software", "sgx", "tdx", "snp", "tpm", "sgx"}))
                .find("tee.accept: 6 entries is over the limit 5"),
            std::string::npos);
}

TEST(PolicyTest, Measurements) {
  Json base = With(Minimal(), "/tee/accept", {"sgx", "tdx"});
  for (const std::string& good : {kSgx, kTdx, std::string("0123456789abcdef").append(48, 'f')}) {
    EXPECT_TRUE(Parse(With(base, "/tee/measurements/sgx", {good})).ok()) << good;
  }
  for (size_t length : {0, 63, 65, 95, 97}) {
    std::string hex(length, 'a');
    EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/sgx", {kSgx, hex})),
              fmt::format("tee.measurements.sgx[1]: \"{}\" is {} characters; a measurement is 64 "
                          "or 96 lowercase hex characters (32 or 48 bytes)",
                          hex, length));
  }
  // A long value is shown cut short, with its length.
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/sgx", {std::string(128, 'a')})),
            "tee.measurements.sgx[0]: \"" + std::string(99, 'a') +
                "... is 128 characters; a measurement is 64 or 96 lowercase hex characters (32 "
                "or 48 bytes)");
  std::string upper = "A" + std::string(63, 'a');
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/tdx", {upper})),
            fmt::format("tee.measurements.tdx[0]: \"{}\" is not lowercase hex (0-9, a-f)", upper));
  std::string not_hex = std::string(63, 'a') + "g";
  EXPECT_NE(ErrorOf(With(base, "/tee/measurements/tdx", {not_hex})).find("not lowercase hex"),
            std::string::npos);
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/sgx", {kSgx, kSgx})),
            "tee.measurements.sgx[1]: duplicate measurement " + kSgx);
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/snp", {kTdx})),
            "tee.measurements.snp: TEE \"snp\" is not in tee.accept");
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/sgx", Json::array())),
            "tee.measurements.sgx: empty list (leave the key out to accept any measurement)");
  Json many = Json::array();
  for (int i = 0; i < 65; ++i) many.push_back(fmt::format("{:064x}", i));
  EXPECT_EQ(ErrorOf(With(base, "/tee/measurements/sgx", many)),
            "tee.measurements.sgx: 65 measurements is over the limit 64");
  many.erase(many.size() - 1);
  Result<Policy> sixty_four = Parse(With(base, "/tee/measurements/sgx", many));
  ASSERT_TRUE(sixty_four.ok()) << sixty_four.status().ToString();
  EXPECT_EQ(sixty_four->tee.measurements.at(0).allowed.size(), 64u);
}

TEST(PolicyTest, StringLimits) {
  EXPECT_TRUE(Parse(With(Minimal(), "/description", std::string(1024, 'x'))).ok());
  EXPECT_EQ(ErrorOf(With(Minimal(), "/description", std::string(1025, 'x'))),
            "description: 1025 bytes is over the limit 1024 bytes");
  // The limit counts bytes: 512 two-byte characters fit, 513 do not.
  std::string e_acute = "\xc3\xa9";
  std::string fits, too_long;
  for (int i = 0; i < 512; ++i) fits += e_acute;
  too_long = fits + e_acute;
  EXPECT_TRUE(Parse(With(Minimal(), "/description", fits)).ok());
  EXPECT_EQ(ErrorOf(With(Minimal(), "/description", too_long)),
            "description: 1026 bytes is over the limit 1024 bytes");
  EXPECT_TRUE(Parse(With(Minimal(), "/output/tensor", std::string(256, 't'))).ok());
  EXPECT_EQ(ErrorOf(With(Minimal(), "/output/tensor", std::string(257, 't'))),
            "output.tensor: 257 bytes is over the limit 256 bytes");
  EXPECT_TRUE(Parse(With(Minimal(), "/description", "line one\n\tline two")).ok());
  EXPECT_EQ(ErrorOf(With(Minimal(), "/description", "red \x1b[31m text")),
            "description: control character 0x1b at byte 4 (only tab and newline are allowed)");
  EXPECT_EQ(ErrorOf(With(Minimal(), "/description", std::string("nul\0", 4))),
            "description: control character 0x00 at byte 3 (only tab and newline are allowed)");
}

TEST(PolicyTest, MalformedJson) {
  for (const char* text : {"", "{", "[]x", R"({"version":1,"tee":{"accept":["sgx"]}} trailing)",
                           R"({"version":1, /* comment */ "tee":{"accept":["sgx"]}})",
                           R"({"version":1,"tee":{"accept":["sgx",]}})", "{'version':1}"}) {
    EXPECT_TRUE(ErrorOf(std::string(text)).starts_with("policy: invalid JSON: ")) << text;
  }
  // Invalid UTF-8 inside a string.
  std::string bad_utf8 = R"({"version":1,"description":"caf)" + std::string("\xc3\x28") +
                         R"(","tee":{"accept":["sgx"]}})";
  EXPECT_TRUE(ErrorOf(bad_utf8).starts_with("policy: invalid JSON: ")) << ErrorOf(bad_utf8);
  EXPECT_EQ(ErrorOf(std::string("[1,2]")), "policy: expected an object, got array [1,2]");
  EXPECT_EQ(ErrorOf(std::string("7")), "policy: expected an object, got integer 7");
  EXPECT_EQ(ErrorOf(std::string("null")), "policy: expected an object, got null null");
}

TEST(PolicyTest, DuplicateKeysAreErrors) {
  EXPECT_EQ(ErrorOf(std::string(R"({"version":1,"version":1,"tee":{"accept":["sgx"]}})")),
            "version: duplicate field");
  EXPECT_EQ(ErrorOf(std::string(
                R"({"version":1,"tee":{"accept":["sgx"]},"output":{"k":1,"mode":"label","k":9}})")),
            "output.k: duplicate field");
  EXPECT_EQ(ErrorOf(std::string(R"({"version":1,"tee":{"accept":["sgx"],"measurements":{"sgx":[")" +
                                kSgx + R"("],"sgx":[")" + kSgx + R"("]}}})")),
            "tee.measurements.sgx: duplicate field");
  EXPECT_EQ(ErrorOf(std::string(R"({"version":1,"tee":{"accept":["sgx"]},)"
                                R"("defenses":{"prada":{"delta":0.5,"delta":0.99}}})")),
            "defenses.prada.delta: duplicate field");
  EXPECT_EQ(ErrorOf(std::string(R"({"version":1,"tee":{"accept":["sgx"]},)"
                                R"("defenses":{"memguard":{},"memguard":{"enabled":true}}})")),
            "defenses.memguard: duplicate field");
  EXPECT_EQ(ErrorOf(std::string(R"({"version":1,"tee":{"accept":["sgx"]},)"
                                R"("rate_limit":{"per_day":0,"per_day":1}})")),
            "rate_limit.per_day: duplicate field");
  // The same key in sibling objects is fine.
  EXPECT_TRUE(ParsePolicy(R"({"version":1,"tee":{"accept":["sgx"]},"lease":{},"output":{}})").ok());
  EXPECT_TRUE(ParsePolicy(R"({"version":1,"tee":{"accept":["sgx"]},"rate_limit":{"per_day":5},)"
                          R"("defenses":{"prada":{"enabled":true},"memguard":{"enabled":true}}})")
                  .ok());
}

TEST(PolicyTest, DeepNestingIsRejected) {
  std::string eight = std::string(7, '[') + std::string(7, ']');  // 1 (root) + 7 = 8 levels
  std::string nine = std::string(8, '[') + std::string(8, ']');
  // Eight levels pass the nesting check and then fail as an unknown field.
  EXPECT_EQ(ErrorOf(R"({"version":1,"tee":{"accept":["sgx"]},"x":)" + eight + "}"),
            "x: unknown field (known: version, description, tee, lease, output, defenses, "
            "rate_limit)");
  // Inside the defenses (root > defenses > prada > field) the limit is reached the same way.
  std::string five = std::string(5, '[') + std::string(5, ']');  // 3 + 5 = 8 levels
  std::string six = std::string(6, '[') + std::string(6, ']');
  EXPECT_EQ(
      ErrorOf(R"({"version":1,"tee":{"accept":["sgx"]},"defenses":{"prada":{"x":)" + five + "}}}"),
      "defenses.prada.x: unknown field (known: enabled, delta, action, throttle_per_second, "
      "throttle_per_day, max_stored, window, test_every, min_class_entries, max_checks)");
  EXPECT_EQ(
      ErrorOf(R"({"version":1,"tee":{"accept":["sgx"]},"defenses":{"prada":{"x":)" + six + "}}}"),
      "defenses.prada.x[][][][][]: JSON nested deeper than 8 levels");
  EXPECT_EQ(ErrorOf(R"({"version":1,"tee":{"accept":["sgx"]},"x":)" + nine + "}"),
            "x[][][][][][][]: JSON nested deeper than 8 levels");
  std::string very_deep = "{\"x\":" + std::string(20000, '[') + std::string(20000, ']') + "}";
  EXPECT_NE(ErrorOf(very_deep).find("JSON nested deeper than 8 levels"), std::string::npos);
}

TEST(PolicyTest, SizeLimit) {
  std::string base = Minimal().dump();
  std::string at_limit = base + std::string(65536 - base.size(), ' ');
  ASSERT_EQ(at_limit.size(), 65536u);
  EXPECT_TRUE(ParsePolicy(at_limit).ok());
  EXPECT_EQ(ErrorOf(at_limit + " "), "policy: 65537 bytes is over the limit 65536 bytes");
}

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("MLCAPSULE_SOURCE_DIR");
  return dir ? std::filesystem::path(dir) : std::filesystem::path();
}

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

constexpr OutputMode kOutputModesForTest[] = {OutputMode::kProbabilities,  OutputMode::kTopK,
                                              OutputMode::kRounded,        OutputMode::kLabel,
                                              OutputMode::kReverseSigmoid, OutputMode::kGaussian};

TEST(PolicyTest, ExamplePoliciesParse) {
  if (SourceDir().empty()) GTEST_SKIP() << "MLCAPSULE_SOURCE_DIR is not set (run through ctest)";
  std::filesystem::path dir = SourceDir() / "examples" / "policies";
  std::set<std::string> names;
  std::set<OutputMode> modes;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    names.insert(entry.path().filename().string());
    Result<Policy> policy = ParsePolicy(ReadText(entry.path()));
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    EXPECT_GE(policy->description.size(), 40u) << "examples explain themselves";
    modes.insert(policy->output.mode);
    Result<Policy> again = ParsePolicy(PolicyToJson(*policy));
    ASSERT_TRUE(again.ok());
    ExpectSamePolicy(*policy, *again);
  }
  for (const char* name :
       {"probabilities.json", "top3.json", "rounded.json", "label-only.json", "hardware-only.json",
        "reverse-sigmoid.json", "gaussian.json", "defended.json"}) {
    EXPECT_TRUE(names.count(name)) << name << " is missing";
  }
  for (OutputMode mode : kOutputModesForTest) {
    EXPECT_TRUE(modes.count(mode)) << OutputModeName(mode) << " has no example";
  }

  Result<Policy> defended = ParsePolicy(ReadText(dir / "defended.json"));
  ASSERT_TRUE(defended.ok());
  EXPECT_TRUE(defended->defenses.prada.enabled);
  EXPECT_TRUE(defended->defenses.watermark.enabled);
  EXPECT_EQ(defended->defenses.watermark.escrow, EscrowMode::kAfterAlarm);
  EXPECT_GT(defended->rate_limit.per_second, 0u);

  Result<Policy> probabilities = ParsePolicy(ReadText(dir / "probabilities.json"));
  ASSERT_TRUE(probabilities.ok());
  EXPECT_EQ(probabilities->output.mode, OutputMode::kProbabilities);
  EXPECT_TRUE(PolicyAcceptsTee(*probabilities, "software"));

  Result<Policy> top3 = ParsePolicy(ReadText(dir / "top3.json"));
  ASSERT_TRUE(top3.ok());
  EXPECT_EQ(top3->output.mode, OutputMode::kTopK);
  EXPECT_EQ(top3->output.k, 3);

  Result<Policy> rounded = ParsePolicy(ReadText(dir / "rounded.json"));
  ASSERT_TRUE(rounded.ok());
  EXPECT_EQ(rounded->output.mode, OutputMode::kRounded);
  EXPECT_EQ(rounded->output.decimals, 2);

  Result<Policy> label = ParsePolicy(ReadText(dir / "label-only.json"));
  ASSERT_TRUE(label.ok());
  EXPECT_EQ(label->output.mode, OutputMode::kLabel);

  Result<Policy> hardware = ParsePolicy(ReadText(dir / "hardware-only.json"));
  ASSERT_TRUE(hardware.ok());
  EXPECT_FALSE(PolicyAcceptsTee(*hardware, "software"));
  EXPECT_FALSE(hardware->tee.allow_debug);
  std::set<std::string> measured;
  for (const MeasurementList& list : hardware->tee.measurements) {
    EXPECT_FALSE(list.allowed.empty());
    measured.insert(list.tee);
  }
  EXPECT_EQ(measured, (std::set<std::string>{"sgx", "tdx", "snp"}));
}

// Every ```json block in docs/policy.md is a whole policy that parses, so the reference cannot
// show a field name or value the parser refuses.
TEST(PolicyTest, DocumentationExamplesParse) {
  if (SourceDir().empty()) GTEST_SKIP() << "MLCAPSULE_SOURCE_DIR is not set (run through ctest)";
  std::istringstream doc(ReadText(SourceDir() / "docs" / "policy.md"));
  std::vector<std::string> blocks;
  std::string line;
  bool in_block = false;
  while (std::getline(doc, line)) {
    if (!in_block && line == "```json") {
      in_block = true;
      blocks.emplace_back();
    } else if (in_block && line == "```") {
      in_block = false;
    } else if (in_block) {
      blocks.back() += line + "\n";
    }
  }
  EXPECT_FALSE(in_block) << "unterminated ```json block";
  ASSERT_GE(blocks.size(), 2u);
  bool defended = false;
  for (const std::string& block : blocks) {
    SCOPED_TRACE(block);
    Result<Policy> policy = ParsePolicy(block);
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    Result<Policy> again = ParsePolicy(PolicyToJson(*policy));
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ExpectSamePolicy(*policy, *again);
    const DefensePolicy& d = policy->defenses;
    if (d.prada.enabled && d.prada.action == AlarmAction::kThrottle && d.watermark.enabled &&
        d.watermark.escrow == EscrowMode::kAfterAlarm && policy->rate_limit.per_second > 0 &&
        policy->rate_limit.per_day > 0) {
      defended = true;
    }
  }
  EXPECT_TRUE(defended) << "docs/policy.md shows PRADA (throttle), the watermark (after_alarm) "
                           "and both rate limits in one example";
}

// docs/policy.schema.json and the parser must agree: same fields at every level, same integer
// ranges, same enums, same defaults.
TEST(PolicyTest, SchemaMatchesParser) {
  if (SourceDir().empty()) GTEST_SKIP() << "MLCAPSULE_SOURCE_DIR is not set (run through ctest)";
  Json schema = Json::parse(ReadText(SourceDir() / "docs" / "policy.schema.json"));
  EXPECT_EQ(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");

  // The parser's known fields, read back from its unknown-field message.
  auto parser_fields = [](const std::string& pointer) {
    std::string message = ErrorOf(With(Minimal(), pointer + "/zz_unknown", 1));
    size_t open = message.find("(known: ");
    EXPECT_NE(open, std::string::npos) << message;
    std::string list = message.substr(open + 8, message.size() - open - 9);
    std::vector<std::string> fields;
    for (size_t start = 0; start <= list.size();) {
      size_t comma = list.find(", ", start);
      if (comma == std::string::npos) comma = list.size();
      fields.push_back(list.substr(start, comma - start));
      start = comma + 2;
    }
    return fields;
  };
  Result<Policy> defaults = Parse(Minimal());
  ASSERT_TRUE(defaults.ok());
  Json canonical_defaults = Json::parse(PolicyToJson(*defaults));

  struct Level {
    std::string pointer;  // in the policy document
    Json schema;
  };
  const Json defenses = schema["properties"]["defenses"]["properties"];
  std::vector<Level> levels = {{"", schema},
                               {"/tee", schema["properties"]["tee"]},
                               {"/tee/sgx", schema["properties"]["tee"]["properties"]["sgx"]},
                               {"/tee/snp", schema["properties"]["tee"]["properties"]["snp"]},
                               {"/lease", schema["properties"]["lease"]},
                               {"/output", schema["properties"]["output"]},
                               {"/defenses", schema["properties"]["defenses"]},
                               {"/defenses/prada", defenses["prada"]},
                               {"/defenses/watermark", defenses["watermark"]},
                               {"/defenses/memguard", defenses["memguard"]},
                               {"/rate_limit", schema["properties"]["rate_limit"]}};
  for (const Level& level : levels) {
    SCOPED_TRACE("level '" + level.pointer + "'");
    EXPECT_EQ(level.schema["type"], "object");
    EXPECT_EQ(level.schema["additionalProperties"], false);
    std::vector<std::string> schema_fields;
    for (const auto& [name, unused] : level.schema["properties"].items()) {
      schema_fields.push_back(name);
    }
    std::vector<std::string> fields = parser_fields(level.pointer);
    std::sort(fields.begin(), fields.end());
    EXPECT_EQ(schema_fields, fields);  // nlohmann::json objects iterate in sorted order

    for (const auto& [name, property] : level.schema["properties"].items()) {
      std::string pointer = level.pointer + "/" + name;
      SCOPED_TRACE(pointer);
      // "type" is a name, or a list of names ("integer" or "null").
      const Json type = property.value("type", Json(""));
      auto is = [&type](const char* name) {
        return type == name || (type.is_array() && std::count(type.begin(), type.end(), name));
      };
      if (property.contains("default") && !is("object")) {
        EXPECT_EQ(canonical_defaults[Json::json_pointer(pointer)], property["default"]);
      }
      if (is("number")) {
        // Every real is open at 0, and closed or open at its maximum.
        EXPECT_EQ(property["exclusiveMinimum"], 0);
        EXPECT_FALSE(property.contains("minimum"));
        const bool open_max = property.contains("exclusiveMaximum");
        EXPECT_NE(open_max, property.contains("maximum"));
        double max = open_max ? property["exclusiveMaximum"] : property["maximum"];
        EXPECT_FALSE(Parse(With(Minimal(), pointer, 0)).ok());
        EXPECT_TRUE(Parse(With(Minimal(), pointer, 1e-9)).ok());
        EXPECT_TRUE(Parse(With(Minimal(), pointer, max / 2)).ok());
        EXPECT_EQ(Parse(With(Minimal(), pointer, max)).ok(), !open_max);
        EXPECT_TRUE(Parse(With(Minimal(), pointer, std::nextafter(max, 0.0))).ok());
        EXPECT_FALSE(Parse(With(Minimal(), pointer, std::nextafter(max, 1e9))).ok());
        continue;
      }
      if (!is("integer")) continue;
      uint64_t min = property["minimum"], max = property["maximum"];
      EXPECT_TRUE(Parse(With(Minimal(), pointer, min)).ok());
      EXPECT_TRUE(Parse(With(Minimal(), pointer, max)).ok());
      EXPECT_FALSE(Parse(With(Minimal(), pointer, max + 1)).ok());
      EXPECT_FALSE(Parse(With(Minimal(), pointer, static_cast<int64_t>(min) - 1)).ok());
    }
  }
  EXPECT_EQ(schema["required"], Json({"version", "tee"}));
  EXPECT_EQ(schema["properties"]["tee"]["required"], Json({"accept"}));
  for (const Json& mode : schema["properties"]["output"]["properties"]["mode"]["enum"]) {
    EXPECT_TRUE(Parse(With(Minimal(), "/output/mode", mode)).ok()) << mode;
  }
  EXPECT_EQ(schema["properties"]["output"]["properties"]["mode"]["enum"].size(),
            std::size(kAllOutputModes));
  const Json& actions = defenses["prada"]["properties"]["action"]["enum"];
  EXPECT_EQ(actions, Json({"log", "throttle", "block"}));
  for (const Json& action : actions) {
    EXPECT_TRUE(Parse(With(Minimal(), "/defenses/prada/action", action)).ok()) << action;
  }
  const Json& escrows = defenses["watermark"]["properties"]["escrow"]["enum"];
  EXPECT_EQ(escrows, Json({"after_alarm", "always"}));
  for (const Json& escrow : escrows) {
    EXPECT_TRUE(Parse(With(Minimal(), "/defenses/watermark/escrow", escrow)).ok()) << escrow;
  }
  // The rules between fields are if/then in the schema; SchemaRulesMatchParser checks them.
  EXPECT_EQ(defenses["watermark"]["properties"]["escrow_key"]["pattern"], "^([0-9a-f]{64})?$");
  EXPECT_EQ(schema["allOf"].size(), 2u);
  Json tees = schema["$defs"]["tee_name"]["enum"];
  EXPECT_EQ(tees, Json({"software", "sgx", "tdx", "snp", "tpm"}));
  EXPECT_TRUE(Parse(With(Minimal(), "/tee/accept", tees)).ok());
  EXPECT_EQ(schema["properties"]["tee"]["properties"]["accept"]["maxItems"], tees.size());
  EXPECT_EQ(schema["properties"]["description"]["maxLength"], 1024);
  EXPECT_EQ(schema["properties"]["output"]["properties"]["tensor"]["maxLength"], 256);
  const Json& statuses = schema["properties"]["tee"]["properties"]["tcb_statuses"];
  EXPECT_EQ(statuses["maxItems"], kTcbStatusNames.size());
  EXPECT_EQ(statuses["items"]["enum"].size(), kTcbStatusNames.size());
  for (const Json& name : statuses["items"]["enum"]) {
    EXPECT_TRUE(Parse(With(Minimal(), "/tee/tcb_statuses", {name})).ok()) << name;
  }
  EXPECT_TRUE(Parse(With(Minimal(), "/tee/tcb_statuses", statuses["items"]["enum"])).ok());
  EXPECT_EQ(Json(DefaultTcbStatuses()), statuses["default"]);
}

// The part of JSON Schema that the policy schema's if/then rules use: properties, required, const,
// enum and pattern. Any other keyword fails the test rather than being ignored.
bool SchemaMatches(const Json& schema, const Json& value) {
  bool matches = true;
  for (const auto& [keyword, argument] : schema.items()) {
    if (keyword == "description") continue;
    if (keyword == "properties") {  // applies to objects only, and to the fields present
      if (!value.is_object()) continue;
      for (const auto& [name, property] : argument.items()) {
        if (value.contains(name) && !SchemaMatches(property, value[name])) matches = false;
      }
    } else if (keyword == "required") {
      if (!value.is_object()) continue;
      for (const Json& name : argument) {
        if (!value.contains(name.get<std::string>())) matches = false;
      }
    } else if (keyword == "const") {
      if (value != argument) matches = false;
    } else if (keyword == "enum") {
      if (std::count(argument.begin(), argument.end(), value) == 0) matches = false;
    } else if (keyword == "pattern") {
      if (value.is_string() &&
          !std::regex_search(value.get<std::string>(), std::regex(argument.get<std::string>()))) {
        matches = false;
      }
    } else {
      ADD_FAILURE() << "SchemaMatches does not implement the keyword " << keyword;
    }
  }
  return matches;
}

// A rule holds unless its "if" matches and its "then" does not.
bool RuleHolds(const Json& rule, const Json& value) {
  EXPECT_TRUE(rule.contains("if") && rule.contains("then")) << rule;
  return !SchemaMatches(rule["if"], value) || SchemaMatches(rule["then"], value);
}

// The schema's rules between fields accept exactly the combinations the parser accepts.
TEST(PolicyTest, SchemaRulesMatchParser) {
  if (SourceDir().empty()) GTEST_SKIP() << "MLCAPSULE_SOURCE_DIR is not set (run through ctest)";
  Json schema = Json::parse(ReadText(SourceDir() / "docs" / "policy.schema.json"));
  const Json& watermark_rule = schema["properties"]["defenses"]["properties"]["watermark"];
  auto schema_accepts = [&](const Json& document) {
    bool holds = true;
    for (const Json& rule : schema["allOf"]) holds = holds && RuleHolds(rule, document);
    if (document.contains("defenses") && document["defenses"].contains("watermark")) {
      holds = holds && RuleHolds(watermark_rule, document["defenses"]["watermark"]);
    }
    return holds;
  };
  // Every combination of the fields the rules read, each one absent or set.
  std::vector<Json> documents;
  const Json absent;  // null: leave the field out
  for (const Json& mode : {absent, Json("probabilities"), Json("top_k"), Json("rounded"),
                           Json("label"), Json("reverse_sigmoid"), Json("gaussian")}) {
    for (const Json& memguard : {absent, Json(false), Json(true)}) {
      Json document = Minimal();
      if (!mode.is_null()) document["output"]["mode"] = mode;
      if (!memguard.is_null()) document["defenses"]["memguard"]["enabled"] = memguard;
      documents.push_back(document);
    }
  }
  for (const Json& enabled : {absent, Json(false), Json(true)}) {
    for (const Json& escrow : {absent, Json("after_alarm"), Json("always")}) {
      for (const Json& key : {absent, Json(""), Json(kEscrowKey)}) {
        for (const Json& prada : {absent, Json(false), Json(true)}) {
          Json document = Minimal();
          Json& watermark = document["defenses"]["watermark"];
          watermark = Json::object();
          if (!enabled.is_null()) watermark["enabled"] = enabled;
          if (!escrow.is_null()) watermark["escrow"] = escrow;
          if (!key.is_null()) watermark["escrow_key"] = key;
          if (!prada.is_null()) document["defenses"]["prada"]["enabled"] = prada;
          documents.push_back(document);
        }
      }
    }
  }
  size_t accepted = 0;
  for (const Json& document : documents) {
    Result<Policy> policy = Parse(document);
    EXPECT_EQ(policy.ok(), schema_accepts(document))
        << document.dump() << ": " << (policy.ok() ? "parses" : policy.status().ToString());
    accepted += policy.ok();
  }
  // Both sides of every rule were exercised.
  EXPECT_GT(accepted, documents.size() / 4);
  EXPECT_LT(accepted, documents.size() * 3 / 4);
}

}  // namespace
}  // namespace mlcapsule::capsule
