"""Timing helpers shared by the benchmarks.

Every benchmark times its cells in **shuffled interleaved rounds**: a warm-up call of every cell
outside the rounds, then `rounds` rounds, each calling every cell once in a fresh random order
(seeded, so a run can be repeated). A cell's number is the median of its rounds, printed with the
spread (min-max). Why: this VM's speed drifts by 2-4x over seconds; interleaving puts every cell
under the same conditions, and shuffling keeps a fixed order from favouring whichever cell runs
right after a slow one (caches, frequency, a neighbour's burst)."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable, Dict, Hashable, List, Sequence


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def round_orders(names: Sequence[Hashable], rounds: int, seed: int = 0) -> List[List[Hashable]]:
    """The call order of each round: `names` shuffled afresh per round (a seeded `random.Random`)."""
    rng = random.Random(seed)
    orders = []
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        orders.append(order)
    return orders


def interleaved_times(fns: Dict[Hashable, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                      device="cpu", seed: int = 0) -> Dict[Hashable, List[float]]:
    """Call every function `warmup` times (untimed, before the rounds), then `repeats` rounds of
    every function once each, in a shuffled order per round (`round_orders`); return each
    function's wall times in milliseconds, in round order."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for order in round_orders(list(fns), repeats, seed):
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved_best(fns: Dict[Hashable, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                     device="cpu") -> Dict[Hashable, float]:
    """`interleaved_times`, best of the rounds."""
    return {k: min(v) for k, v in interleaved_times(fns, repeats, warmup, device).items()}


def median(values: List[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> dict:
    """`{"median", "min", "max"}` of a cell's round times (ms, rounded to 0.01)."""
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def ratio_spread(peer: Sequence[float], ours: Sequence[float]) -> dict:
    """The speed-up peer / ours: median over median, and the min-max of the per-round ratios (the
    two were timed in the same round, so a round's ratio saw one machine state)."""
    per_round = [p / o for p, o in zip(peer, ours)]
    return {"median": round(statistics.median(peer) / statistics.median(ours), 2),
            "min": round(min(per_round), 2), "max": round(max(per_round), 2)}


def fmt_spread(s: dict, digits: int = 1) -> str:
    """`median [min-max]`, e.g. `38.7 [37.9-41.2]`."""
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def device_times(fns: Dict[str, Callable[[object], object]], inputs: Sequence, repeats: int = 10,
                 warmup: int = 1, device="cpu", seed: int = 0) -> Dict[str, List[float]]:
    """Per-round times (ms) of one call of each function, shuffled interleaved rounds as in
    `interleaved_times`. One repeat calls a function once on every item of `inputs` in turn and
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
    for order in round_orders(list(fns), repeats, seed):
        for name in order:
            fn = fns[name]
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
    return samples


def device_median_ms(fns: Dict[str, Callable[[object], object]], inputs: Sequence, repeats: int = 10,
                     warmup: int = 1, device="cpu") -> Dict[str, float]:
    """`device_times`, median of the rounds."""
    return {name: statistics.median(v) for name, v in device_times(fns, inputs, repeats, warmup, device).items()}
