// Files from outside are untrusted. Every loader checks them through these helpers: sizes
// multiplied and added with overflow checks before anything is allocated, allocation failures
// reported as errors, non-finite values found by tensor name, and one message table (below)
// that names the file, the field, the expected and the actual value. The readers of files
// (csrc/io/: mapped files, JSON, safetensors, llama2.c, config.json) build on it.
// Python: python/llmint8/_untrusted.py, in the same words.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <new>
#include <string>

namespace llmint8::untrusted {

// The message table of files (c10::ValueError, ValueError in Python):
//   "'<file>': <field> must be <expected>, got <actual>"
[[noreturn]] void fail(const std::string& file, const std::string& field, const std::string& expected,
                       const std::string& actual);
//   "'<file>': <what>" for problems that are not one field's value.
[[noreturn]] void fail(const std::string& file, const std::string& what);

// The message table of checkpoint entries (load_state_dict gathers them into one error):
//   "<key>: expected <expected>, got <actual>"
std::string entry_problem(const std::string& key, const std::string& expected, const std::string& actual);
//   "<key>: missing", "<key>: unexpected key"
std::string entry_missing(const std::string& key);
std::string entry_unexpected(const std::string& key);
//   An int8 layer's scales missing, given without its codes, or given with a float weight.
std::string entry_scales_missing(const std::string& scb_key, const std::string& weight_key);
std::string entry_scales_without_weight(const std::string& scb_key, const std::string& weight_key);
std::string entry_scales_with_float_weight(const std::string& scb_key, const std::string& weight_key,
                                           const std::string& format_key);
//   "" for a weight_format of 0 (row); else what is wrong, naming bitsandbytes' legacy layouts.
std::string entry_weight_format(const std::string& key, const at::Tensor& format);
// Expected texts of more than one check.
constexpr const char* kInt8Codes = "int8 codes in [-127, 127]";
constexpr const char* kFiniteValues = "finite values";
// "[a, b]" of a shape.
std::string shape_text(at::IntArrayRef shape);

// a * b and a + b, or an error naming the field when the result passes 2^64.
uint64_t mul(uint64_t a, uint64_t b, const std::string& file, const std::string& field);
uint64_t add(uint64_t a, uint64_t b, const std::string& file, const std::string& field);

// make(), with an allocation failure (std::bad_alloc, or the plain c10::Error that LibTorch's
// allocators raise) reported as an error naming the file and what was being allocated.
// The typed c10 errors of checks (value, index, type) pass through unchanged.
[[noreturn]] void allocation_failed(const std::string& file, const std::string& what, const std::string& cause);
template <typename Make>
auto allocating(const std::string& file, const std::string& what, Make&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const c10::ValueError&) {
    throw;
  } catch (const c10::IndexError&) {
    throw;
  } catch (const c10::TypeError&) {
    throw;
  } catch (const std::bad_alloc&) {
    allocation_failed(file, what, "out of memory");
  } catch (const c10::Error& e) {
    allocation_failed(file, what, e.what_without_backtrace());
  }
}

// "" when every value of t is finite, else "N non-finite values (first: nan at [i, j])".
std::string non_finite(const at::Tensor& t);
// Fails naming the file and the tensor unless every value of t is finite.
void check_finite(const std::string& file, const std::string& tensor, const at::Tensor& t);

}  // namespace llmint8::untrusted
