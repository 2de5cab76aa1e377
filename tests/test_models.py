"""Model patches against exact oracles: the unpatched model fed the explicitly pruned sequence
with the original positions.

Tolerance: the oracle and the patched model run the same kernels on the same pruned inputs, so
unpadded single-sample logits are compared bitwise; batched results (re-padded, so sdpa sees a
different mask layout and matmul shapes) are compared with atol 1e-5 on fp32 logits of O(1),
about 100 fp32 ulps, far below any argmax gap that matters for the generated-id equality checks.
"""
import logging

import pytest
import torch

import token_compressor as tc
from oracles import SPECIAL, as_inputs_embeds, explicit_pruned_inputs, greedy_uncached
from tiny_models import FAMILIES, OMNI, VIDEO, collate, make_sample, tiny_model
from token_compressor.support import SUPPORTED_MODEL_TYPES

BATCH_ATOL = 1e-5


@pytest.fixture(autouse=True)
def _clean_patches():
    yield
    tc.revert()


def sample_for(family, seed=0, grids=((4, 4, 4),)):
    return make_sample(family, list(grids), seed=seed)


def batch_of(sample):
    return collate([sample])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("how", ["none", "unset"])
def test_patched_but_off_is_bitwise_identical(family, how, monkeypatch):
    model = tiny_model(family)
    batch = collate([sample_for(family, 0), sample_for(family, 1, grids=((2, 4, 4),))])
    with torch.no_grad():
        ref_logits = model(**batch).logits
    ref_ids = model.generate(**batch, max_new_tokens=5, do_sample=False)
    monkeypatch.delenv("COMPRESSOR", raising=False)
    if how == "none":
        tc.apply(model, method="none")
    else:
        tc.apply(model)  # COMPRESSOR unset: patched, but off
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref_logits)
    assert torch.equal(model.generate(**batch, max_new_tokens=5, do_sample=False), ref_ids)
    # measured with the same code as a compressed call: every visual token kept
    stats = tc.last_stats(model)
    assert stats["method"] == "none" and stats["kept_fraction"] == 1.0
    assert stats["visual_tokens_before"] == stats["visual_tokens_after"] == int((batch["input_ids"] == VIDEO).sum())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ratio", [0.25, 0.6])
def test_compressed_prefill_equals_unpatched_on_pruned_sequence(family, ratio):
    model = tiny_model(family)
    sample = sample_for(family, grids=((4, 4, 4), (2, 4, 8)))
    oracle = explicit_pruned_inputs(model, sample, ratio)
    with torch.no_grad():
        expected = model(**oracle).logits
    tc.apply(model, "vidcom2", ratio)
    with torch.no_grad():
        got = model(**batch_of(sample)).logits
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    stats = tc.last_stats(model)
    kept = int((oracle["input_ids"] == VIDEO).sum())
    # grids (4, 4, 4) and (2, 4, 8): 4*4*4/4 = 16 and 2*4*8/4 = 16 merged tokens
    assert stats["visual_tokens_before"] == 32 and stats["visual_tokens_after"] == kept < 32
    assert [v["before"] for v in stats["per_sample"][0]] == [16, 16]


