"""DyCoke (CVPR 2025, "Dynamic Compression of Tokens for Fast Video Large Language Models"), its
first stage (TTM, temporal token merging) as the VidCom² authors' Qwen code runs it: pure pruning.

Frames are taken in pairs (0, 1), (2, 3), ...: the first frame of a pair is kept whole, the second
keeps the `k` tokens least cosine-similar to the token at the same position in the first. Then
every fourth frame from 2 on that is not among the last two (frames i+2 for i = 0, 4, 8, ... < T-4)
is pruned the same way against frame i. `k = int((1 - merging) * N)` with merging ratio
`1 - ratio` by default, i.e. about `(1 + r) / 2` of the video is kept (whole frames dominate).

The authors' quirks, reproduced by default (the published numbers depend on them):
- `keep_ratio = 1 - (1 - r)` is computed in doubles, so r = 0.1 keeps `int(0.0999...98 * N)`
  tokens (9 of 100, not 10) in a pruned frame;
- when T is odd the last frame is never visited and is dropped entirely, at every ratio, even
  r = 1. `keep_last_frame=True` is the corrected behaviour: that frame is an unpaired first
  frame of a pair and is kept whole;
- the kept count is far above `r * T * N` (T = 32, N = 256, r = 0.25 keeps 46 %);
- `DYCOKE_NUM_TOKENS_PER_FRAME` only regroups tokens when it equals N (their code falls back to
  N otherwise), so on Qwen-VL it never changes anything; it is accepted for compatibility.
DyCoke's second stage (KV-cache pruning while decoding) does not exist in the authors' Qwen code
and is not implemented here.

Scoring is fp32 from any input dtype (the authors compute the cosines in the model's dtype, where
bf16 ties decide; see README).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..config import check_method_options
from ..kernels.torch_scores import EPS
from ..registry import register_compressor
from .vidcom2 import keep_lowest_per_frame


def dycoke_pruned_frames(num_frames: int, device=None):
    """Which frames DyCoke prunes, and against which frame.

    Returns:
        (whole int64 `[W]` frames kept whole, pruned int64 `[P]`, reference int64 `[P]`): frame
        `pruned[j]` keeps the tokens least similar to frame `reference[j]`; frames in neither
        list are dropped (only the last frame, when T is odd).
    """
    T = num_frames
    paired = 2 * (T // 2)
    seconds = torch.arange(1, paired, 2, device=device)  # second frame of each pair, vs t - 1
    restaged = torch.arange(2, max(T - 2, 2), 4, device=device)  # frame i + 2, i = 0, 4, ... < T - 4, vs t - 2
    pruned = torch.cat([seconds, restaged])
    reference = torch.cat([seconds - 1, restaged - 2])
    firsts = torch.arange(0, paired, 2, device=device)
    whole = firsts[~torch.isin(firsts, restaged)]
    return whole, pruned, reference


def dycoke_tokens_per_pruned_frame(tokens_per_frame: int, ratio: float, k: Optional[float] = None) -> int:
    """`int(keep_ratio * N)` with `keep_ratio = 1 - merging`, `merging = k` or `1 - ratio`, both
    clamped to [0, 1] and computed in doubles exactly as the authors do."""
    merging = (1.0 - ratio) if k is None else float(k)
    merging = min(max(merging, 0.0), 1.0)
    keep_ratio = min(max(1.0 - merging, 0.0), 1.0)
    return int(keep_ratio * tokens_per_frame)


def neighbour_cosines(features: torch.Tensor):
    """fp32 cosine of every token to the token at the same position one and two frames back,
    where DyCoke needs them.

    Args:
        features: `[T, N, D]`, any float dtype.
    Returns:
        (`[T, N]` cosine to frame t-1, filled for odd t; `[T, N]` cosine to frame t-2, filled
        for t = 2 mod 4; 0 elsewhere). `cos = a.b / (max(|a|, eps) max(|b|, eps))`, as
        `F.normalize` then a dot product.

    Both kinds of pair lie inside aligned groups of 4 frames and compare tokens at the same
    position, so the video is read once in cache-sized blocks (4 frames x up to 64 token
    positions) upcast into one reused fp32 buffer: no fp32 copy of the whole video (on CPU a
    fresh 100 MiB buffer costs more in page faults than the arithmetic).
    """
    T, N, D = features.shape
    fp32 = dict(dtype=torch.float32, device=features.device)
    to_previous = torch.zeros(T, N, **fp32)
    to_second = torch.zeros(T, N, **fp32)
    chunk = min(N, 64)
    buf = torch.empty(chunk, 4, D, **fp32)
    for f0 in range(0, T, 4):
        nf = min(4, T - f0)
        odd = torch.arange(1, nf, 2, device=features.device)
        for i0 in range(0, N, chunk):
            i1 = min(i0 + chunk, N)
            # token-major block [c, nf, D]: one small Gram matrix per token position holds every
            # dot product and squared norm among the group's frames, from one read of the block
            b = buf[: i1 - i0, :nf].copy_(features[f0:f0 + nf, i0:i1].transpose(0, 1))
            gram = torch.bmm(b, b.transpose(1, 2))  # [c, nf, nf]
            inv = gram.diagonal(dim1=1, dim2=2).sqrt().clamp_min(EPS).reciprocal_()
            cos = gram.mul_(inv.unsqueeze(2)).mul_(inv.unsqueeze(1))
            to_previous[f0 + 1:f0 + nf:2, i0:i1] = cos[:, odd, odd - 1].T
            if nf > 2:
                to_second[f0 + 2, i0:i1] = cos[:, 2, 0]
    return to_previous, to_second


@register_compressor("dycoke")
def dycoke(features: torch.Tensor, ratio: float, *, k: Optional[float] = None, num_tokens_per_frame: int = -1,
           keep_last_frame: bool = False) -> torch.Tensor:
    """DyCoke TTM keep mask for one video.

    Args:
        features: `[T, N, D]`, any float dtype and device.
        ratio: retention ratio r in (0, 1] (sets the default merging ratio `1 - r`).
        k: DyCoke's merging ratio K in [0, 1] (`DYCOKE_K`); None: `1 - r`.
        num_tokens_per_frame: `DYCOKE_NUM_TOKENS_PER_FRAME`; -1 (default) or any value other
            than N means N, as in the authors' code.
        keep_last_frame: keep the last frame of an odd T whole instead of dropping it.
    Returns:
        bool `[T, N]` keep mask.
    """
    check_method_options("dycoke", {"k": k, "num_tokens_per_frame": num_tokens_per_frame})
    T, N, _ = features.shape
    mask = torch.zeros(T, N, dtype=torch.bool, device=features.device)
    if T == 1:
        return mask.fill_(True)
    whole, pruned, reference = dycoke_pruned_frames(T, features.device)
    mask[whole] = True
    if keep_last_frame and T % 2:
        mask[T - 1] = True
    per_frame = dycoke_tokens_per_pruned_frame(N, ratio, k)
    to_previous, to_second_previous = neighbour_cosines(features)
    sim = torch.where(((pruned - reference) == 1).unsqueeze(1), to_previous[pruned], to_second_previous[pruned])
    budgets = torch.full((pruned.numel(),), per_frame, dtype=torch.long, device=features.device)
    mask[pruned] = keep_lowest_per_frame(sim, budgets)
    return mask
