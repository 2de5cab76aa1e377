"""`make bench`: every benchmark that needs no model weights, in one run.

The benchmark code lives in the package (`token_compressor/bench/`) so that the installed
`token-compressor bench` runs exactly this; this folder holds the checkout's entry points.
"""
from token_compressor.bench import main

if __name__ == "__main__":
    main()
