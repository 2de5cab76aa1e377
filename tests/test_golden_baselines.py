"""Exact parity with the VidCom² authors' DyCoke and VisionZip (their Qwen code) on the golden
cases of shared/golden/<method>/ (copied to tests/fixtures/<method>/): `keep` identical,
features within the golden README's tolerance (1e-5 + 1e-5 |ref|), copied rows bitwise."""
import numpy as np
import pytest
import torch

import token_compressor as tc
from golden import assert_features_match, load_method_case, method_cases
from token_compressor.compressors.dycoke import dycoke_pruned_frames
from token_compressor.compressors.reference_baselines import dycoke_reference, visionzip_reference

METHODS = ("dycoke", "visionzip")
PARAMS = [(m, c) for m in METHODS for c in method_cases(m)]


@pytest.fixture(scope="module", params=PARAMS, ids=[f"{m}-{c}" for m, c in PARAMS])
def case(request):
    method, name = request.param
    z = load_method_case(method, name)
    z["method"] = method
    return z


def test_fp32_keep_exact_and_features_within_tolerance(case):
    sel = tc.select(case["x32"], case["T"], case["ratio"], method=case["method"])
    assert np.array_equal(sel.keep.numpy(), case["keep"])
    assert np.array_equal(sel.budgets.numpy(), case["ks"])
    assert_features_match(sel.kept_features(case["x32"]), case)
    assert sel.merged == (case["method"] != "dycoke"), "dycoke prunes, visionzip merges"


def test_bf16_input_decides_as_its_fp32_upcast(case):
    # the golden inputs are exactly bf16 values and scoring is fp32: the same decisions, and the
    # returned rows are the fp32 results rounded to bf16
    sel32 = tc.select(case["x32"], case["T"], case["ratio"], method=case["method"])
    sel16 = tc.select(case["xbf16"], case["T"], case["ratio"], method=case["method"])
    assert torch.equal(sel16.keep, sel32.keep)
    got = sel16.kept_features(case["xbf16"])
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, sel32.kept_features(case["x32"]).to(torch.bfloat16))


def test_loop_formulation_matches_golden(case):
    x = case["x32"].view(case["T"], case["N"], case["D"])
    if case["method"] == "dycoke":
        keep = dycoke_reference(x, case["ratio"])
        feats = case["x32"][keep]
    else:
        keep, feats = visionzip_reference(x, case["ratio"])
    assert np.array_equal(keep.numpy(), case["keep"])
    assert_features_match(feats, case)


# -- DyCoke: frame roles and the corrected odd-T behaviour -------------------------------------

def _dycoke_roles(T):
    """The golden `diag__role` coding: 0 whole, 1 pruned vs t-1, 2 pruned vs t-2, 3 dropped."""
    whole, pruned, reference = dycoke_pruned_frames(T)
    roles = np.full(T, 3)
    roles[whole.numpy()] = 0
    roles[pruned.numpy()] = (pruned - reference).numpy()
    return roles


@pytest.mark.parametrize("name", method_cases("dycoke"))
def test_dycoke_frame_roles_are_the_golden_ones(name):
    z = load_method_case("dycoke", name)
    assert np.array_equal(_dycoke_roles(z["T"]), z["diag__role"])


def test_dycoke_roles_for_32_frames():
    # whole 0, 4, ..., 28 and 30; odd frames vs t-1; 2, 6, ..., 26 vs t-2 (30 is not: 28 >= T-4)
    roles = _dycoke_roles(32)
    assert [t for t in range(32) if roles[t] == 0] == list(range(0, 32, 4)) + [30]
    assert [t for t in range(32) if roles[t] == 2] == list(range(2, 27, 4))


@pytest.mark.parametrize("name", ["d02", "d05", "d08"])  # odd T
def test_dycoke_keep_last_frame_keeps_it_whole_and_changes_nothing_else(name):
    z = load_method_case("dycoke", name)
    T, N = z["T"], z["N"]
    assert z["ks"][-1] == 0, "the authors drop the last frame of an odd T"
    sel = tc.select(z["x32"], T, z["ratio"], method="dycoke", keep_last_frame=True)
    expected = np.concatenate([z["keep"], np.arange((T - 1) * N, T * N)])
    assert np.array_equal(sel.keep.numpy(), expected)


