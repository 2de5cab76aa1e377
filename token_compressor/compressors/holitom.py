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
  per clustered window, in window order) or switched off with `jitter=0`.

Where their code is ill-defined (exact ties in `topk`/`argmin`, whose order torch leaves open),
the choice here is fixed: the lower index wins. This matters where a set has one cluster:
`k = min(k, 1) = 1` makes every density `exp(0) + jitter`, which fp32 rounds into ties. They take norms and window means in the input
dtype; here everything is fp32, so a bf16 video gives the result of its fp32 upcast, rounded to
bf16 at the end (the golden data are fp32 runs).
"""
from __future__ import annotations

import math

import torch

from ..config import check_method_options
from ..registry import register_compressor
from .blocks import BLOCK_BYTES, fp32_blocks, one_hot_sums
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


def norms_and_next_cosine(features: torch.Tensor):
    """Row norms fp32 `[T, N]` and `cos` fp32 `[T-1, N]`, the cosine similarity of token i of
    frame t to token i of frame t+1, from `[T, N, D]` features of any dtype (in fp32).

    One row-wise dot product and the norms (the authors normalise, then take the cosine: the same
    value to ~1e-7, without two normalised copies of the video). Zero rows: similarity 0.
    """
    T, N, D = features.shape
    norms = torch.empty(T, N, device=features.device)
    dots = torch.empty(max(T - 1, 0), N, device=features.device)
    # row-wise dots as products into one reused buffer of a few frames, then sums: half the time
    # of a batched [1, D] x [D, 1] product on CPU, no fresh pages per block, and no whole-video
    # temporary for fp32 input (which comes as one block)
    step = max(1, BLOCK_BYTES // (4 * N * D))
    prod = torch.empty(min(step, max(T - 1, 0)), N, D, device=features.device)
    for t0, t1, x in fp32_blocks(features, overlap=1):
        norms[t0:t1] = torch.linalg.vector_norm(x, dim=-1)
        for a in range(0, t1 - t0 - 1, step):
            b = min(a + step, t1 - t0 - 1)
            p = torch.mul(x[a:b], x[a + 1:b + 1], out=prod[: b - a])
            dots[t0 + a:t0 + b] = p.sum(-1)
    n = norms.clamp_min(1e-12)
    return norms, dots / (n[:-1] * n[1:])


def static_run_lengths(cos: torch.Tensor, t: float) -> torch.Tensor:
    """int64 `[T-1, N]`: `run[s, i]` = number of consecutive frame pairs (s, s+1), (s+1, s+2), ...
    in which token i's cosine similarity `cos` `[T-1, N]` to the next frame is `> t`."""
    above = cos > t
    idx = torch.arange(cos.shape[0], device=cos.device).unsqueeze(1)
    first_below = torch.where(above, torch.full_like(idx, cos.shape[0]), idx)
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


def _cluster_merge(pts, valid, n_centres, k, noise, beta):
    """DPC-kNN clusters of each padded set, merged: centre -> `beta*centre + (1-beta)*mean`
    of the set's other points nearest to it (first minimum), or the centre if none.

    Args: pts fp32 `[B, M, D]`, valid bool `[B, M]`, n_centres / k int64 `[B]`, noise `[B, M]`.
    Returns (set index `[C]`, slot index `[C]`, merged fp32 `[C, D]`) for the C centres,
    set by set, slots ascending.
    """
    B, M, D = pts.shape
    is_centre, dist = dpc_knn(pts, valid, n_centres, k, noise)
    to_centre = dist.masked_fill(~is_centre.unsqueeze(1), float("inf")).argmin(-1)  # [B, M]
    member = valid & ~is_centre
    bi, mi = is_centre.nonzero(as_tuple=True)
    merged = pts[bi, mi]  # a copy: centres without members stay as they are
    if bool(member.any()):
        flat = (torch.arange(B, device=pts.device).unsqueeze(1) * M + to_centre)[member]
        acc = pts.new_zeros(B * M, D).index_add_(0, flat, pts[member])
        cnt = torch.bincount(flat, minlength=B * M)[bi * M + mi]  # [C]
        # only the centres with members are computed (where every point is a centre, as on
        # static videos at adj = 1, none is): the same elementwise values as over all of them
        has = (cnt > 0).nonzero().flatten()
        mean = acc[(bi * M + mi)[has]] / cnt[has].float().unsqueeze(1)
        merged[has] = beta * merged[has] + (1 - beta) * mean
    return bi, mi, merged


