// A Llama-architecture causal LM in LibTorch (RMSNorm, rotary embeddings,
// grouped-query attention with a KV cache, SwiGLU), with Hugging Face's module
// names so that HF checkpoints (float or bitsandbytes 8-bit) load by key:
//   model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
//   post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head.
// Its Linear layers are called through handles that bind() fetches by name, so
// llmint8::replace_linear followed by bind() swaps them for Linear8bitLt.
#pragma once

#include <llmint8/linear8bitlt.h>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include <string>
#include <vector>

namespace llmint8::models {

struct LlamaConfig {
  int64_t dim = 0;           // hidden size
  int64_t hidden_dim = 0;    // SwiGLU inner size
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;    // grouped-query attention: heads sharing one key/value head
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_embeddings = false;  // lm_head shares the token embedding
  int64_t head_dim() const { return dim / n_heads; }
  // Throws naming the field when sizes are inconsistent or out of range.
  void validate() const;
  // Parameters of the model (lm_head counted even when tied); call after validate().
  int64_t parameter_count() const;

  // Upper bounds of validate(), far above any released Llama: sizes read from a file
  // cannot ask for absurd loops or allocations, and products of them fit in int64.
  static constexpr int64_t kMaxDim = int64_t{1} << 16;
  static constexpr int64_t kMaxHiddenDim = int64_t{1} << 18;
  static constexpr int64_t kMaxLayers = int64_t{1} << 10;
  static constexpr int64_t kMaxVocab = int64_t{1} << 22;
  static constexpr int64_t kMaxSeqLen = int64_t{1} << 24;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);  // computed in fp32, returned in x's dtype
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Keys and values of every layer for one generation, preallocated to max_seq_len.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // per layer [batch, n_kv_heads, max_seq_len, head_dim]
  int64_t length = 0;                    // positions filled
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config);
  void bind();
  // x [batch, T, dim] at positions [start, start + T); cos/sin [T, head_dim].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& k_cache,
                     at::Tensor& v_cache, int64_t start);
  LlamaConfig config;
  torch::nn::AnyModule q_proj, k_proj, v_proj, o_proj;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  void bind();
  at::Tensor forward(const at::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::AnyModule gate_proj, up_proj, down_proj;
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& k_cache,
                     at::Tensor& v_cache, int64_t start);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);
  // Fetches every Linear handle again: call after replace_linear.
  void bind();
  // Empty cache for `batch` sequences of up to `positions` tokens (default: max_seq_len), in
  // the model's dtype and device; an allocation failure is an error naming the cache's size.
  KVCache new_cache(int64_t batch, int64_t positions = 0) const;
  // Logits [batch, T, vocab] (fp32) of tokens [batch, T] at positions cache.length...; appends to
  // the cache, which must have room for them.
  at::Tensor forward(const at::Tensor& tokens, KVCache& cache);
  LlamaConfig config;
  LlamaModel model{nullptr};
  torch::nn::AnyModule lm_head;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace llmint8::models
