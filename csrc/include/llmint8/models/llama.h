// The Llama architecture in LibTorch (RMSNorm, rotary embeddings, grouped-query attention with
// a KV cache, SwiGLU), with Hugging Face's module names so that HF checkpoints (float or
// bitsandbytes 8-bit) load by key:
//   model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
//   post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head.
// The families built on it differ by options of LlamaConfig: Qwen2 has biases on the q/k/v
// projections, Mistral (and Qwen2's upper layers, when asked) attends through a sliding window,
// Gemma scales the embeddings, normalizes by 1 + weight and gates with a GELU.
// Its Linear layers are called through handles that bind() fetches by name, so
// llmint8::replace_linear followed by bind() swaps them for Linear8bitLt.
#pragma once

#include <llmint8/linear8bitlt.h>
#include <llmint8/models/causal_lm.h>
#include <llmint8/models/stacked_linear.h>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include <string>
#include <utility>
#include <vector>

namespace llmint8::models {

// Rotary embeddings: inverse frequencies theta^(-2i/head_dim), rescaled by the type
// (transformers' rope_parameters).
struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // "default"; "linear": every frequency / factor; "llama3": by wavelength
  double factor = 1.0;           // linear, llama3
  double low_freq_factor = 1.0;  // llama3: wavelengths above original / low_freq_factor are divided by factor,
  double high_freq_factor = 4.0;  // those below original / high_freq_factor kept, those between blended
  int64_t original_max_position_embeddings = 0;  // llama3
};

struct LlamaConfig {
  int64_t dim = 0;           // hidden size
  int64_t hidden_dim = 0;    // SwiGLU inner size
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;    // grouped-query attention: heads sharing one key/value head
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;
  int64_t head_size = 0;     // per attention head; 0: dim / n_heads
  double norm_eps = 1e-5;
  RopeConfig rope;
  bool tie_embeddings = false;  // lm_head is the token embedding (one tensor, no lm_head module)
  bool qkv_bias = false;        // biases on q_proj, k_proj, v_proj (Qwen2; Llama's attention_bias)
  bool o_bias = false;          // bias on o_proj (Llama's attention_bias)
  bool mlp_bias = false;        // biases on gate_proj, up_proj, down_proj
  std::string hidden_act = "silu";  // the MLP's gate: "silu", "gelu" (erf) or "gelu_pytorch_tanh"
  bool norm_plus_one = false;       // RMSNorm multiplies by 1 + weight (Gemma)
  bool scale_embeddings = false;    // token embeddings times sqrt(dim) (Gemma)
  // Sliding-window attention: a query sees itself and the sliding_window - 1 keys before it, in
  // the layers whose entry of sliding_layers is true (empty: no layer slides).
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;

  int64_t head_dim() const { return head_size > 0 ? head_size : dim / n_heads; }
  // The window of layer i (0: full causal attention).
  int64_t window(int64_t layer) const {
    return !sliding_layers.empty() && sliding_layers[static_cast<size_t>(layer)] ? sliding_window : 0;
  }
  // Throws naming the field when sizes are inconsistent or out of range.
  void validate() const;
  // Parameters of the model (a tied lm_head is the embedding: not counted twice); call after validate().
  int64_t parameter_count() const;

  // Upper bounds of validate(), far above any released Llama: sizes read from a file
  // cannot ask for absurd loops or allocations, and products of them fit in int64.
  static constexpr int64_t kMaxDim = int64_t{1} << 16;
  static constexpr int64_t kMaxHiddenDim = int64_t{1} << 18;
  static constexpr int64_t kMaxLayers = int64_t{1} << 10;
  static constexpr int64_t kMaxVocab = int64_t{1} << 22;
  static constexpr int64_t kMaxSeqLen = int64_t{1} << 24;
};

// Where a forward's T tokens go in the KV cache. Host positions [start, start + T), attending over
// the keys written so far (prefill, eager decode); or, when `positions` is defined, positions held
// on the device ([T] int64), attending over the whole cache with later keys masked: a step whose
// shapes and host values are the same at every position (decode_step, for CUDA graphs).
struct CachePosition {
  int64_t start = 0;
  at::Tensor positions;
  // With device positions, the keys the queries may not see [T, cache positions] (bool) and, on
  // CUDA, the same as the fused attention's additive mask (0 seen, -inf hidden, in the activations'
  // dtype): made once per step for a layer's window by the caller; undefined, by each layer.
  at::Tensor hidden, bias;
  bool on_device() const { return positions.defined(); }
};

