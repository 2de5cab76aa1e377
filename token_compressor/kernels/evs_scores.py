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
# Rows per block (whole frames, at least one): measured on the 2-core build machine at one
# thread, T=32 N=256 D=3584, fp32 and bf16; see benchmarks/README.md.
BLOCK_ROWS = 256


def _unit_rows(rows: torch.Tensor, out: torch.Tensor, scale: float) -> bool:
    """`out = rows * scale / max(|rows * scale|, eps)` row-wise, fp32; False if a norm overflowed."""
    # Copied first even when already fp32: the norm and the division then read the block from
    # cache instead of memory (measured faster than reading the input twice).
    src = out.copy_(rows)
    if scale != 1.0:
        src.mul_(scale)  # a power of two: exact
    norms = torch.linalg.vector_norm(src, dim=-1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        return False
    src.div_(norms.clamp_min_(COSINE_EPS))
    return True


def _dissimilarity(x: torch.Tensor, T: int, N: int, scale: float):
    """fp32 `[T, N]`, or None when a norm overflowed at this `scale`."""
    D = x.shape[1]
    frames = max(1, min(BLOCK_ROWS // N, T))
    out = torch.full((T, N), FIRST_FRAME_DISSIMILARITY, dtype=torch.float32, device=x.device)
    # unit rows of the previous block's last frame, then of this block's frames
    unit = torch.empty((frames + 1) * N, D, dtype=torch.float32, device=x.device)
    prod = torch.empty(frames * N, D, dtype=torch.float32, device=x.device)
    for f0 in range(0, T, frames):
        f1 = min(f0 + frames, T)
        if not _unit_rows(x[f0 * N: f1 * N], unit[N: (f1 - f0 + 1) * N], scale):
            return None
        # pairs (f, f-1) for f in [max(f0, 1), f1): rows [first, f1 - f0) of this block
        first = 1 if f0 == 0 else 0
        cur = unit[(first + 1) * N: (f1 - f0 + 1) * N]
        prev = unit[first * N: (f1 - f0) * N]
        if cur.shape[0]:
            p = torch.mul(cur, prev, out=prod[: cur.shape[0]])
            out[f0 + first: f1] = 1.0 - p.view(-1, N, D).sum(dim=-1)
        unit[:N].copy_(unit[(f1 - f0) * N: (f1 - f0 + 1) * N])
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
