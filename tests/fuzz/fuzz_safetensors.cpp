// libFuzzer target: the safetensors reader (header JSON, dtypes, shapes, offsets, data), then
// the tensors it returns through load_state_dict into a Linear8bitLt, quantized and not.
#include "fuzz_check.h"
#include "io/readers.h"

#include <llmint8/checkpoint.h>
#include <llmint8/linear8bitlt.h>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using llmint8::fuzz::kFile;
  llmint8::TensorMap tensors;
  llmint8::fuzz::expect_named_error("'" + kFile + "'", [&] {
    tensors = llmint8::read_safetensors(reinterpret_cast<const char*>(data), size, kFile);
  });
  if (tensors.empty()) return 0;
  for (const bool quantized : {false, true}) {
    for (const bool strict : {false, true}) {
      llmint8::Linear8bitLt layer(llmint8::Linear8bitLtOptions(4, 3).has_fp16_weights(false).threshold(6.0));
      if (quantized) layer->to(torch::kCPU);
      llmint8::fuzz::expect_named_error("llmint8::load_state_dict: the module was left unchanged",
                                        [&] { llmint8::load_state_dict(*layer, tensors, strict); });
    }
  }
  return 0;
}
