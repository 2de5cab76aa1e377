"""The `token-compressor` command: info, bench dispatch, and one clear line per user error."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import token_compressor.bench
from token_compressor import cli, support
from token_compressor.video import write_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_info_reports_support_and_usability(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_families"] == ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe",
                                      "qwen2_5_omni", "qwen3_omni_moe"] == list(support.SUPPORTED_MODEL_TYPES)
    assert info["transformers_range"] == support.TRANSFORMERS_RANGE == ">=5.17,<5.26"
    assert info["torch_range"] == support.TORCH_RANGE == ">=2.11,<2.16"
    from token_compressor.config import allow_untested_from_env

    assert info["allow_untested"] is allow_untested_from_env()  # on under `make test-latest`
    # the test environments (both locks) lie inside the ranges
    assert info["transformers_supported"] is True and info["torch_supported"] is True
    assert "vidcom2" in info["compressors"]
    for key in ("cuda", "triton", "flash_attn"):
        assert isinstance(info[key], bool) and info[f"{key}_detail"]
    import torch

    # Triton counts as usable only with a GPU driver, flash-attn only with CUDA
    if not torch.cuda.is_available():
        assert info["cuda"] is False and info["triton"] is False and info["flash_attn"] is False
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert "qwen2_vl, qwen2_5_vl, qwen3_vl" in text and "tested range >=5.17,<5.26: yes" in text
    assert "tested range >=2.11,<2.16: yes" in text
    assert ("ALLOW_UNTESTED" in text) is allow_untested_from_env()
    assert re.search(r"^Triton\s+(yes|no)", text, re.M) and re.search(r"^flash-attn\s+(yes|no)", text, re.M)


def test_ranges_defined_once():
    assert support.transformers_supported("5.17.0") and support.transformers_supported("5.25.0")
    assert not support.transformers_supported("5.16.1") and not support.transformers_supported("5.26.0")
    assert support.torch_supported("2.11.0+cu130") and support.torch_supported("2.15.0")
    assert not support.torch_supported("2.10.0") and not support.torch_supported("2.16.0")
    assert support.newer_than_tested("5.26.0", support.TRANSFORMERS_RANGE)
    assert not support.newer_than_tested("5.16.1", support.TRANSFORMERS_RANGE)
    assert not support.newer_than_tested("5.25.0", support.TRANSFORMERS_RANGE)
    setup_py = open(os.path.join(ROOT, "setup.py")).read()
    assert '_support_floor("TRANSFORMERS_RANGE")' in setup_py and '_support_floor("TORCH_RANGE")' in setup_py
    assert ">=5.17" not in setup_py and ">=2.11" not in setup_py


def test_install_requires_never_caps_transformers_or_torch():
    """Installing token-compressor into an environment with a newer transformers or torch must not
    downgrade it: the floors are install requirements, the tested tops a runtime check."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    reqs = {Requirement(r).name: Requirement(r) for r in md.requires("token-compressor") or []
            if Requirement(r).marker is None}
    assert str(reqs["transformers"].specifier) == support.lower_bound(support.TRANSFORMERS_RANGE)
    assert str(reqs["torch"].specifier) == support.lower_bound(support.TORCH_RANGE)


def test_info_shows_the_untested_opt_in(capsys, monkeypatch):
    monkeypatch.setenv("TOKEN_COMPRESSOR_ALLOW_UNTESTED", "1")
    assert cli.main(["info"]) == 0
    assert re.search(r"^untested\s+TOKEN_COMPRESSOR_ALLOW_UNTESTED=1", capsys.readouterr().out, re.M)


def test_bench_runs_what_make_bench_runs(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(token_compressor.bench, "main", lambda argv=None, with_prefill=True: calls.append(argv) or calls.append(with_prefill))
    assert cli.main(["bench"]) == 0
    assert calls == [token_compressor.bench.MAKE_BENCH_ARGS, True]
    # `make bench` is `python -m benchmarks`, whose entry point is the same function
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert "$(PY) -m benchmarks" in makefile
    main_py = open(os.path.join(ROOT, "benchmarks", "__main__.py")).read()
    assert "from token_compressor.bench import main" in main_py


def _error(argv, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, (rc, err)
    return err[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    write_video(path, np.full((4, 56, 56, 3), 128, np.uint8))
    return path


@pytest.mark.parametrize("ratio", ["2", "0", "-0.5", "abc", "nan"])
def test_bad_ratio_is_one_line_naming_option_and_range(ratio, clip, tmp_path, capsys):
    line = _error(["visualize", "--video", clip, "--ratio", ratio, "-o", str(tmp_path / "k.png")], capsys)
    assert "--ratio" in line and "(0, 1]" in line and ratio in line


def test_missing_video(tmp_path, capsys):
    line = _error(["visualize", "--video", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "k.png")], capsys)
    assert "no such video file" in line and "nope.mp4" in line


def test_folder_as_video(tmp_path, capsys):
    line = _error(["visualize", "--video", str(tmp_path), "-o", str(tmp_path / "k.png")], capsys)
    assert "is a folder" in line


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50, b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8])
def test_unreadable_video(content, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    line = _error(["visualize", "--video", str(bad), "-o", str(tmp_path / "k.png")], capsys)
    assert line.startswith("token-compressor visualize: error: cannot read video") and "broken.mp4" in line


def test_truncated_video(tmp_path, capsys):
    good = tmp_path / "good.mp4"
    write_video(str(good), np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[:300])
    line = _error(["visualize", "--video", str(cut), "-o", str(tmp_path / "k.png")], capsys)
    assert "cannot read video" in line and "cut.mp4" in line


def test_bad_compressor_and_output(clip, tmp_path, capsys):
    line = _error(["visualize", "--video", clip, "--compressor", "zip", "-o", str(tmp_path / "k.png")], capsys)
    assert "--compressor" in line and "vidcom2" in line
    line = _error(["visualize", "--video", clip, "-o", str(tmp_path / "missing" / "k.png")], capsys)
    assert "does not exist" in line
    line = _error(["visualize", "--video", clip, "-o", str(tmp_path / "k.gif2")], capsys)
    assert "unsupported image type" in line
    line = _error(["visualize", "--video", clip, "--max-frames", "0", "-o", str(tmp_path / "k.png")], capsys)
    assert "--max-frames" in line


def test_installed_command_exit_code(tmp_path):
    """The real process: `python -m token_compressor` (what the console script calls)."""
    proc = subprocess.run(
        [sys.executable, "-m", "token_compressor", "visualize", "--video", "x.mp4", "--ratio", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "token-compressor visualize: error: --ratio='2' is out of range; expected a number in (0, 1]"
    ]
    # the console script runs the same main (its declaration is in pyproject.toml)
    assert 'token-compressor = "token_compressor.cli:main"' in open(os.path.join(ROOT, "pyproject.toml")).read()
