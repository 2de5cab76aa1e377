"""Straightforward formulations, the way the methods' authors wrote them. Slow on purpose: they
are the readable oracles the fast paths are tested and benchmarked against.

- VidCom²: a materialised channel gather, materialised normalised features and difference
  tensors, and a loop over frames for the top-k.
- EVS: vLLM's formulation on the fp32 input: a whole-video fp32 copy, `F.cosine_similarity`
  between consecutive frames, one stable descending sort.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.torch_scores import SCALES
from .baselines import EVS_FIRST_FRAME_DISSIMILARITY, evs_retained_count
from .vidcom2 import TEMPERATURE


def _kernel(diff: torch.Tensor) -> torch.Tensor:
    d2 = (diff * diff).sum(dim=-1)
    return sum(torch.exp(-d2 / (2 * a)) for a in SCALES)


def vidcom2_reference(features: torch.Tensor, ratio: float, compute_dtype=torch.float32):
    """features `[T, N, D]` -> (keep int64 `[K]` ascending, budgets int64 `[T]`,
    s_video `[T, N]`, s_frame `[T, N]`), computed in `compute_dtype`."""
    T, N, D = features.shape
    x = features.to(compute_dtype)
    var = x.reshape(T * N, D).var(dim=0, unbiased=False)
    channels = torch.topk(var, int(D * 0.5), largest=False).indices
    xk = F.normalize(x[:, :, channels], p=2, dim=-1)  # [T, N, D/2]
    video_centre = xk.mean(dim=(0, 1))
    frame_centres = xk.mean(dim=1, keepdim=True)
    s_video = _kernel(xk - video_centre)
    s_frame = _kernel(xk - frame_centres)
    uniqueness = -s_video.mean(dim=1)
    p = torch.softmax((uniqueness - uniqueness.max()) / TEMPERATURE, dim=0)
    scales = torch.clamp(ratio * (1 + p - p.mean()), max=1.0)
    score = s_video + s_frame
    keep, budgets = [], []
    for t in range(T):
        k = max(1, int(torch.round(scales[t] * N).item()))
        idx = torch.topk(score[t], k, largest=False).indices
        keep.append(idx + t * N)
        budgets.append(k)
    keep = torch.sort(torch.cat(keep)).values
    return keep, torch.tensor(budgets), s_video.float(), s_frame.float()


def evs_reference(features: torch.Tensor, ratio: float):
    """features `[T, N, D]` -> (keep int64 `[K]` ascending, dissimilarity fp32 `[T, N]`), as
    vLLM's EVS computes them from the fp32 upcast of `features`."""
    T, N, _ = features.shape
    x = features.float()
    dissim = torch.full((T, N), EVS_FIRST_FRAME_DISSIMILARITY, dtype=torch.float32, device=x.device)
    if T > 1:
        dissim[1:] = 1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)
    order = torch.argsort(dissim.reshape(-1), descending=True, stable=True)
    keep = torch.sort(order[: evs_retained_count(N, T, ratio)]).values
    return keep, dissim
