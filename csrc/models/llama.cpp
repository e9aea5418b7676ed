// The Llama architecture (llama.h) and the Llama family's config.json reader.
#include <llmint8/models/llama.h>

#include "models/registry.h"
#ifdef LLMINT8_WITH_CUDA
#include "cuda/model_steps.h"

#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace llmint8::models {

namespace {

void check_range(const char* name, int64_t v, int64_t max) {
  TORCH_CHECK_VALUE(v > 0 && v <= max, "LlamaConfig: ", name, " must be in [1, ", std::to_string(max), "], got ",
                    std::to_string(v));
}

void check_positive(const char* name, double v) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, "LlamaConfig: ", name, " must be a finite number > 0");
}

torch::nn::Linear linear(int64_t in, int64_t out, bool bias, const ParameterInit& init) {
  if (!init.uninitialized) return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  // torch::nn::Linear always initializes what it allocates: built [0, 1] (nothing to write),
  // then given its real options and unwritten storage.
  torch::nn::Linear layer(torch::nn::LinearOptions(1, 0).bias(bias));
  layer->options = torch::nn::LinearOptions(in, out).bias(bias);
  layer->weight.set_data(at::empty({out, in}, at::TensorOptions().dtype(init.dtype)));
  if (bias) layer->bias.set_data(at::empty({out}, at::TensorOptions().dtype(init.dtype)));
  return layer;
}

torch::nn::Embedding embedding(int64_t count, int64_t dim, const ParameterInit& init) {
  if (!init.uninitialized) return torch::nn::Embedding(count, dim);
  torch::nn::Embedding table(0, dim);  // as linear(): nothing to initialize
  table->options.num_embeddings(count);
  table->weight.set_data(at::empty({count, dim}, at::TensorOptions().dtype(init.dtype)));
  return table;
}

