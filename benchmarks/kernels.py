"""Entry point: `python -m benchmarks.kernels` (code in token_compressor/bench/kernels.py)."""
from token_compressor.bench.kernels import main

if __name__ == "__main__":
    main()
