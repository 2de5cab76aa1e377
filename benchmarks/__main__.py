"""`make bench`: every benchmark that needs no model weights, in one run."""
from . import select_bench


def main() -> None:
    select_bench.main(["--repeats", "15"])


if __name__ == "__main__":
    main()
