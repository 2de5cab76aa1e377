"""Benchmarks that need no model weights, shipped with the package so that the installed
`token-compressor bench` runs the same code as `make bench` (`python -m benchmarks` in a checkout).

    select_bench   selection speed and exactness: `select` vs each method's straightforward formulation
                   (VidCom², EVS; then the authors' four baselines vs their loop formulations)
    kernels        scoring kernels: Triton (GPU) / torch / loop formulation, bandwidth vs peak
    prefill        end to end: a realistic-width random Qwen2.5-VL, prefill full vs compressed,
                   one video and a padded batch of two very different videos
    retention      which share of a planted event each compressor keeps (raw pixel features)
    timing         interleaved best-of timing shared by the benchmarks
"""
from __future__ import annotations

# the arguments `make bench` runs the selection benchmark with
MAKE_BENCH_ARGS = ["--repeats", "5"]


def main(argv=None, with_prefill: bool = True) -> None:
    """`make bench` / `token-compressor bench`: the selection benchmark (`argv`: its arguments),
    then (unless `with_prefill=False`) the kernel benchmark and the end-to-end prefill benchmark
    (together about four minutes on 2 CPU cores, plus the padded-batch table: an estimated minute more,
    not yet timed on a quiet machine)."""
    import sys

    from tqdm.auto import tqdm

    from . import kernels, prefill, select_bench

    steps = [("selection", lambda: select_bench.main(list(MAKE_BENCH_ARGS) if argv is None else argv))]
    if with_prefill:
        steps += [("kernels", lambda: kernels.main(["--repeats", "3"])), ("prefill", lambda: prefill.main([]))]
    # minutes in all: a bar of the steps on stderr (only on a terminal; the tables go to stdout)
    bar = tqdm(total=len(steps), desc="make bench", unit="step", file=sys.stderr, disable=None)
    for i, (name, step) in enumerate(steps):
        bar.set_postfix_str(name)
        if i:
            print()
        step()
        bar.update()
    bar.close()
