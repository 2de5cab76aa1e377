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
    (together about four minutes on 2 CPU cores, plus the padded-batch table: an estimated minute more, not yet
    timed on a quiet machine)."""
    from . import kernels, prefill, select_bench

    select_bench.main(list(MAKE_BENCH_ARGS) if argv is None else argv)
    if with_prefill:
        print()
        kernels.main(["--repeats", "3"])
        print()
        prefill.main([])
