// libFuzzer target: the llama2.c checkpoint reader (header, sizes, tensors, the model it builds).
#include "fuzz_check.h"
#include "io/readers.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmint8::fuzz::kFile;
  llmint8::fuzz::expect_named_error("'" + kFile + "'", [&] {
    llmint8::models::read_llama2c(reinterpret_cast<const char*>(data), size, kFile);
  });
  return 0;
}
