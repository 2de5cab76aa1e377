"""Straightforward formulations of the authors' four Qwen baselines, the way their Qwen code is
structured: Python loops over frame pairs (DyCoke), over frames and then anchors (VisionZip), over
segments, frames and context sets (FastVID), over windows and clusters (HoliTom), one small set at
a time, one-hot matrix products for sums. Slow on purpose: the readable oracles the vectorised
compressors are tested and benchmarked against. Written from the specification
(../shared/notes/baselines.md), not from their code.

DyCoke/VisionZip compute in `compute_dtype` (the authors compute in the model's dtype).
FastVID/HoliTom return the same `(mask [T, N], merged [K, D])` as the compressors; arithmetic is
in `compute_dtype` (fp32 by default; fp64 for a tie-free oracle), the rows in the input dtype.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .dycoke import dycoke_tokens_per_pruned_frame
from .holitom import adjusted_ratio
from .visionzip import visionzip_counts


def dycoke_reference(features: torch.Tensor, ratio: float, k: Optional[float] = None,
                     compute_dtype=torch.float32) -> torch.Tensor:
    """features `[T, N, D]` -> keep int64 `[K]` ascending (DyCoke only prunes)."""
    T, N, _ = features.shape
    x = features.to(compute_dtype)
    if T == 1:
        return torch.arange(N)
    per_frame = dycoke_tokens_per_pruned_frame(N, ratio, k)
    kept = {}
    for i in range(0, T - 1, 2):  # pairs; the last frame of an odd T is never visited
        kept[i] = torch.arange(N)
        sim = F.cosine_similarity(F.normalize(x[i], dim=-1), F.normalize(x[i + 1], dim=-1), dim=-1)
        kept[i + 1] = torch.topk(sim, per_frame, largest=False).indices
    for i in range(0, T - 4, 4):
        sim = F.cosine_similarity(x[i], x[i + 2], dim=-1)
        kept[i + 2] = torch.topk(sim, per_frame, largest=False).indices
    return torch.sort(torch.cat([idx + t * N for t, idx in kept.items()])).values


def visionzip_reference(features: torch.Tensor, ratio: float, dominant_ratio: float = 0.6, k_neighbors: int = 5,
                        compute_dtype=torch.float32):
    """features `[T, N, D]` -> (keep int64 `[K]` ascending, features `[K, D]` in `compute_dtype`)."""
    T, N, D = features.shape
    x = features.to(compute_dtype)
    dominant, contextual = visionzip_counts(N, ratio, dominant_ratio)
    keep, rows = [], []
    for t in range(T):
        f = x[t]
        dom = torch.topk(f.norm(dim=-1), dominant).indices.sort().values
        is_dom = torch.zeros(N, dtype=torch.bool)
        is_dom[dom] = True
        rest = (~is_dom).nonzero().squeeze(1)
        pos, out = [dom], [f[dom]]
        if contextual > 0:
            rem = f[rest]
            unit = F.normalize(rem, dim=-1)
            sim = unit @ unit.T
            density = torch.topk(sim, min(k_neighbors + 1, rest.numel()), dim=-1).values[:, 1:].mean(dim=-1)
            anchors = torch.topk(density, min(contextual, rest.numel())).indices.sort().values
            merged = rem[anchors]
            if anchors.numel() < rest.numel():
                assign = (unit @ F.normalize(rem[anchors], dim=-1).T).argmax(dim=-1)
                merged = torch.stack([rem[assign == j].mean(dim=0) if bool((assign == j).any()) else rem[a]
                                      for j, a in enumerate(anchors.tolist())])
            pos.append(rest[anchors])
            out.append(merged)
        pos, out = torch.cat(pos), torch.cat(out)
        order = torch.argsort(pos)
        keep.append(pos[order] + t * N)
        rows.append(out[order])
    return torch.cat(keep), torch.cat(rows)


def _jitter(n: int, gen, scale: float, dtype):
    if scale == 0.0 or gen is None:
        return torch.zeros(n, dtype=dtype)
    return (torch.rand(n, generator=gen) * scale).to(dtype)


def _dpc_centres(x, n_centres, k, noise):
    """DPC-kNN centres (ascending) of the rows of `x` `[n, D]`, as in the authors' helper."""
    n, D = x.shape
    n_centres = min(n_centres, n)
    k = max(1, min(k, n))
    dist = torch.cdist(x.unsqueeze(0), x.unsqueeze(0))[0] / D**0.5
    nearest = torch.topk(dist, k, dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(-1)) + noise
    denser = density.unsqueeze(0) > density.unsqueeze(1)  # [i, j]: j denser than i
    delta = torch.where(denser, dist, dist.max()).min(-1).values
    score = delta * density
    return torch.sort(torch.topk(score, n_centres).indices).values, dist


