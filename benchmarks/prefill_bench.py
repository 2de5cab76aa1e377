"""Entry point: `python -m benchmarks.prefill_bench` (code in token_compressor/bench/prefill.py)."""
from token_compressor.bench.prefill import main

if __name__ == "__main__":
    main()
