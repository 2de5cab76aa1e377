"""VisionZip (CVPR 2025, "Longer is Better but Not Necessary in Vision Language Models"), per
frame, as the VidCom² authors' Qwen code runs it: a merging compressor.

Every frame keeps exactly `K = max(1, int(r * N))` tokens: the `max(1, int(0.6 K))` dominant
ones (largest feature norm, standing in for the vision encoder's attention, which the Qwen
merger output does not expose) as copies, and `K - dominant` contextual anchors among the rest:
the tokens of highest density (mean cosine similarity to their `k_neighbors` nearest remaining
tokens). Every remaining token joins its most similar anchor, and an anchor's features become the
plain mean of its group (itself included). Frames go in blocks of whole frames (4 at N = 256;
all of a small video) upcast into one reused fp32 buffer, each block at once: no loop over single
frames or anchors.

Scoring (norms, similarities, means) is fp32 from any input dtype (the authors compute in the
model's dtype); the returned rows are in the input dtype. At r = 1 every token is kept unchanged.

bf16 screening (the cosine Gram matrix of a frame's remaining tokens is nearly all of the work).
For bf16 input on a CPU whose bf16 matrix product is faster than its fp32 one (AMX, AVX-512-BF16:
`bf16_screen_pays`), the Gram is computed in bf16 and only *screens*: every decision that the
bf16 values cannot settle within their error bound is re-checked on fp32 rows computed exactly as
the plain fp32 path computes them. The decisions (the density ranking that picks the anchors, and
every token's most similar anchor) are then those of the plain fp32 path. torch has no CPU product
of bf16 matrices with an fp32 result, so the screened values are rounded to bf16 (8 bits): the
band is ~0.4 % of a cosine, and where a frame's densities lie closer than that most rows need a
re-check. A video therefore stops screening after a block whose re-checked share exceeds what the
faster product saves (`bf16_screen_pays`). Measured on the 2-core AMD EPYC (AVX-512-BF16, bf16
Gram 1.5-2.2x faster than fp32): the synthetic benchmark video re-checks 35 % of its rows'
densities and random frames 21 %, and screening took 1.25x the plain path's time, so there the
first block screens and the rest run plain fp32. Where the bf16 product is ~4x faster (AMX) and
a video's densities are further apart, the screen stays on.

The error bound (`screen_band`). Rows x, y of a frame (bf16 values), m = max(|x|, eps), the
exact cosine c = x.y / (m_x m_y). u = 2^-24 (fp32), u_b = 2^-8 (bf16, round to nearest),
gamma_D = D u / (1 - D u). The product of two bf16 numbers is exact in fp32; the bf16 matrix
product accumulates in fp32 (any order: error <= gamma_D sum|x_k y_k| <= gamma_D |x||y|, by
Cauchy-Schwarz) and rounds the result to bf16 (relative error <= u_b). The fp32 inverse norms
carry a relative error eta <= gamma_D / 2 + 2u (a sum of squares, a square root, a reciprocal).
So the screened cosine c~ = (S * inv_x) * inv_y satisfies
    |c~ - c| <= (u_b / (1 - u_b) + 2u) |c~| + gamma_D + 2 eta  (+ second-order terms),
and the plain fp32 path's cosine c^ (fp32 Gram, same inverse norms) satisfies
    |c^ - c| <= gamma_D + 2 eta + 2u |c^|.
The band used, |c~ - c^| <= A |c~| + B, takes both: A = 1.02 (u_b / (1 - u_b) + 4u),
B = 1.02 (2 gamma_D + 4 eta) (the factor 1.02 covers the second-order terms: every first-order
term is below 0.005), plus D 2^-125 (1 + |x|)(1 + |y|) inv_x inv_y for subnormal inputs and
products that the bf16 instructions flush to zero (negligible unless a row is nearly zero, where
it makes the whole row re-checked). At D = 3584: A = 0.0040, B = 8.7e-4.
A density (the mean of ranks 2..6 of a row) is bracketed by the same means of the rows c~ - band
and c~ + band (order statistics are monotone), plus 12u for the fp32 means.
"""
from __future__ import annotations