def _runs(sim, threshold):
    """Lengths of the runs of frames between cuts (`sim[t] < threshold` ends a run after t)."""
    sizes, cur = [], 1
    for s in sim.tolist():
        if s < threshold:
            sizes.append(cur)
            cur = 1
        else:
            cur += 1
    sizes.append(cur)
    return sizes


def fastvid_reference(features, ratio, *, dyseg_c=8, dyseg_tau=0.84, dyseg_ignore=0.99, stprune_d=0.5,
                      dtm_p=4, dtm_beta=0.5, jitter=1e-6, seed=0, fill_budget=False, compute_dtype=torch.float32):
    """FastVID `[T, N, D]` -> (mask bool `[T, N]`, merged `[K, D]`), loops as the authors'."""
    T, N, D = features.shape
    if ratio >= 1.0:
        return torch.ones(T, N, dtype=torch.bool), features.reshape(T * N, D).clone()
    x = features.to(compute_dtype)
    gen = torch.Generator().manual_seed(seed) if jitter > 0 else None
    norms = x.norm(dim=-1)
    g = F.normalize(x.mean(dim=1), dim=-1)
    sim = (g[:-1] * g[1:]).sum(-1)
    cuts = set((sim < dyseg_tau).nonzero().flatten().tolist())
    n_low = min(dyseg_c - 1, T - 1)
    if n_low > 0:
        cuts |= set(torch.topk(sim, n_low, largest=False).indices.tolist())
    segments, start = [], 0
    for t in sorted(cuts) + [T - 1]:
        segments.append((start, t + 1))
        start = t + 1
    fr = max(1, min(N, int(N * ratio)))
    mask = torch.zeros(T, N, dtype=torch.bool)
    rows = {}
    for s0, s1 in segments:
        L = s1 - s0
        R = fr * L
        C = min(max(1, int(R * stprune_d)) if R > 1 else 0, R)
        S = R - C
        if L == 1:
            sal_b, ctx_b = [S], [C]
        else:
            inner = _runs(sim[s0:s1 - 1], dyseg_ignore)
            V = len(inner)
            sal_v = [S // V + (1 if j < S % V else 0) for j in range(V)]
            n = (V + dtm_p - 1) // dtm_p
            grp = [C // n + (1 if j < C % n else 0) for j in range(n)]
            ctx_v = [min(grp[j // dtm_p], N // 2) if j % dtm_p == 0 else 0 for j in range(V)][::-1]
            sal_b, ctx_b = [], []
            for j, size in enumerate(inner):
                sal_b += [0] * (size - 1)
                ctx_b += [0] * (size - 1)
                if ctx_v[j] > 0:
                    c = min(ctx_v[j], N // 2)
                    ctx_b.append(c)
                    sal_b.append(min(sal_v[j], N - c))
                else:
                    ctx_b.append(0)
                    sal_b.append(min(sal_v[j], N))
        sal_b = [min(max(0, v), N) for v in sal_b]
        ctx_b = [min(max(0, c), N - v) for v, c in zip(sal_b, ctx_b)]
        if fill_budget:  # give back what the caps dropped: one token per frame per round, last frame first
            need = R - sum(sal_b) - sum(ctx_b)
            room = [N - v - c for v, c in zip(sal_b, ctx_b)]
            while need > 0:
                for f in reversed(range(L)):
                    if need > 0 and room[f] > 0:
                        sal_b[f] += 1
                        room[f] -= 1
                        need -= 1
        seg_x = x[s0:s1].reshape(L * N, D)
        salient, contexts = [], []
        for f in range(L):
            sal, ctx = sal_b[f], ctx_b[f]
            top = torch.topk(norms[s0 + f], sal).indices if sal > 0 else torch.zeros(0, dtype=torch.long)
            salient.append(top + f * N)
            if ctx > 0:
                keep_out = torch.zeros(N, dtype=torch.bool)
                keep_out[top] = True
                rest = (~keep_out).nonzero().flatten()
                if rest.numel():
                    centres, _ = _dpc_centres(x[s0 + f, rest], ctx, 4, _jitter(rest.numel(), gen, jitter, x.dtype))
                    contexts.append(rest[centres] + f * N)
        salient = torch.cat(salient)
        if salient.numel() == 0 and not contexts:
            salient = torch.topk(norms[s0:s1].reshape(-1), R).indices
        for i in salient.tolist():
            rows[s0 * N + i] = features.reshape(T * N, D)[s0 * N + i]
        xn = F.normalize(seg_x, dim=-1)
        for ctx in contexts:
            retained = torch.zeros(L * N, dtype=torch.bool)
            retained[salient] = True
            retained[ctx] = True
            merge = (~retained).nonzero().flatten()
            assign = torch.zeros(merge.numel(), ctx.numel(), dtype=x.dtype)
            if merge.numel():
                assign[torch.arange(merge.numel()), (xn[merge] @ xn[ctx].T).argmax(1)] = 1
            cnt = assign.sum(0).unsqueeze(1)
            w = (1 / (cnt + 1)).clamp(min=dtm_beta)
            new = w * seg_x[ctx] + (1 - w) * (assign.T @ seg_x[merge]) / cnt.clamp(min=1)
            for j, i in enumerate(ctx.tolist()):
                rows[s0 * N + i] = new[j].to(features.dtype)
    keep = sorted(rows)
    mask.view(-1)[keep] = True
    return mask, torch.stack([rows[i] for i in keep])


def holitom_reference(features, ratio, *, t=0.8, beta=0.6, d=0.0, k=7, max_window_size=1024, positions="linspace",
                      jitter=1e-6, seed=0, compute_dtype=torch.float32):
    """HoliTom `[T, N, D]` -> (mask bool `[T, N]`, merged `[K, D]`), loops as the authors'."""
    T, N, D = features.shape
    x = features.to(compute_dtype)
    gen = torch.Generator().manual_seed(seed) if jitter > 0 else None
    xn = F.normalize(x, dim=-1)
    fs = F.cosine_similarity(xn[:-1], xn[1:], dim=-1)  # [T-1, N]
    count = {}
    for s in range(T - 1):
        alive = torch.cumprod((fs[s:] > t).long(), dim=0)  # [T-1-s, N]
        for e in range(s + 1, T):
            count[(s, e)] = (e - s) * int(alive[e - s - 1].sum())
    dp, choice = [0] * T, [1] * T
    for i in range(1, T):
        dp[i], choice[i] = dp[i - 1], 1
        for ws in range(2, min(i + 1, max_window_size) + 1):
            cand = (dp[i - ws] if i - ws >= 0 else 0) + count[(i - ws + 1, i)]
            if cand > dp[i]:
                dp[i], choice[i] = cand, ws
    windows, i = [], T - 1
    while i >= 0:
        windows.append((i - choice[i] + 1, i))
        i -= choice[i]
    windows.reverse()
    adj = adjusted_ratio(ratio, T * N, dp[T - 1])
    norms = x.norm(dim=-1)
    out, src = [], []

    def clusters(pts, n_clusters, draw):
        """(centres ascending, merged rows) of the rows of `pts`, per cluster as the authors."""
        centres, dist = _dpc_centres(pts, n_clusters, min(k, n_clusters), draw)
        nearest = dist[:, centres].argmin(1)
        rows = []
        for c_i, c in enumerate(centres.tolist()):
            members = (nearest == c_i).clone()
            members[centres] = False
            rows.append(beta * pts[c] + (1 - beta) * pts[members].mean(0) if bool(members.any()) else pts[c])
        return centres, rows

    for s, e in windows:
        if e > s:
            static = (fs[s:e] > t).all(0)
        else:
            static = torch.zeros(N, dtype=torch.bool)
        st_pos = static.nonzero().flatten()
        dyn_pos = (~static).nonzero().flatten()
        kd = math.ceil(dyn_pos.numel() * adj)
        n_dom = round(kd * (1 - d))
        dyn_out, dyn_src = [], []
        for f in range(s, e + 1):  # the dynamic tokens first: their jitter is drawn first
            order = torch.topk(norms[f, dyn_pos], n_dom).indices if n_dom else dyn_pos[:0]
            top = torch.sort(dyn_pos[order]).values
            for i in top.tolist():
                dyn_out.append(features[f, i])
                dyn_src.append(f * N + i)
            if kd - n_dom > 0:
                is_top = torch.zeros(N, dtype=torch.bool)
                is_top[top] = True
                rest = dyn_pos[~is_top[dyn_pos]]
                centres, rows = clusters(x[f, rest], kd - n_dom, _jitter(rest.numel(), gen, jitter, x.dtype))
                dyn_out += [r.to(features.dtype) for r in rows]
                dyn_src += [f * N + int(rest[c]) for c in centres.tolist()]
        n_clusters = round(st_pos.numel() * adj)
        if n_clusters > 0:
            pts = x[s:e + 1, st_pos].mean(0)
            centres, rows = clusters(pts, n_clusters, _jitter(st_pos.numel(), gen, jitter, x.dtype))
            out += [r.to(features.dtype) for r in rows]
            src += [s * N + int(st_pos[c]) for c in centres.tolist()]
        out += dyn_out
        src += dyn_src
    mask = torch.zeros(T * N, dtype=torch.bool)
    if not out:
        mask[0] = True
        return mask.view(T, N), features.reshape(T * N, D)[:1].clone()
    rows = torch.stack(out)
    if positions == "centres":
        order = torch.argsort(torch.tensor(src))
        mask[torch.tensor(src)] = True
        return mask.view(T, N), rows[order]
    mask[torch.linspace(0, T * N - 1, len(out), dtype=torch.long)] = True
    return mask.view(T, N), rows
