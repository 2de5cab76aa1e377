"""EVS: the blocked scorer selects exactly what vLLM's formulation selects from fp32 input."""
import pytest
import torch

import token_compressor as tc
from golden import CASES, load_case
from token_compressor.compressors.reference import evs_reference
from token_compressor.kernels.evs_scores import evs_dissimilarity_torch

RATIOS = (0.1, 0.25, 0.5, 0.9)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return load_case(request.param)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_evs_selects_as_vllm_from_fp32_on_golden_inputs(case, dtype):
    T, N, D = case["T"], case["N"], case["D"]
    # the golden features are exactly bf16 values: the bf16 input's fp32 upcast is x32
    x = case["x32"].to(dtype)
    _, dissim_ref = evs_reference(case["x32"].view(T, N, D), 0.5)
    # same elementwise operations in the same order as F.cosine_similarity: identical values
    assert torch.equal(evs_dissimilarity_torch(x.view(T, N, D)), dissim_ref)
    for ratio in RATIOS:
        keep_ref, _ = evs_reference(case["x32"].view(T, N, D), ratio)
        assert torch.equal(tc.select(x, T, ratio, method="evs").keep, keep_ref)


def test_evs_block_boundaries_and_single_frame():
    # blocks of whole frames: pairs that straddle two blocks must be scored like the others
    import token_compressor.kernels.evs_scores as evs_scores

    g = torch.Generator().manual_seed(3)
    T, N, D = 7, 5, 16
    x = torch.randn(T, N, D, generator=g)
    _, ref = evs_reference(x, 0.5)
    for rows in (1, N, 2 * N, 3 * N, 100 * N):
        old, evs_scores.BLOCK_ROWS = evs_scores.BLOCK_ROWS, rows
        try:
            assert torch.equal(evs_dissimilarity_torch(x), ref), rows
        finally:
            evs_scores.BLOCK_ROWS = old
    one = evs_dissimilarity_torch(x[:1])
    assert torch.equal(one, torch.full((1, N), 255.0))


def _largest_allocation(fn) -> int:
    """Bytes of the largest single CPU allocation any op makes while `fn` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


def test_evs_never_materialises_a_whole_video_in_fp32():
    T, N, D = 64, 64, 256  # blocks are ~256 rows: a whole video is 16 of them
    x = torch.randn(T * N, D, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    fp32_copy = T * N * D * 4
    assert _largest_allocation(lambda: evs_reference(x.view(T, N, D), 0.25)) >= fp32_copy  # the check sees it
    assert _largest_allocation(lambda: tc.select(x, T, 0.25, method="evs")) < fp32_copy // 4
