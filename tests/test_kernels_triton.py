"""Kernel dispatch, and the Triton kernels under Triton's CPU interpreter (in a subprocess)."""
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import token_compressor as tc
import token_compressor.kernels as kernels
from token_compressor.config import ConfigError, kernel_backend_from_env, triton_interpret_from_env

TESTS = Path(__file__).parent
CPU_FEATURES = torch.zeros(2, 3, 4)
# Only what resolve_backend looks at: a CUDA tensor cannot exist on a machine without a GPU.
CUDA_LIKE = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0))


def test_interpreted_kernels():
    """Runs `triton_interpreted_checks.py` under TRITON_INTERPRET=1: Triton scores vs the torch
    path and the authors' golden scores, identical selections in fp32/bf16/fp16, and `select`
    routed through Triton by TOKEN_COMPRESSOR_KERNELS=triton."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(TESTS.parent))
    env.pop("TOKEN_COMPRESSOR_KERNELS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "triton_interpreted_checks.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = re.search(r"(\d+) passed", out)
    # 1 + 12 cases x (2 score dtypes + 3 select dtypes) + 1 + 2 + 1 + 1; nothing skipped or lost
    assert summary and int(summary.group(1)) == 66 and "skipped" not in out, out[-3000:]


def test_kernels_compile_for_sm90():
    """`triton_compile_check.py` compiles every kernel for sm_90a to a cubin (no GPU needed) and
    checks the IEEE intrinsics and that nothing spills."""
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(TESTS / "triton_compile_check.py")],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert proc.stdout.count("0 bytes spill stores") == 3, proc.stdout


@pytest.fixture
def no_triton_env(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("TOKEN_COMPRESSOR_KERNELS", raising=False)


def test_auto_is_numba_on_cpu_and_triton_on_cuda(no_triton_env):
    # CPU_FEATURES is fp32: the compiled CPU passes (tests/test_kernels_cpu.py for the dtypes)
    assert kernels.resolve_backend(CPU_FEATURES) == "numba"
    assert kernels.resolve_backend(CPU_FEATURES, "auto") == "numba"
    assert kernels.resolve_backend(CPU_FEATURES, "torch") == "torch"
    assert kernels.resolve_backend(CUDA_LIKE) == "triton"
    assert kernels.resolve_backend(CUDA_LIKE, "torch") == "torch"
    assert kernels.resolve_backend(CUDA_LIKE, "triton") == "triton"


def test_environment_variable_overrides_auto(no_triton_env, monkeypatch):
    monkeypatch.setenv("TOKEN_COMPRESSOR_KERNELS", "torch")
    assert kernels.resolve_backend(CUDA_LIKE) == "torch"
    monkeypatch.setenv("TOKEN_COMPRESSOR_KERNELS", " Triton ")
    assert kernels.resolve_backend(CUDA_LIKE) == "triton"
    # an explicit argument wins over the environment
    assert kernels.resolve_backend(CUDA_LIKE, "torch") == "torch"


def test_triton_on_cpu_needs_the_interpreter(no_triton_env, monkeypatch):
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors, got a tensor on cpu.*TRITON_INTERPRET=1"):
        kernels.resolve_backend(CPU_FEATURES, "triton")
    monkeypatch.setenv("TOKEN_COMPRESSOR_KERNELS", "triton")
    with pytest.raises(ValueError, match=r"TOKEN_COMPRESSOR_KERNELS='triton' needs CUDA tensors"):
        tc.select(torch.randn(6, 4), 2, 0.5)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.resolve_backend(CPU_FEATURES) == "triton"
    with pytest.raises(ValueError, match=r"got a tensor on meta"):  # the interpreter runs CPU tensors only
        kernels.resolve_backend(torch.zeros(1, 1, 2, device="meta"), "triton")


def test_triton_missing(no_triton_env, monkeypatch):
    monkeypatch.setattr(kernels, "triton_import_error", lambda: "ModuleNotFoundError: No module named 'triton'")
    assert kernels.resolve_backend(CUDA_LIKE) == "torch"
    with pytest.raises(ValueError, match=r"backend='triton' but triton cannot be imported \(ModuleNotFoundError"):
        kernels.resolve_backend(CUDA_LIKE, "triton")


def test_unknown_backend_names_the_source(no_triton_env, monkeypatch):
    with pytest.raises(ConfigError, match=r"backend='cuda' is not a kernel backend; expected one of: auto, triton, numba, torch"):
        kernels.resolve_backend(CPU_FEATURES, "cuda")
    monkeypatch.setenv("TOKEN_COMPRESSOR_KERNELS", "fast")
    with pytest.raises(ConfigError, match=r"TOKEN_COMPRESSOR_KERNELS='fast' is not a kernel backend"):
        tc.select(torch.randn(6, 4), 2, 0.5)


def test_config_readers():
    assert kernel_backend_from_env({}) == "auto"
    assert kernel_backend_from_env({"TOKEN_COMPRESSOR_KERNELS": "TORCH"}) == "torch"
    assert [triton_interpret_from_env({"TRITON_INTERPRET": v}) for v in ("1", "true", "On", "0", "", "2")] == [
        True, True, True, False, False, False
    ]
    assert triton_interpret_from_env({}) is False


def test_triton_is_importable_here():
    # The project's environment installs triton (a torch dependency on Linux); without it the
    # interpreter checks above could not run, so say so plainly rather than skip.
    assert kernels.triton_import_error() is None
