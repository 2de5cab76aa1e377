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

import torch

# After rescaling, |x| < 2**MAX_EXPONENT: squares < 2**64, and a sum of 2**60 of them (rows x
# channels of any video) stays below fp32's 2**128. Rows whose norm falls under the scorers' eps
# after rescaling are ~1e-22 of the largest value or smaller.
MAX_EXPONENT = 32


def downscale_for_range(x: torch.Tensor) -> float:
    """The power of two (<= 1) that brings `max |x|` below `2**MAX_EXPONENT`; `x` finite, any shape."""
    lo, hi = torch.aminmax(x)
    amax = max(abs(float(lo)), abs(float(hi)))
    if not math.isfinite(amax):
        raise ValueError("features contain non-finite values (NaN or inf)")
    _, exponent = math.frexp(amax)  # amax < 2**exponent
    return 2.0 ** min(0, MAX_EXPONENT - exponent)
