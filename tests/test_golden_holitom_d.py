"""HoliTom with `d > 0` (HOLITOM_D: contextual DPC-kNN centres among each frame's dynamic tokens):
exact parity with the VidCom² authors' code on tests/fixtures/golden_holitom_d/ (their unmodified
core, varied t / k / beta / max_window_size too; see the README there). The developer set
tests/fixtures/holitom/ covers only the authors' default d = 0."""
import json

import numpy as np
import pytest
import torch

from golden import assert_features_match, load_method_case, method_cases
from token_compressor.compressors.holitom import holitom
from token_compressor.compressors.reference_baselines import holitom_reference

FIXTURES = "golden_holitom_d"
CASES = method_cases(FIXTURES)
KIND_STATIC, KIND_DOMINANT, KIND_CONTEXTUAL = 0, 1, 2  # diag__kind


@pytest.fixture(scope="module", params=CASES)
def case(request):
    z = load_method_case(FIXTURES, request.param)
    T, N, D = z["T"], z["N"], z["D"]
    z["video"] = z["x32"].view(T, N, D)
    hp = json.loads(str(z["hyperparams_json"]))
    z["kw"] = dict(t=hp["HOLITOM_T"], beta=hp["HOLITOM_BETA"], d=hp["HOLITOM_D"], k=hp["HOLITOM_K"],
                   max_window_size=hp["HOLITOM_MAX_WINDOW_SIZE"])
    return z


def _keep(mask):
    return mask.reshape(-1).nonzero().flatten().numpy()


def test_fixtures_cover_d_above_zero():
    # the point of this set: every case has d > 0 and contextual rows, over d in {0.3, 0.5, 1.0}
    ds = set()
    for name in CASES:
        z = load_method_case(FIXTURES, name)
        d = json.loads(str(z["hyperparams_json"]))["HOLITOM_D"]
        assert d > 0 and (z["diag__kind"] == KIND_CONTEXTUAL).any(), name
        ds.add(d)
    assert ds == {0.3, 0.5, 1.0}


@pytest.mark.parametrize("fn", [holitom, holitom_reference], ids=["vectorised", "loops"])
def test_fp32_parity_with_authors(case, fn):
    # fp32 input, the authors' hyperparameters, positions="linspace" (theirs, the default)
    mask, rows = fn(case["video"], case["ratio"], **case["kw"])
    assert mask.shape == (case["T"], case["N"]) and rows.dtype == torch.float32
    assert np.array_equal(_keep(mask), case["keep"])
    assert_features_match(rows, case)  # 1e-5 + 1e-5|ref|, copied rows bitwise


def test_centres_positions_match_authors_sources(case):
    # positions="centres" puts every row where the authors' merge functions say it comes from
    mask, rows = holitom(case["video"], case["ratio"], positions="centres", **case["kw"])
    order = np.argsort(case["diag__src_row"], kind="stable")
    assert np.array_equal(_keep(mask), case["diag__src_row"][order])
    np.testing.assert_allclose(rows.numpy(), case["features_out"][order], atol=1e-5, rtol=1e-5)
    ref_mask, ref_rows = holitom_reference(case["video"], case["ratio"], positions="centres", **case["kw"])
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(rows, ref_rows, atol=1e-5, rtol=1e-5)


def test_jitter_does_not_change_gated_cases(case):
    # every case was gated seed-invariant in the authors' code; ours must be too
    base = holitom(case["video"], case["ratio"], **case["kw"])
    for extra in ({"seed": 12345}, {"jitter": 0.0}):
        mask, rows = holitom(case["video"], case["ratio"], **case["kw"], **extra)
        assert torch.equal(mask, base[0]) and torch.equal(rows, base[1])
