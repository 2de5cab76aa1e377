"""VidCom²'s per-token scores as Triton kernels: three passes over the features, fp32 throughout.

Same algebra as `torch_scores` (see its docstring): with x̂ = x / max(|x|, eps) on the kept
channels and c a centre, `|x̂ - c|² = |x̂|² - 2 (x·c) / max(|x|, eps) + |c|²`, and the centres
are weighted column sums of the raw rows. No normalised features, channel gather or difference
tensors exist; the input is read in its own dtype and upcast tile by tile in registers.

Passes over the `[M, D]` features (M = T*N), each a read of the whole input:
  1. `_channel_stats_kernel`: per-channel mean and M2 (sum of squared deviations) of row chunks,
     shifted by the first row, column-tile programs, Welford/Chan merging of tile statistics. Chunks are merged on the host
     (Chan again, `[chunks, D]` fp32, tiny); `topk` of the variances picks the kept channels,
     handed to the next passes as a 0/1 fp32 weight vector over D.
  2. `_norms_frame_sums_kernel`: per-row squared norm on the kept channels, then (same program,
     same rows, read again straight after, so from cache) the rows weighted by 1/max(|x|, eps)
     summed per column: partial frame centres.
  3. `_scores_kernel`: per-row dots with the video centre and the row's own frame centre, the
     distance expansion and the 5-scale Gaussian sum; writes `s_video`, `s_frame` fp32 `[T, N]`.

Passes 2 and 3 run a `(T, cdiv(N, BLOCK_M))` grid, so a program's rows lie in one frame for any N.
Under `TRITON_INTERPRET=1` (CPU tensors) the same kernels run in numpy; there every value is
converted to fp32 right after `tl.load`, which the kernels do anyway (bf16 arithmetic is wrong in
the interpreter), and tiles are chosen big because the interpreter costs per program and per op.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .ranges import downscale_for_range
from .torch_scores import EPS

# The interpreter refuses blocks of more than 2**20 elements.
MAX_BLOCK_ELEMENTS = 2**20


@triton.jit
def _channel_stats_kernel(
    x_ptr, mean_ptr, m2_ptr, M, D, stride_m, rows_per_program,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (column tile, row chunk): mean and M2 of `BLOCK_D` channels over the chunk's rows.

    Works on `y = x - x[0]` (the statistics of `y` are those of `x`, means shifted by `x[0]`):
    on a channel of mean 300 and deviation 1e-3 an fp32 mean of `x` is off by a few percent of
    the deviation (ulp(300) = 3e-5), while `y` is subtracted exactly (Sterbenz) and its mean is of
    the order of the deviation. Each `[BLOCK_M, BLOCK_D]` tile's own mean and M2 are exact
    two-pass values from registers; tiles are merged with Chan's formula. Never
    `E[x²] - E[x]²`: it cancels catastrophically on the large-mean, low-variance channels VidCom²
    keeps."""
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    row_start = pid_c * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, M)
    shift = tl.load(x_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    count = tl.zeros([BLOCK_D], dtype=tl.float32)  # rows merged so far (a vector keeps loop types fixed)
    mean = tl.zeros([BLOCK_D], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    for r0 in range(row_start, row_end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < row_end
        ok = row_ok[:, None] & col_ok[None, :]
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * stride_m + cols[None, :], mask=ok, other=0.0)
        x = tl.where(ok, x.to(tl.float32) - shift[None, :], 0.0)  # masked rows stay out of the sums
        n_tile = tl.sum(row_ok.to(tl.float32), axis=0)
        tile_mean = tl.sum(x, axis=0) / n_tile
        dev = tl.where(ok, x - tile_mean[None, :], 0.0)
        tile_m2 = tl.sum(dev * dev, axis=0)
        total = count + n_tile
        delta = tile_mean - mean
        mean = mean + delta * (n_tile / total)
        m2 = m2 + tile_m2 + delta * delta * (count * n_tile / total)
        count = total
    out = pid_c * D + cols
    tl.store(mean_ptr + out, mean, mask=col_ok)
    tl.store(m2_ptr + out, m2, mask=col_ok)


@triton.jit
def _row_tile(x_ptr, rows, row_ok, stride_m, d0, D, BLOCK_D: tl.constexpr):
    """The `[BLOCK_M, BLOCK_D]` tile of rows `rows` (int64) at channels `d0...`, upcast to fp32,
    zero outside `row_ok` and `D`; with its channel indices and their mask."""
    cols = d0 + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    x = tl.load(x_ptr + rows[:, None] * stride_m + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    return x, cols, col_ok


@triton.jit
def _norms_frame_sums_kernel(
    x_ptr, w_ptr, sq_ptr, inv_ptr, part_ptr, N, D, stride_m, eps,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (frame t, row block j): `|x|²` on the kept channels and `1/max(|x|, eps)` of its
    rows, then `Σ_rows x / max(|x|, eps)` on the kept channels into `part[t, j, :]`.

    The second loop re-reads the rows the first just read: a `[BLOCK_M, D]` slab is a few hundred
    KiB, so it comes from cache, and the pass costs about one read of the input from memory."""
    t = tl.program_id(0)
    j = tl.program_id(1)
    i = j * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = i < N
    rows = (t * N + i).to(tl.int64)
    sq = tl.zeros([BLOCK_M], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        x, cols, col_ok = _row_tile(x_ptr, rows, row_ok, stride_m, d0, D, BLOCK_D)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
        sq += tl.sum(x * x * w[None, :], axis=1)
    # IEEE-rounded sqrt and division, as torch computes them: on the GPU `tl.sqrt` and `/` are
    # approximations, and every score depends on this factor.
    inv = tl.div_rn(1.0, tl.maximum(tl.sqrt_rn(sq), eps))
    tl.store(sq_ptr + rows, sq, mask=row_ok)
    tl.store(inv_ptr + rows, inv, mask=row_ok)
    inv = tl.where(row_ok, inv, 0.0)
    n_blocks = tl.num_programs(1)
    part_row = (t * n_blocks + j).to(tl.int64) * D
    for d0 in range(0, D, BLOCK_D):
        x, cols, col_ok = _row_tile(x_ptr, rows, row_ok, stride_m, d0, D, BLOCK_D)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
        tl.store(part_ptr + part_row + cols, tl.sum(x * inv[:, None], axis=0) * w, mask=col_ok)


@triton.jit
def _gaussian_sum(d2):
    # Σ_a exp(-d2 / (2a)), a in {1/8, 1/4, 1/2, 1, 2}; the factors -1/(2a) are exact in fp32.
    return tl.exp(d2 * -4.0) + tl.exp(d2 * -2.0) + tl.exp(d2 * -1.0) + tl.exp(d2 * -0.5) + tl.exp(d2 * -0.25)


@triton.jit
def _scores_kernel(
    x_ptr, g_ptr, gt_ptr, g_sq_ptr, gt_sq_ptr, sq_ptr, inv_ptr, s_video_ptr, s_frame_ptr,
    N, D, stride_m,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (frame t, row block j): `x·g` and `x·g_t` of its rows (centres are zero outside
    the kept channels, so no weights are needed), then the distances and Gaussian sums."""
    t = tl.program_id(0)
    j = tl.program_id(1)
    i = j * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = i < N
    rows = (t * N + i).to(tl.int64)
    dot_v = tl.zeros([BLOCK_M], dtype=tl.float32)
    dot_f = tl.zeros([BLOCK_M], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        x, cols, col_ok = _row_tile(x_ptr, rows, row_ok, stride_m, d0, D, BLOCK_D)
        g = tl.load(g_ptr + cols, mask=col_ok, other=0.0)
        gt = tl.load(gt_ptr + t.to(tl.int64) * D + cols, mask=col_ok, other=0.0)
        dot_v += tl.sum(x * g[None, :], axis=1)
        dot_f += tl.sum(x * gt[None, :], axis=1)
    sq = tl.load(sq_ptr + rows, mask=row_ok, other=0.0)
    inv = tl.load(inv_ptr + rows, mask=row_ok, other=0.0)
    unit_sq = sq * inv * inv  # |x̂|²: 1, except 0 for an all-zero row on the kept channels
    g_sq = tl.load(g_sq_ptr)
    gt_sq = tl.load(gt_sq_ptr + t)
    d2_video = tl.maximum(unit_sq - 2.0 * (dot_v * inv) + g_sq, 0.0)
    d2_frame = tl.maximum(unit_sq - 2.0 * (dot_f * inv) + gt_sq, 0.0)
    tl.store(s_video_ptr + rows, _gaussian_sum(d2_video), mask=row_ok)
    tl.store(s_frame_ptr + rows, _gaussian_sum(d2_frame), mask=row_ok)


@dataclass(frozen=True)
class Tiles:
    """Launch geometry. `stats_rows`/`stats_cols`: pass-1 tile; `rows_per_program`: pass-1 row
    chunk; `rows`/`cols`: pass-2/3 tile (rows of one frame x channels)."""

    stats_rows: int
    stats_cols: int
    rows_per_program: int
    rows: int
    cols: int
    num_warps: int = 4


def default_tiles(T: int, N: int, D: int, device: torch.device) -> Tiles:
    """GPU: tiles of 16-64 rows x 128-256 channels and about a thousand pass-1 programs (several
    per SM), untuned. CPU (the interpreter): as few programs as the 2**20-element block limit
    allows, because the interpreter's cost is per program and per op, not per element."""
    M = T * N
    if device.type != "cpu":
        stats_rows, stats_cols = 64, 128
        col_tiles = triton.cdiv(D, stats_cols)
        chunks = max(1, min(triton.cdiv(M, stats_rows), triton.cdiv(1024, col_tiles)))
        per_program = triton.cdiv(triton.cdiv(M, chunks), stats_rows) * stats_rows
        return Tiles(stats_rows, stats_cols, per_program, 16, 256)
    cols = min(triton.next_power_of_2(D), 4096)
    stats_rows = max(1, min(triton.next_power_of_2(M), MAX_BLOCK_ELEMENTS // cols))
    rows = max(1, min(triton.next_power_of_2(N), MAX_BLOCK_ELEMENTS // cols))
    return Tiles(stats_rows, cols, triton.cdiv(M, stats_rows) * stats_rows, rows, cols)


def _check_tiles(tiles: Tiles) -> None:
    for name in ("stats_rows", "stats_cols", "rows", "cols"):
        v = getattr(tiles, name)
        if v < 1 or v & (v - 1):
            raise ValueError(f"Tiles.{name}={v} must be a power of two")
    if tiles.rows_per_program < 1:
        raise ValueError(f"Tiles.rows_per_program={tiles.rows_per_program} must be positive")
    for a, b in (("stats_rows", "stats_cols"), ("rows", "cols")):
        if getattr(tiles, a) * getattr(tiles, b) > MAX_BLOCK_ELEMENTS:
            raise ValueError(f"Tiles.{a} x Tiles.{b} exceeds {MAX_BLOCK_ELEMENTS} elements per block")


def channel_variance_triton(x: torch.Tensor, tiles: Tiles) -> torch.Tensor:
    """Population variance of every channel of `x` `[M, D]` (row stride `x.stride(0)`, unit
    column stride) -> fp32 `[D]`. Pass 1, then Chan's merge of the row chunks on the host (the
    chunk means are of `x - x[0]`, which leaves the variance unchanged)."""
    M, D = x.shape
    per = tiles.rows_per_program
    chunks = triton.cdiv(M, per)
    mean = torch.empty(chunks, D, dtype=torch.float32, device=x.device)
    m2 = torch.empty(chunks, D, dtype=torch.float32, device=x.device)
    _channel_stats_kernel[(triton.cdiv(D, tiles.stats_cols), chunks)](
        x, mean, m2, M, D, x.stride(0), per,
        BLOCK_M=tiles.stats_rows, BLOCK_D=tiles.stats_cols, num_warps=tiles.num_warps,
    )
    counts = (M - torch.arange(chunks, device=x.device) * per).clamp_(max=per).float().unsqueeze(1)
    total_mean = (counts * mean).sum(0) / M
    total_m2 = m2.sum(0) + (counts * (mean - total_mean).square()).sum(0)
    return (total_m2 / M).clamp_min_(0.0)


def vidcom2_scores_triton(features: torch.Tensor, tiles: Optional[Tiles] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """VidCom² similarity scores of one video, computed by the Triton kernels.

    Args:
        features: `[T, N, D]`, fp32/bf16/fp16, on a CUDA device (or on CPU under
            `TRITON_INTERPRET=1`). Need not be contiguous across rows; channels are made unit-stride.
        tiles: launch geometry (default: `default_tiles`).
    Returns:
        `(s_video, s_frame)`, each fp32 `[T, N]`, as `vidcom2_scores_torch` returns them.
    """
    T, N, D = features.shape
    x = features.reshape(T * N, D)
    if x.stride(1) != 1:
        x = x.contiguous()
    dev = x.device
    tiles = tiles or default_tiles(T, N, D, dev)
    _check_tiles(tiles)

    if dev.type == "cuda":  # Triton launches on the current device, which may not be x's
        with torch.cuda.device(dev):
            return _in_range_scores(x, T, N, D, tiles)
    return _in_range_scores(x, T, N, D, tiles)


def _in_range_scores(x: torch.Tensor, T: int, N: int, D: int, tiles: Tiles) -> Tuple[torch.Tensor, torch.Tensor]:
    """`_scores`, again on a power-of-two-rescaled copy when fp32 sums of squares overflowed
    (finite features of magnitude ~1e19; see `ranges.py`). Checking costs one synchronisation."""
    s_video, s_frame, in_range = _scores(x, T, N, D, tiles)
    if bool(in_range):
        return s_video, s_frame
    s_video, s_frame, in_range = _scores(x * downscale_for_range(x), T, N, D, tiles)
    if not bool(in_range):
        raise RuntimeError("VidCom² scores overflow even after rescaling the features; please report this")
    return s_video, s_frame


def _scores(x: torch.Tensor, T: int, N: int, D: int, tiles: Tiles):
    """The three passes on `x` `[T*N, D]` (unit column stride) -> fp32 `[T, N]` twice, and a bool
    tensor: False when a channel variance or a squared row norm overflowed fp32. Host-side
    work is on `[D]`- and `[T, D]`-sized tensors only, with no synchronisation."""
    dev = x.device
    var = channel_variance_triton(x, tiles)
    w = torch.zeros(D, dtype=torch.float32, device=dev)
    w[torch.topk(var, int(D * 0.5), largest=False).indices] = 1.0

    f32 = dict(dtype=torch.float32, device=dev)
    sq = torch.empty(T, N, **f32)
    inv = torch.empty(T, N, **f32)
    blocks = triton.cdiv(N, tiles.rows)
    part = torch.empty(T, blocks, D, **f32)
    grid = (T, blocks)
    _norms_frame_sums_kernel[grid](
        x, w, sq, inv, part, N, D, x.stride(0), EPS,
        BLOCK_M=tiles.rows, BLOCK_D=tiles.cols, num_warps=tiles.num_warps,
    )
    frame_sums = part.sum(1)  # [T, D]
    frame_centres = frame_sums / N
    video_centre = frame_sums.sum(0) / (T * N)
    s_video = torch.empty(T, N, **f32)
    s_frame = torch.empty(T, N, **f32)
    _scores_kernel[grid](
        x, video_centre, frame_centres, video_centre.square().sum().reshape(1),
        frame_centres.square().sum(1), sq, inv, s_video, s_frame, N, D, x.stride(0),
        BLOCK_M=tiles.rows, BLOCK_D=tiles.cols, num_warps=tiles.num_warps,
    )
    return s_video, s_frame, torch.isfinite(var).all() & torch.isfinite(sq).all()


def kernels_are_interpreted() -> bool:
    """True when the kernels were decorated under `TRITON_INTERPRET=1` (they then run on CPU
    tensors). Triton reads the variable once, when this module is imported."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_scores_kernel, InterpretedFunction)
