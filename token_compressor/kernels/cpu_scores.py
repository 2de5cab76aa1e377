"""VidCom²'s per-token scores on the CPU as three compiled passes (numba), each reading the
features once: the bandwidth path that `auto` picks for CPU tensors in bf16 or fp32. And EVS's
dissimilarities as one compiled pass that screens (`evs_screen`; `evs_scores.evs_keep` re-checks
the decisions it cannot settle on the torch path, so EVS's selection stays vLLM's, bitwise).

Why compiled. The torch path (`torch_scores.py`) runs each pass as 3-5 torch operations per
cache-sized block (an upcast, a shift, a product, one or two matrix-vector sums), each a sweep over
the block: at T=16 N=256 D=3584 bf16 on 2 threads it read 0.13 of the machine's measured read
bandwidth. Here each pass reads two or four rows at a time, converts them from bf16 (a 16-bit
shift of the bits: exact) or fp32 in registers, and does all of that pass's arithmetic on them
there, so the features are read from memory once per pass (the passes are dependent: each needs
the previous one's sums over the whole video; `torch_scores._scores`). Measured on the 2-core AMD
EPYC, T=64 bf16: 21-26 ms for the three passes against 82-102 ms for the torch path.

The same algebra as the torch path (its docstring), the same shifted variance, the same centres,
the same overflow handling (a `scale`, a power of two, and None on overflow) and the same fused
input check (`ranges.vouch_for_input`, from the variance pass's sums). What differs is only the
fp32 summation order: the row sums of squares and the dots are vectorised reductions (numba's
`fastmath` reassociation, nothing else: NaN and inf propagate as in IEEE arithmetic), so scores
agree with the torch path to fp32 rounding (tested within 2e-5, and the selections on the golden
cases).

Threads. The work is cut into fixed chunks (rows for the variance and dot passes, (frame, token
range) for the centres), each writing its own partial sums, which are then added in chunk order:
the result does not depend on how many threads ran the chunks. The chunks run on the caller's
torch thread count (`threads.kernel_threads`) through a process-wide pool of Python threads; the
compiled functions release the GIL. No numba threading layer is involved, so nothing here
depends on which one a machine has (numba documents its GNU OpenMP layer as unsafe in a forked
child, and its workqueue layer as unsafe under concurrent callers); the pool is made anew in a
forked child. The small torch operations between the passes run on one torch thread: a torch
OpenMP worker left spinning after them took the core a pass needed (T=64: 38 ms with torch on 2
threads around the passes, 21 ms with torch on 1).
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import torch

from .ranges import at_a_safe_scale, vouch_for_input
from .threads import kernel_threads, selection_threads
from .torch_scores import frame_centres, kept_channel_weights, scores_from_dots, variance_from_sums, variance_shift, \
    vouch_from_variance_sums

# dtypes the compiled passes read directly (bf16 through its bits); others use the torch path
DTYPES = (torch.bfloat16, torch.float32)
# Rows per chunk of the variance and dot passes, and the most tokens per chunk of the centre pass
# (the unit of work a thread takes): the partial sums, one or two fp32 [D] rows per chunk, stay
# below 2 % of a bf16 input, and a video of 8 frames of 256 tokens still makes 8 chunks.
CHUNK_ROWS = 256


@lru_cache(maxsize=1)
def numba_import_error() -> Optional[str]:
    """None when the compiled passes are available, else why not (checked once)."""
    try:
        _kernels()
    except Exception as e:  # numba missing, or a broken install / LLVM raising something else
        return f"{type(e).__name__}: {e}"
    return None


@lru_cache(maxsize=1)
def _kernels():
    """The compiled passes (`_cpu_passes`), imported on first use so that `import
    token_compressor` does not pay for numba; compiled then, or loaded from numba's disk cache."""
    from . import _cpu_passes

    return _cpu_passes


_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0
_POOL_PID = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool with at least `workers` threads; a new one after a fork (a forked
    child inherits the executor object but not its threads) or when more threads are asked for
    (the old one finishes what it was given and is dropped)."""
    global _POOL, _POOL_SIZE, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid() or _POOL_SIZE < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="token-compressor-kernel")
            _POOL_SIZE, _POOL_PID = workers, os.getpid()
        return _POOL


def _run(kernel, chunks: int, *args) -> None:
    """`kernel(lo, hi, *args)` over chunks 0..chunks-1 split into contiguous spans, one per
    thread (the caller runs the first span)."""
    workers = max(1, min(kernel_threads(), chunks))
    if workers == 1:
        kernel(0, chunks, *args)
        return
    bounds = [chunks * k // workers for k in range(workers + 1)]
    pool = _pool(workers - 1)
    futures = [pool.submit(kernel, bounds[k], bounds[k + 1], *args) for k in range(1, workers)]
    kernel(bounds[0], bounds[1], *args)
    for f in futures:
        f.result()


def _as_array(x: torch.Tensor) -> np.ndarray:
    """The numpy array the passes read, sharing `x`'s memory: bf16 as its uint16 bits."""
    x = x.detach()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


