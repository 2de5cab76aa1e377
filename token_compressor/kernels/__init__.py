"""Token-scoring kernels and their dispatch.

`vidcom2_scores(features, backend)` is the one entry point; every caller (compressors, model
patches) goes through it. CUDA tensors are scored by the Triton kernels (`triton_scores`), every
other device by the blocked torch path (`torch_scores`); `TOKEN_COMPRESSOR_KERNELS` (read in
`config.py`) or the `backend` argument overrides: `auto`, `triton` or `torch`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import torch

from ..config import kernel_backend_from_env, parse_kernels, triton_interpret_from_env
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
    """The backend that will score `features`: `triton` or `torch`.

    Args:
        features: the tensor to be scored (only its device matters).
        backend: `auto`, `triton`, `torch`, or None to use `TOKEN_COMPRESSOR_KERNELS`.
    Raises:
        ValueError (`ConfigError` for an unknown name): `triton` asked for where it cannot run:
        triton not importable, or a non-CUDA tensor without `TRITON_INTERPRET=1`.
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
        return "triton" if features.is_cuda and triton_import_error() is None else "torch"
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

    `backend`: see `resolve_backend`. Both backends select identically on the golden cases; their
    scores agree to about 1e-5 (fp32 summation order)."""
    if resolve_backend(features, backend) == "torch":
        return vidcom2_scores_torch(features)
    from . import triton_scores  # imported on first use: Triton reads TRITON_INTERPRET at import

    if features.device.type == "cpu" and not triton_scores.kernels_are_interpreted():
        raise ValueError(
            "TRITON_INTERPRET=1 is set now but was not when token_compressor's Triton kernels were "
            "first imported, so they were compiled for the GPU and cannot run CPU tensors; set it "
            "before the first use (e.g. in the process environment)"
        )
    return triton_scores.vidcom2_scores_triton(features)


__all__ = ["resolve_backend", "triton_import_error", "vidcom2_scores", "vidcom2_scores_torch"]
