"""`select`'s input check fused into the scorers' first pass (issue #25).

VidCom², its `uniform` ablation and EVS read every value in their first pass anyway; their sums
and norms prove the video finite and inside the range that needs no rescale, so `select` skips
its own min/max read of the whole video. Everything else must stay as it was: the same errors
for NaN/inf, the same normalisation of extreme magnitudes, the same selections."""
import math

import pytest
import torch

import token_compressor as tc
import token_compressor.selection as selection
from token_compressor.kernels import evs_scores, ranges, torch_scores
from token_compressor.registry import register_compressor, scans_input, unregister_compressor

SCANNING = ["vidcom2", "uniform", "evs"]
T, N, D = 6, 20, 48


def video(seed=0, dtype=torch.float32, T=T, N=N, D=D):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, D, generator=g) + torch.randn(1, N, D, generator=g)  # neighbouring frames alike
    return (x * torch.exp(torch.randn(D, generator=g))).reshape(T * N, D).to(dtype)


@pytest.fixture
def full_checks(monkeypatch):
    """Calls of `select`'s own full read of the values."""
    calls = []
    original = selection._check_values
    monkeypatch.setattr(selection, "_check_values", lambda f: (calls.append(1), original(f))[1])
    return calls


def test_which_builtins_scan():
    assert all(scans_input(m) for m in SCANNING)
    assert not any(scans_input(m) for m in ("dycoke", "holitom", "visionzip", "fastvid", "random", "none"))


