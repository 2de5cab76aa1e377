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