// How the constructors allocate parameters: initialized at random in fp32, as torch::nn does, or
// (uninitialized) left unwritten in `dtype` on the CPU for a loader to fill or replace; memory
// never written costs no resident pages, so a model built that way costs nothing until loaded.
struct ParameterInit {
  bool uninitialized = false;
  at::ScalarType dtype = at::kFloat;
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, bool plus_one = false, const ParameterInit& init = {});
  at::Tensor forward(const at::Tensor& x);  // computed in fp32, returned in x's dtype
  // {x + delta, forward(x + delta)}: on CUDA one kernel for both (a decoder layer's skip
  // connection and the norm after it).
  std::pair<at::Tensor, at::Tensor> forward_added(const at::Tensor& x, const at::Tensor& delta);
  at::Tensor weight;
  double eps;
  bool plus_one;  // scale by 1 + weight (weight starts at 0)

 private:
  const at::Tensor& fp32_scale();  // (1 +) weight in fp32, made again only when the weight changes
  // Whether x takes the fused CUDA norm (the weight as it is, in x's dtype) rather than the fp32 path.
  bool fused_on_cuda(const at::Tensor& x) const;
  at::Tensor scale_;
  const void* scale_of_ = nullptr;
  int64_t scale_version_ = -1;
};
TORCH_MODULE(RMSNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaConfig& config, int64_t layer, const ParameterInit& init = {});
  void bind();
  // x [batch, T, dim] at positions `where`; rotary cos and sine [T, head_dim], the sine's first half
  // negated (see apply_rotary); caches [batch, kv_heads, positions, head_dim].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin, at::Tensor& k_cache,
                     at::Tensor& v_cache, const CachePosition& where);
  LlamaConfig config;
  int64_t window;  // sliding window of this layer (0: none)
  torch::nn::AnyModule q_proj, k_proj, v_proj, o_proj;
  StackedLinear qkv;  // q, k and v as one layer (stack_projections), not a registered child
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config, const ParameterInit& init = {});
  void bind();
  at::Tensor forward(const at::Tensor& x);  // down(act(gate(x)) * up(x))
  std::string hidden_act;
  torch::nn::AnyModule gate_proj, up_proj, down_proj;
  StackedLinear gate_up;  // gate and up as one layer (stack_projections), not a registered child
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config, int64_t layer, const ParameterInit& init = {});
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin, at::Tensor& k_cache,
                     at::Tensor& v_cache, const CachePosition& where);
  // The same layer on the input residual + delta (delta undefined: residual alone), its output
  // left as the pair it sums: the next layer's norm (or the model's) adds them in its kernel.
  std::pair<at::Tensor, at::Tensor> forward_unsummed(const at::Tensor& residual, const at::Tensor& delta,
                                                     const at::Tensor& cos, const at::Tensor& signed_sin,
                                                     at::Tensor& k_cache, at::Tensor& v_cache,
                                                     const CachePosition& where);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config, const ParameterInit& init = {});
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public CausalLM {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config, const ParameterInit& init = {});
  void bind() override;
  void stack_projections() override;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;
  KVCache new_cache(int64_t batch, int64_t positions = 0) const override;
  at::Tensor forward(const at::Tensor& tokens, KVCache& cache) override;
  at::Tensor decode_step(const at::Tensor& tokens, const at::Tensor& position, KVCache& cache) override;
  CausalLMSizes sizes() const override;
  LlamaConfig config;
  LlamaModel model{nullptr};
  torch::nn::AnyModule lm_head;  // empty when tie_embeddings: the logits use model.embed_tokens.weight

 private:
  // What forward and decode_step share: embeddings, rotary angles, the layers, the head.
  at::Tensor run(const at::Tensor& tokens, const CachePosition& where, KVCache& cache);
  at::Tensor inv_freq_;  // rotary inverse frequencies [head_dim / 2], fp32, on the device of the last forward
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace llmint8::models
