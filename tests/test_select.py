"""The `select` API: validation, invariants (hypothesis), baselines and the registry."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import token_compressor as tc
from token_compressor.compressors.baselines import evs_retained_count
from token_compressor.compressors.reference import vidcom2_reference

BUILTINS = ["dycoke", "evs", "none", "random", "uniform", "vidcom2", "visionzip"]


def video(T=4, N=16, D=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T * N, D, generator=g).to(dtype)


def test_builtins_are_registered():
    assert set(BUILTINS) <= set(tc.available_compressors())


@pytest.mark.parametrize(
    "features, num_frames, ratio, method, message",
    [
        (torch.randn(10, 8), 3, 0.25, "vidcom2", "not divisible by num_frames=3"),
        (torch.randn(0, 8), 1, 0.25, "vidcom2", "empty"),
        (torch.randn(4, 0), 1, 0.25, "vidcom2", "empty"),
        (torch.randn(2, 4, 8), 2, 0.25, "vidcom2", "rank 2"),
        (torch.randn(8), 2, 0.25, "vidcom2", "rank 2"),
        (torch.randn(8, 8), 2, 0.0, "vidcom2", "out of range"),
        (torch.randn(8, 8), 2, 1.5, "vidcom2", "out of range"),
        (torch.randn(8, 8), 2, float("nan"), "vidcom2", "out of range"),
        (torch.randn(8, 8), 2, "abc", "vidcom2", "not a number"),
        (torch.randn(8, 8), 2, 0.5, "nope", "unknown compressor 'nope'"),
        (torch.randn(8, 8), 0, 0.5, "vidcom2", "num_frames must be a positive int"),
        (torch.randn(8, 8), 2.0, 0.5, "vidcom2", "num_frames must be a positive int"),
        (torch.ones(8, 8, dtype=torch.long), 2, 0.5, "vidcom2", "floating-point"),
        ([[1.0]], 1, 0.5, "vidcom2", "torch.Tensor"),
    ],
)
def test_bad_input_raises_precise_value_error(features, num_frames, ratio, method, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        tc.select(features, num_frames, ratio, method=method)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_raise(bad):
    x = video()
    x[5, 3] = bad
    with pytest.raises(ValueError, match=r"1 non-finite value"):
        tc.select(x, 4, 0.25)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 6),
    N=st.integers(1, 24),
    D=st.integers(2, 24),
    ratio=st.floats(0.01, 1.0),
    method=st.sampled_from(BUILTINS),
    seed=st.integers(0, 2**16),
)
def test_selection_invariants(T, N, D, ratio, method, seed):
    sel = tc.select(video(T, N, D, seed), T, ratio, method=method)
    keep, budgets = sel.keep, sel.budgets
    assert keep.dtype == torch.long and budgets.dtype == torch.long
    assert budgets.shape == (T,)
    assert int(budgets.sum()) == keep.numel()
    # EVS keeps a global count and may empty a frame (see evs below); DyCoke keeps
    # int(r N) tokens of a pruned frame (0 when r N < 1) and drops the last frame of an odd T
    if method not in ("evs", "dycoke"):
        assert bool((budgets >= 1).all())
    assert keep.numel() >= 1, "no method returns zero tokens for a video"
    if sel.features is not None:
        assert sel.features.shape == (keep.numel(), D) and sel.features.dtype == torch.float32
        assert bool(torch.isfinite(sel.features).all())
    assert bool((budgets <= N).all())
    assert bool((keep[1:] > keep[:-1]).all()), "keep must be strictly ascending (sorted, unique)"
    assert keep.numel() == 0 or (0 <= int(keep.min()) and int(keep.max()) < T * N)
    frame_of = keep // N
    assert torch.equal(torch.bincount(frame_of, minlength=T), budgets), "frame t's kept rows lie in frame t"


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 5), N=st.integers(2, 20), D=st.integers(2, 40), ratio=st.floats(0.05, 1.0),
       seed=st.integers(0, 2**16))
def test_vidcom2_agrees_with_float64_loop_reference(T, N, D, ratio, seed):
    """On random inputs the fast fp32 path must make the float64 reference's decisions wherever
    they are not within fp32 noise of a tie (symmetric tokens, e.g. N=2, tie exactly)."""
    tol = 1e-5  # fp32 vs float64 score differences are ~1e-6
    x = video(T, N, D, seed)
    _, budgets_ref, s_v, s_f = vidcom2_reference(x.view(T, N, D).double(), ratio, torch.float64)
    sel = tc.select(x, T, ratio)
    assert torch.equal(sel.budgets, budgets_ref)
    score = (s_v + s_f).double()
    for t in range(T):
        kept = sel.keep[sel.keep // N == t] % N
        kth = torch.sort(score[t]).values[int(budgets_ref[t]) - 1]
        must_keep = torch.nonzero(score[t] < kth - tol).squeeze(1)
        assert set(must_keep.tolist()) <= set(kept.tolist())
        assert bool((score[t][kept] <= kth + tol).all())


def test_none_keeps_everything():
    sel = tc.select(video(3, 7), 3, 0.1, method="none")
    assert torch.equal(sel.keep, torch.arange(21))
    assert sel.budgets.tolist() == [7, 7, 7]


@pytest.mark.parametrize("ratio, expected", [(0.25, 4), (0.5, 8), (0.01, 1), (1.0, 16), (0.15625, 2)])
def test_random_and_uniform_budgets(ratio, expected):
    # 0.15625 * 16 = 2.5 rounds half to even -> 2
    for method in ("random", "uniform"):
        sel = tc.select(video(3, 16), 3, ratio, method=method)
        assert sel.budgets.tolist() == [expected] * 3


def test_random_is_seeded():
    x = video(4, 16)
    a = tc.select(x, 4, 0.25, method="random", seed=1).keep
    b = tc.select(x, 4, 0.25, method="random", seed=1).keep
    c = tc.select(x, 4, 0.25, method="random", seed=2).keep
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uniform_keeps_lowest_vidcom2_scores_per_frame():
    from token_compressor.kernels import vidcom2_scores_torch

    T, N = 4, 16
    x = video(T, N)
    s_v, s_f = vidcom2_scores_torch(x.view(T, N, -1))
    score = s_v + s_f
    sel = tc.select(x, T, 0.25, method="uniform")
    for t in range(T):
        kept = sel.keep[sel.keep // N == t] % N
        assert set(kept.tolist()) == set(torch.topk(score[t], 4, largest=False).indices.tolist())


def test_evs_matches_vllm_rule():
    T, N, D = 4, 6, 8
    x = video(T, N, D).view(T, N, D)
    x[2] = x[1] * 3.0  # frame 2 is frame 1 scaled: cosine dissimilarity 0 everywhere
    ratio = 0.4
    sel = tc.select(x.reshape(T * N, D), T, ratio, method="evs")
    count = max(N, int(T * N * (1 - (1 - ratio))))
    assert sel.num_kept == count == evs_retained_count(N, T, ratio)
    # first frame always kept, frame 2 (a copy up to scale) ranks last
    assert sel.budgets[0] == N
    diss = [255.0] * N
    for t in range(1, T):
        diss += (1 - torch.nn.functional.cosine_similarity(x[t], x[t - 1], dim=-1)).tolist()
    expected = sorted(sorted(range(T * N), key=lambda i: -diss[i])[:count])
    assert sel.keep.tolist() == expected


def test_evs_ties_go_to_lower_index():
    T, N, D = 3, 4, 5
    x = torch.ones(T, N, D)  # every dissimilarity after frame 0 is exactly 0
    sel = tc.select(x.reshape(-1, D), T, 0.5, method="evs")
    assert sel.keep.tolist() == list(range(6))  # frame 0 (forced) then the lowest indices


def test_register_a_new_compressor():
    @tc.register_compressor("first_token_test")
    def first_token(features, ratio):
        mask = torch.zeros(features.shape[:2], dtype=torch.bool)
        mask[:, 0] = True
        return mask

    try:
        assert "first_token_test" in tc.available_compressors()
        sel = tc.select(video(3, 5), 3, 0.5, method="first_token_test")
        assert sel.keep.tolist() == [0, 5, 10]
        with pytest.raises(ValueError, match="already registered"):
            tc.register_compressor("first_token_test", lambda f, r: None)
    finally:
        tc.unregister_compressor("first_token_test")
    assert "first_token_test" not in tc.available_compressors()


def test_bad_compressor_output_is_reported():
    tc.register_compressor("broken_test", lambda f, r: torch.ones(3))
    try:
        with pytest.raises(ValueError, match="must return a bool mask of shape"):
            tc.select(video(3, 5), 3, 0.5, method="broken_test")
    finally:
        tc.unregister_compressor("broken_test")


def _merging(name, output):
    """Register `name` returning `output(features, mask)` with a one-token-per-frame mask."""
    def fn(features, ratio):
        mask = torch.zeros(features.shape[:2], dtype=torch.bool)
        mask[:, 0] = True
        return output(features, mask)

    tc.register_compressor(name, fn, overwrite=True)


def test_a_merging_compressor_returns_its_features_through_select():
    # the kept token of every frame carries the frame's mean
    _merging("mean_test", lambda f, m: (m, f.mean(dim=1)))
    try:
        x = video(3, 5, 4)
        sel = tc.select(x, 3, 0.5, method="mean_test")
        assert sel.keep.tolist() == [0, 5, 10] and sel.merged
        assert torch.equal(sel.features, x.view(3, 5, 4).mean(dim=1))
        assert torch.equal(sel.kept_features(x), sel.features)
    finally:
        tc.unregister_compressor("mean_test")


@pytest.mark.parametrize("output, message", [
    (lambda f, m: (m, f.mean(dim=1)[:2]), r"merged features of shape \(2, 4\).*expected \[K, D\] = \(3, 4\)"),
    (lambda f, m: (m, f.mean(dim=1).T), r"merged features of shape \(4, 3\)"),
    (lambda f, m: (m, f.mean(dim=1).double()), "merged features of dtype torch.float64; expected the input's dtype torch.float32"),
    (lambda f, m: (m, f.mean(dim=1).tolist()), "merged features of shape"),
    (lambda f, m: (m, torch.full((3, 4), float("nan"))), "returned 12 non-finite merged feature value"),
    (lambda f, m: (m, f.mean(dim=1), None), "returned a tuple of 3 items"),
    (lambda f, m: (m.long(), f.mean(dim=1)), "must return a bool mask of shape"),
    (lambda f, m: torch.zeros_like(m), "kept no token"),
    (lambda f, m: (torch.zeros_like(m), f[:0, 0]), "kept no token"),
])
def test_malformed_merging_output_names_the_compressor(output, message):
    _merging("malformed_test", output)
    try:
        with pytest.raises(ValueError, match=message) as info:
            tc.select(video(3, 5, 4), 3, 0.5, method="malformed_test")
        assert "compressor 'malformed_test'" in str(info.value)
    finally:
        tc.unregister_compressor("malformed_test")


def test_vidcom2_properties_from_the_note():
    T, N = 8, 32
    x = video(T, N, 16, seed=3)
    # r = 1.0 does not keep everything; T = 1 gives scale = r
    full = tc.select(x, T, 1.0)
    assert full.num_kept < T * N
    one = tc.select(x[:N], 1, 0.25)
    assert one.budgets.tolist() == [round(0.25 * N)]
    assert math.isclose(tc.select(x, T, 0.25).kept_fraction, 0.25, abs_tol=0.1)
