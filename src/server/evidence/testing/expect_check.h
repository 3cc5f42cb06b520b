// GoogleTest helper for the verifiers' error contract: a failed check's message starts with the
// check's name and a colon ("quote_signature: ..."), so a negative test can assert where the
// verification stopped, not just that it did.
#pragma once

#include <gtest/gtest.h>

#include <string>

// `result` is a Result<T>; it must have failed, at `check`.
#define EXPECT_FAILS_AT(result, check)                                              \
  do {                                                                              \
    const auto& mlc_result = (result);                                              \
    ASSERT_FALSE(mlc_result.ok()) << "expected failure at " << (check);             \
    EXPECT_EQ(mlc_result.status().message().rfind(std::string(check) + ":", 0), 0u) \
        << mlc_result.status().ToString();                                          \
  } while (0)
