"""The real processor path: an mp4 made here, qwen-vl-utils' process_vision_info, AutoProcessor
and the model loaded from a tiny checkpoint folder saved here, offline."""
import os

import pytest
import torch

import token_compressor as tc
from oracles import explicit_pruned_inputs, greedy_uncached
from tiny_checkpoint import make_mp4, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    save_checkpoint(folder / "qwen2_5_vl", "qwen2_5_vl")
    return folder / "qwen2_5_vl", make_mp4(folder / "clip.mp4")


def test_processor_path_generates_compressed_like_the_oracle(checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    from qwen_vl_utils import process_vision_info
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, mp4 = checkpoint
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    messages = [{"role": "user", "content": [
        {"type": "video", "video": str(mp4), "nframes": 8, "min_pixels": 56 * 56, "max_pixels": 112 * 112},
        {"type": "text", "text": "What moves?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    _, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True)
    inputs = processor(text=[text], videos=videos, fps=video_kwargs["fps"][0], do_resize=False, return_tensors="pt")
    T, h, w = inputs["video_grid_thw"][0].tolist()
    assert T == 4 and h * w // 4 == 16  # 8 frames of 112x112 -> 4 temporal patches of 4x4 tokens

    video_id = model.config.video_token_id
    sample = {k: v[0] if k in ("input_ids", "mm_token_type_ids") else v for k, v in inputs.items()}
    oracle = explicit_pruned_inputs(model, sample, 0.25, video_token_id=video_id)
    special = [video_id, model.config.image_token_id]
    expected = greedy_uncached(model, oracle, steps=4, suppress=special)

    tc.apply(model, "vidcom2", 0.25)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, suppress_tokens=special)
    L = inputs["input_ids"].shape[1]
    assert out[0, L:].tolist() == expected
    stats = tc.last_stats(model)
    assert stats["visual_tokens_before"] == 64
    assert stats["visual_tokens_after"] == int((oracle["input_ids"] == video_id).sum())
    assert stats["seq_len_after"] == oracle["input_ids"].shape[1] < L
