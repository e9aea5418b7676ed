// The model families llmint8 reads from Hugging Face folders, keyed by config.json's model_type:
// registry.cpp holds the table (one line per family), each family reads its own fields in its
// own file, and io/hf_folder.cpp loads whatever the table names.
#pragma once

#include <llmint8/models/causal_lm.h>
#include <llmint8/models/llama.h>

#include "io/json.h"

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace llmint8::models {

// What a family makes of config.json, before anything is allocated.
struct ModelSpec {
  int64_t parameter_count = 0;  // bounds what the checkpoint must hold before the model is built
  std::function<std::shared_ptr<CausalLM>()> build;  // initialized at random, fp32
  // Parameters uninitialized in a dtype, for load_model(path, options) to fill (llama.h).
  std::function<std::shared_ptr<CausalLM>(const ParameterInit&)> build_uninitialized;
  // Tied parameters, (alias, source): the model holds one tensor; a checkpoint may hold the alias
  // too, and then it must equal the source.
  std::vector<std::pair<std::string, std::string>> tied;
};

// Reads a family's fields of config.json; errors name the file and the field.
using ReadHfConfig = ModelSpec (*)(const io::JsonObject& config);

struct HfModelType {
  const char* model_type;
  ReadHfConfig read;
};

// The table's entry for a model_type, or nullptr.
const HfModelType* find_hf_model_type(const std::string& model_type);

// The families, one file each.
ModelSpec read_gemma(const io::JsonObject& config);    // models/gemma.cpp
ModelSpec read_llama(const io::JsonObject& config);    // models/llama.cpp
ModelSpec read_mistral(const io::JsonObject& config);  // models/mistral.cpp
ModelSpec read_qwen2(const io::JsonObject& config);    // models/qwen2.cpp

// What a family's transformers config class assumes for fields a config.json leaves out.
struct ArchitectureDefaults {
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
};

// The config.json fields of the Llama architecture that its families share (io/hf_folder.cpp):
// sizes, head_dim, rms_norm_eps, rope (rope_parameters, or the older rope_theta and rope_scaling),
// tie_word_embeddings, hidden_act. What it does not understand is refused, naming the field.
LlamaConfig read_llama_architecture(const io::JsonObject& config, const ArchitectureDefaults& defaults = {});
// The spec of a LlamaForCausalLM (validated: errors name the file).
ModelSpec llama_architecture_spec(const LlamaConfig& config, const std::string& file);

}  // namespace llmint8::models