@pytest.mark.parametrize("family", FAMILIES)
def test_compressed_generate_equals_uncached_greedy_loop(family):
    model = tiny_model(family)
    sample = sample_for(family)
    oracle = explicit_pruned_inputs(model, sample, 0.25)
    expected = greedy_uncached(model, oracle, steps=6)
    tc.apply(model, "vidcom2", 0.25)
    batch = batch_of(sample)
    # a random model may emit a vision token id, which would be read as a placeholder next step
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, suppress_tokens=SPECIAL)
    L = batch["input_ids"].shape[1]
    assert torch.equal(out[:, :L], batch["input_ids"]), "the original prompt is returned in front"
    assert out[0, L:].tolist() == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_holds_only_kept_tokens(family):
    model = tiny_model(family)
    sample = sample_for(family)
    tc.apply(model, "vidcom2", 0.25)
    with torch.no_grad():
        out = model(**batch_of(sample), use_cache=True)
    stats = tc.last_stats(model)
    assert out.past_key_values.get_seq_length() == stats["seq_len_after"]
    assert stats["seq_len_after"] == sample["input_ids"].numel() - (stats["visual_tokens_before"] - stats["visual_tokens_after"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_gives_each_sample_alone(family, padding_side):
    model = tiny_model(family)
    samples = [
        sample_for(family, 0, grids=((4, 4, 4),)),
        make_sample(family, [], seed=1, text_after=(4, 5)),  # no video at all
        sample_for(family, 2, grids=((2, 4, 8), (2, 4, 4))),  # two videos
    ]
    tc.apply(model, "vidcom2", 0.3)
    alone_logits, alone_ids = [], []
    for s in samples:
        b = batch_of(s)
        with torch.no_grad():
            alone_logits.append(model(**b).logits[0, -1])
        if padding_side == "left":
            alone_ids.append(model.generate(**b, max_new_tokens=4, do_sample=False)[0, b["input_ids"].shape[1]:])
    batch = collate(samples, padding_side=padding_side)
    with torch.no_grad():
        logits = model(**batch).logits
    mask = tc.last_stats(model)
    last = logits[:, -1] if padding_side == "left" else None
    for b, s in enumerate(samples):
        if padding_side == "left":
            row = last[b]
        else:  # right padding: the last real token of sample b in the re-padded batch
            n_kept = s["input_ids"].numel() - sum(x["before"] - x["after"] for x in mask["per_sample"][b])
            row = logits[b, n_kept - 1]
        torch.testing.assert_close(row, alone_logits[b], atol=BATCH_ATOL, rtol=0)
    if padding_side == "left":
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        L = batch["input_ids"].shape[1]
        for b in range(len(samples)):
            assert torch.equal(out[b, L:], alone_ids[b])
    kept = [sum(x["after"] for x in ps) for ps in mask["per_sample"]]
    assert kept[1] == 0 and kept[0] != kept[2], "samples keep different counts"


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_pruned_at_the_same_positions(family):
    model = tiny_model(family)
    sample = sample_for(family)
    batch = batch_of(sample)
    labels = batch["input_ids"].clone()
    labels[batch["mm_token_type_ids"] != 0] = -100
    oracle = explicit_pruned_inputs(model, sample, 0.25)
    oracle_labels = oracle["input_ids"].clone()
    oracle_labels[oracle["mm_token_type_ids"] != 0] = -100
    with torch.no_grad():
        expected = model(**oracle, labels=oracle_labels).loss
    tc.apply(model, "vidcom2", 0.25)
    with torch.no_grad():
        got = model(**batch, labels=labels).loss
    assert torch.isfinite(got) and torch.equal(got, expected)


def test_eager_attention_matches_sdpa_result():
    family = "qwen2_5_vl"
    sample = sample_for(family)
    results = []
    for attn in ("sdpa", "eager"):
        model = tiny_model(family, attn=attn)
        tc.apply(model, "vidcom2", 0.25)
        with torch.no_grad():
            results.append(model(**batch_of(sample)).logits)
        oracle = explicit_pruned_inputs(model, sample, 0.25)
        tc.revert(model)
        with torch.no_grad():
            torch.testing.assert_close(model(**oracle).logits, results[-1], atol=0, rtol=0)
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=0)


def test_images_untouched_by_default_and_compressed_on_request():
    family = "qwen2_5_vl"
    sample = make_sample(family, [(2, 4, 4)], image_grids=[(1, 8, 8)])
    model = tiny_model(family)
    tc.apply(model, "vidcom2", 0.25)
    with torch.no_grad():
        model(**batch_of(sample))
    kinds = tc.last_stats(model)["per_sample"][0]
    assert [k["kind"] for k in kinds] == ["video"]
    tc.apply(model, "vidcom2", 0.25, compress_images=True)
    with torch.no_grad():
        model(**batch_of(sample))
    kinds = tc.last_stats(model)["per_sample"][0]
    assert sorted(k["kind"] for k in kinds) == ["image", "video"]
    image = [k for k in kinds if k["kind"] == "image"][0]
    assert image["before"] == 16 and image["after"] == 4  # one frame: round(0.25 * 16)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
def test_class_level_patch_reaches_models_built_later_and_reverts(family):
    sample = sample_for(family)
    before = tiny_model(family)
    with torch.no_grad():
        ref = before(**batch_of(sample)).logits
        expected = before(**explicit_pruned_inputs(before, sample, 0.25)).logits
    apply_to = getattr(tc, f"apply_to_{family}")
    apply_to(method="vidcom2", ratio=0.25)
    apply_to(method="vidcom2", ratio=0.25)  # applying twice patches once
    later = tiny_model(family)
    with torch.no_grad():
        out = later(**batch_of(sample)).logits
    assert out.shape[1] < ref.shape[1] and tc.last_stats(later)["visual_tokens_after"] < 16
    assert torch.equal(out, expected)  # the same seed, the same weights: the oracle, bitwise
    tc.revert()
    with torch.no_grad():
        assert torch.equal(later(**batch_of(sample)).logits, ref)


def test_method_and_ratio_change_without_repatching():
    model = tiny_model("qwen3_vl")
    sample = sample_for("qwen3_vl")
    tc.apply_to_qwen3_vl(model, method="vidcom2", ratio=0.25)
    forward = model.forward
    with torch.no_grad():
        model(**batch_of(sample))
    first = tc.last_stats(model)["visual_tokens_after"]
    tc.apply(model, method="random", ratio=0.5)
    assert model.forward is forward
    with torch.no_grad():
        model(**batch_of(sample))
    stats = tc.last_stats(model)
    assert (stats["method"], stats["ratio"]) == ("random", 0.5)
    assert stats["visual_tokens_after"] == 8  # 4 frames x round(0.5 * 4 tokens)


def test_apply_from_env(monkeypatch):
    monkeypatch.setenv("COMPRESSOR", "none")
    assert tc.apply_from_env() is False
    monkeypatch.delenv("COMPRESSOR")
    assert tc.apply_from_env() is False
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("R_RATIO", "0.5")
    assert tc.apply_from_env() is True
    from token_compressor.models import FAMILIES as PATCHED, patching

    assert list(PATCHED) == list(SUPPORTED_MODEL_TYPES) == FAMILIES + OMNI
    assert all(patching.is_class_patched(f.model_class()) for f in PATCHED.values())
    for family in ("qwen2_5_vl", "qwen3_5"):
        model = tiny_model(family)
        with torch.no_grad():
            model(**batch_of(sample_for(family)))
        assert tc.last_stats(model)["ratio"] == 0.5 and tc.last_stats(model)["visual_tokens_after"] < 16
    monkeypatch.setenv("R_RATIO", "abc")
    with pytest.raises(tc.ConfigError, match="R_RATIO='abc'"):
        tc.apply_from_env()


def test_one_info_line_per_compressed_prefill(caplog):
    model = tiny_model("qwen2_vl")
    tc.apply(model, "vidcom2", 0.25)
    with caplog.at_level(logging.INFO, logger="token_compressor"):
        model.generate(**batch_of(sample_for("qwen2_vl")), max_new_tokens=3, do_sample=False)
    lines = [r for r in caplog.records if "kept" in r.getMessage()]
    assert len(lines) == 1 and "vidcom2" in lines[0].getMessage() and "/16 visual tokens" in lines[0].getMessage()


def test_loud_failures():
    model = tiny_model("qwen2_vl")
    model.config.model_type = "llava"
    with pytest.raises(ValueError, match="unsupported model type 'llava'") as e:
        tc.apply(model, "vidcom2", 0.25)
    # the message names the model's class and every supported family with its class
    from token_compressor.models import FAMILIES
    from token_compressor.support import SUPPORTED_MODEL_TYPES

    assert "cannot compress Qwen2VLForConditionalGeneration (model_type 'llava')" in str(e.value)
    for name in SUPPORTED_MODEL_TYPES:
        assert f"{name} ({FAMILIES[name].model_class().__name__})" in str(e.value)
    model.config.model_type = "qwen2_vl"
    # the inner `...Model` (issue 23): named as such, not blamed on the transformers version
    with pytest.raises(TypeError, match=r"got a Qwen2VLModel: pass the Qwen2VLForConditionalGeneration itself "
                                        r"\(e.g. `tc.apply\(model\)`, not `tc.apply\(model.model\)`\)"):
        tc.apply(model.model, "vidcom2", 0.25)
    with pytest.raises(TypeError, match="got a Qwen2VLModel"):
        tc.apply_to_qwen2_vl(model.model, method="vidcom2", ratio=0.25)
    with pytest.raises(ValueError, match="expected a qwen2_5_vl model"):
        tc.apply_to_qwen2_5_vl(model, method="vidcom2", ratio=0.25)
    with pytest.raises(tc.ConfigError, match="not a known compressor"):
        tc.apply(model, "vidcom3", 0.25)
    with pytest.raises(tc.ConfigError, match="out of range"):
        tc.apply(model, "vidcom2", 2)
    tc.apply(model, "vidcom2", 0.25)
    batch = batch_of(sample_for("qwen2_vl"))
    batch.pop("mm_token_type_ids")
    # transformers' own error, as unpatched: Qwen2-VL needs mm_token_type_ids for M-RoPE
    with pytest.raises(ValueError, match="`mm_token_type_ids` is missing"):
        model(**batch)


def test_unsupported_transformers_version_is_refused():
    from token_compressor.models import check_transformers_version

    check_transformers_version("5.25.0", "2.15.0")
    check_transformers_version("5.17.0", "2.11.0+cu130")
    for version in ("4.57.1", "5.16.1"):
        with pytest.raises(RuntimeError, match=f"transformers {version} is older than .*transformers>=5.17,<5.26"):
            check_transformers_version(version, "2.14.1")
    with pytest.raises(RuntimeError, match="transformers 5.26.0 is newer than .*TOKEN_COMPRESSOR_ALLOW_UNTESTED=1"):
        check_transformers_version("5.26.0", "2.14.1")
    with pytest.raises(RuntimeError, match="torch 2.16.0 is newer than .*tested torch.*ALLOW_UNTESTED"):
        check_transformers_version("5.25.0", "2.16.0")


def test_untested_newer_release_runs_only_when_asked_with_a_loud_warning(caplog):
    from token_compressor.config import ConfigError
    from token_compressor.models import check_transformers_version

    allow = {"TOKEN_COMPRESSOR_ALLOW_UNTESTED": "1"}
    with caplog.at_level(logging.WARNING, logger="token_compressor"):
        check_transformers_version("5.99.0", "2.14.1", environ=allow)
        check_transformers_version("5.99.0", "2.14.1", environ=allow)  # warned once per release
        check_transformers_version("5.25.0", "2.99.0", environ=allow)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "running on transformers 5.99.0, which is NOT tested" in warnings[0]
    assert "running on torch 2.99.0, which is NOT tested" in warnings[1]
    # an older release is never allowed: its seams are not the patched ones
    with pytest.raises(RuntimeError, match="older than"):
        check_transformers_version("5.16.1", "2.14.1", environ=allow)
    with pytest.raises(RuntimeError, match="newer than"):
        check_transformers_version("5.99.0", "2.14.1", environ={"TOKEN_COMPRESSOR_ALLOW_UNTESTED": "0"})
    with pytest.raises(ConfigError, match="TOKEN_COMPRESSOR_ALLOW_UNTESTED='maybe' is not a switch"):
        check_transformers_version("5.99.0", "2.14.1", environ={"TOKEN_COMPRESSOR_ALLOW_UNTESTED": "maybe"})


def test_apply_on_an_untested_transformers_names_the_opt_in(monkeypatch):
    """`tc.apply` on a newer transformers than tested: the error names the opt-in; with it the
    model is patched and compresses."""
    import transformers

    model = tiny_model("qwen2_vl")
    monkeypatch.setattr(transformers, "__version__", "5.99.0")
    with pytest.raises(RuntimeError, match="TOKEN_COMPRESSOR_ALLOW_UNTESTED=1"):
        tc.apply(model, "vidcom2", 0.5)
    monkeypatch.setenv("TOKEN_COMPRESSOR_ALLOW_UNTESTED", "1")
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        model(**batch_of(sample_for("qwen2_vl")))
    assert tc.last_stats(model)["visual_tokens_after"] < tc.last_stats(model)["visual_tokens_before"]


# -- every registered method, merging ones included (the merged rows replace the kept tokens'
# embeddings at their original positions) ---------------------------------------------------------

ORACLE_METHODS = sorted(set(tc.available_compressors()) - {"none"})
MERGING_SAMPLE = ((4, 4, 4), (2, 4, 8))  # 4 frames x 4 tokens, 2 frames x 8 tokens
MERGING_RATIO = 0.6  # visionzip: 1 dominant + 1 merged anchor a frame, and 2 + 2
# the VidCom² authors' four Qwen baselines: pruning (dycoke) and merging (the other three)
AUTHORS_BASELINES = ["dycoke", "fastvid", "visionzip", "holitom"]
# the method matrices run on every family but qwen3_5_moe, whose seams are qwen3_5's and whose
# per-token expert routing qwen3_vl_moe exercises already (test time: CI has 2 cores)
METHOD_FAMILIES = [f for f in FAMILIES if f != "qwen3_5_moe"]


def _merges(model, sample, method, ratio):
    """True when `method` returns merged rows that differ from the kept rows on this sample."""
    with torch.no_grad():
        enc = model.model.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True)
    for feat, grid in zip(enc.pooler_output, sample["video_grid_thw"]):
        sel = tc.select(feat, int(grid[0]), ratio, method=method)
        if sel.merged and not torch.equal(sel.features, feat[sel.keep]):
            return True
    return False


