// Test fixtures (test_capsule.h).
#include "host/test_capsule.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "base/bytes.h"

namespace mlcapsule::testing {

std::vector<float> DefaultClassifierWeights() {
  std::vector<float> w(kClassifierInputs * kClassifierClasses);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.5f * std::sin(static_cast<float>(i) * 0.9f + 0.2f);
  return w;
}

engine::Plan ClassifierPlan(std::span<const float> weights) {
  using engine::Dim;
  engine::Plan p;
  p.model_name = "test_classifier";
  p.producer = "test";
  const Dim n{1, true};
  engine::PlanTensor in;
  in.name = "input";
  in.type = {engine::DType::kFloat32, {n, {kClassifierInputs, false}}};
  in.kind = engine::TensorKind::kInput;
  p.tensors.push_back(in);
  int32_t w =
      p.AddConstant("fc_w", engine::DType::kFloat32,
                    engine::FixedShape(std::vector<int64_t>{kClassifierClasses, kClassifierInputs}),
                    weights.data());
  std::vector<float> bias(kClassifierClasses);
  for (int i = 0; i < kClassifierClasses; ++i)
    bias[static_cast<size_t>(i)] = 0.01f * static_cast<float>(i);
  int32_t b =
      p.AddConstant("fc_b", engine::DType::kFloat32,
                    engine::FixedShape(std::vector<int64_t>{kClassifierClasses}), bias.data());
  engine::PlanTensor out;
  out.name = "logits";
  out.type = {engine::DType::kFloat32, {n, {kClassifierClasses, false}}};
  out.kind = engine::TensorKind::kOutput;
  p.tensors.push_back(out);
  const int32_t x = 0, y = static_cast<int32_t>(p.tensors.size() - 1);
  p.inputs = {x};
  p.outputs = {y};
  p.nodes.push_back(engine::PlanNode{engine::OpType::kFullyConnected, "fc", {x, w, b}, {y}, {}});
  return p;
}

namespace {
[[noreturn]] void Die(const Status& s) {
  std::fprintf(stderr, "test fixture failed: %s\n", s.ToString().c_str());
  std::abort();
}
}  // namespace

TestProvider TestProvider::Make(const engine::Plan& plan, const std::string& policy_json,
                                uint32_t chunk_bytes) {
  if (Status s = capsule::InitCrypto(); !s.ok()) Die(s);
  TestProvider p;
  p.key = capsule::GenerateSigningKeyPair();
  auto policy = capsule::ParsePolicy(policy_json);
  if (!policy.ok()) Die(policy.status());
  p.policy = *policy;
  std::string plan_bytes = engine::SerializePlan(plan);
  capsule::PackInput input;
  input.plan = AsBytes(plan_bytes);
  input.model_name = plan.model_name;
  input.policy_json = capsule::PolicyToJson(p.policy);
  input.inputs = capsule::PlanIo(plan, plan.inputs);
  input.outputs = capsule::PlanIo(plan, plan.outputs);
  input.chunk_bytes = chunk_bytes;
  auto packed = capsule::PackCapsule(input, p.key);
  if (!packed.ok()) Die(packed.status());
  p.packed = std::move(packed).value();
  auto view = capsule::ParseCapsule(p.packed.bytes);
  if (!view.ok()) Die(view.status());
  p.header = view->header;
  return p;
}

Result<std::vector<uint8_t>> TestProvider::Lease(std::span<const uint8_t> request, uint64_t quota,
                                                 int64_t seconds, int64_t now,
                                                 const std::string& license_id) {
  capsule::LeaseTerms terms;
  terms.license_id = license_id;
  terms.query_quota = quota;
  terms.valid_seconds = seconds;
  terms.now = now != 0 ? now : static_cast<int64_t>(std::time(nullptr));
  terms.sequence = ++sequence;
  MLC_ASSIGN_OR_RETURN(capsule::CheckedRequest checked,
                       capsule::CheckEvidenceRequest(request, header, policy, terms));
  return capsule::IssueLeaseForRequest(checked, header, policy, packed.capsule_key, key, terms);
}

}  // namespace mlcapsule::testing
