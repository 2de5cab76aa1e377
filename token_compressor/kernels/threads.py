"""How many CPU threads a selection uses: one.

Measured on the 2-core build machine (T=32 N=256 D=3584, fp32 and bf16, 2026-12-02, load
average ~1.5): every CPU selection path is a sequence of blocked, cache-sized operations (hundreds
per video), and with two OpenMP threads each one pays a barrier at which a thread that the OS has
descheduled holds up the other. VidCom²'s torch path with two threads took 505-1273 ms at every
block size tried (256 to 8192 rows, the largest being one operation per pass) against 83-95 ms
with one thread at 256 rows; one thread was also 2.5-5x faster than two at every larger block
size. On a quiet machine two threads were at best ~15 % faster (33 vs 39 ms, an earlier
recording). So a CPU selection runs on one thread, whatever torch's global setting, and puts the
setting back afterwards; the model around it keeps its threads. GPU selections are unaffected.
The exceptions are a few large matrix products (one barrier each, not hundreds), which run on
the caller's setting again (`caller_threads`), and the compiled CPU passes (`cpu_scores.py`: three
parallel sections per video), which run on the caller's count (`kernel_threads`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

SELECTION_THREADS = 1
# the caller's thread count while `selection_threads` holds torch at SELECTION_THREADS (None
# outside it): the few large matrix products inside a selection (VisionZip's and FastVID's
# Gram matrices, ~1 GFLOP each) run on it again (`caller_threads`)
_CALLER_THREADS = None


@contextmanager
def selection_threads(device: torch.device):
    """Within the block, torch uses `SELECTION_THREADS` CPU threads when `device` is the CPU
    (never more than it was set to); the previous count is restored on exit. Process-wide, like
    `torch.set_num_threads` itself."""
    before = torch.get_num_threads()
    n = min(SELECTION_THREADS, before)
    if torch.device(device).type != "cpu" or n == before:
        yield
        return
    global _CALLER_THREADS
    outer, _CALLER_THREADS = _CALLER_THREADS, before
    torch.set_num_threads(n)
    try:
        yield
    finally:
        _CALLER_THREADS = outer
        torch.set_num_threads(before)


def kernel_threads() -> int:
    """Threads for the compiled CPU passes (`cpu_scores.py`): the caller's torch setting, also
    inside `selection_threads`. They make three parallel sections per video, not hundreds of
    small operations, so the barrier cost above does not arise."""
    return _CALLER_THREADS if _CALLER_THREADS is not None else torch.get_num_threads()


@contextmanager
def caller_threads():
    """Inside `selection_threads`: torch runs on the caller's thread count again for the block
    (one large product amortises the per-operation barrier that makes many small ones slower on
    several threads); elsewhere a no-op. The caller's setting decides, never the machine's load:
    the same call runs the same way on every run (on a 2-core VM at load 8.5 two threads made
    these products 1.7-2.5x slower; a busy caller sets torch's threads to 1 itself)."""
    n = _CALLER_THREADS
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
