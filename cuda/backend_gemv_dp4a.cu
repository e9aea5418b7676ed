// Product backend "gemv_dp4a": one or two rows with 16-byte aligned rows (see kernels/gemv_dp4a.cuh).
#include "cuda/kernels/gemv_dp4a.cuh"
#include "cuda/small_m_launch.cuh"

namespace llmint8::cuda {

bool gemv_dp4a_applies(const ScaledProduct& p) {
  return p.M >= 1 && p.M <= kGemvMaxRows && p.K % 16 == 0 && reinterpret_cast<uintptr_t>(p.a) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.b) % 16 == 0;
}

cudaError_t gemv_dp4a_launch(const ScaledProduct& p, const Scratch& /*scratch*/, cudaStream_t stream) {
  const SmallMParams params = small_m_params(p);
  const unsigned grid = static_cast<unsigned>((p.N + kGemvWarps - 1) / kGemvWarps);
  constexpr unsigned block = kGemvWarps * 32;
  return p.M == 1 ? launch_decode_kernel(gemv_dp4a_kernel<1>, grid, block, params, stream)
                  : launch_decode_kernel(gemv_dp4a_kernel<2>, grid, block, params, stream);
}

}  // namespace llmint8::cuda
