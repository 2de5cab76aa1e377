"""The ```python and ```bash blocks of README.md and docs/*.md, with their docs-test markers.

A marker is an HTML comment on the line just before a block's opening fence:
  <!-- docs-test: skip REASON -->   not run here; REASON (required) says why and what runs it instead
  <!-- docs-test: vllm -->          run by the vLLM test suite, not by the main one
Blocks of other languages (plain ``` text, output samples) are not code and are not collected.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("python", "bash")
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>\w+)(?P<rest>.*?)-->\s*$")


class MarkerError(ValueError):
    pass


@dataclass(frozen=True)
class Block:
    file: str          # relative to the repository root
    line: int          # 1-based line of the opening fence
    language: str
    code: str
    mode: str          # "run", "skip" or "vllm"
    reason: Optional[str] = None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.language}"


def doc_files() -> List[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def blocks_of(path: Path) -> List[Block]:
    """The code blocks of one Markdown file. Raises `MarkerError` for a marker without a reason,
    an unknown marker, or a marker that is not directly followed by a python/bash block."""
    path = Path(path).resolve()
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    out: List[Block] = []
    i = 0
    pending = None  # (line number, kind, reason) of a marker waiting for its block
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        if marker:
            kind, reason = marker.group("kind"), marker.group("rest").strip()
            if kind not in ("skip", "vllm"):
                raise MarkerError(f"{rel}:{i + 1}: unknown docs-test marker {kind!r} (skip REASON, vllm)")
            if kind == "skip" and not reason:
                raise MarkerError(f"{rel}:{i + 1}: `docs-test: skip` needs a reason")
            pending = (i + 1, kind, reason or None)
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            language = fence.group(1)
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if pending is not None and (pending[0] != start or language not in LANGUAGES):
                raise MarkerError(f"{rel}:{pending[0]}: a docs-test marker must be the line just before a "
                                  "```python or ```bash block")
            if language in LANGUAGES:
                mode, reason = ("run", None) if pending is None else pending[1:]
                out.append(Block(rel, start + 1, language, "\n".join(body) + "\n", mode, reason))
            pending = None
            i += 1
            continue
        if pending is not None and line.strip():
            raise MarkerError(f"{rel}:{pending[0]}: a docs-test marker must be the line just before a "
                              "```python or ```bash block")
        i += 1
    if pending is not None:
        raise MarkerError(f"{rel}:{pending[0]}: a docs-test marker at the end of the file marks no block")
    return out


def all_blocks() -> List[Block]:
    return [b for path in doc_files() for b in blocks_of(path)]


def docs_env(scratch: Path) -> dict:
    """The environment a block runs in: offline, this checkout's package first, no compression
    or screening configured by the caller's environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPRESSOR", "R_RATIO", "EMC_", "TOKEN_COMPRESSOR_", "OPENAI_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               EMC_CACHE_DIR=str(scratch / "emc-cache"), HOME=str(scratch))
    return env


def vllm_blocks() -> List[Block]:
    """The blocks marked `<!-- docs-test: vllm -->`: for the vLLM test suite to run in its own
    environment (the main suite reports them as skipped)."""
    return [b for b in all_blocks() if b.mode == "vllm"]
