// CUDA implementations of every llmint8 op: argument checks, device guard,
// current stream, then the torch-free launchers of cuda/*.cu, with the launch
// error checked after each one. Registered under the CUDA dispatch key.
#include "cuda/float_kind.h"
#include "cuda/int8_gemm_cublaslt.h"
#include "cuda/launchers.h"
#include "cuda/scaled_product.h"
#include "op_checks.h"
#include "tensor_utils.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <utility>
#include <vector>

namespace llmint8::cuda {

namespace {

cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }

bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(s, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Scratch for the backends from PyTorch's caching allocator: stream-ordered, freed when the
// op returns, and inside a CUDA graph capture taken from the graph's private pool.
class TensorScratch {
 public:
  explicit TensorScratch(const at::Device& device) : device_(device) {}
  Scratch view() { return Scratch{&TensorScratch::allocate, this}; }
  void* get(size_t bytes) { return allocate(this, bytes); }

 private:
  static void* allocate(void* self, size_t bytes) {
    auto* s = static_cast<TensorScratch*>(self);
    s->held_.push_back(at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte).device(s->device_)));
    return s->held_.back().data_ptr();
  }
  at::Device device_;
  std::vector<at::Tensor> held_;
};

// Device memory of the layer op kept per device: the decode path writes its codes, stats and
// outlier list there (no allocation per call), and the outlier search keeps its mask and
// ticket there (zero between calls: the kernel clears them). It comes from cudaMalloc, not
// PyTorch's allocator, so that it never lands in a CUDA graph's private pool (torch.compile's
// CUDA graph trees warm up inside it and refuse allocations that outlive a call). A call on
// another stream than the last one first waits for that stream. Under a CUDA graph capture a
// fresh zeroed block from the graph's pool is used instead, so that replays never share
// memory with eager calls.
struct LayerWorkspace {
  int8_t* codes;     // [kSmallMRows, K]
  float* stats;      // [kSmallMRows]
  int32_t* cols;     // [K]
  int32_t* count;    // [1]
  uint8_t* mask;     // [K]
  uint32_t* ticket;  // [1]
};

int64_t round16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

int64_t workspace_bytes(int64_t K) {
  return round16(kSmallMRows * K) + round16(sizeof(float) * kSmallMRows) + round16(sizeof(int32_t) * K) + 16 +
         round16(K) + 16;
}

LayerWorkspace carve(uint8_t* base, int64_t K) {
  LayerWorkspace w{};
  w.codes = reinterpret_cast<int8_t*>(base);
  base += round16(kSmallMRows * K);
  w.stats = reinterpret_cast<float*>(base);
  base += round16(sizeof(float) * kSmallMRows);
  w.cols = reinterpret_cast<int32_t*>(base);
  base += round16(sizeof(int32_t) * K);
  w.count = reinterpret_cast<int32_t*>(base);
  base += 16;
  w.mask = base;
  base += round16(K);
  w.ticket = reinterpret_cast<uint32_t*>(base);
  return w;
}

class DeviceWorkspace {
 public:
  LayerWorkspace acquire(int device, int64_t K, cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (blocks_.empty() || capacity_ < K) {  // grows to the widest layer seen; older blocks stay (kernels may still use them)
      const int64_t capacity = std::max<int64_t>(K, 4096);
      void* base = nullptr;
      C10_CUDA_CHECK(cudaMalloc(&base, workspace_bytes(capacity)));
      C10_CUDA_CHECK(cudaMemsetAsync(base, 0, workspace_bytes(capacity), s));
      blocks_.push_back(base);
      capacity_ = capacity;
    }
    if (last_ != nullptr && last_ != s) {  // order after the other stream's use
      if (released_ == nullptr) C10_CUDA_CHECK(cudaEventCreateWithFlags(&released_, cudaEventDisableTiming));
      C10_CUDA_CHECK(cudaEventRecord(released_, last_));
      C10_CUDA_CHECK(cudaStreamWaitEvent(s, released_, 0));
    }
    last_ = s;
    return carve(static_cast<uint8_t*>(blocks_.back()), capacity_);
  }