// Rotary inverse frequencies [head_dim / 2] in fp32, computed as transformers does (fp32 throughout).
at::Tensor rope_inv_freq(const RopeConfig& rope, int64_t head_dim, const at::TensorOptions& on) {
  // (Python's scalar / tensor is tensor.reciprocal() * scalar: written that way here too.)
  const auto exponents = at::arange(0, head_dim, 2, on.dtype(at::kLong)).to(at::kFloat) / head_dim;
  const auto inv_freq = at::pow(rope.theta, exponents).reciprocal();
  if (rope.type == "linear") return inv_freq / rope.factor;
  if (rope.type == "llama3") {
    // Wavelengths past the pretraining context are stretched by factor, short ones kept, the
    // band between blended linearly in context / wavelength.
    const double original = static_cast<double>(rope.original_max_position_embeddings);
    const double low_wavelen = original / rope.low_freq_factor, high_wavelen = original / rope.high_freq_factor;
    constexpr double kPi = 3.14159265358979323846;
    const auto wavelen = inv_freq.reciprocal() * (2 * kPi);
    const auto stretched = at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
    const auto smooth = (wavelen.reciprocal() * original - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
    const auto blended = (1 - smooth) * stretched / rope.factor + smooth * stretched;
    const auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    return at::where(medium, blended, stretched);
  }
  return inv_freq;
}

// x * cos + rotate_half(x) * sin, Hugging Face's rotary convention (halves, not pairs), given the
// sine with its first half negated: rotate_half(x) * sin = [-x2, x1] * [s, s] = [x2, x1] * [-s, s],
// the same values with one copy of x less (a negation rounds nothing).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  const int64_t half = x.size(-1) / 2;
  const auto swapped = at::cat({x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + swapped * signed_sin;
}

// Queries [B, T, H * hd] and keys [B, T, KV * hd] rotated in one pass (elementwise: the same
// values as two): [B, H, T, hd] and [B, KV, T, hd].
std::pair<at::Tensor, at::Tensor> rotate_queries_and_keys(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                          const at::Tensor& signed_sin, int64_t H, int64_t KV) {
  const int64_t B = q.size(0), T = q.size(1), hd = cos.size(-1);
  const auto heads = at::cat({q.view({B, T, H, hd}), k.view({B, T, KV, hd})}, 2).transpose(1, 2);
  const auto rotated = apply_rotary(heads, cos, signed_sin);  // [B, H + KV, T, hd]
  return {rotated.narrow(1, 0, H), rotated.narrow(1, H, KV)};
}

// Key/value heads [B, KV, S, hd] repeated for the query heads they serve: [B, H, S, hd], each
// head H / KV times in a row (what repeat_interleave does, spelled out as a view and one copy).
at::Tensor expand_kv_heads(const at::Tensor& t, int64_t H) {
  const int64_t B = t.size(0), KV = t.size(1), S = t.size(2), hd = t.size(3);
  return t.unsqueeze(2).expand({B, KV, H / KV, S, hd}).reshape({B, H, S, hd});
}

// Keys each query may not see [T, S], from the queries' positions [T] and the keys' [S]: later
// positions, and with a window those `window` or more behind the query.
at::Tensor hidden_keys(const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t window) {
  const auto query = query_positions.unsqueeze(1), key = key_positions.unsqueeze(0);
  auto hidden = key > query;
  if (window > 0) hidden = hidden.logical_or(key <= query - window);
  return hidden;
}

// The fused attention's additive mask in `dtype`: 0 where a key is seen, -inf where hidden. What
// scaled_dot_product_attention makes of a bool mask at every call (three kernels), made once here.
at::Tensor attention_bias(const at::Tensor& hidden, at::ScalarType dtype) {
  return at::zeros(hidden.sizes(), hidden.options().dtype(dtype)).masked_fill_(hidden, -std::numeric_limits<double>::infinity());
}

}  // namespace

void LlamaConfig::validate() const {
  check_range("dim", dim, kMaxDim);
  check_range("hidden_dim", hidden_dim, kMaxHiddenDim);
  check_range("n_layers", n_layers, kMaxLayers);
  check_range("n_heads", n_heads, kMaxDim);
  check_range("n_kv_heads", n_kv_heads, n_heads);
  check_range("vocab_size", vocab_size, kMaxVocab);
  check_range("max_seq_len", max_seq_len, kMaxSeqLen);
  if (head_size == 0) {
    TORCH_CHECK_VALUE(dim % n_heads == 0, "LlamaConfig: dim (", std::to_string(dim), ") must split into n_heads (",
                      std::to_string(n_heads), ") heads, or head_size be given");
  }
  check_range("head_size", head_dim(), kMaxDim);
  TORCH_CHECK_VALUE(head_dim() % 2 == 0 && n_heads * head_dim() <= kMaxHiddenDim, "LlamaConfig: heads must be of even ",
                    "size, at most ", std::to_string(kMaxHiddenDim), " values in all; got ", std::to_string(n_heads),
                    " of ", std::to_string(head_dim()));
  TORCH_CHECK_VALUE(n_heads % n_kv_heads == 0, "LlamaConfig: n_heads (", std::to_string(n_heads),
                    ") must be a multiple of n_kv_heads (", std::to_string(n_kv_heads), ")");
  TORCH_CHECK_VALUE(std::isfinite(norm_eps) && norm_eps >= 0, "LlamaConfig: norm_eps must be a finite number >= 0");
  TORCH_CHECK_VALUE(hidden_act == "silu" || hidden_act == "gelu" || hidden_act == "gelu_pytorch_tanh",
                    "LlamaConfig: hidden_act must be \"silu\", \"gelu\" or \"gelu_pytorch_tanh\", got \"", hidden_act, "\"");
  check_positive("rope.theta", rope.theta);
  TORCH_CHECK_VALUE(rope.type == "default" || rope.type == "linear" || rope.type == "llama3",
                    "LlamaConfig: rope.type must be \"default\", \"linear\" or \"llama3\", got \"", rope.type, "\"");
  check_positive("rope.factor", rope.factor);
  if (rope.type == "llama3") {
    check_positive("rope.low_freq_factor", rope.low_freq_factor);
    check_positive("rope.high_freq_factor", rope.high_freq_factor);
    TORCH_CHECK_VALUE(rope.high_freq_factor > rope.low_freq_factor,
                      "LlamaConfig: rope.high_freq_factor must be above rope.low_freq_factor");
    check_range("rope.original_max_position_embeddings", rope.original_max_position_embeddings, kMaxSeqLen);
  }
  TORCH_CHECK_VALUE(sliding_layers.empty() || static_cast<int64_t>(sliding_layers.size()) == n_layers,
                    "LlamaConfig: sliding_layers must be empty or hold one entry per layer (", std::to_string(n_layers),
                    "), got ", std::to_string(sliding_layers.size()));
  const bool slides = std::find(sliding_layers.begin(), sliding_layers.end(), true) != sliding_layers.end();
  if (slides) check_range("sliding_window", sliding_window, kMaxSeqLen);
}

int64_t LlamaConfig::parameter_count() const {
  // Within validate()'s bounds every term is below 2^46: no overflow.
  const int64_t q = n_heads * head_dim(), kv = n_kv_heads * head_dim();
  const int64_t attention = 2 * q * dim + 2 * kv * dim + (qkv_bias ? q + 2 * kv : 0) + (o_bias ? dim : 0);
  const int64_t mlp = 3 * dim * hidden_dim + (mlp_bias ? 2 * hidden_dim + dim : 0);
  const int64_t per_layer = 2 * dim + attention + mlp;
  return (tie_embeddings ? 1 : 2) * vocab_size * dim + n_layers * per_layer + dim;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, bool plus_one_, const ParameterInit& init)
    : eps(eps_), plus_one(plus_one_) {
  const auto on = at::TensorOptions().dtype(init.dtype);
  weight = register_parameter("weight", plus_one ? torch::zeros({dim}, on) : torch::ones({dim}, on));
}

const at::Tensor& RMSNormImpl::fp32_scale() {
  if (!scale_.defined() || scale_of_ != weight.data_ptr() || scale_version_ != weight._version() ||
      scale_.device() != weight.device()) {
    const auto w = weight.detach().to(at::kFloat);
    scale_ = plus_one ? 1.0 + w : w.clone();  // (a copy: the cached scale never aliases the weight)
    scale_of_ = weight.data_ptr();
    scale_version_ = weight._version();
  }
  return scale_;
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // x * rsqrt(mean(x^2) + eps) * scale in fp32, rounded once to x's dtype. at::rms_norm is that
  // expression on the CPU and one fused kernel on CUDA, which takes x and the weight in their
  // own dtype and computes in fp32 inside: no conversions around it there (1 + weight excepted,
  // which would round in half precision).
  const int64_t dim = x.size(-1);
  if (fused_on_cuda(x)) {
#ifdef LLMINT8_WITH_CUDA
    // Our kernel: the same formula, and the projection after it may start before it ends.
    return cuda::rms_norm(x.contiguous(), weight.detach(), eps);
#else
    return at::rms_norm(x, {dim}, weight.detach(), eps);
#endif
  }
  return at::rms_norm(x.to(at::kFloat), {dim}, fp32_scale(), eps).to(x.scalar_type());
}

bool RMSNormImpl::fused_on_cuda(const at::Tensor& x) const {
  return x.is_cuda() && !plus_one && weight.scalar_type() == x.scalar_type();
}

std::pair<at::Tensor, at::Tensor> RMSNormImpl::forward_added(const at::Tensor& x, const at::Tensor& delta) {
#ifdef LLMINT8_WITH_CUDA
  if (fused_on_cuda(x) && delta.scalar_type() == x.scalar_type() && delta.sizes() == x.sizes()) {
    return cuda::add_rms_norm(x.contiguous(), delta.contiguous(), weight.detach(), eps);
  }
#endif
  const auto sum = x + delta;
  return {sum, forward(sum)};
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c, int64_t layer, const ParameterInit& init)
    : config(c), window(c.window(layer)) {
  const int64_t q_dim = c.n_heads * c.head_dim(), kv_dim = c.n_kv_heads * c.head_dim();
  register_module("q_proj", linear(c.dim, q_dim, c.qkv_bias, init));
  register_module("k_proj", linear(c.dim, kv_dim, c.qkv_bias, init));
  register_module("v_proj", linear(c.dim, kv_dim, c.qkv_bias, init));
  register_module("o_proj", linear(q_dim, c.dim, c.o_bias, init));
  bind();
}

void LlamaAttentionImpl::bind() {
  qkv = StackedLinear();
  q_proj = linear_child(*this, "q_proj");
  k_proj = linear_child(*this, "k_proj");
  v_proj = linear_child(*this, "v_proj");
  o_proj = linear_child(*this, "o_proj");
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin,
                                       at::Tensor& k_cache, at::Tensor& v_cache, const CachePosition& where) {
  const int64_t B = x.size(0), T = x.size(1), hd = config.head_dim();
  const int64_t H = config.n_heads, KV = config.n_kv_heads;
  at::Tensor q_flat, k_flat, v_flat;  // [B, T, heads * hd]
  if (qkv.usable()) {
    const auto outputs = qkv.forward(x);
    q_flat = outputs[0], k_flat = outputs[1], v_flat = outputs[2];
  } else {
    q_flat = q_proj.forward(x), k_flat = k_proj.forward(x), v_flat = v_proj.forward(x);
  }
  at::Tensor q, keys, values, hidden, bias;
  if (where.on_device()) {
    // Positions only the device knows: written in place there, and every position of the cache
    // attended, the mask hiding those the queries may not see (unwritten ones included).
#ifdef LLMINT8_WITH_CUDA
    if (x.is_cuda()) {  // rotary and cache writes in one kernel, the same values as the ops below
      // (views of one stacked output are contiguous at batch 1, so nothing is copied there)
      q = cuda::rotary_into_cache(q_flat.contiguous(), k_flat.contiguous(), v_flat.contiguous(), cos, signed_sin,
                                  where.positions, k_cache, v_cache);
    }
#endif
    if (!q.defined()) {
      const auto [rotated_q, k] = rotate_queries_and_keys(q_flat, k_flat, cos, signed_sin, H, KV);
      q = rotated_q;
      k_cache.index_copy_(2, where.positions, k);
      v_cache.index_copy_(2, where.positions, v_flat.view({B, T, KV, hd}).transpose(1, 2));
    }
    keys = k_cache;
    values = v_cache;
    hidden = where.hidden.defined()
                 ? where.hidden
                 : hidden_keys(where.positions, at::arange(k_cache.size(2), where.positions.options()), window);
    bias = where.bias;
  } else {
    const auto [rotated_q, k] = rotate_queries_and_keys(q_flat, k_flat, cos, signed_sin, H, KV);
    q = rotated_q;
    const int64_t start = where.start;
    k_cache.narrow(2, start, T).copy_(k);
    v_cache.narrow(2, start, T).copy_(v_flat.view({B, T, KV, hd}).transpose(1, 2));
    // Query i (position start + i) sees keys up to its own position, and with a window only the
    // last `window` of those: keys before `first` are seen by none of this call's queries.
    const int64_t L = start + T, first = window > 0 ? std::max<int64_t>(0, start + 1 - window) : 0;
    keys = k_cache.narrow(2, first, L - first);
    values = v_cache.narrow(2, first, L - first);
    if (T > 1) {  // (a single query sees every key left after the narrowing: no mask)
      const auto on = x.options().dtype(at::kLong);
      hidden = hidden_keys(at::arange(start, L, on), at::arange(first, L, on), window);
    }
  }
  if (H != KV) {  // each key/value head serves H / KV query heads
    keys = expand_kv_heads(keys, H);
    values = expand_kv_heads(values, H);
  }
  // Scaled by head_dim^-0.5 as transformers does (a division rounds differently when it is not a power of 2).
  const double scale = std::pow(static_cast<double>(hd), -0.5);
  at::Tensor attn;
  if (x.is_cuda()) {  // one fused kernel (fp32 sums inside), as transformers' default "sdpa" attention
    if (hidden.defined() && !bias.defined()) bias = attention_bias(hidden, x.scalar_type());
    const auto mask = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
    attn = at::scaled_dot_product_attention(q, keys, values, mask, 0.0, false, scale);
  } else {  // transformers' "eager" attention step by step, in fp32: the CPU tests compare logits to fp32 rounding
    auto scores = at::matmul(q.to(at::kFloat), keys.to(at::kFloat).transpose(-2, -1)) * scale;
    if (hidden.defined()) scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
    attn = at::matmul(at::softmax(scores, -1), values.to(at::kFloat)).to(x.scalar_type());
  }
  return o_proj.forward(attn.transpose(1, 2).reshape({B, T, H * hd}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c, const ParameterInit& init) : hidden_act(c.hidden_act) {
  register_module("gate_proj", linear(c.dim, c.hidden_dim, c.mlp_bias, init));
  register_module("up_proj", linear(c.dim, c.hidden_dim, c.mlp_bias, init));
  register_module("down_proj", linear(c.hidden_dim, c.dim, c.mlp_bias, init));
  bind();
}

void LlamaMLPImpl::bind() {
  gate_up = StackedLinear();
  gate_proj = linear_child(*this, "gate_proj");
  up_proj = linear_child(*this, "up_proj");
  down_proj = linear_child(*this, "down_proj");
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  // Unstacked, the two projections of x back to back: on CUDA the second one's programmatic launch
  // (int8 decode) can start its weight prefetch while the first ends, which an ATen kernel between
  // them would not allow.
  at::Tensor gate, up;
  if (gate_up.usable()) {
    const auto outputs = gate_up.forward(x);
    gate = outputs[0], up = outputs[1];
  } else {
    gate = gate_proj.forward(x), up = up_proj.forward(x);
  }
#ifdef LLMINT8_WITH_CUDA
  if (gate.is_cuda() && hidden_act == "silu") return down_proj.forward(cuda::silu_mul(gate.contiguous(), up.contiguous()));
#endif
  const auto act = hidden_act == "silu" ? at::silu(gate) : at::gelu(gate, hidden_act == "gelu" ? "none" : "tanh");
  return down_proj.forward(act * up);
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c, int64_t layer, const ParameterInit& init) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.dim, c.norm_eps, c.norm_plus_one, init));
  self_attn = register_module("self_attn", LlamaAttention(c, layer, init));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.dim, c.norm_eps, c.norm_plus_one, init));
  mlp = register_module("mlp", LlamaMLP(c, init));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin,
                                          at::Tensor& k_cache, at::Tensor& v_cache, const CachePosition& where) {
  const auto [h, delta] = forward_unsummed(x, at::Tensor(), cos, signed_sin, k_cache, v_cache, where);
  return h + delta;
}

