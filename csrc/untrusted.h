// Files from outside are untrusted. Every loader reads them through these helpers:
// regular files only, sizes checked with overflow-safe arithmetic before anything is
// allocated, allocation failures and JSON of the wrong type reported as errors, and
// one message format that names the file, the field, the expected and the actual value.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <new>
#include <optional>
#include <string>
#include <vector>

namespace llmint8::untrusted {

// The message table (c10::ValueError, ValueError in Python):
//   "'<file>': <field> must be <expected>, got <actual>"
[[noreturn]] void fail(const std::string& file, const std::string& field, const std::string& expected,
                       const std::string& actual);
//   "'<file>': <what>" for problems that are not one field's value.
[[noreturn]] void fail(const std::string& file, const std::string& what);

// a * b and a + b, or an error naming the field when the result passes 2^64.
uint64_t mul(uint64_t a, uint64_t b, const std::string& file, const std::string& field);
uint64_t add(uint64_t a, uint64_t b, const std::string& file, const std::string& field);

// A whole regular file mapped read-only. Anything else (directory, FIFO, device) is
// refused; the open cannot block on a FIFO (O_NONBLOCK), and failures name the file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(data_); }
  uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

// The bytes of a regular file of at most max_bytes.
std::string read_file(const std::string& path, uint64_t max_bytes);

// stat() without exceptions (std::filesystem throws on a symlink loop): whether path is a
// directory; whether anything is there at all (a broken link or a loop counts, and reading
// it then reports why).
bool is_directory(const std::string& path);
bool exists(const std::string& path);

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

// "" when every value of t is finite, else "N non-finite values (first nan at [i, j])".
std::string non_finite(const at::Tensor& t);
// Fails naming the file and the tensor unless every value of t is finite.
void check_finite(const std::string& file, const std::string& tensor, const at::Tensor& t);

// JSON of untrusted files: at most kMaxJsonBytes, nesting limited (deep nesting would
// exhaust the stack of code that walks it).
constexpr uint64_t kMaxJsonBytes = 100u << 20;
nlohmann::json parse_json(const std::string& text, const std::string& file);
// A value for a message: compact, invalid UTF-8 replaced, cut to 80 characters.
std::string json_text(const nlohmann::json& value);

// A JSON object of an untrusted file, read field by field: each read checks type and range
// and fails naming the file and the field (prefix + key). Absent and null optional fields
// both give nullopt.
class JsonObject {
 public:
  // Fails unless value is an object; prefix names where it sits ("quantization_config.").
  JsonObject(const nlohmann::json& value, std::string file, std::string prefix = "");
  const nlohmann::json& json() const { return object_; }
  int64_t integer(const std::string& key, int64_t min, int64_t max) const;
  std::optional<int64_t> optional_integer(const std::string& key, int64_t min, int64_t max) const;
  std::optional<double> optional_number(const std::string& key, double min, double max) const;
  std::optional<bool> optional_bool(const std::string& key) const;
  std::optional<std::string> optional_string(const std::string& key) const;
  std::optional<std::vector<std::string>> optional_strings(const std::string& key) const;
  // The field's value (nullptr when absent or null), and its name for messages.
  const nlohmann::json* find(const std::string& key) const;
  std::string field(const std::string& key) const { return "field '" + prefix_ + key + "'"; }

 private:
  int64_t integer_value(const nlohmann::json& v, const std::string& key, int64_t min, int64_t max) const;
  const nlohmann::json& object_;
  std::string file_, prefix_;
};

}  // namespace llmint8::untrusted
