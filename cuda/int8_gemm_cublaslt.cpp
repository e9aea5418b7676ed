#include "cuda/int8_gemm_cublaslt.h"

#include <cublasLt.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

namespace llmint8::cuda {

namespace {

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("llmint8: cuBLASLt ") + what + " failed: " + cublasLtGetStatusString(status));
  }
}

// Everything cuBLASLt needs for one shape, built once. Row-major C = A @ B^T is
// computed as column-major C^T = B^T(op T) @ A: the "TN" form int8 kernels require.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t weight = nullptr, activation = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;
};

struct Cache {
  std::mutex mutex;
  std::map<int, cublasLtHandle_t> handles;                                // per device
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, Plan> plans;     // per (device, M, N, K)
};

Cache& cache() {
  static Cache* instance = new Cache();  // lives as long as the process: handles outlast every stream
  return *instance;
}

Plan make_plan(cublasLtHandle_t handle, int64_t M, int64_t N, int64_t K) {
  Plan p;
  check(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I), "MatmulDescCreate");
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans)), "set TRANSA");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans)), "set TRANSB");
  check(cublasLtMatrixLayoutCreate(&p.weight, CUDA_R_8I, K, N, K), "layout of B");
  check(cublasLtMatrixLayoutCreate(&p.activation, CUDA_R_8I, K, M, K), "layout of A");
  check(cublasLtMatrixLayoutCreate(&p.out, CUDA_R_32I, N, M, N), "layout of C");

  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  const uint64_t workspace = kCublasLtWorkspaceBytes;
  const uint32_t alignment = 16;
  check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                             sizeof(workspace)), "set workspace");
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    check(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof(alignment)), "set alignment");
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const auto status = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.weight, p.activation, p.out, p.out, pref, 1,
                                                     &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.has_algo = true;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    check(status, "AlgoGetHeuristic");
  }
  return p;
}

}  // namespace

bool cublaslt_int8_supported(const void* A, const void* B, const void* C, int64_t N, int64_t K) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return K % 4 == 0 && N % 4 == 0 && aligned(A) && aligned(B) && aligned(C);
}

bool cublaslt_int8_gemm(const int8_t* A, const int8_t* B, int32_t* C, int64_t M, int64_t N, int64_t K,
                        void* workspace, cudaStream_t stream) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) throw std::runtime_error("llmint8: cudaGetDevice failed");
  cublasLtHandle_t handle = nullptr;
  const Plan* plan = nullptr;
  {
    auto& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto h = c.handles.find(device);
    if (h == c.handles.end()) {
      cublasLtHandle_t created = nullptr;
      check(cublasLtCreate(&created), "Create");
      h = c.handles.emplace(device, created).first;
    }
    handle = h->second;
    const auto key = std::make_tuple(device, M, N, K);
    auto it = c.plans.find(key);
    if (it == c.plans.end()) it = c.plans.emplace(key, make_plan(handle, M, N, K)).first;
    plan = &it->second;  // std::map nodes never move
  }
  if (!plan->has_algo) return false;
  const int32_t alpha = 1, beta = 0;
  check(cublasLtMatmul(handle, plan->op, &alpha, B, plan->weight, A, plan->activation, &beta, C, plan->out, C,
                       plan->out, &plan->algo, workspace, kCublasLtWorkspaceBytes, stream),
        "Matmul");
  return true;
}

}  // namespace llmint8::cuda
