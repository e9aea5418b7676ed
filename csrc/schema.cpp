// The only TORCH_LIBRARY of llmint8: every operator's schema, with its contract.
// Schemas follow bitsandbytes' (names, argument order, defaults) so ported code
// keeps working. Shapes: A [..., K] is flattened to rows x K; weights are [N, K].
#include <torch/library.h>

TORCH_LIBRARY(llmint8, m) {
  // Fake kernels of the two ops whose output size depends on the data
  // (outlier_cols) live in Python, where they can allocate unbacked sizes.
  m.set_python_module("llmint8._fake");

  // Row-wise absmax quantization of A [..., K] (fp16/bf16/fp32) -> CA int8 like
  // A, SCA fp32 [rows], outlier_cols (None when threshold == 0, else sorted int64
  // columns with |A| >= threshold in some row; they are 0 in CA and left out of SCA).
  m.def("int8_vectorwise_quant(Tensor A, float threshold=0.0) -> (Tensor, Tensor, Tensor?)");
  // fp32 A[r, k] * stats[r] / 127 for int8 A [..., K] and fp32 stats [rows].
  m.def("int8_vectorwise_dequant(Tensor A, Tensor stats) -> Tensor");
  // int32 A[..., K] @ B[N, K]^T for int8 A and B, exact for every K up to 133,144.
  m.def("int8_linear_matmul(Tensor A, Tensor B) -> Tensor");
  // Same product written into out (int32 [..., N]); mutates out, returns nothing as in bitsandbytes.
  m.def("int8_linear_matmul.out(Tensor A, Tensor B, Tensor(a!) out) -> ()");
  // A int32 [..., N] * row_stats[r] * col_stats[n] / 127^2 + bias in fp32, cast to dtype (default fp16).
  m.def(
      "int8_mm_dequant(Tensor A, Tensor row_stats, Tensor col_stats, ScalarType? dtype=None, Tensor? bias=None) "
      "-> Tensor");
  // int8_linear_matmul then int8_mm_dequant, fused: no int32 [..., N] round trip.
  m.def(
      "int8_scaled_mm(Tensor A, Tensor B, Tensor row_stats, Tensor col_stats, Tensor? bias=None, "
      "ScalarType? dtype=None) -> Tensor");
  // LLM.int8() forward from an already quantized A (CA, SCA, outlier_cols): int8 product of the
  // quantized part plus A[:, outlier_cols] @ (CB[:, outlier_cols] * SCB / 127)^T in floating point.
  // Returns Y in A's dtype and A[:, outlier_cols] (None without outlier_cols).
  m.def(
      "int8_mixed_scaled_mm(Tensor A, Tensor CA, Tensor CB, Tensor SCA, Tensor SCB, Tensor? outlier_cols=None, "
      "Tensor? bias=None) -> (Tensor, Tensor?)");
  // Row-wise and column-wise quantization of A [..., K] in one call (training path):
  // (CA, CAt, row_stats fp32 [rows], col_stats fp32 [K], outlier_cols). CAt has A's shape;
  // outlier columns are 0 in both and their col_stats are 0.
  m.def("int8_double_quant(Tensor A, float threshold=0.0) -> (Tensor, Tensor, Tensor, Tensor, Tensor?)");
  // The layer op of Linear8bitLt: Y [..., N] in A's dtype = LLM.int8()(A, CB int8 [N, K], SCB fp32 [N])
  // + bias. Never synchronizes with the host, so it can be graph-captured and compiled. `weight`
  // (has_fp16_weights mode) is not read by the forward; it only receives the gradient dY^T A.
  m.def(
      "int8_linear(Tensor A, Tensor CB, Tensor SCB, Tensor? bias=None, float threshold=0.0, "
      "Tensor? weight=None) -> Tensor");
}
