// The CPU int8 product and its dequantizing epilogue (see int8_gemm_cpu.h).
#include "cpu/int8_gemm_cpu.h"

#include "cpu/kernels/int8_gemm.h"
#include "cpu/kernels/int8_gemv.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace llmint8::cpu {

namespace {

// Weight rows per GEMV tile: the tile's int32 and float outputs (4 rows x 64) stay in L1 and
// its weight rows in L2 while the epilogue reads them back.
constexpr int64_t kGemvTile = 64;
// Up to this many outlier columns (a few are the norm) each tile gathers their weight codes
// and adds their product in a fixed order: the same bits on every path and in every process.
// Past it one float GEMM (torch's, MKL) computes the term: fast, but MKL's results may change
// in the last bit with memory alignment.
constexpr int64_t kInlineOutlierCols = 64;

bool onednn_usable() {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn() &&
         kernels::best_gemv_isa() != kernels::GemvIsa::kPlain;
}

void portable_matmul_into(const int8_t* a, const int8_t* b, int64_t M, int64_t K, int64_t N, int32_t* out) {
  at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
    kernels::int8_gemm(a, b, M, K, n0, n1, [&](int64_t m, int64_t n, int32_t acc) { out[m * N + n] = acc; });
  });
}

// (A_out @ B[:, cols]^T) as fp32 [M, N] through torch's float GEMM. The gather reads n_out
// bytes of every weight row; ATen's index_select along dim 1 takes ten times longer.
at::Tensor outlier_matmul(const at::Tensor& A_out, const at::Tensor& B, const at::Tensor& cols) {
  const int64_t N = B.size(0), K = B.size(1), n_out = cols.numel();
  auto G = at::empty({n_out, N}, A_out.options());  // [n_out, N] fp32: B[:, cols]^T
  const int8_t* b = B.const_data_ptr<int8_t>();
  const int64_t* col_idx = cols.const_data_ptr<int64_t>();
  float* g = G.data_ptr<float>();
  at::parallel_for(0, N, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n_out)), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* w = b + n * K;  // 64-bit offsets: N * K may pass 2^31
      for (int64_t j = 0; j < n_out; ++j) g[j * N + n] = static_cast<float>(w[col_idx[j]]);
    }
  });
  return at::mm(A_out, G);
}

// The int32 product for more than kGemvMaxRows rows, with the strides of element (m, n).
struct Int32Product {
  at::Tensor acc;
  int64_t stride_m, stride_n;
};

Int32Product full_product(Int8GemmPath path, const at::Tensor& A2, const at::Tensor& B) {
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  if (path == Int8GemmPath::kOneDnn) {
    // Weights as oneDNN's A operand: C^T [N, M] = B @ A2^T ran 1.0-2.5x faster than A2 @ B^T
    // for M = 5..2048 on Llama-2-7B layer shapes (Zen 5, torch 2.11 with oneDNN 3.10), never slower.
    // ATen reads the layout from the strides; with K == 1 those of A2.t() (1, 1) read both ways
    // and it took the wrong one (wrong products), so that case gets row-major strides.
    const auto a_t = K == 1 ? A2.view({1, M}) : A2.t();  // [K, M]
    return {at::_int_mm(B, a_t), 1, M};
  }
  auto acc = at::empty({M, N}, A2.options().dtype(at::kInt));
  portable_matmul_into(A2.const_data_ptr<int8_t>(), B.const_data_ptr<int8_t>(), M, K, N, acc.data_ptr<int32_t>());
  return {acc, N, 1};
}

}  // namespace

Int8GemmPath int8_gemm_path(int64_t M) {
  if (M <= kernels::kGemvMaxRows) return Int8GemmPath::kGemv;
  return onednn_usable() ? Int8GemmPath::kOneDnn : Int8GemmPath::kPortable;
}

void int8_matmul_into(const at::Tensor& A2, const at::Tensor& B, int32_t* out) {
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  if (M == 0 || N == 0) return;
  const int8_t* a = A2.const_data_ptr<int8_t>();
  const int8_t* b = B.const_data_ptr<int8_t>();
  switch (int8_gemm_path(M)) {
    case Int8GemmPath::kGemv: {
      const auto isa = kernels::best_gemv_isa();
      at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
        kernels::int8_gemv_s8s8_s32(isa, a, M, b, K, n0, n1, out + n0, N);
      });
      return;
    }
    case Int8GemmPath::kOneDnn:
      at::from_blob(out, {M, N}, A2.options().dtype(at::kInt)).copy_(full_product(Int8GemmPath::kOneDnn, A2, B).acc.t());
      return;
    case Int8GemmPath::kPortable:
      portable_matmul_into(a, b, M, K, N, out);
      return;
  }
}

