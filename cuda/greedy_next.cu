// Launcher of the greedy decode step's end (see kernels/greedy_next.cuh).
#include "cuda/kernels/greedy_next.cuh"

#include <cstdint>

namespace llmint8::cuda {

cudaError_t launch_greedy_next(const GreedyNextArgs& args, cudaStream_t stream) {
  if (args.rows <= 0 || args.rows >= (int64_t{1} << 31) || args.V <= 0) return cudaErrorInvalidValue;
  const bool vector = args.V % 4 == 0 && reinterpret_cast<uintptr_t>(args.logits) % 16 == 0;
  const auto kernel = vector ? greedy_next_kernel<true> : greedy_next_kernel<false>;
  kernel<<<static_cast<unsigned>(args.rows), kGreedyNextBlock, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace llmint8::cuda
