"""FastVID ("FastVID: Dynamic Density Pruning for Fast Video Large Language Models", DySeg +
STPrune + DTM) as the VidCom² authors' Qwen code does it, as a pure function over one video.

DySeg cuts the video into segments at the `dyseg_c - 1` lowest frame-to-frame similarities (of the
normalised frame means) and wherever the similarity is below `dyseg_tau`. Each segment gets
`int(N*r)` tokens per frame, a share `stprune_d` of them "context", the rest "salient"; inside a
segment the budgets go to the last frame of every run of frames with similarity `>= dyseg_ignore`.
Salient tokens are a frame's largest L2 norms (the authors' stand-in for ViT attention; copies).
Context tokens are DPC-kNN density peaks among the frame's other tokens; each becomes
`w*itself + (1-w)*mean(assigned)`, `w = max(1/(count+1), dtm_beta)`, where every token of the
segment that is neither salient nor one of this frame's context tokens is assigned to its most
cosine-similar context token of the frame. Scoring is fp32 from any input dtype; the returned rows
are in the input dtype.

The authors' quirks, reproduced:
* far fewer tokens than `r*T*N` are kept when segments are long: a frame keeps at most `N` tokens,
  at most `N//2` of them context, and only the last frame of each run of near-identical frames
  gets any, so the rest of the segment's budget is dropped. `fill_budget=True` (not the
  authors') spreads what the caps drop over the segment's frames as extra salient tokens
  (`fill_budgets`), so that exactly `int(N*r)*T` tokens are kept.
* with several context frames in one segment a token is merged into one context token of each.
* the DPC density gets `U[0,1)*1e-6` noise from the authors' global `torch.rand`, which only
  matters for exact density ties. Here it is drawn from a generator seeded with `seed` (one draw
  per context frame, in frame order, as theirs) or switched off with `jitter=0`.

Where their code is ill-defined (exact ties in `topk`/`argmax`, whose order torch leaves open),
the choice here is fixed: the lower index wins. Scores are fp32 (theirs too, apart from the
merge sums, which they take in the input dtype): a bf16 video gives the result of its fp32
upcast, rounded to bf16 at the end.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import check_method_options
from ..registry import register_compressor
from ..kernels.threads import caller_threads
from .blocks import BLOCK_BYTES, fp32_blocks, one_hot_sums
from .dpc import dpc_knn, jitter_draws, pad_jitter
from .holitom import _rank_mask, check_features, check_ratio

DPC_K = 4  # neighbours in the context tokens' density (fixed in the authors' code)


def segment_ids(frame_means: torch.Tensor, c: int, tau: float, ignore: float):
    """DySeg on the fp32 frame means `[T, D]` (mean over each frame's tokens).

    Returns (segment id int64 `[T]`, inner-run id int64 `[T]`, frame similarity fp32 `[T-1]`):
    a segment ends after frame t when `sim[t]` is among the `min(c-1, T-1)` smallest or
    `< tau`; inside segments a run ends where `sim[t] < ignore`. Ids count up from 0 in time.
    """
    T = frame_means.shape[0]
    g = F.normalize(frame_means, dim=-1)
    sim = (g[:-1] * g[1:]).sum(-1)
    cut = sim < tau
    n_low = min(c - 1, T - 1)
    if n_low > 0:
        cut[torch.topk(sim, n_low, largest=False).indices] = True
    inner_cut = cut | (sim < ignore)
    zero = torch.zeros(1, dtype=torch.long, device=frame_means.device)
    seg = torch.cat([zero, cut.long().cumsum(0)])
    inner = torch.cat([zero, inner_cut.long().cumsum(0)])
    return seg, inner, sim


def frame_budgets(seg: torch.Tensor, inner: torch.Tensor, N: int, r: float, d: float, p: int):
    """Salient and context budgets per frame, int64 `[T]` each (CPU).

    Segment of L frames: `R = fr*L` (`fr = max(1, min(N, int(N*r)))`), `C = max(1, int(R*d))` if
    `R > 1` else 0, `S = R - C`. One frame: (S, C). Otherwise, over its V inner runs: salient
    `S//V`, +1 for the first `S % V`; context in `ceil(V/p)` groups (`C//n`, +1 for the first
    `C % n`), group j/p on run j when `j % p == 0`, capped at `N//2`, and that list reversed (the
    context lands on the last run, the (p+1)-th from last, ...). Only a run's last frame gets its
    budgets: context `min(c_j, N//2)`, salient `min(s_j, N - context)` (salient `min(s_j, N)`
    without context). Finally `sal = clamp(sal, 0, N)`, `ctx = clamp(ctx, 0, N - sal)`.
    """
    seg, inner = seg.cpu(), inner.cpu()
    T = seg.numel()
    fr = max(1, min(N, int(N * r)))
    n_seg = int(seg[-1]) + 1
    L = torch.bincount(seg, minlength=n_seg)  # frames per segment
    R = fr * L
    C = torch.tensor([max(1, int(int(v) * d)) if v > 1 else 0 for v in R.tolist()], dtype=torch.long)
    C = torch.minimum(C, R)
    S = R - C

    n_inner = int(inner[-1]) + 1
    seg_of_run = torch.zeros(n_inner, dtype=torch.long).scatter_(0, inner, seg)
    V = torch.bincount(seg_of_run, minlength=n_seg)  # runs per segment
    first_run = torch.cumsum(V, 0) - V
    j = torch.arange(n_inner) - first_run[seg_of_run]  # run index inside its segment
    Vr, Sr, Cr = V[seg_of_run], S[seg_of_run], C[seg_of_run]
    sal_run = Sr // Vr + (j < Sr % Vr).long()
    groups = (Vr + p - 1) // p
    # context run order is reversed: run j gets what the unreversed list holds at V-1-j
    jr = Vr - 1 - j
    grp = jr // p
    ctx_run = torch.where(jr % p == 0, Cr // groups + (grp < Cr % groups).long(), torch.zeros_like(jr))
    ctx_run = ctx_run.clamp(max=N // 2)
    sal_run = torch.where(ctx_run > 0, torch.minimum(sal_run, N - ctx_run), sal_run.clamp(max=N))

    last = torch.ones(T, dtype=torch.bool)
    last[:-1] = inner[1:] != inner[:-1]  # last frame of its run
    single = (L == 1)[seg]
    sal = torch.where(last, sal_run[inner], torch.zeros(T, dtype=torch.long))
    ctx = torch.where(last, ctx_run[inner], torch.zeros(T, dtype=torch.long))
    sal = torch.where(single, S[seg], sal).clamp(0, N)
    ctx = torch.where(single, C[seg], ctx)
    ctx = torch.minimum(ctx.clamp(min=0), N - sal)
    return sal, ctx, R


def fill_budgets(seg: torch.Tensor, sal: torch.Tensor, ctx: torch.Tensor, R: torch.Tensor, N: int) -> torch.Tensor:
    """Salient budgets `[T]` (CPU int64) with each segment's dropped budget given back.

    Segment g keeps `sum(sal + ctx)` of its `R[g]` tokens; the difference goes to its frames as
    extra salient tokens, as evenly as each frame's room `N - sal - ctx` allows: round by round,
    every frame with room left gets one more, from the segment's last frame backwards, until
    none is missing (water-filling to level `lam`, the smallest with `sum(min(room, lam)) >= need`;
    the last, partial round goes to the latest frames). The room always suffices: `R[g] <= N*L`.
    """
    sal = sal.clone()
    for g in range(R.numel()):
        frames = (seg == g).nonzero().flatten()
        room = N - sal[frames] - ctx[frames]
        need = int(R[g]) - int((sal[frames] + ctx[frames]).sum())
        if need <= 0:
            continue
        levels = torch.arange(1, int(room.max()) + 1)
        filled = torch.minimum(room.unsqueeze(0), levels.unsqueeze(1)).sum(1)  # tokens given up to each level
        lam = int(levels[int(torch.searchsorted(filled, need))])
        extra = room.clamp(max=lam - 1)
        last_round = (room >= lam).nonzero().flatten().flip(0)[: need - int(extra.sum())]
        extra[last_round] += 1
        sal[frames] += extra
    return sal


@register_compressor("fastvid")
def fastvid(
    features: torch.Tensor,
    ratio: float,
    *,
    retention_ratio: Optional[float] = None,
    dyseg_c: int = 8,
    dyseg_tau: float = 0.84,
    dyseg_ignore: float = 0.99,
    stprune_d: float = 0.5,
    dtm_p: int = 4,
    dtm_beta: float = 0.5,
    jitter: float = 1e-6,
    seed: int = 0,
    fill_budget: bool = False,
):
    """FastVID merging for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: retention ratio in (0, 1] (`R_RATIO`); at most `int(N*r)*T` tokens are kept,
            often far fewer (see the module docstring). `r = 1` returns the input unchanged.
        retention_ratio: overrides `ratio` (`fastvid_retention_ratio`); None: `ratio`.
        dyseg_c: segments are cut at the `dyseg_c - 1` lowest frame similarities (`fastvid_DySeg_c`).
        dyseg_tau: ... and wherever the similarity is below this (`fastvid_DySeg_tau`).
        dyseg_ignore: runs of frames more similar than this share one budget (`fastvid_DySeg_ignore`).
        stprune_d: share of context tokens (`fastvid_STPrune_d`).
        dtm_p: one context group per `dtm_p` runs of a segment (`fastvid_DTM_p`).
        dtm_beta: least weight of a context token in its merged row (`fastvid_DTM_beta`).
        jitter: scale of the uniform DPC density noise (0: none); `seed` seeds it.
        fill_budget: keep exactly `int(N*r)*T` tokens: what the authors' per-frame caps drop is
            given back as extra salient tokens of the segment's frames (`fill_budgets`; not the
            authors' behaviour, False by default).
    Returns:
        `(mask, merged)`: bool `[T, N]` with K >= 1 kept rows and `[K, D]` their features in
        ascending (row-major) order, in the input dtype: salient rows are bitwise copies,
        context rows merged.
    """
    check_features(features, "fastvid")
    r = check_ratio(ratio if retention_ratio is None else retention_ratio,
                    "ratio" if retention_ratio is None else "retention_ratio (fastvid_retention_ratio)")
    if int(dyseg_c) != dyseg_c or dyseg_c < 1:
        raise ValueError(f"fastvid: dyseg_c (fastvid_DySeg_c) must be an integer >= 1, got {dyseg_c!r}")
    for name, env, v in (("dyseg_tau", "fastvid_DySeg_tau", dyseg_tau),
                         ("dyseg_ignore", "fastvid_DySeg_ignore", dyseg_ignore)):
        if not (-1.0 <= float(v) <= 1.0):
            raise ValueError(f"fastvid: {name} ({env}) must be a cosine similarity in [-1, 1], got {v!r}")
    for name, env, v in (("stprune_d", "fastvid_STPrune_d", stprune_d), ("dtm_beta", "fastvid_DTM_beta", dtm_beta)):
        if not (0.0 <= float(v) <= 1.0):
            raise ValueError(f"fastvid: {name} ({env}) must be in [0, 1], got {v!r}")
    if int(dtm_p) != dtm_p or dtm_p < 1:
        raise ValueError(f"fastvid: dtm_p (fastvid_DTM_p) must be an integer >= 1, got {dtm_p!r}")
    if not (float(jitter) >= 0.0 and math.isfinite(float(jitter))):
        raise ValueError(f"fastvid: jitter must be a finite number >= 0, got {jitter!r}")
    if not isinstance(fill_budget, bool):
        raise ValueError(f"fastvid: fill_budget must be True or False, got {fill_budget!r}")
    check_method_options("fastvid", {"dyseg_c": dyseg_c, "dtm_p": dtm_p})  # and the upper bounds that can work

    T, N, D = features.shape
    dev = features.device
    if r >= 1.0:
        return torch.ones(T, N, dtype=torch.bool, device=dev), features.reshape(T * N, D).clone()
    norms = torch.empty(T, N, device=dev)
    means = torch.empty(T, D, device=dev)
    for t0, t1, x in fp32_blocks(features):
        norms[t0:t1] = torch.linalg.vector_norm(x, dim=-1)
        means[t0:t1] = x.mean(dim=1)
    seg, inner, _ = segment_ids(means, int(dyseg_c), float(dyseg_tau), float(dyseg_ignore))
    sal_n, ctx_n, seg_budget = frame_budgets(seg, inner, N, r, float(stprune_d), int(dtm_p))
    if fill_budget:
        sal_n = fill_budgets(seg.cpu(), sal_n, ctx_n, seg_budget, N)
    seg = seg.to(dev)
    salient = _rank_mask(norms, sal_n.to(dev))  # [T, N]

    # a segment that got no budget at all keeps its top-R norms (only reachable with d = 1, N = 1)
    per_seg = torch.zeros(seg_budget.numel(), dtype=torch.long).index_add_(0, seg.cpu(), sal_n + ctx_n)
    empty = (per_seg == 0).nonzero().flatten().tolist()
    for g in empty:  # unreachable with the defaults
        frames = (seg == g).nonzero().flatten()
        flat = _rank_mask(norms[frames].reshape(1, -1), seg_budget[g].view(1).to(dev)).view(-1, N)
        salient[frames] = flat

    # context frames: DPC-kNN centres among the frame's non-salient tokens, ascending position
    cf = (ctx_n > 0).nonzero().flatten().tolist()
    context = torch.zeros(T, N, dtype=torch.bool, device=dev)
    if cf:
        cfi = torch.tensor(cf, device=dev)
        rest = ~salient[cfi]  # [F, N]
        n_rest = rest.sum(1)
        M = int(n_rest.max())
        pos = torch.sort(torch.where(rest, torch.arange(N, device=dev), N), dim=1).values[:, :M]
        valid = pos < N
        pos_c = pos.clamp(max=N - 1)
        n_c = torch.minimum(ctx_n[cf].to(dev), n_rest)
        k_f = n_rest.clamp(max=DPC_K, min=1)
        noise = None
        if jitter > 0:
            noise = pad_jitter(jitter_draws(n_rest.tolist(), seed, float(jitter), "cpu"), M, dev)
        # DPC a few context frames at a time: their fp32 copies stay within BLOCK_BYTES (all
        # of them at once were twice a bf16 video's size when every frame is a context frame)
        step = max(1, BLOCK_BYTES // (8 * M * D))  # half a block: fp32 rows, bf16 gather, distances
        for a in range(0, len(cf), step):
            b = min(len(cf), a + step)
            pts = features[cfi[a:b].unsqueeze(1), pos_c[a:b]].float()  # [f, M, D]
            with caller_threads():  # one large product and its [f, M, M] companions
                is_centre, _ = dpc_knn(pts, valid[a:b], n_c[a:b], k_f[a:b], None if noise is None else noise[a:b])
            fi, mi = is_centre.nonzero(as_tuple=True)
            context[cfi[a + fi], pos_c[a + fi, mi]] = True

    mask = salient | context
    ti, ni = mask.nonzero(as_tuple=True)
    rows = features[ti, ni]  # advanced indexing: a copy
    if cf:
        # DTM over chunks of whole segments, the context rows written into `rows` chunk by
        # chunk: the fp32 state (the context tokens' rows, unit rows and sums) stays bounded
        out_row = (mask.view(-1).cumsum(0) - 1).view(T, N)
        for t0, t1 in _segment_chunks(seg.cpu(), context.sum(1).cpu(), BLOCK_BYTES // (24 * D)):
            sub = cfi[(cfi >= t0) & (cfi < t1)] - t0
            if sub.numel() == 0:
                continue
            sub_ctx = context[t0:t1]
            merged = _merge_context(features[t0:t1], seg[t0:t1] - seg[t0], salient[t0:t1], sub_ctx, sub,
                                    float(dtm_beta))
            ct, cn = sub_ctx.nonzero(as_tuple=True)  # row-major: `merged`'s order
            rows[out_row[ct + t0, cn]] = merged.to(features.dtype)
    return mask, rows


def _segment_chunks(seg: torch.Tensor, ctx_per_frame: torch.Tensor, max_tokens: int):
    """Frame ranges `(t0, t1)` of consecutive whole segments, each holding at most `max_tokens`
    context tokens unless a single segment has more (then it is a chunk alone). CPU int64 `[T]`."""
    T = seg.numel()
    ends = ((seg[1:] != seg[:-1]).nonzero().flatten() + 1).tolist() + [T]
    per_seg = torch.zeros(len(ends), dtype=torch.long).index_add_(0, seg - seg[0], ctx_per_frame).tolist()
    t0, start, tokens = 0, 0, 0
    for end, n in zip(ends, per_seg):
        if tokens and tokens + n > max_tokens:
            yield t0, start
            t0, tokens = start, 0
        tokens += n
        start = end
    yield t0, T


def _merge_context(features, seg, salient, context, cfi, beta):
    """DTM for every context frame at once.

    For context frame f of segment g, every token of g that is neither salient (in any frame of
    g) nor a context token of f is assigned to f's most cosine-similar context token (first
    maximum); context token j becomes `w*x_j + (1-w)*sum/max(cnt, 1)`, `w = max(1/(cnt+1), beta)`,
    from the original features (other frames' context tokens join as they were).

    Args: features `[T, N, D]` (any float dtype; computed in fp32); seg int64 `[T]`; salient,
    context bool `[T, N]`; cfi int64 `[F]` the context frames ascending.
    Returns fp32 `[Kc, D]`, the context rows in row-major order.
    """
    T, N, D = features.shape
    dev = features.device
    F_ = cfi.numel()
    cti, cni = context.nonzero(as_tuple=True)  # row-major: grouped by frame, ascending position
    Kc = cti.numel()
    # slot of each context frame inside its segment, and of each context token inside its frame
    seg_cf = seg[cfi]
    is_first = torch.ones(F_, dtype=torch.bool, device=dev)
    is_first[1:] = seg_cf[1:] != seg_cf[:-1]
    first_idx = torch.cummax(torch.where(is_first, torch.arange(F_, device=dev), 0), 0).values
    slot_of_cf = torch.arange(F_, device=dev) - first_idx
    frame_to_cf = torch.full((T,), -1, dtype=torch.long, device=dev)
    frame_to_cf[cfi] = torch.arange(F_, device=dev)
    cf_of_tok = frame_to_cf[cti]  # [Kc]
    per_cf = torch.bincount(cf_of_tok, minlength=F_)
    tok_in_cf = torch.arange(Kc, device=dev) - (torch.cumsum(per_cf, 0) - per_cf)[cf_of_tok]
    Q = int(slot_of_cf.max()) + 1
    Cmax = int(per_cf.max())
    # table[g, q, c]: global context id of the c-th context token of the q-th context frame of g
    n_seg = int(seg.max()) + 1
    table = torch.full((n_seg, Q, Cmax), -1, dtype=torch.long, device=dev)
    table[seg_cf[cf_of_tok], slot_of_cf[cf_of_tok], tok_in_cf] = torch.arange(Kc, device=dev)
    tab = table[seg].view(T, Q * Cmax)  # every frame's segment's table
    own_slot = torch.full((T,), -1, dtype=torch.long, device=dev)
    own_slot[cfi] = slot_of_cf
    # a token merges into slot q unless it is salient, slot q does not exist, or it is one of
    # slot q's own context tokens
    may = ~salient.unsqueeze(-1) & ~(context.unsqueeze(-1) & (own_slot.view(T, 1, 1) == torch.arange(Q, device=dev)))

    own_rows = features[cti, cni].float()
    ctx_n = F.normalize(own_rows, dim=-1)  # [Kc, D]
    acc = torch.zeros(Kc, D, device=dev)
    cnt = torch.zeros(Kc, dtype=torch.long, device=dev)
    for t0, t1, x in fp32_blocks(features):
        # the block's frames in segments with context, scored against their segment's table.
        # The merge tokens are not normalised: dividing a row of cosines by a positive number
        # (its norm) leaves its argmax unchanged.
        fr = (tab[t0:t1] >= 0).any(1).nonzero().flatten()  # block-local frames
        if fr.numel() == 0:
            continue
        tb = tab[t0 + fr]  # [f, Q*Cmax]
        xs = x if fr.numel() == t1 - t0 else x[fr]
        with caller_threads():  # the DTM's one large product
            sim = torch.bmm(xs, ctx_n[tb.clamp(min=0)].transpose(1, 2)).view(-1, N, Q, Cmax)
        sim = sim.masked_fill((tb < 0).view(-1, 1, Q, Cmax), float("-inf"))
        best = sim.argmax(-1)  # [f, N, Q], first maximum
        target = torch.gather(tb.view(-1, 1, Q, Cmax).expand(-1, N, -1, -1), 3, best.unsqueeze(-1)).squeeze(-1)
        ok = (target >= 0) & may[t0 + fr]
        # sums as one sparse (one-hot) product (`one_hot_sums`)
        fi, ni, _ = ok.nonzero(as_tuple=True)
        dst = target[ok]
        src = fr[fi] * N + ni
        c0, c1 = int(tb[tb >= 0].min()), int(tb.max()) + 1  # the block's segments' context tokens
        acc[c0:c1] += one_hot_sums(dst - c0, src, c1 - c0, x.reshape(-1, D))
        cnt += torch.bincount(dst, minlength=Kc)
    cnt = cnt.float().unsqueeze(1)
    w = (1.0 / (cnt + 1)).clamp(min=beta)
    return w * own_rows + (1 - w) * acc / cnt.clamp(min=1)
