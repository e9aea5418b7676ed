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
    bias = torch.randn(32, generator=torch.Generator().manual_seed(2)).to(torch.float16).to(device)

    def layer(x):  # the op, and an elementwise op after it for the compiler to fuse
        y = ops.int8_linear(x, CB, SCB, bias, threshold)
        return y, torch.nn.functional.silu(y)

    compiled = torch.compile(layer, fullgraph=True)
    # A new batch size goes through the same compiled code (dynamic shapes, no outlier-count sync).
    A2 = make_activations((9, 64), torch.float16, device, outlier_cols=[5, 6], seed=3)
    for x in (A, A2):
        (y, act), (y_eager, act_eager) = compiled(x), layer(x)
        assert torch.equal(y, y_eager)  # the op runs as in eager mode
        # The compiler's fused silu may round differently from eager's: to within 1 fp16 ulp.
        torch.testing.assert_close(act, act_eager, rtol=1e-3, atol=1e-3)
