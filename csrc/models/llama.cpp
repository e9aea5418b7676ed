#include <llmint8/llama.h>

#include <ATen/ATen.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

namespace llmint8::models {

namespace {

void check_range(const char* name, int64_t v, int64_t max) {
  TORCH_CHECK_VALUE(v > 0 && v <= max, "LlamaConfig: ", name, " must be in [1, ", std::to_string(max), "], got ",
                    std::to_string(v));
}

torch::nn::Linear linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); }

// x * cos + rotate_half(x) * sin, Hugging Face's rotary convention (halves, not pairs).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

void LlamaConfig::validate() const {
  check_range("dim", dim, kMaxDim);
  check_range("hidden_dim", hidden_dim, kMaxHiddenDim);
  check_range("n_layers", n_layers, kMaxLayers);
  check_range("n_heads", n_heads, dim);
  check_range("n_kv_heads", n_kv_heads, n_heads);
  check_range("vocab_size", vocab_size, kMaxVocab);
  check_range("max_seq_len", max_seq_len, kMaxSeqLen);
  TORCH_CHECK_VALUE(dim % n_heads == 0 && head_dim() % 2 == 0, "LlamaConfig: dim (", std::to_string(dim),
                    ") must split into n_heads (", std::to_string(n_heads), ") heads of even size");
  TORCH_CHECK_VALUE(n_heads % n_kv_heads == 0, "LlamaConfig: n_heads (", std::to_string(n_heads),
                    ") must be a multiple of n_kv_heads (", std::to_string(n_kv_heads), ")");
  TORCH_CHECK_VALUE(std::isfinite(norm_eps) && norm_eps >= 0, "LlamaConfig: norm_eps must be a finite number >= 0");
  TORCH_CHECK_VALUE(std::isfinite(rope_theta) && rope_theta > 0, "LlamaConfig: rope_theta must be a finite number > 0");
}

int64_t LlamaConfig::parameter_count() const {
  // Within validate()'s bounds every term is below 2^46: no overflow.
  const int64_t kv = n_kv_heads * head_dim();
  const int64_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * dim * hidden_dim;
  return 2 * vocab_size * dim + n_layers * per_layer + dim;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const auto xf = x.to(at::kFloat);
  const auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (normed * weight.to(at::kFloat)).to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c) : config(c) {
  const int64_t kv_dim = c.n_kv_heads * c.head_dim();
  register_module("q_proj", linear(c.dim, c.dim));
  register_module("k_proj", linear(c.dim, kv_dim));
  register_module("v_proj", linear(c.dim, kv_dim));
  register_module("o_proj", linear(c.dim, c.dim));
  bind();
}

void LlamaAttentionImpl::bind() {
  q_proj = linear_child(*this, "q_proj");
  k_proj = linear_child(*this, "k_proj");
  v_proj = linear_child(*this, "v_proj");
  o_proj = linear_child(*this, "o_proj");
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       at::Tensor& k_cache, at::Tensor& v_cache, int64_t start) {
  const int64_t B = x.size(0), T = x.size(1), hd = config.head_dim();
  const int64_t H = config.n_heads, KV = config.n_kv_heads;
  auto q = q_proj.forward(x).view({B, T, H, hd}).transpose(1, 2);   // [B, H, T, hd]
  auto k = k_proj.forward(x).view({B, T, KV, hd}).transpose(1, 2);  // [B, KV, T, hd]
  auto v = v_proj.forward(x).view({B, T, KV, hd}).transpose(1, 2);
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  k_cache.narrow(2, start, T).copy_(k);
  v_cache.narrow(2, start, T).copy_(v);
  const int64_t L = start + T;
  auto keys = k_cache.narrow(2, 0, L), values = v_cache.narrow(2, 0, L);
  if (H != KV) {  // each key/value head serves H / KV query heads
    keys = keys.repeat_interleave(H / KV, 1);
    values = values.repeat_interleave(H / KV, 1);
  }
  auto scores = at::matmul(q.to(at::kFloat), keys.to(at::kFloat).transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
  if (T > 1) {  // query i (position start + i) sees keys up to start + i
    const auto causal = at::ones({T, L}, scores.options().dtype(at::kBool)).triu(start + 1);
    scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
  }
  const auto attn = at::matmul(at::softmax(scores, -1), values.to(at::kFloat)).to(x.scalar_type());
  return o_proj.forward(attn.transpose(1, 2).reshape({B, T, H * hd}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) {
  register_module("gate_proj", linear(c.dim, c.hidden_dim));
  register_module("up_proj", linear(c.dim, c.hidden_dim));
  register_module("down_proj", linear(c.hidden_dim, c.dim));
  bind();
}

void LlamaMLPImpl::bind() {
  gate_proj = linear_child(*this, "gate_proj");
  up_proj = linear_child(*this, "up_proj");
  down_proj = linear_child(*this, "down_proj");
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  return down_proj.forward(at::silu(gate_proj.forward(x)) * up_proj.forward(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.dim, c.norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(c));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.dim, c.norm_eps));
  mlp = register_module("mlp", LlamaMLP(c));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                          at::Tensor& k_cache, at::Tensor& v_cache, int64_t start) {
  const auto h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, k_cache, v_cache, start);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.dim));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.dim, c.norm_eps));
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config(c) {
  config.validate();
  model = register_module("model", LlamaModel(config));
  register_module("lm_head", linear(config.dim, config.vocab_size));
  bind();
}

