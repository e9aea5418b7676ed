#include "io/json.h"

#include "untrusted.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace llmint8::io {

using untrusted::fail;

namespace {

constexpr int kMaxJsonDepth = 64;  // config files nest 3 or 4 levels

// Numbers are formatted here, not streamed into the message (see the note in checks.cpp).
std::string text(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%g", v);
  return buffer;
}

std::string range(int64_t min, int64_t max) {
  return "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
}

}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& file) {
  const nlohmann::json::parser_callback_t limit_depth = [&](int depth, nlohmann::json::parse_event_t,
                                                            nlohmann::json&) {
    if (depth > kMaxJsonDepth) fail(file, "JSON nesting", "at most " + std::to_string(kMaxJsonDepth) + " levels", "deeper");
    return true;
  };
  try {
    return nlohmann::json::parse(text, limit_depth);
  } catch (const nlohmann::json::exception& e) {
    // The library's own prefix ("[json.exception.parse_error.101] ") says nothing to a user.
    std::string why = e.what();
    const auto close = why.find("] ");
    if (why.rfind("[json.exception.", 0) == 0 && close != std::string::npos) why.erase(0, close + 2);
    fail(file, "is not valid JSON: " + why);
  }
}

std::string json_text(const nlohmann::json& value) {
  std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr size_t kMax = 80;
  if (s.size() > kMax) {
    size_t cut = kMax;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
    s = s.substr(0, cut) + "...";
  }
  return s;
}

JsonObject::JsonObject(const nlohmann::json& value, std::string file, std::string prefix)
    : object_(value), file_(std::move(file)), prefix_(std::move(prefix)) {
  if (!object_.is_object()) {
    untrusted::fail(file_, prefix_.empty() ? "the top level" : "field '" + prefix_.substr(0, prefix_.size() - 1) + "'",
         "a JSON object", json_text(object_));
  }
}

bool JsonObject::has(const std::string& key) const { return object_.contains(key); }

void JsonObject::fail(const std::string& key, const std::string& expected) const {
  const auto it = object_.find(key);
  untrusted::fail(file_, field(key), expected, it == object_.end() ? "nothing (missing)" : json_text(*it));
}

const nlohmann::json* JsonObject::find(const std::string& key) const {
  const auto it = object_.find(key);
  return it == object_.end() || it->is_null() ? nullptr : &*it;
}

int64_t JsonObject::integer_value(const nlohmann::json& v, const std::string& key, int64_t min, int64_t max) const {
  const std::string expected = "an integer in " + range(min, max);
  if (!v.is_number_integer()) untrusted::fail(file_, field(key), expected, json_text(v));
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) untrusted::fail(file_, field(key), expected, std::to_string(u));
    return static_cast<int64_t>(u);
  }
  const auto value = v.get<int64_t>();
  if (value < min || value > max) untrusted::fail(file_, field(key), expected, std::to_string(value));
  return value;
}

int64_t JsonObject::integer(const std::string& key, int64_t min, int64_t max) const {
  const auto* v = find(key);
  if (v == nullptr) untrusted::fail(file_, field(key), "an integer in " + range(min, max), "nothing (missing or null)");
  return integer_value(*v, key, min, max);
}

std::optional<int64_t> JsonObject::optional_integer(const std::string& key, int64_t min, int64_t max) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  return integer_value(*v, key, min, max);
}

std::optional<double> JsonObject::optional_number(const std::string& key, double min, double max) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  const std::string expected = "a number in [" + text(min) + ", " + text(max) + "]";
  if (!v->is_number()) untrusted::fail(file_, field(key), expected, json_text(*v));
  const double value = v->get<double>();
  if (!(value >= min && value <= max)) untrusted::fail(file_, field(key), expected, json_text(*v));
  return value;
}

std::optional<bool> JsonObject::optional_bool(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) untrusted::fail(file_, field(key), "true or false", json_text(*v));
  return v->get<bool>();
}

std::optional<std::string> JsonObject::optional_string(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) untrusted::fail(file_, field(key), "a string", json_text(*v));
  return v->get<std::string>();
}

std::optional<std::vector<std::string>> JsonObject::optional_strings(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  std::vector<std::string> out;
  if (v->is_array()) {
    for (const auto& item : *v) {
      if (!item.is_string()) break;
      out.push_back(item.get<std::string>());
    }
  }
  if (!v->is_array() || out.size() != v->size()) untrusted::fail(file_, field(key), "a list of strings", json_text(*v));
  return out;
}

}  // namespace llmint8::io
