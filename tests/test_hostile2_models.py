"""Second hostile sweep (issue 24) on the model side: copies of a patched model, values that
cannot work, scale, and one bad video in a batch."""
import copy
import io
import pickle

import pytest
import torch

import token_compressor as tc
from tiny_models import collate, make_sample, tiny_model
from token_compressor.config import ConfigError

FAMILY = "qwen2_5_vl"


def _generate(model, grids, seed=0):
    batch = collate([make_sample(FAMILY, grids, seed=seed)])
    return model.generate(**batch, max_new_tokens=3, do_sample=False)


def _copies():
    def saved(model):
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)
    return {"pickle": lambda m: pickle.loads(pickle.dumps(m)), "torch.save": saved, "deepcopy": copy.deepcopy}


# -- R5: a copied, pickled or torch.save'd patched model ----------------------------------------

@pytest.mark.parametrize("how", list(_copies()))
def test_a_copy_of_an_instance_patched_model_keeps_compressing(how):
    model = tiny_model(FAMILY)
    tc.apply(model, "vidcom2", 0.25)
    _generate(model, [(4, 4, 4)])
    assert tc.last_stats(model)["visual_tokens_before"] == 16
    clone = _copies()[how](model)
    assert tc.last_stats(clone) is None  # the original's numbers describe a call the copy never made
    reference = tiny_model(FAMILY)  # same seed: the same weights
    tc.apply(reference, "vidcom2", 0.25)
    expected = _generate(reference, [(8, 4, 4)], seed=1)
    kept = tc.last_stats(reference)["visual_tokens_after"]
    got = _generate(clone, [(8, 4, 4)], seed=1)
    stats = tc.last_stats(clone)
    assert stats is not None and (stats["visual_tokens_before"], stats["visual_tokens_after"]) == (32, kept) and kept < 16
    assert torch.equal(got, expected)
    tc.apply(clone, "vidcom2", 1.0)  # apply on the copy changes the copy's settings
    _generate(clone, [(8, 4, 4)], seed=1)
    assert tc.last_stats(clone)["visual_tokens_after"] == 32
    _generate(model, [(8, 4, 4)], seed=1)
    assert tc.last_stats(model)["visual_tokens_after"] == kept  # the original is untouched


@pytest.mark.parametrize("how", list(_copies()))
def test_a_copy_made_under_a_class_patch_is_visibly_unpatched_once_the_patch_is_gone(how):
    from transformers import Qwen2_5_VLForConditionalGeneration as cls

    tc.apply_to_qwen2_5_vl(method="vidcom2", ratio=0.25)
    try:
        model = tiny_model(FAMILY)
        _generate(model, [(4, 4, 4)])
        assert tc.last_stats(model)["visual_tokens_after"] < 16
        clone = _copies()[how](model)
    finally:
        tc.revert()  # as in a process where the class was never patched
    assert not hasattr(cls.generate, "_token_compressor_original")
    assert tc.last_stats(clone) is None
    plain = _generate(tiny_model(FAMILY), [(8, 4, 4)], seed=1)
    assert torch.equal(_generate(clone, [(8, 4, 4)], seed=1), plain) and tc.last_stats(clone) is None
    tc.apply(clone, "vidcom2", 0.25)  # and apply patches it
    _generate(clone, [(8, 4, 4)], seed=1)
    assert tc.last_stats(clone)["visual_tokens_after"] < 32


# -- R6: decisions relative to scale, every compressor, every dtype --------------------------------

from token_compressor.kernels.ranges import MAX_EXPONENT, MIN_EXPONENT, normalising_exponent  # noqa: E402

METHODS = ["vidcom2", "evs", "dycoke", "visionzip", "fastvid", "holitom"]
# compressors whose arithmetic is homogeneous (cosines, norms, rankings, means): the same choice at
# every scale. FastVID's and HoliTom's DPC-kNN density is the authors' exp(-distance^2), which
# depends on the absolute scale by definition: for them only videos outside the working range
# are mapped (exactly) onto it.
HOMOGENEOUS = ["vidcom2", "evs", "dycoke", "visionzip"]
T, N, D = 8, 48, 24


def _video(dtype):
    """Integers in [-127, 127] / 128 (no zero): exact in every dtype at every power-of-two scale
    the dtype reaches, and largest |value| 127/128 (normalised scale)."""
    g = torch.Generator().manual_seed(7)
    v = torch.randint(1, 128, (T * N, D), generator=g) * (torch.randint(0, 2, (T * N, D), generator=g) * 2 - 1)
    v[0, 0] = 127
    return (v.double() / 128).to(dtype)


