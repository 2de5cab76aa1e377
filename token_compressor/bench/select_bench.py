"""Selection benchmark: `token_compressor.select` against a peer for every method, in one table.

The peer of each method (named in the table's `peer` column):
  - with a checkout of the VidCom² authors' repository (`--authors-repo PATH` or
    `TOKEN_COMPRESSOR_AUTHORS_REPO`, see `bench/authors.py`): **their own functions** for vidcom2,
    dycoke, visionzip, fastvid and holitom, loaded from that path at run time;
  - without it, our straightforward formulations, and the table's header says so:
    vidcom2 `compressors/reference.py: vidcom2_reference` (the authors' structure: materialised
    channel gather, normalised features and difference tensors, a loop over frames for the top-k, in
    the input dtype), the four baselines `compressors/reference_baselines.py` (their loops; DyCoke
    and VisionZip in the input dtype as the authors compute, FastVID and HoliTom in fp32: their bf16
    one-hot merge products take ~93 s per call on a CPU);
  - evs always vLLM's formulation re-written in `compressors/reference.py: evs_reference` (a whole
    fp32 copy, `F.cosine_similarity`, one stable sort; vLLM itself is not in this environment).
Every cell (method x input dtype x thread count x ours/peer) is timed in the same shuffled
interleaved rounds (`timing.py`: a warm-up call outside the rounds, then >= 7 rounds, each in a fresh
random order); a cell's time is the median of its rounds with the min-max; the speed-up is
peer median / ours median, with the min-max of the per-round ratios. Threads: 1 and torch's
default (set around each call; our CPU selection runs on one thread inside, `kernels/threads.py`).

The `check` column: vidcom2 and evs must equal their exact oracle (the float64 loop; vLLM's
formulation) or the run fails; fastvid and holitom must keep the rows of their fp32 loops with the
same merged features (else the run fails); dycoke and visionzip are compared with their float64
loops (informational: at this size some decisions lie within 1e-6). With the authors' code the
column adds how our kept rows compare with theirs (informational: in bf16 they compute in bf16, whose
ties they break arbitrarily; exact parity is tested on the golden cases).

    python -m benchmarks.select_bench [--frames 32 --tokens 256 --dim 3584 --repeats 7
                                       --methods vidcom2 evs ... --dtypes float32 bfloat16 --authors-repo PATH]
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from ..compressors.reference import evs_reference, vidcom2_reference
from ..selection import select
from . import authors as authors_mod
from .machine import Measured
from .timing import fmt_spread, interleaved_times, ratio_spread, spread

DTYPES = (torch.float32, torch.bfloat16)
BASELINES = ("dycoke", "visionzip", "fastvid", "holitom")
MIN_ROUNDS = 7  # the floor for selection tables


def synthetic_video(T: int, N: int, D: int, seed: int = 0) -> torch.Tensor:
    """Features with the statistics that matter to VidCom²: per-channel scales and offsets
    (log-normal scales, some large-mean/low-variance channels), slow temporal drift, a scene cut
    and a few salient tokens per frame. `[T*N, D]` fp32."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(D, generator=g) * 0.5)
    offset = torch.randn(D, generator=g) * 0.2
    few = torch.randperm(D, generator=g)[: D // 16]
    offset[few] = 4.0 * torch.sign(torch.randn(D // 16, generator=g))  # large-mean channels ...
    scale[few] = 0.05  # ... with low variance: the ones VidCom² keeps
    scene = torch.randn(2, N, D, generator=g)
    drift = torch.randn(T, 1, D, generator=g).cumsum(0) * 0.05
    cut = (torch.arange(T) >= T // 2).long()
    x = scene[cut] + drift + 0.5 * torch.randn(T, N, D, generator=g)
    salient = torch.randint(0, N, (T, 3), generator=g)
    x[torch.arange(T).unsqueeze(1), salient] += 3.0 * torch.randn(T, 3, D, generator=g)
    return (x * scale + offset).reshape(T * N, D)


@dataclass(frozen=True)
class Method:
    """A registered compressor and our straightforward formulation of it.

    reference(x [T*N, D], T, ratio) -> kept rows, int64 ascending: the formulation timed as the peer
        when the authors' code is not given (in whatever dtype that formulation computes).
    oracle(x [T*N, D], T, ratio) -> kept rows: the selection ours must equal exactly on the
        benchmark's input (may be slow: it is run once per dtype, not timed).
    """

    name: str
    reference: Callable[[torch.Tensor, int, float], torch.Tensor]
    oracle: Callable[[torch.Tensor, int, float], torch.Tensor]
    describe: str
    peer_label: str


def _vidcom2_reference(x, T, ratio):
    return vidcom2_reference(x.view(T, -1, x.shape[1]), ratio, compute_dtype=x.dtype)[0]


def _vidcom2_oracle(x, T, ratio):
    # the loop formulation in float64 fed the same values decides exactly (some decisions here are
    # within 1e-5, where two fp32 summation orders may differ)
    return vidcom2_reference(x.double().view(T, -1, x.shape[1]), ratio, torch.float64)[0]


def _evs_reference(x, T, ratio):
    return evs_reference(x.view(T, -1, x.shape[1]), ratio)[0]


METHODS: List[Method] = [
    Method("vidcom2", _vidcom2_reference, _vidcom2_oracle,
           "exact = equal to the float64 loop formulation", "our rewrite of authors' loops"),
    Method("evs", _evs_reference, _evs_reference,
           "exact = equal to vLLM's formulation on the fp32 upcast", "our rewrite of vLLM's EVS"),
]
NAMES = tuple(m.name for m in METHODS) + BASELINES


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_counts() -> List[int]:
    """1 and torch's default (the machine's cores), once each."""
    return sorted({1, torch.get_num_threads()})


# -- The four baselines' loop formulations ------------------------------------------------------

def _baseline_reference(method: str, x: torch.Tensor, ratio: float, dtype):
    """The loop formulation of `method` on `[T, N, D]` -> (kept rows int64 ascending, features or None).
    DyCoke/VisionZip compute in `dtype`; FastVID/HoliTom in fp32 (fp64 when asked)."""
    from ..compressors import reference_baselines as rb

    if method == "dycoke":
        return rb.dycoke_reference(x, ratio, compute_dtype=dtype), None
    if method == "visionzip":
        return rb.visionzip_reference(x, ratio, compute_dtype=dtype)
    fn = rb.fastvid_reference if method == "fastvid" else rb.holitom_reference
    mask, rows = fn(x, ratio, compute_dtype=torch.float32 if dtype != torch.float64 else dtype)
    return mask.reshape(-1).nonzero().squeeze(1), rows


def _baseline_check(method: str, x: torch.Tensor, ratio: float, ours) -> str:
    """`x` `[T, N, D]`: our result against the loop formulations (see the module docstring)."""
    T = x.shape[0]
    if method in ("dycoke", "visionzip"):
        keep, _ = _baseline_reference(method, x.double(), ratio, torch.float64)
        return _overlap(ours.keep, keep, "fp64 loop")
    keep, rows = _baseline_reference(method, x, ratio, torch.float32)
    if not torch.equal(ours.keep, keep):
        return "keep DIFFERS from fp32 loops"
    diff = float((ours.kept_features(x.reshape(T * x.shape[1], -1)).float() - rows.float()).abs().max())
    return f"same keep as fp32 loops, features within {diff:.1e}"


def _overlap(ours: torch.Tensor, theirs: torch.Tensor, name: str) -> str:
    if torch.equal(ours, theirs):
        return f"same keep as {name}"
    common = len(set(ours.tolist()) & set(theirs.tolist())) / max(1, theirs.numel())
    return f"{100 * common:.1f}% overlap with {name}"


def _authors_check(method: str, fn, x2d: torch.Tensor, T: int, ratio: float, ours) -> str:
    keep, features = fn(x2d, T, ratio)
    text = _overlap(ours.keep, keep.to(torch.long), "authors'")
    if method == "holitom":  # their keep is a placeholder (linspace over the rows), ours reproduces it
        text = "keep: both the linspace placeholder"
    if features is not None and torch.equal(ours.keep, keep):
        diff = float((ours.kept_features(x2d).float() - features.float()).abs().max())
        text += f", features within {diff:.1e} of the authors'"
    return text


# -- The table ------------------------------------------------------------------------------------

def run(T: int = 32, N: int = 256, D: int = 3584, ratio: float = 0.25, repeats: int = MIN_ROUNDS,
        methods: Optional[Sequence[str]] = None, dtypes=DTYPES, authors=None, seed: int = 0) -> list:
    """One row per method x dtype x thread count (see the module docstring); `authors`: an
    `authors.AuthorsCode` whose functions are the peers of the methods it has, else None."""
    methods = list(NAMES) if methods is None else list(methods)
    unknown = set(methods) - set(NAMES)
    if unknown:
        raise ValueError(f"no benchmark entry for {sorted(unknown)}; known: {list(NAMES)}")
    by_name = {m.name: m for m in METHODS}
    x32 = synthetic_video(T, N, D)
    counts = thread_counts()
    cells, fns = [], {}
    for name in methods:
        for dtype in dtypes:
            x = x32.to(dtype)
            ours = select(x, T, ratio, method=name)
            if authors is not None and name in authors.functions:
                fn = authors.functions[name]
                peer, label = (lambda fn=fn, x=x: fn(x, T, ratio)), authors.label
            elif name in by_name:
                m = by_name[name]
                peer, label = (lambda m=m, x=x: m.reference(x, T, ratio)), m.peer_label
            else:
                video, dt = x.view(T, N, D), dtype
                peer = lambda name=name, video=video, dt=dt: _baseline_reference(name, video, ratio, dt)
                label = "our rewrite of authors' loops"
            if name in by_name:
                exact = torch.equal(ours.keep, by_name[name].oracle(x, T, ratio))
                check = f"exact: {'yes' if exact else 'NO'}"
            else:
                check = _baseline_check(name, x.view(T, N, D), ratio, ours)
                exact = "DIFFERS" not in check
            if authors is not None and name in authors.functions:
                check += "; " + _authors_check(name, authors.functions[name], x, T, ratio, ours)
            for n in counts:
                cells.append((name, dtype, n, label, ours.num_kept, exact, check))

                def run_ours(x=x, name=name, n=n):
                    with threads(n):
                        return select(x, T, ratio, method=name)

                def run_peer(peer=peer, n=n):
                    with threads(n):
                        return peer()

                fns[(name, dtype, n, "ours")] = run_ours
                fns[(name, dtype, n, "peer")] = run_peer
    times = interleaved_times(fns, repeats=repeats, seed=seed)
    rows = []
    for name, dtype, n, label, kept, exact, check in cells:
        t_ours, t_peer = times[(name, dtype, n, "ours")], times[(name, dtype, n, "peer")]
        rows.append({"method": name, "dtype": str(dtype).replace("torch.", ""), "threads": n, "peer": label,
                     "T": T, "N": N, "D": D, "ratio": ratio, "rounds": repeats,
                     "ours_ms": spread(t_ours), "peer_ms": spread(t_peer), "speedup": ratio_spread(t_peer, t_ours),
                     "kept": kept, "exact": exact, "check": check})
    return rows


def header(rows: list, authors=None) -> List[str]:
    r0 = rows[0]
    lines = [f"Selection: select() vs a peer, T={r0['T']} N={r0['N']} D={r0['D']} r={r0['ratio']}, "
             f"{r0['rounds']} shuffled interleaved rounds after a warm-up; ms median [min-max]; "
             "speed-up = peer / ours, median [per-round min-max]"]
    if authors is not None:
        lines.append(f"peers: {authors.describe()}; evs: our rewrite of vLLM's formulation (compressors/reference.py)")
    else:
        lines.append("peers: OUR straightforward formulations (compressors/reference.py, reference_baselines.py), not the "
                     "authors' code: give a checkout with --authors-repo PATH or TOKEN_COMPRESSOR_AUTHORS_REPO to time theirs")
    return lines


def print_table(rows: list, measured: Measured, authors=None) -> None:
    for line in header(rows, authors):
        print(line)
    print(measured.line())
    print(f"{'method':<10}{'input':<9}{'thr':>3}  {'peer':<31}{'ours ms':>22}{'peer ms':>24}{'speed-up':>20}"
          f"{'kept':>6}  check")
    for r in rows:
        print(f"{r['method']:<10}{r['dtype']:<9}{r['threads']:>3}  {r['peer']:<31}{fmt_spread(r['ours_ms']):>22}"
              f"{fmt_spread(r['peer_ms']):>24}{fmt_spread(r['speedup'], 2):>20}{r['kept']:>6}  {r['check']}")


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=3584)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=MIN_ROUNDS, help=f"timing rounds (default {MIN_ROUNDS})")
    p.add_argument("--methods", nargs="+", choices=NAMES, help="default: all")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    p.add_argument("--authors-repo", metavar="PATH",
                   help=f"a checkout of the VidCom² authors' repository (default: ${authors_mod.ENV})")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    authors = authors_mod.load_or_exit(a.authors_repo)
    with Measured() as measured:
        rows = run(a.frames, a.tokens, a.dim, a.ratio, a.repeats, a.methods,
                   tuple(getattr(torch, d) for d in a.dtypes), authors)
    print_table(rows, measured, authors)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": measured.as_dict(), "rows": rows}, f, indent=1, default=str)
    if not all(r["exact"] for r in rows):
        raise SystemExit("a selection differs from its exact oracle or loop formulation (see the 'check' column)")
    return rows


if __name__ == "__main__":
    main()
