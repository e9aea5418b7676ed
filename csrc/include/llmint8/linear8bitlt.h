// Linear8bitLt for LibTorch C++ models, with bitsandbytes' names: parameters
// "weight" (float [out, in] until quantized, then int8 codes) and "bias", buffer
// "SCB" (fp32 [out] row scales once quantized), state in MatmulLtState.
#pragma once

#include <llmint8/config.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>
#include <vector>

namespace llmint8 {

// What one 8-bit layer knows about its quantized weight.
struct MatmulLtState {
  at::Tensor CB;                  // int8 [out, in] codes used by the last forward
  at::Tensor SCB;                 // fp32 [out] row scales
  double threshold = 0.0;         // outlier threshold (0: pure int8)
  bool has_fp16_weights = true;   // training mode: float master weight, quantized afresh each forward
  bool is_training = false;
  at::Tensor idx;                 // outlier columns of the last forward (recorded with use_pool)
  bool use_pool = false;          // outlier pooling across layers of one input size
};

struct Linear8bitLtOptions {
  Linear8bitLtOptions(int64_t in_features, int64_t out_features);
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(bool, has_fp16_weights) = true;  // bitsandbytes' default
  TORCH_ARG(double, threshold) = 0.0;
  // Where reset() allocates the float weight; on meta nothing is allocated or initialized.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  // false: the float weight and bias are allocated but never written, for a caller that replaces
  // them (from_linear): memory never written costs no resident pages and no time.
  TORCH_ARG(bool, initialize) = true;
};

class Linear8bitLtImpl : public torch::nn::Cloneable<Linear8bitLtImpl> {
 public:
  Linear8bitLtImpl(int64_t in_features, int64_t out_features)
      : Linear8bitLtImpl(Linear8bitLtOptions(in_features, out_features)) {}
  explicit Linear8bitLtImpl(const Linear8bitLtOptions& options);

  // Float weight and bias initialized as torch::nn::Linear's; SCB empty.
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // y = LLM.int8()(x) + bias, in x's dtype. A float weight that was never
  // quantized is quantized first (has_fp16_weights=false); in training mode
  // (has_fp16_weights=true) its int8 copy in state is made afresh each call.
  at::Tensor forward(const at::Tensor& x);

  // Replaces the float weight by its int8 codes and fills SCB, where the weight
  // lives. No-op once quantized. Rejects non-finite weights.
  void quantize();
  bool is_quantized() const;

  // Installs int8 codes CB [out, in] and their row scales SCB [out] (any float dtype, kept
  // as fp32) on CB's device: the layer is quantized from then on. The one way the quantized
  // state is set: quantize() and checkpoint loaders call it; nothing else writes weight, SCB,
  // options.has_fp16_weights or state's CB and SCB. Checks dtypes and shapes; the values are
  // the caller's to check (load_state_dict does).
  void set_quantized(const at::Tensor& CB, const at::Tensor& SCB);

  // Moving to a device quantizes (has_fp16_weights=false); a dtype cast never
  // touches the int8 codes or the fp32 scales.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  Linear8bitLtOptions options;
  at::Tensor weight;
  at::Tensor bias;
  at::Tensor SCB;
  MatmulLtState state;

 private:
  void refresh_training_copy();
  // state.CB and state.SCB follow the parameters (after moves and set_quantized).
  void sync_state();
  at::Tensor forward_pooled(const at::Tensor& x);
};
TORCH_MODULE(Linear8bitLt);

// A Linear8bitLt holding a copy of linear's weight and bias (not yet quantized).
Linear8bitLt from_linear(const torch::nn::LinearImpl& linear, double threshold = 0.0, bool has_fp16_weights = false);

// Swaps every torch::nn::Linear below root (except lm_head and cfg's skip list)
// for a Linear8bitLt with its weights; returns the dotted names it replaced.
// The swap changes the module registry, and the storage of torch::nn::Sequential
// and ModuleList. Model code that keeps its own handle to a layer must fetch it
// again afterwards: hold layers as torch::nn::AnyModule obtained from
// linear_child() and call that again after the swap (see README).
std::vector<std::string> replace_linear(torch::nn::Module& root, const Int8Config& cfg = Int8Config());

// The Linear or Linear8bitLt registered under `name` in `parent`, as an AnyModule.
torch::nn::AnyModule linear_child(torch::nn::Module& parent, const std::string& name);

}  // namespace llmint8
