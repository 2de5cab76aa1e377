"""VidCom²'s per-token scores in plain torch, blocked so that nothing of size [T*N, D] is
materialised (no fp32 copy of bf16 input, no channel gather, no difference tensors).

The algebra (x̂ = x / max(|x|, eps) on the kept channels, c a centre):
    |x̂ - c|² = |x̂|² - 2 x̂·c + |c|²,   x̂·c = (x·c) / max(|x|, eps),   |x̂|² = |x|² / max(|x|, eps)²
    g   = (1/TN) Σ_i x_i / max(|x_i|, eps)       (video centre, a weighted column sum)
    g_t = (1/N)  Σ_{i in t} x_i / max(|x_i|, eps) (frame centre)
Channels outside the kept half are handled by zeroing them in the centres and in the norm weights,
so the features are only ever read, block by block, upcast to fp32 one block at a time.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .ranges import downscale_for_range

EPS = 1e-12
SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
# Rows per block: big enough for BLAS to be efficient, small enough for a block's fp32 copy to
# stay in cache (256 rows x 3584 channels x 4 bytes = 3.5 MiB). Measured at one thread, T=32
# N=256 D=3584: 256 rows 83 ms (fp32) / 95 ms (bf16); 1024-2048 rows 128-234 ms; 8192 rows
# (one block) 214 / 489 ms. Blocks hold whole frames, so N > 256 means one frame per block.
BLOCK_ROWS = 256
# Rows per block of the channel-variance pass; 64-256 rows within noise of each other (fp32
# 25-30 ms, bf16 33-44 ms), 512-1024 rows slower (33-115 ms).
VARIANCE_BLOCK_ROWS = 256


class _Blocks:
    """Row blocks of a `[M, D]` tensor as fp32, through reused buffers.

    Yields `(start, end, block fp32 [rows, D], scratch fp32 [rows, D])`, the block multiplied by
    `scale` (a power of two, exact; 1 leaves fp32 input a view). Reusing the buffers matters on
    CPU: a fresh multi-MiB tensor per block is a fresh mmap with page faults on every block, which
    costs more than the arithmetic (measured: 3x slower scoring of bf16 input)."""

    def __init__(self, x: torch.Tensor, rows: int, scale: float = 1.0):
        self.x = x
        self.scale = scale
        self.rows = max(1, min(rows, x.shape[0]))
        shape = (self.rows, x.shape[1])
        fp32 = dict(dtype=torch.float32, device=x.device)
        copy = x.dtype != torch.float32 or scale != 1.0
        self.upcast = torch.empty(shape, **fp32) if copy else None
        self.scratch = torch.empty(shape, **fp32)

    def __iter__(self):
        M = self.x.shape[0]
        for s in range(0, M, self.rows):
            e = min(s + self.rows, M)
            if self.upcast is None:
                block = self.x[s:e]
            else:
                block = self.upcast[: e - s].copy_(self.x[s:e])
                if self.scale != 1.0:
                    block.mul_(self.scale)
            yield s, e, block, self.scratch[: e - s]


def channel_variance(x: torch.Tensor, block_rows: int = VARIANCE_BLOCK_ROWS, scale: float = 1.0) -> torch.Tensor:
    """Population variance of every channel of `x * scale` [M, D] -> fp32 [D] (inf where the
    fp32 sums overflow; `scale` is a power of two, see `ranges.py`).

    Shifted-data formula: with `y = x - m0`, `var = E[y²] - E[y]²`, m0 the mean of the first
    block. The plain `E[x²] - E[x]²` cancels catastrophically on large-mean, low-variance
    channels, which are exactly the ones VidCom² keeps; after the shift E[y] is a fraction of a
    standard deviation, so the cancellation is harmless. The subtraction also upcasts half input
    block by block, and the column sums are matrix-vector products (`x.var(0)`'s strided column
    reduction is several times slower on CPU)."""
    M, D = x.shape
    rows = max(1, min(block_rows, M))
    first = x[:rows].float() * scale if scale != 1.0 else x[:rows].float()
    shift = first.mean(dim=0)
    scratch = torch.empty(rows, D, dtype=torch.float32, device=x.device)
    ones = torch.ones(rows, dtype=torch.float32, device=x.device)
    sum_y = torch.zeros(D, dtype=torch.float32, device=x.device)
    sum_y2 = torch.zeros(D, dtype=torch.float32, device=x.device)
    for s in range(0, M, rows):
        e = min(s + rows, M)
        if scale == 1.0:
            y = torch.sub(x[s:e], shift, out=scratch[: e - s])
        else:
            y = torch.mul(x[s:e], scale, out=scratch[: e - s]).sub_(shift)
        sum_y.addmv_(y.t(), ones[: e - s])
        sum_y2.addmv_(y.mul_(y).t(), ones[: e - s])
    mean_y = sum_y / M
    return (sum_y2 / M - mean_y * mean_y).clamp_min_(0.0)


def kept_channels(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Indices of the `int(D * 0.5)` lowest-variance channels of `x` [M, D], ascending variance."""
    return _kept_channels(channel_variance(x, scale=scale))


