// Linear layers that read one input (q, k and v; gate and up) run as one layer over their stacked
// rows: one launch and one weight stream a step instead of several, which at one token a step is
// much of a small layer's time. Each part's weights become views into the stacked ones, so memory
// and the state dict stay as they were; the parts still serve whatever the stack cannot.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/any.h>

#include <vector>

namespace llmint8::models {

class StackedLinear {
 public:
  StackedLinear() = default;
  // Stacks `parts` when they are all quantized Linear8bitLt of one threshold (not pooled) or all
  // torch::nn::Linear, of one input size, dtype and device, with or without biases alike;
  // otherwise the result is empty and the parts are left as they were.
  static StackedLinear stack(const std::vector<torch::nn::AnyModule>& parts);

  // Whether forward() may serve: stacked, without gradients to record (autograd goes through the
  // parts), and every part still a view of the stack. Moving, replacing or re-configuring a part
  // ends the stack: this call then empties it, which releases its copy.
  bool usable();
  // The parts' outputs, in order: views into the stacked layer's output, split along the last dimension.
  std::vector<at::Tensor> forward(const at::Tensor& x);

 private:
  bool views_current() const;
  torch::nn::AnyModule stacked_;
  std::vector<torch::nn::AnyModule> parts_;
  std::vector<int64_t> rows_;  // each part's out_features
};

}  // namespace llmint8::models
