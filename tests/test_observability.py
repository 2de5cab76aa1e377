"""What a user can see: `last_stats` for every call (the `none` baseline and ratio 1.0 included),
kept rows and their prompt positions on request, cleared by `revert`; one INFO line per
`apply`/`apply_from_env` without a doubled prefix; the launcher's default handler."""
import logging

import pytest
import torch

import token_compressor as tc
from token_compressor import runtime
from tiny_models import VIDEO, collate, make_sample, tiny_model


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for key in ("COMPRESSOR", "R_RATIO", "TOKEN_COMPRESSOR_REPORT", "EMC_SCREENER"):
        monkeypatch.delenv(key, raising=False)
    runtime.uninstall()
    tc.revert()
    yield
    runtime.uninstall()
    tc.revert()


def two_samples(family):
    """Two samples, the second with two videos of different lengths."""
    return collate([make_sample(family, [(4, 4, 4)], seed=1), make_sample(family, [(2, 4, 4), (4, 4, 4)], seed=2)])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_none_is_measured_with_the_same_code(family):
    model = tiny_model(family)
    batch = two_samples(family)
    tc.apply(model, method="none")
    model.generate(**batch, max_new_tokens=2, do_sample=False)
    stats = tc.last_stats(model)
    videos = int((batch["input_ids"] == VIDEO).sum())
    assert stats is not None and stats["method"] == "none" and stats["kept_fraction"] == 1.0
    assert stats["visual_tokens_before"] == stats["visual_tokens_after"] == videos == 16 + 8 + 16
    assert [[(v["before"], v["after"]) for v in s] for s in stats["per_sample"]] == [[(16, 16)], [(8, 8), (16, 16)]]
    # a direct forward call records them too
    tc.revert(model)
    tc.apply(model, method="none")
    with torch.no_grad():
        model(**batch)
    assert tc.last_stats(model)["visual_tokens_after"] == videos


def test_ratio_one_and_compressed_calls_have_stats_and_revert_forgets_them():
    model = tiny_model("qwen2_5_vl")
    batch = two_samples("qwen2_5_vl")
    tc.apply(model, method="vidcom2", ratio=1.0)
    model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert tc.last_stats(model)["kept_fraction"] == 1.0 and tc.last_stats(model)["method"] == "vidcom2"
    tc.apply(model, method="vidcom2", ratio=0.25)
    model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert tc.last_stats(model)["visual_tokens_after"] < tc.last_stats(model)["visual_tokens_before"]
    tc.revert(model)
    assert tc.last_stats(model) is None


@pytest.mark.parametrize("method", ["vidcom2", "visionzip", "none"])
def test_kept_rows_and_positions_on_request(method):
    """`keep` is what `tc.select` keeps of the model's own features for each video; `positions`
    are those rows' places in the caller's input_ids (the video's placeholder tokens, in order)."""
    family = "qwen2_5_vl"
    model = tiny_model(family)
    samples = [make_sample(family, [(4, 4, 4)], seed=1), make_sample(family, [(2, 4, 4), (4, 4, 4)], seed=2)]
    batch = collate(samples)
    tc.apply(model, method=method, ratio=0.25, keep_indices=True)
    model.generate(**batch, max_new_tokens=2, do_sample=False)
    stats = tc.last_stats(model)
    kept = stats["kept"]
    assert [k["sample"] for k in kept] == [0, 1, 1] and {k["kind"] for k in kept} == {"video"}
    with torch.no_grad():
        feats = model.model.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"],
                                               return_dict=True).pooler_output
    seen = {}  # sample -> placeholders used by its earlier videos
    for entry, feat, grid in zip(kept, feats, batch["video_grid_thw"]):
        expected = tc.select(feat, int(grid[0]), 0.25, method=method).keep.tolist()
        assert entry["keep"] == expected
        row = batch["input_ids"][entry["sample"]]
        placeholders = (row == VIDEO).nonzero().squeeze(1).tolist()
        start = seen.get(entry["sample"], 0)
        mine = placeholders[start:start + feat.shape[0]]
        seen[entry["sample"]] = start + feat.shape[0]
        assert entry["positions"] == [mine[i] for i in expected]
    assert sum(len(k["keep"]) for k in kept) == stats["visual_tokens_after"]
    tc.apply(model, method=method, ratio=0.25)  # not asked: not recorded
    model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert tc.last_stats(model)["kept"] is None


def test_one_info_line_per_apply_without_a_doubled_prefix(caplog, monkeypatch):
    model = tiny_model("qwen2_vl")
    with caplog.at_level(logging.INFO, logger="token_compressor"):
        tc.apply(model, method="dycoke", ratio=0.25, k=0.6)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "dycoke at r=0.25" in lines[0] and "k=0.6" in lines[0]
    caplog.clear()
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    with caplog.at_level(logging.INFO, logger="token_compressor"):
        assert tc.apply_from_env()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "vidcom2 at r=0.25" in lines[0] and "qwen2_vl, qwen2_5_vl, qwen3_vl" in lines[0]
    caplog.clear()
    tc.revert()
    tc.apply(model, method="vidcom2", ratio=0.25)
    with caplog.at_level(logging.INFO, logger="token_compressor"):
        model.generate(**collate([make_sample("qwen2_vl", [(4, 4, 4)])]), max_new_tokens=2, do_sample=False)
    # the logger's name is the prefix a formatter shows: no message repeats it
    assert caplog.records and not any(r.getMessage().startswith("token_compressor") for r in caplog.records)


def test_the_launcher_shows_one_line_and_warnings_not_one_line_per_sample(monkeypatch, capsys):
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("TOKEN_COMPRESSOR_REPORT", "off")
    runtime.install("launcher")
    model = tiny_model("qwen2_vl")
    for seed in (1, 2):
        model.generate(**collate([make_sample("qwen2_vl", [(4, 4, 4)], seed=seed)]), max_new_tokens=2, do_sample=False)
    logging.getLogger("token_compressor").warning("something is off")
    err = capsys.readouterr().err.splitlines()
    ours = [line for line in err if line.startswith("token_compressor")]
    assert ours[0].startswith("token_compressor: launcher: vidcom2 at r=0.25") and "run report off" in ours[0]
    assert ours[1:] == ["token_compressor: something is off"]
    runtime.uninstall()
    assert not logging.getLogger("token_compressor").handlers


def test_nothing_asked_installs_nothing_and_says_nothing(capsys):
    runtime.install("lmms-eval")
    from token_compressor import report
    from token_compressor.models import FAMILIES
    from token_compressor.models.patching import is_class_patched

    assert not report.RECORDER.active
    assert not any(is_class_patched(f.model_class()) for f in FAMILIES.values())
    assert not logging.getLogger("token_compressor").handlers
    assert capsys.readouterr().err == ""