import time
from typing import Optional, Tuple

import torch

from ..config import check_method_options
from ..kernels.threads import caller_threads
from ..kernels.torch_scores import EPS, _Blocks
from ..registry import register_compressor


# rows per block of whole frames (4 frames of 256 tokens: a 14 MiB fp32 buffer)
FRAME_BLOCK_ROWS = 1024
U32 = 2.0**-24  # fp32 unit roundoff
U_BF16 = 2.0**-8  # bf16 unit roundoff (8-bit significand, round to nearest even)
# "auto": screen in bf16 where `bf16_screen_pays`, and only while the re-checked share of rows
# stays below what the faster product saves; "bf16": always (bf16 input); "fp32": never
GRAM_SCREEN = "auto"
# tests switch the fp32 re-checks off to show that the bf16 values alone decide differently
_RECHECK = True
_PAYS = {}
# videos left to run plain after one whose densities were too close for the screen: the next
# video is usually the same kind, and its first screened block would be wasted
_SKIP = {"videos": 0}
SKIP_AFTER_FALLBACK = 16


def visionzip_counts(tokens_per_frame: int, ratio: float, dominant_ratio: float = 0.6) -> Tuple[int, int]:
    """(dominant, contextual) tokens per frame: `K = max(1, int(N r))`, `dominant = max(1,
    int(K * dominant_ratio))` (at most K), `contextual = K - dominant`."""
    K = max(1, int(tokens_per_frame * ratio))
    dominant = min(K, max(1, int(K * dominant_ratio)))
    return dominant, K - dominant


def screen_band(D: int) -> Tuple[float, float]:
    """`(A, B)`: a bf16-screened cosine c~ of two D-channel bf16 rows lies within `A |c~| + B`
    of the plain fp32 path's cosine (and of the exact one); see the module docstring."""
    gamma = D * U32 / (1 - D * U32)
    eta = gamma / 2 + 2 * U32
    return 1.02 * (U_BF16 / (1 - U_BF16) + 4 * U32), 1.02 * (2 * gamma + 4 * eta)


def _cpu_has_bf16_matmul() -> bool:
    """The CPU advertises bf16 dot-product instructions (AMX-BF16 or AVX-512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_screen_pays(device: torch.device) -> float:
    """Whether VisionZip screens its Gram matrices in bf16 on `device` (decided once per process):
    CPU only, with AMX-BF16 or AVX-512-BF16, where torch's bf16 product accumulates in fp32 (a
    probe whose bf16-accumulated sum would lose every small term) and a frame-sized bf16 Gram
    takes under 0.75 of the fp32 one (best of 3, interleaved; the re-checks cost the rest).
    Returns the share of a block's rows whose density may need a re-check before screening
    costs more than the plain fp32 Gram: `max(0, 0.5 (1 - t_bf16 / t_fp32) - 0.15)`, fitted to
    the measurement in `_calibrate` (0.0: never)."""
    dev = torch.device(device)
    if dev.type != "cpu":
        return 0.0
    if "cpu" not in _PAYS:
        _PAYS["cpu"] = _calibrate()
    return _PAYS["cpu"]


def _calibrate() -> float:
    if not _cpu_has_bf16_matmul():
        return 0.0
    g = torch.Generator().manual_seed(0)
    a32 = torch.randn(2, 224, 3584, generator=g)  # a block of Qwen2.5-VL-7B-wide frames
    a16 = a32.bfloat16()
    # fp32 accumulation: 1 + 3583 * 2^-9 = 7.998 (bf16 accumulation would stay at 1)
    probe = torch.zeros(2, 3584, dtype=torch.bfloat16)
    probe[0, 0], probe[0, 1:], probe[1] = 1.0, 2.0**-9, 1.0
    a16[0, :2] = probe
    if not float(torch.bmm(a16, a16.transpose(1, 2))[0, 0, 1]) > 7.9:
        return 0.0
    # one thread, timed by its CPU time: a loaded machine's descheduling does not count
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    t16, t32 = [], []
    try:
        for _ in range(3):
            for a, t in ((a16, t16), (a32, t32)):
                t0 = time.thread_time()
                torch.bmm(a, a.transpose(1, 2))
                t.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(before)
    ratio = min(t16) / min(t32)
    # measured here (bf16 product 2.2x faster by this probe): screening with 35 % of the rows
    # re-checked took 1.25x the plain path (the bf16 gather, the bounds, the re-checked rows'
    # gathers); break-even near 10 %
    return max(0.0, 0.5 * (1.0 - ratio) - 0.15)


def _screen_budget(dtype: torch.dtype, device: torch.device) -> float:
    """The largest share of re-checked rows at which a video keeps screening (0: never)."""
    if dtype != torch.bfloat16 or GRAM_SCREEN == "fp32":
        return 0.0
    return 1.0 if GRAM_SCREEN == "bf16" else bf16_screen_pays(device)


def _rows(x: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`x[f, index[f, j]]` for x `[F, M, D]`, index `[F, J]` -> `[F, J, D]`, as one row
    index_select (a `gather` with an expanded index is several times slower on CPU), into `out`
    (a reused buffer of at least F*J*D elements) when given."""
    F_, M, D = x.shape
    flat = (index + torch.arange(F_, device=index.device).unsqueeze(1) * M).reshape(-1)
    if out is None:
        return x.reshape(F_ * M, D).index_select(0, flat).view(F_, index.shape[1], D)
    buf = out.view(-1)[: flat.numel() * D].view(flat.numel(), D)
    return torch.index_select(x.reshape(F_ * M, D), 0, flat, out=buf).view(F_, index.shape[1], D)


