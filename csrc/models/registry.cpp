// config.json's model_type -> the family that reads it. A new family is one file and one line here.
#include "models/registry.h"

namespace llmint8::models {

namespace {

constexpr HfModelType kHfModelTypes[] = {
    {"gemma", read_gemma},
    {"llama", read_llama},
    {"mistral", read_mistral},
    {"qwen2", read_qwen2},
};

}  // namespace

const HfModelType* find_hf_model_type(const std::string& model_type) {
  for (const auto& entry : kHfModelTypes) {
    if (model_type == entry.model_type) return &entry;
  }
  return nullptr;
}

std::vector<std::string> hf_model_types() {
  std::vector<std::string> names;
  for (const auto& entry : kHfModelTypes) names.emplace_back(entry.model_type);
  return names;
}

}  // namespace llmint8::models
