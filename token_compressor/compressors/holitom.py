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
from ..kernels.machine import block_rows
from ..kernels.torch_scores import frame_blocks
from .dpc import dpc_knn, jitter_draws, pad_jitter

POSITIONS = ("linspace", "centres")
# Rows per block of the norms-and-cosines pass: None sizes them from the machine's L2 (three fp32
# buffers, `machine.block_rows`); an int overrides (tests move the block boundaries).
BLOCK_ROWS = None
# The DPC-kNN merges run on groups of sets (windows, frames) whose fp32 points take at most this
# much, and at most 1/GROUP_SHARE of the input's bytes (at least one set per group): holding every
# window's fp32 points at once, with the merge's temporaries, took about the input's size again.
GROUP_BYTES = 16 << 20
GROUP_SHARE = 32
# Rows per gathered chunk when the kept input rows are copied into the output.
COPY_ROWS = 1024


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
    The video is read once, in cache-sized blocks of tokens through the frames (as EVS reads it),
    each upcast once into one of two reused fp32 buffers; every norm and dot is a row-wise
    operation, so the values do not depend on the blocks.
    """
    T, N, D = features.shape
    f32 = dict(dtype=torch.float32, device=features.device)
    norms = torch.empty(T, N, **f32)
    dots = torch.empty(max(T - 1, 0), N, **f32)
    rows = BLOCK_ROWS if BLOCK_ROWS is not None else block_rows(4 * D, buffers=3)
    rows = max(1, min(rows, T * N))
    upcast = features.dtype != torch.float32
    bufs = (torch.empty(rows, D, **f32), torch.empty(rows, D, **f32)) if upcast else None
    prod = torch.empty(rows, D, **f32)
    before = None  # the previous block: the same tokens, the frames just before
    for j, (f0, f1, i0, i1) in enumerate(frame_blocks(T, N, rows, token_major=True)):
        n = i1 - i0
        r = (f1 - f0) * n
        x = features[f0:f1, i0:i1].reshape(r, D)
        if upcast:
            x = bufs[j % 2][:r].copy_(x)
        torch.linalg.vector_norm(x, dim=-1, out=norms[f0:f1, i0:i1].view(-1))
        if f0 > 0:  # (f0 - 1, f0) across the block boundary
            torch.sum(torch.mul(before[-n:], x[:n], out=prod[:n]), dim=-1, out=dots[f0 - 1, i0:i1])
        if r > n:  # (f, f + 1) inside the block
            p = torch.mul(x[:-n], x[n:], out=prod[: r - n])
            torch.sum(p.view(-1, n, D), dim=-1, out=dots[f0: f1 - 1, i0:i1])
        before = x
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


def _merge_in_groups(points, valid, n_centres, k, noise, beta, D: int, budget: int, place) -> None:
    """`_cluster_merge` over B padded sets, a group of sets at a time whose fp32 points
    `[b, M, D]` take at most `budget` bytes (at least one set): `points(g0, g1)` builds sets
    g0..g1-1, `place(set index [C], slot index [C], merged fp32 [C, D])` takes each group's
    centres (set by set, slots ascending). Every set is clustered on its own at the same padded
    width M, as in one batch: only one group's points and merge temporaries exist at a time.

    Args: valid bool `[B, M]`, n_centres / k int64 `[B]`, noise `[B, M]` or None.
    """
    B, M = valid.shape
    per = max(1, budget // (M * D * 4))
    for g0 in range(0, B, per):
        g1 = min(B, g0 + per)
        bi, mi, merged = _cluster_merge(points(g0, g1), valid[g0:g1], n_centres[g0:g1], k[g0:g1],
                                        None if noise is None else noise[g0:g1], beta)
        place(bi + g0, mi, merged)


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

    flat = features.reshape(T * N, D)
    budget = max(1, min(GROUP_BYTES, flat.numel() * flat.element_size() // GROUP_SHARE))
    ctx_frames = (torch.tensor(ctx_w, device=dev)[win_of_frame] > 0).nonzero().flatten()
    sel = torch.tensor(todo, dtype=torch.long, device=dev)
    first = starts[sel]

    # Every output row is written once, in place. Rows per frame are known before any clustering
    # (a window's static clusters sit at its first frame, `clusters[w]` of them; a contextual
    # frame has `ctx_w` centres), so in the authors' order, key (t, kind, i), each part's rows
    # have their places at once; in `centres` order (t, i) the merged rows wait for the sort.
    dt, dn = dominant.nonzero(as_tuple=True)
    n_stat_f = torch.zeros(T, dtype=torch.long, device=dev)
    n_stat_f[first] = torch.tensor([clusters[w] for w in todo], dtype=torch.long, device=dev)
    n_dom_f = dominant.sum(1)
    n_ctx_f = torch.zeros(T, dtype=torch.long, device=dev)
    n_ctx_f[ctx_frames] = torch.tensor(ctx_w, device=dev)[win_of_frame[ctx_frames]]
    per_frame = n_stat_f + n_dom_f + n_ctx_f
    K = int(per_frame.sum())
    if K == 0:
        mask = torch.zeros(T, N, dtype=torch.bool, device=dev)
        mask[0, 0] = True
        return mask, features[0, :1].clone()
    out = torch.empty(K, D, dtype=features.dtype, device=dev)
    off = torch.cumsum(per_frame, 0) - per_frame  # first row of each frame, in the authors' order
    linspace = positions == "linspace"
    held = []  # (frame, token, rows) of merged rows, in `centres` order only

    def placer(frame_of_set, pos_c, kind_offset):
        def place(bi, mi, merged):
            f = frame_of_set[bi]
            if not linspace:
                held.append((f, pos_c[bi, mi], merged.to(features.dtype)))
                return
            # rank of each centre among its set's, set by set in slot order (= token order)
            starts_ = torch.searchsorted(bi, bi, right=False)
            rank = torch.arange(bi.numel(), device=dev) - starts_
            out[off[f] + kind_offset(f) + rank] = merged.to(features.dtype)
        return place

    # contextual dynamic tokens: DPC-kNN centres among each frame's other dynamic tokens
    if ctx_frames.numel():
        rest = ~static_tn[ctx_frames] & ~dominant[ctx_frames]
        pos_x, valid_x = _pack(rest)
        n_c = n_ctx_f[ctx_frames]
        noise = pad_jitter([draws[i] for i in dyn_draw], pos_x.shape[1], dev) if jitter > 0 else None

        def frame_points(g0, g1):
            return flat[ctx_frames[g0:g1].unsqueeze(1) * N + pos_x[g0:g1]].float()

        _merge_in_groups(frame_points, valid_x, n_c, n_c.clamp(max=int(k)), noise, beta, D, budget,
                         placer(ctx_frames, pos_x, lambda f: n_stat_f[f] + n_dom_f[f]))

    # static tokens: window means, DPC-kNN clusters, each centre 0.6*itself + 0.4*mean(members)
    if todo:
        # each window's static tokens packed to the front, ascending position
        pos_s, valid_s = _pack(static_w[sel])
        Lw = lengths[sel]

        def window_means(g0, g1):
            # the sum over the window's frames in time order, then / frames (0 at padding): a
            # gather of one frame's static rows per window and step
            L = Lw[g0:g1]
            pts = torch.zeros(g1 - g0, pos_s.shape[1], D, device=dev)
            for step in range(int(L.max())):
                b = (L > step).nonzero().flatten()
                pts[b] += flat[(first[g0:g1][b] + step).unsqueeze(1) * N + pos_s[g0:g1][b]].float()
            return pts.masked_fill_(~valid_s[g0:g1].unsqueeze(2), 0.0).div_(L.view(-1, 1, 1).float())

        n_c = n_stat_f[first]
        noise = pad_jitter([draws[i] for i in st_draw], pos_s.shape[1], dev) if jitter > 0 else None
        # a cluster sits at its centre's position in the window's first frame
        _merge_in_groups(window_means, valid_s, n_c, n_c.clamp(max=int(k)), noise, beta, D, budget,
                         placer(first, pos_s, lambda f: 0))

    mask = torch.zeros(T * N, dtype=torch.bool, device=dev)
    if linspace:
        # authors' row order: per window, its static rows by position, then frame by frame its
        # dominant rows by position, then its contextual rows by position: key (t, kind, i)
        mask[torch.linspace(0, T * N - 1, K, dtype=torch.long, device=dev)] = True
        rank = torch.arange(dt.numel(), device=dev) - (torch.cumsum(n_dom_f, 0) - n_dom_f)[dt]
        dest = off[dt] + n_stat_f[dt] + rank
    else:
        frames = torch.cat([dt] + [h[0] for h in held])
        where = frames * N + torch.cat([dn] + [h[1] for h in held])
        mask[where] = True
        dest = torch.empty_like(where)
        dest[torch.argsort(where)] = torch.arange(K, device=dev)
        at = dt.numel()
        for _, _, rows in held:
            out.index_copy_(0, dest[at:at + rows.shape[0]], rows)
            at += rows.shape[0]
        held.clear()
    # the kept input rows, gathered a chunk at a time
    src = dt * N + dn
    for c0 in range(0, src.numel(), COPY_ROWS):
        c1 = min(c0 + COPY_ROWS, src.numel())
        out.index_copy_(0, dest[c0:c1], flat.index_select(0, src[c0:c1]))
    return mask.view(T, N), out
