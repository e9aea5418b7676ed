// MatMul8bitLt: the autograd of the layer op int8_linear, registered under the
// Autograd key so that LibTorch C++ code and Python get the same gradients.
//   dA    = dY @ (CB * SCB / 127)        (the weight the forward used)
//   dbias = sum of dY over rows
//   dW    = dY^T @ A                     (has_fp16_weights: float master weight)
// All three are computed in fp32 and cast back; no outlier column is counted twice
// because dW never splits A into int8 and outlier parts.
#include <llmint8/ops.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace llmint8::autograd {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor redispatch_int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                                  const std::optional<at::Tensor>& bias, double threshold,
                                  const std::optional<at::Tensor>& weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("llmint8::int8_linear", "")
                       .typed<decltype(llmint8::int8_linear)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(A, CB, SCB, bias, threshold, weight);
}

class MatMul8bitLt : public torch::autograd::Function<MatMul8bitLt> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                            const std::optional<at::Tensor>& bias, double threshold,
                            const std::optional<at::Tensor>& weight) {
    const bool weight_grad = weight.has_value() && weight->requires_grad();
    ctx->save_for_backward({CB, SCB, weight_grad ? A : at::Tensor()});
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["a_dtype"] = static_cast<int64_t>(A.scalar_type());
    ctx->saved_data["a_shape"] = A.sizes().vec();
    ctx->saved_data["bias_dtype"] = static_cast<int64_t>(bias.has_value() ? bias->scalar_type() : at::kFloat);
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.has_value() ? weight->scalar_type() : at::kFloat);
    return redispatch_int8_linear(A, CB, SCB, bias, threshold, weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& CB = saved[0];
    const auto& SCB = saved[1];
    const auto& A = saved[2];
    const auto a_dtype = static_cast<at::ScalarType>(ctx->saved_data["a_dtype"].toInt());
    const auto a_shape = ctx->saved_data["a_shape"].toIntVector();
    const int64_t N = CB.size(0);
    const auto dY = grad_outputs[0].reshape({-1, N}).to(at::kFloat);  // [rows, N]

    // needs_input_grad counts only the tensor inputs that were passed: A, CB, SCB, [bias], [weight].
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const size_t bias_edge = 3, weight_edge = has_bias ? 4 : 3;
    at::Tensor dA, dbias, dW;
    if (ctx->needs_input_grad(0)) {
      const auto W = CB.to(at::kFloat) * SCB.unsqueeze(1).div(127.0);  // [N, K]
      dA = dY.mm(W).to(a_dtype).view(a_shape);
    }
    if (has_bias && ctx->needs_input_grad(bias_edge)) {
      dbias = dY.sum(0).to(static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt()));
    }
    if (A.defined() && ctx->needs_input_grad(weight_edge)) {
      const auto A2 = A.reshape({-1, A.size(-1)}).to(at::kFloat);
      dW = dY.t().mm(A2).to(static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt()));
    }
    return {dA, at::Tensor(), at::Tensor(), dbias, at::Tensor(), dW};
  }
};

at::Tensor int8_linear_autograd(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                                const std::optional<at::Tensor>& bias, double threshold,
                                const std::optional<at::Tensor>& weight) {
  // Inference (no_grad, or no input that wants a gradient) skips the graph node: apply() would
  // still build one and fill its saved data on every call, host time an eager decode waits for.
  const auto wants_grad = [](const std::optional<at::Tensor>& t) { return t.has_value() && t->requires_grad(); };
  if (!at::GradMode::is_enabled() ||
      !(A.requires_grad() || CB.requires_grad() || SCB.requires_grad() || wants_grad(bias) || wants_grad(weight))) {
    return redispatch_int8_linear(A, CB, SCB, bias, threshold, weight);
  }
  return MatMul8bitLt::apply(A, CB, SCB, bias, threshold, weight);
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, Autograd, m) { m.impl("int8_linear", &int8_linear_autograd); }

}  // namespace llmint8::autograd
