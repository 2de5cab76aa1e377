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

from typing import Iterator, Optional, Tuple

import torch

from .machine import block_rows
from .ranges import at_a_safe_scale, vouch_for_input

EPS = 1e-12
SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
# Rows per block of every pass: None sizes them from the machine's L2 (`machine.block_rows`: a
# block's two fp32 buffers in the L2, with a floor against per-operation costs); an int overrides (tests move block boundaries). One
# frame per block (256 rows x 3584 channels x 4 bytes = 3.5 MiB) overflowed a 2 MiB L2, and
# the frame centres need no whole frame in a block: they are summed over the frame's blocks.
BLOCK_ROWS: Optional[int] = None
# The channel variances are shifted by the mean of the first SHIFT_ROWS rows (a statistical
# choice, not a cache one: it does not follow the block size).
SHIFT_ROWS = 256


def _rows_per_block(D: int) -> int:
    return BLOCK_ROWS if BLOCK_ROWS is not None else block_rows(4 * D, buffers=2)


def frame_blocks(T: int, N: int, rows: int, reverse: bool = False,
                 token_major: bool = False) -> Iterator[Tuple[int, int, int, int]]:
    """`(f0, f1, i0, i1)`: tokens `i0..i1-1` of frames `f0..f1-1`, rows `f0*N+i0 .. (f1-1)*N+i1`
    of a `[T*N, D]` video, contiguous, at most `rows` of them (at least one frame or chunk):
    whole frames when N <= rows, else one frame in near-equal chunks of tokens, frame by frame
    (`token_major`: chunk by chunk, each through every frame). Every row once; `reverse`
    yields the same blocks in reverse order."""
    if N <= rows:
        per = rows // N
        blocks = [(f0, min(T, f0 + per), 0, N) for f0 in range(0, T, per)]
    else:
        n = -(-N // rows)  # chunks per frame
        size = -(-N // n)
        chunks = [(i0, min(N, i0 + size)) for i0 in range(0, N, size)]
        if token_major:
            blocks = [(t, t + 1, i0, i1) for i0, i1 in chunks for t in range(T)]
        else:
            blocks = [(t, t + 1, i0, i1) for t in range(T) for i0, i1 in chunks]
    return iter(blocks[::-1] if reverse else blocks)


class _Upcast:
    """fp32 views of `[T*N, D]` row blocks through one reused buffer; fp32 input at `scale` 1 is
    viewed in place. Reusing the buffer matters on CPU: a fresh multi-MiB tensor per block is a
    fresh mmap with page faults on every block, which costs more than the arithmetic (measured:
    3x slower scoring of bf16 input)."""

    def __init__(self, x: torch.Tensor, rows: int, scale: float = 1.0):
        self.x, self.scale = x, scale
        copy = x.dtype != torch.float32 or scale != 1.0
        self.buf = torch.empty(min(rows, x.shape[0]), x.shape[1], dtype=torch.float32, device=x.device) if copy else None

    def __call__(self, s: int, e: int) -> torch.Tensor:
        """fp32 `[e-s, D]`: rows s..e-1 times `scale` (a power of two: exact), upcast once."""
        if self.buf is None:
            return self.x[s:e]
        block = self.buf[: e - s].copy_(self.x[s:e])
        return block.mul_(self.scale) if self.scale != 1.0 else block


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


def variance_shift(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """fp32 `[D]`: the mean of the first SHIFT_ROWS rows of `x * scale` (`channel_variance`)."""
    first = x[:SHIFT_ROWS].float()  # fp32 input: a view, not to be written
    return (first * scale if scale != 1.0 else first).mean(dim=0)


def channel_variance(x: torch.Tensor, block_rows: Optional[int] = None, scale: float = 1.0,
                     vouch: bool = False) -> torch.Tensor:
    """Population variance of every channel of `x * scale` [M, D] -> fp32 [D] (inf where the
    fp32 sums overflow; `scale` is a power of two, see `ranges.py`).

    Shifted-data formula: with `y = x - m0`, `var = E[y²] - E[y]²`, m0 the mean of the first
    SHIFT_ROWS rows. The plain `E[x²] - E[x]²` cancels catastrophically on large-mean,
    low-variance channels, which are exactly the ones VidCom² keeps; after the shift E[y] is a
    fraction of a standard deviation, so the cancellation is harmless. Each block is upcast once
    into a cache-sized buffer and shifted there; the column sums are matrix-vector products
    (`x.var(0)`'s strided column reduction is several times slower on CPU).

    `vouch`: this pass is the scorer's first read of the unscaled input; it vouches for the input
    from its sums (`ranges.vouch_for_input`): NaN or inf anywhere makes them non-finite, and
    `max|m0| <= max|x| <= max(|m0| + sqrt(Σ y²))`, `max|x| >= sqrt(Σ y² / 4M)` per channel."""
    M, D = x.shape
    rows = max(1, min(block_rows if block_rows is not None else _rows_per_block(D), M))
    shift = variance_shift(x, scale)
    upcast = _Upcast(x, rows, scale)
    scratch = torch.empty(rows, D, dtype=torch.float32, device=x.device) if upcast.buf is None else None
    ones = torch.ones(rows, dtype=torch.float32, device=x.device)
    sum_y = torch.zeros(D, dtype=torch.float32, device=x.device)
    sum_y2 = torch.zeros(D, dtype=torch.float32, device=x.device)
    for s in range(0, M, rows):
        e = min(s + rows, M)
        if scratch is not None:  # fp32 input read in place, shifted into the scratch
            y = torch.sub(x[s:e], shift, out=scratch[: e - s])
        else:  # upcast once, shifted in place (a mixed-dtype subtraction is slower)
            y = upcast(s, e).sub_(shift)
        sum_y.addmv_(y.t(), ones[: e - s])
        sum_y2.addmv_(y.mul_(y).t(), ones[: e - s])
    if vouch:
        vouch_from_variance_sums(sum_y, sum_y2, shift, M)
    return variance_from_sums(sum_y, sum_y2, M)


def variance_from_sums(sum_y: torch.Tensor, sum_y2: torch.Tensor, M: int) -> torch.Tensor:
    """`E[y²] - E[y]²` (clamped at 0) from `Σ y`, `Σ y²` over `M` rows, fp32 `[D]`."""
    mean_y = sum_y / M
    return (sum_y2 / M - mean_y * mean_y).clamp_min_(0.0)


def vouch_from_variance_sums(sum_y: torch.Tensor, sum_y2: torch.Tensor, shift: torch.Tensor, M: int) -> None:
    """`ranges.vouch_for_input` from the variance pass over the unscaled input (`M` rows, y =
    x - shift): NaN or inf anywhere makes the sums non-finite, and `max|shift| <= max|x| <=
    max(|shift| + sqrt(Σ y²))`, `max|x| >= sqrt(Σ y² / 4M)` per channel."""
    finite = bool(torch.isfinite(sum_y).all() & torch.isfinite(sum_y2).all())
    abs_shift = shift.abs()
    root = sum_y2.sqrt()
    lower = max(float(abs_shift.max()), float(root.max()) / (2.0 * M ** 0.5))
    vouch_for_input(finite, lower, float((abs_shift + root).max()))


def kept_channels(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Indices of the `int(D * 0.5)` lowest-variance channels of `x` [M, D], ascending variance."""
    return _kept_channels(channel_variance(x, scale=scale))


def _kept_channels(var: torch.Tensor) -> torch.Tensor:
    return torch.topk(var, int(var.shape[0] * 0.5), largest=False).indices


def kept_channel_weights(var: torch.Tensor) -> torch.Tensor:
    """fp32 `[D]`: 1 on the kept (lowest-variance) channels, 0 elsewhere (weights instead of a
    `[T*N, D/2]` gather)."""
    w = torch.zeros_like(var)
    w[_kept_channels(var)] = 1.0
    return w


def frame_centres(sq: torch.Tensor, inv: torch.Tensor, centre_sums: torch.Tensor, w: torch.Tensor, T: int, N: int):
    """From the centre pass's kept-channel squared norms `sq` `[T*N]`, inverse norms `inv`
    `[T*N]` and per-frame sums `centre_sums` `[T, D]` of `x_i * inv_i` (every channel, consumed):
    `(unit_sq [T, N], g_t [T, D], g [D], |g_t|² [T])`, or None when a squared norm overflowed."""
    unit_sq = (sq * inv * inv).view(T, N)  # |x̂|², 1 except ~zero rows
    # an overflowed (inf) or inf * 0 (NaN, a dropped channel) squared norm makes |x̂|² NaN
    if not bool(torch.isfinite(unit_sq).all()):
        return None
    # frame centres g_t = (1/N) Σ_i x_i / max(|x_i|, eps) on the kept channels, and the video's
    g_t = centre_sums.mul_(w).div_(N)  # [T, D]
    g = g_t.sum(0).mul_(N).div_(T * N)
    return unit_sq, g_t, g, (g_t * g_t).sum(1)


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
    return at_a_safe_scale(x, lambda scale: _scores(x, T, N, scale), "VidCom² scores")


def _scores(x: torch.Tensor, T: int, N: int, scale: float) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """The scores of `x * scale` `[T*N, D]`, or None when a channel variance or a row norm
    overflowed fp32 (checked on those small results: nothing else can overflow once they are
    finite, since every other quantity is a dot with a unit-bounded centre).

    Three passes over the input, each upcasting a block once into a cache-sized buffer: the
    channel variances (which channels count), the kept-channel norms and frame centres, the dots
    with the centres; each needs the previous one's sums over the whole video. The middle pass
    runs backwards, so that each pass starts on the blocks the previous one left in cache."""
    D = x.shape[1]
    dev = x.device
    rows = _rows_per_block(D)
    var = channel_variance(x, block_rows=rows, scale=scale, vouch=scale == 1.0)
    if not bool(torch.isfinite(var).all()):
        return None
    w = kept_channel_weights(var)

    f32 = dict(dtype=torch.float32, device=dev)
    sq = torch.empty(T * N, **f32)  # kept-channel squared norms
    inv = torch.empty(T * N, **f32)  # 1 / max(|x|, eps)
    centre_sums = torch.zeros(T, D, **f32)  # Σ_i x_i / max(|x_i|, eps) per frame, every channel
    upcast = _Upcast(x, rows, scale)
    scratch = torch.empty(min(rows, x.shape[0]), D, **f32)
    for f0, f1, i0, i1 in frame_blocks(T, N, rows, reverse=True):
        s, e = f0 * N + i0, (f1 - 1) * N + i1
        xb = upcast(s, e)
        torch.mv(torch.mul(xb, xb, out=scratch[: e - s]), w, out=sq[s:e])
        torch.sqrt(sq[s:e], out=inv[s:e]).clamp_min_(EPS).reciprocal_()
        if f1 - f0 == 1:
            centre_sums[f0].addmv_(xb.t(), inv[s:e])
        else:
            centre_sums[f0:f1].unsqueeze(1).baddbmm_(inv[s:e].view(f1 - f0, 1, N), xb.view(f1 - f0, N, D))
    centres = frame_centres(sq, inv, centre_sums, w, T, N)
    if centres is None:
        return None
    unit_sq, g_t, g, frame_centre_sq = centres

    dot_v = torch.empty(T * N, **f32)
    dot_f = torch.empty(T * N, **f32)
    for f0, f1, i0, i1 in frame_blocks(T, N, rows):
        s, e = f0 * N + i0, (f1 - 1) * N + i1
        xb = upcast(s, e)
        torch.mv(xb, g, out=dot_v[s:e])
        if f1 - f0 == 1:
            torch.mv(xb, g_t[f0], out=dot_f[s:e])
        else:
            torch.bmm(xb.view(f1 - f0, N, D), g_t[f0:f1].unsqueeze(2), out=dot_f[s:e].view(f1 - f0, N, 1))
    return scores_from_dots(unit_sq, (dot_v * inv).view(T, N), (g * g).sum(), (dot_f * inv).view(T, N),
                            frame_centre_sq)