def _rows(features: torch.Tensor) -> torch.Tensor:
    """`[T, N, D]` -> the C-contiguous `[T*N, D]` the passes read (a copy only when not already)."""
    T, N, D = features.shape
    return features.reshape(T * N, D).contiguous()


def _scores(x: torch.Tensor, T: int, N: int, scale: float) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """`torch_scores._scores` with the compiled passes: the scores of `x * scale` `[T*N, D]`
    (contiguous, bf16 or fp32, CPU), or None when a channel variance or a row norm overflowed."""
    k = _kernels()
    M, D = x.shape
    arr = _as_array(x)
    f32 = dict(dtype=torch.float32)
    s = np.float32(scale)
    shift = variance_shift(x, scale)

    chunks = -(-M // CHUNK_ROWS)
    sum_parts = torch.empty(2, chunks, D, **f32)
    _run(k.variance_pass, chunks, arr, CHUNK_ROWS, shift.numpy(), s, sum_parts[0].numpy(), sum_parts[1].numpy())
    sums = torch.empty(2, D, **f32)
    k.add_groups(sum_parts.view(2 * chunks, D).numpy(), chunks, sums.numpy())
    del sum_parts
    if scale == 1.0:
        vouch_from_variance_sums(sums[0], sums[1], shift, M)
    var = variance_from_sums(sums[0], sums[1], M)
    if not bool(torch.isfinite(var).all()):
        return None
    w = kept_channel_weights(var)

    per_frame = -(-N // CHUNK_ROWS)
    per = -(-N // per_frame)
    sq = torch.empty(M, **f32)
    inv = torch.empty(M, **f32)
    parts = torch.empty(T * per_frame, D, **f32)
    _run(k.centre_pass, T * per_frame, arr, N, per, w.numpy(), s, sq.numpy(), inv.numpy(), parts.numpy())
    if per_frame == 1:
        centre_sums = parts
    else:
        centre_sums = torch.empty(T, D, **f32)
        k.add_groups(parts.numpy(), per_frame, centre_sums.numpy())
    del parts
    centres = frame_centres(sq, inv, centre_sums, w, T, N)
    if centres is None:
        return None
    unit_sq, g_t, g, frame_centre_sq = centres

    dot_v = torch.empty(M, **f32)
    dot_f = torch.empty(M, **f32)
    _run(k.dot_pass, chunks, arr, CHUNK_ROWS, N, g.numpy(), g_t.numpy(), s, dot_v.numpy(), dot_f.numpy())
    return scores_from_dots(unit_sq, (dot_v * inv).view(T, N), (g * g).sum(), (dot_f * inv).view(T, N),
                            frame_centre_sq)


def supports(features: torch.Tensor) -> bool:
    """True when the compiled passes can score `features` as they are: a CPU tensor in bf16 or
    fp32 (numba importable is checked separately, `numba_import_error`)."""
    return features.device.type == "cpu" and features.dtype in DTYPES


def vidcom2_scores_cpu(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """VidCom² similarity scores of one video, as `torch_scores.vidcom2_scores_torch` returns
    them (same contract, fp32 rounding apart).

    Args:
        features: `[T, N, D]`, bf16 or fp32, on the CPU (a non-contiguous tensor is copied once).
    Returns:
        `(s_video, s_frame)`, each fp32 `[T, N]`.
    """
    if not supports(features):
        raise ValueError(f"the compiled CPU kernels score CPU tensors in bfloat16 or float32, got "
                         f"{features.dtype} on {features.device}")
    T, N, D = features.shape
    x = _rows(features)
    # torch's own small operations between the passes on one thread (module docstring)
    with selection_threads(features.device):
        return at_a_safe_scale(x, lambda scale: _scores(x, T, N, scale), "VidCom² scores")


# EVS: tokens per chunk through all frames. One frame's chunk of a bf16 D=3584 video is 458 KiB, so
# the previous frame's rows of the same tokens are read from L2, not memory.
EVS_TOKEN_CHUNK = 64
# A row whose sum of squares is below this has subnormal fp32 squares on the torch path, whose
# rounding is then not bounded relative to the norm: its pairs are re-checked (`unsure`). At or
# above OVERFLOW_SQUARES the torch path's fp32 sums overflow and it rescales: the screen steps
# aside (None) and the torch path scores the video.
TINY_SQUARES = 2.0**-100
OVERFLOW_SQUARES = 2.0**120


def evs_band(D: int) -> float:
    """A bound on |d~ - d| between the dissimilarity `evs_screen` returns (d~) and the one the
    torch path returns (d, F.cosine_similarity's operations in fp32) for any pair of rows of `D`
    channels whose sums of squares lie in [TINY_SQUARES, OVERFLOW_SQUARES).

    u = 2^-24, gamma_n = n u / (1 - n u). The torch path sums D products in fp32 in some order:
    error <= gamma_D Σ|a_k b_k| <= gamma_D |a||b| (Cauchy-Schwarz), whatever the order. It
    divides each row by its norm first (norm relative error eta <= gamma_D / 2 + 2u; the unit
    components and their products carry 3u more), so |c_torch - c| <= gamma_D + 2 eta + 5u <=
    2 gamma_D + 9u. The screen accumulates in fp64 (products of fp32 values exact, sums within
    D 2^-53 relatively: below u for D < 2^29) and rounds d~ to fp32 once (u); `1 - c_torch`
    rounds once more (u). So |d~ - d| <= 2 gamma_D + 13u to first order; the factor 1.05 covers
    the rest (every first-order term is below 5e-4). D = 3584: 4.5e-4."""
    u = 2.0**-24
    gamma = D * u / (1.0 - D * u)
    return 1.05 * (2.0 * gamma + 13.0 * u)


def evs_screen(features: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """EVS's dissimilarities from one compiled pass, to within `evs_band` of the torch path's.

    Args:
        features: `[T, N, D]`, bf16 or fp32, CPU (`supports`).
    Returns:
        `(d~, unsure)`: fp32 `[T, N]` (`FIRST_FRAME_DISSIMILARITY` on frame 0, exactly as the
        torch path) and bool `[T, N]`, the pairs outside the bound (a row with a tiny sum of
        squares) that the caller must compute exactly; or None when the input is not finite or
        its fp32 sums of squares would overflow (the torch path refuses or rescales).
        Vouches for `select`'s input check from the sums of squares, as the torch path does.
    """
    from .evs_scores import COSINE_EPS, FIRST_FRAME_DISSIMILARITY

    T, N, D = features.shape
    x = _rows(features)
    f64 = dict(dtype=torch.float64)
    sq = torch.empty(T, N, **f64)
    dot = torch.zeros(T, N, **f64)
    chunks = -(-N // EVS_TOKEN_CHUNK)
    with selection_threads(features.device):  # torch on one thread around the pass (module docstring)
        _run(_kernels().evs_pass, chunks, _as_array(x), T, N, EVS_TOKEN_CHUNK, sq.numpy(), dot.numpy())
        top_sq = float(sq.max())
        if not (math.isfinite(top_sq) and top_sq < OVERFLOW_SQUARES):  # NaN propagates: not finite
            return None
        top = math.sqrt(top_sq)
        # max|x| <= the largest row norm, >= it over sqrt(D) (fp64 sums: exact enough)
        vouch_for_input(True, top / D ** 0.5, top)
        norms = sq.sqrt().clamp_min_(COSINE_EPS)
        d = torch.full((T, N), FIRST_FRAME_DISSIMILARITY, dtype=torch.float32)
        d[1:] = (1.0 - dot[1:] / (norms[1:] * norms[:-1])).float()
        tiny = sq < TINY_SQUARES
        unsure = torch.zeros(T, N, dtype=torch.bool)
        unsure[1:] = tiny[1:] | tiny[:-1]
    return d, unsure


def warn_unavailable_once(problem: str) -> None:
    """One warning per process when `auto` falls back to the torch path (same scores, slower)."""
    if not _WARNED.is_set():
        _WARNED.set()
        warnings.warn(f"token_compressor: the compiled CPU kernels are unavailable ({problem}); VidCom²'s "
                      f"and EVS's scores run on the slower torch path (same selections)", RuntimeWarning, stacklevel=3)


_WARNED = threading.Event()
