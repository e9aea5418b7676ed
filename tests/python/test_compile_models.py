"""torch.compile(fullgraph=True) on modules holding quantized Linear8bitLt layers: the layer alone, a
module around it, and a transformers model loaded through the "llmint8" quantizer, at both thresholds;
and generate() with a static KV cache (which compiles the forward itself) giving eager's greedy ids."""

import copy
import pickle
import subprocess
import sys

import pytest
import torch

import llmint8
from conftest import assert_matches_reference, make_activations
from llmint8.nn import Linear8bitLt

from test_workflow import MODELS

transformers = pytest.importorskip("transformers")


def quantized_layer(K, N, threshold, device, bias=True):
    torch.manual_seed(0)
    layer = Linear8bitLt(K, N, bias=bias, has_fp16_weights=False, threshold=threshold).to(device)
    assert layer.weight.dtype == torch.int8 and layer.weight.is_int8
    return layer


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_compile_quantized_layer_fullgraph(threshold, device):
    torch._dynamo.reset()
    layer = quantized_layer(64, 48, threshold, device)
    compiled = torch.compile(layer, fullgraph=True)
    for M, cols in ((4, [3]), (9, [0, 63])):  # a second batch size: no recompilation that breaks
        x = make_activations((M, 64), torch.float32, device, outlier_cols=cols, seed=M)
        assert torch.equal(compiled(x), layer(x))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_compile_module_holding_layers_fullgraph(threshold, device):
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.LayerNorm(64), torch.nn.Linear(64, 96), torch.nn.GELU(),
                                torch.nn.Linear(96, 64))
    names = llmint8.replace_linear_with_8bit(model, llm_int8_threshold=threshold)
    assert names == ["1", "3"]
    model.to(device)
    x = make_activations((2, 5, 64), torch.float32, device, outlier_cols=[7])
    compiled = torch.compile(model, fullgraph=True)
    # Inductor may fuse the float ops around our op differently: equal to float rounding.
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model, tok = MODELS["aidreams260K"]
    out = tmp_path_factory.mktemp("aidreams")
    result = subprocess.run([sys.executable, "-m", "llmint8", "convert-llama2c", str(model), str(out),
                             "--tokenizer", str(tok)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def load_8bit(folder, threshold, device):
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), device_map=device, dtype=torch.float32,
        quantization_config=llmint8.Int8Config(llm_int8_threshold=threshold)).eval()


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_compile_transformers_model_fullgraph(threshold, folder, device):
    torch._dynamo.reset()
    model = load_8bit(folder, threshold, device)
    assert isinstance(model.model.layers[0].mlp.down_proj, Linear8bitLt)
    x = torch.tensor([[1, 5, 100, 37, 300, 12]], device=device)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager, fast = model(x).logits, compiled(x).logits
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.argmax(-1), eager.argmax(-1))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_static_cache_generate_compiles_and_matches_eager(threshold, folder, device):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = load_8bit(folder, threshold, device)
    prompt = torch.tensor([[1, 403, 407, 261, 378]], device=device)
    with torch.no_grad():
        eager = model.generate(prompt, max_new_tokens=24, do_sample=False)
        # transformers compiles the forward itself for a static cache (on the CPU only when asked to).
        config = transformers.CompileConfig(fullgraph=True)
        config._compile_all_devices = device == "cpu"
        static = model.generate(prompt, max_new_tokens=24, do_sample=False, cache_implementation="static",
                                compile_config=config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the forward was compiled, not skipped
    assert static.tolist() == eager.tolist()


def test_compiled_input_gradient_through_layers_is_accurate(device):
    """Backward through compiled layers: the op's backward computes in fp32 and casts to the input's
    dtype, and inductor drops that cast between fused layers (README, differences), so the compiled
    gradient is rounded to fp16 about once instead of once per layer: within fp16 rounding of float64."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[Linear8bitLt(256, 256, has_fp16_weights=False) for _ in range(4)]).to(device)
    x = make_activations((16, 256), torch.float16, device).requires_grad_()
    torch.compile(net, fullgraph=True)(x).sum().backward()
    expected = torch.ones(16, 256, dtype=torch.float64)
    for layer in reversed(net):  # dX = dY (CB SCB / 127), layer by layer
        expected = expected @ llmint8.reference.dequantize_weight(layer.weight.cpu(), layer.weight.SCB.cpu())
    assert_matches_reference(x.grad, expected)


# --- The compiled forward reads plain views of the weight's codes and scales and a float copy of the
# threshold (fewer guards to check per call); each way of changing them must reach compiled code
# with no eager call in between.

def _another_int8_weight(K, N, device, seed):
    torch.manual_seed(seed)
    return llmint8.nn.Int8Params(torch.randn(N, K) * 3, requires_grad=False, has_fp16_weights=False).to(device)


def _set_weight(layer, device):
    layer.weight = _another_int8_weight(64, 48, device, seed=5)


def _load_state_dict(layer, device):
    donor = quantized_layer(64, 48, layer.state.threshold, device)
    with torch.no_grad():
        donor.weight.SCB.mul_(0.5)  # distinct scales, as well as (same seed) the same codes
    layer.load_state_dict(donor.state_dict())


def _rebind_scb(layer, device):
    layer.weight.SCB = layer.weight.SCB * 2


def _rebind_cb(layer, device):
    layer.weight.CB = torch.flip(layer.weight.CB, dims=[1]).contiguous()


def _set_data(layer, device):
    layer.weight.data = _another_int8_weight(64, 48, device, seed=6)


def _set_threshold(layer, device):
    layer.state.threshold = 0.0 if layer.state.threshold else 6.0


def _write_parameters_then_init(layer, device):
    # As accelerate does: past setattr; init_8bit_state() tells the layer (bitsandbytes' method).
    layer._parameters["weight"] = _another_int8_weight(64, 48, device, seed=7)
    layer.init_8bit_state()


def _move_as_half(layer, device):
    # _apply with a dtype: the codes stay int8 in a new tensor; the float bias becomes fp16, as the
    # input will be. Then change that new weight's scales in place: the views must share its memory.
    layer.half()
    with torch.no_grad():
        layer.weight.SCB.mul_(0.25)


CHANGES = [_set_weight, _load_state_dict, _rebind_scb, _rebind_cb, _set_data, _set_threshold,
           _write_parameters_then_init, _move_as_half]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.lstrip("_"))
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_compiled_layer_follows_weight_and_threshold_changes(change, threshold, device):
    torch._dynamo.reset()
    layer = quantized_layer(64, 48, threshold, device)
    compiled = torch.compile(layer, fullgraph=True)
    x = make_activations((3, 64), torch.float32, device, outlier_cols=[11], seed=2)
    before = compiled(x)
    change(layer, device)
    x = x.to(layer.bias.dtype)
    after = compiled(x)  # no eager call since the change
    w = layer.weight
    expected = llmint8.reference.int8_linear(x.double().cpu(), w.CB.cpu(), w.SCB.cpu(), layer.bias.double().cpu(),
                                             layer.state.threshold)
    assert_matches_reference(after.cpu(), expected)
    assert not torch.allclose(after.float(), before.float(), rtol=1e-3, atol=1e-3)  # the change shows


def _write_parameters_unseen(layer, device):
    # accelerate's write without init_8bit_state(): only the eager forward can notice it.
    layer._parameters["weight"] = _another_int8_weight(64, 48, device, seed=8)


@pytest.mark.parametrize("change", CHANGES + [_write_parameters_unseen], ids=lambda f: f.__name__.lstrip("_"))
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_eager_layer_follows_weight_and_threshold_changes(change, threshold, device):
    """The eager forward's short path (the views, for host time per call) gives way to the
    general one whenever the views no longer match the weight."""
    layer = quantized_layer(64, 48, threshold, device)
    x = make_activations((3, 64), torch.float32, device, outlier_cols=[11], seed=2)
    before = layer(x)
    change(layer, device)
    x = x.to(layer.bias.dtype)
    after = layer(x)
    w = layer.weight
    expected = llmint8.reference.int8_linear(x.double().cpu(), w.CB.cpu(), w.SCB.cpu(), layer.bias.double().cpu(),
                                             layer.state.threshold)
    assert_matches_reference(after.cpu(), expected)
    assert not torch.allclose(after.float(), before.float(), rtol=1e-3, atol=1e-3)  # the change shows
    assert layer.state.CB is w.CB and layer.state.SCB is w.SCB  # bitsandbytes' state follows too


def test_compiled_forward_reads_views_sharing_the_weight(device):
    """What keeps the guards cheap: exact nn.Parameters in the layer's __dict__, sharing the memory of
    the weight's CB and SCB (no copy), and a float threshold; none of them in parameters() or the
    state dict, pickles or deep copies, which remake them."""
    layer = quantized_layer(64, 48, 6.0, device)
    views = layer.__dict__["_cb_view"], layer.__dict__["_scb_view"]
    assert [type(v) for v in views] == [torch.nn.Parameter] * 2
    assert views[0].data_ptr() == layer.weight.CB.data_ptr() and views[1].data_ptr() == layer.weight.SCB.data_ptr()
    assert type(layer.__dict__["_threshold"]) is float and layer.__dict__["_threshold"] == 6.0
    assert len(list(layer.parameters())) == 2 and set(layer.state_dict()) == {"weight", "bias", "SCB",
                                                                           "weight_format"}
    clone = copy.deepcopy(layer)
    assert clone._cb_view.data_ptr() == clone.weight.CB.data_ptr() != layer.weight.CB.data_ptr()
    restored = pickle.loads(pickle.dumps(layer))
    assert restored._scb_view.data_ptr() == restored.weight.SCB.data_ptr()
    assert torch.equal(restored._scb_view, layer._scb_view)
    layer.state.use_pool = True  # pooling synchronizes: the compiled forward takes the general path
    assert layer._threshold is None
    layer.state.use_pool = False
    assert layer._threshold == 6.0


def test_views_go_with_the_weight(device):
    """A layer whose weight is set to None or deleted keeps no views (no stale product, no memory held)."""
    for drop in (lambda layer: setattr(layer, "weight", None), lambda layer: delattr(layer, "weight")):
        layer = quantized_layer(64, 48, 6.0, device)
        assert layer._cb_view is not None
        drop(layer)
        assert layer._cb_view is None and layer._scb_view is None and layer._threshold is None
