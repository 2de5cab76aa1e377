"""The compiled passes behind `cpu_scores.py` (numba, imported on first use).

Every pass takes a chunk range `lo..hi-1` and writes only its chunks' outputs, so that chunk
ranges can run on different threads (`nogil`) and the result does not depend on the split. Input
`x` is `[M, D]` C-contiguous: bf16 as its uint16 bits (converted in registers: a shift, exact), or
fp32; `scale` (fp32) is a power of two (exact; 1 except for features whose fp32 sums would
overflow, `ranges.py`). Each pass handles two or four rows per sweep over the channels: one row
at a time, the per-channel accumulators' L1 traffic, not memory, bounded the speed (measured on
the 2-core AMD EPYC: 5.6 GB/s from memory for one row, 10-13 GB/s for four, one thread, where a
plain compiled sum of the same bf16 input streams at 26 GB/s).
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic, overload
from llvmlite import ir

from .torch_scores import EPS as _EPS

# reassociation lets LLVM vectorise the row reductions; contraction allows FMA. Not `nnan`/`ninf`:
# NaN and inf must propagate into the sums, which is how the input check sees them.
FASTMATH = {"reassoc", "contract"}
EPS = np.float32(_EPS)


def _probe():
    return 0


def _cache_available() -> bool:
    """numba's disk cache needs a writable folder (beside this file, or numba's per-user one);
    without one, `cache=True` raises at decoration. Then every process compiles (~2 s)."""
    try:
        njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


jit = njit(nogil=True, fastmath=FASTMATH, cache=_cache_available())


@intrinsic
def _bf16_to_f32(typingctx, bits):
    """The fp32 whose top 16 bits are `bits` (uint16): a bf16 value, exactly."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return sig, codegen


def value(x, i, c):
    """Element `[i, c]` of `x` as fp32 (compiled only: the overload below)."""
    raise NotImplementedError("compiled only")


@overload(value, inline="always")
def _value(x, i, c):
    if x.dtype == types.uint16:  # bf16 bits
        return lambda x, i, c: _bf16_to_f32(x[i, c])
    if x.dtype == types.float32:
        return lambda x, i, c: x[i, c]
    return None


@jit
def variance_pass(lo, hi, x, rows, shift, scale, sum_y, sum_y2):
    """Chunks lo..hi-1 of `rows` rows each: per channel, sum_y[k] = Σ y and sum_y2[k] = Σ y²
    over chunk k's rows, y = x * scale - shift. Four rows per sweep of the accumulators (which
    live in L1, not in registers: a quarter of the load/store traffic of one row at a time)."""
    M, D = x.shape
    for k in range(lo, hi):
        a = sum_y[k]
        b = sum_y2[k]
        a[:] = 0.0
        b[:] = 0.0
        i = k * rows
        end = min(M, (k + 1) * rows)
        while i + 4 <= end:
            for c in range(D):
                m = shift[c]
                y0 = value(x, i, c) * scale - m
                y1 = value(x, i + 1, c) * scale - m
                y2 = value(x, i + 2, c) * scale - m
                y3 = value(x, i + 3, c) * scale - m
                a[c] += (y0 + y1) + (y2 + y3)
                b[c] += (y0 * y0 + y1 * y1) + (y2 * y2 + y3 * y3)
            i += 4
        while i < end:
            for c in range(D):
                y = value(x, i, c) * scale - shift[c]
                a[c] += y
                b[c] += y * y
            i += 1


