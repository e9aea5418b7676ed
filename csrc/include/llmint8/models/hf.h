// Hugging Face folders: config.json and model.safetensors (or model.safetensors.index.json and
// its shards), fp32/fp16/bf16, or 8-bit in bitsandbytes' layout (quantization_config with
// load_in_8bit, or llmint8's quant_method). config.json's model_type picks the family.
#pragma once

#include <llmint8/models/causal_lm.h>

#include <string>
#include <vector>

namespace llmint8::models {

// The model_type values a folder may name: the registry's keys, in order ("gemma", "llama", ...).
std::vector<std::string> hf_model_types();

struct HfModel {
  std::shared_ptr<CausalLM> model;
  std::string model_type;
  std::vector<std::string> int8_layers;  // layers loaded as Linear8bitLt (8-bit checkpoints)
};

// Loads the folder into a float32 CPU model (the 8-bit layers keep their int8 codes and
// scales); every tensor is checked against the model before any is used. config.json is read as
// transformers 5 writes it (rope_parameters) and as older versions did (rope_theta,
// rope_scaling); a field whose value llmint8 does not implement is an error naming it, never
// a silent default. Tied embeddings are one tensor: a checkpoint's lm_head.weight, if any,
// must equal the embedding.
HfModel load_hf_model(const std::string& folder);
// The same, straight into options' form (load_model(path, options), causal_lm.h).
HfModel load_hf_model(const std::string& folder, const LoadOptions& options);

}  // namespace llmint8::models