def test_dycoke_keep_last_frame_is_a_no_op_for_even_t():
    z = load_method_case("dycoke", "d01")
    sel = tc.select(z["x32"], z["T"], z["ratio"], method="dycoke", keep_last_frame=True)
    assert np.array_equal(sel.keep.numpy(), z["keep"])


def test_dycoke_merging_ratio_option():
    z = load_method_case("dycoke", "d01")  # T=8, N=64, r=0.25: int(0.25*64) = 16 per pruned frame
    assert (z["ks"][z["diag__role"] > 0] == 16).all()
    sel = tc.select(z["x32"], z["T"], z["ratio"], method="dycoke", k=0.5)  # keep ratio 0.5: 32 per pruned frame
    roles = z["diag__role"]
    assert (sel.budgets.numpy()[roles > 0] == 32).all() and (sel.budgets.numpy()[roles == 0] == 64).all()
    full = tc.select(z["x32"], z["T"], z["ratio"], method="dycoke", k=0.0)
    assert full.num_kept == z["T"] * z["N"]
    # the pruned frames' tokens at k=0.5 are the 32 least similar: they contain the 16 of k=0.75
    assert set(z["keep"].tolist()) <= set(sel.keep.tolist())


def test_dycoke_one_frame_keeps_everything():
    x = torch.randn(1, 16, 8)
    assert tc.select(x.reshape(16, 8), 1, 0.25, method="dycoke").num_kept == 16


# -- VisionZip: counts and options -------------------------------------------------------------

def test_visionzip_keeps_exactly_k_per_frame_and_is_identity_at_one():
    z = load_method_case("visionzip", "v01")  # N=64, r=0.25: K=16
    sel = tc.select(z["x32"], z["T"], 0.25, method="visionzip")
    assert sel.budgets.tolist() == [16] * z["T"]
    full = tc.select(z["x32"], z["T"], 1.0, method="visionzip")
    assert full.num_kept == z["T"] * z["N"] and torch.equal(full.features, z["x32"])


def test_visionzip_dominant_ratio_one_is_pure_top_norm_copies():
    z = load_method_case("visionzip", "v01")
    T, N, D = z["T"], z["N"], z["D"]
    sel = tc.select(z["x32"], T, 0.25, method="visionzip", dominant_ratio=1.0)
    top = z["x32"].view(T, N, D).norm(dim=-1).topk(16, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(sel.keep, (top + torch.arange(T).unsqueeze(1) * N).reshape(-1))
    assert torch.equal(sel.features, z["x32"][sel.keep])


def test_visionzip_k_neighbors_changes_the_anchors_not_the_count():
    z = load_method_case("visionzip", "v01")
    a = tc.select(z["x32"], z["T"], 0.25, method="visionzip")
    b = tc.select(z["x32"], z["T"], 0.25, method="visionzip", k_neighbors=20)
    assert torch.equal(a.budgets, b.budgets)
    assert not torch.equal(a.keep, b.keep)


@pytest.mark.parametrize("method, options, message", [
    ("dycoke", {"k": 2}, "k=2 is out of range; expected a number in [0, 1]"),
    ("dycoke", {"num_tokens_per_frame": 0}, "num_tokens_per_frame=0 is out of range"),
    ("visionzip", {"k_neighbors": 0}, "k_neighbors=0 is out of range; expected an integer >= 1"),
    ("visionzip", {"dominant_ratio": "x"}, "dominant_ratio='x' is not a number"),
])
def test_bad_options_are_refused_by_name(method, options, message):
    with pytest.raises(ValueError) as info:
        tc.select(torch.randn(64, 8), 4, 0.5, method=method, **options)
    assert message in str(info.value) and method in str(info.value)
