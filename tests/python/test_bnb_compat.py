"""What code written for bitsandbytes' LLM.int8() calls (issue 14): its argument forms, llmint8.matmul,
the MatmulLtState fields, init_8bit_state and Int8Params._quantize, each against the float64
reference; and the differences the README documents, as they are."""

import copy
import pickle

import pytest
import torch

import llmint8
from llmint8 import functional as F
from llmint8 import reference as ref
from llmint8.nn import Int8Params, Linear8bitLt, OutlierPooler

from conftest import assert_matches_reference, make_activations, make_weight

# --- functional: bitsandbytes' argument forms


def test_mm_dequant_flattens_stats_given_as_column_or_row_vectors(device):
    g = torch.Generator().manual_seed(0)
    A = torch.randint(-5000, 5000, (7, 17), generator=g, dtype=torch.int32).to(device)
    row, col = (torch.rand(7, generator=g) * 3).to(device), (torch.rand(17, generator=g) * 2).to(device)
    flat = F.int8_mm_dequant(A, row, col, dtype=torch.float32)
    assert_matches_reference(flat, ref.int8_mm_dequant(A.cpu(), row.cpu(), col.cpu()))
    # keepdim reductions give [rows, 1] and [N, 1]; a transposed one gives [1, N]
    for r, c in ((row[:, None], col[:, None]), (row[:, None], col[None, :]), (row, col[:, None])):
        assert torch.equal(F.int8_mm_dequant(A, r, c, dtype=torch.float32), flat)
    with pytest.raises(ValueError, match="'row_stats'"):
        F.int8_mm_dequant(A, row.reshape(7, 1).expand(7, 2), col)
    with pytest.raises(ValueError, match="'col_stats'"):
        F.int8_mm_dequant(A, row, col[:16, None])


def test_linear_matmul_takes_bitsandbytes_dtype_argument(device):
    g = torch.Generator().manual_seed(1)
    A = torch.randint(-127, 128, (5, 33), generator=g, dtype=torch.int8).to(device)
    B = torch.randint(-127, 128, (9, 33), generator=g, dtype=torch.int8).to(device)
    assert torch.equal(F.int8_linear_matmul(A, B, dtype=torch.int32).cpu(), ref.int8_linear_matmul(A.cpu(), B.cpu()))
    with pytest.raises(ValueError, match="argument 'dtype' must be torch.int32.*got torch.float16"):
        F.int8_linear_matmul(A, B, dtype=torch.float16)


def test_double_quant_takes_bitsandbytes_positional_arguments(device):
    A = make_activations((9, 33), torch.float16, device, outlier_cols=[4])
    got = F.int8_double_quant(A, None, None, None, None, 6.0)
    for out, expected in zip(got, ref.int8_double_quant(A.cpu(), 6.0)):
        assert torch.equal(out.cpu(), expected)
    for position, name in enumerate(("col_stats", "row_stats", "out_col", "out_row")):
        args = [None] * 4
        args[position] = torch.empty(33, device=device)
        with pytest.raises(ValueError, match=f"argument '{name}' must be None"):
            F.int8_double_quant(A, *args)
    with pytest.raises(ValueError, match="'col_stats' must be None.*pass threshold by name.*got float"):
        F.int8_double_quant(A, 6.0)  # threshold was the second argument before bitsandbytes' order


# --- llmint8.matmul (bitsandbytes.matmul)


def _matmul_grads_reference(x, W, g):
    """float64 dA = dY (CB SCB / 127), dW = dY^T A, db = sum of dY over rows (SPEC section 4)."""
    CB, SCB, _ = ref.int8_vectorwise_quant(W.float().cpu())
    g64, x64 = g.double().cpu().reshape(-1, g.shape[-1]), x.double().cpu().reshape(-1, x.shape[-1])
    return (g64 @ ref.dequantize_weight(CB, SCB)).reshape(x.shape), g64.t() @ x64, g64.sum(0)


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_matmul_quantizes_a_float_weight_and_differentiates_it(threshold, dtype, device):
    x = make_activations((3, 5, 64), dtype, device, outlier_cols=[7]).requires_grad_()
    W = make_weight(24, 64, device)[0].to(dtype).requires_grad_()
    bias = torch.randn(24, dtype=dtype, device=device, requires_grad=True)
    state = llmint8.MatmulLtState(has_fp16_weights=True)
    y = llmint8.matmul(x, W, state=state, threshold=threshold, bias=bias)
    assert state.threshold == threshold and y.dtype == dtype and y.shape == (3, 5, 24)
    CB, SCB, _ = ref.int8_vectorwise_quant(W.detach().float().cpu())
    assert torch.equal(state.CB.cpu(), CB) and torch.equal(state.SCB.cpu(), SCB)
    assert_matches_reference(y, ref.int8_linear(x.detach().cpu(), CB, SCB, bias.detach().cpu(), threshold))
    g = torch.randn_like(y)
    y.backward(g)
    dA, dW, db = _matmul_grads_reference(x, W.detach(), g)
    assert_matches_reference(x.grad, dA)
    assert_matches_reference(W.grad, dW)
    assert_matches_reference(bias.grad, db)


