"""Finite features of any magnitude: VidCom² and EVS are scale-invariant, so scaling a video
must not change its selection, even where fp32 sums of squares overflow (issue #16, H12)."""
import numpy as np
import pytest
import torch

import token_compressor as tc
from golden import CASES, load_case
from token_compressor.compressors.reference import evs_reference
from token_compressor.kernels import vidcom2_scores_torch
from token_compressor.kernels.ranges import MAX_EXPONENT, downscale_for_range


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return load_case(request.param)


# 1e19: squares ~1e38, their sums overflow fp32 (before the fix every frame kept 1 token). bf16
# is scaled by a power of two (1.8e19) so that the scaled values stay exactly representable.
HUGE = [(torch.float32, 1e19), (torch.float32, 2.0**64), (torch.bfloat16, 2.0**64)]


@pytest.mark.parametrize("dtype,factor", HUGE)
def test_huge_features_select_as_the_golden_run(case, dtype, factor):
    x = (case["x32"] * factor).to(dtype)
    assert torch.isfinite(x).all()
    sel = tc.select(x, case["T"], case["ratio"])
    assert np.array_equal(sel.budgets.numpy(), case["ks"])
    assert np.array_equal(sel.keep.numpy(), case["global_idx"])


def test_power_of_two_scaling_leaves_the_scores_bit_identical(case):
    x = case["x32"].view(case["T"], case["N"], case["D"])
    plain = vidcom2_scores_torch(x)
    for scaled in (x * 2.0**70, (x * 2.0**70).to(torch.bfloat16)):  # rescaled by exactly 2**-k
        got = vidcom2_scores_torch(scaled)
        assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])


@pytest.mark.parametrize("dtype,factor", HUGE)
def test_huge_features_evs_selects_as_unscaled(case, dtype, factor):
    T, N, D = case["T"], case["N"], case["D"]
    keep_ref, _ = evs_reference(case["x32"].view(T, N, D), 0.25)
    sel = tc.select((case["x32"] * factor).to(dtype), T, 0.25, method="evs")
    assert torch.equal(sel.keep, keep_ref)


def test_uniform_on_huge_features():
    case = load_case(CASES[0])
    T = case["T"]
    ref = tc.select(case["x32"], T, 0.25, method="uniform")
    assert torch.equal(tc.select(case["x32"] * 1e19, T, 0.25, method="uniform").keep, ref.keep)


def test_downscale_for_range():
    assert downscale_for_range(torch.tensor([1.0, -3.0e9])) == 1.0  # ordinary values: untouched
    for big in (2.0**40, -1e19, 3.0e38):
        s = downscale_for_range(torch.tensor([0.5, big]))
        assert s < 1.0 and abs(big) * s < 2.0**MAX_EXPONENT <= 2 * abs(big) * s
        assert s == 2.0 ** round(np.log2(s))  # a power of two: the rescale is exact
