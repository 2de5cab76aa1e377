"""Timing helpers shared by the benchmarks: interleaved repeats, best-of, so that two
formulations measured in one run see the same machine (this VM's speed drifts over seconds)."""
from __future__ import annotations

import time
from typing import Callable, Dict


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_best(fns: Dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1, device="cpu") -> Dict[str, float]:
    """Run every function `warmup` times, then `repeats` rounds of each in turn; return the best
    wall time of each in milliseconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best
