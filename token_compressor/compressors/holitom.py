"""HoliTom ("Holistic Token Merging for Fast Video Large Language Models"), outer-LLM merging as
the VidCom² authors' Qwen code does it, as a pure function over one video.

A dynamic programme splits the video into temporal windows that maximise the number of tokens
removed by merging "static" positions (cosine similarity to the same position in the next frame
above `t` in every frame pair of the window). A window's static positions are averaged over its
frames and clustered by DPC-kNN, each cluster becoming one token; every other ("dynamic") token
is pruned per frame by L2 norm (the authors' stand-in for ViT attention). Scoring is fp32 from any
input dtype; the returned rows are in the input dtype.

The authors' quirks, reproduced by default:
* `positions="linspace"`: their code returns `linspace(0, T*N-1, K)` as the kept rows of its K
  output rows (a placeholder "for compatibility"), so in the model the merged tokens take the
  M-RoPE positions (and Qwen3-VL deepstack features) of evenly spaced, unrelated tokens.
  `positions="centres"` puts every row where it comes from instead: a dynamic token at its own
  position, a static cluster at its centre's position in the window's first frame.
* the kept count is only about `ratio*T*N`: the ratio is re-scaled to
  `adj = min(ratio / ((T*N - reduced) / (T*N)), 1)` for the tokens the windows leave, and once
  the windows remove more than `(1-ratio)*T*N` tokens `adj` clamps to 1 and far fewer are kept.
  `ratio = 1` still merges static tokens.
* the DPC density gets `U[0,1)*1e-6` noise from the authors' global `torch.rand`, which only
  matters for exact density ties. Here it is drawn from a generator seeded with `seed` (one draw
  per window with static tokens, in window order, as theirs) or switched off with `jitter=0`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..registry import register_compressor
from .dpc import dpc_knn, jitter_draws, pad_jitter

POSITIONS = ("linspace", "centres")


def check_ratio(ratio: float, name: str = "ratio") -> float:
    r = float(ratio)
    if not (0.0 < r <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {ratio!r}")
    return r


def check_features(features: torch.Tensor, method: str) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise ValueError(f"{method}: features must be a [T, N, D] tensor, got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    if not features.is_floating_point():
        raise ValueError(f"{method}: features must be a floating-point tensor, got {features.dtype}")
    if min(features.shape) < 1:
        raise ValueError(f"{method}: features must have T, N, D >= 1, got shape {tuple(features.shape)}")


def static_run_lengths(x: torch.Tensor, t: float) -> torch.Tensor:
    """int64 `[T-1, N]`: `run[s, i]` = number of consecutive frame pairs (s, s+1), (s+1, s+2), ...
    in which token i's cosine similarity to the same position in the next frame is `> t`.

    The similarity is of the L2-normalised features (the authors normalise, then take the cosine).
    """
    T = x.shape[0]
    xn = F.normalize(x, dim=-1)
    above = F.cosine_similarity(xn[:-1], xn[1:], dim=-1) > t  # [T-1, N]
    idx = torch.arange(T - 1, device=x.device).unsqueeze(1)
    first_below = torch.where(above, torch.full_like(idx, T - 1), idx)
    next_below = torch.cummin(first_below.flip(0), dim=0).values.flip(0)
    return next_below - idx


def select_windows(run: torch.Tensor, num_frames: int, max_window_size: int):
    """The authors' dynamic programme over frames.

    A window of frames s..e (e > s) removes `(e-s) * #{i : run[s, i] >= e-s}` tokens (its static
    positions, kept once instead of e-s+1 times). `dp[e]` = most tokens removed by windows tiling
    frames 0..e, each window at most `max_window_size` frames; among equal totals the smallest last
    window wins (the authors replace only on a strictly larger total, trying sizes upwards).

    Returns (windows: list of (start, end) inclusive, in time order; reduced: int, `dp[T-1]`).
    """
    T = num_frames
    wmax = max(1, min(T, int(max_window_size)))
    # removed[e, w-1] = tokens removed by the window of w frames ending at e (0 for w = 1)
    removed = torch.zeros(T, wmax, dtype=torch.long)
    if T > 1 and wmax > 1:
        run = run.cpu()
        L = torch.arange(T)  # run length threshold = window size - 1
        # at_least[s, L] = #{i : run[s, i] >= L}
        hist = torch.zeros(T - 1, T, dtype=torch.long).scatter_add_(1, run, torch.ones_like(run))
        at_least = hist.flip(1).cumsum(1).flip(1)
        e = torch.arange(T).unsqueeze(1)
        w = torch.arange(1, wmax + 1).unsqueeze(0)
        s = e - w + 1
        ok = (s >= 0) & (w >= 2)
        gathered = at_least[s.clamp(min=0).clamp(max=T - 2), (w - 1).expand(T, wmax)]
        removed = torch.where(ok, (w - 1) * gathered, torch.zeros((), dtype=torch.long))
    dp = [0] * (T + 1)  # dp[e + 1] = best total for frames 0..e; dp[0] = 0 (no frames)
    best_size = [1] * T
    dp_t = torch.zeros(T + 1, dtype=torch.long)
    for e in range(T):  # each step depends on the previous ones; its inner work is one argmax
        n = min(e + 1, wmax)
        cand = dp_t[e + 1 - torch.arange(1, n + 1)] + removed[e, :n]
        j = int(torch.argmax(cand))  # first maximum: the smallest window among ties
        best_size[e] = j + 1
        dp[e + 1] = int(cand[j])
        dp_t[e + 1] = dp[e + 1]
    windows, e = [], T - 1
    while e >= 0:
        windows.append((e - best_size[e] + 1, e))
        e -= best_size[e]
    return windows[::-1], dp[T]


def adjusted_ratio(ratio: float, total: int, reduced: int) -> float:
    """The authors' re-scaled ratio for the tokens the windows leave, in their exact expression
    (Python doubles: `ratio*total/(total-reduced)` can round differently)."""
    if total > reduced:
        return min(ratio / ((total - reduced) / total), 1.0)
    return ratio


def _rank_mask(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """bool, same shape as `scores` `[B, M]`: the `counts[b]` largest of each row (ties: lower index)."""
    B, M = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranked = torch.arange(M, device=scores.device).unsqueeze(0) < counts.view(B, 1)
    return torch.zeros(B, M, dtype=torch.bool, device=scores.device).scatter_(1, order, ranked)


@register_compressor("holitom")
def holitom(
    features: torch.Tensor,
    ratio: float,
    *,
    t: float = 0.8,
    beta: float = 0.6,
    d: float = 0.0,
    k: int = 7,
    max_window_size: int = 1024,
    positions: str = "linspace",
    jitter: float = 1e-6,
    seed: int = 0,
):
    """HoliTom merging for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: retention ratio in (0, 1] (`R_RATIO`); the kept count is only about `ratio*T*N`
            (see the module docstring).
        t: static threshold on the frame-to-frame cosine similarity (`HOLITOM_T`).
        beta: weight of a cluster centre in its merged token (`HOLITOM_BETA`).
        d: share of contextual tokens among the dynamic ones (`HOLITOM_D`); only 0 (the
            authors' default: dynamic tokens are pruned by norm only) is implemented.
        k: DPC-kNN neighbours, `min(k, clusters)` per window (`HOLITOM_K`).
        max_window_size: longest temporal window in frames (`HOLITOM_MAX_WINDOW_SIZE`).
        positions: `"linspace"` (the authors' placeholder rows) or `"centres"` (true positions).
        jitter: scale of the uniform DPC density noise (0: none); `seed` seeds it.
    Returns:
        `(mask, merged)`: bool `[T, N]` with K kept rows, and `[K, D]` replacement features of
        the kept rows in ascending (row-major) order, in the input dtype. K >= 1: if nothing
        would be kept (tiny ratios on fully static videos), token 0 of frame 0 is kept as is.
    """
    check_features(features, "holitom")
    r = check_ratio(ratio)
    if not (-1.0 <= float(t) <= 1.0):
        raise ValueError(f"holitom: t (HOLITOM_T) must be a cosine similarity in [-1, 1], got {t!r}")
    if not (0.0 <= float(beta) <= 1.0):
        raise ValueError(f"holitom: beta (HOLITOM_BETA) must be in [0, 1], got {beta!r}")
    if float(d) != 0.0:
        raise ValueError(f"holitom: d (HOLITOM_D) = {d!r} is not supported; only 0.0 (the authors' "
                         "default: dynamic tokens pruned by norm, no contextual tokens) is implemented")
    if int(k) != k or k < 1:
        raise ValueError(f"holitom: k (HOLITOM_K) must be an integer >= 1, got {k!r}")
    if int(max_window_size) != max_window_size or max_window_size < 1:
        raise ValueError(f"holitom: max_window_size (HOLITOM_MAX_WINDOW_SIZE) must be an integer >= 1, "
                         f"got {max_window_size!r}")
    if positions not in POSITIONS:
        raise ValueError(f"holitom: positions must be one of {POSITIONS}, got {positions!r}")
    if not (float(jitter) >= 0.0 and math.isfinite(float(jitter))):
        raise ValueError(f"holitom: jitter must be a finite number >= 0, got {jitter!r}")

    T, N, D = features.shape
    dev = features.device
    x = features.float()
    run = static_run_lengths(x, float(t)) if T > 1 else torch.zeros(0, N, dtype=torch.long, device=dev)
    windows, reduced = select_windows(run, T, int(max_window_size))
    adj = adjusted_ratio(r, T * N, reduced)

    # per-window static positions; static_tn[t, i]: token i of frame t is merged over its window
    starts = torch.tensor([s for s, _ in windows], device=dev)
    lengths = torch.tensor([e - s + 1 for s, e in windows], device=dev)
    W = len(windows)
    if T > 1:
        static_w = run[starts.clamp(max=T - 2)] >= (lengths - 1).unsqueeze(1)
    else:
        static_w = torch.zeros(W, N, dtype=torch.bool, device=dev)
    static_w &= (lengths >= 2).unsqueeze(1)  # [W, N]
    win_of_frame = torch.repeat_interleave(torch.arange(W, device=dev), lengths)  # [T]
    static_tn = static_w[win_of_frame]
    n_static = static_w.sum(1).tolist()

    # dynamic tokens: the ceil(n_dynamic * adj) largest norms of each frame
    dyn_budget = torch.tensor([math.ceil((N - ns) * adj) for ns in n_static], device=dev)[win_of_frame]
    norms = x.norm(dim=-1).masked_fill(static_tn, float("-inf"))
    dynamic = _rank_mask(norms, dyn_budget) & ~static_tn  # [T, N]

    # static tokens: window means, DPC-kNN clusters, each centre 0.6*itself + 0.4*mean(members)
    clusters = [round(ns * adj) for ns in n_static]  # Python round: half to even, as theirs
    todo = [w for w in range(W) if clusters[w] > 0]
    centre_tn = torch.zeros(T, N, dtype=torch.bool, device=dev)  # at (window start, position)
    centre_rows = x.new_zeros(T, N, D)
    if todo:
        sel = torch.tensor(todo, device=dev)
        B = len(todo)
        # window means (sum over the window's frames in order, then / frames)
        sums = x.new_zeros(W, N, D).index_add_(0, win_of_frame, x)[sel]
        means = sums / lengths[sel].view(B, 1, 1).to(x.dtype)
        valid = static_w[sel]
        # pack each window's static tokens to the front, ascending position
        M = max(n_static[w] for w in todo)
        pos = torch.sort(torch.where(valid, torch.arange(N, device=dev), N), dim=1).values[:, :M]
        packed_valid = pos < N
        pos_c = pos.clamp(max=N - 1)
        pts = torch.gather(means, 1, pos_c.unsqueeze(-1).expand(B, M, D))
        n_c = torch.tensor([clusters[w] for w in todo], device=dev)
        k_w = n_c.clamp(max=int(k))
        noise = None
        if jitter > 0:
            noise = pad_jitter(jitter_draws([n_static[w] for w in todo], seed, float(jitter), "cpu"), M, dev)
        is_centre, dist = dpc_knn(pts, packed_valid, n_c, k_w, noise)
        # every other static token joins its nearest centre (first minimum)
        to_centre = dist.masked_fill(~is_centre.unsqueeze(1), float("inf")).argmin(-1)  # [B, M]
        member = packed_valid & ~is_centre
        flat = (torch.arange(B, device=dev).unsqueeze(1) * M + to_centre)[member]
        acc = pts.new_zeros(B * M, D).index_add_(0, flat, pts[member])
        cnt = torch.zeros(B * M, device=dev).index_add_(0, flat, torch.ones(flat.numel(), device=dev))
        cnt = cnt.view(B, M, 1)
        mean_members = acc.view(B, M, D) / cnt.clamp(min=1)
        merged_pts = torch.where(cnt > 0, beta * pts + (1 - beta) * mean_members, pts)
        bi, mi = is_centre.nonzero(as_tuple=True)
        frame = starts[sel][bi]
        tok = pos_c[bi, mi]
        centre_tn[frame, tok] = True
        centre_rows[frame, tok] = merged_pts[bi, mi]

    # authors' row order: per window, its static rows by position, then its dynamic rows frame by
    # frame. Key: static (start s, i) -> 2sN + i; dynamic (t, i) -> 2tN + N + i.
    out_tn = centre_tn | dynamic
    ti, ni = out_tn.nonzero(as_tuple=True)
    rows = torch.where(centre_tn[ti, ni].unsqueeze(1), centre_rows[ti, ni].to(features.dtype), features[ti, ni])
    K = ti.numel()
    if K == 0:
        mask = torch.zeros(T, N, dtype=torch.bool, device=dev)
        mask[0, 0] = True
        return mask, features[0, :1].clone()
    if positions == "centres":
        return out_tn, rows
    key = 2 * ti * N + ni + torch.where(centre_tn[ti, ni], 0, N)
    rows = rows[torch.argsort(key)]
    mask = torch.zeros(T * N, dtype=torch.bool, device=dev)
    mask[torch.linspace(0, T * N - 1, K, dtype=torch.long, device=dev)] = True
    return mask.view(T, N), rows
