"""`make bench`: every benchmark that needs no model weights, in one run."""
from . import kernels, select_bench


def main() -> None:
    select_bench.main(["--repeats", "15"])
    kernels.main(["--repeats", "3"])  # ~20-40 s on the 2-core build machine


if __name__ == "__main__":
    main()
