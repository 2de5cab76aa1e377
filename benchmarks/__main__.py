"""`make bench`: every benchmark that needs no model weights, in one run.

    python -m benchmarks [--authors-repo PATH] [--scaling-frames 16 64 256 1024] [selection options]

The benchmark code lives in the package (`token_compressor/bench/`) so that the installed
`token-compressor bench` runs exactly this; this folder holds the checkout's entry points.
"""
import sys

from token_compressor.bench import MAKE_BENCH_ARGS
from token_compressor.bench import main

if __name__ == "__main__":
    main(MAKE_BENCH_ARGS + sys.argv[1:])
