// llmint8._C: the C++-only helpers Python needs. Importing it loads libllmint8,
// which registers every operator under torch.ops.llmint8.
#include <llmint8/build_info.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "llmint8 native library: version and build information";
  const auto info = llmint8::build_info();
  m.attr("__version__") = info.version;
  m.def("build_info", [] {
    const auto info = llmint8::build_info();
    py::dict d;
    d["version"] = info.version;
    d["cuda"] = info.cuda;
    d["cuda_architectures"] = info.cuda_architectures;
    d["torch_version"] = info.torch_version;
    d["sentencepiece"] = info.sentencepiece;
    d["fused_sm90_gemm"] = info.fused_sm90_gemm;
    d["cuda_product_backends"] = info.cuda_product_backends;
    d["cpu_gemv_isa"] = info.cpu_gemv_isa;
    return d;
  }, "How the native library was built: version, CUDA on/off, CUDA architectures, LibTorch version, sentencepiece, "
     "fused Hopper GEMM, the CUDA product backends in the order they are tried; the CPU GEMV variant this machine runs.");
}
