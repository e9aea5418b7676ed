#include "untrusted.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>

namespace llmint8::untrusted {

namespace {

// Numbers are formatted here, not streamed into the message (see the note in checks.cpp).
std::string text(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", v);
  return buffer;
}

// bitsandbytes' names of its weight layouts; only "row" is what the codes here mean.
const char* const kWeightFormatNames[] = {"row", "col32", "col_turing", "col_ampere"};

}  // namespace

void fail(const std::string& file, const std::string& field, const std::string& expected, const std::string& actual) {
  TORCH_CHECK_VALUE(false, "'" + file + "': " + field + " must be " + expected + ", got " + actual);
}

void fail(const std::string& file, const std::string& what) { TORCH_CHECK_VALUE(false, "'" + file + "': " + what); }

uint64_t mul(uint64_t a, uint64_t b, const std::string& file, const std::string& field) {
  uint64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    fail(file, field, "a size below 2^64 bytes", std::to_string(a) + " x " + std::to_string(b) + " (overflow)");
  }
  return out;
}

uint64_t add(uint64_t a, uint64_t b, const std::string& file, const std::string& field) {
  uint64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    fail(file, field, "a size below 2^64 bytes", std::to_string(a) + " + " + std::to_string(b) + " (overflow)");
  }
  return out;
}

std::string entry_problem(const std::string& key, const std::string& expected, const std::string& actual) {
  return key + ": expected " + expected + ", got " + actual;
}

std::string entry_missing(const std::string& key) { return key + ": missing"; }

std::string entry_unexpected(const std::string& key) { return key + ": unexpected key"; }

std::string entry_scales_missing(const std::string& scb_key, const std::string& weight_key) {
  return scb_key + ": missing; an int8 " + weight_key + " needs its fp32 row scales";
}

std::string entry_scales_without_weight(const std::string& scb_key, const std::string& weight_key) {
  return scb_key + " given without " + weight_key;
}

std::string entry_scales_with_float_weight(const std::string& scb_key, const std::string& weight_key,
                                           const std::string& format_key) {
  return scb_key + " given with a float " + weight_key + ": SCB holds the row scales of int8 codes, so this is a " +
         "quantized checkpoint whose " + weight_key + " is not quantized (or a float state dict with a stray SCB). " +
         "Load the int8 codes saved with this SCB, or drop '" + scb_key + "' and '" + format_key +
         "' to load the float weight (quantized on the move)";
}

std::string entry_weight_format(const std::string& key, const at::Tensor& format) {
  // An integer scalar; a float one is not converted (NaN to integer is undefined).
  const bool integer = !format.is_floating_point() && !format.is_complex() && format.scalar_type() != at::kBool;
  if (format.numel() != 1) return entry_problem(key, "weight_format 0 (row)", shape_text(format.sizes()) + " values");
  if (!integer) return entry_problem(key, "weight_format 0 (row)", text(format.to(at::kDouble).item<double>()));
  const int64_t code = format.to(at::kLong).item<int64_t>();
  if (code == 0) return "";
  if (code >= 1 && code <= 3) {
    return key + ": weight_format " + std::to_string(code) + " (" + kWeightFormatNames[code] +
           ") is a legacy tiled layout; only 0 (row) is supported: re-save the checkpoint with bitsandbytes >= 0.45";
  }
  return entry_problem(key, "weight_format 0 (row)", std::to_string(code));
}

std::string shape_text(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void allocation_failed(const std::string& file, const std::string& what, const std::string& cause) {
  fail(file, "cannot allocate " + what + ": " + cause);
}

namespace {

// Whether no value has an exponent of all ones (inf or nan): one pass over the bits, no temporaries.
template <typename Bits>
bool exponents_finite(const at::Tensor& t, Bits exponent) {
  const auto* bits = static_cast<const Bits*>(t.const_data_ptr());
  std::atomic<bool> finite{true};
  at::parallel_for(0, t.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    bool bad = false;
    for (int64_t i = begin; i < end; ++i) bad |= (bits[i] & exponent) == exponent;
    if (bad) finite = false;
  });
  return finite;
}

// Whether every value is finite: by the bits for contiguous CPU tensors of the usual float types
// (a loader's case: as fast as memory), else by slices, whose masks stay small.
bool all_finite(const at::Tensor& flat) {
  if (flat.device().is_cpu() && flat.is_contiguous()) {
    switch (flat.scalar_type()) {
      case at::kHalf: return exponents_finite<uint16_t>(flat, 0x7C00);
      case at::kBFloat16: return exponents_finite<uint16_t>(flat, 0x7F80);
      case at::kFloat: return exponents_finite<uint32_t>(flat, 0x7F800000u);
      case at::kDouble: return exponents_finite<uint64_t>(flat, 0x7FF0000000000000ull);
      default: break;
    }
  }
  constexpr int64_t kSlice = int64_t{1} << 20;
  for (int64_t begin = 0; begin < flat.numel(); begin += kSlice) {
    if (!at::isfinite(flat.narrow(0, begin, std::min(kSlice, flat.numel() - begin))).all().item<bool>()) return false;
  }
  return true;
}

}  // namespace

std::string non_finite(const at::Tensor& t) {
  if (!t.is_floating_point() || t.numel() == 0) return "";
  const auto flat = t.detach().reshape({-1});
  // Whole-tensor masks would cost more memory than a loader may use beside the model: the
  // message is worked out only once a value is known to be bad.
  if (all_finite(flat)) return "";
  const auto bad = at::isfinite(flat).logical_not_();
  const int64_t count = bad.sum().item<int64_t>();
  if (count == 0) return "";
  int64_t at = bad.nonzero()[0][0].item<int64_t>();
  const double value = flat[at].item<double>();
  std::string index;
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    index = std::to_string(at % t.size(d)) + (index.empty() ? "" : ", ") + index;
    at /= t.size(d);
  }
  return std::to_string(count) + " non-finite value" + (count > 1 ? "s" : "") + " (first: " + text(value) + " at [" +
         index + "])";
}

void check_finite(const std::string& file, const std::string& tensor, const at::Tensor& t) {
  const auto problem = non_finite(t);
  if (!problem.empty()) fail(file, "tensor '" + tensor + "'", "finite", problem);
}

}  // namespace llmint8::untrusted
