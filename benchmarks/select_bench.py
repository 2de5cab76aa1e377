"""`python -m benchmarks.select_bench [...]`: the selection benchmark (code in
`token_compressor/bench/select_bench.py`)."""
from token_compressor.bench.select_bench import METHODS, Method, main, print_table, run, synthetic_video  # noqa: F401

if __name__ == "__main__":
    main()