@pytest.mark.parametrize("family", METHOD_FAMILIES)
@pytest.mark.parametrize("method", ORACLE_METHODS)
def test_every_method_prefill_equals_unpatched_on_pruned_merged_sequence(family, method):
    model = tiny_model(family)
    sample = sample_for(family, grids=MERGING_SAMPLE)
    oracle = explicit_pruned_inputs(model, sample, MERGING_RATIO, method=method)
    with torch.no_grad():
        expected = model(**oracle).logits
    tc.apply(model, method, MERGING_RATIO)
    with torch.no_grad():
        got = model(**batch_of(sample)).logits
    assert torch.equal(got, expected)
    if _merges(model, sample, method, MERGING_RATIO):
        # the merged rows matter: the same sequence with the kept rows' own features differs
        plain = explicit_pruned_inputs(model, sample, MERGING_RATIO, method=method, merged=False)
        tc.revert(model)
        with torch.no_grad():
            assert not torch.equal(model(**plain).logits, got)


def test_visionzip_merges_on_the_oracle_sample():
    # guards the test above: the merging branch is really exercised for visionzip
    for family in METHOD_FAMILIES:
        assert _merges(tiny_model(family), sample_for(family, grids=MERGING_SAMPLE), "visionzip", MERGING_RATIO)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("method", AUTHORS_BASELINES)