 private:
  std::mutex mutex_;
  int64_t capacity_ = 0;
  std::vector<void*> blocks_;
  cudaStream_t last_ = nullptr;
  cudaEvent_t released_ = nullptr;
};

// outlier_search: the caller runs the outlier search, which expects its mask and ticket zero.
LayerWorkspace layer_workspace(const at::Device& device, int64_t K, bool outlier_search, std::vector<at::Tensor>& held) {
  const cudaStream_t s = stream();
  if (capturing(s)) {  // only what must start zero is cleared: every replay runs the clearing again
    held.push_back(at::empty({workspace_bytes(K)}, at::TensorOptions().dtype(at::kByte).device(device)));
    const LayerWorkspace w = carve(held.back().data_ptr<uint8_t>(), K);
    if (outlier_search) C10_CUDA_CHECK(cudaMemsetAsync(w.mask, 0, round16(K) + 16, s));  // mask, then ticket
    return w;
  }
  static std::array<DeviceWorkspace, 64> workspaces;  // one per device, for the process' lifetime
  TORCH_CHECK(device.index() >= 0 && device.index() < 64, "llmint8: CUDA device index ", device.index(),
              " past the 64 this library supports");
  return workspaces[device.index()].acquire(device.index(), K, s);
}

// Device pointers of quantized activation rows and their outlier columns (cols/count null
// without outliers).
struct QuantizedRows {
  const int8_t* codes;
  const float* stats;
  const int32_t* cols;
  const int32_t* count;
};

// Quantizes A2 [rows, K]: decode sizes in one launch, larger inputs by an outlier search then
// a row pass. codes/stats: where to write them (null: the workspace, for decode sizes only).
QuantizedRows quantize(const at::Tensor& A2, double threshold, int8_t* codes, float* stats, std::vector<at::Tensor>& held) {
  const int64_t rows = A2.size(0), K = A2.size(1);
  const auto kind = float_kind(A2.scalar_type());
  const float t = static_cast<float>(threshold);
  const bool outlier_search = threshold > 0.0 && rows > kSmallMRows;  // (the decode quantizer needs none)
  const LayerWorkspace w = layer_workspace(A2.device(), K, outlier_search, held);
  int32_t* cols = threshold > 0.0 ? w.cols : nullptr;
  int32_t* count = threshold > 0.0 ? w.count : nullptr;
  if (rows >= 1 && rows <= kSmallMRows) {
    codes = codes != nullptr ? codes : w.codes;
    stats = stats != nullptr ? stats : w.stats;
    const int cluster = small_m_quantize_cluster_blocks(A2.device().index(), rows, K);
    C10_CUDA_CHECK(launch_quantize_small_m(kind, A2.const_data_ptr(), rows, K, t, codes, stats, cols, count, cluster,
                                           stream()));
    return {codes, stats, cols, count};
  }
  if (threshold > 0.0) {
    C10_CUDA_CHECK(launch_find_outlier_columns(kind, A2.const_data_ptr(), rows, K, t, w.mask, w.ticket, cols, count,
                                               stream()));
  }
  C10_CUDA_CHECK(launch_quantize_rows(kind, A2.const_data_ptr(), rows, K, cols, count, codes, stats, stream()));
  return {codes, stats, cols, count};
}

// The outlier columns as the public ops report them: sorted int64 indices (reads the count: syncs).
at::Tensor listed_columns(const QuantizedRows& q, const at::Device& device) {
  int32_t n = 0;
  C10_CUDA_CHECK(cudaMemcpyAsync(&n, q.count, sizeof(n), cudaMemcpyDeviceToHost, stream()));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream()));
  auto cols = at::empty({n}, at::TensorOptions().dtype(at::kInt).device(device));
  if (n > 0) {
    C10_CUDA_CHECK(cudaMemcpyAsync(cols.data_ptr<int32_t>(), q.cols, sizeof(int32_t) * n, cudaMemcpyDeviceToDevice,
                                   stream()));
  }
  return cols.to(at::kLong);
}

