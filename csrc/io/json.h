// JSON of untrusted files (config.json, shard indexes, safetensors headers): at most
// kMaxJsonBytes, nesting limited, and each field read with its type and range checked,
// failing with untrusted.h's message that names the file and the field.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llmint8::io {

// Deep nesting would exhaust the stack of code that walks the value.
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
  const std::string& file() const { return file_; }
  int64_t integer(const std::string& key, int64_t min, int64_t max) const;
  std::optional<int64_t> optional_integer(const std::string& key, int64_t min, int64_t max) const;
  std::optional<double> optional_number(const std::string& key, double min, double max) const;
  std::optional<bool> optional_bool(const std::string& key) const;
  std::optional<std::string> optional_string(const std::string& key) const;
  std::optional<std::vector<std::string>> optional_strings(const std::string& key) const;
  // The field's value (nullptr when absent or null), and its name for messages.
  const nlohmann::json* find(const std::string& key) const;
  // Whether the key is there at all, null included (some fields mean something else when null).
  bool has(const std::string& key) const;
  std::string field(const std::string& key) const { return "field '" + prefix_ + key + "'"; }
  // Fails naming the field: it must be `expected`, and is what the file holds.
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const;

 private:
  int64_t integer_value(const nlohmann::json& v, const std::string& key, int64_t min, int64_t max) const;
  const nlohmann::json& object_;
  std::string file_, prefix_;
};

}  // namespace llmint8::io
