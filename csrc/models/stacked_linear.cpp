#include <llmint8/models/stacked_linear.h>

#include <llmint8/linear8bitlt.h>

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <memory>

namespace llmint8::models {

namespace {

// The tensors a part's forward reads: [weight (CB), SCB (int8 only), bias], undefined where absent.
std::vector<at::Tensor> part_tensors(const torch::nn::AnyModule& part) {
  if (const auto q = std::dynamic_pointer_cast<Linear8bitLtImpl>(part.ptr())) return {q->weight, q->SCB, q->bias};
  const auto l = std::dynamic_pointer_cast<torch::nn::LinearImpl>(part.ptr());
  return {l->weight, at::Tensor(), l->bias};
}

// The part stacks with `first`: of the same kind and settings, input size, dtypes and device.
bool stacks_with(const torch::nn::AnyModule& part, const torch::nn::AnyModule& first) {
  const auto q = std::dynamic_pointer_cast<Linear8bitLtImpl>(part.ptr());
  const auto q0 = std::dynamic_pointer_cast<Linear8bitLtImpl>(first.ptr());
  if (q && q0) {
    if (!q->is_quantized() || q->state.use_pool || q->state.threshold != q0->state.threshold) return false;
  } else if (q || q0 || !std::dynamic_pointer_cast<torch::nn::LinearImpl>(part.ptr())) {
    return false;
  }
  const auto t = part_tensors(part), t0 = part_tensors(first);
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].defined() != t0[i].defined()) return false;
    if (t[i].defined() && (t[i].device() != t0[i].device() || t[i].scalar_type() != t0[i].scalar_type() ||
                           t[i].dim() != t0[i].dim() || (t[i].dim() == 2 && t[i].size(1) != t0[i].size(1)))) {
      return false;
    }
  }
  return true;
}

// Points the layer at `weight` (with `scb`, quantized) and `bias` (where it has one).
void set_tensors(const torch::nn::AnyModule& layer, const at::Tensor& weight, const at::Tensor& scb,
                 const at::Tensor& bias) {
  if (const auto q = std::dynamic_pointer_cast<Linear8bitLtImpl>(layer.ptr())) {
    q->set_quantized(weight, scb);
    if (bias.defined()) q->bias.set_data(bias);
    return;
  }
  const auto l = std::dynamic_pointer_cast<torch::nn::LinearImpl>(layer.ptr());
  l->weight.set_data(weight);
  if (bias.defined()) l->bias.set_data(bias);
}

}  // namespace

StackedLinear StackedLinear::stack(const std::vector<torch::nn::AnyModule>& parts) {
  StackedLinear out;
  if (parts.size() < 2) return out;
  for (const auto& part : parts) {
    if (part.is_empty() || !stacks_with(part, parts.front())) return out;
  }
  torch::NoGradGuard no_grad;
  std::vector<std::vector<at::Tensor>> columns(3);  // weights, SCBs, biases
  for (const auto& part : parts) {
    const auto t = part_tensors(part);
    for (size_t i = 0; i < t.size(); ++i) columns[i].push_back(t[i]);
    out.rows_.push_back(t[0].size(0));
  }
  std::vector<at::Tensor> stacked(3);
  for (size_t i = 0; i < 3; ++i) {
    if (columns[i].front().defined()) stacked[i] = at::cat(columns[i]);
  }
  const auto& [weight, scb, bias] = std::tie(stacked[0], stacked[1], stacked[2]);
  const int64_t in = weight.size(1), rows = weight.size(0);
  // The stacked layer, built empty (nothing allocated or initialized), then given its real size.
  if (const auto first = std::dynamic_pointer_cast<Linear8bitLtImpl>(parts.front().ptr())) {
    Linear8bitLt layer(Linear8bitLtOptions(0, 0).bias(bias.defined()).has_fp16_weights(false)
                           .threshold(first->state.threshold).initialize(false));
    layer->options.in_features(in).out_features(rows);
    out.stacked_ = torch::nn::AnyModule(layer);
  } else {
    torch::nn::Linear layer(torch::nn::LinearOptions(1, 0).bias(bias.defined()));
    layer->options = torch::nn::LinearOptions(in, rows).bias(bias.defined());
    layer->weight.set_requires_grad(false);
    if (bias.defined()) layer->bias.set_requires_grad(false);
    out.stacked_ = torch::nn::AnyModule(layer);
  }
  set_tensors(out.stacked_, weight, scb, bias);
  int64_t row = 0;
  for (size_t p = 0; p < parts.size(); ++p) {  // each part a view of its rows
    const auto view = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, row, out.rows_[p]) : t; };
    set_tensors(parts[p], view(weight), view(scb), view(bias));
    row += out.rows_[p];
  }
  out.parts_ = parts;
  return out;
}

bool StackedLinear::views_current() const {
  const auto stacked = part_tensors(stacked_);
  int64_t row = 0;
  for (size_t p = 0; p < parts_.size(); ++p) {
    if (!stacks_with(parts_[p], stacked_)) return false;  // (kind, settings, dtypes and device as stacked)
    const auto t = part_tensors(parts_[p]);
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].defined()) continue;
      const int64_t row_elements = t[i].dim() == 2 ? t[i].size(1) : 1;
      const auto* expected = static_cast<const char*>(stacked[i].const_data_ptr()) +
                             row * row_elements * static_cast<int64_t>(stacked[i].element_size());
      if (t[i].const_data_ptr() != expected || t[i].size(0) != rows_[p]) return false;
    }
    row += rows_[p];
  }
  return true;
}

bool StackedLinear::usable() {
  if (stacked_.is_empty()) return false;
  if (!views_current()) {  // a part moved, replaced or re-configured: its old stacked copy is released
    *this = StackedLinear();
    return false;
  }
  return !at::GradMode::is_enabled();
}

std::vector<at::Tensor> StackedLinear::forward(const at::Tensor& x) {
  const auto y = stacked_.forward(x);
  std::vector<at::Tensor> outputs;
  int64_t column = 0;
  for (const int64_t rows : rows_) {
    outputs.push_back(y.narrow(-1, column, rows));
    column += rows;
  }
  return outputs;
}

}  // namespace llmint8::models
