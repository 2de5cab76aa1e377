"""`token-compressor bench`: the weight-free benchmarks.

    token-compressor bench                  selection, kernel, prefill and scaling benchmarks, exactly what `make bench` prints
    token-compressor bench --retention      share of a planted event each compressor keeps: table + plot
"""
from __future__ import annotations

import json

from ._common import check_output, check_positive_int, progress, require


def run(args) -> int:
    if args.retention:
        return run_retention(args)
    from ..bench import MAKE_BENCH_ARGS
    from ..bench import main as bench_main

    argv = list(MAKE_BENCH_ARGS) if args.repeats is None else ["--repeats", str(check_positive_int(args.repeats, "--repeats"))]
    if args.json:
        argv += ["--json", args.json]
    bench_main(argv, with_prefill=not args.selection_only)
    return 0


def run_retention(args) -> int:
    from ..bench import retention

    check_positive_int(args.videos, "--videos")
    if args.output:
        check_output(args.output)
        require("PIL")
    rows = retention.run(videos=args.videos, progress=progress)
    title = "Share of a planted short event's tokens kept at retention ratio r\n" + retention.describe(videos=args.videos)
    print(title)
    print(retention.format_table(rows))
    if args.output:
        retention.plot(rows, title).save(args.output)
        print(f"plot: {args.output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="weight-free benchmarks: selection speed (= make bench), or --retention",
                       description=__doc__.splitlines()[0])
    p.add_argument("--retention", action="store_true",
                   help="share of a planted short event each compressor keeps at r = 0.1, 0.25, 0.5 (synthetic videos)")
    p.add_argument("-o", "--output", default="retention.png", metavar="PNG",
                   help="--retention: where to draw the plot (default retention.png; '' for none)")
    p.add_argument("--videos", type=int, default=5, help="--retention: synthetic videos to average over (default 5)")
    p.add_argument("--selection-only", action="store_true",
                   help="only the selection table: skip the kernel, end-to-end prefill and scaling benchmarks")
    p.add_argument("--repeats", type=int, default=None, help="selection benchmark: timing rounds (default as make bench: 7)")
    p.add_argument("--json", metavar="FILE", help="also write the rows to this JSON file")
    p.set_defaults(func=run)
