"""vLLM's EVS dissimilarities in plain torch, cache-sized block by block.

vLLM scores a video with `1 - F.cosine_similarity(x[1:], x[:-1], dim=-1)`, which (torch's ATen
implementation) normalises each row first, `x / max(|x|, eps)` with `|x| = linalg.vector_norm`,
then sums the elementwise product of the two unit rows. On a whole video that materialises four
`[T-1, N, D]` tensors (two normalised copies, their product, and an fp32 copy of half input).
Here the same elementwise operations run on cache-sized blocks (a few frames, or a chunk of a
frame's tokens taken through every frame) through reused fp32 buffers: each row is upcast and
normalised once (it serves two pairs) and the product of a block lives in cache. The one pass
also vouches for `select`'s input check (`ranges.vouch_for_input`), so the video is read once. Same operations on the same values in the same order, so the dissimilarities are the
ones `F.cosine_similarity` gives on the fp32 input (tested bitwise), and the selection is exactly
vLLM's from fp32 input. On bf16/fp32 CPU input, `evs_keep` screens with one compiled pass instead
(`cpu_scores.evs_screen`) and computes here, with the same operations, only the tokens the screen
cannot place (`evs_dissimilarity_rows`): the same selection, from one read of the video.
"""
from __future__ import annotations

from typing import Optional

import torch

from .machine import block_rows
from .ranges import at_a_safe_scale, vouch_for_input
from .threads import selection_threads
from .torch_scores import frame_blocks

# F.cosine_similarity's default: each row's norm is clamped to at least this.
COSINE_EPS = 1e-8
# vLLM's EVS marks the first frame with this dissimilarity so that it always survives.
FIRST_FRAME_DISSIMILARITY = 255.0
# Rows per block: None sizes them from the machine's L2 (`machine.block_rows`: a block's three
# fp32 buffers in the L2, with a floor against per-operation costs); an int overrides (tests move the block boundaries). When a frame
# is larger than a block, the video is read token-chunk by token-chunk through all frames, so
# that the previous frame's unit rows of the same tokens are still in the other buffer.
BLOCK_ROWS: Optional[int] = None


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
    """fp32 `[T, N]`, or None when a norm overflowed at this `scale`.

    At `scale` 1 the pass vouches for the input (`ranges.vouch_for_input`) from its row norms:
    NaN or inf anywhere makes a norm non-finite, and `max|x|` lies between the largest norm over
    sqrt(D) and the largest norm."""
    D = x.shape[1]
    f32 = dict(dtype=torch.float32, device=x.device)
    rows = BLOCK_ROWS if BLOCK_ROWS is not None else block_rows(4 * D, buffers=3)
    rows = max(1, min(rows, T * N))
    # unit rows of alternate blocks: a block's first frame pairs with the other buffer's last
    units = (torch.empty(rows, D, **f32), torch.empty(rows, D, **f32))
    prod = torch.empty(rows, D, **f32)
    norms = torch.empty(T, N, **f32)
    sims = torch.empty(T, N, **f32)
    xv = x.view(T, N, D)
    before = None  # unit rows of the previous block: the same tokens, the frames just before
    for j, (f0, f1, i0, i1) in enumerate(frame_blocks(T, N, rows, token_major=True)):
        n = i1 - i0
        r = (f1 - f0) * n
        unit = units[j % 2][:r]
        _unit_rows(xv[f0:f1, i0:i1].reshape(r, D), unit, norms[f0:f1, i0:i1].view(-1), scale)
        if f0 > 0:  # (f0, f0 - 1) across the block boundary
            torch.sum(torch.mul(unit[:n], before[-n:], out=prod[:n]), dim=-1, out=sims[f0, i0:i1])
        if r > n:  # (f, f - 1) inside the block
            p = torch.mul(unit[n:], unit[:-n], out=prod[: r - n])
            torch.sum(p.view(-1, n, D), dim=-1, out=sims[f0 + 1: f1, i0:i1])
        before = unit
    finite = bool(torch.isfinite(norms).all())
    if scale == 1.0:
        top = float(norms.max())
        vouch_for_input(finite, top / D ** 0.5, top)
    if not finite:
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
    return at_a_safe_scale(x, lambda scale: _dissimilarity(x, T, N, scale), "EVS norms")


