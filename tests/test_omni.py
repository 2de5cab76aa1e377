"""The Omni thinkers (Qwen2.5-Omni, Qwen3-Omni MoE) and the whole Omni models, against the exact
oracle: the unpatched thinker fed the explicitly pruned prompt with the original positions and
the audio as it is. Video tokens are compressed; audio tokens, separate or interleaved with the
video (`use_audio_in_video`), are never touched.

Tolerance: as tests/test_models.py: single unpadded samples bitwise (the same kernels on the same
pruned inputs); re-padded batch rows atol 1e-5 on fp32 logits of O(1) (sdpa sees another mask
layout and other matmul shapes).
"""
import pytest
import torch

import token_compressor as tc
from oracles import explicit_pruned_inputs, greedy_uncached
from omni_models import (AUDIO, OMNI_FAMILIES, OMNI_SPECIAL, collate_omni, make_omni_sample, tiny_omni,
                         tiny_thinker)
from tiny_models import VIDEO
from token_compressor import runtime
from token_compressor.models import FAMILIES
from token_compressor.models.patching import is_class_patched, seam_problem

# transformers 5.17-5.20 keep the thinker's towers on the thinker itself: the Omni families are
# refused there (test_the_thinker_without_the_seams_is_refused_clearly runs instead)
SEAMS = seam_problem(tiny_thinker("qwen2_5_omni")) is None
needs_seams = pytest.mark.skipif(not SEAMS, reason="this transformers has no Omni *ThinkerModel seam: refused, "
                                                  "tested by test_the_thinker_without_the_seams_is_refused_clearly")

BATCH_ATOL = 1e-5
# the prompts: video only, video with a separate audio clip before it, video with its own audio
# track interleaved in time chunks (use_audio_in_video)
PROMPTS = {
    "video": dict(grids=((4, 4, 4), (2, 4, 8))),
    "video+audio": dict(grids=((4, 4, 4),), audio_frames=(40,)),
    "audio_in_video": dict(grids=((4, 4, 4),), audio_frames=(60,), in_video=True),
}

_MODELS = {}


def thinker(family, attn="sdpa"):
    key = (family, attn)
    if key not in _MODELS:
        _MODELS[key] = tiny_thinker(family, attn)
    return _MODELS[key]


@pytest.fixture(autouse=True)
def _clean():
    yield
    for model in _MODELS.values():
        tc.revert(model)
    tc.revert()


