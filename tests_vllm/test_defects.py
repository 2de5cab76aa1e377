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
