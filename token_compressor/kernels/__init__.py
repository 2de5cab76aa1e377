"""Token-scoring kernels and their dispatch.

`vidcom2_scores(features, backend)` is the one entry point: the torch path (`torch_scores`) runs
on every device.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..config import parse_kernels
from .torch_scores import vidcom2_scores_torch


def resolve_backend(features: torch.Tensor, backend: Optional[str] = None) -> str:
    """The backend that will score `features`: `torch` (the only one so far)."""
    parse_kernels(backend, "backend")
    return "torch"


def vidcom2_scores(features: torch.Tensor, backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """`features` `[T, N, D]` -> `(s_video, s_frame)`, fp32 `[T, N]` each."""
    resolve_backend(features, backend)
    return vidcom2_scores_torch(features)


__all__ = ["resolve_backend", "vidcom2_scores", "vidcom2_scores_torch"]