def test_matmul_with_frozen_codes_in_the_state_leaves_b_unread(device):
    _, CB, SCB = make_weight(24, 64, device)
    state = llmint8.MatmulLtState(CB=CB.to(device), SCB=SCB.to(device), has_fp16_weights=False, threshold=6.0)
    x = make_activations((4, 64), torch.bfloat16, device, outlier_cols=[0, 63])
    y = llmint8.matmul(x, CB.t(), state=state)  # bitsandbytes' tests pass the codes transposed: unread
    assert_matches_reference(y, ref.int8_linear(x.cpu(), CB.cpu(), SCB.cpu(), None, 6.0))
    out = torch.empty_like(y)
    assert llmint8.matmul(x, None, out=out, state=state) is out and torch.equal(out, y)
    state.reset_grads()  # no codes left: B is quantized again
    W = ref.dequantize_weight(CB, SCB).float().to(device)
    assert torch.equal(llmint8.matmul(x, W, state=state), y) and torch.equal(state.CB.cpu(), CB.cpu())


def test_matmul_bad_input_names_the_argument():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="argument 'B' must be a weight \\[N, K\\].*got 3 dimension"):
        llmint8.matmul(x, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="argument 'B' must be a weight.*got NoneType"):
        llmint8.matmul(x, None)
    with pytest.raises(ValueError, match="argument 'threshold' must be a finite number >= 0"):
        llmint8.matmul(x, torch.randn(3, 4), threshold=-1.0)
    with pytest.raises(ValueError, match="size 4 in dimension 1"):
        llmint8.matmul(x, torch.randn(3, 5))


# --- MatmulLtState


def test_state_carries_bitsandbytes_fields_and_reset_grads():
    state = llmint8.MatmulLtState(threshold=6.0)
    assert (state.CBt, state.SB, state.SBt, state.subB, state.outlier_pool) == (None,) * 5
    assert state.has_accumulated_gradients is False and state.force_no_igemmlt is False
    state.force_no_igemmlt = True  # bitsandbytes-era code sets it; nothing reads it
    state.CB, state.SCB, state.CBt = torch.ones(2, 2, dtype=torch.int8), torch.ones(2), torch.ones(2, 2)
    state.reset_grads()
    assert (state.CB, state.SCB, state.CBt, state.SB, state.SBt) == (None,) * 5 and state.threshold == 6.0
    for name in ("CxB", "CxBt", "formatB", "_tile_indices"):
        with pytest.warns(FutureWarning, match=f"MatmulLtState.{name} belongs to bitsandbytes' retired"):
            assert getattr(state, name) is None
    with pytest.raises(AttributeError, match="no attribute 'frobnicate'"):
        state.frobnicate
    assert copy.deepcopy(state) == state and pickle.loads(pickle.dumps(state)) == state


# --- Linear8bitLt and Int8Params


def test_init_8bit_state_quantizes_a_never_moved_layer_and_keeps_codes_on_the_weight(device):
    torch.manual_seed(0)
    layer = Linear8bitLt(64, 24, has_fp16_weights=False, threshold=6.0, device=device)
    W = layer.weight.detach().clone()
    CB, SCB = layer.init_8bit_state()
    expected_CB, expected_SCB, _ = ref.int8_vectorwise_quant(W.cpu())
    assert torch.equal(CB.cpu(), expected_CB) and torch.equal(SCB.cpu(), expected_SCB)
    assert layer.state.CB is CB and layer.state.SCB is SCB
    # Difference from bitsandbytes (README): the weight keeps its codes and scales, so saving still works.
    assert layer.weight.CB is CB and layer.weight.SCB is SCB
    assert torch.equal(layer.state_dict()["SCB"], SCB)

    trainable = Linear8bitLt(64, 24, has_fp16_weights=True, device=device)
    CB, SCB = trainable.init_8bit_state()
    assert trainable.weight.dtype == torch.float32  # the float master weight stays; its codes go to the state
    assert torch.equal(CB.cpu(), ref.int8_vectorwise_quant(trainable.weight.detach().cpu())[0])


