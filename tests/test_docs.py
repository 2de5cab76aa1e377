"""Every ```python and ```bash block of README.md and docs/*.md runs, offline, as written.

Each block runs in its own process (python blocks with this interpreter, bash blocks with
`bash -euo pipefail`, this interpreter's bin folder first on PATH so `python` and
`token-compressor` are this environment's) in a scratch folder that holds `video.mp4` (a real
448x448 mp4) and tiny random-weight checkpoints. The one substitution: the hub ids in HUB_IDS are
replaced by the folder of the tiny checkpoint of the same family; nothing else of a block is
changed. Blocks marked `<!-- docs-test: skip REASON -->` are reported as skipped with their reason;
`<!-- docs-test: vllm -->` blocks belong to the vLLM suite.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from docs_blocks import MarkerError, all_blocks, blocks_of, doc_files, docs_env

HUB_IDS = {
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2_vl",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl",
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl",
}
BLOCKS = all_blocks()
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    from tiny_checkpoint import make_mp4, save_checkpoint

    folder = tmp_path_factory.mktemp("docs")
    make_mp4(folder / "video.mp4", frames=12, size=448, fps=4)
    needed = {family for block in BLOCKS if block.mode == "run"
              for hub, family in HUB_IDS.items() if hub in block.code}
    for family in sorted(needed):
        save_checkpoint(folder / "checkpoints" / family, family)
    return folder


def substituted(code: str, scratch: Path) -> str:
    for hub, family in HUB_IDS.items():
        code = code.replace(hub, str(scratch / "checkpoints" / family))
    return code


def run_block(block, scratch: Path) -> subprocess.CompletedProcess:
    code = substituted(block.code, scratch)
    if block.language == "python":
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(cmd, cwd=scratch, env=docs_env(scratch), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block, scratch):
    if block.mode == "skip":
        pytest.skip(f"{block.id}: docs-test skip: {block.reason}")
    if block.mode == "vllm":
        pytest.skip(f"{block.id}: docs-test vllm: run by the vLLM test suite")
    proc = run_block(block, scratch)
    assert proc.returncode == 0, (f"{block.id} failed (exit {proc.returncode})\n--- block ---\n{block.code}"
                                  f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")


def test_the_docs_have_runnable_blocks_of_both_languages():
    """The collection itself works: README's quickstart blocks are found and run (not skipped)."""
    readme = [b for b in BLOCKS if b.file == "README.md"]
    assert {b.language for b in readme if b.mode == "run"} == {"python", "bash"}
    assert any("tc.apply(model" in b.code for b in readme if b.mode == "run")
    # the set-up commands are marked, with the CI step that runs them named in the reason
    setup = [b for b in readme if "make bench" in b.code]
    assert len(setup) == 1 and setup[0].mode == "skip" and ".ci/run" in setup[0].reason


def test_no_user_doc_points_into_the_shared_folder():
    for path in doc_files():
        assert "../shared" not in path.read_text(encoding="utf-8"), path


def test_a_skip_marker_without_a_reason_is_an_error(tmp_path):
    bad = tmp_path / "probe.md"
    bad.write_text("text\n<!-- docs-test: skip -->\n```bash\necho hi\n```\n", encoding="utf-8")
    with pytest.raises(MarkerError, match="needs a reason"):
        blocks_of(bad)
    bad.write_text("<!-- docs-test: skip network -->\n\n```bash\necho hi\n```\n", encoding="utf-8")
    with pytest.raises(MarkerError, match="line just before"):
        blocks_of(bad)
    bad.write_text("<!-- docs-test: skip network -->\n```bash\necho hi\n```\n```python\nprint(1)\n```\n",
                   encoding="utf-8")
    first, second = blocks_of(bad)
    assert (first.mode, first.reason, second.mode) == ("skip", "network", "run")


def test_a_failing_block_fails(scratch):
    """The runner reports a failing block: `set -e` and python's exit status are honoured."""
    from docs_blocks import Block

    assert run_block(Block("x.md", 1, "bash", "false\necho after\n", "run"), scratch).returncode != 0
    assert run_block(Block("x.md", 1, "python", "import token_compressor as tc\ntc.select(None, 1, 2.0)\n", "run"),
                     scratch).returncode != 0
