"""VisionZip (CVPR 2025, "Longer is Better but Not Necessary in Vision Language Models"), per
frame, as the VidCom² authors' Qwen code runs it: a merging compressor.

Every frame keeps exactly `K = max(1, int(r * N))` tokens: the `max(1, int(0.6 K))` dominant
ones (largest feature norm, standing in for the vision encoder's attention, which the Qwen
merger output does not expose) as copies, and `K - dominant` contextual anchors among the rest:
the tokens of highest density (mean cosine similarity to their `k_neighbors` nearest remaining
tokens). Every remaining token joins its most similar anchor, and an anchor's features become the
plain mean of its group (itself included). Frames go in blocks of whole frames (4 at N = 256;
all of a small video) upcast into one reused fp32 buffer, each block at once: no loop over single
frames or anchors.

Scoring (norms, similarities, means) is fp32 from any input dtype (the authors compute in the
model's dtype); the returned rows are in the input dtype. At r = 1 every token is kept unchanged.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..config import check_method_options
from ..kernels.torch_scores import EPS, _Blocks
from ..registry import register_compressor


# rows per block of whole frames (4 frames of 256 tokens: a 14 MiB fp32 buffer)
FRAME_BLOCK_ROWS = 1024


def visionzip_counts(tokens_per_frame: int, ratio: float, dominant_ratio: float = 0.6) -> Tuple[int, int]:
    """(dominant, contextual) tokens per frame: `K = max(1, int(N r))`, `dominant = max(1,
    int(K * dominant_ratio))` (at most K), `contextual = K - dominant`."""
    K = max(1, int(tokens_per_frame * ratio))
    dominant = min(K, max(1, int(K * dominant_ratio)))
    return dominant, K - dominant


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x[f, index[f, j]]` for x `[F, M, D]`, index `[F, J]` -> `[F, J, D]`, as one row
    index_select (a `gather` with an expanded index is several times slower on CPU)."""
    F_, M, D = x.shape
    flat = (index + torch.arange(F_, device=index.device).unsqueeze(1) * M).reshape(-1)
    return x.reshape(F_ * M, D).index_select(0, flat).view(F_, index.shape[1], D)


def contextual_anchors(rest: torch.Tensor, inv_norm: torch.Tensor, contextual: int, k_neighbors: int):
    """Density anchors and the merged groups among every frame's non-dominant tokens.

    Args:
        rest: fp32 `[F, n, D]`, each frame's remaining tokens in ascending position order.
        inv_norm: fp32 `[F, n]`, `1 / max(|rest|, eps)`.
        contextual: anchors per frame, 1 <= contextual < n.
        k_neighbors: neighbours in the density.
    Returns:
        (anchors int64 `[F, c]`, ascending indices into `rest`; merged fp32 `[F, c, D]`: the mean
        of every remaining token whose most similar anchor it is, the anchor itself included).
    """
    F_, n, D = rest.shape
    # cosines of the normalised rows, without materialising them
    sim = torch.bmm(rest, rest.transpose(1, 2)).mul_(inv_norm.unsqueeze(2)).mul_(inv_norm.unsqueeze(1))
    # the largest similarity of a row is normally its own (1): the authors drop it
    density = sim.topk(min(k_neighbors + 1, n), dim=-1).values[..., 1:].mean(dim=-1)
    anchors = density.topk(contextual, dim=-1).indices.sort(dim=-1).values  # [F, c]
    to_anchor = sim.gather(2, anchors.unsqueeze(1).expand(F_, n, contextual))  # [F, n, c]
    group = to_anchor.argmax(dim=-1)  # [F, n], first maximum on ties
    # group sums as one matmul with the one-hot assignment (exact 0/1 weights: a lone anchor
    # stays a bitwise copy); much faster on CPU than a scatter-add over [F, n, D]
    onehot = torch.zeros(F_, contextual, n, dtype=rest.dtype, device=rest.device)
    onehot.scatter_(1, group.unsqueeze(1), 1.0)
    counts = onehot.sum(dim=2, keepdim=True)  # [F, c, 1], >= 1 for an anchor that is its own best
    sums = torch.bmm(onehot, rest)
    anchor_rows = _rows(rest, anchors)
    merged = torch.where(counts > 0, sums / counts.clamp(min=1), anchor_rows)
    return anchors, merged


def visionzip_frames(frames: torch.Tensor, dominant: int, contextual: int, k_neighbors: int):
    """VisionZip on a block of frames at once.

    Args:
        frames: fp32 `[F, N, D]`.
    Returns:
        (positions int64 `[F, K]` ascending, rows fp32 `[F, K, D]`), `K = dominant + contextual`.
    """
    F_, N, D = frames.shape
    norms = torch.linalg.vector_norm(frames, dim=-1)  # [F, N], stands in for the encoder's attention
    dom = norms.topk(dominant, dim=-1).indices
    pos, rows = dom, _rows(frames, dom)
    if contextual > 0:
        is_dom = torch.zeros(F_, N, dtype=torch.bool, device=frames.device).scatter_(1, dom, True)
        n = N - dominant
        rest_pos = (~is_dom).nonzero()[:, 1].view(F_, n)  # ascending per frame
        rest = _rows(frames, rest_pos)
        inv = norms.gather(1, rest_pos).clamp_min_(EPS).reciprocal_()
        anchors, merged = contextual_anchors(rest, inv, contextual, k_neighbors)
        pos = torch.cat([dom, rest_pos.gather(1, anchors)], dim=1)
        rows = torch.cat([rows, merged], dim=1)
    order = pos.argsort(dim=1)
    return pos.gather(1, order), _rows(rows, order)


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
    K = dominant + contextual
    if K == N:  # every remaining token is its own anchor: nothing merges
        return torch.ones(T, N, dtype=torch.bool, device=features.device), features.reshape(T * N, D).clone()
    mask = torch.zeros(T, N, dtype=torch.bool, device=features.device)
    rows = torch.empty(T, K, D, dtype=features.dtype, device=features.device)
    # frames are independent: blocks of whole frames, upcast to fp32 in a reused buffer
    for s, e, block, _ in _Blocks(features.reshape(T * N, D), max(1, FRAME_BLOCK_ROWS // N) * N):
        f0, f1 = s // N, e // N
        pos, kept = visionzip_frames(block.view(f1 - f0, N, D), dominant, contextual, k_neighbors)
        mask[f0:f1].scatter_(1, pos, True)
        rows[f0:f1] = kept  # dominant rows round-trip exactly to the input dtype
    return mask, rows.reshape(T * K, D)
