"""What the CPU's memory system offers the blocked scorers: the L2 cache size (block sizes) and
the read bandwidth (the bound a memory-bound selection is measured against).

The CPU selection paths read a video a block of rows at a time, upcast each block into reused
fp32 buffers and run several operations over them. Those operations run at cache speed only while
a block's buffers stay in the core's L2: a 3.5 MiB per-frame block (N=256 rows, D=3584) overflowed
a 2 MiB L2 on an Intel Xeon, so the block size follows the machine's L2 instead of a constant.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

# When the L2 size cannot be read (non-Linux, containers hiding /sys): 1 MiB, the smallest L2 of
# the x86 server cores this runs on (AMD EPYC Zen 3/4; Intel Xeon has 1.25-2 MiB), so a block
# sized from it also fits the larger ones.
FALLBACK_L2_BYTES = 1 << 20
# Share of the L2 that one block's fp32 working buffers (an upcast copy, a scratch product) may
# take together; the next rows stream in beside them.
L2_SHARE = 1.0
# Yet at least this many bytes per buffer: every block costs each torch operation's fixed ~2-5 us,
# and smaller blocks lose more to it than they gain in cache (measured at one thread, T=32 N=256
# D=3584, CPU time, AMD EPYC with a 1 MiB L2, 2026-12-06: VidCom² bf16 63 / 55 / 45 / 39 / 41 ms
# at 18 / 36 / 64 / 128 / 256 rows, EVS 34 / 26 / 22 / 21 / 28 ms; on an Intel Xeon with a 2 MiB
# L2, 64-row blocks were 1.2-1.3x faster than 256-row ones). Both machines then get ~73 rows.
MIN_BLOCK_BYTES = 1 << 20
MIN_BLOCK_ROWS = 1
# Narrow features (D in the hundreds) would reach the floor only with thousands of rows; by 512
# the fixed costs are already a small share, and a block stays a few frames of a video.
MAX_BLOCK_ROWS = 512

_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def _parse_size(text: str) -> Optional[int]:
    """`"1024K"`, `"2M"`, `"512"` (bytes) -> bytes; None when unreadable."""
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def l2_cache_bytes() -> int:
    """Bytes of one core's L2 (data or unified) cache: from Linux's sysfs, else `os.sysconf`
    (glibc's `SC_LEVEL2_CACHE_SIZE`), else `FALLBACK_L2_BYTES`."""
    try:
        for index in sorted(_CACHE_DIR.glob("index*")):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            if level == "2" and kind in ("Unified", "Data"):
                size = _parse_size((index / "size").read_text())
                if size:
                    return size
    except OSError:
        pass
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if size and size > 0:
            return int(size)
    except (ValueError, OSError, AttributeError):
        pass
    return FALLBACK_L2_BYTES


def block_rows(row_bytes: int, buffers: int = 1) -> int:
    """Rows per block such that `buffers` fp32 buffers of `row_bytes` per row fill about
    `L2_SHARE` of the L2 cache, but each at least `MIN_BLOCK_BYTES`; within
    [MIN_BLOCK_ROWS, MAX_BLOCK_ROWS]."""
    per_buffer = max(l2_cache_bytes() * L2_SHARE / max(1, buffers), MIN_BLOCK_BYTES)
    return int(min(MAX_BLOCK_ROWS, max(MIN_BLOCK_ROWS, per_buffer // max(1, row_bytes))))


def measure_read_bandwidth(nbytes: int = 1 << 30, repeats: int = 5, threads: Optional[int] = 1) -> float:
    """Read bandwidth of main memory in bytes/s: the best of `repeats` `torch.sum` calls over one
    fp32 buffer of `nbytes` (far larger than any last-level cache, so every byte comes from
    memory), on `threads` CPU threads (None: torch's current setting). The CPU selections run on
    one thread (`threads.py`), so one thread is their bound."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        buf = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
        buf.sum()  # pages faulted in, code warm
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            buf.sum()
            best = min(best, time.perf_counter() - t0)
        return buf.numel() * 4 / best
    finally:
        torch.set_num_threads(before)


def status_kib(field: str) -> Optional[int]:
    """A `VmRSS`/`VmHWM`-style field of /proc/self/status, in KiB; None where it cannot be read
    (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_child(method: str, T: int, N: int, D: int, dtype: str, ratio: float, seed: int) -> dict:
    """In a fresh interpreter: one `select` on a synthetic video; bytes of its input and of the
    resident high-water mark above the resident size once the input exists."""
    from ..selection import select

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    # frames that repeat with noise (static and moving tokens for the merging methods), built a
    # frame at a time so that building it peaks at the input's own size
    x = torch.empty(T * N, D, dtype=getattr(torch, dtype))
    scene = torch.randn(N, D, generator=g)
    for t in range(T):
        if t % 8 == 0:
            scene = torch.randn(N, D, generator=g)
        x[t * N:(t + 1) * N] = scene + 0.3 * torch.randn(N, D, generator=g)
    del scene
    # a first call outside the peak: code pages of the kernels it uses and torch's lazy state
    # are resident memory too, but not memory the selection allocates
    select(x, T, ratio, method=method)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    base = status_kib("VmRSS")
    sel = select(x, T, ratio, method=method)
    peak = status_kib("VmHWM")
    if base is None or peak is None:
        raise OSError("/proc/self/status has no VmRSS/VmHWM: peak memory needs Linux")
    return {"input_bytes": x.numel() * x.element_size(), "peak_above_input_bytes": (peak - base) * 1024,
            "kept": sel.num_kept}


def selection_peak_memory(method: str, T: int, N: int, D: int, dtype: str = "bfloat16", ratio: float = 0.25,
                          seed: int = 0, timeout: float = 600.0) -> dict:
    """Peak resident memory that one CPU `select(..., method=method)` takes above its input, in a
    fresh Python process (Linux: /proc's VmHWM, reset once the input is built).

    Returns `{"input_bytes", "peak_above_input_bytes", "kept"}`. glibc is told to serve every
    allocation of 128 KiB or more by mmap and return it on free, so that memory freed before the
    measured call (imports, the warm-up) cannot hide a peak by being reused."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from token_compressor.kernels.machine import _peak_child; "
            "print(json.dumps(_peak_child(*json.loads(sys.argv[1]))))")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    args = json.dumps([method, T, N, D, dtype, ratio, seed])
    out = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"peak-memory child for {method!r} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