def evs_dissimilarity_rows(features: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """The torch path's dissimilarities of the tokens `flat` (int64 `[B]`, indices into the
    `T*N` tokens, none in frame 0), bitwise `evs_dissimilarity_torch(features).view(-1)[flat]`
    for features in range (no rescale): the same operations on each pair of rows (row norms,
    unit rows, their product, its row sum, `1 - s`), whose results do not depend on the other
    rows of the block (tested). On one torch thread, like the blocks inside `select`."""
    T, N, D = features.shape
    x = features.reshape(T * N, D)
    f32 = dict(dtype=torch.float32, device=x.device)
    B = flat.numel()
    # cache-sized blocks, as the torch path's (one of its blocks' three buffers each)
    rows = max(1, min(BLOCK_ROWS if BLOCK_ROWS is not None else block_rows(4 * D, buffers=3), B))
    units = torch.empty(2, rows, D, **f32)
    norms = torch.empty(2, rows, **f32)
    sims = torch.empty(B, **f32)
    with selection_threads(x.device):
        for s in range(0, B, rows):
            e = min(s + rows, B)
            _unit_rows(x[flat[s:e]], units[0, : e - s], norms[0, : e - s], 1.0)
            _unit_rows(x[flat[s:e] - N], units[1, : e - s], norms[1, : e - s], 1.0)
            torch.sum(torch.mul(units[0, : e - s], units[1, : e - s]), dim=-1, out=sims[s:e])
    return torch.sub(1.0, sims)


# screened EVS gives up (and scores the whole video on the torch path) when more than this share
# of the tokens lies within the error band of the cut: a nearly static video, where most
# dissimilarities are ~0 and the screen would re-check most rows anyway
MAX_BAND_SHARE = 0.25


def evs_keep(features: torch.Tensor, count: int, screen: bool) -> torch.Tensor:
    """vLLM's EVS keep mask: bool `[T, N]`, True on the first `count` tokens of one stable
    descending sort of the dissimilarities (`evs_dissimilarity_torch`, vLLM's values on the fp32
    input).

    `screen`: score with the compiled pass (`cpu_scores.evs_screen`; bf16/fp32 CPU input), whose
    values d~ lie within `band = cpu_scores.evs_band(D)` of the torch path's d. The K-th largest
    d~, v, is then within `band` of the K-th largest d (order statistics move by at most the
    largest change of their inputs), so a token with d~ > v + 2 band is kept and one with d~ < v -
    2 band dropped, exactly as the full sort would; the tokens in between get their exact d
    (`evs_dissimilarity_rows`) and are ordered as the full sort orders them (d descending, then
    position), filling the remaining places. Pairs the screen is unsure of (tiny rows) are
    computed exactly first. The mask is the torch path's, bit for bit (tested against vLLM's
    formulation on golden and near-tie inputs)."""
    from . import cpu_scores

    T, N, D = features.shape
    M = T * N
    screened = cpu_scores.evs_screen(features) if screen and count < M else None
    if screened is None:
        dissim = evs_dissimilarity_torch(features).reshape(-1)
        order = torch.argsort(dissim, descending=True, stable=True)
        mask = torch.zeros(M, dtype=torch.bool, device=features.device)
        mask[order[:count]] = True
        return mask.view(T, N)
    approx, unsure = screened
    d = approx.reshape(-1)
    fix = unsure.reshape(-1).nonzero().squeeze(1)
    if fix.numel():
        d[fix] = evs_dissimilarity_rows(features, fix)
    band = cpu_scores.evs_band(D)
    cut = float(torch.topk(d, count, sorted=False).values.min())
    sure = d > cut + 2.0 * band
    near = (d >= cut - 2.0 * band) & ~sure
    candidates = near.nonzero().squeeze(1)  # ascending positions
    if candidates.numel() > MAX_BAND_SHARE * M:
        return evs_keep(features, count, screen=False)
    exact = d[candidates].clone()
    later = candidates >= N  # frame 0's 255 is exact already
    exact[later] = evs_dissimilarity_rows(features, candidates[later])
    need = count - int(sure.sum())
    order = torch.argsort(exact, descending=True, stable=True)  # ties: the lower position first
    sure[candidates[order[:need]]] = True
    return sure.view(T, N)
