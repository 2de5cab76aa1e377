"""Selection benchmark: `token_compressor.select` vs each method's straightforward formulation.

Every method with a straightforward formulation to compare against is one `Method` in `METHODS`
(a reference formulation, and an oracle that decides what exact selection means for it):
  - vidcom2: `compressors.reference.vidcom2_reference`, the authors' way (materialised channel
    gather, normalised features and difference tensors, a loop over frames for the top-k), in the
    input dtype as their code computes; exactness: equal to the float64 loop formulation.
  - evs: `compressors.reference.evs_reference`, vLLM's formulation on the fp32 upcast (a whole
    fp32 copy, `F.cosine_similarity`, one stable sort); exactness: equal to it.
A second table (`run_baselines`) times the VidCom² authors' four Qwen baselines (dycoke,
visionzip, fastvid, holitom) against their loop formulations (`compressors/reference_baselines.py`)
on bf16 input, with each one's agreement to its loops.
Each is timed at one CPU thread and at torch's default thread count, on fp32 and bf16 input. All
cells are interleaved round by round in one run (every round runs every cell once), so the ratios
compare formulations under the same machine conditions; best and median of the rounds. The
machine's load average is printed before and after (the build machine is shared).

    python -m benchmarks.select_bench [--frames 32 --tokens 256 --dim 3584 --repeats 7 --methods vidcom2 evs]
    token-compressor bench            (the `make bench` defaults)
"""
from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, List, Sequence

import torch

from ..compressors.reference import evs_reference, vidcom2_reference
from ..selection import select
from .timing import interleaved_times, median

DTYPES = (torch.float32, torch.bfloat16)


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
    """A registered compressor and what `select(..., method=name)` is compared with.

    reference(x [T*N, D], T, ratio) -> kept rows, int64 ascending: the straightforward formulation
        that is timed (in whatever dtype that formulation computes).
    oracle(x [T*N, D], T, ratio) -> kept rows: the selection ours must equal exactly on the
        benchmark's input (may be slow: it is run once per dtype, not timed).
    """

    name: str
    reference: Callable[[torch.Tensor, int, float], torch.Tensor]
    oracle: Callable[[torch.Tensor, int, float], torch.Tensor]
    describe: str


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
           "authors' formulation in the input dtype; exact = equal to the float64 loop"),
    Method("evs", _evs_reference, _evs_reference,
           "vLLM's formulation on the fp32 upcast (F.cosine_similarity); exact = equal to it"),
]


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


def run(T: int = 32, N: int = 256, D: int = 3584, ratio: float = 0.25, repeats: int = 7,
        methods: Sequence[str] = None) -> list:
    chosen = [m for m in METHODS if methods is None or m.name in methods]
    unknown = set(methods or ()) - {m.name for m in METHODS}
    if unknown:
        raise ValueError(f"no benchmark entry for {sorted(unknown)}; known: {[m.name for m in METHODS]}")
    x32 = synthetic_video(T, N, D)
    inputs = {dtype: x32.to(dtype) for dtype in DTYPES}
    counts = thread_counts()

    cells, fns = [], {}
    for m in chosen:
        for dtype, x in inputs.items():
            ours = select(x, T, ratio, method=m.name)
            exact = torch.equal(ours.keep, m.oracle(x, T, ratio))
            for n in counts:
                cell = (m.name, dtype, n)
                cells.append((m, dtype, n, ours, exact))

                def run_ours(x=x, m=m, n=n):
                    with threads(n):
                        return select(x, T, ratio, method=m.name)

                def run_reference(x=x, m=m, n=n):
                    with threads(n):
                        return m.reference(x, T, ratio)

                fns[cell + ("ours",)] = run_ours
                fns[cell + ("straightforward",)] = run_reference
    times = interleaved_times(fns, repeats=repeats)

    rows = []
    for m, dtype, n, ours, exact in cells:
        rows.append({
            "method": m.name, "dtype": str(dtype).replace("torch.", ""), "threads": n,
            "T": T, "N": N, "D": D, "ratio": ratio, "rounds": repeats,
            **_speed(times[(m.name, dtype, n, "ours")], times[(m.name, dtype, n, "straightforward")]),
            "kept": ours.num_kept, "exact": exact,
        })
    return rows


