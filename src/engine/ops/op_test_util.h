// Test helpers for op tests: build a node, run it through EvaluateNode with the reference or the
// fast kernel, compare tensors with a tolerance.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "engine/op.h"

namespace mlcapsule::engine::testing {

PlanNode MakeNode(OpType op, int num_inputs, int num_outputs, std::vector<Attribute> attrs = {});
Attribute IntsAttr(std::string name, std::vector<int64_t> values);
Attribute FloatsAttr(std::string name, std::vector<float> values);

// Runs `node` on `inputs` (nullptr = absent optional input); fails the test on error.
std::vector<Tensor> Eval(const PlanNode& node, std::vector<const Tensor*> inputs,
                         bool fast = false);
// Same, returning the status (for negative tests).
Status EvalStatus(const PlanNode& node, std::vector<const Tensor*> inputs, bool fast = false);

Tensor RandomFloats(Dims dims, uint32_t seed, float low = -1.0f, float high = 1.0f);

// Asserts same dtype/dims and |a-b| <= atol + rtol*|b| elementwise.
void ExpectNear(const Tensor& actual, const Tensor& expected, float atol = 1e-5f,
                float rtol = 1e-4f);

}  // namespace mlcapsule::engine::testing