def test_int8params_quantize_in_place_once(device):
    torch.manual_seed(0)
    W = torch.randn(16, 24)
    param = Int8Params(W.clone(), requires_grad=True, has_fp16_weights=False)
    assert param._quantize(device) is param
    CB, SCB, _ = ref.int8_vectorwise_quant(W)
    assert param.dtype == torch.int8 and param.device.type == device and not param.requires_grad
    assert torch.equal(param.cpu(), CB) and torch.equal(param.SCB.cpu(), SCB) and param.CB is not None
    assert param._quantize(device) is param and torch.equal(param.cpu(), CB)  # int8 data: never quantized again
    trainable = Int8Params(W.clone(), requires_grad=True, has_fp16_weights=True)._quantize(device)
    assert trainable.dtype == torch.float32 and torch.equal(trainable.cpu(), W)


def test_quantized_checkpoint_with_a_float_weight_says_what_to_do():
    layer = Linear8bitLt(8, 4, has_fp16_weights=False)
    entries = layer.state_dict()
    entries["SCB"] = torch.ones(4)
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="SCB given with a float weight: SCB holds the row scales of int8 codes.*"
                                           "drop 'SCB' and 'weight_format' to load the float weight"):
        layer.load_state_dict(entries)
    assert torch.equal(layer.weight, before)
    del entries["SCB"]
    layer.load_state_dict(entries)
    assert layer.to("cpu").weight.dtype == torch.int8


def test_int8_checkpoint_into_a_training_mode_layer_is_refused():
    source = Linear8bitLt(8, 4, has_fp16_weights=False).to("cpu")
    layer = Linear8bitLt(8, 4, has_fp16_weights=True)
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="weight: int8 codes cannot load into a layer with has_fp16_weights=True"):
        layer.load_state_dict(source.state_dict())
    assert layer.weight.dtype == torch.float32 and torch.equal(layer.weight, before)


def test_tied_float_weight_stays_float_is_quantized_each_forward_and_trains():
    torch.manual_seed(0)
    layer = Linear8bitLt(64, 24, has_fp16_weights=False, threshold=6.0)
    shared = torch.nn.Parameter(torch.randn(24, 64) / 8)  # e.g. tied to another module's weight
    layer.weight = shared
    entries = layer.state_dict()
    assert "SCB" not in entries and "weight_format" not in entries and entries["weight"].dtype == torch.float32
    x = make_activations((4, 64), torch.float32, "cpu", outlier_cols=[2])
    bias = layer.bias.detach()
    for scale in (1.0, 2.0):  # an update through the other module is seen at the next forward
        with torch.no_grad():
            shared.mul_(scale)
        CB, SCB, _ = ref.int8_vectorwise_quant(shared.detach())
        out = layer(x)
        assert_matches_reference(out, ref.int8_linear(x, CB, SCB, bias, 6.0))
    assert layer.weight is shared and shared.dtype == torch.float32
    out.sum().backward()
    assert_matches_reference(shared.grad, torch.ones(4, 24, dtype=torch.float64).t() @ x.double())
    with pytest.raises(RuntimeError, match="weight: int8 codes cannot load into a plain float Parameter"):
        layer.load_state_dict(Linear8bitLt(64, 24, has_fp16_weights=False).to("cpu").state_dict())
    assert layer.weight is shared


# --- documented differences (README, "Differences from bitsandbytes")


def test_default_forward_records_no_outlier_columns_and_pools_only_when_asked(device):
    layer = Linear8bitLt(64, 24, has_fp16_weights=False, threshold=6.0).to(device)
    assert layer.state.use_pool is False  # bitsandbytes turns it on here (and never reads it)
    x = make_activations((4, 64), torch.float16, device, outlier_cols=[5, 40])
    expected = ref.int8_linear(x.cpu(), layer.weight.cpu(), layer.weight.SCB.cpu(), layer.bias.detach().cpu(), 6.0)
    if device == "cuda":  # the reason: the default forward never waits for the GPU
        torch.cuda.set_sync_debug_mode("error")
    try:
        out = layer(x)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert layer.state.idx is None
    assert_matches_reference(out, expected)
    OutlierPooler.reset()
    layer.state.use_pool = True  # opt-in: records the columns (and synchronizes to do so)
    assert_matches_reference(layer(x), expected)
    assert layer.state.idx.tolist() == [5, 40]
    OutlierPooler.reset()


def test_forward_leaves_the_bias_in_its_own_dtype(device):
    torch.manual_seed(0)
    layer = Linear8bitLt(64, 24, has_fp16_weights=False, threshold=6.0).to(device)
    bias = layer.bias
    x = make_activations((4, 64), torch.float16, device, outlier_cols=[9])
    out = layer(x)
    # bitsandbytes converts the bias parameter to fp16 here; it stays fp32 and is added in fp32
    assert out.dtype == torch.float16 and layer.bias is bias and bias.dtype == torch.float32
    assert_matches_reference(out, ref.int8_linear(x.cpu(), layer.weight.cpu(), layer.weight.SCB.cpu(),
                                                  bias.detach().cpu(), 6.0))
