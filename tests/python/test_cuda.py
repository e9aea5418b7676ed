"""CUDA-only behaviour: every product backend and quantization kernel against the float64
reference, CPU/GPU bit equality, CUDA graph capture of decode and prefill steps, the
sync-free and allocation-free layer op, kernel counts at decode sizes."""

import os

import pytest
import torch

import llmint8
from conftest import assert_matches_reference, make_activations, make_weight

ops = torch.ops.llmint8

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def outlier_set(K, count):
    """count columns: the first and the last, the rest spread between."""
    if count == 0:
        return []
    cols = [0, K - 1][:count]
    return cols + [1 + (i * (K - 2)) // count for i in range(2, count)]


def cuda_kernels(call):
    """Runs call() under torch.profiler; returns its result and the CUDA kernels it launched."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        result = call()
        torch.cuda.synchronize()
    return result, [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def reference_linear(A, CB, SCB, bias, threshold):
    """The float64 LLM.int8() forward, computed on A's device (pure PyTorch)."""
    return llmint8.reference.int8_linear(A, CB, SCB, bias, threshold)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M", [1, 2, 5, 8, 9, 16, 17, 31, 64, 257, 1025, 4096])
def test_layer_op_matches_reference_on_every_path(dtype, M):
    # K % 16 == 0 takes the vector and Hopper paths, K = 2051 the scalar loads and the int32 GEMM.
    N = 1032
    for K in (2048, 2051):
        _, CB, SCB = make_weight(N, K, "cuda", seed=K)
        bias = torch.randn(N, device="cuda", dtype=dtype)
        # 200 outlier columns: past the gathered ones (64); gemv_fused takes any count.
        for count, threshold in ((0, 6.0), (1, 6.0), (9, 6.0), (64, 6.0), (80, 6.0), (200, 6.0), (9, 0.0)):
            A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, count), seed=M + count)
            out = ops.int8_linear(A, CB, SCB, bias, threshold)
            assert out.dtype == dtype and out.shape == (M, N)
            assert_matches_reference(out, reference_linear(A, CB, SCB, bias, threshold))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M,K", [(1, 1024), (3, 4096), (5, 4099), (16, 4096), (16, 28672), (3, 16), (16, 7)])
def test_decode_quantization_matches_reference_bit_for_bit(dtype, M, K):
    # 16 x 4096 and larger run on a cluster of blocks on sm_90; 4099 and 7 take element loads.
    # Loads of 1 to 8 elements (the widest that gives every thread columns): 16 x 4096 takes 1,
    # 1 x 1024 two, 16 x 28672 four, 3 x 4096 (one block) eight.
    A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, min(K, 9)), seed=K)
    for threshold in (0.0, 6.0):
        CA, SCA, cols = ops.int8_vectorwise_quant(A, threshold)
        ref = llmint8.reference.int8_vectorwise_quant(A.cpu(), threshold)
        assert torch.equal(CA.cpu(), ref[0]) and torch.equal(SCA.cpu(), ref[1])
        assert (cols is None) == (ref[2] is None)
        if cols is not None:
            assert torch.equal(cols.cpu(), ref[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_codes_and_int32_products_equal_cpu_bit_for_bit(dtype, threshold):
    A = make_activations((33, 4099), dtype, "cpu", outlier_cols=[0, 7, 4098])
    _, CB, _ = make_weight(520, 4099, "cpu")
    cpu = ops.int8_vectorwise_quant(A, threshold)
    gpu = ops.int8_vectorwise_quant(A.cuda(), threshold)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
    for K in (4096, 4099):  # cuBLASLt path and the exact fallback
        a, b = cpu[0][:, :K].contiguous(), CB[:, :K].contiguous()
        assert torch.equal(ops.int8_linear_matmul(a, b), ops.int8_linear_matmul(a.cuda(), b.cuda()).cpu())


def capture_and_replay(M, dtype, with_bias, threshold, seed):
    """Captures the layer op in a CUDA graph, then replays it with new inputs carrying 0, 1, 9
    and 80 outlier columns (the count lives on the device): each replay equals an eager call."""
    K, N = 4096, 1024
    _, CB, SCB = make_weight(N, K, "cuda")
    bias = torch.randn(N, device="cuda", dtype=dtype) if with_bias else None
    static_x = make_activations((M, K), dtype, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLASLt plans, workspace)
        for _ in range(2):
            ops.int8_linear(static_x, CB, SCB, bias, threshold)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # fails if the op synchronizes with the host
        static_y = ops.int8_linear(static_x, CB, SCB, bias, threshold)
    for i, count in enumerate([0, 1, 9, 80]):
        x = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, count), seed=seed + i)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, ops.int8_linear(x, CB, SCB, bias, threshold))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
