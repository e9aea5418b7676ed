// libFuzzer target: a Hugging Face config.json (model_type and the family's fields: sizes, rope,
// tied embeddings, sliding windows; quantization_config), and the parameter count the loader
// bounds allocation with.
#include "fuzz_check.h"
#include "io/readers.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmint8::fuzz::kFile;
  llmint8::fuzz::expect_named_error("'" + kFile + "'", [&] {
    const auto config = llmint8::models::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), kFile);
    if (config.model.parameter_count <= 0) std::abort();  // validated sizes cannot overflow the count
  });
  return 0;
}