def _kept_channels(var: torch.Tensor) -> torch.Tensor:
    return torch.topk(var, int(var.shape[0] * 0.5), largest=False).indices


def gaussian_kernel_sum(d2: torch.Tensor) -> torch.Tensor:
    """K(d2) = Σ_a exp(-d2 / (2a)) over the five VidCom² scales."""
    out = torch.zeros_like(d2)
    for a in SCALES:
        out.add_(torch.exp(d2 * (-1.0 / (2.0 * a))))
    return out


def scores_from_dots(unit_sq, dot_video, video_centre_sq, dot_frame, frame_centre_sq):
    """`|x̂ - c|² = |x̂|² - 2 x̂·c + |c|²` for both centres, then the Gaussian kernel sum.

    Args (fp32): unit_sq, dot_video, dot_frame `[T, N]` (dots already divided by the norm);
        video_centre_sq scalar tensor; frame_centre_sq `[T]`.
    Returns: `(s_video, s_frame)`, fp32 `[T, N]`.
    """
    d2_video = (unit_sq - 2.0 * dot_video + video_centre_sq).clamp_min_(0.0)
    d2_frame = (unit_sq - 2.0 * dot_frame + frame_centre_sq.unsqueeze(1)).clamp_min_(0.0)
    return gaussian_kernel_sum(d2_video), gaussian_kernel_sum(d2_frame)


def vidcom2_scores_torch(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """VidCom² similarity scores of one video.

    Args:
        features: `[T, N, D]`, any float dtype, any device.
    Returns:
        `(s_video, s_frame)`, each fp32 `[T, N]`: the multi-scale Gaussian similarity of every
        token to the video centre and to its own frame's centre, on the normalised kept channels.
        Finite features whose fp32 sums of squares overflow (magnitudes ~1e19) are scored at an
        exact power-of-two scale, which VidCom² is invariant to (`ranges.py`).
    """
    T, N, D = features.shape
    x = features.reshape(T * N, D)
    scores = _scores(x, T, N, 1.0)
    if scores is None:
        scores = _scores(x, T, N, downscale_for_range(x))
    if scores is None:
        raise RuntimeError("VidCom² scores overflow even after rescaling the features; please report this")
    return scores


def _scores(x: torch.Tensor, T: int, N: int, scale: float) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The scores of `x * scale` `[T*N, D]`, or None when a channel variance or a row norm
    overflowed fp32 (checked on those small results: nothing else can overflow once they are
    finite, since every other quantity is a dot with a unit-bounded centre)."""
    D = x.shape[1]
    dev = x.device
    var = channel_variance(x, scale=scale)
    if not bool(torch.isfinite(var).all()):
        return None
    # Channel weights: 1 on the kept channels, 0 elsewhere (avoids a [T*N, D/2] gather).
    w = torch.zeros(D, dtype=torch.float32, device=dev)
    w[_kept_channels(var)] = 1.0

    inv_norm = torch.empty(T, N, dtype=torch.float32, device=dev)
    unit_sq = torch.empty(T, N, dtype=torch.float32, device=dev)  # |x̂|², 1 except ~zero rows
    dot_f = torch.empty(T, N, dtype=torch.float32, device=dev)
    frame_centre_sq = torch.empty(T, dtype=torch.float32, device=dev)
    g_sum = torch.zeros(D, dtype=torch.float32, device=dev)
    # Blocks of whole frames (at least one), about BLOCK_ROWS rows each.
    for s, e, xb, scratch in _Blocks(x, max(1, BLOCK_ROWS // N) * N, scale):
        f0, f1 = s // N, e // N
        xb = xb.view(f1 - f0, N, D)
        sq = torch.matmul(torch.mul(xb, xb, out=scratch.view_as(xb)), w)  # [F, N], kept channels
        inv = sq.sqrt().clamp_min_(EPS).reciprocal_()
        inv_norm[f0:f1] = inv
        unit_sq[f0:f1] = sq * inv * inv
        # frame centres g_t = (1/N) Σ_i x_i / max(|x_i|, eps) on the kept channels: [F, D]
        g_t = torch.bmm(inv.unsqueeze(1), xb).squeeze(1).mul_(w).div_(N)
        g_sum.add_(g_t.sum(0), alpha=N)
        frame_centre_sq[f0:f1] = (g_t * g_t).sum(1)
        dot_f[f0:f1] = torch.bmm(xb, g_t.unsqueeze(2)).squeeze(2) * inv
    # an overflowed (inf) or inf * 0 (NaN, a dropped channel) squared norm makes |x̂|² NaN
    if not bool(torch.isfinite(unit_sq).all()):
        return None
    g = g_sum / (T * N)

    dot_v = torch.empty(T * N, dtype=torch.float32, device=dev)
    if x.dtype == torch.float32 and scale == 1.0:
        torch.mv(x, g, out=dot_v)
    else:
        for s, e, xb, _ in _Blocks(x, BLOCK_ROWS, scale):
            torch.mv(xb, g, out=dot_v[s:e])
    return scores_from_dots(unit_sq, dot_v.view(T, N) * inv_norm, (g * g).sum(), dot_f, frame_centre_sq)
