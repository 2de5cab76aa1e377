"""Baselines under the same interface as VidCom², to compare methods on the same footing.

Each takes one video's features `[T, N, D]` and a ratio r in (0, 1] and returns a bool keep
mask `[T, N]`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..kernels import resolve_backend, vidcom2_scores
from ..kernels.evs_scores import FIRST_FRAME_DISSIMILARITY as EVS_FIRST_FRAME_DISSIMILARITY
from ..kernels.evs_scores import evs_keep
from ..registry import register_compressor
from .vidcom2 import keep_lowest_per_frame


def uniform_budget(num_frames: int, tokens_per_frame: int, ratio: float, device=None) -> torch.Tensor:
    """int64 `[T]`, every frame `max(1, round(r * N))` (Python's round: half to even)."""
    k = max(1, round(ratio * tokens_per_frame))
    return torch.full((num_frames,), k, dtype=torch.long, device=device)


@register_compressor("none")
def keep_all(features: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep every token (the uncompressed reference point)."""
    T, N, _ = features.shape
    return torch.ones(T, N, dtype=torch.bool, device=features.device)


@register_compressor("random")
def random_tokens(features: torch.Tensor, ratio: float, *, seed: int = 0) -> torch.Tensor:
    """Every frame keeps `max(1, round(r*N))` tokens drawn uniformly at random (seeded; the draw
    is made on the CPU so that the same seed gives the same tokens on every device)."""
    T, N, _ = features.shape
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.rand(T, N, generator=gen).to(features.device)
    return keep_lowest_per_frame(noise, uniform_budget(T, N, ratio, features.device))


@register_compressor("uniform", scans_input=True)  # VidCom²'s scorer vouches for the input
def uniform_vidcom2(features: torch.Tensor, ratio: float, *, backend: Optional[str] = None) -> torch.Tensor:
    """VidCom² token scores without frame budgets (the paper's ablation): every frame keeps
    `max(1, round(r*N))` tokens with the smallest `s_video + s_frame`."""
    T, N, _ = features.shape
    s_video, s_frame = vidcom2_scores(features, backend=backend)
    return keep_lowest_per_frame(s_video + s_frame, uniform_budget(T, N, ratio, features.device))


def evs_retained_count(tokens_per_frame: int, num_frames: int, ratio: float) -> int:
    """vLLM's count: `max(N, int(T*N*(1 - q)))` with pruning rate `q = 1 - r`."""
    q = 1.0 - ratio
    return max(tokens_per_frame, int(tokens_per_frame * num_frames * (1 - q)))


@register_compressor("evs", scans_input=True)  # its scorer vouches for the input
def evs(features: torch.Tensor, ratio: float, *, backend: Optional[str] = None) -> torch.Tensor:
    """vLLM's Efficient Video Sampling: rank all tokens by cosine dissimilarity to the token at
    the same spatial position in the previous frame (the first frame always kept), one stable
    descending sort over all T*N tokens, keep the first `evs_retained_count`. The selection is
    vLLM's on the fp32 input, bit for bit: scored in fp32 block by block (`kernels/evs_scores.py`),
    on bf16/fp32 CPU input screened by one compiled pass whose undecided tokens are re-checked
    exactly (`evs_keep`). `backend`: `auto`/`numba` screen where the compiled pass runs, `torch`
    never (`kernels.resolve_backend`)."""
    T, N, _ = features.shape
    screen = resolve_backend(features, backend) == "numba"
    return evs_keep(features, evs_retained_count(N, T, ratio), screen)
