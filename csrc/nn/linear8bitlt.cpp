// Linear8bitLt: quantization on the move, the forward through int8_linear,
// training mode and outlier pooling.
#include <llmint8/checks.h>
#include <llmint8/linear8bitlt.h>
#include <llmint8/ops.h>

#include <torch/nn/init.h>
#include <torch/types.h>

#include <cmath>
#include <limits>
#include <mutex>
#include <set>
#include <unordered_map>

namespace llmint8 {

namespace {

// (CB, SCB) of a float weight [out, in], where it lives. Error messages format
// numbers themselves (see checks.cpp).
std::pair<at::Tensor, at::Tensor> quantize_weight(const at::Tensor& weight) {
  const auto w = weight.detach().to(at::kFloat);
  if (w.numel() > 0) {
    const auto bad = at::isfinite(w).logical_not().nonzero();
    TORCH_CHECK_VALUE(bad.size(0) == 0, "Linear8bitLt: cannot quantize a weight with non-finite values (first at [",
                      std::to_string(bad[0][0].item<int64_t>()), ", ", std::to_string(bad[0][1].item<int64_t>()),
                      "])");
  }
  auto [CB, SCB, cols] = int8_vectorwise_quant(w, 0.0);
  return {CB, SCB};
}

// Outlier columns seen so far per input size, shared by every layer with use_pool.
struct OutlierPool {
  std::mutex mutex;
  std::unordered_map<int64_t, std::set<int64_t>> columns;
};

OutlierPool& outlier_pool() {
  static OutlierPool pool;
  return pool;
}

}  // namespace

std::vector<std::string> Int8Config::skip_modules() const {
  std::vector<std::string> names{"lm_head"};
  for (const auto& name : llm_int8_skip_modules) {
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  return names;
}

Linear8bitLtOptions::Linear8bitLtOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

Linear8bitLtImpl::Linear8bitLtImpl(const Linear8bitLtOptions& options_) : options(options_) {
  checks::check_threshold("Linear8bitLt", options.threshold());  // the op's rule: finite, >= 0
  TORCH_CHECK_VALUE(options.in_features() >= 0 && options.out_features() >= 0,
                    "llmint8::Linear8bitLt: arguments 'in_features' and 'out_features' must be >= 0, got ",
                    std::to_string(options.in_features()), " and ", std::to_string(options.out_features()));
  reset();
}

void Linear8bitLtImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  const auto on = torch::TensorOptions().device(options.device());
  weight = register_parameter("weight", torch::empty({out, in}, on), options.has_fp16_weights());
  bias = options.bias() ? register_parameter("bias", torch::empty({out}, on)) : register_parameter("bias", {}, false);
  SCB = register_buffer("SCB", torch::empty({0}, on));
  state = MatmulLtState{};
  state.threshold = options.threshold();
  state.has_fp16_weights = options.has_fp16_weights();
  if (options.device().type() == c10::kMeta || !options.initialize()) return;
  // The initialization of torch::nn::Linear.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void Linear8bitLtImpl::pretty_print(std::ostream& stream) const {
  stream << "llmint8::Linear8bitLt(in_features=" + std::to_string(options.in_features()) +
                ", out_features=" + std::to_string(options.out_features()) +
                ", bias=" + (bias.defined() ? "true" : "false") + ", threshold=" + std::to_string(state.threshold) +
                ", has_fp16_weights=" + (state.has_fp16_weights ? "true" : "false") +
                ", quantized=" + (is_quantized() ? "true" : "false") + ")";
}

bool Linear8bitLtImpl::is_quantized() const { return weight.scalar_type() == at::kChar; }

void Linear8bitLtImpl::quantize() {
  if (is_quantized()) return;
  TORCH_CHECK_VALUE(weight.device().type() != c10::kMeta,
                    "Linear8bitLt::quantize: the weight is on the meta device; load or move real weights first");
  const auto [CB, scb] = quantize_weight(weight);
  set_quantized(CB, scb);
}

void Linear8bitLtImpl::set_quantized(const at::Tensor& CB, const at::Tensor& scales) {
  const int64_t out = options.out_features(), in = options.in_features();
  TORCH_CHECK_TYPE(CB.scalar_type() == at::kChar && scales.is_floating_point(),
                   "Linear8bitLt::set_quantized: CB must be int8 and SCB floating point, got ",
                   c10::toString(CB.scalar_type()), " and ", c10::toString(scales.scalar_type()));
  TORCH_CHECK_VALUE(CB.dim() == 2 && CB.size(0) == out && CB.size(1) == in && scales.dim() == 1 &&
                        scales.size(0) == out,
                    "Linear8bitLt::set_quantized: CB must be [", std::to_string(out), ", ", std::to_string(in),
                    "] and SCB [", std::to_string(out), "] (out_features, in_features)");
  const auto scb = scales.to(CB.device(), at::kFloat);
  torch::NoGradGuard no_grad;
  weight.set_requires_grad(false);
  weight.set_data(CB);
  SCB.set_data(scb);
  options.has_fp16_weights(false);
  state.has_fp16_weights = false;
  sync_state();
}

void Linear8bitLtImpl::sync_state() {
  state.CB = weight;
  state.SCB = SCB;
}

void Linear8bitLtImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  to(device, non_blocking);
  to(dtype, non_blocking);
}

