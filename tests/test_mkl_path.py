"""`make test-mkl-path`: which other MKL code path CI reruns the selection tests under."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from mkl_alt_path import default_and_alternative  # noqa: E402


def _cpuinfo(vendor, flags):
    core = f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\n"
    return core + core.replace(": 0", ": 1")


@pytest.mark.parametrize("vendor, flags, expected", [
    ("GenuineIntel", "fpu sse4_2 avx avx2 avx512f avx512bw amx_bf16", ("AVX512", "AVX2")),
    ("GenuineIntel", "fpu sse4_2 avx avx2", ("AVX2", "SSE4_2")),
    # oneMKL takes its AVX2 kernels on AMD even where the CPU has AVX-512
    ("AuthenticAMD", "fpu sse4_2 avx avx2 avx512f avx512_bf16", ("AVX2", "SSE4_2")),
    ("AuthenticAMD", "fpu sse4_2 avx avx2", ("AVX2", "SSE4_2")),
])
def test_the_other_path_differs_from_the_default(vendor, flags, expected):
    default, other = default_and_alternative(_cpuinfo(vendor, flags))
    assert (default, other) == expected and default != other


def test_the_ci_rerun_really_runs_under_another_path():
    """Inside `make test-mkl-path` the variable is set to this machine's other path (a rerun that
    silently used the default path would prove nothing)."""
    if os.environ.get("TC_MKL_PATH_RUN") != "1":
        pytest.skip("checked inside `make test-mkl-path` (TC_MKL_PATH_RUN=1), which CI runs")
    expected = subprocess.run([sys.executable, str(ROOT / "tools" / "mkl_alt_path.py")],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert os.environ.get("MKL_ENABLE_INSTRUCTIONS") == expected