def _pack(valid: torch.Tensor):
    """bool `[B, N]` -> positions int64 `[B, M]` of each row's True entries first, ascending
    (M = most per row; padding clamped to N-1), and their validity `[B, M]`."""
    N = valid.shape[1]
    M = max(1, int(valid.sum(1).max()))
    pos = torch.sort(torch.where(valid, torch.arange(N, device=valid.device), N), dim=1).values[:, :M]
    return pos.clamp(max=N - 1), pos < N


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
        d: share of contextual tokens among a frame's kept dynamic tokens (`HOLITOM_D`): of
            its `ceil(n_dynamic*adj)`, `round(.. * (1-d))` are the largest norms (copies), the
            rest DPC-kNN centres among its other dynamic tokens, merged like the static ones.
            0 (the authors' default): norms only.
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
    if not (0.0 <= float(d) <= 1.0):
        raise ValueError(f"holitom: d (HOLITOM_D) must be in [0, 1], got {d!r}")
    if int(k) != k or k < 1:
        raise ValueError(f"holitom: k (HOLITOM_K) must be an integer >= 1, got {k!r}")
    if int(max_window_size) != max_window_size or max_window_size < 1:
        raise ValueError(f"holitom: max_window_size (HOLITOM_MAX_WINDOW_SIZE) must be an integer >= 1, "
                         f"got {max_window_size!r}")
    if positions not in POSITIONS:
        raise ValueError(f"holitom: positions must be one of {POSITIONS}, got {positions!r}")
    if not (float(jitter) >= 0.0 and math.isfinite(float(jitter))):
        raise ValueError(f"holitom: jitter must be a finite number >= 0, got {jitter!r}")
    check_method_options("holitom", {"k": k, "max_window_size": max_window_size})  # and the upper bounds that can work

    T, N, D = features.shape
    dev = features.device
    norms, cos = norms_and_next_cosine(features)  # [T, N], [T-1, N]
    if T > 1:
        run = static_run_lengths(cos, float(t))
    else:
        run = torch.zeros(0, N, dtype=torch.long, device=dev)
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

    # dynamic tokens, per frame: of ceil(n_dynamic * adj), round(.. * (1-d)) largest norms ("dominant")
    kept_w = [math.ceil((N - ns) * adj) for ns in n_static]
    dom_w = [round(kw * (1 - float(d))) for kw in kept_w]
    ctx_w = [kw - dw for kw, dw in zip(kept_w, dom_w)]
    dom_budget = torch.tensor(dom_w, device=dev)[win_of_frame]
    dominant = _rank_mask(norms.masked_fill(static_tn, float("-inf")), dom_budget) & ~static_tn  # [T, N]
    clusters = [round(ns * adj) for ns in n_static]  # Python round: half to even, as theirs
    todo = [w for w in range(W) if clusters[w] > 0]
    # the jitter, drawn as theirs: per window, its contextual sets frame by frame, then its static set
    sizes, dyn_draw, st_draw = [], [], []
    for w in range(W):
        if ctx_w[w] > 0:
            dyn_draw += range(len(sizes), len(sizes) + int(lengths[w]))
            sizes += [N - n_static[w] - dom_w[w]] * int(lengths[w])
        if clusters[w] > 0:
            st_draw.append(len(sizes))
            sizes.append(n_static[w])
    draws = jitter_draws(sizes, seed, float(jitter), "cpu")

    # contextual dynamic tokens: DPC-kNN centres among each frame's other dynamic tokens
    ctx_frames = (torch.tensor(ctx_w, device=dev)[win_of_frame] > 0).nonzero().flatten()
    x_frame = x_tok = x_rows = None
    if ctx_frames.numel():
        rest = ~static_tn[ctx_frames] & ~dominant[ctx_frames]
        pos_c, packed_valid = _pack(rest)
        pts = features[ctx_frames.unsqueeze(1), pos_c].float()
        n_c = torch.tensor(ctx_w, device=dev)[win_of_frame[ctx_frames]]
        noise = pad_jitter([draws[i] for i in dyn_draw], pos_c.shape[1], dev) if jitter > 0 else None
        bi, mi, x_rows = _cluster_merge(pts, packed_valid, n_c, n_c.clamp(max=int(k)), noise, beta)
        x_frame, x_tok = ctx_frames[bi], pos_c[bi, mi]

    # static tokens: window means, DPC-kNN clusters, each centre 0.6*itself + 0.4*mean(members)
    c_frame = c_tok = merged = None
    if todo:
        sel = torch.tensor(todo, device=dev)
        B = len(todo)
        # each window's static tokens packed to the front, ascending position
        pos_c, packed_valid = _pack(static_w[sel])
        M = pos_c.shape[1]
        # window means as one sparse product (sum over the window's frames in time order, then
        # / frames): no copy of the window's rows
        Lw = lengths[sel]
        Lmax = int(Lw.max())
        frame = starts[sel].view(B, 1, 1) + torch.arange(Lmax, device=dev).view(1, Lmax, 1)
        take = (torch.arange(Lmax, device=dev).view(1, Lmax, 1) < Lw.view(B, 1, 1)) & packed_valid.unsqueeze(1)
        out_row = (torch.arange(B, device=dev).view(B, 1, 1) * M + torch.arange(M, device=dev).view(1, 1, M))
        col = frame * N + pos_c.unsqueeze(1)
        rows_, cols = out_row.expand(B, Lmax, M)[take], col[take]
        pts = torch.zeros(B * M, D, device=dev)
        for t0, t1, x in fp32_blocks(features):
            inside = (cols >= t0 * N) & (cols < t1 * N)
            if not bool(inside.any()):
                continue
            r_in = rows_[inside]
            r0, r1 = int(r_in.min()), int(r_in.max()) + 1  # the windows overlapping the block
            pts[r0:r1] += one_hot_sums(r_in - r0, cols[inside] - t0 * N, r1 - r0, x.reshape(-1, D))
        pts = pts.view(B, M, D) / Lw.view(B, 1, 1).float()
        n_c = torch.tensor([clusters[w] for w in todo], device=dev)
        noise = pad_jitter([draws[i] for i in st_draw], M, dev) if jitter > 0 else None
        bi, mi, merged = _cluster_merge(pts, packed_valid, n_c, n_c.clamp(max=int(k)), noise, beta)
        c_frame = starts[sel][bi]  # a cluster sits at its centre's position in the window's first frame
        c_tok = pos_c[bi, mi]

    # output rows with their kind: 0 static (at the window's first frame), 1 dominant, 2 contextual
    dt, dn = dominant.nonzero(as_tuple=True)
    parts = [(dt, dn, features[dt, dn], 1)]
    if x_rows is not None:
        parts.append((x_frame, x_tok, x_rows.to(features.dtype), 2))
    if merged is not None:
        parts.append((c_frame, c_tok, merged.to(features.dtype), 0))
    dt = torch.cat([p[0] for p in parts])
    dn = torch.cat([p[1] for p in parts])
    rows = torch.cat([p[2] for p in parts])
    kind = torch.cat([torch.full_like(p[0], p[3]) for p in parts])
    K = dt.numel()
    if K == 0:
        mask = torch.zeros(T, N, dtype=torch.bool, device=dev)
        mask[0, 0] = True
        return mask, features[0, :1].clone()
    mask = torch.zeros(T * N, dtype=torch.bool, device=dev)
    if positions == "centres":
        where = dt * N + dn
        mask[where] = True
        return mask.view(T, N), rows[torch.argsort(where)]
    # authors' row order: per window, its static rows by position, then frame by frame its
    # dominant rows by position, then its contextual rows by position: key (t, kind, i)
    key = (3 * dt + kind) * N + dn
    mask[torch.linspace(0, T * N - 1, K, dtype=torch.long, device=dev)] = True
    return mask.view(T, N), rows[torch.argsort(key)]
