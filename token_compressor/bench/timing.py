"""Timing helpers shared by the benchmarks: interleaved repeats, best-of (and median), so that
formulations measured in one run see the same machine (this VM's speed drifts over seconds)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Hashable, List, Sequence


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


def device_median_ms(fns: Dict[str, Callable[[object], object]], inputs: Sequence, repeats: int = 10,
                     warmup: int = 1, device="cpu") -> Dict[str, float]:
    """Median time of one call in milliseconds for each function, interleaved as in
    `interleaved_best`. One repeat calls a function once on every item of `inputs` in turn and
    divides by `len(inputs)`: rotating over distinct buffers keeps repeated calls from being served
    by a cache that one buffer would fit in (an H200's L2 holds 50 MB). On CUDA every repeat is
    timed with CUDA events (device time, launches queued back to back); elsewhere by the host clock."""
    import torch

    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        for fn in fns.values():
            fn(inputs[0])
    sync(device)
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for x in inputs:
                    fn(x)
                stop.record()
                stop.synchronize()
                ms = start.elapsed_time(stop)
            else:
                t0 = time.perf_counter()
                for x in inputs:
                    fn(x)
                ms = (time.perf_counter() - t0) * 1e3
            samples[name].append(ms / len(inputs))
    return {name: statistics.median(v) for name, v in samples.items()}