def test_merged_prefill_equals_the_inputs_embeds_path(family, method):
    model = tiny_model(family)
    sample = sample_for(family, grids=MERGING_SAMPLE)
    oracle = as_inputs_embeds(model, explicit_pruned_inputs(model, sample, MERGING_RATIO, method=method))
    with torch.no_grad():
        expected = model(**oracle).logits
    tc.apply(model, method, MERGING_RATIO)
    with torch.no_grad():
        got = model(**batch_of(sample)).logits
    torch.testing.assert_close(got, expected, atol=BATCH_ATOL, rtol=0)


@pytest.mark.parametrize("family", METHOD_FAMILIES)
@pytest.mark.parametrize("method", AUTHORS_BASELINES)
def test_merged_generate_with_cache_equals_uncached_greedy_loop(family, method):
    model = tiny_model(family)
    sample = sample_for(family, grids=MERGING_SAMPLE)
    oracle = explicit_pruned_inputs(model, sample, MERGING_RATIO, method=method)
    expected = greedy_uncached(model, oracle, steps=4)
    tc.apply(model, method, MERGING_RATIO)
    batch = batch_of(sample)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, suppress_tokens=SPECIAL)
    L = batch["input_ids"].shape[1]
    assert out[0, L:].tolist() == expected
    stats = tc.last_stats(model)
    assert stats["method"] == method and stats["visual_tokens_before"] == 32
    assert stats["visual_tokens_after"] == int((oracle["input_ids"] == VIDEO).sum())
    assert stats["visual_tokens_after"] < 32, "the sample must really be compressed"
    if method != "dycoke":  # the merging three: the kept rows carry merged features
        assert _merges(tiny_model(family), sample, method, MERGING_RATIO)


