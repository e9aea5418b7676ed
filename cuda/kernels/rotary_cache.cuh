// A decode step's rotary embedding and KV-cache write in one kernel, in place of the eight small
// ones the model's ATen ops take (concatenation, halves swapped, two products, a sum, two cache
// writes). Each thread takes one pair (d, d + hd/2) of one head of one token: the query heads'
// pairs rotated into q_out [B, H, T, hd], the key heads' rotated into the key cache at the
// token's position, the value heads' copied into the value cache there.
// The values are those of the ATen ops, bit for bit: each product and the sum rounded to the
// element type in turn (a product of two fp16 or bf16 values is exact in fp32, so rounding it
// once to the type is what ATen's half-precision multiply does), no fused multiply-add.
#pragma once

#include "cuda/kernels/common.cuh"
#include "cuda/launchers.h"  // RotaryCacheArgs

namespace llmint8::cuda {

constexpr int kRotaryBlock = 128;

template <typename T>
__device__ __forceinline__ T rotate(T x, T partner, T c, T s) {
  // round(round(x * c) + round(partner * s)), as the ATen ops compute it (fp32 math, no contraction)
  const T a = from_float<T>(__fmul_rn(to_float(x), to_float(c)));
  const T b = from_float<T>(__fmul_rn(to_float(partner), to_float(s)));
  return from_float<T>(__fadd_rn(to_float(a), to_float(b)));
}

template <typename T>
__global__ void __launch_bounds__(kRotaryBlock) rotary_cache_kernel(RotaryCacheArgs p) {
  const int64_t half = p.hd / 2, heads = p.H + 2 * p.KV;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kRotaryBlock + threadIdx.x;
  if (i >= p.B * p.T * heads * half) return;
  const int64_t d = i % half, head = (i / half) % heads, t = (i / (half * heads)) % p.T, b = i / (half * heads * p.T);
  const bool is_q = head < p.H, is_k = !is_q && head < p.H + p.KV;
  const int64_t kv_head = is_q ? 0 : (is_k ? head - p.H : head - p.H - p.KV);
  const T* src = static_cast<const T*>(is_q ? p.q : (is_k ? p.k : p.v)) +
                 (b * p.T + t) * (is_q ? p.H : p.KV) * p.hd + (is_q ? head : kv_head) * p.hd;
  const T x1 = src[d], x2 = src[d + half];
  T* dst;
  if (is_q) {
    dst = static_cast<T*>(p.q_out) + ((b * p.H + head) * p.T + t) * p.hd;
  } else {
    const int64_t position = p.positions[t];
    if (position < 0 || position >= p.S) __trap();  // (as index_copy_'s device-side check: no host sync)
    dst = static_cast<T*>(is_k ? p.k_cache : p.v_cache) + ((b * p.KV + kv_head) * p.S + position) * p.hd;
  }
  if (is_q || is_k) {
    const T* c = static_cast<const T*>(p.cos) + t * p.hd;
    const T* s = static_cast<const T*>(p.signed_sin) + t * p.hd;
    dst[d] = rotate(x1, x2, c[d], s[d]);  // [x1, x2] * cos + [x2, x1] * [-sin, sin]
    dst[d + half] = rotate(x2, x1, c[d + half], s[d + half]);
  } else {
    dst[d] = x1;
    dst[d + half] = x2;
  }
}

}  // namespace llmint8::cuda
