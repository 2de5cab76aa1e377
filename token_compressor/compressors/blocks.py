"""fp32 views of a video a few frames at a time.

FastVID scores in fp32 whatever the input dtype (HoliTom did too; it now reads cache-sized
token blocks like EVS, `holitom.norms_and_next_cosine`). Upcasting a whole bf16 video
(T=32, N=256, D=3584: 117 MB) allocates a fresh buffer on every call, and on CPU faulting its
pages in costs more than the arithmetic done on it. The passes that need every row in fp32 run
over blocks of frames converted into one small reused buffer instead; fp32 input is sliced
without a copy (one block). The work inside a block is vectorised over its frames.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch

BLOCK_BYTES = 1 << 25  # 32 MiB of fp32 per block


def fp32_blocks(features: torch.Tensor, overlap: int = 0) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Yield `(t0, t1, block)` covering frames `0..T-1` in order, `block` fp32 `[t1-t0, N, D]`
    holding frames `t0..t1-1`. With `overlap=1` consecutive blocks share one frame (block i+1
    starts at block i's last frame), for pairs of neighbouring frames. A yielded block is only
    valid until the next one is requested."""
    T, N, D = features.shape
    if features.dtype == torch.float32 or T <= 1:
        yield 0, T, features.float()
        return
    step = max(overlap + 1, BLOCK_BYTES // (4 * N * D))
    if step >= T:
        yield 0, T, features.float()
        return
    buf = torch.empty(step, N, D, dtype=torch.float32, device=features.device)
    t0 = 0
    while True:
        t1 = min(T, t0 + step)
        block = buf[: t1 - t0]
        block.copy_(features[t0:t1])
        yield t0, t1, block
        if t1 == T:
            return
        t0 = t1 - overlap


def one_hot_sums(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, x: torch.Tensor) -> torch.Tensor:
    """`S @ x` for the 0/1 matrix `S` `[n_rows, M]` with a one at every `(rows[j], cols[j])`:
    row i is the sum of the rows of `x` `[M, D]` listed against i (each pair once).

    One sparse product: no gathered copy of the summed rows, and faster than `index_add_` on
    CPU. The indices are built by the caller and in range, so torch's invariant checks are off,
    explicitly (torch 2.11 warns on every call otherwise).
    """
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        S = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(rows.numel(), dtype=x.dtype, device=x.device),
                                    (n_rows, x.shape[0]), check_invariants=False)
        return torch.sparse.mm(S, x)
