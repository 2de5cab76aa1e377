"""vLLM's EVS dissimilarities in plain torch, frame block by frame block.

vLLM scores a video with `1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)`, which (torch's ATen
implementation) normalises each row first, `x / max(|x|, eps)` with `|x| = linalg.vector_norm`,
then sums the elementwise product of the two unit rows. On a whole video that materialises four
`[T-1, N, D]` tensors (two normalised copies, their product, and an fp32 copy of half input).
Here the same elementwise operations run on blocks of a few frames through reused fp32 buffers:
each frame is upcast and normalised once (it serves two pairs) and the product of a block lives
in cache. Same operations on the same values in the same order, so the dissimilarities are the
ones `F.cosine_similarity` gives on the fp32 input (tested bitwise), and the selection is exactly
vLLM's from fp32 input.
"""
from __future__ import annotations

import torch

from .ranges import downscale_for_range

# F.cosine_similarity's default: each row's norm is clamped to at least this.
COSINE_EPS = 1e-8
# vLLM's EVS marks the first frame with this dissimilarity so that it always survives.
FIRST_FRAME_DISSIMILARITY = 255.0
# Rows per block (whole frames, at least one). Measured at one thread, T=32 N=256 D=3584, fp32
# and bf16: 256 rows (one frame) fastest; 512-2048 rows 10-80 % slower (a block's fp32 buffers
# leave the cache); norming in 32-128-row chunks within a block gained nothing.
BLOCK_ROWS = 256


def _unit_rows(rows: torch.Tensor, out: torch.Tensor, norms: torch.Tensor, scale: float) -> None:
    """`out = rows * scale / max(|rows * scale|, eps)` row-wise in fp32; `norms` [rows] receives
    the norms (before clamping), checked for overflow once per video by the caller."""
    if rows.dtype == torch.float32 and scale == 1.0:
        src = rows  # read in place: one pass fewer than copying it into `out` first
    else:
        src = out.copy_(rows)
        if scale != 1.0:
            src.mul_(scale)  # a power of two: exact
    torch.linalg.vector_norm(src, dim=-1, out=norms)
    torch.div(src, norms.clamp_min(COSINE_EPS).unsqueeze(1), out=out)


def _dissimilarity(x: torch.Tensor, T: int, N: int, scale: float):
    """fp32 `[T, N]`, or None when a norm overflowed at this `scale`."""
    D = x.shape[1]
    f32 = dict(dtype=torch.float32, device=x.device)
    frames = max(1, min(BLOCK_ROWS // N, T))
    # unit rows of alternate blocks: a block's first frame pairs with the other buffer's last
    units = (torch.empty(frames * N, D, **f32), torch.empty(frames * N, D, **f32))
    prod = torch.empty(frames * N, D, **f32)
    norms = torch.empty(T * N, **f32)
    sims = torch.empty(T, N, **f32)
    for k, f0 in enumerate(range(0, T, frames)):
        f1 = min(f0 + frames, T)
        rows = (f1 - f0) * N
        unit, before = units[k % 2][:rows], units[(k + 1) % 2]
        _unit_rows(x[f0 * N: f1 * N], unit, norms[f0 * N: f1 * N], scale)
        if f0 > 0:  # (f0, f0 - 1) across the block boundary
            torch.sum(torch.mul(unit[:N], before[-N:], out=prod[:N]), dim=-1, out=sims[f0])
        if rows > N:  # (f, f - 1) inside the block
            p = torch.mul(unit[N:], unit[:-N], out=prod[: rows - N])
            torch.sum(p.view(-1, N, D), dim=-1, out=sims[f0 + 1: f1])
    if not bool(torch.isfinite(norms).all()):
        return None
    out = torch.full((T, N), FIRST_FRAME_DISSIMILARITY, **f32)
    torch.sub(1.0, sims[1:], out=out[1:])
    return out


def evs_dissimilarity_torch(features: torch.Tensor) -> torch.Tensor:
    """EVS dissimilarity of every token to the token at its position in the previous frame.

    Args:
        features: `[T, N, D]`, any float dtype, any device (never copied whole to fp32).
    Returns:
        fp32 `[T, N]`: `1 - cos(x[t, i], x[t-1, i])` as `F.cosine_similarity` computes it on the
        fp32 input, and `FIRST_FRAME_DISSIMILARITY` on frame 0. Finite features whose squared
        norms overflow fp32 are scored at an exact power-of-two scale (cosines are
        scale-invariant) instead of collapsing to zero similarity.
    """
    T, N, D = features.shape
    x = features.reshape(T * N, D)
    out = _dissimilarity(x, T, N, 1.0)
    if out is None:
        out = _dissimilarity(x, T, N, downscale_for_range(x))
    if out is None:
        raise RuntimeError("EVS norms overflow even after rescaling the features; please report this")
    return out