@pytest.mark.parametrize("M", [1, 16])
def test_decode_step_captured_in_cuda_graph_and_replayed(threshold, M):
    capture_and_replay(M, torch.float16, True, threshold, seed=10)


@pytest.mark.parametrize("threshold", [0.0, 6.0])
@pytest.mark.parametrize("M", [32, 64, 300])
def test_prefill_step_captured_in_cuda_graph_and_replayed(threshold, M):
    capture_and_replay(M, torch.bfloat16, True, threshold, seed=20)


def test_layer_op_does_not_synchronize():
    A = make_activations((16, 1024), torch.bfloat16, "cuda", outlier_cols=[1, 2, 3])
    B = make_activations((300, 1024), torch.bfloat16, "cuda", outlier_cols=[1, 2, 3])
    _, CB, SCB = make_weight(256, 1024, "cuda")
    ops.int8_linear(A, CB, SCB, None, 6.0)  # warm-up
    ops.int8_linear(B, CB, SCB, None, 6.0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in (A, B):
            ops.int8_linear(x, CB, SCB, None, 6.0)
            ops.int8_linear(x, CB, SCB, None, 0.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_decode_allocates_only_the_output_and_runs_two_kernels(threshold):
    A = make_activations((4, 4096), torch.float16, "cuda", outlier_cols=[5, 900])
    _, CB, SCB = make_weight(1024, 4096, "cuda")
    bias = torch.randn(1024, device="cuda", dtype=torch.float16)
    ops.int8_linear(A, CB, SCB, bias, threshold)  # warm-up: the per-stream workspace
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    ops.int8_linear(A, CB, SCB, bias, threshold)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] - before == 1  # the output
    _, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, bias, threshold))
    assert len(kernels) <= 2, kernels


@pytest.mark.parametrize("threshold", [0.0, 6.0])
@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("K", [4096, 11008])
def test_one_or_two_row_decode_is_one_kernel(threshold, M, K):
    # gemv_fused quantizes the activations, finds their outlier columns and streams the weight;
    # two rows of 11008 at t=6 take 67 KB of shared memory (past the 48 KB default).
    A = make_activations((M, K), torch.float16, "cuda", outlier_cols=[5, 900])
    _, CB, SCB = make_weight(1024, K, "cuda")
    bias = torch.randn(1024, device="cuda", dtype=torch.float16)
    ops.int8_linear(A, CB, SCB, bias, threshold)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, bias, threshold))
    assert torch.cuda.memory_stats()["allocation.all.allocated"] - before == 1  # the output
    assert len(kernels) == 1 and "gemv_fused" in kernels[0], kernels
    assert_matches_reference(out, reference_linear(A, CB, SCB, bias, threshold))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M", [1, 2])
def test_fused_decode_loops_over_rows_past_one_resident_wave(dtype, M):
    # gemv_fused launches at most the blocks that fit on the card at once (16 rows each at this
    # K); with 40003 rows each warp takes several, the last stride partly past the end.
    N, K = 40003, 256
    _, CB, SCB = make_weight(N, K, "cuda", seed=3)
    bias = torch.randn(N, device="cuda", dtype=dtype)
    for count, threshold in ((0, 0.0), (3, 6.0), (200, 6.0)):
        A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, count), seed=count)
        out = ops.int8_linear(A, CB, SCB, bias, threshold)
        assert_matches_reference(out, reference_linear(A, CB, SCB, bias, threshold))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("K", [8192, 8208])
def test_fused_decode_block_sizes(dtype, M, K):
    # gemv_fused takes 16 weight rows a block up to K = 8192 and 32 above; 4500 rows are more
    # than one resident wave of 32-row blocks on an H200 (132 SMs), so warps loop there too.
    N = 4500
    _, CB, SCB = make_weight(N, K, "cuda", seed=K)
    bias = torch.randn(N, device="cuda", dtype=dtype)
    for count, threshold in ((0, 0.0), (1, 6.0), (33, 6.0), (320, 6.0)):
        A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, count), seed=count)
        out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, bias, threshold))
        assert len(kernels) == 1 and "gemv_fused" in kernels[0], kernels
        assert_matches_reference(out, reference_linear(A, CB, SCB, bias, threshold))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("M", [1, 2, 3, 8, 16, 17, 64, 300, 2048])