at::Tensor int8_dequant_matmul(const at::Tensor& A2, const at::Tensor& B, const at::Tensor& row_stats,
                               const at::Tensor& col_stats, const at::Tensor& A_out, const at::Tensor& cols,
                               const at::Tensor& bias, at::ScalarType dtype) {
  const int64_t M = A2.size(0), K = A2.size(1), N = B.size(0);
  const int64_t n_out = cols.defined() ? cols.numel() : 0;
  auto Y = at::empty({M, N}, A2.options().dtype(dtype));
  if (M == 0 || N == 0) return Y;
  const auto path = int8_gemm_path(M);
  const bool inline_outliers = n_out > 0 && n_out <= kInlineOutlierCols;
  const auto outlier = (n_out > 0 && !inline_outliers) ? outlier_matmul(A_out, B, cols) : at::Tensor();
  const float* a_out = inline_outliers ? A_out.const_data_ptr<float>() : nullptr;
  const int64_t* col_idx = inline_outliers ? cols.const_data_ptr<int64_t>() : nullptr;

  const int8_t* a = A2.const_data_ptr<int8_t>();
  const int8_t* b = B.const_data_ptr<int8_t>();
  const float* row = row_stats.const_data_ptr<float>();
  const float* col = col_stats.const_data_ptr<float>();
  const float* bias_ptr = bias.defined() ? bias.const_data_ptr<float>() : nullptr;
  const float* outlier_ptr = outlier.defined() ? outlier.const_data_ptr<float>() : nullptr;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "int8_dequant_matmul", [&] {
    scalar_t* y = Y.data_ptr<scalar_t>();
    if (path == Int8GemmPath::kGemv) {
      // Fused: each tile of weight rows is multiplied, its outlier term gathered from the same
      // (cached) rows, and written out dequantized before the next tile is read.
      const auto isa = kernels::best_gemv_isa();
      at::parallel_for(0, N, kernels::gemm_grain(M, K), [&](int64_t n0, int64_t n1) {
        int32_t acc[kernels::kGemvMaxRows * kGemvTile];
        float w_out[kInlineOutlierCols * kGemvTile], term[kGemvTile];
        for (int64_t t0 = n0; t0 < n1; t0 += kGemvTile) {
          const int64_t len = std::min(n1, t0 + kGemvTile) - t0;
          kernels::int8_gemv_s8s8_s32(isa, a, M, b, K, t0, t0 + len, acc, kGemvTile);
          if (a_out) kernels::gather_outlier_weights(b, K, col_idx, n_out, t0, len, w_out, kGemvTile);
          for (int64_t m = 0; m < M; ++m) {
            if (a_out) kernels::outlier_row(a_out + m * n_out, w_out, n_out, len, kGemvTile, term);
            const float* o = a_out ? term : outlier_ptr ? outlier_ptr + m * N + t0 : nullptr;
            kernels::dequantize_row(acc + m * kGemvTile, row[m], col + t0, o, bias_ptr ? bias_ptr + t0 : nullptr,
                                    len, y + m * N + t0);
          }
        }
      });
    } else {
      // One pass over the int32 product in tiles of kGemvTile columns: a tile of every row
      // (strided in the transposed oneDNN product) is copied out and dequantized.
      const auto product = full_product(path, A2, B);
      const int32_t* acc = product.acc.const_data_ptr<int32_t>();
      const int64_t sm = product.stride_m, sn = product.stride_n;
      at::parallel_for(0, N, std::max<int64_t>(kGemvTile, 32768 / M), [&](int64_t n0, int64_t n1) {
        int32_t tile[kGemvTile];
        float w_out[kInlineOutlierCols * kGemvTile], term[kGemvTile];
        for (int64_t t0 = n0; t0 < n1; t0 += kGemvTile) {
          const int64_t len = std::min(n1, t0 + kGemvTile) - t0;
          if (a_out) kernels::gather_outlier_weights(b, K, col_idx, n_out, t0, len, w_out, kGemvTile);
          for (int64_t m = 0; m < M; ++m) {
            for (int64_t j = 0; j < len; ++j) tile[j] = acc[m * sm + (t0 + j) * sn];
            if (a_out) kernels::outlier_row(a_out + m * n_out, w_out, n_out, len, kGemvTile, term);
            const float* o = a_out ? term : outlier_ptr ? outlier_ptr + m * N + t0 : nullptr;
            kernels::dequantize_row(tile, row[m], col + t0, o, bias_ptr ? bias_ptr + t0 : nullptr, len,
                                    y + m * N + t0);
          }
        }
      });
    }
  });
  return Y;
}

}  // namespace llmint8::cpu
