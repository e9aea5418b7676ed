"""Int8Params, Linear8bitLt, MatmulLtState, Int8Config, replace_linear_with_8bit, checkpoints."""

import copy
import io
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import llmint8
from llmint8 import reference as ref
from llmint8.nn import Int8Params, Linear8bitLt, OutlierPooler

from conftest import assert_matches_reference, make_activations, rel_err


def _layer(K=64, N=32, threshold=6.0, bias=True, has_fp16_weights=False, seed=0):
    torch.manual_seed(seed)
    return Linear8bitLt(K, N, bias=bias, has_fp16_weights=has_fp16_weights, threshold=threshold)


def test_defaults_follow_bitsandbytes():
    layer = Linear8bitLt(8, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert layer.state.has_fp16_weights is True and layer.state.threshold == 0.0
    assert layer.bias is not None and isinstance(layer.weight, Int8Params)
    cfg = llmint8.Int8Config()
    assert (cfg.load_in_8bit, cfg.llm_int8_threshold, cfg.llm_int8_skip_modules, cfg.llm_int8_has_fp16_weight,
            cfg.llm_int8_enable_fp32_cpu_offload) == (True, 6.0, None, False, False)
    assert cfg.skip_modules == ["lm_head"]
    state = llmint8.MatmulLtState()
    assert state.CB is None and state.SCB is None and state.threshold == 0.0 and not state.use_pool


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_forward_matches_reference_ops(threshold, dtype, device):
    layer = _layer(threshold=threshold).to(device)
    assert layer.weight.dtype == torch.int8 and layer.weight.SCB.dtype == torch.float32
    assert layer.weight.device.type == device and layer.weight.SCB.device.type == device
    x = make_activations((2, 5, 64), dtype, device, outlier_cols=[3, 40])
    out = layer(x)
    assert out.dtype == dtype and out.shape == (2, 5, 32)
    expected = ref.int8_linear(x.cpu(), layer.weight.cpu(), layer.weight.SCB.cpu(), layer.bias.cpu(), threshold)
    assert_matches_reference(out, expected)
    assert torch.equal(layer.state.CB, layer.weight) and torch.equal(layer.state.SCB, layer.weight.SCB)


def test_quantizes_once_on_move_and_keeps_codes(device):
    torch.manual_seed(0)
    W = torch.randn(16, 24)
    p = Int8Params(W.clone(), requires_grad=False, has_fp16_weights=False)
    q = p.to(device)
    CB, SCB, _ = ref.int8_vectorwise_quant(W, 0.0)
    assert q.dtype == torch.int8 and torch.equal(q.cpu(), CB) and torch.equal(q.SCB.cpu(), SCB)
    again = q.to(device).cpu().to(device)  # int8 data is moved, never quantized again
    assert torch.equal(again.cpu(), CB) and torch.equal(again.SCB.cpu(), SCB)
    assert again.CB is not None and torch.equal(again.CB.cpu(), CB)
    assert p.dtype == torch.float32  # the source parameter is left as it was


def test_has_fp16_weights_params_move_without_quantizing(device):
    p = Int8Params(torch.randn(4, 8), requires_grad=True, has_fp16_weights=True)
    q = p.to(device, torch.float16)
    assert q.dtype == torch.float16 and q.requires_grad and q.SCB is None


def test_non_finite_weight_is_rejected():
    W = torch.randn(4, 8)
    W[2, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*\\[2, 5\\]"):
        Int8Params(W, requires_grad=False).to("cpu")


def test_copy_deepcopy_pickle_keep_codes_and_scales(device):
    layer = _layer().to(device)
    x = make_activations((3, 64), torch.float16, device, outlier_cols=[7])
    expected = layer(x)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), copy.copy(layer)):
        assert isinstance(clone.weight, Int8Params) and clone.weight.dtype == torch.int8
        assert torch.equal(clone.weight.SCB, layer.weight.SCB)
        assert torch.equal(clone(x), expected)
    deep = copy.deepcopy(layer)
    assert deep.weight.SCB.data_ptr() != layer.weight.SCB.data_ptr()
    buffer = io.BytesIO()
    torch.save(layer.weight, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded, Int8Params) and torch.equal(loaded.SCB, layer.weight.SCB)


def test_move_before_and_after_first_forward(device):
    x = make_activations((4, 64), torch.float32, "cpu", outlier_cols=[1])
    moved_first = _layer().to(device)
    out_moved_first = moved_first(x.to(device)).cpu()
    forward_first = _layer()  # never moved: quantized on the CPU at its first forward
    out_cpu = forward_first(x)
    assert forward_first.weight.dtype == torch.int8
    forward_first.to(device)
    assert forward_first.weight.device.type == device and forward_first.weight.SCB.device.type == device
    assert torch.equal(forward_first(x.to(device)).cpu(), out_moved_first)
    assert_matches_reference(out_cpu, ref.int8_linear(x, forward_first.weight.cpu(),
                                                      forward_first.weight.SCB.cpu(), forward_first.bias.cpu(), 6.0))