class _Workspace:
    """Buffers reused from one block of frames to the next (a fresh multi-MiB tensor per block
    is a fresh mmap whose page faults cost more than the copy itself on CPU)."""

    def __init__(self):
        self.bufs = {}

    def get(self, name: str, shape, dtype, device) -> torch.Tensor:
        n = 1
        for v in shape:
            n *= v
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self.bufs[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(*shape)


def _gram(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`x @ x^T` for x `[F, n, D]` into `out` `[F, n, n]`, by its upper block triangle: three row
    blocks, each multiplied with the columns from its own block on, the lower blocks copied
    transposed (2/3 of the products; measured 13 vs 16 ms for [4, 218, 3584] fp32 at one thread,
    bitwise equal to the full product on MKL). Small sets take one product."""
    F_, n, D = x.shape
    with caller_threads():
        if n < 96:
            return torch.bmm(x, x.transpose(1, 2), out=out)
        cuts = [0, n // 3, (2 * n) // 3, n]
        for a, b in zip(cuts[:-1], cuts[1:]):
            r = torch.bmm(x[:, a:b], x[:, a:].transpose(1, 2))  # [F, b-a, n-a]
            out[:, a:b, a:] = r
            out[:, b:, a:b] = r[:, :, b - a:].transpose(1, 2)
    return out


def _padded(mask: torch.Tensor):
    """bool `[F, n]` -> (index int64 `[F, U]` of the True entries, ascending, padded with 0;
    valid bool `[F, U]`), U = the largest count (0 if none)."""
    F_, n = mask.shape
    U = int(mask.sum(1).max()) if mask.numel() else 0
    ar = torch.arange(n, device=mask.device)
    idx = torch.sort(torch.where(mask, ar, n), dim=1).values[:, :U]
    valid = idx < n
    return idx.clamp(max=n - 1), valid


def _cosine_rows(rest: torch.Tensor, inv_norm: torch.Tensor, rows: torch.Tensor, cols: Optional[torch.Tensor] = None):
    """fp32 cosines of rows `rows` `[F, U]` of `rest` `[F, n, D]` against every row (or the rows
    `cols` `[F, c]`), computed as the plain path computes the whole matrix: `[F, U, n or c]`."""
    a = _rows(rest, rows)
    b = rest if cols is None else _rows(rest, cols)
    inv_b = inv_norm if cols is None else inv_norm.gather(1, cols)
    with caller_threads():
        s = torch.bmm(a, b.transpose(1, 2))
    return s.mul_(inv_norm.gather(1, rows).unsqueeze(2)).mul_(inv_b.unsqueeze(1))


def contextual_anchors(rest: torch.Tensor, inv_norm: torch.Tensor, contextual: int, k_neighbors: int,
                       rest_bf16: Optional[torch.Tensor] = None, stats: Optional[dict] = None,
                       ws: Optional[_Workspace] = None):
    """Density anchors and the merged groups among every frame's non-dominant tokens.

    Args:
        rest: fp32 `[F, n, D]`, each frame's remaining tokens in ascending position order.
        inv_norm: fp32 `[F, n]`, `1 / max(|rest|, eps)`.
        contextual: anchors per frame, 1 <= contextual < n.
        k_neighbors: neighbours in the density.
        rest_bf16: the same rows in bf16 (exactly `rest`'s values: bf16 input) to screen the Gram
            matrix in bf16 (module docstring); None: the plain fp32 Gram.
        stats: if given, receives the counts of re-checked rows ("density", "assign").
        ws: reused buffers (one per video), or None.
    Returns:
        (anchors int64 `[F, c]`, ascending indices into `rest`; merged fp32 `[F, c, D]`: the mean
        of every remaining token whose most similar anchor it is, the anchor itself included).
    """
    F_, n, D = rest.shape
    kk = min(k_neighbors + 1, n)
    ws = ws or _Workspace()
    if rest_bf16 is None:
        # cosines of the normalised rows, without materialising them
        sim = _gram(rest, ws.get("sim", (F_, n, n), rest.dtype, rest.device))
        sim.mul_(inv_norm.unsqueeze(2)).mul_(inv_norm.unsqueeze(1))
        # the largest similarity of a row is normally its own (1): the authors drop it
        density = sim.topk(kk, dim=-1).values[..., 1:].mean(dim=-1)
        anchors = density.topk(contextual, dim=-1).indices.sort(dim=-1).values  # [F, c]
        to_anchor = sim.gather(2, anchors.unsqueeze(1).expand(F_, n, contextual))  # [F, n, c]
        group = to_anchor.argmax(dim=-1)  # [F, n], first maximum on ties
    else:
        anchors, group = _screened_decisions(rest, inv_norm, rest_bf16, contextual, kk, stats)
    # group sums by one index_add over the rows (sequential on CPU, so deterministic; 0.5-0.8 ms
    # per 4 frames where the one-hot matrix product took 2.9 ms); a lone anchor stays a copy
    gidx = (group + torch.arange(F_, device=rest.device).unsqueeze(1) * contextual).reshape(-1)
    sums = ws.get("sums", (F_ * contextual, D), rest.dtype, rest.device).zero_()
    sums = sums.index_add_(0, gidx, rest.reshape(F_ * n, D)).view(F_, contextual, D)
    counts = torch.bincount(gidx, minlength=F_ * contextual).view(F_, contextual, 1).to(rest.dtype)
    anchor_rows = _rows(rest, anchors, ws.get("anchor_rows", (F_, contextual, D), rest.dtype, rest.device))
    merged = torch.where(counts > 0, sums / counts.clamp(min=1), anchor_rows)
    return anchors, merged


def _screened_decisions(rest, inv_norm, rest_bf16, contextual, kk, stats):
    """The plain path's (anchors, group) from a bf16 Gram and fp32 re-checks of the rows that
    its error band leaves undecided."""
    F_, n, D = rest.shape
    A, B = screen_band(D)
    with caller_threads():  # one product: bf16 sub-block products copy their operands
        sim = torch.bmm(rest_bf16, rest_bf16.transpose(1, 2)).float()
    sim.mul_(inv_norm.unsqueeze(2)).mul_(inv_norm.unsqueeze(1))
    # per-row bound of the subnormal-flush term, D 2^-125 (1 + |x|)(1 + |y|) inv_x inv_y
    tiny = (inv_norm + 1.01) * (D * 2.0**-125) ** 0.5  # |x| inv_x <= 1 + eta
    b_row = (B + tiny * tiny.amax(-1, keepdim=True)).unsqueeze(-1)  # [F, n, 1]

    def lower(v):  # v - (A|v| + b): increasing in v, like v + (A|v| + b)
        return v - v.abs().mul(A).add_(b_row)

    def upper(v):
        return v + v.abs().mul(A).add_(b_row)

    # density = mean of ranks 2..kk of the row. The plain path's rank-k value lies between rank
    # k of lower(sim) and of upper(sim), which (both maps being increasing) are lower / upper of
    # rank k of sim: its density lies in [lo, hi] (12u: the fp32 means)
    top = sim.topk(kk, dim=-1).values[..., 1:]  # [F, n, kk-1]
    density = top.mean(dim=-1)
    lo = lower(top).mean(dim=-1) - 12 * U32
    hi = upper(top).mean(dim=-1) + 12 * U32
    # certainly among the top c: fewer than c others could reach it; certainly out: c others
    # are certainly above it. The rest is re-checked.
    could_beat = (hi.unsqueeze(1) >= lo.unsqueeze(2)).sum(-1) - 1
    beaten = (lo.unsqueeze(1) > hi.unsqueeze(2)).sum(-1)
    unsure = (could_beat >= contextual) & (beaten < contextual)
    key = density
    if _RECHECK and bool(unsure.any()):
        rows, valid = _padded(unsure)
        exact = _cosine_rows(rest, inv_norm, rows).topk(kk, dim=-1).values[..., 1:].mean(dim=-1)
        key = density.clone()
        fi, ui = valid.nonzero(as_tuple=True)
        key[fi, rows[fi, ui]] = exact[fi, ui]
    anchors = key.topk(contextual, dim=-1).indices.sort(dim=-1).values  # [F, c]

    # most similar anchor: decided where one anchor's lower bound clears every other's upper one
    to_anchor = sim.gather(2, anchors.unsqueeze(1).expand(F_, n, contextual))  # [F, n, c]
    lo_a = lower(to_anchor)
    best_lo = lo_a.amax(-1, keepdim=True)
    group = lo_a.argmax(dim=-1)
    unsure_a = (upper(to_anchor) >= best_lo).sum(-1) > 1
    if _RECHECK and bool(unsure_a.any()):
        rows, valid = _padded(unsure_a)
        exact = _cosine_rows(rest, inv_norm, rows, anchors).argmax(dim=-1)  # [F, U], first maximum
        fi, ui = valid.nonzero(as_tuple=True)
        group[fi, rows[fi, ui]] = exact[fi, ui]
    if stats is not None:
        stats["density"] = stats.get("density", 0) + int(unsure.sum())
        stats["assign"] = stats.get("assign", 0) + int(unsure_a.sum())
    return anchors, group


def visionzip_frames(frames: torch.Tensor, dominant: int, contextual: int, k_neighbors: int,
                     frames_bf16: Optional[torch.Tensor] = None, stats: Optional[dict] = None,
                     ws: Optional[_Workspace] = None, source: Optional[torch.Tensor] = None,
                     out: Optional[torch.Tensor] = None):
    """VisionZip on a block of frames at once.

    Args:
        frames: fp32 `[F, N, D]`.
        frames_bf16: the same values in bf16 (bf16 input) to screen the Gram in bf16, or None.
        source: the block in the input dtype (`frames` its upcast), where the dominant rows are
            copied from; None: `frames`.
        out: `[F, K, D]` in `source`'s dtype to write the rows into; None: a new fp32 tensor.
    Returns:
        (positions int64 `[F, K]` ascending, rows `[F, K, D]`: `out`, or fp32),
        `K = dominant + contextual`.
    """
    F_, N, D = frames.shape
    K = dominant + contextual
    ws = ws or _Workspace()
    dev = frames.device
    source = frames if source is None else source
    if out is None:
        out = torch.empty(F_, K, D, dtype=source.dtype, device=dev)
    norms = torch.linalg.vector_norm(frames, dim=-1)  # [F, N], stands in for the encoder's attention
    dom = norms.topk(dominant, dim=-1).indices
    pos = dom
    if contextual > 0:
        is_dom = torch.zeros(F_, N, dtype=torch.bool, device=dev).scatter_(1, dom, True)
        n = N - dominant
        rest_pos = (~is_dom).nonzero()[:, 1].view(F_, n)  # ascending per frame
        rest = _rows(frames, rest_pos, ws.get("rest", (F_, n, D), frames.dtype, dev))
        rest16 = None if frames_bf16 is None else _rows(frames_bf16, rest_pos,
                                                        ws.get("rest16", (F_, n, D), frames_bf16.dtype, dev))
        inv = norms.gather(1, rest_pos).clamp_min_(EPS).reciprocal_()
        anchors, merged = contextual_anchors(rest, inv, contextual, k_neighbors, rest16, stats, ws)
        pos = torch.cat([dom, rest_pos.gather(1, anchors)], dim=1)
    # each row straight to its ascending slot: dominant rows copied from the input (exact),
    # merged rows rounded to it once
    order = pos.argsort(dim=1)
    slot = (order.argsort(dim=1) + torch.arange(F_, device=dev).unsqueeze(1) * K)  # [F, K]
    flat_out = out.view(F_ * K, D)
    flat_out.index_copy_(0, slot[:, :dominant].reshape(-1), _rows(source, dom).view(-1, D))
    if contextual > 0:
        flat_out.index_copy_(0, slot[:, dominant:].reshape(-1), merged.reshape(-1, D).to(out.dtype))
    return pos.gather(1, order), out


@register_compressor("visionzip")
def visionzip(features: torch.Tensor, ratio: float, *, dominant_ratio: float = 0.6,
              k_neighbors: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
    """VisionZip keep mask and merged features for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: retention ratio r in (0, 1]; every frame keeps `max(1, int(r N))` tokens.
        dominant_ratio: share of dominant tokens in a frame's budget (`visionzip_dominant_ratio`).
        k_neighbors: neighbours in the contextual density (`visionzip_k_neighbors`).
    Returns:
        (bool `[T, N]` keep mask, `[T*K, D]` features of the kept tokens in ascending order, in
        the input dtype: dominant tokens copied, anchors merged).
    """
    check_method_options("visionzip", {"dominant_ratio": dominant_ratio, "k_neighbors": k_neighbors})
    T, N, D = features.shape
    dominant, contextual = visionzip_counts(N, ratio, dominant_ratio)
    K = dominant + contextual
    if K == N:  # every remaining token is its own anchor: nothing merges
        return torch.ones(T, N, dtype=torch.bool, device=features.device), features.reshape(T * N, D).clone()
    mask = torch.zeros(T, N, dtype=torch.bool, device=features.device)
    rows = torch.empty(T, K, D, dtype=features.dtype, device=features.device)
    flat = features.reshape(T * N, D)
    budget = _screen_budget(features.dtype, features.device) if contextual > 0 else 0.0
    if budget > 0 and _SKIP["videos"] > 0:
        _SKIP["videos"] -= 1
        budget = 0.0
    ws = _Workspace()
    # frames are independent: blocks of whole frames, upcast to fp32 in a reused buffer
    for s, e, block, _ in _Blocks(flat, max(1, FRAME_BLOCK_ROWS // N) * N):
        f0, f1 = s // N, e // N
        lp = flat[s:e].view(f1 - f0, N, D) if budget > 0 else None
        stats = {} if budget > 0 else None
        pos, _ = visionzip_frames(block.view(f1 - f0, N, D), dominant, contextual, k_neighbors, lp, stats, ws,
                                  source=flat[s:e].view(f1 - f0, N, D), out=rows[f0:f1])
        if stats is not None and stats["density"] > budget * (f1 - f0) * (N - dominant):
            budget = 0.0  # this video's densities are too close for bf16: plain fp32 from here
            _SKIP["videos"] = SKIP_AFTER_FALLBACK
        mask[f0:f1].scatter_(1, pos, True)
    return mask, rows.reshape(T * K, D)