def test_most_columns_outliers(dtype, M):
    # 700 of 1024 columns past the threshold (as in a random model's down_proj). One or two
    # rows: gemv_fused lists them and gathers each weight row there. 3 to 16 rows: small_m_mma
    # takes them 16 at a time on the tensor cores (fp32 as three bf16 parts); fp16 and bf16 take
    # the dequantized-activation products from 17 rows (17 to 64 on any card, 65 to 128 on
    # Hopper); past that (and fp32) the GEMM epilogue takes 8, the tensor-core leftover pass the
    # rest (fp16, bf16), the float pass fp32's.
    K, N = 1024, 1000
    _, CB, SCB = make_weight(N, K, "cuda", seed=5)
    bias = torch.randn(N, device="cuda", dtype=dtype)
    A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, 700), seed=M)
    out = ops.int8_linear(A, CB, SCB, bias, 6.0)
    assert_matches_reference(out, reference_linear(A, CB, SCB, bias, 6.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("count", [1, 31, 32, 33, 65])
@pytest.mark.parametrize("K", [2048, 2080])
def test_fused_decode_outlier_list_steps(dtype, M, count, K):
    # gemv_fused keeps the first 32 listed columns one a lane and gathers the rest after the
    # stream, 32 a step: counts on both sides of a step. The stream's L2 policy switches with the
    # count too (from 33). With one row a lane loads its held column's byte with its stream's last
    # chunks: at K = 2048 (128 16-byte chunks) every lane streams one step, at 2080 (130) lanes 0-1
    # two steps and lanes 2-31 one; with two rows it is copied into shared memory as the row starts.
    N = 1000
    _, CB, SCB = make_weight(N, K, "cuda", seed=7)
    A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, count), seed=count)
    out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, None, 6.0))
    assert any("gemv_fused" in k for k in kernels), kernels
    assert_matches_reference(out, reference_linear(A, CB, SCB, None, 6.0))


@pytest.mark.parametrize("case", ["too_wide", "misaligned"])
def test_decode_the_fused_kernel_does_not_take(case):
    # 2 x 49152 codes do not fit gemv_fused's 96 KB of shared memory; a row starting 8 bytes into
    # its storage is not 16-byte aligned. Both go through the quantizer, then gemv_dp4a.
    K = 49152 if case == "too_wide" else 2048
    _, CB, SCB = make_weight(264, K, "cuda")
    if case == "too_wide":
        A = make_activations((2, K), torch.float16, "cuda", outlier_cols=[0, 7, 1000])
    else:
        A = make_activations((1, K + 8), torch.float16, "cuda", outlier_cols=[4, 11, 1004])[:, 4:4 + K]
        assert A.data_ptr() % 16 == 8
    for threshold in (0.0, 6.0):
        out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, None, threshold))
        assert not any("gemv_fused" in k for k in kernels) and any("gemv_dp4a" in k for k in kernels), kernels
        assert_matches_reference(out, reference_linear(A, CB, SCB, None, threshold))


def test_build_info_lists_the_product_backends():
    names = [b.split(":")[0] for b in llmint8.build_info()["cuda_product_backends"]]
    assert names[:4] == ["gemv_fused", "gemv_dp4a", "small_m_mma", "dequantized_mma"] and names[-1] == "int32_gemm"
    if llmint8.build_info()["fused_sm90_gemm"]:
        assert names[4:6] == ["sm90_dequantized", "sm90_cutlass"], names


# The fused Hopper GEMM (CUTLASS, sm_90a) takes M > 16 with K % 16 == 0 and 16-byte output rows.
def on_hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


needs_fused_gemm = pytest.mark.skipif(
    not (on_hopper() and llmint8.build_info()["fused_sm90_gemm"]), reason="needs the fused GEMM and an sm_90 card")


def test_fused_gemm_is_built_where_required():
    # tests/run_gpu.sh sets this on the GPU machine, so that a build that silently lost CUTLASS fails.
    if os.environ.get("LLMINT8_REQUIRE_FUSED_GEMM") == "1" and on_hopper():
        assert llmint8.build_info()["fused_sm90_gemm"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("M,K,N", [(1, 256, 136), (2, 1024, 1000), (3, 256, 136), (17, 1024, 1000), (300, 4096, 520),
                                   (1030, 2048, 4104)])
@pytest.mark.parametrize("bias_dtype", [None, "same", torch.float32])
def test_scaled_mm_matches_reference(dtype, M, K, N, bias_dtype):
    A = make_activations((M, K), torch.float32, "cuda")
    _, CB, SCB = make_weight(N, K, "cuda")
    CA, SCA, _ = ops.int8_vectorwise_quant(A, 0.0)
    bias = None if bias_dtype is None else torch.randn(N, device="cuda", dtype=dtype if bias_dtype == "same" else bias_dtype)
    out = ops.int8_scaled_mm(CA, CB, SCA, SCB, bias, dtype)
    assert out.dtype == dtype
    expected = llmint8.reference.int8_scaled_mm(CA, CB, SCA, SCB, bias)
    assert_matches_reference(out, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_outliers", [0, 8, 9, 64, 80])  # 8 in the GEMM epilogue, to 64 from the gathered buffers
@pytest.mark.parametrize("M", [32, 257, 1024])  # the leftover pass splits into partial sums at small M
def test_mixed_scaled_mm_matches_reference(dtype, n_outliers, M):
    K, N = 2048, 1032
    A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, n_outliers), seed=3)
    _, CB, SCB = make_weight(N, K, "cuda")
    bias = torch.randn(N, device="cuda", dtype=dtype)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    assert cols.numel() == n_outliers
    out, sub_a = ops.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, bias)
    assert torch.equal(sub_a, A[:, cols])
    assert_matches_reference(out, reference_linear(A, CB, SCB, bias, 6.0))