def test_dtype_casts_leave_codes_and_scales_alone(device):
    layer = _layer().to(device)
    codes, scales = layer.weight.clone(), layer.weight.SCB.clone()
    layer.half()
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == torch.int8 and torch.equal(layer.weight, codes)
    assert layer.weight.SCB.dtype == torch.float32 and torch.equal(layer.weight.SCB, scales)
    assert layer.bias.dtype == torch.bfloat16
    assert layer(make_activations((2, 64), torch.bfloat16, device)).dtype == torch.bfloat16


def test_wrong_in_features_and_negative_threshold():
    layer = _layer()
    with pytest.raises(ValueError, match="7 features.*in_features = 64"):
        layer(torch.randn(2, 7))
    with pytest.raises(ValueError, match="argument .threshold. must be a finite number >= 0.*got -1"):
        Linear8bitLt(4, 4, threshold=-1.0)


# --- checkpoints


def _quantized_state_dict(device):
    layer = _layer().to(device)
    return layer, layer.state_dict()


def test_state_dict_has_bitsandbytes_layout(device):
    _, sd = _quantized_state_dict(device)
    assert set(sd) == {"weight", "bias", "SCB", "weight_format"}
    assert sd["weight"].dtype == torch.int8 and list(sd["weight"].shape) == [32, 64]
    assert sd["SCB"].dtype == torch.float32 and list(sd["SCB"].shape) == [32]
    assert sd["weight_format"].dtype == torch.uint8 and sd["weight_format"].shape == () and sd["weight_format"] == 0


@pytest.mark.parametrize("order", ["load_then_move", "move_then_load"])
def test_checkpoint_round_trip_in_either_order(order, device, tmp_path):
    source, sd = _quantized_state_dict(device)
    path = tmp_path / "layer.safetensors"
    save_file({k: v.contiguous().cpu() for k, v in sd.items()}, str(path))
    target = _layer(seed=123)  # different float weights, not yet quantized
    if order == "load_then_move":
        target.load_state_dict(load_file(str(path)))
        target.to(device)
    else:
        target.to(device)
        target.load_state_dict(load_file(str(path)))
    assert torch.equal(target.weight, source.weight) and torch.equal(target.weight.SCB, source.weight.SCB)
    x = make_activations((3, 64), torch.float16, device, outlier_cols=[9])
    assert torch.equal(target(x), source(x))


def test_float_state_dict_loads_into_unquantized_module_and_quantizes_on_move(device):
    float_layer = torch.nn.Linear(64, 32)
    target = _layer(seed=5)
    target.load_state_dict(float_layer.state_dict())
    assert target.weight.dtype == torch.float32 and torch.equal(target.weight, float_layer.weight)
    target.to(device)
    CB, SCB, _ = ref.int8_vectorwise_quant(float_layer.weight.detach(), 0.0)
    assert torch.equal(target.weight.cpu(), CB) and torch.equal(target.weight.SCB.cpu(), SCB)
    x = torch.randn(4, 64)
    assert rel_err(target(x.to(device)), ref.linear_float64(x, float_layer.weight.detach(), float_layer.bias)) < 0.02


def test_legacy_weight_format_is_rejected_by_name():
    _, sd = _quantized_state_dict("cpu")
    sd["weight_format"] = torch.tensor(2, dtype=torch.uint8)
    target = _layer(seed=9).to("cpu")
    before = target.weight.clone()
    with pytest.raises(RuntimeError, match="weight_format: weight_format 2 \\(col_turing\\) is a legacy"):
        target.load_state_dict(sd)
    assert torch.equal(target.weight, before)


@pytest.mark.parametrize("corrupt", ["weight_shape", "scb_shape", "missing_scb", "scb_dtype", "weight_dtype"])
def test_mismatched_checkpoint_names_the_key_and_leaves_module_unchanged(corrupt):
    _, sd = _quantized_state_dict("cpu")
    if corrupt == "weight_shape":
        sd["weight"] = sd["weight"][:, :60]
        match = "weight: expected shape \\[32, 64\\], got \\[32, 60\\]"
    elif corrupt == "scb_shape":
        sd["SCB"] = sd["SCB"][:31]
        match = "SCB: expected shape \\[32\\], got \\[31\\]"
    elif corrupt == "missing_scb":
        del sd["SCB"]
        match = "SCB: missing"
    elif corrupt == "scb_dtype":
        sd["SCB"] = sd["SCB"].to(torch.int32)
        match = "SCB: expected a float tensor, got torch.int32"
    else:
        sd["weight"] = sd["weight"].to(torch.int16)
        match = "weight: expected int8 codes or a float weight, got torch.int16"
    target = _layer(seed=3).to("cpu")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(RuntimeError, match=match):
        target.load_state_dict(sd)
    after = target.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# --- replacement


class Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = torch.nn.Linear(d, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d))

    def forward(self, x):
        return x + self.mlp(self.attn(x))


class TinyModel(torch.nn.Module):
    def __init__(self, d=64, vocab=50):
        super().__init__()
        self.layers = torch.nn.ModuleList([Block(d), Block(d)])
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return self.lm_head(x)


def test_replace_nested_and_sequential_skips_lm_head(device):
    torch.manual_seed(0)
    model = TinyModel()
    reference_model = copy.deepcopy(model)
    names = llmint8.replace_linear_with_8bit(model, llm_int8_threshold=6.0)
    assert names == ["layers.0.attn", "layers.0.mlp.0", "layers.0.mlp.2",
                     "layers.1.attn", "layers.1.mlp.0", "layers.1.mlp.2"]
    assert type(model.lm_head) is torch.nn.Linear
    assert all(isinstance(model.get_submodule(n), Linear8bitLt) for n in names)
    model.to(device)
    x = torch.randn(3, 64)
    err = rel_err(model(x.to(device)), reference_model(x).double())
    assert err < 0.03, err


def test_replace_with_skip_list_and_config():
    model = TinyModel()
    cfg = llmint8.Int8Config(llm_int8_skip_modules=["mlp"], llm_int8_threshold=0.0)
    names = llmint8.replace_linear_with_8bit(model, cfg)
    assert names == ["layers.0.attn", "layers.1.attn"]
    assert model.layers[0].attn.state.threshold == 0.0
    assert type(model.layers[0].mlp[0]) is torch.nn.Linear
    assert llmint8.replace_linear_with_8bit(model, cfg) == []  # already replaced: nothing more to do
    with pytest.raises(TypeError, match="either an Int8Config or keyword arguments"):
        llmint8.replace_linear_with_8bit(model, cfg, llm_int8_threshold=1.0)


def test_replace_on_meta_device_model_then_load_and_move(device):
    torch.manual_seed(0)
    real = TinyModel()
    with torch.device("meta"):
        model = TinyModel()
    names = llmint8.replace_linear_with_8bit(model)
    assert len(names) == 6 and model.layers[0].attn.weight.device.type == "meta"
    model.load_state_dict(real.state_dict(), assign=True)
    model.to(device)
    assert model.layers[1].mlp[2].weight.dtype == torch.int8
    x = torch.randn(2, 64)
    assert rel_err(model(x.to(device)), real(x).double()) < 0.03


def test_memory_footprint_is_about_half_of_fp16(device):
    def footprint(m):
        return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])

    fp16 = TinyModel(d=256, vocab=64).half()
    int8 = copy.deepcopy(fp16)
    llmint8.replace_linear_with_8bit(int8, llm_int8_skip_modules=None)
    int8.to(device)
    ratio = footprint(int8) / footprint(fp16)
    assert 0.45 < ratio < 0.6, ratio


# --- training mode and outlier pooling


def test_has_fp16_weights_training_reduces_loss_and_requantizes(device):
    torch.manual_seed(0)
    layer = Linear8bitLt(32, 8, has_fp16_weights=True, threshold=6.0).to(device)
    assert layer.weight.dtype == torch.float32 and layer.weight.requires_grad
    x = torch.randn(64, 32, device=device)
    target = torch.randn(64, 8, device=device)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    losses, codes = [], []
    for _ in range(5):
        opt.zero_grad()
        loss = (layer(x) - target).pow(2).mean()
        loss.backward()
        codes.append(layer.state.CB.clone())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(codes[0], codes[-1])  # the changed float weight was quantized again
    CB, _, _ = ref.int8_vectorwise_quant(layer.weight.detach().cpu(), 0.0)
    layer(x)
    assert torch.equal(layer.state.CB.cpu(), CB)


def test_outlier_pooling_carries_columns_across_layers_of_one_size(device):
    OutlierPooler.reset()
    first, second = _layer(threshold=6.0).to(device), _layer(threshold=6.0, seed=1).to(device)
    first.state.use_pool = second.state.use_pool = True
    x1 = make_activations((4, 64), torch.float32, device, outlier_cols=[5])
    x2 = make_activations((4, 64), torch.float32, device, outlier_cols=[20], seed=2)
    first(x1)
    out = second(x2)
    assert second.state.idx.tolist() == [5, 20]
    # Pooled column 5 is computed in floating point: quantizing with both columns excluded is the reference.
    probe = x2.clone().cpu()
    probe[:, 5] = float("inf")
    CA, SCA, cols = ref.int8_vectorwise_quant(probe, 6.0)
    expected, _ = ref.int8_mixed_scaled_mm(x2.cpu(), CA, second.weight.cpu(), SCA, second.weight.SCB.cpu(), cols,
                                           second.bias.detach().cpu())
    assert_matches_reference(out, expected)
    OutlierPooler.reset()
