// Launcher of the decode step's rotary embedding and cache write (see kernels/rotary_cache.cuh).
#include "cuda/kernels/rotary_cache.cuh"

namespace llmint8::cuda {

cudaError_t launch_rotary_cache(FloatKind kind, const RotaryCacheArgs& a, cudaStream_t stream) {
  if (a.B <= 0 || a.T <= 0 || a.H <= 0 || a.KV <= 0 || a.hd <= 0 || a.hd % 2 != 0 || a.S <= 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t threads = a.B * a.T * (a.H + 2 * a.KV) * (a.hd / 2);
  if (threads / kRotaryBlock >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  const auto blocks = static_cast<unsigned>((threads + kRotaryBlock - 1) / kRotaryBlock);
  return with_float_type(kind, [&](auto tag) {
    rotary_cache_kernel<decltype(tag)><<<blocks, kRotaryBlock, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace llmint8::cuda