@jit
def centre_pass(lo, hi, x, N, per, w, scale, sq, inv, parts):
    """Chunks lo..hi-1; chunk k = t*nc + j is tokens j*per .. (j+1)*per-1 of frame t (nc chunks
    per frame). Per row i: sq[i] = Σ_c w_c x_ic², inv[i] = 1 / max(sqrt(sq[i]), EPS); per
    chunk: parts[k] = Σ_i x_i inv[i], every channel (x times `scale` throughout). Two rows at a
    time: the second sweep finds them in L1."""
    D = x.shape[1]
    nc = (N + per - 1) // per
    one = np.float32(1.0)
    for k in range(lo, hi):
        t = k // nc
        j = k - t * nc
        acc = parts[k]
        acc[:] = 0.0
        i = t * N + j * per
        end = t * N + min(N, (j + 1) * per)
        while i < end:
            if i + 1 < end:
                s0 = np.float32(0.0)
                s1 = np.float32(0.0)
                for c in range(D):
                    v0 = value(x, i, c) * scale
                    v1 = value(x, i + 1, c) * scale
                    s0 += w[c] * (v0 * v0)
                    s1 += w[c] * (v1 * v1)
                r0 = one / max(np.sqrt(s0), EPS)
                r1 = one / max(np.sqrt(s1), EPS)
                sq[i] = s0
                sq[i + 1] = s1
                inv[i] = r0
                inv[i + 1] = r1
                for c in range(D):
                    acc[c] += (value(x, i, c) * scale) * r0 + (value(x, i + 1, c) * scale) * r1
                i += 2
            else:
                s0 = np.float32(0.0)
                for c in range(D):
                    v0 = value(x, i, c) * scale
                    s0 += w[c] * (v0 * v0)
                r0 = one / max(np.sqrt(s0), EPS)
                sq[i] = s0
                inv[i] = r0
                for c in range(D):
                    acc[c] += (value(x, i, c) * scale) * r0
                i += 1


@jit
def dot_pass(lo, hi, x, rows, N, g, g_t, scale, dot_v, dot_f):
    """Chunks lo..hi-1 of `rows` rows each: dot_v[i] = (x_i * scale)·g, dot_f[i] = (x_i *
    scale)·g_t[i // N]; `scale` is applied to the sums (a power of two: exact, and a dot with a
    unit-bounded centre cannot overflow where the squared norms did not). Two rows of one frame
    at a time, sharing the centres' loads."""
    M, D = x.shape
    for k in range(lo, hi):
        i = k * rows
        end = min(M, (k + 1) * rows)
        while i < end:
            gf = g_t[i // N]
            if i + 1 < end and (i + 1) // N == i // N:
                a0 = np.float32(0.0)
                b0 = np.float32(0.0)
                a1 = np.float32(0.0)
                b1 = np.float32(0.0)
                for c in range(D):
                    v0 = value(x, i, c)
                    v1 = value(x, i + 1, c)
                    a0 += v0 * g[c]
                    b0 += v0 * gf[c]
                    a1 += v1 * g[c]
                    b1 += v1 * gf[c]
                dot_v[i] = a0 * scale
                dot_f[i] = b0 * scale
                dot_v[i + 1] = a1 * scale
                dot_f[i + 1] = b1 * scale
                i += 2
            else:
                a0 = np.float32(0.0)
                b0 = np.float32(0.0)
                for c in range(D):
                    v0 = value(x, i, c)
                    a0 += v0 * g[c]
                    b0 += v0 * gf[c]
                dot_v[i] = a0 * scale
                dot_f[i] = b0 * scale
                i += 1


@jit
def add_groups(parts, group, out):
    """out[q] = Σ_{j < group} parts[q*group + j], added in that order (one thread: small)."""
    D = parts.shape[1]
    for q in range(out.shape[0]):
        o = out[q]
        o[:] = 0.0
        for j in range(group):
            p = parts[q * group + j]
            for c in range(D):
                o[c] += p[c]


@jit
def evs_pass(lo, hi, x, T, N, per, sq, dot):
    """EVS's sums, accumulated in fp64: products of fp32 values are exact there and the sums'
    error (~D 2^-53 relatively) is far below the torch path's, so the band around the cut is the
    torch path's rounding alone (`cpu_scores.evs_band`). (fp32 blocks of 64 channels added in
    fp64 vectorised worse and took 2.4x as long.) Chunks lo..hi-1, chunk j = tokens j*per ..
    (j+1)*per-1 through every frame (token-major, so that the previous frame's rows of the same
    tokens are still in cache): per row of frame t, sq[t, i] = Σ x²; for t >= 1, dot[t, i] =
    x[t, i]·x[t-1, i]."""
    D = x.shape[1]
    for j in range(lo, hi):
        i0 = j * per
        i1 = min(N, i0 + per)
        for t in range(T):
            for i in range(i0, i1):
                r = t * N + i
                s = 0.0
                if t == 0:
                    for c in range(D):
                        v = np.float64(value(x, r, c))
                        s += v * v
                else:
                    p = r - N
                    d = 0.0
                    for c in range(D):
                        v = np.float64(value(x, r, c))
                        s += v * v
                        d += v * np.float64(value(x, p, c))
                    dot[t, i] = d
                sq[t, i] = s
