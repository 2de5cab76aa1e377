"""VidCom² (EMNLP 2025, "Video Compression Commander"), as pure functions over one video.

Frame budgets come from frame uniqueness (how far a frame's tokens sit from the video centre);
inside each frame the tokens least similar to both the video centre and their frame's centre are
kept. Scoring is fp32 whatever the input dtype: in half precision the k-th and (k+1)-th scores tie
in almost every frame and the choice becomes implementation-defined.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..kernels import vidcom2_scores
from ..registry import register_compressor

TEMPERATURE = 0.01


def vidcom2_budgets(s_video: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per-frame token budgets.

    Args:
        s_video: fp32 `[T, N]`, similarity of every token to the video centre.
        ratio: base retention ratio r in (0, 1].
    Returns:
        int64 `[T]`: `k_t = max(1, round(min(1, r * (1 + p_t - mean p)) * N))`, rounding half to
        even, with `p = softmax((u - max u) / 0.01)` and frame uniqueness `u_t = -mean_i s_video`.
    """
    N = s_video.shape[1]
    uniqueness = -s_video.mean(dim=1)
    p = torch.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)
    scale = (ratio * (1.0 + p - p.mean())).clamp_(max=1.0)
    return torch.round(scale * N).long().clamp_(min=1)


def keep_lowest_per_frame(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Keep, in every frame at once, the `budgets[t]` tokens with the smallest score.

    Args:
        scores: `[T, N]`; budgets: int64 `[T]`, each in [0, N].
    Returns:
        bool `[T, N]` keep mask. Ties go to the lower token index (stable sort).
    """
    T, N = scores.shape
    order = torch.sort(scores, dim=1, stable=True).indices
    ranks_kept = torch.arange(N, device=scores.device).unsqueeze(0) < budgets.unsqueeze(1)
    mask = torch.zeros(T, N, dtype=torch.bool, device=scores.device)
    return mask.scatter_(1, order, ranks_kept)


@register_compressor("vidcom2")
def vidcom2(features: torch.Tensor, ratio: float, *, backend: Optional[str] = None) -> torch.Tensor:
    """VidCom² keep mask for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: base retention ratio in (0, 1]; `sum(k_t)` is only approximately `r*T*N`.
        backend: scoring backend, `auto`/`triton`/`torch` (None: from the configuration).
    Returns:
        bool `[T, N]` keep mask.
    """
    s_video, s_frame = vidcom2_scores(features, backend=backend)
    budgets = vidcom2_budgets(s_video, ratio)
    return keep_lowest_per_frame(s_video + s_frame, budgets)
