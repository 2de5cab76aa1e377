"""`token-compressor run` and `visualize --model` on tiny checkpoint folders saved here, with real
mp4 files; and the errors a person meets, one line each with exit code 2.

Token counts: a 16-frame 112x112 clip, 8 frames sampled = 4 temporal patches; Qwen2.5-VL: 4x4
tokens per patch (64), Qwen3-VL (32-pixel cells, frames resized to 96x96): 3x3 (36). VidCom²
keeps r*N*T up to half a token of rounding per temporal patch."""
import json
import os

import numpy as np
import pytest

from screening_helpers import FakeOpenAI, reply
from tiny_checkpoint import make_mp4, save_checkpoint
from token_compressor import cli
from token_compressor.viz import draw

BEFORE = {"qwen2_5_vl": 64, "qwen3_vl": 36}
GRID = {"qwen2_5_vl": (4, 4, 4), "qwen3_vl": (4, 3, 3)}
SMALL = ["--max-frames", "8", "--max-pixels", "12544"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_model")
    ckpts = {f: str(save_checkpoint(root / f, f)) for f in BEFORE}
    return {"root": root, "ckpt": ckpts, "clip": str(make_mp4(root / "clip.mp4", frames=16, fps=4))}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    for k in ("COMPRESSOR", "R_RATIO", "EMC_SCREENER", "EMC_MODEL", "EMC_BASE_URL"):
        monkeypatch.delenv(k, raising=False)


def run_json(capsys, *args):
    assert cli.main(["run", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("family", list(BEFORE))
def test_run_answers_and_reports_what_was_saved(world, capsys, family):
    args = ["--model", world["ckpt"][family], "--video", world["clip"], "--question", "What moves?",
            "--max-new-tokens", "3", *SMALL]
    res = run_json(capsys, *args)
    assert (res["model_type"], res["compressor"], res["ratio"], res["device"]) == (family, "vidcom2", 0.25, "cpu")
    assert res["visual_tokens_before"] == BEFORE[family]
    assert abs(res["visual_tokens_after"] - 0.25 * BEFORE[family]) <= 0.5 * 4
    assert 1 <= res["new_tokens"] <= 3 and isinstance(res["answer"], str)
    assert 0 < res["prefill_s"] <= res["generate_s"] <= res["total_s"]
    assert res["peak_memory_kind"] == "process peak RSS" and res["peak_memory_mb"] > 0
    base = run_json(capsys, *args, "--compressor", "none")
    assert base["visual_tokens_before"] == base["visual_tokens_after"] == BEFORE[family]
    assert cli.main(["run", *args, "--ratio", "0.5"]) == 0
    text = capsys.readouterr().out
    assert f"visual tokens: {BEFORE[family]} -> " in text and "vidcom2 r=0.5" in text
    assert "time: prefill" in text and "peak memory:" in text


def test_run_screens_first_with_the_llm_screener(world, capsys, monkeypatch, tmp_path):
    end = {"decision": "end", "timestamps": [[1, 3]], "revised_question": "Which square moves?"}
    with FakeOpenAI(lambda body, n: (200, reply(json.dumps(end)), 0)) as server:
        monkeypatch.setenv("EMC_BASE_URL", server.base_url)
        monkeypatch.setenv("EMC_MODEL", "planner")
        monkeypatch.setenv("EMC_CACHE_DIR", str(tmp_path / "cache"))
        res = run_json(capsys, "--model", world["ckpt"]["qwen2_5_vl"], "--video", world["clip"],
                       "--question", "What moves?", "--screener", "llm", "--max-new-tokens", "2", *SMALL)
    assert res["screening"] == {"screened_timestamps": [[1.0, 3.0]], "screened_question": "Which square moves?",
                                "status": "succeeded"}
    assert res["question_asked"] == "Which square moves?"
    assert res["visual_tokens_before"] == 64  # the same frame budget, from the kept two seconds


def one_line_error(capsys, argv, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"token-compressor {argv[0]}: error: "), err
    assert expected in err, err


def test_errors_a_person_meets_are_one_line(world, capsys, tmp_path):
    ck, clip = world["ckpt"]["qwen2_5_vl"], world["clip"]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    no_config = tmp_path / "empty_model"
    no_config.mkdir()
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    base = ["--question", "q?"]
    one_line_error(capsys, ["run", "--model", ck, "--video", str(tmp_path / "missing.mp4"), *base], "missing.mp4")
    one_line_error(capsys, ["run", "--model", ck, "--video", str(garbage), *base], "garbage.mp4")
    one_line_error(capsys, ["run", "--model", str(tmp_path / "nope"), "--video", clip, *base], "does not exist")
    one_line_error(capsys, ["run", "--model", str(no_config), "--video", clip, *base], "has no config.json")
    one_line_error(capsys, ["run", "--model", str(llama), "--video", clip, *base],
                   "holds a 'llama' model; supported Qwen-VL models: qwen2_vl, qwen2_5_vl, qwen3_vl")
    one_line_error(capsys, ["run", "--model", ck, "--video", clip, "--ratio", "2", *base], "--ratio='2' is out of range")
    one_line_error(capsys, ["run", "--model", ck, "--video", clip, "--screener", "magic", *base],
                   "--screener='magic' is not a screener")
    one_line_error(capsys, ["run", "--model", ck, "--video", clip, "--device", "cuda:0", *base]
                   if not __import__("torch").cuda.is_available() else
                   ["run", "--model", ck, "--video", clip, "--device", "tpu", *base],
                   "--device")
    one_line_error(capsys, ["visualize", "--model", str(llama), "--video", clip, "-o", str(tmp_path / "k.png")],
                   "holds a 'llama' model")
    one_line_error(capsys, ["visualize", "--features", "model", "--video", clip, "-o", str(tmp_path / "k.png")],
                   "--features model needs --model")


@pytest.mark.parametrize("family", list(BEFORE))
def test_visualize_draws_the_models_own_tokens(world, capsys, tmp_path, family):
    from PIL import Image

    out = tmp_path / f"{family}.png"
    assert cli.main(["visualize", "--model", world["ckpt"][family], "--video", world["clip"], "-o", str(out),
                     *SMALL]) == 0
    T, H, W = GRID[family]
    N = H * W
    line = capsys.readouterr().out
    kept = int(line.split("kept ")[1].split("/")[0])
    assert f"/{T * N} tokens" in line and abs(kept - 0.25 * T * N) <= 0.5 * T
    budgets = [int(b) for b in line.split("budgets ")[1].split(" of ")[0].split()]
    assert len(budgets) == T and sum(budgets) == kept
    image = Image.open(out)
    layout = draw.kept_layout((T, H, W), 2)
    assert image.size == layout.size
    # every kept token is outlined: count outlined cells per panel against the budgets
    px = np.asarray(image.convert("RGB"))
    for t in range(T):
        outlined = 0
        for y in range(H):
            for x in range(W):
                x0, y0, _, _ = layout.cell_box(t, y, x)
                outlined += tuple(px[y0, x0 + layout.cell // 2]) == draw.KEPT_OUTLINE
        assert outlined == budgets[t]


def _flip(src, dst, start, count=64):
    data = bytearray(open(src, "rb").read())
    for i in range(start, min(len(data), start + count)):
        data[i] ^= 0xFF
    open(dst, "wb").write(bytes(data))
    return str(dst)


def test_run_reads_odd_and_broken_videos_through_its_own_reader(world, capsys, tmp_path):
    """8 frames with --max-frames 16, one frame, 16x16 pixels: answered; truncated or with a
    flipped header: one line naming the file, exit 2; never a traceback."""
    ck = world["ckpt"]["qwen2_5_vl"]
    good = {"8 frames": make_mp4(tmp_path / "eight.mp4", frames=8, fps=4),
            "1 frame": make_mp4(tmp_path / "one.mp4", frames=1, fps=4),
            "16x16": make_mp4(tmp_path / "tiny.mp4", frames=8, size=16, fps=4)}
    for name, path in good.items():
        res = run_json(capsys, "--model", ck, "--video", str(path), "--question", "q?", "--max-new-tokens", "1",
                       "--max-pixels", "12544")
        assert res["visual_tokens_before"] > 0 and res["new_tokens"] == 1, name
    clip = open(world["clip"], "rb").read()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip[: len(clip) // 3])
    flipped = _flip(world["clip"], tmp_path / "flipped.mp4", 0)
    for path in (truncated, flipped):
        one_line_error(capsys, ["run", "--model", ck, "--video", str(path), "--question", "q?"], os.path.basename(path))
