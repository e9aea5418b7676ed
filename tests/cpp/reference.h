// Independent reference of LLM.int8() for the C++ tests: plain ATen ops, the
// spec's fp32 recipe for codes and stats, float64 for every product.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <string>
#include <vector>

namespace llmint8::testing {

struct Quantized {
  at::Tensor codes;  // int8 [rows, K]
  at::Tensor stats;  // fp32 [rows]
  at::Tensor mask;   // bool [K], outlier columns
};

inline at::Tensor outlier_mask(const at::Tensor& A2, double threshold) {
  if (threshold == 0.0) return at::zeros({A2.size(1)}, at::kBool);
  return (A2.to(at::kFloat).abs() >= threshold).any(0);
}

// Row-wise quantization of A [rows, K] per SPEC section 1.
inline Quantized quantize_rows(const at::Tensor& A, double threshold) {
  const auto A2 = A.reshape({-1, A.size(-1)}).to(at::kFloat);
  const auto mask = outlier_mask(A2, threshold);
  const auto kept = A2.masked_fill(mask, 0.0);
  const auto stats = A2.size(1) == 0 ? at::zeros({A2.size(0)}) : kept.abs().amax(1);
  const auto usable = at::isfinite(stats) & (stats > 0);
  const auto safe = at::where(usable, stats, at::ones_like(stats)).to(at::kDouble);
  const auto scale = at::where(usable, (127.0 / safe).to(at::kFloat), at::zeros_like(stats));
  auto q = at::round(kept * scale.unsqueeze(1)).clamp(-127, 127);
  q = at::where(usable.unsqueeze(1), q, at::zeros_like(q)).masked_fill(mask, 0.0);
  return {q.to(at::kChar), stats, mask};
}

// float64 W = CB * SCB / 127.
inline at::Tensor dequantize_weight(const at::Tensor& CB, const at::Tensor& SCB) {
  return CB.to(at::kDouble) * SCB.to(at::kDouble).unsqueeze(1) / 127.0;
}

// float64 LLM.int8() forward of SPEC section 2 for A [rows, K].
inline at::Tensor int8_linear(const at::Tensor& A, const at::Tensor& CB, const at::Tensor& SCB,
                              const at::Tensor& bias, double threshold) {
  const auto q = quantize_rows(A, threshold);
  const auto A2 = A.reshape({-1, A.size(-1)}).to(at::kDouble);
  auto out = q.codes.to(at::kDouble).mm(CB.to(at::kDouble).t()) * q.stats.to(at::kDouble).unsqueeze(1) *
             SCB.to(at::kDouble).unsqueeze(0) / (127.0 * 127.0);
  const auto cols = at::nonzero(q.mask).flatten();
  out = out + A2.index_select(1, cols).mm(dequantize_weight(CB, SCB).index_select(1, cols).t());
  if (bias.defined()) out = out + bias.to(at::kDouble);
  return out;
}

inline double rel_err(const at::Tensor& out, const at::Tensor& ref) {
  if (ref.numel() == 0) return 0.0;
  const auto r = ref.to(at::kDouble);
  return ((out.to(at::kDouble) - r).norm() / r.norm().clamp_min(1e-300)).item<double>();
}

// out is as close to the float64 reference as the rounding of its own dtype allows.
inline bool matches_reference(const at::Tensor& out, const at::Tensor& ref64) {
  const double baseline = rel_err(ref64.to(out.scalar_type()), ref64);
  return rel_err(out, ref64) <= 2.0 * baseline + 16 * 1.1920929e-07;
}

// Activations x ~ N(0, 1) with planted outlier columns of magnitude about 30.
inline at::Tensor activations(int64_t rows, int64_t K, at::ScalarType dtype, const std::vector<int64_t>& outlier_cols,
                              uint64_t seed = 0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto x = at::randn({rows, K}, gen);
  const auto sign = at::randint(0, 2, {rows}, gen).to(at::kFloat) * 2 - 1;
  for (int64_t c : outlier_cols) x.select(1, c).add_(sign * 30.0);
  return x.to(dtype);
}

// The message of the c10::Error that f throws, or "<no error>".
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "<no error>";
}

inline bool contains_all(const std::string& message, const std::vector<std::string>& fragments) {
  for (const auto& f : fragments) {
    if (message.find(f) == std::string::npos) return false;
  }
  return true;
}

}  // namespace llmint8::testing
