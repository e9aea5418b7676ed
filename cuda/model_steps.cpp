// ATen side of cuda/model_steps.h: argument checks, then the torch-free launchers.
#include "cuda/model_steps.h"

#include "cuda/float_kind.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <initializer_list>
#include <utility>

namespace llmint8::cuda {

namespace {

using Named = std::initializer_list<std::pair<const char*, const at::Tensor*>>;

// Every tensor contiguous on the first one's CUDA device and of its dtype (fp16, bf16 or fp32),
// except `other_dtype` (an index tensor), which needs only the device and contiguity.
void check_tensors(const char* op, Named named, const at::Tensor* other_dtype = nullptr) {
  const auto& [first_name, first] = *named.begin();
  for (const auto& [name, t] : named) {
    TORCH_CHECK_VALUE(t->defined() && t->is_cuda() && t->device() == first->device() && t->is_contiguous(), op, ": ",
                      name, " must be a contiguous CUDA tensor on ", first_name, "'s device (", first->device().str(),
                      ")");
    TORCH_CHECK_VALUE(t == other_dtype || t->scalar_type() == first->scalar_type(), op, ": ", name, " must be ",
                      c10::toString(first->scalar_type()), " as ", first_name, ", got ", c10::toString(t->scalar_type()));
  }
  const auto dtype = first->scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat, op, ": ", first_name,
                    " must be fp16, bf16 or fp32, got ", c10::toString(dtype));
}

}  // namespace

at::Tensor rotary_into_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                             const at::Tensor& signed_sin, const at::Tensor& positions, at::Tensor& k_cache,
                             at::Tensor& v_cache) {
  constexpr const char* op = "rotary_into_cache";
  const Named named = {{"q", &q},   {"k", &k},   {"v", &v},   {"cos", &cos}, {"signed_sin", &signed_sin},
                       {"positions", &positions}, {"k_cache", &k_cache}, {"v_cache", &v_cache}};
  check_tensors(op, named, &positions);
  TORCH_CHECK_VALUE(k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), op,
                    ": k_cache and v_cache must be one shape [B, KV, S, hd], got ", k_cache.sizes(), " and ",
                    v_cache.sizes());
  const int64_t B = k_cache.size(0), KV = k_cache.size(1), S = k_cache.size(2), hd = k_cache.size(3);
  TORCH_CHECK_VALUE(hd % 2 == 0 && hd > 0, op, ": the caches' head size must be even, got ", hd);
  TORCH_CHECK_VALUE(q.dim() == 3 && q.size(0) == B && q.size(2) % hd == 0 && q.size(2) > 0, op, ": q must be [", B,
                    ", T, H * ", hd, "], got ", q.sizes());
  const int64_t T = q.size(1), H = q.size(2) / hd;
  for (const auto& [name, t] : {std::make_pair("k", &k), std::make_pair("v", &v)}) {
    TORCH_CHECK_VALUE(t->sizes() == at::IntArrayRef({B, T, KV * hd}), op, ": ", name, " must be [", B, ", ", T, ", ",
                      KV * hd, "], got ", t->sizes());
  }
  for (const auto& [name, t] : {std::make_pair("cos", &cos), std::make_pair("signed_sin", &signed_sin)}) {
    TORCH_CHECK_VALUE(t->sizes() == at::IntArrayRef({T, hd}), op, ": ", name, " must be [", T, ", ", hd, "], got ",
                      t->sizes());
  }
  TORCH_CHECK_VALUE(positions.scalar_type() == at::kLong && positions.sizes() == at::IntArrayRef({T}), op,
                    ": positions must be [", T, "] int64, got ", positions.sizes(), " ",
                    c10::toString(positions.scalar_type()));
  const c10::cuda::CUDAGuard guard(q.device());
  auto q_out = at::empty({B, H, T, hd}, q.options());
  if (q_out.numel() == 0) return q_out;
  const RotaryCacheArgs args{q.const_data_ptr(),     k.const_data_ptr(), v.const_data_ptr(),
                             cos.const_data_ptr(),   signed_sin.const_data_ptr(), positions.const_data_ptr<int64_t>(),
                             q_out.mutable_data_ptr(), k_cache.mutable_data_ptr(), v_cache.mutable_data_ptr(),
                             B, T, H, KV, hd, S};
  C10_CUDA_CHECK(launch_rotary_cache(float_kind(q.scalar_type()), args, at::cuda::getCurrentCUDAStream().stream()));
  return q_out;
}

namespace {

// rms_norm, and add_rms_norm where `residual` is given (its sum into `sum`).
at::Tensor launch_norm(const char* op, const at::Tensor& x, const at::Tensor* residual, const at::Tensor& weight,
                       double eps, at::Tensor* sum) {
  if (residual != nullptr) {
    check_tensors(op, {{"x", &x}, {"residual", residual}, {"weight", &weight}});
    TORCH_CHECK_VALUE(residual->sizes() == x.sizes(), op, ": residual must be of x's shape ", x.sizes(), ", got ",
                      residual->sizes());
  } else {
    check_tensors(op, {{"x", &x}, {"weight", &weight}});
  }
  TORCH_CHECK_VALUE(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1), op, ": weight must be [",
                    x.dim() >= 1 ? x.size(-1) : 0, "] for x ", x.sizes(), ", got ", weight.sizes());
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps must be a finite number >= 0, got ", eps);
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  if (sum != nullptr) *sum = at::empty_like(x);
  if (x.numel() == 0) return out;
  RmsNormArgs args{x.const_data_ptr(), weight.const_data_ptr(), out.mutable_data_ptr(), x.numel() / x.size(-1),
                   x.size(-1), static_cast<float>(eps)};
  if (residual != nullptr) {
    args.residual = residual->const_data_ptr();
    args.sum = sum->mutable_data_ptr();
  }
  C10_CUDA_CHECK(launch_rms_norm(float_kind(x.scalar_type()), args, x.get_device(), at::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return launch_norm("rms_norm", x, nullptr, weight, eps, nullptr);
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                               const at::Tensor& weight, double eps) {
  at::Tensor sum;
  auto normed = launch_norm("add_rms_norm", x, &residual, weight, eps, &sum);
  return {sum, normed};
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  constexpr const char* op = "silu_mul";
  check_tensors(op, {{"gate", &gate}, {"up", &up}});
  TORCH_CHECK_VALUE(up.sizes() == gate.sizes(), op, ": up must be of gate's shape ", gate.sizes(), ", got ", up.sizes());
  const c10::cuda::CUDAGuard guard(gate.device());
  auto out = at::empty_like(gate);
  if (gate.numel() == 0) return out;
  const SiluMulArgs args{gate.const_data_ptr(), up.const_data_ptr(), out.mutable_data_ptr(), gate.numel()};
  C10_CUDA_CHECK(launch_silu_mul(float_kind(gate.scalar_type()), args, gate.get_device(), at::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace llmint8::cuda
