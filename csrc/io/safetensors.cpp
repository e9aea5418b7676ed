// The safetensors file format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the
// tensors' bytes. Read and written with nlohmann::json; every field is checked
// against the file before a byte of data is used.
#include <llmint8/models/safetensors.h>

#include "io/json.h"
#include "io/mapped_file.h"
#include "io/readers.h"
#include "untrusted.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

namespace llmint8 {

namespace u = llmint8::untrusted;

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

at::ScalarType name_to_dtype(const std::string& name, const std::string& key, const std::string& file) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  std::string names;
  for (const auto& d : kDtypes) names += std::string(names.empty() ? "" : ", ") + d.name;
  u::fail(file, "tensor '" + key + "' dtype", "one of " + names, "'" + name + "'");
}

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit
constexpr size_t kMaxRank = 16;                   // beyond any checkpoint; keeps shape lists small

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

SafetensorsHeader parse_safetensors_header(const char* data, uint64_t size, const std::string& file) {
  if (size < 8) u::fail(file, "its size", "at least the 8-byte header length", std::to_string(size) + " bytes");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(data[i]);
  if (header_size > kMaxHeaderBytes || header_size > size - 8) {
    u::fail(file, "the header length (offset 0)",
            "at most " + std::to_string(std::min(kMaxHeaderBytes, size - 8)) + " bytes (it does not fit the file of " +
                std::to_string(size) + " bytes)",
            std::to_string(header_size));
  }
  const auto json = io::parse_json(std::string(data + 8, header_size), file);
  const io::JsonObject header(json, file);
  SafetensorsHeader out{8 + header_size, {}};
  const uint64_t data_size = size - out.data_start;
  for (const auto& [key, info] : json.items()) {
    if (key == "__metadata__") continue;
    const std::string tensor = "tensor '" + key + "'";
    const io::JsonObject fields(info, file, key + ".");
    const auto dtype_name = fields.optional_string("dtype");
    const auto* shape = fields.find("shape");
    const auto* offsets = fields.find("data_offsets");
    if (!dtype_name || shape == nullptr || !shape->is_array() || offsets == nullptr || !offsets->is_array() ||
        offsets->size() != 2) {
      u::fail(file, tensor, "a string 'dtype', an array 'shape' and two 'data_offsets'", io::json_text(info));
    }
    SafetensorsEntry e{key, name_to_dtype(*dtype_name, key, file), {}, 0, 0};
    if (shape->size() > kMaxRank) {
      u::fail(file, tensor + " shape", "at most " + std::to_string(kMaxRank) + " dimensions", io::json_text(*shape));
    }
    // Checked product: sizes from the file may multiply past 2^64 even where one is 0.
    uint64_t bytes = c10::elementSize(e.dtype);
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<int64_t>() < 0) ||
          d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        u::fail(file, tensor + " shape", "non-negative integers", io::json_text(*shape));
      }
      e.shape.push_back(d.get<int64_t>());
      bytes = u::mul(bytes, d.get<uint64_t>(), file, tensor + " size");
    }
    for (const auto& o : *offsets) {
      if (!o.is_number_integer() || (!o.is_number_unsigned() && o.get<int64_t>() < 0)) {
        u::fail(file, tensor + " data_offsets", "two non-negative integers", io::json_text(*offsets));
      }
    }
    e.begin = (*offsets)[0].get<uint64_t>();
    e.end = (*offsets)[1].get<uint64_t>();
    if (e.begin > e.end || e.end > data_size) {
      u::fail(file, tensor + " data_offsets",
              "within the " + std::to_string(data_size) + " bytes of data (is the file truncated?)",
              "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]");
    }
    if (e.end - e.begin != bytes) {
      u::fail(file, tensor + " data_offsets", std::to_string(bytes) + " bytes apart (its shape and dtype)",
              std::to_string(e.end - e.begin) + " bytes");
    }
    out.entries.push_back(std::move(e));
  }
  // The tensors must tile the data buffer exactly: no overlap, no hole.
  std::sort(out.entries.begin(), out.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  uint64_t cursor = 0;
  for (const auto& e : out.entries) {
    if (e.begin != cursor) {
      u::fail(file, "tensor '" + e.key + "' data offset", std::to_string(cursor) + " (no overlap, no hole)",
              std::to_string(e.begin));
    }
    cursor = e.end;
  }
  if (cursor != data_size) {
    u::fail(file, "the data after the last tensor", "empty", std::to_string(data_size - cursor) + " bytes the header does not describe");
  }
  return out;
}

namespace {

// A bool byte other than 0 or 1 is undefined behaviour wherever it is read as bool.
void check_bool_bytes(const char* data, const SafetensorsHeader& header, const std::string& file) {
  for (const auto& e : header.entries) {
    if (e.dtype != at::kBool) continue;
    const char* begin = data + header.data_start + e.begin;
    const char* end = data + header.data_start + e.end;
    const char* bad = std::find_if(begin, end, [](char b) { return b != 0 && b != 1; });
    if (bad != end) {
      u::fail(file, "tensor '" + e.key + "' values", "0 or 1 (dtype BOOL)",
              std::to_string(static_cast<unsigned char>(*bad)) + " at data offset " +
                  std::to_string(e.begin + static_cast<uint64_t>(bad - begin)));
    }
  }
}

at::Tensor copy_out(const char* data, const SafetensorsHeader& header, const SafetensorsEntry& e) {
  auto t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), data + header.data_start + e.begin, e.end - e.begin);
  return t;
}

}  // namespace

TensorMap read_safetensors(const char* data, uint64_t size, const std::string& file) {
  const auto header = parse_safetensors_header(data, size, file);
  check_bool_bytes(data, header, file);
  return u::allocating(file, "its tensors (" + std::to_string(size - header.data_start) + " bytes)", [&] {
    TensorMap tensors;
    for (const auto& e : header.entries) tensors.emplace(e.key, copy_out(data, header, e));
    return tensors;
  });
}

TensorMap view_safetensors(const char* data, uint64_t size, const std::string& file) {
  const auto header = parse_safetensors_header(data, size, file);
  check_bool_bytes(data, header, file);
  return u::allocating(file, "its misaligned tensors", [&] {
    TensorMap tensors;
    for (const auto& e : header.entries) {
      const char* begin = data + header.data_start + e.begin;
      // Kernels may assume elements aligned to their size; the format does not promise it.
      if (reinterpret_cast<uintptr_t>(begin) % c10::elementSize(e.dtype) != 0) {
        tensors.emplace(e.key, copy_out(data, header, e));
      } else {
        // const_cast: the views are only ever read (readers.h).
        tensors.emplace(e.key, at::from_blob(const_cast<char*>(begin), e.shape, at::TensorOptions().dtype(e.dtype)));
      }
    }
    return tensors;
  });
}

TensorMap load_safetensors(const std::string& path) {
  const io::MappedFile file(path);
  return read_safetensors(file.data(), file.size(), path);
}

}  // namespace llmint8