@pytest.mark.parametrize("family", METHOD_FAMILIES)
@pytest.mark.parametrize("method", AUTHORS_BASELINES)
def test_merged_batch_with_padding_gives_each_sample_alone(family, method):
    model = tiny_model(family)
    samples = [
        sample_for(family, 0, grids=((4, 4, 4),)),
        make_sample(family, [], seed=1, text_after=(4, 5)),  # no video
        sample_for(family, 2, grids=MERGING_SAMPLE),  # two videos
    ]
    tc.apply(model, method, MERGING_RATIO)
    alone, alone_ids = [], []
    for s in samples:
        b = batch_of(s)
        with torch.no_grad():
            alone.append(model(**b).logits[0, -1])
        alone_ids.append(model.generate(**b, max_new_tokens=3, do_sample=False)[0, b["input_ids"].shape[1]:])
    batch = collate(samples, padding_side="left")
    with torch.no_grad():
        logits = model(**batch).logits
    for b in range(len(samples)):
        torch.testing.assert_close(logits[b, -1], alone[b], atol=BATCH_ATOL, rtol=0)
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    L = batch["input_ids"].shape[1]
    for b in range(len(samples)):
        assert torch.equal(out[b, L:], alone_ids[b])


@pytest.mark.parametrize("method", AUTHORS_BASELINES)
def test_merged_labels_are_pruned_at_the_same_positions(method):
    family = "qwen3_vl"
    model = tiny_model(family)
    sample = sample_for(family, grids=MERGING_SAMPLE)
    batch = batch_of(sample)
    labels = batch["input_ids"].clone()
    labels[batch["mm_token_type_ids"] != 0] = -100
    oracle = explicit_pruned_inputs(model, sample, MERGING_RATIO, method=method)
    oracle_labels = oracle["input_ids"].clone()
    oracle_labels[oracle["mm_token_type_ids"] != 0] = -100
    with torch.no_grad():
        expected = model(**oracle, labels=oracle_labels).loss
    tc.apply(model, method, MERGING_RATIO)
    with torch.no_grad():
        assert torch.equal(model(**batch, labels=labels).loss, expected)


