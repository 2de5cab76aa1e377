"""`python -m benchmarks.gpu_check --dry-run`: the GPU check's code paths on CPU at toy sizes, so
that the script cannot rot between the tasks that are lent a GPU. Its own process, because the dry
run sets TRITON_INTERPRET=1 and one torch thread for itself."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["environment", "bandwidth", "golden_selection", "model_oracle", "kernels",
            "prefill_qwen2_5_vl_7b", "prefill_qwen3_vl_8b", "flash_attention_2"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for var in ("TRITON_INTERPRET", "TOKEN_COMPRESSOR_KERNELS", "COMPRESSOR"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    result = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else None
    return proc, result, out


def test_dry_run_succeeds_and_writes_both_files(dry_run):
    proc, result, out = dry_run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert result["dry_run"] is True and result["schema"] == 1
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("# GPU check (DRY RUN")
    assert "| target | measured | needed | result |" in table
    assert table.strip() in proc.stdout  # the table is also printed
    assert result["elapsed_s"] < result["total_budget_s"]


def test_every_section_ran_within_its_budget(dry_run):
    _, result, _ = dry_run
    sections = result["sections"]
    assert list(sections) == SECTIONS
    fa = sections.pop("flash_attention_2")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        assert fa["status"] == "not available" and fa["error"].startswith("not available on this machine")
    else:  # flash-attention needs CUDA: the dry run says so rather than pass
        assert fa["status"] == "not available" and "needs CUDA" in fa["error"]
    for name, entry in sections.items():
        assert entry["status"] == "ok", (name, entry.get("error"), entry.get("traceback"))
        assert 0 <= entry["elapsed_s"] <= entry["budget_s"] + 10


def test_environment_and_bandwidth(dry_run):
    _, result, _ = dry_run
    env = result["sections"]["environment"]["result"]
    assert env["device"].startswith("CPU") and env["triton_interpreted"] is True
    for key in ("python", "torch", "transformers", "triton"):
        assert env[key]
    bw = result["sections"]["bandwidth"]["result"]
    assert bw["copy_bytes"] == 2**23 and bw["copy_GBps"] > 0


def test_golden_selection_compared_triton_with_torch(dry_run):
    _, result, _ = dry_run
    g = result["sections"]["golden_selection"]["result"]
    # the dry run takes the golden cases with T <= 2 (a04: T=1, a10: T=2) in all three dtypes
    assert g["cases"] == 2 and g["of_cases"] == 12 and g["mismatches"] == [] and g["passed"] is True
    for d in ("fp32", "bf16", "fp16"):
        row = g["per_dtype"][d]
        assert row["compared"] == row["triton_equals_torch"] == 2
    for d in ("fp32", "bf16"):
        row = g["per_dtype"][d]
        assert row["authors_compared"] == row["torch_equals_authors"] == row["triton_equals_authors"] == 2
    assert g["per_dtype"]["fp16"]["authors_compared"] == 0


def test_model_oracle_is_within_tolerance_and_its_controls_are_not(dry_run):
    _, result, _ = dry_run
    res = result["sections"]["model_oracle"]["result"]
    assert [(r["family"], r["attn"], r["dtype"]) for r in res["rows"]] == [
        ("qwen2_5_vl", "sdpa", "bfloat16"), ("qwen3_vl", "eager", "bfloat16")]
    for r in res["rows"]:
        assert r["passed"] and r["rel_l2"] <= r["tolerance"] == 1e-3
        assert min(r["control_rel_l2"], r["features_control_rel_l2"]) >= 4 * r["tolerance"]
        assert 0 < r["kept_tokens"] < r["of_tokens"] == 32


def test_kernel_rows(dry_run):
    _, result, _ = dry_run
    k = result["sections"]["kernels"]["result"]
    assert k["peak_source"].startswith("copy bandwidth measured in this run")
    assert k["peak_GBps"] == result["sections"]["bandwidth"]["result"]["copy_GBps"]
    assert [r["T"] for r in k["rows"]] == [1, 2]
    for r in k["rows"]:
        assert r["triton_selects_as_torch"] is True  # Triton ran, interpreted
        for path in ("triton", "torch", "loop"):
            assert r[f"{path}_ms"] > 0
        assert r["loop_over_triton"] >= 0 and r["triton_of_peak"] >= 0


@pytest.mark.parametrize("name,video_tokens", [("prefill_qwen2_5_vl_7b", 128), ("prefill_qwen3_vl_8b", 98)])
def test_prefill_rows(dry_run, name, video_tokens):
    _, result, _ = dry_run
    res = result["sections"][name]["result"]
    # 4 frames of 224x224: 2 temporal patches of (224/14)^2/4 = 64 (patch 14) or (224/16)^2/4 = 49 tokens
    assert res["video_tokens"] == video_tokens and res["attn"] == "sdpa" and res["dtype"] == "bfloat16"
    full, r25 = res["rows"]
    assert full["config"] == "full" and full["visual_tokens"] == video_tokens and full["kv_vs_full"] == 1
    assert r25["config"] == "vidcom2 r=0.25" and 0 < r25["visual_tokens"] < video_tokens / 2
    assert 0 < r25["kv_cache_bytes"] < full["kv_cache_bytes"]
    assert r25["compressor_ms"] > 0 and full["compressor_ms"] == 0
    assert r25["vision_ms"] > 0 and r25["prefill_ms"] > 0
    for row in (full, r25):
        assert row["new_tokens"] == 2 and row["generate_ms"] > 0
        assert "peak_MiB" not in row  # CUDA only


def test_targets_are_listed_but_not_judged_in_a_dry_run(dry_run):
    _, result, _ = dry_run
    targets = result["targets"]
    assert all(t["pass"] is None and t["note"].startswith("dry run") for t in targets)
    sections = {t["section"] for t in targets}
    assert sections == {"kernels", "prefill_qwen2_5_vl_7b", "prefill_qwen3_vl_8b"}
    names = " / ".join(t["target"] for t in targets)
    assert "fraction of the bandwidth bound" in names and "straightforward formulation" in names
    assert "r=0.25 prefill (vision encoder + LM) speed-up" in names and "share of the full prefill" in names


def _fake_run(tmp_path, monkeypatch, funcs, total=60.0):
    import benchmarks.gpu_check as gc

    monkeypatch.setattr(gc, "SECTIONS", tuple((name, 5) for name in funcs))
    monkeypatch.setattr(gc, "SECTION_FUNCS", funcs)
    # dry_run=False: the GPU run's bookkeeping; the fake sections make no CUDA call
    run = gc.Run(tmp_path, dry_run=False, total_budget_s=total, t0=time.monotonic())
    gc.run_sections(run)
    return run.result, (tmp_path / "gpu_check.md").read_text()


def test_a_failing_or_overrunning_section_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    import benchmarks.gpu_check as gc

    def ok(run, res):
        res["value"] = 1

    def boom(run, res):
        res["partial"] = 2
        raise RuntimeError("boom")

    def overrun(run, res):
        run.deadline = time.monotonic() - 1  # as if its budget were spent during the first step
        run.check("the second step")

    def absent(run, res):
        raise gc.NotAvailable("not available on this machine (flash_attn does not import)")

    def wrong(run, res):
        res["passed"] = False

    result, table = _fake_run(tmp_path, monkeypatch, {"environment": ok, "bandwidth": boom, "golden_selection": overrun,
                                                      "model_oracle": wrong, "flash_attention_2": absent, "kernels": ok})
    s = result["sections"]
    assert [s[n]["status"] for n in s] == ["ok", "error", "over budget", "failed", "not available", "ok"]
    assert s["bandwidth"]["error"] == "RuntimeError: boom" and s["bandwidth"]["result"] == {"partial": 2}
    assert "RuntimeError: boom" in s["bandwidth"]["traceback"]
    assert s["golden_selection"]["error"] == "section budget spent before the second step"
    # targets whose sections produced nothing read NOT RUN, never PASS
    assert result["targets"] and all(t["pass"] is None for t in result["targets"])
    assert "| NOT RUN |" in table and "PASS" not in table
    assert "| bandwidth | error |" in table and "RuntimeError: boom" in table
    assert "| flash_attention_2 | not available |" in table and "not available on this machine" in table


def test_sections_past_the_total_budget_are_skipped(tmp_path, monkeypatch):
    calls = []
    result, table = _fake_run(tmp_path, monkeypatch, {"environment": lambda run, res: calls.append(1)}, total=1.0)
    assert calls == [] and result["sections"]["environment"]["status"] == "skipped"
    assert "| environment | skipped |" in table
