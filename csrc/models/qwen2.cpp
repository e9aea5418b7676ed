// Qwen2: the Llama architecture with biases on the q/k/v projections, and a sliding window in
// the layers config.json marks "sliding_attention" (when use_sliding_window is on).
#include "models/registry.h"

namespace llmint8::models {

ModelSpec read_qwen2(const io::JsonObject& j) {
  auto c = read_llama_architecture(j);
  c.qkv_bias = true;
  // transformers: without use_sliding_window no layer slides, whatever layer_types says.
  if (j.optional_bool("use_sliding_window").value_or(false) && !(j.has("sliding_window") && !j.find("sliding_window"))) {
    c.sliding_window = j.optional_integer("sliding_window", 1, LlamaConfig::kMaxSeqLen).value_or(4096);
    c.sliding_layers.assign(static_cast<size_t>(c.n_layers), false);
    if (const auto types = j.optional_strings("layer_types")) {
      if (static_cast<int64_t>(types->size()) != c.n_layers) {
        j.fail("layer_types", "one entry per layer (num_hidden_layers = " + std::to_string(c.n_layers) + ")");
      }
      for (size_t i = 0; i < types->size(); ++i) {
        const auto& type = (*types)[i];
        if (type != "full_attention" && type != "sliding_attention") {
          j.fail("layer_types", "a list of \"full_attention\" and \"sliding_attention\"");
        }
        c.sliding_layers[i] = type == "sliding_attention";
      }
    } else {  // older files: the layers from max_window_layers up slide
      const int64_t from = j.optional_integer("max_window_layers", 0, LlamaConfig::kMaxLayers).value_or(28);
      for (int64_t i = from; i < c.n_layers; ++i) c.sliding_layers[static_cast<size_t>(i)] = true;
    }
  }
  return llama_architecture_spec(c, j.file());
}

}  // namespace llmint8::models
