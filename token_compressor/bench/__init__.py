"""Benchmarks that need no model weights, shipped with the package so that the installed
`token-compressor bench` runs the same code as `make bench` (`python -m benchmarks` in a checkout).

    select_bench   selection speed and exactness: `select` vs a peer for every method (the authors'
                   own functions when their checkout is given, else our straightforward formulations)
    kernels        scoring kernels: Triton (GPU) / torch / loop formulation, bandwidth vs peak
    prefill        end to end: a realistic-width random Qwen2.5-VL, prefill full vs compressed,
                   one video and a padded batch of two very different videos
    scaling        time and peak memory above the input per method as T grows, a fresh process per cell
    retention      which share of a planted event each compressor keeps (raw pixel features)
    authors        the VidCom² authors' functions, loaded at run time from a local checkout
    machine        the machine line every table prints (CPU, cores, threads, read bandwidth, load, versions)
    timing         shuffled interleaved rounds, medians and spreads, shared by the benchmarks
"""
from __future__ import annotations

# the arguments `make bench` runs the selection benchmark with
MAKE_BENCH_ARGS = ["--repeats", "7"]


def main(argv=None, with_prefill: bool = True) -> None:
    """`make bench` / `token-compressor bench`: the selection benchmark (`argv`: its arguments,
    `--authors-repo PATH` included, which the scaling table uses too), then (unless
    `with_prefill=False`) the kernel benchmark, the end-to-end prefill benchmark and the scaling
    table at its default sizes (`--scaling-frames T ...` in `argv` for others, e.g. 16 64 256 1024)."""
    import argparse
    import sys

    from tqdm.auto import tqdm

    from . import kernels, prefill, scaling, select_bench

    argv = list(MAKE_BENCH_ARGS) if argv is None else list(argv)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--authors-repo")
    own.add_argument("--scaling-frames", type=int, nargs="+", default=list(scaling.DEFAULT_FRAMES))
    mine, _ = own.parse_known_args(argv)
    select_argv = list(argv)
    if "--scaling-frames" in select_argv:  # the selection benchmark does not know it
        i = select_argv.index("--scaling-frames")
        j = i + 1
        while j < len(select_argv) and not select_argv[j].startswith("--"):
            j += 1
        del select_argv[i:j]
    scaling_argv = ["--frames", *map(str, mine.scaling_frames)]
    if mine.authors_repo:
        scaling_argv += ["--authors-repo", mine.authors_repo]

    steps = [("selection", lambda: select_bench.main(select_argv))]
    if with_prefill:
        steps += [("kernels", lambda: kernels.main([])), ("prefill", lambda: prefill.main([])),
                  ("scaling", lambda: scaling.main(scaling_argv))]
    # minutes in all: a bar of the steps on stderr (only on a terminal; the tables go to stdout)
    bar = tqdm(total=len(steps), desc="make bench", unit="step", file=sys.stderr, disable=None)
    for i, (name, step) in enumerate(steps):
        bar.set_postfix_str(name)
        if i:
            print()
        step()
        bar.update()
    bar.close()
