// Hugging Face Llama checkpoints: a folder with config.json and model.safetensors
// (or model.safetensors.index.json and its shards), fp32/fp16/bf16, or 8-bit in
// bitsandbytes' layout (quantization_config with load_in_8bit).
#pragma once

#include <llmint8/llama.h>

#include <string>
#include <vector>

namespace llmint8::models {

// The LlamaConfig of a config.json; errors name the field.
LlamaConfig read_hf_llama_config(const std::string& config_json_path);

struct HfLlama {
  LlamaForCausalLM model{nullptr};
  std::vector<std::string> int8_layers;  // layers loaded as Linear8bitLt (8-bit checkpoints)
};

// Loads the folder into a float32 CPU model (the 8-bit layers keep their int8
// codes and scales); every tensor is checked against the model before any is
// used. Tied embeddings are honoured when lm_head.weight is absent.
HfLlama load_hf_llama(const std::string& folder);

}  // namespace llmint8::models
