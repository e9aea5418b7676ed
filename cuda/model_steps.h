// Steps of the C++ models done in one CUDA kernel where ATen takes several (csrc/models calls
// these on CUDA tensors; builds without the CUDA backend do not have them).
#pragma once

#include <ATen/core/Tensor.h>

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

}  // namespace llmint8::cuda
