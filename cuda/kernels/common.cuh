// Device helpers shared by the llmint8 CUDA kernels (no ATen).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/launchers.h"

#include <cstdint>
#include <cstring>

namespace llmint8::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Pulls the 128-byte line holding p into L2; no register, nothing waits for it.
__device__ __forceinline__ void prefetch_to_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// NaN-propagating absmax of two stats (both >= 0 or NaN): a NaN anywhere wins,
// so a row holding non-finite values can never dequantize to finite garbage.
__device__ __forceinline__ float absmax_combine(float a, float b) { return (b > a || isnan(b)) ? b : a; }

// 127 / stat rounded as IEEE division (same bits as the CPU), or 0 when the
// stat is 0 or not finite.
__device__ __forceinline__ float code_scale(float stat) {
  return (isfinite(stat) && stat > 0.f) ? __fdiv_rn(127.f, stat) : 0.f;
}

// rint(x * scale) in fp32, round half to even, in [-127, 127].
__device__ __forceinline__ int8_t quantize_value(float x, float scale) {
  const int q = __float2int_rn(__fmul_rn(x, scale));
  return static_cast<int8_t>(max(-127, min(127, q)));
}

// Host side: runs f(T{}) with the CUDA element type T matching kind.
template <typename F>
cudaError_t with_float_type(FloatKind kind, F&& f) {
  switch (kind) {
    case FloatKind::f16: return f(__half{});
    case FloatKind::bf16: return f(__nv_bfloat16{});
    case FloatKind::f32: return f(float{});
  }
  return cudaErrorInvalidValue;
}

constexpr float kInv127Squared = 1.f / (127.f * 127.f);

// Element i of a float array whose dtype is known only at run time (bias, outlier
// activations: a few loads per output, not worth a template instantiation each).
__device__ __forceinline__ float load_float(const void* p, FloatKind kind, int64_t i) {
  switch (kind) {
    case FloatKind::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case FloatKind::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_float(void* p, FloatKind kind, int64_t i, float v) {
  switch (kind) {
    case FloatKind::f16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    case FloatKind::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// out[m, n] of the decode kernels from the exact int32 product `total`: row and column scales,
// the outlier term and the bias in fp32, rounded once to the output dtype.
__device__ __forceinline__ void store_scaled_product(void* out, FloatKind out_kind, int64_t N, int m, int64_t n,
                                                     int32_t total, float row_m, float col_n, float outlier_term,
                                                     const void* bias, FloatKind bias_kind) {
  const float bias_n = bias != nullptr ? load_float(bias, bias_kind, n) : 0.f;
  const float v = static_cast<float>(total) * (row_m * col_n * kInv127Squared) + outlier_term + bias_n;
  store_float(out, out_kind, m * N + n, v);
}

// 16 bytes at p (16-byte aligned) when `in`, else zeros, as one predicated load: the registers
// are zeroed first and the load writes them only when `in`. Loading from a clamped address and
// then selecting zeros made the select wait for the load, and ptxas put such selects between
// the loads of an unrolled stream, so their latencies added up instead of overlapping.
// STREAM: evict-first (weights read once), else the read-only path (activations reread).
template <bool STREAM>
__device__ __forceinline__ int4 load16_or_zero(const void* p, bool in) {
  int4 v;
  if constexpr (STREAM) {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %5, 0;\n mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n"
        " mov.b32 %3, 0;\n @p ld.global.cs.v4.s32 {%0, %1, %2, %3}, [%4];\n}\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"(static_cast<int>(in)));
  } else {
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %5, 0;\n mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n"
        " mov.b32 %3, 0;\n @p ld.global.nc.v4.s32 {%0, %1, %2, %3}, [%4];\n}\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"(static_cast<int>(in)));
  }
  return v;
}

// An L2 eviction policy for a weight stream (a 64-bit value the loads below carry): evict-first
// where little of the bytes is read again, evict-normal where the kernel reads many of them again
// right after streaming its row (the codes at many outlier columns): with evict-first about half
// of those rereads missed L2 (ncu on an H200, benchmarks/NOTES.md, ninth session).
__device__ __forceinline__ uint64_t weight_stream_policy(bool reread) {
  uint64_t policy;
  if (reread) {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  }
  return policy;
}

// load16_or_zero for a weight stream under `policy` (weight_stream_policy), past L1: each byte
// is read once by one thread.
__device__ __forceinline__ int4 load16_stream_or_zero(const void* p, bool in, uint64_t policy) {
  int4 v;
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %5, 0;\n mov.b32 %0, 0;\n mov.b32 %1, 0;\n mov.b32 %2, 0;\n"
      " mov.b32 %3, 0;\n @p ld.global.nc.L1::no_allocate.L2::cache_hint.v4.s32 {%0, %1, %2, %3}, [%4], %6;\n}\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "r"(static_cast<int>(in)), "l"(policy));
  return v;
}

// Elements of T per 16-byte load.
template <typename T>
constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));

