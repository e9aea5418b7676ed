// The safetensors file format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the
// tensors' bytes. Read and written with nlohmann::json; every field is checked
// against the file before a byte of data is used.
#include <llmint8/checkpoint.h>

#include "nn/mapped_file.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <vector>

namespace llmint8 {

namespace {

struct DtypeName {
  const char* name;
  at::ScalarType type;
};

constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
    {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool},
};

const char* dtype_to_name(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return d.name;
  }
  TORCH_CHECK_TYPE(false, "save_safetensors: dtype ", c10::toString(t), " has no safetensors name");
}

at::ScalarType name_to_dtype(const std::string& name, const std::string& key) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  TORCH_CHECK_VALUE(false, "load_safetensors: tensor '", key, "' has unsupported dtype '", name, "'");
}

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

}  // namespace

void save_safetensors(const std::string& path, const TensorMap& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::vector<at::Tensor> blobs;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const auto t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_to_name(t.scalar_type())}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  TORCH_CHECK(out, "save_safetensors: cannot open '", path, "' for writing");
  const uint64_t n = text.size();
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(n >> (8 * i));
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : blobs) {
    out.write(static_cast<const char*>(t.const_data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  }
  TORCH_CHECK(out.good(), "save_safetensors: writing '", path, "' failed");
}

TensorMap load_safetensors(const std::string& path) {
  const MappedFile file(path);
  const uint64_t file_size = file.size();
  TORCH_CHECK_VALUE(file_size >= 8, "load_safetensors: '", path, "' is ", std::to_string(file_size),
                    " bytes, shorter than the 8-byte header length");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(file.data()[i]);
  TORCH_CHECK_VALUE(header_size <= kMaxHeaderBytes && header_size <= file_size - 8, "load_safetensors: '", path,
                    "': header length ", std::to_string(header_size), " at offset 0 does not fit the file (",
                    std::to_string(file_size), " bytes)");
  const std::string text(file.data() + 8, header_size);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "load_safetensors: '", path, "': the header (offset 8) is not valid JSON: ", e.what());
  }
  TORCH_CHECK_VALUE(header.is_object(), "load_safetensors: '", path, "': the header is not a JSON object");

  const uint64_t data_start = 8 + header_size, data_size = file_size - data_start;
  struct Entry {
    std::string key;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [key, info] : header.items()) {
    if (key == "__metadata__") continue;
    const auto where = "load_safetensors: '" + path + "': tensor '" + key + "'";
    TORCH_CHECK_VALUE(info.is_object() && info.contains("dtype") && info.contains("shape") &&
                          info.contains("data_offsets") && info["dtype"].is_string() && info["shape"].is_array() &&
                          info["data_offsets"].is_array() && info["data_offsets"].size() == 2,
                      where, ": needs a string 'dtype', an array 'shape' and two 'data_offsets'");
    Entry e{key, name_to_dtype(info["dtype"].get<std::string>(), key), {}, 0, 0};
    uint64_t numel = 1;
    for (const auto& d : info["shape"]) {
      TORCH_CHECK_VALUE(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where,
                        ": shape entries must be non-negative integers");
      e.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    for (const auto& o : info["data_offsets"]) {
      TORCH_CHECK_VALUE(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), where,
                        ": data_offsets must be non-negative integers");
    }
    e.begin = info["data_offsets"][0].get<uint64_t>();
    e.end = info["data_offsets"][1].get<uint64_t>();
    TORCH_CHECK_VALUE(e.begin <= e.end && e.end <= data_size, where, ": data_offsets [", std::to_string(e.begin), ", ",
                      std::to_string(e.end), "] do not fit the ", std::to_string(data_size),
                      " bytes of data (the file is truncated or the header is corrupt)");
    const uint64_t expected = numel * c10::elementSize(e.dtype);
    TORCH_CHECK_VALUE(e.end - e.begin == expected, where, ": shape and dtype need ", std::to_string(expected),
                      " bytes, data_offsets give ", std::to_string(e.end - e.begin));
    entries.push_back(std::move(e));
  }
  // The tensors must tile the data buffer exactly: no overlap, no hole.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t cursor = 0;
  for (const auto& e : entries) {
    TORCH_CHECK_VALUE(e.begin == cursor, "load_safetensors: '", path, "': tensor '", e.key, "' starts at data offset ",
                      std::to_string(e.begin), ", expected ", std::to_string(cursor), " (overlap or hole)");
    cursor = e.end;
  }
  TORCH_CHECK_VALUE(cursor == data_size, "load_safetensors: '", path, "': ", std::to_string(data_size - cursor),
                    " bytes after the last tensor are not described by the header");

  TensorMap tensors;
  for (const auto& e : entries) {
    auto t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    std::memcpy(t.data_ptr(), file.data() + data_start + e.begin, e.end - e.begin);  // copied out of the map
    tensors.emplace(e.key, std::move(t));
  }
  return tensors;
}

}  // namespace llmint8
