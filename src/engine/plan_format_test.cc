// Plan format: round trip, and hostile bytes (every truncation, random corruption, oversized
// counts) are rejected with an error, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "engine/plan.h"
#include "engine/session.h"
#include "engine/test_plans.h"

namespace mlcapsule::engine {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(PlanFormatTest, RoundTripKeepsEverything) {
  Plan plan = testing::SmallConvNet();
  ASSERT_TRUE(ValidatePlan(plan).ok());
  std::string bytes = SerializePlan(plan);
  Result<Plan> parsed = ParsePlan(Bytes(bytes));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->model_name, plan.model_name);
  ASSERT_EQ(parsed->tensors.size(), plan.tensors.size());
  ASSERT_EQ(parsed->nodes.size(), plan.nodes.size());
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    EXPECT_EQ(parsed->tensors[i].name, plan.tensors[i].name);
    EXPECT_EQ(parsed->tensors[i].type, plan.tensors[i].type);
  }
  ASSERT_EQ(parsed->constants.size(), plan.constants.size());
  EXPECT_EQ(std::memcmp(parsed->constants.data(), plan.constants.data(), plan.constants.size()), 0);
  EXPECT_TRUE(ValidatePlan(*parsed).ok());
  EXPECT_EQ(SerializePlan(*parsed), bytes);
}

TEST(PlanFormatTest, EveryTruncationIsRejected) {
  std::string bytes = SerializePlan(testing::SmallConvNet());
  for (size_t n = 0; n < bytes.size(); ++n) {
    Result<Plan> parsed = ParsePlan(Bytes(bytes.substr(0, n)));
    EXPECT_FALSE(parsed.ok()) << "accepted a plan truncated to " << n << " bytes";
  }
}

TEST(PlanFormatTest, TrailingBytesAreRejected) {
  std::string bytes = SerializePlan(testing::SmallConvNet()) + "x";
  EXPECT_FALSE(ParsePlan(Bytes(bytes)).ok());
}

TEST(PlanFormatTest, CorruptedBytesNeverCrash) {
  std::string good = SerializePlan(testing::SmallConvNet());
  std::mt19937 rng(1);
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    Result<Plan> parsed = ParsePlan(Bytes(bytes));
    if (!parsed.ok()) continue;
    Status valid = ValidatePlan(*parsed);
    if (!valid.ok()) continue;
    // Structurally valid (e.g. a changed weight or name): it must run.
    auto session = Session::Create(std::move(parsed).value(), {});
    if (!session.ok()) continue;
    ++accepted;
    Tensor x = Tensor::Make(DType::kFloat32, {1, 1, 6, 6});
    std::vector<Tensor> out;
    (void)(*session)->Run({x.View()}, &out);
  }
  EXPECT_GT(accepted, 0);  // some flips only touch weights, which stay valid
}

TEST(PlanFormatTest, HostileCountsAreBoundedBeforeAllocation) {
  std::string bytes = SerializePlan(testing::SmallConvNet());
  // The tensor count follows magic(8) version(4) flags(4) and two strings.
  size_t offset = 16;
  uint32_t len;
  for (int s = 0; s < 2; ++s) {
    std::memcpy(&len, bytes.data() + offset, 4);
    offset += 4 + len;
  }
  uint32_t huge = 0xFFFFFFFFu;
  std::memcpy(bytes.data() + offset, &huge, 4);
  Result<Plan> parsed = ParsePlan(Bytes(bytes));
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("tensor count"), std::string::npos)
      << parsed.status().message();
}

TEST(PlanFormatTest, ValidationNamesTheProblem) {
  Plan plan = testing::SmallConvNet();
  plan.nodes[3].inputs[0] = 999;
  Status s = ValidatePlan(plan);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("fc"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("999"), std::string::npos) << s.message();

  plan = testing::SmallConvNet();
  std::swap(plan.nodes[0], plan.nodes[1]);  // Relu before the Conv that feeds it
  s = ValidatePlan(plan);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("before it is computed"), std::string::npos) << s.message();

  plan = testing::SmallConvNet();
  plan.tensors[static_cast<size_t>(plan.nodes[3].outputs[0])].type.shape[1].value =
      4;  // wrong stored shape
  s = ValidatePlan(plan);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("declared"), std::string::npos) << s.message();

  plan = testing::SmallConvNet();
  plan.nodes[0].attrs.push_back(Attribute{"bogus", AttrKind::kInts, {1}, {}});
  s = ValidatePlan(plan);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_NE(s.message().find("bogus"), std::string::npos);
}

TEST(PlanFormatTest, ParseAdoptingTheBufferKeepsConstantsInPlace) {
  Plan original = testing::SmallConvNet();
  std::string bytes = SerializePlan(original);
  AlignedBuffer buffer(bytes.size());
  std::memcpy(buffer.data(), bytes.data(), bytes.size());
  const uint8_t* start = buffer.data();
  auto plan = ParsePlan(std::move(buffer));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->constants.size(), original.constants.size());
  EXPECT_EQ(
      std::memcmp(plan->constants.data(), original.constants.data(), original.constants.size()), 0);
  // No copy: the constants are where they were in the buffer.
  EXPECT_GE(plan->constants.data(), start);
  EXPECT_LT(plan->constants.data(), start + bytes.size());
  EXPECT_TRUE(ValidatePlan(*plan).ok());
  // A truncated buffer is still refused.
  AlignedBuffer cut(bytes.size() - 3);
  std::memcpy(cut.data(), bytes.data(), cut.size());
  EXPECT_FALSE(ParsePlan(std::move(cut)).ok());
}

}  // namespace
}  // namespace mlcapsule::engine
