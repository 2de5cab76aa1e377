"""vLLM 0.32's pruning on the CPU runner (defect 1 of docs/vllm.md): as shipped, vLLM's own EVS
fails on the first video request; with this package installed (COMPRESSOR unset: vLLM's own
pruning, the plugin only works around the defect) the same engine runs, and keeps vLLM's count."""
import json
import os

from helpers import prompt, run_engine
from token_compressor.compressors.baselines import evs_retained_count

PROMPTS = [{"text": prompt(), "video": {"num_frames": 8, "size": 112, "seed": 0}}]
RATE = 0.5


def _video_token_id(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)["video_token_id"]


def test_vllm_own_pruning_fails_on_cpu_without_the_plugin(checkpoints, tmp_path):
    proc, results, _ = run_engine(checkpoints("qwen2_5_vl"), {"VLLM_PLUGINS": ""}, PROMPTS, str(tmp_path),
                                  {"video_pruning_rate": RATE}, capture=False)
    assert proc.returncode != 0 and results is None
    assert "shape mismatch" in proc.stdout, proc.stdout[-3000:]


def test_vllm_own_pruning_runs_on_cpu_with_the_plugin_installed(checkpoints, tmp_path):
    model = checkpoints("qwen2_5_vl")
    proc, results, _ = run_engine(model, {}, PROMPTS, str(tmp_path), {"video_pruning_rate": RATE}, capture=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    ids = results[0]["prompt_token_ids"]
    # 8 frames -> 4 temporal patches of 4x4 merged tokens (112 px, 14 px patches, merge 2)
    assert sum(i == _video_token_id(model) for i in ids) == evs_retained_count(16, 4, 1 - RATE)
    assert len(results[0]["output_token_ids"]) == 4


def _split_video():
    """A prompt with a pruned Qwen3-VL-layout video as vLLM sizes it (all 4 kept tokens in frame
    0's group, the other frames' groups empty) and the 13 replacement rows vLLM fills it with
    (frames keep 2, 1, 1 tokens; channels t, h, w, is-vision-start, is-vision after D=4 features)."""
    import torch

    S, E, V, TS = 259, 260, 262, 30
    ids = torch.tensor([1, 2, 3, TS, S, V, V, V, V, E, TS, S, E, TS, S, E, 4, 5])
    rows, t = [], 0
    for kind in ["ts", "vs", "v", "v", "ve", "ts", "vs", "v", "ve", "ts", "vs", "v", "ve"]:
        if kind == "v":  # a kept token: its own h, w
            rows.append([t, t + 1, t + 2, 0, 1])
        else:
            rows.append([t, t, t, int(kind == "vs"), 0])
            t += 1
    emb = torch.cat([torch.randn(len(rows), 4), torch.tensor(rows, dtype=torch.float32)], 1)
    return ids, emb, dict(vision_start_token_id=S, image_token_id=261, video_token_id=V)


def test_vllm_leaves_a_split_video_unpositioned_and_the_plugin_says_so():
    """vLLM defect 5 (docs/vllm.md), on vLLM's own recomputation, no engine: prefilled in one
    chunk the kept tokens get their h, w; split after the placeholder ([0, 10) + [10, 18)), the
    second chunk's rows are left as the first chunk left them. The plugin's check flags exactly
    that second chunk."""
    import torch
    from vllm.model_executor.models.qwen3_vl import Qwen3VLForConditionalGeneration as Qwen3VL

    from token_compressor.integrations.vllm import video_rows_left_unpositioned

    ids, emb, args = _split_video()
    media = (args["image_token_id"], args["video_token_id"])
    before = torch.arange(ids.numel()).expand(3, -1).clone()
    _, whole, _ = Qwen3VL._recompute_mrope_positions(ids, [emb], before.clone(), 0, **args)
    _, first, _ = Qwen3VL._recompute_mrope_positions(ids, [emb[:7]], before.clone(), 0, **args)
    _, second, _ = Qwen3VL._recompute_mrope_positions(ids, [emb[7:]], first.clone(), 10, **args)
    assert torch.equal(first[:, :10], whole[:, :10])
    assert whole[:, 10].tolist() == [8, 9, 10]  # the second frame's kept token, at its own h and w
    assert torch.equal(second, first) and second[:, 10].tolist() == [8, 8, 8]
    assert not video_rows_left_unpositioned(ids, [emb[:7]], 0, media)
    assert video_rows_left_unpositioned(ids, [emb[7:]], 10, media)
    assert not video_rows_left_unpositioned(ids, [], 10, media)
    assert not video_rows_left_unpositioned(ids, [emb[3:]], 4, media)  # split before the last placeholder
