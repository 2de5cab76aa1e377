"""Entry point: `python -m benchmarks.scaling` (code in token_compressor/bench/scaling.py)."""
from token_compressor.bench.scaling import main

if __name__ == "__main__":
    main()