def _speed(t_ours: List[float], t_ref: List[float]) -> dict:
    """Best and median of each side's rounds (ms) and the speed-ups best over best, median over median."""
    return {"ours_best_ms": round(min(t_ours), 2), "ours_median_ms": round(median(t_ours), 2),
            "straightforward_best_ms": round(min(t_ref), 2), "straightforward_median_ms": round(median(t_ref), 2),
            "speedup_best": round(min(t_ref) / min(t_ours), 2),
            "speedup_median": round(median(t_ref) / median(t_ours), 2)}


def load() -> str:
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unknown"


def print_table(rows: list) -> None:
    r0 = rows[0]
    print(f"Selection vs the straightforward formulation, T={r0['T']} N={r0['N']} D={r0['D']} r={r0['ratio']}, "
          f"{r0['rounds']} interleaved rounds, CPU ({os.cpu_count()} cores, torch default {torch.get_num_threads()} threads)")
    for m in METHODS:
        if any(r["method"] == m.name for r in rows):
            print(f"  {m.name}: {m.describe}")
    print(f"{'method':<9}{'dtype':<10}{'threads':>7}{'ours best':>11}{'median':>9}{'straightfwd best':>18}"
          f"{'median':>9}{'speed-up best':>15}{'median':>9}{'kept':>7}  exact")
    for r in rows:
        print(f"{r['method']:<9}{r['dtype']:<10}{r['threads']:>7}{r['ours_best_ms']:>11.1f}{r['ours_median_ms']:>9.1f}"
              f"{r['straightforward_best_ms']:>18.1f}{r['straightforward_median_ms']:>9.1f}"
              f"{r['speedup_best']:>14.2f}x{r['speedup_median']:>8.2f}x{r['kept']:>7}  {r['exact']}")


# -- The VidCom² authors' four Qwen baselines ----------------------------------------------------
# Kept apart from the rows above: `select(..., method=m)` against the per-frame-loop formulations of
# `compressors/reference_baselines.py`, on bf16 input (the setting), at one thread and at
# torch's default, interleaved. DyCoke's and VisionZip's loops compute in the input dtype, as the
# authors' code does; FastVID's and HoliTom's in fp32 (their one-hot merge products in bf16 took
# ~93 s per call on this CPU: that would measure a slow bf16 kernel, not the formulation).
# "agrees": DyCoke/VisionZip kept rows vs their loop run in float64 on the same values
# (informational: at this size some decisions lie within 1e-6, where two correct fp32
# formulations may differ, shared/notes/baselines.md section 7); FastVID/HoliTom kept rows and
# features vs their fp32 loops (the same fp32 decisions). Exact parity is tested on the golden cases.

BASELINES = ("dycoke", "visionzip", "fastvid", "holitom")


def _baseline_reference(method: str, x: torch.Tensor, ratio: float, dtype):
    """The loop formulation of `method` on `[T, N, D]` -> (kept rows int64 ascending, features or None)."""
    from ..compressors import reference_baselines as rb

    if method == "dycoke":
        return rb.dycoke_reference(x, ratio, compute_dtype=dtype), None
    if method == "visionzip":
        return rb.visionzip_reference(x, ratio, compute_dtype=dtype)
    fn = rb.fastvid_reference if method == "fastvid" else rb.holitom_reference
    mask, rows = fn(x, ratio, compute_dtype=torch.float32 if dtype != torch.float64 else dtype)
    return mask.reshape(-1).nonzero().squeeze(1), rows