// V consecutive elements of T from p as floats: one 16-byte load when VECTOR (V = kPerVector<T>,
// p 16-byte aligned), else V element loads.
template <typename T, int V, bool VECTOR>
__device__ __forceinline__ void load_floats(const T* __restrict__ p, float (&v)[V]) {
  if constexpr (VECTOR) {
    static_assert(V == kPerVector<T>, "a vector load is 16 bytes");
    const int4 raw = __ldg(reinterpret_cast<const int4*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = to_float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = to_float(p[i]);
  }
}

// V int8 codes to q (aligned to V bytes: one store for V = 4 or 8).
template <int V>
__device__ __forceinline__ void store_codes(int8_t* q, const int8_t (&c)[V]) {
  if constexpr (V == 8) {
    uint2 packed;
    memcpy(&packed, c, 8);
    *reinterpret_cast<uint2*>(q) = packed;
  } else if constexpr (V == 4) {
    uint32_t packed;
    memcpy(&packed, c, 4);
    *reinterpret_cast<uint32_t*>(q) = packed;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) q[i] = c[i];
  }
}

// Whether column k is flagged in a bitmask (one bit per column).
__device__ __forceinline__ bool bit_set(const uint32_t* bits, int64_t k) { return (bits[k >> 5] >> (k & 31)) & 1u; }

// Fills a shared bitmask of `words` words from the outlier list (cols null or count 0: empty);
// only columns in [k0, k0 + 32 * words) are kept. Ends with a barrier.
template <int BLOCK>
__device__ void outlier_bitmask(uint32_t* bits, int64_t words, int64_t k0, const int32_t* cols,
                                const int32_t* count) {
  for (int64_t w = threadIdx.x; w < words; w += BLOCK) bits[w] = 0u;
  __syncthreads();
  const int32_t n = cols != nullptr ? *count : 0;
  for (int32_t j = threadIdx.x; j < n; j += BLOCK) {
    const int64_t k = static_cast<int64_t>(cols[j]) - k0;
    if (k >= 0 && k < 32 * words) atomicOr(&bits[k >> 5], 1u << (k & 31));
  }
  __syncthreads();
}

// NaN-propagating absmax over a block of BLOCK threads; every thread gets the result.
template <int BLOCK>
__device__ float block_absmax(float v) {
  static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "BLOCK must be a multiple of 32, at most 1024");
  __shared__ float warp_results[BLOCK / 32];
  for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  v = lane < BLOCK / 32 ? warp_results[lane] : 0.f;
  for (int offset = 16; offset > 0; offset /= 2) v = absmax_combine(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();  // warp_results may be reused by the caller's next reduction
  return v;
}

// The aligned 4-byte word at `src` copied into shared memory at `dst` asynchronously (cp.async,
// sm_80 and later): the copy holds no register and no register scoreboard while it is in flight.
// wait_async_copies() waits for the thread's copies.
__device__ __forceinline__ void copy_word_async(uint32_t* dst, const void* src) {
  const auto shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared), "l"(src) : "memory");
}
__device__ __forceinline__ void wait_async_copies() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// 16 bytes at `src` (16-byte aligned) copied into shared memory at `dst` asynchronously, past L1
// (cp.async.cg, sm_80 and later); wait_async_copies() waits for them.
__device__ __forceinline__ void copy16_async(void* dst, const void* src) {
  const auto shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared), "l"(src) : "memory");
}

// d += a (16 x 16, row-major fragments) * b (16 x 8, column-major fragments) on the tensor cores
// (mma.sync, sm_80 and later), fp16 or bf16 operands, fp32 sums.
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16x8x16<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16x8x16<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                           uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Programmatic dependent launch (sm_90): a kernel launched so may start before the one ahead of it
// in the stream has ended (at once when that one allows it); it pulls its weights toward L2, then
// waits for that grid before reading anything the grid may have written. Without such a launch
// both are no-ops in effect.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace llmint8::cuda
