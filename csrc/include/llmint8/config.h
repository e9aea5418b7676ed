// 8-bit loading configuration: the 8-bit fields of transformers' BitsAndBytesConfig.
#pragma once

#include <string>
#include <vector>

namespace llmint8 {

struct Int8Config {
  bool load_in_8bit = true;
  double llm_int8_threshold = 6.0;                // LLM.int8() outlier threshold; 0: pure int8
  std::vector<std::string> llm_int8_skip_modules;  // kept in floating point, besides lm_head
  bool llm_int8_has_fp16_weight = false;           // training mode: trainable float master weights
  bool llm_int8_enable_fp32_cpu_offload = false;

  // lm_head followed by llm_int8_skip_modules.
  std::vector<std::string> skip_modules() const;
};

}  // namespace llmint8
