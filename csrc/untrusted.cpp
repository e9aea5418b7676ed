#include "untrusted.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace llmint8::untrusted {

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

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

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

MappedFile::MappedFile(const std::string& path) {
  if (path.find('\0') != std::string::npos) fail(path, "the path", "free of NUL bytes", "a NUL byte");
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  auto close_and_fail = [&](const std::string& field, const std::string& expected, const std::string& actual) {
    ::close(fd_);
    fd_ = -1;
    fail(path, field, expected, actual);
  };
  struct stat st {};
  if (::fstat(fd_, &st) != 0) close_and_fail("the path", "a file that can be stat()ed", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) close_and_fail("the path", "a regular file", file_kind(st.st_mode));
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (data_ == MAP_FAILED) {
      data_ = nullptr;
      close_and_fail("the file", "mappable", std::strerror(errno));
    }
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  const MappedFile file(path);
  if (file.size() > max_bytes) {
    fail(path, "its size", "at most " + std::to_string(max_bytes) + " bytes", std::to_string(file.size()));
  }
  return std::string(file.data(), file.size());
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

void allocation_failed(const std::string& file, const std::string& what, const std::string& cause) {
  fail(file, "cannot allocate " + what + ": " + cause);
}

std::string non_finite(const at::Tensor& t) {
  if (!t.is_floating_point() || t.numel() == 0) return "";
  const auto flat = t.detach().reshape({-1});
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
    fail(file_, prefix_.empty() ? "the top level" : "field '" + prefix_.substr(0, prefix_.size() - 1) + "'",
         "a JSON object", json_text(object_));
  }
}

const nlohmann::json* JsonObject::find(const std::string& key) const {
  const auto it = object_.find(key);
  return it == object_.end() || it->is_null() ? nullptr : &*it;
}

int64_t JsonObject::integer_value(const nlohmann::json& v, const std::string& key, int64_t min, int64_t max) const {
  const std::string expected = "an integer in " + range(min, max);
  if (!v.is_number_integer()) fail(file_, field(key), expected, json_text(v));
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(max)) fail(file_, field(key), expected, std::to_string(u));
    return static_cast<int64_t>(u);
  }
  const auto value = v.get<int64_t>();
  if (value < min || value > max) fail(file_, field(key), expected, std::to_string(value));
  return value;
}

int64_t JsonObject::integer(const std::string& key, int64_t min, int64_t max) const {
  const auto* v = find(key);
  if (v == nullptr) fail(file_, field(key), "an integer in " + range(min, max), "nothing (missing or null)");
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
  if (!v->is_number()) fail(file_, field(key), expected, json_text(*v));
  const double value = v->get<double>();
  if (!(value >= min && value <= max)) fail(file_, field(key), expected, json_text(*v));
  return value;
}

std::optional<bool> JsonObject::optional_bool(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) fail(file_, field(key), "true or false", json_text(*v));
  return v->get<bool>();
}

std::optional<std::string> JsonObject::optional_string(const std::string& key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail(file_, field(key), "a string", json_text(*v));
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
  if (!v->is_array() || out.size() != v->size()) fail(file_, field(key), "a list of strings", json_text(*v));
  return out;
}

}  // namespace llmint8::untrusted
