"""Keeping finite features finite through the scores.

VidCom² and EVS only look at features through row normalisation (and, for VidCom², a ranking of
channel variances), so multiplying a whole video by a power of two changes no selection: the
multiplication is exact in binary floating point, and every intermediate scales exactly with it.
Their fp32 sums of squares, however, overflow for finite features of magnitude ~1e19 (and bf16
has fp32's range), and an overflowed norm silently turns every token into "the same token".
The scorers therefore detect an overflow from their own small intermediates (channel variances,
row norms: no extra pass over the input when nothing overflows) and then score again at the
scale given here. Ordinary inputs are never rescaled, so their scores are bit-for-bit unchanged.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Optional, TypeVar

import torch

# After rescaling, |x| < 2**MAX_EXPONENT: squares < 2**64, and a sum of 2**60 of them (rows x
# channels of any video) stays below fp32's 2**128. Rows whose norm falls under the scorers' eps
# after rescaling are ~1e-22 of the largest value or smaller.
MAX_EXPONENT = 32
R = TypeVar("R")


def downscale_for_range(x: torch.Tensor) -> float:
    """The power of two (<= 1) that brings `max |x|` below `2**MAX_EXPONENT`; `x` finite, any shape."""
    lo, hi = torch.aminmax(x)
    amax = max(abs(float(lo)), abs(float(hi)))
    if not math.isfinite(amax):
        raise ValueError("features contain non-finite values (NaN or inf)")
    _, exponent = math.frexp(amax)  # amax < 2**exponent
    return 2.0 ** min(0, MAX_EXPONENT - exponent)


def at_a_safe_scale(x: torch.Tensor, score: Callable[[float], Optional[R]], what: str) -> R:
    """`score(1.0)`, or where that overflowed fp32 (returned None) `score(downscale_for_range(x))`:
    the scorers whose results are invariant to a power-of-two scale of `x` (VidCom², EVS) run
    unscaled whenever they can, which keeps every ordinary input bit for bit as it was.
    Raises RuntimeError naming `what` when the rescaled run overflows too (not expected)."""
    out = score(1.0)
    if out is None:
        out = score(downscale_for_range(x))
    if out is None:
        raise RuntimeError(f"{what} overflow even after rescaling the features; please report this")
    return out


# ---------------------------------------------------------------------------------------------
# Every compressor, through `select`: a video whose largest magnitude lies outside
# [2**MIN_EXPONENT, 2**MAX_EXPONENT) is multiplied by a power of two that brings it into [0.5, 1)
# before the compressor sees it, and merged rows are multiplied back. Inside that range every
# compressor's fp32 arithmetic neither overflows (squares and their sums, see above) nor
# underflows (squares of the largest values stay ~2**-34 and above, far over fp32's 2**-126, and
# row norms far over the scorers' eps), so inputs there are left untouched: the golden cases
# and every ordinary video run bit for bit as before. Outside it (fp32 x1e19 overflowed DyCoke's,
# VisionZip's and FastVID's norms; x1e-30 underflowed them; float64 x1e150 overflowed the fp32
# upcast) the result is exactly the result of the same video at its normalised scale.
# ---------------------------------------------------------------------------------------------

MIN_EXPONENT = -16


def normalising_exponent(amax: float) -> int:
    """`e` such that `amax * 2**-e` lies in [0.5, 1) when `amax` (the largest |value| of a video,
    finite, > 0) is outside [2**MIN_EXPONENT, 2**MAX_EXPONENT); 0 (leave it alone) otherwise and
    for an all-zero video."""
    if not math.isfinite(amax):
        raise ValueError("features contain non-finite values (NaN or inf)")
    if amax == 0.0:
        return 0
    _, exponent = math.frexp(amax)  # amax = m * 2**exponent, m in [0.5, 1)
    return exponent if not (MIN_EXPONENT < exponent <= MAX_EXPONENT) else 0


def times_power_of_two(x: torch.Tensor, k: int) -> torch.Tensor:
    """`x * 2**k` in `x`'s dtype, exact while the results stay normal numbers: applied in steps
    each of which is a power of two the dtype can hold (float16 holds only 2**-14 .. 2**15; a
    float64 step of 2**1100 would not exist as a Python float either)."""
    if k == 0:
        return x
    step = math.frexp(torch.finfo(x.dtype).max)[1] - 2  # 2**±step is a normal number of the dtype
    out = x
    while k:
        s = max(-step, min(step, k))
        out = out * (2.0 ** s)
        k -= s
    return out


# ---------------------------------------------------------------------------------------------
# The input check fused into a scorer's first pass. `select` must refuse non-finite features and
# normalise videos of extreme magnitude (above), which takes a min/max of the whole input: one
# more read of a video that a memory-bound scorer reads only a few times (8-15 % of VidCom²'s
# time). A scorer whose first pass reads every value anyway (VidCom²'s channel variances, EVS's
# row norms) can vouch for the input from its own small results instead: NaN and inf propagate
# into those sums, and they bound max |x| from both sides. When the bounds prove the video finite
# and inside the range that needs no rescale, `select` skips its own pass; otherwise the scorer
# stops and `select` runs the full check and the old path (same errors, same rescale).
# ---------------------------------------------------------------------------------------------


class InputUnverified(Exception):
    """Raised by `vouch_for_input` inside `scanning_input`: the scorer's first pass could not
    prove the input finite and in range; `select` checks it the full way and calls again."""


class InputScan:
    """`select`'s side of a fused input check: `verified` once a scorer vouched for the input."""

    def __init__(self):
        self.verified = False


_SCAN: ContextVar[Optional[InputScan]] = ContextVar("token_compressor_input_scan", default=None)


@contextmanager
def scanning_input():
    """Within the block, the first `vouch_for_input` call of a scorer checks the input (see
    above) and records it in the yielded `InputScan`; outside it those calls do nothing."""
    scan = InputScan()
    token = _SCAN.set(scan)
    try:
        yield scan
    finally:
        _SCAN.reset(token)


def surely_in_range(finite: bool, amax_lower: float, amax_upper: float) -> bool:
    """Whether a video is finite with `max |x|` in [2**MIN_EXPONENT, 2**MAX_EXPONENT) (no
    rescale needed), given `finite` and bounds `amax_lower <= max |x| <= amax_upper` computed in
    fp32 (relative rounding error far below the factor of 2 kept on each side)."""
    return (bool(finite) and math.isfinite(amax_upper) and amax_lower >= 2.0 ** (MIN_EXPONENT + 1)
            and amax_upper < 2.0 ** (MAX_EXPONENT - 1))


def vouch_for_input(finite: bool, amax_lower: float, amax_upper: float) -> None:
    """Called by a scorer after its first pass over the unscaled input, with what that pass
    proved: `finite` (no NaN or inf: they propagate into its sums) and bounds on `max |x|`.
    Outside `scanning_input`, or once the input is verified, it does nothing. Inside, it marks
    the input verified when `surely_in_range`, and raises `InputUnverified` otherwise."""
    scan = _SCAN.get()
    if scan is None or scan.verified:
        return
    if not surely_in_range(finite, amax_lower, amax_upper):
        raise InputUnverified()
    scan.verified = True
