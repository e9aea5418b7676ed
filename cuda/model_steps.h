// Steps of the C++ models done in one CUDA kernel where ATen takes several, or where the
// projection after them should start early (csrc/models calls these on CUDA tensors; builds
// without the CUDA backend do not have them).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

namespace llmint8::cuda {

// A decode step's rotary embedding and cache write (cuda/kernels/rotary_cache.cuh): returns q
// [B, T, H * hd] rotated as [B, H, T, hd]; writes k [B, T, KV * hd] rotated, and v, into
// k_cache / v_cache [B, KV, S, hd] at the device positions [T] (int64, each in [0, S): a
// device-side trap otherwise). cos and signed_sin [T, hd], the sine's first half negated. Every
// tensor contiguous on one CUDA device, of one dtype (fp16, bf16 or fp32); the same values as
// x * cos + cat(x2, x1) * signed_sin in ATen, and index_copy_ into the caches.
at::Tensor rotary_into_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                             const at::Tensor& signed_sin, const at::Tensor& positions, at::Tensor& k_cache,
                             at::Tensor& v_cache);

// RMSNorm of x [..., D] with weight [D] (cuda/kernels/norm_and_gate.cuh): weight * (x *
// rsqrt(mean(x^2) + eps)) in fp32, rounded once to x's dtype, as at::rms_norm (whose sum of squares
// runs in another order: a value may differ in its last bit). x contiguous, weight of x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// x + residual, rounded to x's dtype as ATen's add rounds it, and rms_norm of that sum, in one
// kernel: {sum, normed}. residual of x's shape, dtype and device, contiguous.
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                               const at::Tensor& weight, double eps);

// silu(gate) * up, each product rounded as at::silu(gate) * up rounds it (the same values).
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up);

}  // namespace llmint8::cuda
