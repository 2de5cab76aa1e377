"""The kept count from the grid alone (compressors/counts.py), as an engine that sizes the prompt
before the vision encoder runs needs it (vLLM): equal to what `select` keeps on any content."""
import itertools

import pytest
import torch

from token_compressor import select
from token_compressor.compressors.counts import CountNotFixed, check_fixed_count, fixed_count_options, kept_count

FIXED = [("none", {}), ("random", {}), ("uniform", {}), ("evs", {}), ("dycoke", {}),
         ("dycoke", {"keep_last_frame": True, "k": 0.6}), ("visionzip", {}), ("visionzip", {"dominant_ratio": 0.3}),
         ("fastvid", {"fill_budget": True}), ("vidcom2", {})]
GRIDS = [(1, 4), (2, 9), (3, 16), (5, 16), (8, 12)]
RATIOS = [0.1, 0.25, 0.5, 0.9]


def _contents(T, N, D=16):
    gen = torch.Generator().manual_seed(T * 100 + N)
    smooth = torch.randn(1, N, D, generator=gen).repeat(T, 1, 1) + 0.05 * torch.randn(T, N, D, generator=gen)
    return [torch.randn(T * N, D, generator=gen), smooth.reshape(T * N, D),
            (torch.randn(T * N, D, generator=gen) * torch.linspace(0.1, 5, T).repeat_interleave(N).unsqueeze(1))]


@pytest.mark.parametrize("method,options", FIXED, ids=lambda v: str(v))
def test_count_from_the_grid_is_what_select_keeps(method, options):
    for (T, N), r in itertools.product(GRIDS, RATIOS):
        if method == "fastvid" and int(N * r) == 0:
            with pytest.raises(CountNotFixed, match="fastvid keeps int"):
                kept_count(method, T, N, r, options)
            continue
        expected = kept_count(method, T, N, r, options)
        for features in _contents(T, N):
            sel = select(features, T, r, method, **fixed_count_options(method, T, N, r, options))
            assert sel.num_kept == expected, (method, options, T, N, r)


def test_vidcom2_total_changes_only_the_budgets():
    # without `total` the authors' budgets miss round(r*T*N) on some content; with it they hit it,
    # and every frame keeps its lowest-score tokens as before (a frame whose budget is unchanged
    # keeps the same tokens)
    missed = 0
    for (T, N), r in itertools.product(GRIDS, RATIOS):
        for features in _contents(T, N):
            plain = select(features, T, r, "vidcom2")
            exact = select(features, T, r, "vidcom2", total=kept_count("vidcom2", T, N, r, {}))
            missed += plain.num_kept != exact.num_kept
            same = (plain.budgets == exact.budgets).nonzero().flatten()
            pm, em = plain.mask().view(T, N), exact.mask().view(T, N)
            assert torch.equal(pm[same], em[same])
            grown = exact.budgets > plain.budgets
            assert bool((pm[grown] <= em[grown]).all())  # a larger budget keeps a superset
    assert missed > 0  # the option is needed: the plain count is not the grid's


def test_content_dependent_methods_are_refused():
    with pytest.raises(CountNotFixed, match="TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET=1"):
        check_fixed_count("fastvid", {})
    with pytest.raises(CountNotFixed, match="holitom keeps a content-dependent"):
        kept_count("holitom", 4, 16, 0.25, {})
    with pytest.raises(CountNotFixed, match="no kept count known"):
        kept_count("my_method", 4, 16, 0.25, {})


def test_vidcom2_total_out_of_range():
    with pytest.raises(ValueError, match=r"total=1 is outside \[T, T\*N\] = \[2, 8\]"):
        select(torch.randn(8, 4), 2, 0.25, "vidcom2", total=1)