def with_most_columns_outliers(M, dtype, bias_type, weight_seed):
    """A 1024 x 1000 layer and M rows with 700 outlier columns; returns (A, CB, SCB, bias, out,
    kernels) of a t=6 call after a warm-up."""
    K, N = 1024, 1000
    _, CB, SCB = make_weight(N, K, "cuda", seed=weight_seed)
    bias = None if bias_type is None else torch.randn(N, device="cuda", dtype=bias_type)
    A = make_activations((M, K), dtype, "cuda", outlier_cols=outlier_set(K, 700), seed=M)
    ops.int8_linear(A, CB, SCB, bias, 6.0)  # warm-up
    out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, bias, 6.0))
    return A, CB, SCB, bias, out, kernels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("M", [17, 24, 32, 33, 48, 64])
@pytest.mark.parametrize("bias_dtype", [None, "same", torch.float32])
def test_short_prefill_with_outliers_takes_the_dequantized_mma(dtype, M, bias_dtype):
    # 17 to 64 rows at t=6 (dequantized_mma): outlier flags, the rows dequantized, one tensor-core
    # product over K splits whose sums meet in a workspace, and no outlier pass however many
    # columns. N = 1000: the last block of weight rows is partial; past 32 rows a second group of
    # rows (33: one row in it, 48: half full).
    bias_type = dtype if bias_dtype == "same" else bias_dtype
    A, CB, SCB, bias, out, kernels = with_most_columns_outliers(M, dtype, bias_type, weight_seed=11)
    assert any("dequantized_mma" in k for k in kernels), kernels
    assert not any("outlier_mma" in k or "small_m" in k for k in kernels), kernels
    assert_matches_reference(out, reference_linear(A, CB, SCB, bias, 6.0))
    assert torch.equal(out, ops.int8_linear(A, CB, SCB, bias, 6.0))  # the splits add in a fixed order


def test_dequantized_mma_leaves_long_rows_to_the_next_backend():
    # K = 131072 on 1024 weight rows would take over 200 K splits (the staged rows cap a block's
    # chunk at 640 codes): more than 1.25 waves of blocks on any card, so another path serves it.
    K, N, M = 131072, 1024, 17
    _, CB, SCB = make_weight(N, K, "cuda", seed=3)
    A = make_activations((M, K), torch.float16, "cuda", outlier_cols=outlier_set(K, 9), seed=3)
    out, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, None, 6.0))
    assert not any("dequantized_mma" in k for k in kernels), kernels
    assert_matches_reference(out, reference_linear(A, CB, SCB, None, 6.0))


@needs_fused_gemm
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("M", [65, 128])
def test_prefill_with_outliers_takes_the_dequantized_product(dtype, M):
    # 65 to 128 rows at t=6 on Hopper (sm90_dequantized): outlier flags, the rows dequantized, one
    # mixed-input GEMM, and no leftover outlier pass however many columns. t=0 keeps the int8 GEMM.
    A, CB, SCB, bias, out, kernels = with_most_columns_outliers(M, dtype, dtype, weight_seed=7)
    assert any("dequantize_rows" in k for k in kernels), kernels
    assert not any("dequantized_mma" in k for k in kernels), kernels
    assert not any("outlier_mma" in k or "gather_outlier" in k for k in kernels), kernels
    assert_matches_reference(out, reference_linear(A, CB, SCB, bias, 6.0))
    _, kernels = cuda_kernels(lambda: ops.int8_linear(A, CB, SCB, bias, 0.0))
    assert not any("dequantize_rows" in k for k in kernels), kernels


@needs_fused_gemm
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_fused_layer_op_keeps_no_int32_product_in_memory(threshold):
    # PERF.md: the forward allocates nothing that grows with M*N beyond the output. An int32
    # product would add 4*M*N bytes (64 MiB here); the scratch that remains is O(M*K + N).
    M, K, N = 2048, 1024, 8192
    A = make_activations((M, K), torch.float16, "cuda", outlier_cols=[1, 500, 900])
    _, CB, SCB = make_weight(N, K, "cuda")
    ops.int8_linear(A, CB, SCB, None, threshold)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = ops.int8_linear(A, CB, SCB, None, threshold)
    extra = torch.cuda.max_memory_allocated() - before - out.numel() * out.element_size()
    assert extra < 8 * 2**20, f"{extra / 2**20:.1f} MiB of scratch beyond the output"
