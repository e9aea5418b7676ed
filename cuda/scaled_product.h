// The LLM.int8() product with its epilogue, and the backends that compute it:
//   out[m, n] = (a[m, :] . b[n, :]) * row[m] * col[n] / 127^2 + outlier term + bias[n]
// One table (scaled_product.cpp) lists the backends in order of preference, each with when it
// applies; the first that applies runs. A backend is one file and one row of that table.
#pragma once

#include "cuda/launchers.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmint8::cuda {

// Everything a backend needs, as device pointers (torch-free).
struct ScaledProduct {
  const int8_t* a;              // [M, K] activation codes
  const float* row;             // [M] their absmax stats
  const int8_t* b;              // [N, K] weight codes (CB)
  const float* col;             // [N] weight absmax stats (SCB)
  const void* bias;             // [N] or null
  FloatKind bias_kind;
  const OutlierTerm* outliers;  // null: no outlier term
  int64_t M, N, K;
  FloatKind out_kind;
  void* out;                    // [M, N]
  int device;
  // The layer op's float activations [M, K] and threshold, for the backends that quantize them
  // themselves; those apply only when `a` and `row` are null (not quantized yet).
  const void* x = nullptr;
  FloatKind x_kind = FloatKind::f32;
  float threshold = 0.f;
};

// Device memory a backend asks for during one product, stream-ordered on the launch's
// stream and valid until the op returns (the ATen layer hands out PyTorch allocations).
struct Scratch {
  void* (*allocate)(void* context, size_t bytes);
  void* context;
  void* get(size_t bytes) const { return allocate(context, bytes); }
};

struct ProductBackend {
  const char* name;
  const char* applies_to;  // when it applies, in words
  bool quantizes_activations;  // takes the float activations (ScaledProduct::x), not codes
  bool (*applies)(const ScaledProduct&);
  cudaError_t (*launch)(const ScaledProduct&, const Scratch&, cudaStream_t);
};

// Whether p starts on 16 bytes (the backends' vector loads and TMA copies need aligned rows).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The table, in order of preference; its last row applies to every product.
const ProductBackend* product_backends(size_t* count);

// "name: when it applies" of each row (build_info()).
std::vector<std::string> product_backend_names();

// The first backend that applies to p, or null: with codes (p.a), one that takes codes; without
// (p.a null, p.x set), one that quantizes the activations itself.
const ProductBackend* find_product_backend(const ScaledProduct& p);

// Runs the first backend that applies to p, which holds codes (M > 0 and N > 0).
cudaError_t launch_scaled_product(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);

// The outlier columns p's backend left over, from list entry `first` on, added to p.out on tensor
// cores (outlier_mma; the count is read on the device, so nothing runs when it is <= first).
// sub_a / sub_w: the backend's gathered buffers (launch_gather_outlier_columns), read instead
// when they hold every column; null: none. For fp16 and bf16 activations only: check
// outlier_mma_applies() first.
cudaError_t launch_outlier_rest(const ScaledProduct& p, int first, int sm_count, const Scratch& scratch,
                                cudaStream_t stream, const float* sub_a = nullptr, const float* sub_w = nullptr);

// The backends (one file each).
bool gemv_fused_applies(const ScaledProduct& p);
cudaError_t gemv_fused_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
bool gemv_dp4a_applies(const ScaledProduct& p);
cudaError_t gemv_dp4a_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
bool small_m_applies(const ScaledProduct& p);
cudaError_t small_m_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
// Rows the dequantized-activation backends serve at threshold > 0 (prefill sizes bound by the
// weight's bytes): dequantized_mma on any card from sm_80, sm90_dequantized on Hopper from 33 rows
// where dequantized_mma does not take the layer (rows too long for its wave of splits) and above
// it. Decode sizes keep the two-kernel paths above them (no allocation but the output).
constexpr int kDequantizedMmaMinRows = kSmallMRows + 1;
constexpr int kDequantizedMmaMaxRows = 64;
bool dequantized_mma_applies(const ScaledProduct& p);
cudaError_t dequantized_mma_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
constexpr int kDequantizedMinRows = 33;
constexpr int kDequantizedMaxRows = 128;
bool sm90_dequantized_applies(const ScaledProduct& p);
cudaError_t sm90_dequantized_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
bool sm90_gemm_applies(const ScaledProduct& p);
cudaError_t sm90_gemm_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);
bool int32_gemm_applies(const ScaledProduct& p);
cudaError_t int32_gemm_launch(const ScaledProduct& p, const Scratch& scratch, cudaStream_t stream);

}  // namespace llmint8::cuda