def test_merging_images_on_request_only():
    family = "qwen2_5_vl"
    sample = make_sample(family, [(2, 4, 4)], image_grids=[(1, 8, 8)])
    model = tiny_model(family)
    tc.apply(model, "visionzip", 0.5)
    with torch.no_grad():
        model(**batch_of(sample))
    assert [k["kind"] for k in tc.last_stats(model)["per_sample"][0]] == ["video"]
    tc.apply(model, "visionzip", 0.5, compress_images=True)
    with torch.no_grad():
        model(**batch_of(sample))
    image = [k for k in tc.last_stats(model)["per_sample"][0] if k["kind"] == "image"][0]
    assert (image["before"], image["after"]) == (16, 8)  # one frame: K = int(0.5 * 16)


def test_method_options_reach_the_compressor():
    family = "qwen2_vl"
    sample = sample_for(family, grids=((3, 4, 4),))  # odd T: dycoke drops the last frame
    model = tiny_model(family)
    tc.apply(model, "dycoke", 0.5)
    with torch.no_grad():
        model(**batch_of(sample))
    dropped = tc.last_stats(model)["visual_tokens_after"]
    tc.apply(model, "dycoke", 0.5, keep_last_frame=True)
    with torch.no_grad():
        model(**batch_of(sample))
    assert tc.last_stats(model)["visual_tokens_after"] == dropped + 4
    with pytest.raises(tc.ConfigError, match="k=2 is out of range"):
        tc.apply(model, "dycoke", 0.5, k=2)


def test_last_stats_describe_the_last_generate_not_an_earlier_one():
    # issue #16 H15: a text-only generate after a compressed one used to show the old stats
    model = tiny_model("qwen2_5_vl")
    tc.apply(model, "vidcom2", 0.25)
    model.generate(**batch_of(sample_for("qwen2_5_vl")), max_new_tokens=2, do_sample=False)
    assert tc.last_stats(model)["visual_tokens_before"] == 16
    text = torch.tensor([[1, 2, 3, 4]])
    model.generate(input_ids=text, attention_mask=torch.ones_like(text), max_new_tokens=2, do_sample=False)
    assert tc.last_stats(model) is None
