"""Density-peak clustering with k nearest neighbours (DPC-kNN), batched over padded sets.

Shared by FastVID (context tokens of a frame) and HoliTom (clusters of a window's static tokens).
Both run it on many small sets; here every set is one row of a padded batch, so one call does
them all. Everything is fp32.
"""
from __future__ import annotations

from typing import Optional

import torch


def jitter_draws(sizes, seed: int, scale: float, device) -> list:
    """The density tie-breaking noise `scale * U[0, 1)`, one tensor of `sizes[i]` values per set,
    drawn in set order from a CPU generator seeded with `seed` (so the same seed gives the same
    draws on every device). FastVID's code draws `torch.rand` of the set's size once per set, in
    this order, from torch's global generator (HoliTom's likewise per baselines.md); the golden
    cases are seed-invariant, the draws only break exact density ties. Returns fp32 tensors."""
    if scale == 0.0:
        return [torch.zeros(int(n), device=device) for n in sizes]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return [(torch.rand(int(n), generator=gen) * scale).to(device) for n in sizes]


def pad_jitter(draws: list, width: int, device) -> torch.Tensor:
    """List of 1-D tensors -> fp32 `[B, width]`, zero padded."""
    out = torch.zeros(len(draws), width, device=device)
    for b, v in enumerate(draws):  # B small tensors: a copy each, no arithmetic
        out[b, : v.numel()] = v
    return out


def dpc_knn(
    x: torch.Tensor,
    valid: torch.Tensor,
    n_centres: torch.Tensor,
    k: torch.Tensor,
    jitter: Optional[torch.Tensor] = None,
):
    """Pick `n_centres[b]` density peaks in each set `b`.

    Args:
        x: fp32 `[B, M, D]`, set `b` is `x[b][valid[b]]` (valid rows first or anywhere).
        valid: bool `[B, M]`.
        n_centres: int64 `[B]`, each in [0, #valid].
        k: int64 `[B]`, neighbours in the density, each in [1, #valid] (self included).
        jitter: fp32 `[B, M]` added to the density (None: none).
    Returns:
        (centre mask bool `[B, M]`, dist fp32 `[B, M, M]` with `inf` at pairs involving padding).

    `dist = ||x_i - x_j|| / sqrt(D)`; `density_i = exp(-mean of the k smallest dist_ij^2)` (the
    point itself, at distance ~0, included) `+ jitter_i`; `delta_i` = distance to the nearest
    strictly denser point, or the largest distance in the set if none is denser;
    centres = the `n_centres` largest `delta * density`. Ties go to the lower index.
    """
    B, M, D = x.shape
    dev = x.device
    # Euclidean distances from the Gram matrix (as torch.cdist does for sets over 25 rows),
    # without cdist's concatenated copies; a point's distance to itself is exactly 0
    sq = torch.linalg.vector_norm(x, dim=-1).square()
    d2 = (sq.unsqueeze(2) + sq.unsqueeze(1)).sub_(torch.bmm(x, x.transpose(1, 2)), alpha=2).clamp_min_(0)
    dist = d2.sqrt_().div_(D**0.5)
    dist.diagonal(dim1=1, dim2=2).zero_()
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    dist = dist.masked_fill(~pair, float("inf"))
    kmax = int(k.max()) if B else 1
    nearest = torch.topk(dist, kmax, dim=-1, largest=False).values  # [B, M, kmax], ascending
    # mean of the k[b] smallest squared distances, per set b
    take = torch.arange(kmax, device=dev) < k.view(B, 1, 1)
    sq = torch.where(take, nearest.square(), torch.zeros((), device=dev))
    density = torch.exp(-sq.sum(-1) / k.view(B, 1).to(x.dtype))
    if jitter is not None:
        density = density + jitter
    density = density.masked_fill(~valid, float("-inf"))
    dist_max = torch.where(pair, dist, torch.zeros((), device=dev)).amax(dim=(1, 2))  # [B]
    denser = (density.unsqueeze(1) > density.unsqueeze(2)) & pair  # [b, i, j]: j denser than i
    delta = torch.where(denser, dist, dist_max.view(B, 1, 1)).amin(-1)
    score = (delta * density).masked_fill(~valid, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    ranked = torch.arange(M, device=dev).unsqueeze(0) < n_centres.view(B, 1)
    centres = torch.zeros(B, M, dtype=torch.bool, device=dev).scatter_(1, order, ranked)
    return centres, dist
