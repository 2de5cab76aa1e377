"""Timing helpers shared by the benchmarks: interleaved repeats, best-of (and median), so that
formulations measured in one run see the same machine (this VM's speed drifts over seconds)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Hashable, List


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(fns: Dict[Hashable, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                      device="cpu") -> Dict[Hashable, List[float]]:
    """Run every function `warmup` times, then `repeats` rounds of each in turn; return every
    round's wall time of each, in milliseconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved_best(fns: Dict[Hashable, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                     device="cpu") -> Dict[Hashable, float]:
    """`interleaved_times`, best of the rounds."""
    return {k: min(v) for k, v in interleaved_times(fns, repeats, warmup, device).items()}


def median(values: List[float]) -> float:
    return statistics.median(values)
