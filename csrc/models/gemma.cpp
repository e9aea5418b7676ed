// Gemma: the Llama architecture with embeddings scaled by sqrt(hidden_size), RMSNorm by
// 1 + weight, a GELU gate, and (by default) tied embeddings and heads of 256.
#include "models/registry.h"

namespace llmint8::models {

ModelSpec read_gemma(const io::JsonObject& j) {
  auto c = read_llama_architecture(j, {/*hidden_act=*/"gelu_pytorch_tanh", /*tie_word_embeddings=*/true,
                                       /*head_dim=*/256});
  if (j.optional_bool("use_bidirectional_attention").value_or(false)) {
    j.fail("use_bidirectional_attention", "false (llmint8's models are causal)");
  }
  c.qkv_bias = c.o_bias = j.optional_bool("attention_bias").value_or(false);
  c.norm_plus_one = c.scale_embeddings = true;
  return llama_architecture_spec(c, j.file());
}

}  // namespace llmint8::models