def audio_ids(ids):
    """Where the audio tokens are, in order (what compression must leave alone)."""
    return (ids == AUDIO).nonzero()[:, -1]


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prefill_equals_the_pruned_prompt_and_audio_is_untouched(family, prompt):
    model = thinker(family)
    sample = make_omni_sample(family, **PROMPTS[prompt])
    oracle = explicit_pruned_inputs(model, sample, 0.25)
    with torch.no_grad():
        expected = model(**oracle).logits
    tc.apply(model, "vidcom2", 0.25)
    with torch.no_grad():
        got = model(**collate_omni([sample])).logits
    assert torch.equal(got, expected)
    stats = tc.last_stats(model)
    n_video = int((sample["input_ids"] == VIDEO).sum())
    assert stats["visual_tokens_before"] == n_video
    assert stats["visual_tokens_after"] == int((oracle["input_ids"] == VIDEO).sum()) < n_video
    # every audio token stays, in order, and nothing else than video tokens left the prompt
    assert int((oracle["input_ids"] == AUDIO).sum()) == int((sample["input_ids"] == AUDIO).sum())
    assert stats["seq_len_before"] - stats["seq_len_after"] == n_video - stats["visual_tokens_after"]


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_generate_equals_an_uncached_greedy_loop_on_the_pruned_prompt(family, prompt):
    model = thinker(family)
    sample = make_omni_sample(family, **PROMPTS[prompt], seed=5)
    oracle = explicit_pruned_inputs(model, sample, 0.3)
    expected = greedy_uncached(model, oracle, steps=5, suppress=OMNI_SPECIAL)
    tc.apply(model, "vidcom2", 0.3)
    batch = collate_omni([sample])
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, suppress_tokens=OMNI_SPECIAL)
    L = batch["input_ids"].shape[1]
    assert torch.equal(out[:, :L], batch["input_ids"]), "the caller's prompt is returned in front"
    assert out[0, L:].tolist() == expected
    assert tc.last_stats(model)["visual_tokens_after"] < tc.last_stats(model)["visual_tokens_before"]


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
@pytest.mark.parametrize("method", ["evs", "dycoke", "holitom", "fastvid", "visionzip", "random", "uniform"])
def test_every_compressor_with_audio_present(family, method):
    """vidcom2 above; the other compressors (merging ones carry their merged rows) on the prompt
    with a separate audio clip."""
    model = thinker(family)
    sample = make_omni_sample(family, **PROMPTS["video+audio"], seed=2)
    oracle = explicit_pruned_inputs(model, sample, 0.5, method=method)
    with torch.no_grad():
        expected = model(**oracle).logits
    tc.apply(model, method, 0.5)
    with torch.no_grad():
        got = model(**collate_omni([sample])).logits
    stats = tc.last_stats(model)
    assert stats["method"] == method and stats["visual_tokens_after"] < stats["visual_tokens_before"]
    assert torch.equal(got, expected)


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_gives_each_sample_alone(family, padding_side):
    """Audio with video, video alone, audio alone: each row of the re-padded batch equals its
    sample's oracle; audio tokens of every row all stay."""
    model = thinker(family)
    samples = [make_omni_sample(family, grids=((4, 4, 4),), audio_frames=(40,), seed=1),
               make_omni_sample(family, grids=((2, 4, 8),), seed=2, text_after=(4, 5)),
               make_omni_sample(family, grids=(), audio_frames=(24,), seed=3)]
    expected = []
    for s in samples:
        inputs = explicit_pruned_inputs(model, s, 0.3) if "video_grid_thw" in s else collate_omni([s])
        with torch.no_grad():
            expected.append(model(**inputs).logits[0, -1])
    tc.apply(model, "vidcom2", 0.3)
    batch = collate_omni(samples, padding_side=padding_side)
    with torch.no_grad():
        logits = model(**batch).logits
    stats = tc.last_stats(model)
    assert [[v["before"] for v in row] for row in stats["per_sample"]] == [[16], [16], []]
    for b in range(len(samples)):
        # right padded: the row's last real token ends its kept tokens; left padded: the last column
        dropped = sum(v["before"] - v["after"] for v in stats["per_sample"][b])
        last = int(batch["attention_mask"][b].sum()) - dropped - 1 if padding_side == "right" else -1
        torch.testing.assert_close(logits[b, last], expected[b], atol=BATCH_ATOL, rtol=0)
    if padding_side == "left":
        alone = []
        for s in samples:
            one = collate_omni([s])
            alone.append(model.generate(**one, max_new_tokens=4, do_sample=False,
                                        suppress_tokens=OMNI_SPECIAL)[0, one["input_ids"].shape[1]:])
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, suppress_tokens=OMNI_SPECIAL)
        for b in range(len(samples)):
            assert out[b, batch["input_ids"].shape[1]:].tolist() == alone[b].tolist()


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
def test_nothing_dropped_is_the_unpatched_call_bitwise(family):
    model = thinker(family, "eager")
    batch = collate_omni([make_omni_sample(family, grids=((4, 4, 4),), audio_frames=(40,), seed=1),
                          make_omni_sample(family, grids=((2, 4, 4),), audio_frames=(24,), seed=2, text_after=(4,))])
    kw = dict(max_new_tokens=3, do_sample=False, suppress_tokens=OMNI_SPECIAL, return_dict_in_generate=True,
              output_scores=True, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True, output_attentions=True)
    ref_gen = model.generate(**batch, **kw)
    tc.apply(model, "vidcom2", 1.0)
    with torch.no_grad():
        got = model(**batch, output_hidden_states=True, output_attentions=True)
    got_gen = model.generate(**batch, **kw)
    stats = tc.last_stats(model)
    assert stats["visual_tokens_before"] == stats["visual_tokens_after"] == 24
    for a, b in ((got.logits, ref.logits), (got_gen.sequences, ref_gen.sequences)):
        assert torch.equal(a, b)
    for a, b in zip(got.hidden_states + got.attentions, ref.hidden_states + ref.attentions):
        assert torch.equal(a, b)
    for a, b in zip(got_gen.scores, ref_gen.scores):
        assert torch.equal(a, b)


# -- the whole Omni model, class-level patches, the entry point ------------------------------------

