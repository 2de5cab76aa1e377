"""`make bench` runs: every benchmark's entry point at toy sizes, through the same functions as the
recorded runs (the numbers are not judged here; that a benchmark runs and checks its own
exactness is). A benchmark that cannot run breaks the README's main command."""
from __future__ import annotations

import json

import pytest
import torch

from token_compressor.bench import kernels, prefill, select_bench
from tiny_models import tiny_model

TOY = ["--frames", "4", "--tokens", "16", "--dim", "8"]


def test_select_bench_main_runs_every_method_and_is_exact(tmp_path, capsys):
    out = tmp_path / "rows.json"
    select_bench.main(TOY + ["--repeats", "1", "--baseline-repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    methods = {r["method"] for r in rows}
    assert methods == {m.name for m in select_bench.METHODS} | set(select_bench.BASELINES)
    for r in rows:
        assert r["T"] == 4 and r["N"] == 16 and r["D"] == 8 and 0 < r["kept"] < 4 * 16
        assert r["ours_best_ms"] > 0 and r["straightforward_best_ms"] > 0 and r["speedup_median"] > 0
        if r["method"] in ("fastvid", "holitom"):  # merging: kept rows and features as their fp32 loops
            assert r["agrees"].startswith("same keep as fp32 loops, features within")
            assert float(r["agrees"].rsplit(" ", 1)[1]) <= 1e-5
        elif r["method"] in select_bench.BASELINES:
            assert "fp64 loop" in r["agrees"]
        else:
            assert r["exact"] is True
    assert {r["threads"] for r in rows} == set(select_bench.thread_counts())
    text = capsys.readouterr().out
    assert "four Qwen baselines vs their loop formulations" in text and "load average" in text


def test_kernels_bench_main_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "k.json"
    kernels.main(["--frames", "2", "--tokens", "16", "--dim", "8", "--repeats", "1", "--device", "cpu",
                  "--json", str(out)])
    result = json.loads(out.read_text())
    assert [r["T"] for r in result["rows"]] == [2]
    assert all(r["torch_ms"] > 0 for r in result["rows"])


def test_prefill_measures_every_method_and_compresses():
    model = tiny_model("qwen2_5_vl")
    inputs = prefill.video_inputs(model.config, 8, 56, 56)
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    rows = prefill.measure(model, inputs, ratios=(0.25, 0.5), repeats=1, warmup=0, baselines=prefill.BASELINES)
    by = {r["config"]: r for r in rows}
    assert list(by) == ["full", "vidcom2 r=0.25", "vidcom2 r=0.5"] + [f"{m} r=0.25" for m in prefill.BASELINES]
    assert by["full"]["visual_tokens"] == n_video and by["full"]["compressor_ms"] == 0
    for name, r in by.items():
        if name == "full":
            continue
        assert r["method"] == name.split()[0]
        # every method really dropped tokens and shortened the KV cache
        assert 0 < r["visual_tokens"] < n_video and r["kv_vs_full"] < 1, name
        assert r["compressor_ms"] > 0 and 0 < r["compressor_share"] < 1
    prefill.print_table(rows, "cpu", "bfloat16")
    # the model is left as it was: it answers exactly as a fresh copy of it
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, tiny_model("qwen2_5_vl")(**inputs).logits)


def test_prefill_batch_of_very_different_videos_shrinks(capsys):
    model = tiny_model("qwen2_5_vl")
    inputs = prefill.batch_inputs(model.config, [(16, 56, 56), (4, 56, 56)])
    L = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"][1, 0] == 0 and bool(inputs["attention_mask"][:, -1].all()), "left padded"
    rows = prefill.measure_batch(model, inputs, ratio=0.25, repeats=1, warmup=0)
    full, comp = rows
    assert full["config"] == "full" and full["width"] == L and full["kv_vs_full"] == 1
    assert comp["config"] == "vidcom2 r=0.25"
    # the compressed batch is as wide as its longest compressed row, and its KV cache that narrow
    assert comp["width"] == max(comp["row_lens"]) < L
    assert comp["kv_vs_full"] == round(comp["width"] / L, 3)
    assert full["prefill_ms"] > 0 and comp["prefill_ms"] > 0
    prefill.print_batch_table(rows, "cpu", "bfloat16")
    out = capsys.readouterr().out
    assert "machine:" in out and "load average" in out and "vidcom2 r=0.25" in out
    with torch.no_grad():  # the model is left unpatched
        assert torch.equal(model(**inputs).logits, tiny_model("qwen2_5_vl")(**inputs).logits)
