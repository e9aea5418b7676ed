// replace_linear: swapping a module tree's torch::nn::Linear layers for Linear8bitLt.
#include <llmint8/linear8bitlt.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

namespace llmint8 {

namespace {

// A skip entry matches one path component of the dotted name, or a run of them.
bool is_skipped(const std::string& name, const std::vector<std::string>& skip) {
  const std::string padded = "." + name + ".";
  for (const auto& s : skip) {
    if (padded.find("." + s + ".") != std::string::npos) return true;
  }
  return false;
}

void replace_below(torch::nn::Module& parent, const std::string& prefix, const Int8Config& cfg,
                   const std::vector<std::string>& skip, std::vector<std::string>& replaced) {
  auto* sequential = dynamic_cast<torch::nn::SequentialImpl*>(&parent);
  auto* module_list = dynamic_cast<torch::nn::ModuleListImpl*>(&parent);
  for (const auto& item : parent.named_children()) {  // a copy: safe to swap while walking it
    const std::string name = prefix.empty() ? item.key() : prefix + "." + item.key();
    auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(item.value());
    if (!linear) {
      replace_below(*item.value(), name, cfg, skip, replaced);
      continue;
    }
    if (is_skipped(name, skip)) continue;
    auto layer = from_linear(*linear, cfg.llm_int8_threshold, cfg.llm_int8_has_fp16_weight);
    layer->train(linear->is_training());
    parent.replace_module(item.key(), layer.ptr());
    // Containers call their own copies of the modules, not the registry's.
    if (sequential) {
      for (auto it = sequential->begin(); it != sequential->end(); ++it) {
        if (it->ptr() == linear) *it = torch::nn::AnyModule(layer.ptr());
      }
    }
    if (module_list) {
      for (auto it = module_list->begin(); it != module_list->end(); ++it) {
        if (*it == linear) *it = layer.ptr();
      }
    }
    replaced.push_back(name);
  }
}

}  // namespace

std::vector<std::string> replace_linear(torch::nn::Module& root, const Int8Config& cfg) {
  std::vector<std::string> replaced;
  replace_below(root, "", cfg, cfg.skip_modules(), replaced);
  return replaced;
}

torch::nn::AnyModule linear_child(torch::nn::Module& parent, const std::string& name) {
  const auto children = parent.named_children();
  const auto* found = children.find(name);
  TORCH_CHECK_VALUE(found != nullptr, "llmint8::linear_child: no submodule named '", name, "'");
  if (auto layer = std::dynamic_pointer_cast<Linear8bitLtImpl>(*found)) return torch::nn::AnyModule(layer);
  if (auto linear = std::dynamic_pointer_cast<torch::nn::LinearImpl>(*found)) return torch::nn::AnyModule(linear);
  TORCH_CHECK_TYPE(false, "llmint8::linear_child: submodule '", name, "' is neither a Linear nor a Linear8bitLt");
}

}  // namespace llmint8
