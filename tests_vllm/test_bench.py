"""The vLLM benchmark (benchmarks/vllm_bench.py) at toy size, so that it cannot rot: one round of
one engine (each engine costs the suite most of a minute) on the suite's tiny Qwen2.5-VL; the
compressed settings run the same worker code with other variables, and their counts and exactness
are test_exact.py's. Speed is never asserted."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vllm_bench_runs_at_toy_size(checkpoints, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.vllm_bench", "--model", checkpoints("qwen2_5_vl"),
                           "--settings", "uncompressed", "--rounds", "1", "--repeats", "1", "--batch", "2",
                           "--frames", "4", "--frame-size", "112", "--max-tokens", "2", "--workdir", str(tmp_path),
                           "--json", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["setting"] == "uncompressed" and row["batches"] == 1
    assert row["video_tokens"] == 2 * 4 * 4  # 4 frames of 112 px: 2 temporal patches of 4 x 4 merged tokens
    assert row["ttft_s"][0] > 0 and row["tokens_per_s"][0] > 0 and row["ttft_speedup"] == 1.0
    assert "load average" in result["header"] and "| uncompressed | 32 |" in proc.stdout


def test_vllm_bench_refuses_unknown_settings():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.vllm_bench", "--settings", "uncompressed,ours nope"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 2 and "--settings: ['ours nope']" in proc.stdout
