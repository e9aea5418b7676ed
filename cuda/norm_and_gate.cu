// Launchers of the models' RMSNorm and SiLU gate kernels (see kernels/norm_and_gate.cuh).
#include "cuda/kernels/norm_and_gate.cuh"
#include "cuda/small_m_launch.cuh"  // decode_overlap, launch_may_overlap

#include <algorithm>

namespace llmint8::cuda {

cudaError_t launch_rms_norm(FloatKind kind, const RmsNormArgs& args, int device, cudaStream_t stream) {
  if (args.rows <= 0 || args.rows >= (int64_t{1} << 31) || args.D <= 0) return cudaErrorInvalidValue;
  return with_float_type(kind, [&](auto tag) {
    return launch_may_overlap(rms_norm_kernel<decltype(tag)>, dim3(static_cast<unsigned>(args.rows)), kRmsNormBlock, 0,
                              args, decode_overlap(device), stream);
  });
}

cudaError_t launch_silu_mul(FloatKind kind, const SiluMulArgs& args, int device, cudaStream_t stream) {
  if (args.n <= 0) return cudaErrorInvalidValue;
  constexpr int64_t kMaxBlocks = 4096;  // past it the blocks loop (grid stride)
  const auto blocks = static_cast<unsigned>(std::min(kMaxBlocks, (args.n + kSiluMulBlock - 1) / kSiluMulBlock));
  return with_float_type(kind, [&](auto tag) {
    return launch_may_overlap(silu_mul_kernel<decltype(tag)>, dim3(blocks), kSiluMulBlock, 0, args,
                              decode_overlap(device), stream);
  });
}

}  // namespace llmint8::cuda
