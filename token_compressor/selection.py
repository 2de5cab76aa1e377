"""`select`: one video's visual tokens in, kept row indices, per-frame budgets and (for merging
compressors) the kept tokens' new features out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .config import ConfigError, parse_ratio
from .kernels.ranges import InputUnverified, normalising_exponent, scanning_input, times_power_of_two
from .kernels.threads import selection_threads
from .registry import get_compressor, scans_input


@dataclass(frozen=True)
class Selection:
    """What a compressor kept of one video.

    Attributes:
        keep: int64 `[K]`, kept row indices into the `[T*N, D]` features, strictly ascending
            (temporal, then spatial order preserved).
        budgets: int64 `[T]`, kept tokens per frame; `budgets.sum() == keep.numel()`.
        num_frames: T.
        tokens_per_frame: N.
        method: the compressor's registered name.
        ratio: the retention ratio asked for (the achieved one is `kept_fraction`).
        features: `[K, D]` in the input dtype, the replacement features of the kept rows in
            `keep` order, for merging compressors; None for pruning ones (the kept rows keep
            their own features).
    """

    keep: torch.Tensor
    budgets: torch.Tensor
    num_frames: int
    tokens_per_frame: int
    method: str
    ratio: float
    features: Optional[torch.Tensor] = None

    @property
    def merged(self) -> bool:
        """True when the compressor replaced the kept tokens' features."""
        return self.features is not None

    def kept_features(self, features: torch.Tensor) -> torch.Tensor:
        """`[K, D]`: what the kept tokens carry, given the video's `[T*N, D]` input features
        (the merged rows of a merging compressor, else the kept input rows)."""
        return self.features if self.features is not None else features[self.keep]

    @property
    def num_tokens(self) -> int:
        """T*N, the number of tokens before compression."""
        return self.num_frames * self.tokens_per_frame

    @property
    def num_kept(self) -> int:
        return int(self.keep.numel())

    @property
    def kept_fraction(self) -> float:
        return self.num_kept / self.num_tokens

    def mask(self) -> torch.Tensor:
        """bool `[T*N]`, True at kept rows."""
        m = torch.zeros(self.num_tokens, dtype=torch.bool, device=self.keep.device)
        m[self.keep] = True
        return m


def validate_features(features, num_frames) -> tuple:
    """Check one video's features `[T*N, D]` and return `(T, N, D)`; raise ValueError otherwise."""
    return _validate(features, num_frames)[:3]


def _validate(features, num_frames) -> tuple:
    """`(T, N, D, max |features|)` of a valid video (see `validate_features`)."""
    return (*_check_shape(features, num_frames), _check_values(features))