// The backend table's arguments for the codes q (codes null: the layer op's activations, set
// by the caller in ScaledProduct::x) and the weight. The contiguous weight, scales and bias they
// point into are kept in `held` until the launch.
ScaledProduct product_arguments(const QuantizedRows& q, int64_t M, int64_t K, const at::Tensor& CB,
                                const at::Tensor& SCB, const std::optional<at::Tensor>& bias,
                                const OutlierTerm* outliers, at::Tensor& out, std::vector<at::Tensor>& held) {
  const auto cb = CB.contiguous(), scb = SCB.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  held.insert(held.end(), {cb, scb, b});
  return ScaledProduct{q.codes,
                       q.stats,
                       cb.const_data_ptr<int8_t>(),
                       scb.const_data_ptr<float>(),
                       b.defined() ? b.const_data_ptr() : nullptr,
                       b.defined() ? float_kind(b.scalar_type()) : FloatKind::f32,
                       outliers,
                       M,
                       CB.size(0),
                       K,
                       float_kind(out.scalar_type()),
                       out.data_ptr(),
                       out.device().index()};
}

// out [M, N] = the LLM.int8() product of q and (CB, SCB) with its epilogue, through the
// backend table (scaled_product.cpp).
void scaled_product(const QuantizedRows& q, int64_t M, int64_t K, const at::Tensor& CB, const at::Tensor& SCB,
                    const std::optional<at::Tensor>& bias, const OutlierTerm* outliers, at::Tensor& out,
                    TensorScratch& scratch) {
  if (M == 0 || CB.size(0) == 0) return;
  std::vector<at::Tensor> held;
  const auto p = product_arguments(q, M, K, CB, SCB, bias, outliers, out, held);
  C10_CUDA_CHECK(launch_scaled_product(p, scratch.view(), stream()));
}

