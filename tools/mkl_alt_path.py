"""Print an MKL code path (a value for MKL_ENABLE_INSTRUCTIONS) other than this CPU's default.

`make test-mkl-path` reruns the selection, golden, visualisation and CLI tests under it, so a test
whose result depends on how one BLAS code path rounds a near-tie fails on every CI machine, not
only on some. oneMKL takes its AVX-512 kernels on Intel CPUs that have AVX-512 and its AVX2 kernels
elsewhere (AMD included, AVX-512 or not); the other path is AVX2 on the former and SSE4_2 on the
latter. (`ATEN_CPU_CAPABILITY` does not move MKL: only MKL_ENABLE_INSTRUCTIONS does.)
"""
from __future__ import annotations

import sys


def default_and_alternative(cpuinfo: str) -> tuple:
    """`/proc/cpuinfo` text -> (MKL's default path, another path to test)."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    if vendor == "GenuineIntel" and "avx512f" in flags:
        return "AVX512", "AVX2"
    if "avx2" in flags:
        return "AVX2", "SSE4_2"
    return "SSE4_2", "AVX2"  # an old CPU: MKL cannot go above its own path; AVX2 is then a no-op cap


def main() -> int:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        default, other = default_and_alternative(f.read())
    if "-v" in sys.argv[1:]:
        print(f"MKL default path on this CPU: {default}; testing under: {other}", file=sys.stderr)
    print(other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
