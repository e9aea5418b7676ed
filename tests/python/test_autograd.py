"""MatMul8bitLt (the Autograd kernel of int8_linear) against a float64 reference."""

import pytest
import torch

from llmint8 import reference as ref

from conftest import assert_matches_reference, make_activations, make_weight

ops = torch.ops.llmint8


@pytest.mark.parametrize("threshold", [0.0, 6.0])
@pytest.mark.parametrize("shape", [(7, 33), (2, 5, 64), (1, 1025)])
def test_grads_of_input_and_bias(shape, threshold, dtype, device):
    K, N = shape[-1], 17
    A = make_activations(shape, dtype, device, outlier_cols=[0, K // 2]).requires_grad_()
    _, CB, SCB = make_weight(N, K, device)
    bias = torch.randn(N, dtype=dtype, device=device, requires_grad=True)
    dY = torch.randn(*shape[:-1], N).to(dtype=dtype, device=device)
    out = ops.int8_linear(A, CB, SCB, bias, threshold)
    dA, db = torch.autograd.grad(out, (A, bias), dY)
    W64 = ref.dequantize_weight(CB.cpu(), SCB.cpu())
    dY64 = dY.cpu().double().reshape(-1, N)
    assert dA.dtype == dtype and dA.shape == A.shape and db.dtype == dtype
    assert_matches_reference(dA, (dY64 @ W64).reshape(A.shape))
    assert_matches_reference(db, dY64.sum(0))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_grad_of_float_weight_matches_float_reference(threshold, dtype, device):
    """has_fp16_weights mode: dW = dY^T A over every column, outlier columns counted once."""
    A = make_activations((9, 48), dtype, device, outlier_cols=[3, 40]).requires_grad_()
    W, CB, SCB = make_weight(12, 48, device)
    W = W.to(dtype).requires_grad_()
    dY = torch.randn(9, 12).to(dtype=dtype, device=device)
    out = ops.int8_linear(A, CB, SCB, None, threshold, W)
    dA, dW = torch.autograd.grad(out, (A, W), dY)
    # The float reference: Y = A @ W^T, so dW = dY^T @ A.
    A64 = A.detach().cpu().double()
    W64 = W.detach().cpu().double().requires_grad_()
    (A64 @ W64.t()).backward(dY.cpu().double())
    assert dW.dtype == dtype
    assert_matches_reference(dW, W64.grad)
    assert_matches_reference(dA, dY.cpu().double() @ ref.dequantize_weight(CB.cpu(), SCB.cpu()))


def test_no_grad_needed_and_empty_batch(device):
    _, CB, SCB = make_weight(6, 10, device)
    A = torch.randn(0, 10, device=device, requires_grad=True)
    out = ops.int8_linear(A, CB, SCB, None, 6.0)
    (dA,) = torch.autograd.grad(out.sum(), (A,))
    assert dA.shape == (0, 10)
    with torch.no_grad():
        assert not ops.int8_linear(torch.randn(3, 10, device=device), CB, SCB, None, 0.0).requires_grad


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_graph_node_only_when_an_input_wants_a_gradient(threshold, device):
    """Inference skips the autograd node (host time per eager call); a bias alone that wants a
    gradient still gets one, and every route gives the same values."""
    A = make_activations((5, 40), torch.float32, device, outlier_cols=[2, 39])
    _, CB, SCB = make_weight(7, 40, device)
    bias = torch.randn(7, device=device)
    plain = ops.int8_linear(A, CB, SCB, bias, threshold)
    assert plain.grad_fn is None and not plain.requires_grad
    with torch.no_grad():
        assert torch.equal(ops.int8_linear(A, CB, SCB, bias.clone().requires_grad_(), threshold), plain)
    trained = bias.clone().requires_grad_()
    out = ops.int8_linear(A, CB, SCB, trained, threshold)
    assert out.grad_fn is not None and torch.equal(out.detach(), plain)
    dY = torch.randn(5, 7, device=device)
    (db,) = torch.autograd.grad(out, (trained,), dY)
    assert_matches_reference(db, dY.cpu().double().sum(0))


def test_lora_style_training_step_reduces_loss(device):
    """A frozen int8 base with a trainable bias and input adapter: gradients flow and SGD helps."""
    torch.manual_seed(0)
    _, CB, SCB = make_weight(8, 32, device)
    adapter = torch.zeros(32, 32, device=device, requires_grad=True)
    bias = torch.zeros(8, device=device, requires_grad=True)
    x = torch.randn(64, 32, device=device)
    target = torch.randn(64, 8, device=device)
    opt = torch.optim.SGD([adapter, bias], lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (ops.int8_linear(x + x @ adapter, CB, SCB, bias, 6.0) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
