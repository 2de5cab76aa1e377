"""Stock lmms-eval 0.7.3, unmodified and offline, on the newer Qwen families: its `--model
qwen3_vl` wrapper loads `Qwen3VLMoeForConditionalGeneration` for a checkpoint whose name carries
an `A<n>B` tag and the Qwen3.5 classes for a `qwen3_5*` model type; `--model qwen3_5` is the same
wrapper with Qwen3.5 defaults. Each run is compressed through the entry point (COMPRESSOR set),
and the run report's counts prove it: every sample compressed, the visual tokens cut to about a
quarter, and the model type the wrapper really loaded.

Expected counts (patch 16, 2x2 merge; 2 clips of 16 frames, 112x112, 4 fps): both wrappers
sample 8 frames = 4 temporal patches per clip. `--model qwen3_vl` caps a frame at max_pixels=12544,
so frames become 96x96 -> 3x3 = 9 tokens, 36 per clip, 72 in all (as tests/test_lmms_eval.py).
`--model qwen3_5` sets its `total_pixels` default, and then lmms-eval hands qwen-vl-utils no
max_pixels: the frames round to 128x128 -> 4x4 = 16 tokens, 64 per clip, 128 in all. VidCom² at
r=0.25 keeps r*N*T up to 1/2 token of rounding per temporal patch: |after - r*before| <= 4.
"""
import pytest

import lmms_eval_harness as H
from tiny_checkpoint import make_mp4, save_checkpoint

BEFORE = {"qwen3_vl": 72, "qwen3_5": 128}  # per lmms-eval wrapper
ROUNDING = 0.5 * 4 * 2

# run name -> (lmms-eval --model, family, checkpoint folder name: lmms-eval picks the MoE class by
# an `A<n>B` tag in the name, as in Qwen3-VL-30B-A3B-Instruct)
RUNS = {
    "qwen3_vl_moe": ("qwen3_vl", "qwen3_vl_moe", "Qwen3-VL-tiny-A1B"),
    "qwen3_5": ("qwen3_vl", "qwen3_5", "Qwen3.5-tiny"),
    "qwen3_5_moe": ("qwen3_5", "qwen3_5_moe", "Qwen3.5-tiny-A1B"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval_qwen3")
    docs = [{"id": i, "video": str(make_mp4(root / f"clip{i}.mp4", frames=16, fps=4)),
             "question": f"What moves in clip {i}?", "answer": "a square"} for i in range(2)]
    task = H.make_task(root / "task", docs)
    jobs = {}
    for name, (wrapper, family, folder) in RUNS.items():
        checkpoint = save_checkpoint(root / folder, family)
        jobs[name] = (H.lmms_eval_command(wrapper, checkpoint, task, root / f"out_{name}"),
                      H.clean_env({"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}, root))
    return {"root": root, "done": H.run_many(jobs, root, timeout=600)}


@pytest.mark.parametrize("name", list(RUNS))
def test_stock_lmms_eval_compresses_the_newer_qwen_families(runs, name):
    wrapper, family, _ = RUNS[name]
    proc = runs["done"][name]
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rep = H.read_report(runs["root"] / f"out_{name}")
    # the class lmms-eval chose: the MoE one by the folder's A1B tag, Qwen3.5's by the model type
    assert rep["model_types"] == [family]
    assert rep["eval_path"] == "chat"  # --model qwen3_vl / qwen3_5 resolve to their chat classes
    assert rep["compressor"] == "vidcom2" and rep["ratio"] == 0.25
    assert rep["samples"] == rep["compressed_samples"] == 2 and rep["skipped_samples"] == 0
    before, after = rep["visual_tokens_before"], rep["visual_tokens_after"]
    assert before == BEFORE[wrapper]
    assert abs(after - 0.25 * before) <= ROUNDING and after < before
    assert proc.stdout.count("token-compressor run report") == 1
    assert f"| visual tokens after  | {after}" in proc.stdout
    assert "tiny_video_qa" in H.results_of(runs["root"] / f"out_{name}")["results"]
