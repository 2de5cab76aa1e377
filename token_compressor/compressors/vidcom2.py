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
    p = frame_weights(s_video)
    scale = (ratio * (1.0 + p - p.mean())).clamp_(max=1.0)
    return torch.round(scale * N).long().clamp_(min=1)


def frame_weights(s_video: torch.Tensor) -> torch.Tensor:
    """fp32 `[T]`: `p = softmax((u - max u) / 0.01)` of frame uniqueness `u_t = -mean_i s_video`."""
    uniqueness = -s_video.mean(dim=1)
    return torch.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)


def fit_budgets(budgets: torch.Tensor, p: torch.Tensor, total: int, tokens_per_frame: int) -> torch.Tensor:
    """Budgets moved by single tokens until they sum to exactly `total` (not the authors' step).

    Args:
        budgets: int64 `[T]`, each in [1, N]; p: `[T]` frame weights (`frame_weights`).
        total: the kept count wanted, in [T, T*N].
    Returns:
        int64 `[T]` on budgets' device. Missing tokens go one per frame and round, to the frames in
        descending `p` (the most unique first) that are below N; surplus tokens are taken the same
        way from the frames in ascending `p` that are above 1. Ties in `p` go to the lower frame.
    """
    T, N = budgets.numel(), int(tokens_per_frame)
    if not (T <= total <= T * N):
        raise ValueError(f"vidcom2: total={total} is outside [T, T*N] = [{T}, {T * N}]")
    b = budgets.tolist()
    diff = int(total) - sum(b)
    step = 1 if diff > 0 else -1
    order = torch.argsort(p.float().cpu(), descending=diff > 0, stable=True).tolist()
    while diff:
        for t in order:
            if (step > 0 and b[t] < N) or (step < 0 and b[t] > 1):
                b[t] += step
                diff -= step
                if not diff:
                    break
    return torch.tensor(b, dtype=torch.long, device=budgets.device)


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


@register_compressor("vidcom2", scans_input=True)  # its torch scorer vouches for the input
def vidcom2(features: torch.Tensor, ratio: float, *, backend: Optional[str] = None,
            total: Optional[int] = None) -> torch.Tensor:
    """VidCom² keep mask for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: base retention ratio in (0, 1]; `sum(k_t)` is only approximately `r*T*N`.
        backend: scoring backend, `auto`/`triton`/`torch` (None: from the configuration).
        total: keep exactly this many tokens, in [T, T*N] (None: the authors' budgets). The
            authors' budgets are then moved by single tokens to sum to `total` (`fit_budgets`);
            the tokens kept inside each frame are chosen as always. Used where the count must
            be known before the features exist (vLLM: `compressors.counts`).
    Returns:
        bool `[T, N]` keep mask.
    """
    s_video, s_frame = vidcom2_scores(features, backend=backend)
    budgets = vidcom2_budgets(s_video, ratio)
    if total is not None:
        if isinstance(total, bool) or int(total) != total:
            raise ValueError(f"vidcom2: total must be an integer, got {total!r}")
        budgets = fit_budgets(budgets, frame_weights(s_video), int(total), features.shape[1])
    return keep_lowest_per_frame(s_video + s_frame, budgets)