@pytest.mark.parametrize("method", SCANNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_an_ordinary_video_is_not_read_again_for_the_check(method, dtype, full_checks):
    x = video(dtype=dtype)
    sel = tc.select(x, T, 0.3, method=method)
    assert full_checks == []
    # the result of calling the compressor on the checked video, as `select` did before
    assert torch.equal(sel.mask().view(T, N), tc.get_compressor(method)(x.view(T, N, D), 0.3))


@pytest.mark.parametrize("method", SCANNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("row", [0, 3, T * N - 1])  # inside the variance's shift rows, and the last row
def test_non_finite_values_keep_their_error(method, dtype, bad, row):
    x = video(dtype=dtype)
    x[row, 7] = bad
    with pytest.raises(ValueError, match=r"features contain 1 non-finite value\(s\) \(NaN or inf\)"):
        tc.select(x, T, 0.3, method=method)
    x[T * N // 2, :5] = float("nan")
    with pytest.raises(ValueError, match=r"features contain 6 non-finite value\(s\)"):
        tc.select(x, T, 0.3, method=method)


# max|x| in [2**(e-1), 2**e): around both ends of the range left alone ([2**-16, 2**32), e in
# [-15, 32]), the bands near them where the scorers' bounds cannot decide (the full check runs
# then), well inside, and far outside
EXPONENTS = [-80, -17, -16, -15, -14, -10, 0, 12, 20, 25, 30, 31, 32, 33, 70]


@pytest.mark.parametrize("method", SCANNING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_any_magnitude_selects_as_the_plain_video(method, dtype, full_checks):
    # VidCom² and EVS are invariant to a power-of-two scale, and select normalises the extremes
    x = video(seed=1)
    x = (x * 2.0 ** -math.frexp(float(x.abs().max()))[1]).to(dtype)  # max|x| in [0.5, 1)
    ref = tc.select(x, T, 0.3, method=method)
    for e in EXPONENTS:
        full_checks.clear()
        sel = tc.select(x * 2.0**e, T, 0.3, method=method)
        assert torch.equal(sel.keep, ref.keep), e
        if -10 <= e <= 20:  # well inside: vouched for by the scorer alone
            assert full_checks == [], e
        if e <= -16 or e >= 33:  # needs a rescale: the full check decided it
            assert full_checks == [1], e


@pytest.mark.parametrize("method", SCANNING)
def test_an_all_zero_video(method, full_checks):
    # nothing bounds max|x| away from 0 from the sums: the full check runs and the video passes
    sel = tc.select(torch.zeros(T * N, D), T, 0.3, method=method)
    assert sel.num_kept >= 1 and full_checks == [1]


def _vouched(monkeypatch, module, fn, x):
    seen = []
    monkeypatch.setattr(module, "vouch_for_input", lambda *args: seen.append(args))
    with ranges.scanning_input():
        try:
            fn(x)
        except ValueError:  # a non-finite video, not stopped by the recorder: the scorer refuses it later
            pass
    assert len(seen) == 1
    return seen[0]


def _hostile_videos():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(T * N, D, generator=g)
    spike = base.clone()
    spike[T * N - 1, 3] = 1e4  # one outlier in the last row
    shifted = base * 1e-3 + 50.0  # large mean, small spread: the shift carries the magnitude
    onehot = torch.zeros(T * N, D)
    onehot[torch.arange(T * N), torch.arange(T * N) % D] = -3.0
    const = torch.full((T * N, D), -7.25)
    tiny = base * 2.0**-14
    return [base, spike, shifted, onehot, const, tiny, base.to(torch.bfloat16) * 1e6]


@pytest.mark.parametrize("k", range(7))
def test_the_vouched_bounds_hold(k, monkeypatch):
    # the scorers' claims about max|x| are true (fp32 rounding: well inside the factor 2 that
    # `surely_in_range` keeps on each side)
    x = _hostile_videos()[k]
    amax = float(x.float().abs().max())
    for module, fn in ((torch_scores, torch_scores.vidcom2_scores_torch), (evs_scores, evs_scores.evs_dissimilarity_torch)):
        finite, lower, upper = _vouched(monkeypatch, module, fn, x.view(T, N, D))
        assert finite
        assert lower <= amax * (1 + 1e-3) and amax <= upper * (1 + 1e-3), (module.__name__, lower, amax, upper)


def test_the_vouched_finiteness_sees_every_row(monkeypatch):
    for row in (0, 1, T * N // 2, T * N - 1):
        for bad in (float("nan"), float("inf")):
            x = video()
            x[row, D - 1] = bad
            for module, fn in ((torch_scores, torch_scores.vidcom2_scores_torch),
                               (evs_scores, evs_scores.evs_dissimilarity_torch)):
                monkeypatch.setattr(module, "BLOCK_ROWS", 7)  # several blocks, chunks of frames
                assert _vouched(monkeypatch, module, fn, x.view(T, N, D))[0] is False, (module.__name__, row, bad)


def test_outside_select_a_scorer_checks_nothing():
    x = video()
    x[0, 0] = float("nan")  # no scan running: no error from the vouching, the scores are just NaN
    torch_scores.vidcom2_scores_torch(video().view(T, N, D))
    with pytest.raises(ValueError, match="non-finite"):  # the scorer's own rescale path still refuses
        torch_scores.vidcom2_scores_torch(x.view(T, N, D))


@pytest.fixture
def scanning_compressor():
    seen = []

    def fn(features, ratio, *, fail_on_nan: bool = False):
        seen.append(float(features.abs().max()))
        if fail_on_nan and bool(torch.isnan(features).any()):
            raise RuntimeError("the compressor's own failure")
        return torch.ones(features.shape[:2], dtype=torch.bool)

    register_compressor("scan_without_vouching", fn, scans_input=True)
    yield seen
    unregister_compressor("scan_without_vouching")


def test_a_scanning_compressor_that_does_not_vouch_is_checked_after(scanning_compressor, full_checks):
    assert tc.select(video(), T, 0.5, method="scan_without_vouching").num_kept == T * N
    assert full_checks == [1] and len(scanning_compressor) == 1  # checked once, called once
    huge = video() * 2.0**40
    tc.select(huge, T, 0.5, method="scan_without_vouching")  # called again on the normalised video
    assert scanning_compressor[-2] > 2.0**32 and 0.5 <= scanning_compressor[-1] < 1.0
    bad = video()
    bad[4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"1 non-finite value"):
        tc.select(bad, T, 0.5, method="scan_without_vouching")
    # a compressor that breaks on the bad input: the input's error, not the compressor's
    with pytest.raises(ValueError, match=r"1 non-finite value"):
        tc.select(bad, T, 0.5, method="scan_without_vouching", fail_on_nan=True)


def test_output_check_reads_the_merged_rows_without_a_copy():
    from torch.profiler import ProfilerActivity, profile

    T_, N_, D_ = 16, 512, 256
    mask = torch.zeros(T_, N_, dtype=torch.bool)
    mask[:, ::2] = True
    K = int(mask.sum())
    merged = torch.randn(K, D_)
    features = torch.empty(1, D_)  # only its dtype and device are looked at
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        selection._check_output((mask, merged), "m", features, T_, N_, D_)
    largest = max((e.cpu_memory_usage for e in prof.events()), default=0)
    assert largest < merged.numel() // 8  # isfinite(merged).all() made a bool copy: numel bytes
    merged[K - 1, D_ - 1] = float("inf")
    with pytest.raises(ValueError, match="returned 1 non-finite merged feature value"):
        selection._check_output((mask, merged), "m", features, T_, N_, D_)