void Linear8bitLtImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::NoGradGuard no_grad;
  for (auto* t : {&weight, &bias}) {
    if (t->defined() && t->is_floating_point()) t->set_data(t->to(dtype, non_blocking));
  }
}

void Linear8bitLtImpl::to(torch::Device device, bool non_blocking) {
  {
    torch::NoGradGuard no_grad;
    for (auto* t : {&weight, &bias, &SCB}) {
      if (t->defined()) t->set_data(t->to(device, non_blocking));
    }
  }
  if (is_quantized()) {
    sync_state();
  } else if (!options.has_fp16_weights() && device.type() != c10::kMeta) {
    quantize();
  }
}

void Linear8bitLtImpl::refresh_training_copy() {
  // Every forward, as bitsandbytes does: optimizers may update the float weight
  // through .data(), which no version counter sees.
  std::tie(state.CB, state.SCB) = quantize_weight(weight);
}

at::Tensor Linear8bitLtImpl::forward(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == options.in_features(), "Linear8bitLt: input has ",
                    std::to_string(x.dim() >= 1 ? x.size(-1) : 0), " features in its last dimension, expected ",
                    "in_features = ", std::to_string(options.in_features()));
  std::optional<at::Tensor> master;
  if (options.has_fp16_weights()) {
    refresh_training_copy();
    if (weight.requires_grad()) master = weight;
  } else {
    quantize();
    sync_state();
  }
  if (state.use_pool && state.threshold > 0.0) return forward_pooled(x);
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return int8_linear(x, state.CB, state.SCB, b, state.threshold, master);
}

at::Tensor Linear8bitLtImpl::forward_pooled(const at::Tensor& x) {
  // Pooled columns become outliers by being inf in a probe used only for detection;
  // the float path then reads the true values. Synchronizes (opt-in, as in bitsandbytes).
  const int64_t K = x.size(-1);
  auto& pool = outlier_pool();
  std::vector<int64_t> pooled;
  {
    std::lock_guard<std::mutex> lock(pool.mutex);
    const auto& seen = pool.columns[K];
    pooled.assign(seen.begin(), seen.end());
  }
  auto probe = x.detach().clone();
  if (!pooled.empty()) {
    probe.index_fill_(-1, torch::tensor(pooled, torch::kLong).to(x.device()), std::numeric_limits<double>::infinity());
  }
  auto [CA, SCA, cols] = int8_vectorwise_quant(probe, state.threshold);
  const auto found = cols->cpu();
  {
    std::lock_guard<std::mutex> lock(pool.mutex);
    auto& seen = pool.columns[K];
    for (int64_t i = 0; i < found.numel(); ++i) seen.insert(found[i].item<int64_t>());
  }
  state.idx = *cols;
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return std::get<0>(int8_mixed_scaled_mm(x, CA, state.CB, SCA, state.SCB, cols, b));
}

Linear8bitLt from_linear(const torch::nn::LinearImpl& linear, double threshold, bool has_fp16_weights) {
  const auto& o = linear.options;
  // Not initialized: its weight is replaced at once (initializing it cost as much as the load).
  Linear8bitLt layer(Linear8bitLtOptions(o.in_features(), o.out_features())
                         .bias(o.bias())
                         .threshold(threshold)
                         .has_fp16_weights(has_fp16_weights)
                         .device(linear.weight.device())
                         .initialize(false));
  // The new layer shares the weight's storage (the Linear is being replaced).
  torch::NoGradGuard no_grad;
  layer->weight.set_data(linear.weight.detach());
  layer->weight.set_requires_grad(has_fp16_weights);
  if (o.bias()) {
    layer->bias.set_data(linear.bias.detach());
    layer->bias.set_requires_grad(linear.bias.requires_grad());
  }
  return layer;
}

}  // namespace llmint8