def _check_shape(features, num_frames) -> tuple:
    """`(T, N, D)`: everything about a video that does not read its values."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features must be a torch.Tensor of shape [T*N, D], got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(
            f"features must have rank 2, [T*N, D] (one video, frame-major); got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    if features.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"features of dtype {features.dtype} are not supported; "
                         "expected float16, bfloat16, float32 or float64")
    if features.device.type == "meta":
        raise ValueError("features are on the meta device (shapes only, no values): load the weights first")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    rows, dim = features.shape
    if rows == 0 or dim == 0:
        raise ValueError(f"features are empty: shape {tuple(features.shape)}")
    if rows % num_frames:
        raise ValueError(
            f"features have {rows} rows, not divisible by num_frames={num_frames}; "
            f"expected T*N rows with N tokens per frame"
        )
    return num_frames, rows // num_frames, dim


def _check_values(features: torch.Tensor) -> float:
    """`max |features|`, or a ValueError counting the non-finite values."""
    # min/max propagate NaN and expose inf: one read, no temporary (~2 ms on a [8192, 3584]
    # video where an elementwise isfinite mask costs ~80 ms); count exactly only when wrong.
    lo, hi = torch.aminmax(features)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(features)).sum())
        raise ValueError(f"features contain {bad} non-finite value(s) (NaN or inf)")
    return max(abs(float(lo)), abs(float(hi)))


def select(features: torch.Tensor, num_frames: int, ratio: float, method: str = "vidcom2", **options) -> Selection:
    """Choose which visual tokens of one video to keep.

    Args:
        features: `[T*N, D]`, any float dtype and device; row `t*N + i` is token i of frame t.
        num_frames: T (for Qwen-VL a temporal patch, `grid_t`).
        ratio: retention ratio in (0, 1].
        method: a registered compressor name (`available_compressors()`).
        **options: passed to the compressor (e.g. `seed` for `random`, `backend` for `vidcom2`).
    Returns:
        Selection with `keep` (ascending kept rows), `budgets` (per frame) and, for a merging
        compressor, `features` (`[K, D]`, the kept rows' replacement features).
    Raises:
        ValueError: bad shape, empty or non-finite features, ratio outside (0, 1], unknown method,
            or a compressor output that breaks the contract (named in the message).
    """
    T, N, D = _check_shape(features, num_frames)
    try:
        r = parse_ratio(ratio, "ratio")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    fn = get_compressor(method)
    name = str(method).strip().lower()
    # a selection is a discrete choice: no gradient flows through it; on CPU it runs on one
    # thread (kernels/threads.py: measured faster at every thread count)
    with torch.no_grad(), selection_threads(features.device):
        out = _run(fn, name, features.detach(), T, N, D, r, options)
    mask, merged = _check_output(out, name, features, T, N, D)
    return Selection(
        keep=mask.reshape(-1).nonzero().squeeze(1),
        budgets=mask.sum(dim=1),
        num_frames=T,
        tokens_per_frame=N,
        method=name,
        ratio=r,
        features=merged,
    )


def _run(fn, name: str, features: torch.Tensor, T: int, N: int, D: int, r: float, options: dict):
    """The compressor's output for a checked video: finite features (a ValueError counting the
    non-finite values otherwise), brought into range by a power of two when their magnitude is
    extreme (kernels/ranges.py), merged rows put back at the input's scale.

    On CPU a compressor registered with `scans_input` is called on the unchecked video first:
    its scorer's first pass vouches for the values from its own sums (`ranges.vouch_for_input`),
    which spares the memory-bound selection a whole read of the video. When it cannot (a value
    that is not finite, a magnitude near the range's ends, a backend that does not scan), the
    full check runs and decides as before; the compressor runs again only if it must."""
    if features.device.type == "cpu" and scans_input(name):
        with scanning_input() as scan:
            try:
                out = fn(features.reshape(T, N, D), r, **options)
            except InputUnverified:
                out = None
            except Exception:
                if not scan.verified:
                    _check_values(features)  # bad input gets its own error, not the compressor's
                raise
        if scan.verified:
            return out
        exponent = normalising_exponent(_check_values(features))
        if out is not None and exponent == 0:
            return out
    else:
        exponent = normalising_exponent(_check_values(features))
    # decisions relative to scale: a video of extreme magnitude is brought into the range where
    # every compressor's arithmetic is exact up to scale (kernels/ranges.py), by a power of two
    out = fn(times_power_of_two(features, -exponent).reshape(T, N, D), r, **options)
    if exponent and isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], torch.Tensor):
        out = (out[0], times_power_of_two(out[1], exponent))  # merged rows back at the input's scale
    return out


def _check_output(out, name: str, features: torch.Tensor, T: int, N: int, D: int):
    """A compressor's output -> (mask bool [T, N], merged [K, D] or None); a ValueError naming
    the compressor when it is malformed (see `registry` for the contract)."""
    merged = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"compressor {name!r} returned a tuple of {len(out)} items; expected a bool mask "
                             f"{(T, N)} or (mask, features [K, {D}])")
        out, merged = out
    mask = out
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (T, N):
        raise ValueError(
            f"compressor {name!r} must return a bool mask of shape {(T, N)}, got "
            f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
        )
    K = int(mask.sum())
    if K == 0:
        raise ValueError(f"compressor {name!r} kept no token of a video of {T}x{N} tokens; it must keep at least one")
    if merged is None:
        return mask, None
    if not isinstance(merged, torch.Tensor) or tuple(merged.shape) != (K, D):
        raise ValueError(
            f"compressor {name!r} returned merged features of shape {tuple(getattr(merged, 'shape', ()))} "
            f"({type(merged).__name__}); expected [K, D] = {(K, D)}, one row per kept token in ascending order"
        )
    if merged.dtype != features.dtype:
        raise ValueError(f"compressor {name!r} returned merged features of dtype {merged.dtype}; "
                         f"expected the input's dtype {features.dtype}")
    if merged.device != features.device:
        raise ValueError(f"compressor {name!r} returned merged features on {merged.device}; "
                         f"expected the input's device {features.device}")
    # a min/max reduction (NaN propagates, inf shows) reads the rows once with no temporary;
    # `isfinite(merged).all()` would materialise a bool tensor of the rows' size first
    lo, hi = torch.aminmax(merged)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError(f"compressor {name!r} returned {int((~torch.isfinite(merged)).sum())} non-finite "
                         "merged feature value(s)")
    return mask, merged.detach()