def _same(sel, ref, scale_exp: int):
    """`sel` made the choice of `ref`, with merged rows `ref`'s times 2**scale_exp: bit for bit
    where that is a normal number of the dtype; where it is subnormal (float16 at small scales) the
    dtype cannot hold it exactly, and one subnormal step (a rounding of a rounding) is allowed."""
    assert torch.equal(sel.keep, ref.keep) and torch.equal(sel.budgets, ref.budgets)
    assert (sel.features is None) == (ref.features is None)
    if ref.features is not None:
        exact = torch.ldexp(ref.features.double(), torch.tensor(scale_exp))
        got = sel.features.double()
        info = torch.finfo(sel.features.dtype)
        normal = exact.abs() >= info.tiny
        assert torch.equal(got[normal], exact.to(sel.features.dtype).double()[normal])
        assert bool(((got - exact).abs()[~normal] <= info.smallest_normal * info.eps).all())


# power-of-two scales from the smallest to the largest the dtype holds exactly (the video's
# smallest |value| 1/128 stays a normal number; its largest stays finite)
POW2 = {torch.float32: [-100, -30, -17, 0, 20, 33, 60, 100, 127], torch.float64: [-1000, -500, 0, 300, 1000, 1023],
        torch.bfloat16: [-100, -17, 0, 33, 100, 127], torch.float16: [-7, -3, 0, 5, 15]}


@pytest.mark.parametrize("dtype", list(POW2), ids=str)
@pytest.mark.parametrize("method", METHODS)
def test_power_of_two_scales_give_the_same_choice(method, dtype):
    x = _video(dtype)
    ref = tc.select(x, T, 0.25, method=method)
    for k in POW2[dtype]:
        y = torch.ldexp(x.double(), torch.tensor(k)).to(dtype)
        assert torch.isfinite(y).all() and torch.equal(torch.ldexp(y.double(), torch.tensor(-k)), x.double())
        out_of_range = normalising_exponent(float(y.abs().max())) != 0
        if method in HOMOGENEOUS or out_of_range:
            _same(tc.select(y, T, 0.25, method=method), ref, k)
        else:  # inside the working range, DPC's density follows the scale: a valid choice all the same
            assert tc.select(y, T, 0.25, method=method).num_kept >= 1


# decimal scales (the values round): the choice equals that of the same rounded video brought
# exactly into the working range by a power of two, and no internal error on the way
DECIMAL = [(torch.float32, 1e-30), (torch.float32, 1e10), (torch.float32, 1e19), (torch.float32, 1e30),
           (torch.float32, "max"), (torch.float64, 1e-300), (torch.float64, 1e150), (torch.float64, 1e300),
           (torch.float64, "max"), (torch.bfloat16, 1e-30), (torch.bfloat16, 1e19), (torch.bfloat16, "max"),
           (torch.float16, "max"), (torch.float16, 1e-3)]


@pytest.mark.parametrize("dtype,scale", DECIMAL, ids=lambda v: str(v))
@pytest.mark.parametrize("method", METHODS)
def test_extreme_scales_choose_as_the_normalised_video(method, dtype, scale):
    x = _video(dtype)
    factor = torch.finfo(dtype).max * 0.99 / (127 / 128) if scale == "max" else scale
    y = (x.double() * factor).to(dtype)
    assert torch.isfinite(y).all() and (scale != "max" or float(y.abs().max()) > torch.finfo(dtype).max / 2)
    amax = float(y.abs().max())
    _, e = __import__("math").frexp(amax)
    canonical = torch.ldexp(y.double(), torch.tensor(-e)).to(dtype)  # exact: largest |value| in [0.5, 1)
    got = tc.select(y, T, 0.25, method=method)
    if method in HOMOGENEOUS or normalising_exponent(amax) != 0:
        _same(got, tc.select(canonical, T, 0.25, method=method), e)
    else:  # inside the working range (float16's whole range): DPC's density follows the scale
        assert got.num_kept >= 1
    if method in HOMOGENEOUS:  # and, relative to scale, as the video at its own scale
        _same(tc.select(canonical, T, 0.25, method=method), tc.select(canonical * 2.0, T, 0.25, method=method), -1)


def test_the_working_range_is_where_nothing_is_rescaled():
    assert normalising_exponent(1.0) == 0 and normalising_exponent(2.0 ** (MAX_EXPONENT - 1)) == 0
    assert normalising_exponent(2.0 ** MAX_EXPONENT) == MAX_EXPONENT + 1
    assert normalising_exponent(2.0 ** MIN_EXPONENT) == 0 and normalising_exponent(2.0 ** (MIN_EXPONENT - 1)) == MIN_EXPONENT
    assert normalising_exponent(0.0) == 0


def test_select_still_refuses_non_finite_features():
    x = _video(torch.float32)
    x[5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"features contain 1 non-finite value\(s\) \(NaN or inf\)"):
        tc.select(x, T, 0.25)


# -- R7: one bad video in a batch -------------------------------------------------------------------

