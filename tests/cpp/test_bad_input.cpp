// Bad input through the C++ API: c10 errors naming the argument, expected and actual.
#include "catch_compat.h"
#include "reference.h"

#include <llmint8/llmint8.h>

using llmint8::testing::contains_all;
using llmint8::testing::error_message;

namespace {

at::Tensor f16(std::vector<int64_t> shape) { return at::randn(shape).to(at::kHalf); }
at::Tensor i8(std::vector<int64_t> shape) { return at::randint(-127, 128, shape, at::kChar); }
at::Tensor stats(int64_t n) { return at::rand({n}) + 0.1; }

}  // namespace

TEST_CASE("wrong dtype names the argument", "[bad-input]") {
  const auto msg = error_message([] { llmint8::int8_linear(f16({2, 3}), f16({4, 3}), stats(4)); });
  CHECK(contains_all(msg, {"int8_linear", "'CB'", "dtype int8", "got float16"}));
  CHECK(contains_all(error_message([] { llmint8::int8_vectorwise_quant(i8({2, 3})); }),
                     {"'A'", "float16, bfloat16 or float32", "got int8"}));
}

TEST_CASE("wrong rank names the argument", "[bad-input]") {
  CHECK(contains_all(error_message([] { llmint8::int8_linear_matmul(i8({2, 3}), i8({3})); }),
                     {"'B'", "2 dimension", "got 1"}));
}

TEST_CASE("shape mismatch names the argument and both sizes", "[bad-input]") {
  CHECK(contains_all(error_message([] { llmint8::int8_linear(f16({2, 7}), i8({4, 3}), stats(4)); }),
                     {"'CB'", "size 7", "got 3"}));
  CHECK(contains_all(error_message([] { llmint8::int8_linear(f16({2, 3}), i8({4, 3}), stats(4), f16({5})); }),
                     {"'bias'", "size 4", "got 5"}));
}

TEST_CASE("wrong device names both devices", "[bad-input]") {
  CHECK(contains_all(error_message([] { llmint8::int8_linear(f16({2, 3}), i8({4, 3}).to(at::kMeta), stats(4)); }),
                     {"'CB'", "same device", "cpu", "meta"}));
}

TEST_CASE("negative threshold and K past the int32 limit", "[bad-input]") {
  CHECK(contains_all(error_message([] { llmint8::int8_linear(f16({2, 3}), i8({4, 3}), stats(4), {}, -1.0); }),
                     {"'threshold'", ">= 0", "got -1"}));
  CHECK(contains_all(error_message([] { llmint8::int8_linear_matmul(i8({1, 133145}), i8({2, 133145})); }),
                     {"K = 133145", "133144"}));
}

TEST_CASE("a failed .out call leaves out untouched", "[bad-input]") {
  auto out = at::full({2, 4}, 7, at::kInt);
  CHECK(contains_all(error_message([&] { llmint8::int8_linear_matmul_out(i8({2, 3}), i8({5, 3}), out); }),
                     {"'out'", "size 5", "got 4"}));
  CHECK((out == 7).all().item<bool>());
}
