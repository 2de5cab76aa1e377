"""How many CPU threads a selection uses: one.

Measured on the 2-core build machine (T=32 N=256 D=3584, VidCom² and EVS, fp32 and bf16; see
benchmarks/README.md): every selection path is a sequence of blocked, cache-sized operations
(hundreds per video), and with two OpenMP threads each one pays a barrier at which a thread that
the OS has descheduled holds up the other. Two threads were slower than one at every block size
tried (256 to 8192 rows, i.e. up to one operation per pass), by 3-10x with other work on the
machine and never clearly faster without it. So a CPU selection runs on one thread, whatever
torch's global setting, and puts the setting back afterwards; the model around it keeps its
threads. GPU selections are unaffected.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

SELECTION_THREADS = 1


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
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
