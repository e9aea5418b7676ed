// Mistral: the Llama architecture with sliding-window attention in every layer.
#include "models/registry.h"

namespace llmint8::models {

ModelSpec read_mistral(const io::JsonObject& j) {
  auto c = read_llama_architecture(j);
  // transformers' Mistral ignores layer_types (alternating attention is Ministral's): refused
  // rather than ignored, so that a model meant to alternate does not run without it.
  if (j.has("layer_types")) j.fail("layer_types", "absent (alternating attention is not Mistral's)");
  // An explicit null means full attention; an absent field, transformers' default of 4096.
  if (!(j.has("sliding_window") && !j.find("sliding_window"))) {
    c.sliding_window = j.optional_integer("sliding_window", 1, LlamaConfig::kMaxSeqLen).value_or(4096);
    c.sliding_layers.assign(static_cast<size_t>(c.n_layers), true);
  }
  return llama_architecture_spec(c, j.file());
}

}  // namespace llmint8::models
