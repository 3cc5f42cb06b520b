// Session: any batch size, fast kernels against the reference kernels, input checking.
#include "engine/session.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/test_plans.h"

namespace mlcapsule::engine {
namespace {

Tensor RandomInput(int64_t batch, uint32_t seed) {
  Tensor t = Tensor::Make(DType::kFloat32, {batch, 1, 6, 6});
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < t.NumElements(); ++i) t.Data<float>()[i] = d(rng);
  return t;
}

TEST(SessionTest, FastMatchesReferenceAtEveryBatchSize) {
  auto fast = Session::Create(testing::SmallConvNet(), {.threads = 2, .fast_kernels = true});
  auto reference = Session::Create(testing::SmallConvNet(), {.threads = 1, .fast_kernels = false});
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  ASSERT_TRUE(reference.ok());
  for (int64_t batch : {1, 3, 2, 7, 1}) {
    Tensor x = RandomInput(batch, static_cast<uint32_t>(batch));
    std::vector<Tensor> a, b;
    ASSERT_TRUE((*fast)->Run({x.View()}, &a).ok());
    ASSERT_TRUE((*reference)->Run({x.View()}, &b).ok());
    ASSERT_EQ(a[0].dims, (Dims{batch, 3}));
    for (int64_t i = 0; i < a[0].NumElements(); ++i)
      EXPECT_NEAR(a[0].Data<float>()[i], b[0].Data<float>()[i], 1e-4f);
    EXPECT_EQ((*fast)->stats().batch_size, batch);
  }
}

TEST(SessionTest, BatchRowsAreIndependent) {
  auto session = Session::Create(testing::SmallConvNet(), {});
  ASSERT_TRUE(session.ok());
  Tensor x3 = RandomInput(3, 11);
  std::vector<Tensor> all;
  ASSERT_TRUE((*session)->Run({x3.View()}, &all).ok());
  for (int64_t row = 0; row < 3; ++row) {
    Tensor one = Tensor::Make(DType::kFloat32, {1, 1, 6, 6});
    std::memcpy(one.bytes.data(), x3.bytes.data() + row * 36 * 4, 36 * 4);
    std::vector<Tensor> single;
    ASSERT_TRUE((*session)->Run({one.View()}, &single).ok());
    for (int k = 0; k < 3; ++k)
      EXPECT_NEAR(single[0].Data<float>()[k], all[0].Data<float>()[row * 3 + k], 1e-5f);
  }
}

TEST(SessionTest, WrongInputsAreRejectedWithTheirName) {
  auto session = Session::Create(testing::SmallConvNet(), {});
  ASSERT_TRUE(session.ok());
  std::vector<Tensor> out;
  Tensor wrong = Tensor::Make(DType::kFloat32, {1, 1, 5, 6});
  Status s = (*session)->Run({wrong.View()}, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("input 'input'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[N,1,6,6]"), std::string::npos) << s.message();
  Tensor ints = Tensor::Make(DType::kInt64, {1, 1, 6, 6});
  EXPECT_FALSE((*session)->Run({ints.View()}, &out).ok());
  EXPECT_FALSE((*session)->Run(std::vector<TensorView>{}, &out).ok());
  Tensor empty_batch = Tensor::Make(DType::kFloat32, {0, 1, 6, 6});
  EXPECT_FALSE((*session)->Run({empty_batch.View()}, &out).ok());
}

TEST(SessionTest, HugeBatchIsRefusedNotAllocated) {
  SessionOptions options;
  options.max_arena_bytes = 1 << 20;
  auto session = Session::Create(testing::SmallConvNet(), options);
  ASSERT_TRUE(session.ok());
  TensorView big{DType::kFloat32, {100000, 1, 6, 6}, reinterpret_cast<void*>(16)};  // never read
  std::vector<Tensor> out;
  Status s = (*session)->Run({big}, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
}

TEST(SessionTest, BadThreadCountIsAnError) {
  EXPECT_FALSE(Session::Create(testing::SmallConvNet(), {.threads = 0}).ok());
}

}  // namespace
}  // namespace mlcapsule::engine