def test_a_non_finite_video_runs_whole_and_the_others_are_compressed(caplog):
    import logging

    from token_compressor import report

    model = tiny_model(FAMILY)
    tc.apply(model, "vidcom2", 0.25)
    good = make_sample(FAMILY, [(4, 4, 4)], seed=2)
    bad = make_sample(FAMILY, [(4, 4, 4), (2, 4, 4)], seed=3)
    bad["pixel_values_videos"][:64] = float("nan")  # the first video of sample 0 only
    batch = collate([bad, good])
    report.RECORDER.reset()
    report.RECORDER.active = True
    try:
        with caplog.at_level(logging.WARNING, logger="token_compressor"):
            out = model.generate(**batch, max_new_tokens=3, do_sample=False)
        summary = report.RECORDER.summary(compressor="vidcom2", ratio=0.25)
    finally:
        report.RECORDER.active = False
        report.RECORDER.reset()
    stats = tc.last_stats(model)
    assert stats["uncompressed"] == [{"sample": 0, "kind": "video", "index": 0,
                                      "reason": stats["uncompressed"][0]["reason"]}]
    assert "non-finite" in stats["uncompressed"][0]["reason"]
    assert stats["per_sample"][0][0] == {"kind": "video", "before": 16, "after": 16}  # whole
    assert stats["per_sample"][0][1]["after"] < 8 and stats["per_sample"][1][0]["after"] < 16  # compressed
    assert "sample 0, video 0:" in caplog.text and "runs uncompressed" in caplog.text
    assert summary["uncompressed_items"] == 1
    assert "non-finite videos (ran whole)" in report.format_table(report.merge([summary]))
    alone = model.generate(**collate([good]), max_new_tokens=3, do_sample=False)
    assert torch.equal(out[1, -3:], alone[0, -3:])  # the good sample is answered as alone


# -- R10: values that cannot work ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["no", "yes", 1, 0, None, "False"])
def test_compress_images_takes_a_bool_only(value):
    model = tiny_model(FAMILY)
    with pytest.raises(ConfigError, match=f"compress_images={value!r} is a"):
        tc.apply(model, "vidcom2", 0.25, compress_images=value)
    assert "generate" not in model.__dict__


@pytest.mark.parametrize("var, value", [("fastvid_DTM_p", str(10**23)), ("fastvid_DTM_p", str(2**31)),
                                        ("fastvid_DySeg_c", "99999999999999999999"), ("HOLITOM_K", str(2**63)),
                                        ("visionzip_k_neighbors", "1e30"), ("DYCOKE_NUM_TOKENS_PER_FRAME", str(2**40))])
def test_integer_options_beyond_what_works_are_refused_before_the_first_sample(monkeypatch, var, value):
    from token_compressor.config import METHOD_OPTIONS, from_env

    method = next(m for m, opts in METHOD_OPTIONS.items() if any(v == var for v, _, _ in opts))
    with pytest.raises(ConfigError, match=f"{var}={value!r} is (out of range|not an integer)"):
        from_env({"COMPRESSOR": method, var: value})


@pytest.mark.parametrize("method, options", [("fastvid", {"dtm_p": 10**23}), ("fastvid", {"dtm_p": 2**31}),
                                             ("holitom", {"k": 4.0}), ("visionzip", {"k_neighbors": 10**30}),
                                             ("fastvid", {"dyseg_tau": "0.5x"})])
def test_keyword_options_beyond_what_works_are_refused_at_apply(method, options):
    model = tiny_model(FAMILY)
    with pytest.raises(ConfigError, match=f"{method}: {next(iter(options))}="):
        tc.apply(model, method, 0.25, **options)
    assert "generate" not in model.__dict__


@pytest.mark.parametrize("method, option", [(m, o) for m, opts in __import__("token_compressor.config", fromlist=["x"])
                                            .METHOD_OPTIONS.items() for _, o, p in opts if "integer" in p.expected])
def test_every_integer_option_works_at_its_largest_value(method, option):
    from token_compressor.config import MAX_INTEGER_OPTION

    sel = tc.select(_video(torch.float32), T, 0.25, method=method, **{option: MAX_INTEGER_OPTION})
    assert sel.num_kept >= 1
    with pytest.raises(ValueError, match="out of range"):
        tc.select(_video(torch.float32), T, 0.25, method=method, **{option: MAX_INTEGER_OPTION + 1})


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "cuda:99", "cpu:3", "vulkan"])
def test_run_refuses_a_device_before_loading_the_model(tmp_path, capsys, device):
    from screening_helpers import make_mp4
    from token_compressor.cli import main

    video = make_mp4(tmp_path / "v.mp4", seconds=2)
    missing = str(tmp_path / "no-model-here")  # a model error would come later: the device is checked first
    assert main(["run", "--model", missing, "--video", video, "--question", "q?", "--device", device]) == 2
    err = capsys.readouterr().err
    assert f"--device {device!r} is not supported" in err or f"--device {device}:" in err or "is not a device" in err
    assert "no-model-here" not in err
