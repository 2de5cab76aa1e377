"""Timing helpers for benchmarks in this folder (code in `token_compressor/bench/timing.py`)."""
from token_compressor.bench.timing import interleaved_best, interleaved_times, sync  # noqa: F401