void LlamaForCausalLMImpl::bind() {
  for (const auto& layer : *model->layers) {
    auto* decoder = layer->as<LlamaDecoderLayerImpl>();
    decoder->self_attn->bind();
    decoder->mlp->bind();
  }
  lm_head = linear_child(*this, "lm_head");
}

KVCache LlamaForCausalLMImpl::new_cache(int64_t batch, int64_t positions) const {
  if (positions <= 0) positions = config.max_seq_len;
  TORCH_CHECK_VALUE(batch >= 1 && positions <= config.max_seq_len, "LlamaForCausalLM::new_cache: batch (",
                    std::to_string(batch), ") must be >= 1 and positions (", std::to_string(positions),
                    ") at most max_seq_len = ", std::to_string(config.max_seq_len));
  const auto options = model->embed_tokens->weight.options();
  const std::vector<int64_t> shape{batch, config.n_kv_heads, positions, config.head_dim()};
  KVCache cache;
  try {
    for (int64_t i = 0; i < config.n_layers; ++i) {
      cache.keys.push_back(at::zeros(shape, options));
      cache.values.push_back(at::zeros(shape, options));
    }
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "LlamaForCausalLM: cannot allocate the KV cache (", std::to_string(config.n_layers),
                " layers x 2 x [", std::to_string(batch), ", ", std::to_string(config.n_kv_heads), ", ",
                std::to_string(positions), ", ", std::to_string(config.head_dim()), "]): ", e.what_without_backtrace());
  }
  return cache;
}

at::Tensor LlamaForCausalLMImpl::forward(const at::Tensor& tokens, KVCache& cache) {
  TORCH_CHECK_VALUE(tokens.dim() == 2, "LlamaForCausalLM: tokens must be [batch, T], got ", std::to_string(tokens.dim()),
                    " dimension(s)");
  const int64_t T = tokens.size(1), start = cache.length;
  TORCH_CHECK_VALUE(start + T <= config.max_seq_len, "LlamaForCausalLM: ", std::to_string(start + T),
                    " positions exceed the context length max_seq_len = ", std::to_string(config.max_seq_len));
  const int64_t room = cache.keys.empty() ? 0 : cache.keys[0].size(2);
  TORCH_CHECK_VALUE(start + T <= room && static_cast<int64_t>(cache.keys.size()) == config.n_layers,
                    "LlamaForCausalLM: ", std::to_string(start + T), " positions do not fit the cache (",
                    std::to_string(room), " positions, ", std::to_string(cache.keys.size()), " of ",
                    std::to_string(config.n_layers), " layers)");
  auto x = model->embed_tokens->forward(tokens);
  // Rotary angles for positions [start, start + T), in fp32, then x's dtype.
  const int64_t hd = config.head_dim();
  const auto inv_freq = at::pow(config.rope_theta, -at::arange(0, hd, 2, x.options().dtype(at::kFloat)) / hd);
  const auto pos = at::arange(start, start + T, x.options().dtype(at::kFloat));
  const auto angles = at::outer(pos, inv_freq);
  const auto emb = at::cat({angles, angles}, -1);  // [T, hd]
  const auto cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  int64_t i = 0;
  for (const auto& layer : *model->layers) {
    x = layer->as<LlamaDecoderLayerImpl>()->forward(x, cos, sin, cache.keys[i], cache.values[i], start);
    ++i;
  }
  cache.length = start + T;
  return lm_head.forward(model->norm->forward(x)).to(at::kFloat);
}

}  // namespace llmint8::models
