"""Every script in examples/ runs on a tiny local checkpoint, offline, as a user runs it
(`python examples/X.py --model FOLDER --video video.mp4`), and prints what was kept."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_blocks import ROOT, docs_env

EXAMPLES = ROOT / "examples"
FAMILY_SCRIPTS = {"qwen2_vl": "qwen2_vl.py", "qwen2_5_vl": "qwen2_5_vl.py", "qwen3_vl": "qwen3_vl.py"}
KEPT = re.compile(r"vidcom2: kept (\d+) of (\d+) video tokens")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tiny_checkpoint import make_mp4, save_checkpoint

    root = tmp_path_factory.mktemp("examples")
    make_mp4(root / "video.mp4", frames=12, size=448, fps=4)
    make_mp4(root / "other.mp4", frames=16, size=336, fps=4)
    ck = {family: save_checkpoint(root / family, family) for family in FAMILY_SCRIPTS}
    return {"root": root, "checkpoints": ck}


def run(world, args, **env):
    environ = docs_env(world["root"])
    environ.update(env)
    return subprocess.run([sys.executable, *map(str, args)], cwd=world["root"], env=environ,
                          capture_output=True, text=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def test_every_example_is_tested():
    tested = set(FAMILY_SCRIPTS.values()) | {"batched.py", "screening_mc.py", "lmms_eval.sh"}
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == tested


@pytest.mark.parametrize("family", list(FAMILY_SCRIPTS))
def test_family_example_runs_compressed(world, family):
    out = ok(run(world, [EXAMPLES / FAMILY_SCRIPTS[family], "--model", world["checkpoints"][family],
                         "--video", "video.mp4", "--max-new-tokens", "4"]))
    after, before = map(int, KEPT.search(out).groups())
    assert 0 < after < before  # compressed, and the count is the model's own
    # `none` is the baseline, measured with the same code
    out = ok(run(world, [EXAMPLES / FAMILY_SCRIPTS[family], "--model", world["checkpoints"][family],
                         "--video", "video.mp4", "--max-new-tokens", "4", "--method", "none"]))
    assert f"none: kept {before} of {before} video tokens" in out


def test_batched_example_keeps_per_sample(world):
    out = ok(run(world, [EXAMPLES / "batched.py", "--model", world["checkpoints"]["qwen2_5_vl"],
                         "--video", "video.mp4", "--video", "other.mp4"]))
    rows = re.findall(r"^(\S+\.mp4): kept (\d+)/(\d+) video tokens", out, re.M)
    assert [r[0] for r in rows] == ["video.mp4", "other.mp4"]
    assert all(0 < int(a) < int(b) for _, a, b in rows) and rows[0][2] != rows[1][2]
    assert "first video: rows [" in out and "at prompt positions [" in out


def test_screening_example_keeps_the_options(world):
    from screening_helpers import FakeOpenAI, reply

    def planner(body, n):
        return 200, reply(json.dumps({"decision": "end", "timestamps": [[0, 1]],
                                      "revised_question": "Which way does the square go?"})), 0

    with FakeOpenAI(planner) as server:
        out = ok(run(world, [EXAMPLES / "screening_mc.py", "--model", world["checkpoints"]["qwen2_5_vl"],
                             "--video", "video.mp4"],
                     EMC_SCREENER="llm", EMC_BASE_URL=server.base_url, EMC_MODEL="planner", EMC_MAX_RETRIES="0"))
    assert "screening: succeeded" in out
    asked = ast.literal_eval(re.search(r"^asked: (.*)$", out, re.M).group(1))
    assert asked == ("Which way does the square go?\nA. It moves across the frame.\nB. It stays still.\n"
                     "C. It changes colour.\nD. It disappears.\n"
                     "Answer with the option's letter from the given choices directly.")
    assert KEPT.search(out)


def test_lmms_eval_command_file(world, tmp_path):
    from lmms_eval_harness import TASK, make_task, read_report

    docs = [{"id": 0, "video": str(world["root"] / "video.mp4"), "question": "What moves?", "answer": "a square"}]
    task_dir = make_task(tmp_path / "task", docs)
    proc = subprocess.run(
        ["bash", EXAMPLES / "lmms_eval.sh", world["checkpoints"]["qwen2_5_vl"], TASK, tmp_path / "out"],
        cwd=world["root"], capture_output=True, text=True, timeout=900,
        env={**docs_env(world["root"]), "NUM_PROCESSES": "1", "HF_DATASETS_OFFLINE": "1",
             "FORCE_QWENVL_VIDEO_READER": "decord", "MODEL_ARGS": "max_pixels=12544,min_pixels=3136",
             "LMMS_EXTRA": f"--include_path {task_dir} --verbosity WARNING"})
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rep = read_report(tmp_path / "out")
    assert rep["compressor"] == "vidcom2" and rep["ratio"] == 0.25 and rep["compressed_samples"] == 1
