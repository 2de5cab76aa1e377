"""How many tokens a compressor keeps, from the video's grid alone, where that is possible.

An engine that sizes the prompt before the vision encoder runs (vLLM: the video placeholder is
expanded in the request's processor, the encoder runs later in a worker) needs the kept count
`K(T, N, ratio, options)` without the features. Per built-in method:

| method | K from the grid? |
|---|---|
| `none` | yes: `T*N` |
| `random`, `uniform` | yes: `T * max(1, round(r*N))` |
| `evs` | yes: `max(N, int(T*N*r))` (vLLM's own count) |
| `dycoke` | yes: whole frames `N`, pruned frames `int((1-K)*N)`, the last frame of an odd `T` dropped (or whole with `keep_last_frame`) |
| `visionzip` | yes: `T * (dominant + contextual)` |
| `fastvid` | only with `fill_budget=True`: `T * int(N*r)`; the authors' caps drop a content-dependent share otherwise |
| `vidcom2` | no: the per-frame budgets follow frame uniqueness and sum to `r*T*N` only up to rounding and the `N` cap; with the `total` option the budgets are moved to sum to exactly `total`, here `max(T, min(T*N, round(r*T*N)))` |
| `holitom` | no: the windows remove a content-dependent number of tokens before the ratio applies |

`fixed_count_options` gives the options a caller must add for the count to hold (vidcom2's
`total`); `kept_count` raises `CountNotFixed` for a method (or setting) whose count depends on the
content. A method registered by a user has no known count: it is refused the same way.
"""
from __future__ import annotations

from typing import Any, Mapping

from .baselines import evs_retained_count
from .dycoke import dycoke_pruned_frames, dycoke_tokens_per_pruned_frame
from .visionzip import visionzip_counts


class CountNotFixed(ValueError):
    """The method keeps a number of tokens that depends on the video's content."""


def check_fixed_count(method: str, options: Mapping[str, Any]) -> None:
    """Raise `CountNotFixed` (naming the method and, where one exists, the setting that fixes it)
    unless `kept_count` is defined for `method` with `options`."""
    if method == "fastvid" and not options.get("fill_budget", False):
        raise CountNotFixed("fastvid keeps a content-dependent number of tokens (the authors' per-frame caps drop "
                            "part of each segment's budget); set TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET=1 to keep "
                            "exactly T*int(N*r)")
    if method == "holitom":
        raise CountNotFixed("holitom keeps a content-dependent number of tokens (its temporal windows merge "
                            "before the ratio applies), so it cannot size a prompt before the vision encoder runs")
    if method not in _COUNTS:
        raise CountNotFixed(f"compressor {method!r} has no kept count known from the grid alone "
                            f"(methods with one: {', '.join(sorted(_COUNTS))})")


def fixed_count_options(method: str, num_frames: int, tokens_per_frame: int, ratio: float,
                        options: Mapping[str, Any]) -> dict:
    """`options` plus what makes the method keep exactly `kept_count` tokens (vidcom2: `total`)."""
    out = dict(options)
    if method == "vidcom2":
        out["total"] = kept_count(method, num_frames, tokens_per_frame, ratio, options)
    return out


def kept_count(method: str, num_frames: int, tokens_per_frame: int, ratio: float,
               options: Mapping[str, Any]) -> int:
    """The number of tokens `select(features [T*N, D], T, ratio, method, **fixed_count_options(...))`
    keeps, for any features. Raises `CountNotFixed` where the content decides it."""
    check_fixed_count(method, options)
    T, N = int(num_frames), int(tokens_per_frame)
    return int(_COUNTS[method](T, N, float(ratio), options))


def _dycoke(T: int, N: int, r: float, options) -> int:
    if T == 1:
        return N
    whole, pruned, _ = dycoke_pruned_frames(T)
    last = N if options.get("keep_last_frame", False) and T % 2 else 0
    return whole.numel() * N + pruned.numel() * dycoke_tokens_per_pruned_frame(N, r, options.get("k")) + last


def _fastvid(T: int, N: int, r: float, options) -> int:
    r = options.get("retention_ratio") or r
    if r >= 1.0:
        return T * N
    if int(N * r) == 0:  # then fastvid falls back to content-dependent picks
        raise CountNotFixed(f"fastvid keeps int(N*r) = 0 tokens per frame at N={N}, r={r:g}: raise R_RATIO "
                            f"to at least {1 / N:.4g}")
    return T * int(N * r)


_COUNTS = {
    "none": lambda T, N, r, o: T * N,
    "random": lambda T, N, r, o: T * max(1, round(r * N)),
    "uniform": lambda T, N, r, o: T * max(1, round(r * N)),
    "evs": lambda T, N, r, o: evs_retained_count(N, T, r),
    "dycoke": _dycoke,
    "visionzip": lambda T, N, r, o: T * sum(visionzip_counts(N, r, o.get("dominant_ratio", 0.6))),
    "fastvid": _fastvid,
    "vidcom2": lambda T, N, r, o: max(T, min(T * N, round(r * T * N))),
}
