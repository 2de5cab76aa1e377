"""Token-scoring kernels and their dispatch.

`vidcom2_scores(features, backend)` is the one entry point; every caller (compressors, model
patches) goes through it. `auto` scores CUDA tensors with the Triton kernels (`triton_scores`),
CPU tensors in bf16 or fp32 with the compiled numba passes (`cpu_scores`), and everything else
(other dtypes and devices, or numba unavailable: warned once) with the blocked torch path
(`torch_scores`). `TOKEN_COMPRESSOR_KERNELS` (read in `config.py`) or the `backend` argument
overrides: `auto`, `triton`, `numba` or `torch`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import torch

from ..config import kernel_backend_from_env, parse_kernels, triton_interpret_from_env
from . import cpu_scores
from .cpu_scores import numba_import_error, vidcom2_scores_cpu
from .torch_scores import vidcom2_scores_torch


@lru_cache(maxsize=1)
def triton_import_error() -> Optional[str]:
    """None when `triton` imports, else why not (cached: the import is attempted once)."""
    try:
        import triton  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising something else
        return f"{type(e).__name__}: {e}"
    return None


def resolve_backend(features: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that will score `features`: `triton`, `numba` or `torch`.

    Args:
        features: the tensor to be scored (its device and dtype matter).
        backend: `auto`, `triton`, `numba`, `torch`, or None to use `TOKEN_COMPRESSOR_KERNELS`.
    Raises:
        ValueError (`ConfigError` for an unknown name): a backend asked for where it cannot run:
        `triton` not importable, or a non-CUDA tensor without `TRITON_INTERPRET=1`; `numba` not
        importable, or a tensor that is not a bf16 or fp32 CPU tensor.
    """
    if backend is None:
        choice = kernel_backend_from_env()
        source = "TOKEN_COMPRESSOR_KERNELS"
    else:
        choice = parse_kernels(backend, "backend")
        source = "backend"
    if choice == "torch":
        return "torch"
    if choice == "auto":
        if features.is_cuda:
            return "triton" if triton_import_error() is None else "torch"
        if cpu_scores.supports(features):
            problem = numba_import_error()
            if problem is None:
                return "numba"
            cpu_scores.warn_unavailable_once(problem)
        return "torch"
    if choice == "numba":
        problem = numba_import_error()
        if problem is not None:
            raise ValueError(f"{source}='numba' but the compiled CPU kernels are unavailable ({problem}); "
                             f"use 'auto' or 'torch'")
        if not cpu_scores.supports(features):
            raise ValueError(f"{source}='numba' scores CPU tensors in bfloat16 or float32, got "
                             f"{features.dtype} on {features.device}; use 'auto' or 'torch'")
        return "numba"
    problem = triton_import_error()
    if problem is not None:
        raise ValueError(f"{source}='triton' but triton cannot be imported ({problem}); use 'auto' or 'torch'")
    if features.is_cuda:
        return "triton"
    if features.device.type == "cpu" and triton_interpret_from_env():
        return "triton"
    raise ValueError(
        f"{source}='triton' needs CUDA tensors, got a tensor on {features.device}; Triton runs CPU "
        f"tensors only in its interpreter (TRITON_INTERPRET=1, set before token_compressor's kernels "
        f"are first used); use 'auto' or 'torch' otherwise"
    )


def vidcom2_scores(features: torch.Tensor, backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """`features` `[T, N, D]` -> `(s_video, s_frame)`, fp32 `[T, N]` each, on `features`' device.

    `backend`: see `resolve_backend`. All backends select identically on the golden cases; their
    scores agree to about 1e-5 (fp32 summation order)."""
    chosen = resolve_backend(features, backend)
    if chosen == "torch":
        return vidcom2_scores_torch(features)
    if chosen == "numba":
        return vidcom2_scores_cpu(features)
    from . import triton_scores  # imported on first use: Triton reads TRITON_INTERPRET at import

    if features.device.type == "cpu" and not triton_scores.kernels_are_interpreted():
        raise ValueError(
            "TRITON_INTERPRET=1 is set now but was not when token_compressor's Triton kernels were "
            "first imported, so they were compiled for the GPU and cannot run CPU tensors; set it "
            "before the first use (e.g. in the process environment)"
        )
    return triton_scores.vidcom2_scores_triton(features)


__all__ = ["numba_import_error", "resolve_backend", "triton_import_error", "vidcom2_scores", "vidcom2_scores_cpu",
           "vidcom2_scores_torch"]
