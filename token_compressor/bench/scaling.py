"""Scaling benchmark: time and peak memory above the input of every method as the video grows,
each cell measured in a fresh process.

For each method and each T (default 16, 64, 256; the issue's full range with `--frames 16 64 256 1024`),
a child process (`python -m token_compressor.bench.scaling --cell ...`) builds the synthetic video
`[T*N, D]` in the input dtype frame block by frame block (never a whole fp32 copy), warms the method
up on its first 4 frames, returns the freed heap to the system (`malloc_trim`), then resets the kernel's peak-RSS counter (`/proc/self/clear_refs`, Linux)
and times `--repeats` calls: `time` = median [min-max] of those calls, `peak above input` = the
process's peak resident memory during them (VmHWM) less its resident memory just before them (the
input, the interpreter, torch). A fresh process per cell keeps one cell's freed-but-cached memory
from hiding the next one's peak. Where the peak cannot be reset (not Linux) the column reads "n/a".

The exponent per method is the least-squares slope of log(time) against log(T) (1.0 = linear).
With the authors' checkout (`--authors-repo` / `TOKEN_COMPRESSOR_AUTHORS_REPO`) their functions get
cells too, up to `--authors-max-frames` (default 256: their HoliTom holds ~15 GB at T=1024, N=256,
D=3584).

    python -m benchmarks.scaling [--frames 16 64 256 1024 --tokens 256 --dim 3584 --dtype bfloat16 --repeats 3]
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from typing import List, Optional, Sequence

import torch

from . import authors as authors_mod
from ..kernels.machine import status_kib
from .machine import Measured
from .timing import fmt_spread, spread

METHODS = ("vidcom2", "evs", "dycoke", "visionzip", "fastvid", "holitom")
DEFAULT_FRAMES = (16, 64, 256)
WARMUP_FRAMES = 4
CELL_TIMEOUT_S = 900


def video(T: int, N: int, D: int, dtype=torch.bfloat16, seed: int = 0, block: int = 16) -> torch.Tensor:
    """`[T*N, D]` in `dtype` with `select_bench.synthetic_video`'s statistics (per-channel scales and
    offsets, drift, a scene cut at T/2, salient tokens), generated `block` frames at a time so that
    the largest temporary is one block in fp32, not the video."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(D, generator=g) * 0.5)
    offset = torch.randn(D, generator=g) * 0.2
    few = torch.randperm(D, generator=g)[: D // 16]
    offset[few] = 4.0 * torch.sign(torch.randn(D // 16, generator=g))
    scale[few] = 0.05
    scene = torch.randn(2, N, D, generator=g)
    out = torch.empty(T * N, D, dtype=dtype)
    drift = torch.zeros(D)
    for t0 in range(0, T, block):
        b = min(block, T - t0)
        steps = torch.randn(b, 1, D, generator=g).cumsum(0) * 0.05 + drift
        drift = steps[-1, 0]
        cut = (torch.arange(t0, t0 + b) >= T // 2).long()
        x = scene[cut] + steps + 0.5 * torch.randn(b, N, D, generator=g)
        salient = torch.randint(0, N, (b, 3), generator=g)
        x[torch.arange(b).unsqueeze(1), salient] += 3.0 * torch.randn(b, 3, D, generator=g)
        out[t0 * N:(t0 + b) * N] = (x * scale + offset).reshape(b * N, D)
    return out


def trim_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc `malloc_trim`), so that memory the
    warm-up freed is not counted as resident before the timed calls; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


def _cell_fn(method: str, peer: str, authors_repo: Optional[str]):
    if peer == "ours":
        from ..selection import select

        return lambda x, T, r: select(x, T, r, method=method)
    code = authors_mod.load(authors_repo, [method])
    return code.functions[method]


def measure_cell(method: str, T: int, N: int, D: int, dtype=torch.bfloat16, ratio: float = 0.25,
                 repeats: int = 3, peer: str = "ours", authors_repo: Optional[str] = None) -> dict:
    """One cell, in this process (the parent runs it in a fresh child): see the module docstring."""
    fn = _cell_fn(method, peer, authors_repo)
    x = video(T, N, D, dtype)
    fn(x[: min(T, WARMUP_FRAMES) * N], min(T, WARMUP_FRAMES), ratio)  # libraries, thread pools, kernels
    gc.collect()
    trim_heap()
    can_reset = reset_peak()
    base_kib = status_kib("VmRSS")
    times = []
    peak_kib = None
    for i in range(repeats):
        t0 = time.perf_counter()
        out = fn(x, T, ratio)
        times.append((time.perf_counter() - t0) * 1e3)
        del out
        if i == 0 and can_reset:  # the first call's peak; later calls may reuse cached memory
            peak_kib = status_kib("VmHWM")
    input_bytes = x.numel() * x.element_size()
    above = None if peak_kib is None or base_kib is None else max(0, peak_kib - base_kib) * 1024
    return {"method": method, "peer": peer, "T": T, "N": N, "D": D, "dtype": str(dtype).replace("torch.", ""),
            "ratio": ratio, "repeats": repeats, "time_ms": spread(times), "input_MiB": round(input_bytes / 2**20, 1),
            "peak_above_input_MiB": None if above is None else round(above / 2**20, 1),
            "peak_over_input": None if above is None else round(above / input_bytes, 3),
            "threads": torch.get_num_threads()}


def run_cell_subprocess(cell: dict, timeout: float = CELL_TIMEOUT_S) -> dict:
    """`measure_cell(**cell)` in a fresh interpreter; its result, or the cell with an `error`."""
    cmd = [sys.executable, "-m", "token_compressor.bench.scaling", "--cell", json.dumps(cell)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cell, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        how = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit status {proc.returncode}"
        return {**cell, "error": f"{how}: {tail}"}
    return json.loads(lines[-1])


def exponent(rows: Sequence[dict]) -> Optional[float]:
    """Least-squares slope of log(median time) on log(T) over the rows that ran (>= 2 of them)."""
    pts = [(math.log(r["T"]), math.log(r["time_ms"]["median"])) for r in rows if "error" not in r
           and r["time_ms"]["median"] > 0]
    if len(pts) < 2:
        return None
    mx, my = statistics.mean(p[0] for p in pts), statistics.mean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 2) if sxx > 0 else None


def run(frames: Sequence[int] = DEFAULT_FRAMES, N: int = 256, D: int = 3584, dtype: str = "bfloat16",
        ratio: float = 0.25, repeats: int = 3, methods: Sequence[str] = METHODS, authors_repo: Optional[str] = None,
        authors_max_frames: int = 256, progress=None) -> List[dict]:
    """Every (method, peer, T) cell, each in a fresh process; returns their rows (an `error` key
    where a cell failed, a `skipped` key where it was not run)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"no scaling entry for {sorted(unknown)}; known: {list(METHODS)}")
    peers = ["ours"] + (["authors"] if authors_repo else [])
    rows = []
    for method in methods:
        for peer in peers:
            if peer == "authors" and method not in authors_mod.METHODS:
                continue
            for T in frames:
                cell = {"method": method, "peer": peer, "T": T, "N": N, "D": D, "dtype": dtype, "ratio": ratio,
                        "repeats": repeats, "authors_repo": authors_repo if peer == "authors" else None}
                if peer == "authors" and T > authors_max_frames:
                    rows.append({**cell, "skipped": f"T > --authors-max-frames {authors_max_frames}"})
                    continue
                rows.append(run_cell_subprocess(cell))
                if progress:
                    progress(rows[-1])
    return rows


def print_table(rows: List[dict], measured: Measured, authors=None) -> None:
    r0 = rows[0]
    print(f"Scaling in T: N={r0['N']} D={r0['D']} {r0['dtype']} r={r0['ratio']}, one fresh process per cell, "
          f"{r0['repeats']} timed calls after a warm-up on {WARMUP_FRAMES} frames; ms median [min-max]; "
          "peak = resident memory above the input during the first call")
    if authors is not None:
        print(f"authors: {authors.describe()}")
    print(measured.line())
    print(f"{'method':<10}{'code':<9}{'T':>6}{'input MiB':>11}{'ms':>30}{'peak MiB':>10}{'peak/input':>12}")
    for method in dict.fromkeys(r["method"] for r in rows):
        for peer in dict.fromkeys(r["peer"] for r in rows if r["method"] == method):
            group = [r for r in rows if r["method"] == method and r["peer"] == peer]
            for r in group:
                head = f"{method:<10}{peer:<9}{r['T']:>6}"
                if "error" in r or "skipped" in r:
                    print(f"{head}  {'FAILED: ' + r['error'] if 'error' in r else 'not run: ' + r['skipped']}")
                    continue
                peak = "n/a" if r["peak_above_input_MiB"] is None else f"{r['peak_above_input_MiB']:.1f}"
                ratio = "n/a" if r["peak_over_input"] is None else f"{r['peak_over_input']:.3f}"
                print(f"{head}{r['input_MiB']:>11.1f}{fmt_spread(r['time_ms']):>30}{peak:>10}{ratio:>12}")
            slope = exponent(group)
            if slope is not None:
                print(f"{'':<10}{'':<9}  time ~ T^{slope}")


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=list(DEFAULT_FRAMES))
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=3584)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per cell (default 3)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--authors-repo", metavar="PATH",
                   help=f"a checkout of the VidCom² authors' repository (default: ${authors_mod.ENV})")
    p.add_argument("--authors-max-frames", type=int, default=256,
                   help="largest T at which the authors' functions are run (default 256)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: measure one cell in this process
    a = p.parse_args(argv)
    if a.cell:
        cell = json.loads(a.cell)
        cell["dtype"] = getattr(torch, cell["dtype"])
        print(json.dumps(measure_cell(**cell)))
        return []
    authors = authors_mod.load_or_exit(a.authors_repo)  # a bad path ends the run here, before any cell
    path = authors.path if authors else None
    with Measured() as measured:
        rows = run(a.frames, a.tokens, a.dim, a.dtype, a.ratio, a.repeats, a.methods, path, a.authors_max_frames)
    print_table(rows, measured, authors)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": measured.as_dict(), "rows": rows}, f, indent=1)
    failed = [r for r in rows if "error" in r]
    if failed:
        raise SystemExit(f"{len(failed)} scaling cell(s) failed (see the table)")
    return rows


if __name__ == "__main__":
    main()
