"""The command line for a newcomer: `--version`, `--help` without importing torch, `info` naming
the evaluation stack and the lmms-eval plugin's state, compressor options on `run` and
`visualize` (`--option KEY=VALUE` and the methods' own variables), and HoliTom's merged rows
drawn where they come from."""
import json
import subprocess
import sys

import pytest
import torch

import token_compressor as tc
from docs_blocks import ROOT
from tiny_checkpoint import make_mp4, save_checkpoint
from token_compressor import cli

SMALL = ["--max-frames", "8", "--max-pixels", "12544"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_options")
    return {"root": root, "clip": str(make_mp4(root / "clip.mp4", frames=16, size=224, fps=4)),
            "ckpt": str(save_checkpoint(root / "qwen2_5_vl", "qwen2_5_vl"))}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    for k in ("COMPRESSOR", "R_RATIO", "EMC_SCREENER", "DYCOKE_K", "TOKEN_COMPRESSOR_HOLITOM_POSITIONS",
              "TOKEN_COMPRESSOR_REPORT"):
        monkeypatch.delenv(k, raising=False)


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"token-compressor {tc.__version__}"


def test_help_imports_neither_torch_nor_transformers():
    """Deterministic stand-in for "well under a second": what --help and --version import."""
    proc = python("import sys\nfrom token_compressor import cli\n"
                  "for argv in (['--help'], ['run', '--help'], ['visualize', '--help'], ['--version']):\n"
                  "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
                  "heavy = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]\n"
                  "print('HEAVY', heavy)")
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    # the package itself still gives every public name on first use
    proc = python("import token_compressor as tc\nprint(tc.select, tc.apply, tc.ConfigError, tc.models.FAMILIES)")
    assert proc.returncode == 0 and "function select" in proc.stdout, proc.stderr


def test_run_help_says_its_whole_first_paragraph(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "and print what compression (and EMC screening) did." in out and "--option KEY=VALUE" in out


def test_info_lists_the_eval_stack_and_the_plugin(capsys, monkeypatch):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["eval_stack"]["lmms-eval"] == "0.7.3" and info["eval_stack"]["qwen-vl-utils"]
    assert "decord" in info["eval_stack"] and "torchcodec" in info["eval_stack"]
    assert info["lmms_eval_entry_point"].startswith("registered (token_compressor.runtime:lmms_eval_plugin); idle")
    monkeypatch.setenv("COMPRESSOR", "dycoke")
    assert cli.main(["info"]) == 0
    assert "lmms-eval plugin" in (out := capsys.readouterr().out) and "active: COMPRESSOR=dycoke" in out


def kept_line(capsys):
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_visualize_takes_options_and_the_methods_variables(world, capsys, monkeypatch, tmp_path):
    base = ["visualize", "--video", world["clip"], "-o", str(tmp_path / "k.png"), "--compressor", "dycoke",
            "--max-frames", "8"]
    assert cli.main(base) == 0
    default = kept_line(capsys)
    assert cli.main(base + ["--option", "k=0.9"]) == 0
    with_option = kept_line(capsys)
    monkeypatch.setenv("DYCOKE_K", "0.9")
    assert cli.main(base) == 0
    with_variable = kept_line(capsys)
    assert with_option == with_variable != default
    assert cli.main(base + ["--option", "k=0.1"]) == 0  # --option wins over the variable
    assert kept_line(capsys) not in (with_option, default)
    assert cli.main(base + ["--option", "k=2"]) == 2
    assert "k='2' is out of range" in capsys.readouterr().err
    assert cli.main(base + ["--option", "nope=1"]) == 2
    assert "has no option 'nope'" in capsys.readouterr().err
    assert cli.main(base + ["--option", "k"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_visualize_draws_holitom_merged_rows_where_they_come_from(world, capsys, monkeypatch, tmp_path):
    from token_compressor.viz import draw, feature_source

    drawn = []
    real = draw.draw_kept
    monkeypatch.setattr(draw, "draw_kept", lambda frames, mask, *a, **k: (drawn.append(mask), real(frames, mask, *a, **k))[1])
    args = ["visualize", "--video", world["clip"], "-o", str(tmp_path / "k.png"), "--compressor", "holitom",
            "--max-frames", "8"]
    assert cli.main(args) == 0
    assert "merged rows drawn where they come from (positions=centres)" in capsys.readouterr().out
    tokens = feature_source("pixels")(world["clip"], 8)
    T, H, W = tokens.grid
    centres = tc.select(tokens.features, T, 0.25, "holitom", positions="centres").mask().view(T, H, W).numpy()
    linspace = tc.select(tokens.features, T, 0.25, "holitom").mask().view(T, H, W).numpy()
    assert (drawn[0] == centres).all() and not (centres == linspace).all()
    monkeypatch.setenv("TOKEN_COMPRESSOR_HOLITOM_POSITIONS", "linspace")  # asked for: drawn so, and said
    assert cli.main(args) == 0
    assert "placeholder positions (positions=linspace)" in capsys.readouterr().out
    assert (drawn[1] == linspace).all()


def test_run_takes_options(world, capsys, monkeypatch):
    args = ["run", "--model", world["ckpt"], "--video", world["clip"], "--question", "What moves?",
            "--max-new-tokens", "2", "--compressor", "dycoke", "--json", *SMALL]
    assert cli.main(args + ["--option", "k=0.9"]) == 0
    strong = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("DYCOKE_K", "0.1")
    assert cli.main(args) == 0
    weak = json.loads(capsys.readouterr().out)
    assert strong["options"] == {"k": 0.9} and weak["options"] == {"k": 0.1}
    assert strong["visual_tokens_before"] == weak["visual_tokens_before"]
    assert strong["visual_tokens_after"] < weak["visual_tokens_after"]