def whole_generate(model, batch, family, **extra):
    text_only = {"generation_mode": "text"} if family == "qwen2_5_omni" else {"return_audio": False}
    return model.generate(**batch, **text_only, thinker_max_new_tokens=4, thinker_do_sample=False,
                          thinker_suppress_tokens=OMNI_SPECIAL, **extra)


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
def test_apply_on_the_whole_model_compresses_its_thinker(family):
    model = tiny_omni(family)
    sample = make_omni_sample(family, **PROMPTS["video+audio"], seed=4)
    expected = greedy_uncached(model.thinker, explicit_pruned_inputs(model.thinker, sample, 0.25), steps=4,
                               suppress=OMNI_SPECIAL)
    batch = collate_omni([sample])
    assert tc.apply(model, "vidcom2", 0.25) is model
    out = whole_generate(model, batch, family)
    assert out[0, batch["input_ids"].shape[1]:].tolist() == expected
    stats = tc.last_stats(model)
    assert stats is not None and stats == tc.last_stats(model.thinker)
    assert stats["visual_tokens_after"] < stats["visual_tokens_before"] == 16
    tc.revert(model)
    assert "generate" not in model.__dict__ and "generate" not in model.thinker.__dict__


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
def test_speech_output_from_a_compressed_thinker_is_refused(family):
    model = tiny_omni(family)
    batch = collate_omni([make_omni_sample(family, seed=4)])
    tc.apply(model, "vidcom2", 0.25)
    model.has_talker = True  # a loaded talker (not built: the refusal comes before it would run)
    with pytest.raises(ValueError, match="speech output is not supported with a compressed thinker"):
        model.generate(**batch, thinker_max_new_tokens=2)
    if family == "qwen2_5_omni":  # transformers 5.23's Qwen2.5-Omni has no return_audio: speech still
        with pytest.raises(ValueError, match="generation_mode='text'"):
            model.generate(**batch, return_audio=False, thinker_max_new_tokens=2)
    out = whole_generate(model, batch, family)  # text only: compressed
    assert out.shape[1] == batch["input_ids"].shape[1] + 4
    assert tc.last_stats(model)["visual_tokens_after"] < 16


@needs_seams
@pytest.mark.parametrize("family", OMNI_FAMILIES)
@pytest.mark.parametrize("how", ["apply_to", "apply_from_env", "lmms_eval_entry_point"])
def test_class_level_ways_in_reach_thinker_and_whole_model(family, how, monkeypatch):
    for k in ("COMPRESSOR", "R_RATIO", "TOKEN_COMPRESSOR_REPORT"):
        monkeypatch.delenv(k, raising=False)
    runtime.uninstall()
    try:
        if how == "apply_to":
            getattr(tc, f"apply_to_{family}")(method="dycoke", ratio=0.5)
        else:
            monkeypatch.setenv("COMPRESSOR", "dycoke")
            monkeypatch.setenv("R_RATIO", "0.5")
            assert tc.apply_from_env() if how == "apply_from_env" else runtime.lmms_eval_plugin() == []
        family_ = FAMILIES[family]
        assert is_class_patched(family_.model_class()) and is_class_patched(family_.composite.model_class())
        model = tiny_omni(family)  # built after the patch: the class patch reaches it
        sample = make_omni_sample(family, **PROMPTS["video+audio"], seed=6)
        expected = greedy_uncached(model.thinker, explicit_pruned_inputs(model.thinker, sample, 0.5, method="dycoke"),
                                   steps=4, suppress=OMNI_SPECIAL)
        batch = collate_omni([sample])
        out = whole_generate(model, batch, family)
        assert out[0, batch["input_ids"].shape[1]:].tolist() == expected
        stats = tc.last_stats(model)
        assert stats["method"] == "dycoke" and stats["visual_tokens_after"] < stats["visual_tokens_before"]
    finally:
        runtime.uninstall()
        tc.revert()
    assert not is_class_patched(FAMILIES[family].composite.model_class())


def test_the_thinker_without_the_seams_is_refused_clearly():
    """On every transformers: where the thinker has the seams, apply works and lmms-eval's guard
    accepts thinker and whole model; where it lacks them (5.17-5.20), instance apply raises naming
    the missing seam and the release that has it, a class-level patch refuses the compressed call
    instead of running it uncompressed, and the guard stops such an lmms-eval run up front."""
    for family in OMNI_FAMILIES:
        model = tiny_thinker(family)
        batch = collate_omni([make_omni_sample(family, seed=1)])
        # what the lmms-eval guard asks of the models a wrapper holds (a whole Omni model there)
        assert runtime.compressible(model) is SEAMS and runtime.compressible(tiny_omni(family)) is SEAMS
        if SEAMS:
            assert tc.apply(model, "vidcom2", 0.25) is model
            tc.revert(model)
            continue
        with pytest.raises(RuntimeError, match=r"has no get_video_features\(\).*transformers >= 5.21"):
            tc.apply(model, "vidcom2", 0.25)
        getattr(tc, f"apply_to_{family}")(method="vidcom2", ratio=0.25)
        try:
            with pytest.raises(RuntimeError, match="token_compressor cannot compress this call"):
                model.generate(**batch, max_new_tokens=2)
        finally:
            tc.revert()


@pytest.mark.parametrize("model_type", ["qwen2_5_omni", "qwen2_5_omni_thinker", "qwen3_omni_moe_thinker"])
def test_the_command_line_says_omni_goes_through_the_python_api(tmp_path, model_type):
    import json

    from token_compressor.models.loading import ModelLoadError, check_model_folder

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ModelLoadError, match=r"Omni models are compressed through the Python API \(tc.apply\)"):
        check_model_folder(str(tmp_path))
