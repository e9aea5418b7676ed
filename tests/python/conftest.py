"""Shared fixtures: devices, inputs with planted outliers, error measures."""

import pytest
import torch

import llmint8  # noqa: F401  (loads the ops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32]
# The awkward sizes every op is tried on.
SIZES = [1, 7, 17, 1025, 5137]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request):
    return request.param


def make_activations(shape, dtype, device, outlier_cols=(), magnitude=30.0, seed=0):
    """x ~ N(0, 1) with the listed columns planted at about +-magnitude (as in LLMs past 6.7B)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    for c in outlier_cols:
        signs = torch.randint(0, 2, x.shape[:-1], generator=g) * 2 - 1
        x[..., c] = magnitude * signs + torch.randn(x.shape[:-1], generator=g)
    return x.to(dtype=dtype, device=device)


def make_weight(N, K, device, seed=1):
    """W ~ N(0, 1/K) in fp32 and its int8 quantization (CB, SCB) from the reference."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(N, K, generator=g) / max(K, 1) ** 0.5).to(device)
    CB, SCB, _ = llmint8.reference.int8_vectorwise_quant(W, 0.0)
    return W, CB, SCB


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (0 for empty tensors)."""
    ref = ref.double().cpu()
    out = out.double().cpu()
    if ref.numel() == 0:
        return 0.0
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def assert_matches_reference(out: torch.Tensor, ref64: torch.Tensor, factor: float = 2.0):
    """out may differ from the float64 reference by about the rounding of its own dtype:
    no worse than `factor` x the error of ref64 rounded to out.dtype, plus fp32 accumulation."""
    assert out.shape == ref64.shape, (out.shape, ref64.shape)
    assert torch.isfinite(out.float()).all() == torch.isfinite(ref64).all()
    baseline = rel_err(ref64.to(out.dtype), ref64)
    floor = 16 * torch.finfo(torch.float32).eps
    err = rel_err(out, ref64)
    assert err <= factor * baseline + floor, f"relative error {err:.3g} vs baseline {baseline:.3g} ({out.dtype})"