std::pair<at::Tensor, at::Tensor> LlamaDecoderLayerImpl::forward_unsummed(
    const at::Tensor& residual, const at::Tensor& delta, const at::Tensor& cos, const at::Tensor& signed_sin,
    at::Tensor& k_cache, at::Tensor& v_cache, const CachePosition& where) {
  const auto [x, normed] = delta.defined() ? input_layernorm->forward_added(residual, delta)
                                           : std::pair(residual, input_layernorm->forward(residual));
  const auto attention = self_attn->forward(normed, cos, signed_sin, k_cache, v_cache, where);
  const auto [h, h_normed] = post_attention_layernorm->forward_added(x, attention);
  return {h, mlp->forward(h_normed)};
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c, const ParameterInit& init) {
  embed_tokens = register_module("embed_tokens", embedding(c.vocab_size, c.dim, init));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(LlamaDecoderLayer(c, i, init));
  norm = register_module("norm", RMSNorm(c.dim, c.norm_eps, c.norm_plus_one, init));
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c, const ParameterInit& init) : config(c) {
  config.validate();
  model = register_module("model", LlamaModel(config, init));
  if (!config.tie_embeddings) register_module("lm_head", linear(config.dim, config.vocab_size, false, init));
  bind();
}

void LlamaForCausalLMImpl::bind() {
  for (const auto& layer : *model->layers) {
    auto* decoder = layer->as<LlamaDecoderLayerImpl>();
    decoder->self_attn->bind();
    decoder->mlp->bind();
  }
  if (!config.tie_embeddings) lm_head = linear_child(*this, "lm_head");
}

