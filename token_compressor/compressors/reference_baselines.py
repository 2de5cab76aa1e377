"""Straightforward formulations of DyCoke and VisionZip, the way the VidCom² authors' Qwen code
runs them: a Python loop over frame pairs (DyCoke), over frames and then over anchors
(VisionZip), computed in `compute_dtype` (the authors compute in the model's dtype). Slow on
purpose: the readable oracle the vectorised compressors are tested and benchmarked against.
Written from the specification (../shared/notes/baselines.md), not from their code.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .dycoke import dycoke_tokens_per_pruned_frame
from .visionzip import visionzip_counts


def dycoke_reference(features: torch.Tensor, ratio: float, k: Optional[float] = None,
                     compute_dtype=torch.float32) -> torch.Tensor:
    """features `[T, N, D]` -> keep int64 `[K]` ascending (DyCoke only prunes)."""
    T, N, _ = features.shape
    x = features.to(compute_dtype)
    if T == 1:
        return torch.arange(N)
    per_frame = dycoke_tokens_per_pruned_frame(N, ratio, k)
    kept = {}
    for i in range(0, T - 1, 2):  # pairs; the last frame of an odd T is never visited
        kept[i] = torch.arange(N)
        sim = F.cosine_similarity(F.normalize(x[i], dim=-1), F.normalize(x[i + 1], dim=-1), dim=-1)
        kept[i + 1] = torch.topk(sim, per_frame, largest=False).indices
    for i in range(0, T - 4, 4):
        sim = F.cosine_similarity(x[i], x[i + 2], dim=-1)
        kept[i + 2] = torch.topk(sim, per_frame, largest=False).indices
    return torch.sort(torch.cat([idx + t * N for t, idx in kept.items()])).values


def visionzip_reference(features: torch.Tensor, ratio: float, dominant_ratio: float = 0.6, k_neighbors: int = 5,
                        compute_dtype=torch.float32):
    """features `[T, N, D]` -> (keep int64 `[K]` ascending, features `[K, D]` in `compute_dtype`)."""
    T, N, D = features.shape
    x = features.to(compute_dtype)
    dominant, contextual = visionzip_counts(N, ratio, dominant_ratio)
    keep, rows = [], []
    for t in range(T):
        f = x[t]
        dom = torch.topk(f.norm(dim=-1), dominant).indices.sort().values
        is_dom = torch.zeros(N, dtype=torch.bool)
        is_dom[dom] = True
        rest = (~is_dom).nonzero().squeeze(1)
        pos, out = [dom], [f[dom]]
        if contextual > 0:
            rem = f[rest]
            unit = F.normalize(rem, dim=-1)
            sim = unit @ unit.T
            density = torch.topk(sim, min(k_neighbors + 1, rest.numel()), dim=-1).values[:, 1:].mean(dim=-1)
            anchors = torch.topk(density, min(contextual, rest.numel())).indices.sort().values
            merged = rem[anchors]
            if anchors.numel() < rest.numel():
                assign = (unit @ F.normalize(rem[anchors], dim=-1).T).argmax(dim=-1)
                merged = torch.stack([rem[assign == j].mean(dim=0) if bool((assign == j).any()) else rem[a]
                                      for j, a in enumerate(anchors.tolist())])
            pos.append(rest[anchors])
            out.append(merged)
        pos, out = torch.cat(pos), torch.cat(out)
        order = torch.argsort(pos)
        keep.append(pos[order] + t * N)
        rows.append(out[order])
    return torch.cat(keep), torch.cat(rows)