def _agreement(method: str, x: torch.Tensor, ratio: float, ours) -> str:
    T = x.shape[0]
    if method in ("dycoke", "visionzip"):
        keep, _ = _baseline_reference(method, x.double(), ratio, torch.float64)
        if torch.equal(ours.keep, keep):
            return "same keep as fp64 loop"
        overlap = len(set(ours.keep.tolist()) & set(keep.tolist())) / max(1, keep.numel())
        return f"{100 * overlap:.2f}% overlap with fp64 loop"
    keep, rows = _baseline_reference(method, x, ratio, torch.float32)
    if not torch.equal(ours.keep, keep):
        return "keep DIFFERS from fp32 loops"
    ours_rows = ours.kept_features(x.reshape(T * x.shape[1], -1))
    diff = float((ours_rows.float() - rows.float()).abs().max())
    return f"same keep as fp32 loops, features within {diff:.1e}"


def run_baselines(T: int = 32, N: int = 256, D: int = 3584, ratio: float = 0.25, repeats: int = 3,
                  methods: Sequence[str] = BASELINES) -> list:
    x = synthetic_video(T, N, D).to(torch.bfloat16)
    video = x.view(T, N, D)
    counts = thread_counts()
    cells, fns = [], {}
    for method in methods:
        ours = select(x, T, ratio, method=method)
        agrees = _agreement(method, video, ratio, ours)
        for n in counts:
            cells.append((method, n, ours, agrees))

            def run_ours(method=method, n=n):
                with threads(n):
                    return select(x, T, ratio, method=method)

            def run_reference(method=method, n=n):
                with threads(n):
                    return _baseline_reference(method, video, ratio, torch.bfloat16)

            fns[(method, n, "ours")] = run_ours
            fns[(method, n, "straightforward")] = run_reference
    times = interleaved_times(fns, repeats=repeats)
    rows = []
    for method, n, ours, agrees in cells:
        rows.append({"method": method, "dtype": "bfloat16", "threads": n, "T": T, "N": N, "D": D, "ratio": ratio,
                     "rounds": repeats, **_speed(times[(method, n, "ours")], times[(method, n, "straightforward")]),
                     "kept": ours.num_kept, "agrees": agrees})
    return rows


def print_baselines(rows: list) -> None:
    r0 = rows[0]
    print(f"The authors' four Qwen baselines vs their loop formulations, bf16, T={r0['T']} N={r0['N']} D={r0['D']} "
          f"r={r0['ratio']}, {r0['rounds']} interleaved rounds")
    print(f"{'method':<11}{'threads':>7}{'ours best':>11}{'median':>9}{'loops best':>12}{'median':>9}"
          f"{'speed-up best':>15}{'median':>9}{'kept':>7}  agrees")
    for r in rows:
        print(f"{r['method']:<11}{r['threads']:>7}{r['ours_best_ms']:>11.1f}{r['ours_median_ms']:>9.1f}"
              f"{r['straightforward_best_ms']:>12.1f}{r['straightforward_median_ms']:>9.1f}"
              f"{r['speedup_best']:>14.2f}x{r['speedup_median']:>8.2f}x{r['kept']:>7}  {r['agrees']}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=3584)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--methods", nargs="+", choices=[m.name for m in METHODS], help="default: all")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--baseline-repeats", type=int, default=3,
                   help="timing rounds of the four baselines' rows (their loop formulations are slow)")
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="which of the authors' four baselines to time (default: all; none: skip)")
    a = p.parse_args(argv)
    print(f"before: {load()}")
    rows = run(a.frames, a.tokens, a.dim, a.ratio, a.repeats, a.methods)
    print_table(rows)
    baseline_rows = run_baselines(a.frames, a.tokens, a.dim, a.ratio, a.baseline_repeats, a.baselines)
    if baseline_rows:
        print()
        print_baselines(baseline_rows)
    print(f"after: {load()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows + baseline_rows, f, indent=1)
    if not all(r["exact"] for r in rows):
        raise SystemExit("a selection differs from its exact oracle (see the 'exact' column)")
    if any("DIFFERS" in r["agrees"] for r in baseline_rows):
        raise SystemExit("a merging baseline differs from its loop formulation (see the 'agrees' column)")


if __name__ == "__main__":
    main()