void LlamaForCausalLMImpl::stack_projections() {
  for (const auto& layer : *model->layers) {
    auto* decoder = layer->as<LlamaDecoderLayerImpl>();
    auto& attention = *decoder->self_attn;
    attention.qkv = StackedLinear::stack({attention.q_proj, attention.k_proj, attention.v_proj});
    auto& mlp = *decoder->mlp;
    mlp.gate_up = StackedLinear::stack({mlp.gate_proj, mlp.up_proj});
  }
#ifdef LLMINT8_WITH_CUDA
  // The parts' former storage, freed, would stay reserved beside the stacks it cannot serve.
  if (model->embed_tokens->weight.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

// The stacks drop first, so that their copies on the old device or in the old dtype go with them.
void LlamaForCausalLMImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  bind();
  CausalLM::to(device, dtype, non_blocking);
}
void LlamaForCausalLMImpl::to(torch::Dtype dtype, bool non_blocking) {
  bind();
  CausalLM::to(dtype, non_blocking);
}
void LlamaForCausalLMImpl::to(torch::Device device, bool non_blocking) {
  bind();
  CausalLM::to(device, non_blocking);
}

CausalLMSizes LlamaForCausalLMImpl::sizes() const {
  return {config.vocab_size, config.max_seq_len, config.n_layers, config.dim};
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
  CachePosition where;
  where.start = start;
  const auto logits = run(tokens, where, cache);
  cache.length = start + T;
  return logits;
}

at::Tensor LlamaForCausalLMImpl::decode_step(const at::Tensor& tokens, const at::Tensor& position, KVCache& cache) {
  const auto& embedding = model->embed_tokens->weight;
  TORCH_CHECK_VALUE(tokens.dim() == 2 && tokens.size(1) == 1, "LlamaForCausalLM::decode_step: tokens must be [batch, 1], got ",
                    tokens.sizes());
  TORCH_CHECK_VALUE(position.dim() == 1 && position.numel() == 1 && position.scalar_type() == at::kLong &&
                        position.device() == embedding.device(),
                    "LlamaForCausalLM::decode_step: position must be [1] int64 on ", embedding.device().str(), ", got ",
                    position.sizes(), " ", c10::toString(position.scalar_type()), " on ", position.device().str());
  // (The position's value is the device's: the cache write checks its range, on the CPU by an
  // error, on CUDA by a device-side assert; a host check would wait for the device.)
  TORCH_CHECK_VALUE(static_cast<int64_t>(cache.keys.size()) == config.n_layers &&
                        cache.values.size() == cache.keys.size(),
                    "LlamaForCausalLM::decode_step: the cache holds ", std::to_string(cache.keys.size()), " of ",
                    std::to_string(config.n_layers), " layers");
  CachePosition where;
  where.positions = position;
  return run(tokens, where, cache);
}

at::Tensor LlamaForCausalLMImpl::run(const at::Tensor& tokens, const CachePosition& where, KVCache& cache) {
  const auto& embedding = model->embed_tokens->weight;
  auto x = model->embed_tokens->forward(tokens.to(embedding.device()));
  if (config.scale_embeddings) {  // as transformers: sqrt(dim) rounded to fp32, then to the weights' dtype
    x = x * at::scalar_tensor(std::sqrt(static_cast<double>(config.dim)), x.options().dtype(at::kFloat)).to(x.scalar_type());
  }
  if (!inv_freq_.defined() || inv_freq_.device() != x.device()) {
    inv_freq_ = rope_inv_freq(config.rope, config.head_dim(), x.options().dtype(at::kFloat));
  }
  // Rotary angles of the tokens' positions in fp32 (exact integers: positions < 2^24), then x's dtype.
  const int64_t T = tokens.size(1);
  const auto positions =
      where.on_device() ? where.positions : at::arange(where.start, where.start + T, x.options().dtype(at::kLong));
  const auto angles = at::outer(positions.to(at::kFloat), inv_freq_);
  const auto emb = at::cat({angles, angles}, -1);  // [T, head_dim]
  const auto cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
  const int64_t half = config.head_dim() / 2;
  const auto signed_sin = at::cat({-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)}, -1);  // see apply_rotary
  // A decode step's masks depend on the positions and a layer's window only: made once per window.
  std::vector<std::pair<int64_t, CachePosition>> step_masks;
  const auto layer_position = [&](const LlamaAttentionImpl& attention, const at::Tensor& k_cache) -> CachePosition {
    if (!where.on_device()) return where;
    for (const auto& [window, made] : step_masks) {
      if (window == attention.window) return made;
    }
    CachePosition made = where;
    made.hidden = hidden_keys(where.positions, at::arange(k_cache.size(2), where.positions.options()), attention.window);
    if (x.is_cuda()) made.bias = attention_bias(made.hidden, x.scalar_type());
    step_masks.emplace_back(attention.window, made);
    return made;
  };
  // Each layer's output stays the pair (residual, delta) it sums, added by the next norm's kernel.
  at::Tensor delta;
  int64_t i = 0;
  for (const auto& layer : *model->layers) {
    auto* decoder = layer->as<LlamaDecoderLayerImpl>();
    const CachePosition here = layer_position(*decoder->self_attn, cache.keys[i]);
    std::tie(x, delta) = decoder->forward_unsummed(x, delta, cos, signed_sin, cache.keys[i], cache.values[i], here);
    ++i;
  }
  const auto h = delta.defined() ? model->norm->forward_added(x, delta).second : model->norm->forward(x);
  return (config.tie_embeddings ? at::linear(h, embedding) : lm_head.forward(h)).to(at::kFloat);
}

ModelSpec read_llama(const io::JsonObject& j) {
  auto c = read_llama_architecture(j);
  c.qkv_bias = c.o_bias = j.optional_bool("attention_bias").value_or(false);
  c.mlp_bias = j.optional_bool("mlp_bias").value_or(false);
  return llama_architecture_spec(c, j.file());
}

}  // namespace llmint8::models
