"""Inside real vLLM engines (CPU build), one engine per model and setting: the kept rows are
exactly what `token_compressor.select` returns on the same video embeddings (captured in the
worker), merged rows replace the kept embeddings, the placeholder has the count the grid gives,
and the kept tokens get the M-RoPE positions the transformers path gives them."""
import json
import os

import pytest
import torch

from helpers import hf_prompt_positions, prompt, run_engine, video
from token_compressor import select
from token_compressor.compressors.counts import fixed_count_options, kept_count
from token_compressor.config import from_env

RATIO = 0.4
# two requests in one batch: different lengths, both with the chat template's outer
# <|vision_start|>...<|vision_end|> around the video (vLLM defect 2 on Qwen3-VL)
PROMPTS = [{"text": prompt("Describe", "now."), "video": {"num_frames": 8, "size": 112, "seed": 0}},
           {"text": prompt("What happens", "?"), "video": {"num_frames": 12, "size": 112, "seed": 1}}]

SETTINGS = [
    ("qwen2_5_vl", "vidcom2", {}),
    ("qwen2_5_vl", "dycoke", {}),
    ("qwen2_5_vl", "visionzip", {}),
    ("qwen2_5_vl", "fastvid", {"TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET": "1"}),
    ("qwen2_5_vl", "evs", {}),
    ("qwen2_5_vl", "random", {}),
    ("qwen2_5_vl", "uniform", {}),
    ("qwen3_vl", "vidcom2", {}),
    ("qwen3_vl", "visionzip", {}),
    ("qwen3_vl", "dycoke", {"DYCOKE_K": "0.7"}),
    # Qwen3-VL-MoE and Qwen3.5 (dense and MoE) inherit Qwen3-VL's seams (its class methods and
    # module functions); one method each: an engine per setting is what the suite's time goes on
    ("qwen3_vl_moe", "vidcom2", {}),
    ("qwen3_5", "vidcom2", {}),
    ("qwen3_5_moe", "visionzip", {}),
]
# Qwen3.5 is hybrid (gated delta-net layers): with prefix caching on, vLLM prefills a prompt in
# block-sized chunks, and vLLM 0.32 misplaces the positions of pruned video rows that fall into a
# later chunk (docs/vllm.md, defect 5; not worked around). Off here, so that the prompts are
# prefilled whole, as they are for the other families; a split prompt fails the position check.
ENGINE = {"qwen3_5": {"enable_prefix_caching": False}, "qwen3_5_moe": {"enable_prefix_caching": False}}


def _video_token_id(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)["video_token_id"]