// The whole layer op by a backend that quantizes the activations itself (decode sizes: one
// kernel); false where none applies.
bool fused_layer_product(const at::Tensor& A2, double threshold, const at::Tensor& CB, const at::Tensor& SCB,
                         const std::optional<at::Tensor>& bias, at::Tensor& out, TensorScratch& scratch) {
  std::vector<at::Tensor> held;
  auto p = product_arguments(QuantizedRows{}, A2.size(0), A2.size(1), CB, SCB, bias, nullptr, out, held);
  p.x = A2.const_data_ptr();
  p.x_kind = float_kind(A2.scalar_type());
  p.threshold = static_cast<float>(threshold);
  const ProductBackend* backend = find_product_backend(p);
  if (backend == nullptr) return false;
  C10_CUDA_CHECK(backend->launch(p, scratch.view(), stream()));
  return true;
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_vectorwise_quant_cuda(const at::Tensor& A,
                                                                                           double threshold) {
  op_checks::vectorwise_quant("int8_vectorwise_quant", A, threshold);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  auto CA = at::empty(A2.sizes(), A.options().dtype(at::kChar));
  auto SCA = at::empty({A2.size(0)}, A.options().dtype(at::kFloat));
  std::vector<at::Tensor> held;
  const auto q = quantize(A2, threshold, CA.data_ptr<int8_t>(), SCA.data_ptr<float>(), held);
  // The columns' count sizes an output: this public op syncs, as bitsandbytes' does (int8_linear does not).
  std::optional<at::Tensor> cols;
  if (threshold > 0.0) cols = listed_columns(q, A.device());
  return {CA.view(A.sizes()), SCA, cols};
}

at::Tensor int8_vectorwise_dequant_cuda(const at::Tensor& A, const at::Tensor& stats) {
  op_checks::vectorwise_dequant(A, stats);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const auto s = stats.contiguous();
  auto out = at::empty(A2.sizes(), A.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_dequantize_rows(A2.const_data_ptr<int8_t>(), s.const_data_ptr<float>(), A2.size(0),
                                        A2.size(1), out.data_ptr<float>(), stream()));
  return out.view(A.sizes());
}

void int8_gemm_into(const at::Tensor& A2, const at::Tensor& B, int32_t* C) {
  TensorScratch scratch(A2.device());
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  void* workspace = M > 0 && N > 0 && K > 0 ? scratch.get(kCublasLtWorkspaceBytes) : nullptr;
  C10_CUDA_CHECK(launch_int8_gemm_s32(A2.const_data_ptr<int8_t>(), B.const_data_ptr<int8_t>(), C, M, N, K, workspace,
                                      stream()));
}

at::Tensor int8_linear_matmul_cuda(const at::Tensor& A, const at::Tensor& B) {
  op_checks::linear_matmul("int8_linear_matmul", A, B);
  const c10::cuda::CUDAGuard guard(A.device());
  auto out = at::empty(output_shape(A, B.size(0)), A.options().dtype(at::kInt));
  int8_gemm_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
  return out;
}

void int8_linear_matmul_out_cuda(const at::Tensor& A, const at::Tensor& B, at::Tensor& out) {
  op_checks::linear_matmul_out(A, B, out);
  const c10::cuda::CUDAGuard guard(A.device());
  if (out.is_contiguous()) {
    int8_gemm_into(as_rows(A), B.contiguous(), out.data_ptr<int32_t>());
  } else {
    out.copy_(int8_linear_matmul_cuda(A, B));
  }
}

at::Tensor int8_mm_dequant_cuda(const at::Tensor& A, const at::Tensor& row_stats, const at::Tensor& col_stats,
                                std::optional<at::ScalarType> dtype, const std::optional<at::Tensor>& bias) {
  op_checks::mm_dequant(A, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_mm_dequant", dtype, at::kHalf);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto acc = as_rows(A);
  const auto row = row_stats.contiguous(), col = col_stats.contiguous();
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty(acc.sizes(), A.options().dtype(out_dtype));
  EpilogueArgs args{};
  args.acc = acc.const_data_ptr<int32_t>();
  args.M = acc.size(0);
  args.N = acc.size(1);
  args.row = row.const_data_ptr<float>();
  args.col = col.const_data_ptr<float>();
  args.bias = b.defined() ? b.const_data_ptr() : nullptr;
  args.bias_kind = b.defined() ? float_kind(b.scalar_type()) : FloatKind::f32;
  args.out_kind = float_kind(out_dtype);
  args.out = out.data_ptr();
  C10_CUDA_CHECK(launch_dequantize_product(args, stream()));
  return out.view(A.sizes());
}

at::Tensor int8_scaled_mm_cuda(const at::Tensor& A, const at::Tensor& B, const at::Tensor& row_stats,
                               const at::Tensor& col_stats, const std::optional<at::Tensor>& bias,
                               std::optional<at::ScalarType> dtype) {
  op_checks::scaled_mm(A, B, row_stats, col_stats, bias);
  const auto out_dtype = op_checks::output_dtype("int8_scaled_mm", dtype, at::kHalf);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const auto row = row_stats.contiguous();
  auto out = at::empty({A2.size(0), B.size(0)}, A.options().dtype(out_dtype));
  TensorScratch scratch(A.device());
  const QuantizedRows q{A2.const_data_ptr<int8_t>(), row.const_data_ptr<float>(), nullptr, nullptr};
  scaled_product(q, A2.size(0), A2.size(1), B, col_stats, bias, nullptr, out, scratch);
  return out.view(output_shape(A, B.size(0)));
}

std::tuple<at::Tensor, std::optional<at::Tensor>> int8_mixed_scaled_mm_cuda(
    const at::Tensor& A, const at::Tensor& CA, const at::Tensor& CB, const at::Tensor& SCA, const at::Tensor& SCB,
    const std::optional<at::Tensor>& outlier_cols, const std::optional<at::Tensor>& bias) {
  op_checks::mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols, bias);
  const c10::cuda::CUDAGuard guard(A.device());
  const int64_t K = A.size(-1);
  const auto A2 = as_rows(A);
  const auto CA2 = as_rows(CA);
  const auto sca = SCA.contiguous();
  at::Tensor cols, count;
  std::optional<at::Tensor> sub_a;
  if (outlier_cols.has_value()) {
    check_outlier_cols_range("int8_mixed_scaled_mm", *outlier_cols, K);
    cols = outlier_cols->to(at::kInt).contiguous();
    count = at::full({1}, cols.numel(), A.options().dtype(at::kInt));
    sub_a = A2.index_select(1, *outlier_cols);
  }
  const OutlierTerm term{float_kind(A.scalar_type()), A2.const_data_ptr(),
                         cols.defined() ? cols.const_data_ptr<int32_t>() : nullptr,
                         count.defined() ? count.const_data_ptr<int32_t>() : nullptr};
  auto out = at::empty({A2.size(0), CB.size(0)}, A.options());
  TensorScratch scratch(A.device());
  const QuantizedRows q{CA2.const_data_ptr<int8_t>(), sca.const_data_ptr<float>(), nullptr, nullptr};
  scaled_product(q, A2.size(0), K, CB, SCB, bias, cols.defined() ? &term : nullptr, out, scratch);
  return {out.view(output_shape(A, CB.size(0))), sub_a};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> int8_double_quant_cuda(
    const at::Tensor& A, double threshold) {
  op_checks::vectorwise_quant("int8_double_quant", A, threshold);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const int64_t rows = A2.size(0), K = A2.size(1);
  auto CA = at::empty({rows, K}, A.options().dtype(at::kChar));
  auto row_stats = at::empty({rows}, A.options().dtype(at::kFloat));
  std::vector<at::Tensor> held;
  const auto q = quantize(A2, threshold, CA.data_ptr<int8_t>(), row_stats.data_ptr<float>(), held);
  auto CAt = at::empty({rows, K}, A.options().dtype(at::kChar));
  auto col_stats = at::empty({K}, A.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_quantize_columns(float_kind(A2.scalar_type()), A2.const_data_ptr(), rows, K, q.cols, q.count,
                                         CAt.data_ptr<int8_t>(), col_stats.data_ptr<float>(), stream()));
  std::optional<at::Tensor> cols;
  if (threshold > 0.0) cols = listed_columns(q, A.device());
  return {CA.view(A.sizes()), CAt.view(A.sizes()), row_stats, col_stats, cols};
}

// The layer op: no host synchronization at any threshold and, for decode sizes, no allocation
// beyond the output and one kernel (gemv_fused, M <= 2) or two (quantize_small_m, then the
// small-M product).
at::Tensor int8_linear_cuda(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                            const std::optional<at::Tensor>& bias, double threshold,
                            const std::optional<at::Tensor>& weight) {
  op_checks::int8_linear(A, CB, SCB, bias, threshold, weight);
  const c10::cuda::CUDAGuard guard(A.device());
  const auto A2 = as_rows(A);
  const int64_t M = A2.size(0), K = A2.size(1), N = CB.size(0);
  auto out = at::empty(output_shape(A, N), A.options());  // [..., N]: the kernels write it as [M, N]
  if (M == 0 || N == 0) return out;
  TensorScratch scratch(A.device());
  if (fused_layer_product(A2, threshold, CB, SCB, bias, out, scratch)) return out;
  std::vector<at::Tensor> held;
  int8_t* codes = nullptr;
  float* stats = nullptr;
  if (M > kSmallMRows) {
    codes = static_cast<int8_t*>(scratch.get(M * K));
    stats = static_cast<float*>(scratch.get(sizeof(float) * M));
  }
  const auto q = quantize(A2, threshold, codes, stats, held);
  const OutlierTerm term{float_kind(A.scalar_type()), A2.const_data_ptr(), q.cols, q.count};
  scaled_product(q, M, K, CB, SCB, bias, threshold > 0.0 ? &term : nullptr, out, scratch);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(llmint8, CUDA, m) {
  m.impl("int8_vectorwise_quant", &int8_vectorwise_quant_cuda);
  m.impl("int8_vectorwise_dequant", &int8_vectorwise_dequant_cuda);
  m.impl("int8_linear_matmul", &int8_linear_matmul_cuda);
  m.impl("int8_linear_matmul.out", &int8_linear_matmul_out_cuda);
  m.impl("int8_mm_dequant", &int8_mm_dequant_cuda);
  m.impl("int8_scaled_mm", &int8_scaled_mm_cuda);
  m.impl("int8_mixed_scaled_mm", &int8_mixed_scaled_mm_cuda);
  m.impl("int8_double_quant", &int8_double_quant_cuda);
  m.impl("int8_linear", &int8_linear_cuda);
}

}  // namespace llmint8::cuda
