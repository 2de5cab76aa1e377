"""docs/vllm.md's bash blocks marked `<!-- docs-test: vllm -->` run here, in the vLLM environment
(with the venv's python first on PATH, a tiny checkpoint as MODEL); every other bash or python
block there must say why it cannot run (`<!-- docs-test: skip REASON -->`)."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "vllm.md")


def blocks(path):
    """[(marker or None, language, code)] for every fenced block."""
    text = open(path, encoding="utf-8").read()
    out = []
    for m in re.finditer(r"(?:<!--\s*docs-test:\s*([^>]*?)\s*-->\s*\n)?```(\w+)\n(.*?)\n```", text, re.S):
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def test_every_block_is_run_or_says_why_not():
    found = blocks(DOC)
    assert found
    for marker, lang, code in found:
        if lang in ("bash", "python"):
            assert marker is not None and (marker == "vllm" or marker.startswith("skip ")), code[:80]


RUNNABLE = [code for marker, lang, code in blocks(DOC) if marker == "vllm"]


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_docs_block_runs(code, checkpoints, tmp_path):
    env = dict(os.environ, MODEL=checkpoints("qwen2_5_vl"), VLLM_CPU_KVCACHE_SPACE="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for var in ("COMPRESSOR", "R_RATIO", "TOKEN_COMPRESSOR_VLLM_CAPTURE"):
        env.pop(var, None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # 8 frames of 112 px: 4 temporal patches of 4x4 merged tokens; vidcom2 at 0.25 keeps round(0.25*64)
    assert "video tokens kept: 16\n" in proc.stdout, proc.stdout[-3000:]