@pytest.mark.parametrize("family,method,env", SETTINGS, ids=[f"{f}-{m}" for f, m, _ in SETTINGS])
def test_vllm_keeps_what_select_keeps(family, method, env, checkpoints, tmp_path):
    model = checkpoints(family)
    env = dict(env, COMPRESSOR=method, R_RATIO=str(RATIO))
    proc, results, captures = run_engine(model, env, PROMPTS, str(tmp_path), ENGINE.get(family))
    assert proc.returncode == 0, proc.stdout[-4000:]
    options = dict(from_env(env).options)
    videos = {c["grid"][0]: c for c in captures if c["file"].startswith("video")}
    positions = [c for c in captures if c["file"].startswith("positions") and c["num_computed_tokens"] == 0]
    video_id = _video_token_id(model)
    assert len(videos) == len(PROMPTS)
    for spec, result in zip(PROMPTS, results):
        frames, meta = video(**spec["video"])
        hf_ids, hf_grid, hf_pos = hf_prompt_positions(model, spec["text"], frames, meta)
        cap = videos[int(hf_grid[0])]
        assert tuple(cap["grid"]) == tuple(hf_grid.tolist())  # the same video in both engines
        T = cap["grid"][0]
        feats = cap["features"]
        N = feats.shape[0] // T

        # the rows: select on the worker's embeddings, run here again
        sel = select(feats, T, RATIO, method, **fixed_count_options(method, T, N, RATIO, options))
        assert torch.equal(cap["keep"], sel.keep)
        if sel.merged:
            assert torch.equal(cap["merged"], sel.features)
        assert torch.equal(cap["kept_rows"], sel.kept_features(feats))
        # ... and what vLLM put into the sequence (its positions channels appended after them)
        final = cap["final"]
        if family == "qwen2_5_vl":
            assert torch.equal(final[:, :cap["width"]], cap["kept_rows"])
        else:  # Qwen3-VL: the whole frame-group sequence, the last channel flags video rows
            assert torch.equal(final[final[:, -1] == 1, :cap["width"]], cap["kept_rows"])

        # the count: fixed by the grid before the encoder ran
        ids = torch.tensor(result["prompt_token_ids"])
        assert int((ids == video_id).sum()) == sel.num_kept == kept_count(method, T, N, RATIO, options)

        # the positions: vLLM's, after its recomputation, vs transformers' on the uncompressed
        # prompt at the kept tokens (and every token before the video)
        chunks = [p for p in captures if p["file"].startswith("positions") and torch.equal(p["input_ids"], ids)
                  and 0 < p["num_computed_tokens"] < ids.numel() and p["media_positions"]]
        assert not chunks, "the prompt was prefilled in chunks (see ENGINE)"
        (cap_pos,) = [p for p in positions if torch.equal(p["input_ids"], ids)]
        vllm_pos = cap_pos["positions"][:, :ids.numel()]  # the buffer also holds the generated tokens'
        first = int((ids == video_id).nonzero()[0])
        if family == "qwen2_5_vl":
            vpos = vllm_pos[:, ids == video_id]
        else:
            # Qwen3-VL: vLLM sizes the placeholder as [K video tokens in frame 0's group, 0 in
            # the others], but fills it with the embeddings of the real per-frame layout (each
            # frame's timestamp, start, kept tokens, end): the video rows are those its
            # positions channels flag (channel 4), counted from the start of the replacement
            (media,) = cap_pos["media_positions"]
            rows = (media[:, 4] == 1).nonzero().flatten()
            start = first - int(rows[0])
            vpos = vllm_pos[:, start + rows]
        hf_video = hf_pos[:, hf_ids == video_id][:, sel.keep]
        assert torch.equal(vpos, hf_video)
        if family != "qwen2_5_vl":
            _check_outer_vision_start_defect(model, cap_pos)
        assert torch.equal(ids[:first], hf_ids[:first])
        assert torch.equal(vllm_pos[:, :first], hf_pos[:, :first])


def _check_outer_vision_start_defect(model_dir, cap):
    """vLLM defect 2 (docs/vllm.md): on the inputs the worker got for this prompt (ids with the
    chat template's outer <|vision_start|>), vLLM's own position recomputation fails; with the
    outer markers hidden, as the plugin does, it returns the positions the engine used."""
    from transformers import AutoConfig
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration

    from token_compressor.integrations.vllm import outer_vision_starts

    cfg = AutoConfig.from_pretrained(model_dir)
    media = [torch.cat([torch.zeros(m.shape[0], 1), m.float()], dim=1) for m in cap["media_positions"]]
    ids = cap["input_ids"].clone()
    recompute = Qwen3VLForConditionalGeneration._recompute_mrope_positions  # not wrapped in this process
    args = dict(multimodal_embeddings=media, num_computed_tokens=0, vision_start_token_id=cfg.vision_start_token_id,
                image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id)
    try:  # a crash or, with a prefix as long as here, silently misplaced positions
        _, wrong, _ = recompute(input_ids=ids, mrope_positions=cap["mrope_positions_before"].clone(), **args)
        assert not torch.equal(wrong, cap["positions"])
        print("defect 2 without the plugin: positions differ at", int((wrong != cap["positions"]).any(0).sum()),
              "of", wrong.shape[1], "tokens")
    except RuntimeError as e:
        assert "must match the existing size" in str(e)
    outer = outer_vision_starts(ids, cfg.vision_start_token_id, cfg.vision_end_token_id,
                                (cfg.image_token_id, cfg.video_token_id))
    assert int(outer.sum()) == 1
    ids[outer] = -1
    _, positions, _ = recompute(input_ids=ids, mrope_positions=cap["mrope_positions_before"].clone(), **args)
    assert torch.equal(positions, cap["positions"])
