"""VisionZip (CVPR 2025, "Longer is Better but Not Necessary in Vision Language Models"), per
frame, as the VidCom² authors' Qwen code runs it: a merging compressor.

Every frame keeps exactly `K = max(1, int(r * N))` tokens: the `max(1, int(0.6 K))` dominant
ones (largest feature norm, standing in for the vision encoder's attention, which the Qwen
merger output does not expose) as copies, and `K - dominant` contextual anchors among the rest:
the tokens of highest density (mean cosine similarity to their `k_neighbors` nearest remaining
tokens). Every remaining token joins its most similar anchor, and an anchor's features become the
plain mean of its group (itself included). All frames at once: no loop over frames or anchors.

Scoring (norms, similarities, means) is fp32 from any input dtype (the authors compute in the
model's dtype); the returned rows are in the input dtype. At r = 1 every token is kept unchanged.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from ..config import check_method_options
from ..registry import register_compressor


def visionzip_counts(tokens_per_frame: int, ratio: float, dominant_ratio: float = 0.6) -> Tuple[int, int]:
    """(dominant, contextual) tokens per frame: `K = max(1, int(N r))`, `dominant = max(1,
    int(K * dominant_ratio))` (at most K), `contextual = K - dominant`."""
    K = max(1, int(tokens_per_frame * ratio))
    dominant = min(K, max(1, int(K * dominant_ratio)))
    return dominant, K - dominant


def contextual_anchors(rest: torch.Tensor, contextual: int, k_neighbors: int):
    """Density anchors and the merged groups among every frame's non-dominant tokens.

    Args:
        rest: fp32 `[T, n, D]`, each frame's remaining tokens in ascending position order.
        contextual: anchors per frame, 1 <= contextual < n.
        k_neighbors: neighbours in the density.
    Returns:
        (anchors int64 `[T, c]`, ascending indices into `rest`; merged fp32 `[T, c, D]`: the mean
        of every remaining token whose most similar anchor it is, the anchor itself included).
    """
    T, n, D = rest.shape
    unit = F.normalize(rest, dim=-1)
    sim = torch.bmm(unit, unit.transpose(1, 2))  # [T, n, n]
    # the largest similarity of a row is normally its own (1): the authors drop it
    density = sim.topk(min(k_neighbors + 1, n), dim=-1).values[..., 1:].mean(dim=-1)
    anchors = density.topk(contextual, dim=-1).indices.sort(dim=-1).values  # [T, c]
    to_anchor = sim.gather(2, anchors.unsqueeze(1).expand(T, n, contextual))  # [T, n, c]
    group = to_anchor.argmax(dim=-1)  # [T, n], first maximum on ties
    sums = torch.zeros(T, contextual, D, dtype=rest.dtype, device=rest.device)
    sums.scatter_add_(1, group.unsqueeze(-1).expand(T, n, D), rest)
    counts = torch.zeros(T, contextual, dtype=rest.dtype, device=rest.device)
    counts.scatter_add_(1, group, torch.ones_like(group, dtype=rest.dtype))
    anchor_rows = rest.gather(1, anchors.unsqueeze(-1).expand(T, contextual, D))
    merged = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp(min=1).unsqueeze(-1), anchor_rows)
    return anchors, merged


@register_compressor("visionzip")
def visionzip(features: torch.Tensor, ratio: float, *, dominant_ratio: float = 0.6,
              k_neighbors: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
    """VisionZip keep mask and merged features for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: retention ratio r in (0, 1]; every frame keeps `max(1, int(r N))` tokens.
        dominant_ratio: share of dominant tokens in a frame's budget (`visionzip_dominant_ratio`).
        k_neighbors: neighbours in the contextual density (`visionzip_k_neighbors`).
    Returns:
        (bool `[T, N]` keep mask, `[T*K, D]` features of the kept tokens in ascending order, in
        the input dtype: dominant tokens copied, anchors merged).
    """
    check_method_options("visionzip", {"dominant_ratio": dominant_ratio, "k_neighbors": k_neighbors})
    T, N, D = features.shape
    dominant, contextual = visionzip_counts(N, ratio, dominant_ratio)
    x = features.float()
    dom = x.norm(dim=-1).topk(dominant, dim=-1).indices  # [T, dominant]
    mask = torch.zeros(T, N, dtype=torch.bool, device=features.device)
    mask.scatter_(1, dom, True)
    if contextual == 0:
        return mask, features[mask]
    n = N - dominant
    rest_pos = (~mask).nonzero()[:, 1].view(T, n)  # ascending per frame
    if contextual >= n:  # every remaining token is its own anchor: nothing merges
        return mask.fill_(True), features.reshape(T * N, D).clone()
    rest = x.gather(1, rest_pos.unsqueeze(-1).expand(T, n, D))
    anchors, merged = contextual_anchors(rest, contextual, k_neighbors)
    anchor_pos = rest_pos.gather(1, anchors)
    mask.scatter_(1, anchor_pos, True)
    # kept rows in ascending position: dominant copies and merged anchors, sorted per frame
    pos = torch.cat([dom, anchor_pos], dim=1)
    rows = torch.cat([features.gather(1, dom.unsqueeze(-1).expand(T, dominant, D)), merged.to(features.dtype)], dim=1)
    order = pos.argsort(dim=1)
    rows = rows.gather(1, order.unsqueeze(-1).expand(T, dominant + contextual, D))
    return mask, rows.reshape(T * (dominant + contextual), D)
