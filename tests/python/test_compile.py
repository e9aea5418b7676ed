"""torch.compile(fullgraph=True) of the layer op: no graph break at either threshold."""

import pytest
import torch

from conftest import make_activations, make_weight

ops = torch.ops.llmint8


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_compile_layer_op_fullgraph(threshold, device):
    torch._dynamo.reset()
    A = make_activations((4, 64), torch.float16, device, outlier_cols=[5])
    _, CB, SCB = make_weight(32, 64, device)
    bias = torch.randn(32, dtype=torch.float16, device=device)

    def layer(x):
        return torch.nn.functional.silu(ops.int8_linear(x, CB, SCB, bias, threshold))

    compiled = torch.compile(layer, fullgraph=True)
    eager = layer(A)
    assert torch.equal(compiled(A), eager)
    # A new batch size goes through the same compiled code (dynamic shapes, no outlier-count sync).
    A2 = make_activations((9, 64), torch.float16, device, outlier_cols=[5, 6], seed=3)
    assert torch.equal(compiled(A2), layer(A2))
