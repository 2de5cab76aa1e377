"""FastVID and HoliTom benchmark: the vectorised compressors vs their straightforward loop
formulations (`token_compressor.compressors.reference_baselines`: loops over segments, frames,
context sets, windows and clusters, one-hot products for sums, as the authors' code is built).

Both run on the same input in one process, interleaved, best of N; both compute in fp32 (the
loops upcast the input once, as ours do), so the ratio measures the formulation, not the dtype.
Before timing, the two are compared on that input (same kept rows, features within 1e-5).

    python -m token_compressor.bench.baselines_bench [--frames 32 --tokens 256 --dim 3584 --repeats 3]
"""
from __future__ import annotations

import argparse
import json

import torch

from ..compressors.fastvid import fastvid
from ..compressors.holitom import holitom
from ..compressors.reference_baselines import fastvid_reference, holitom_reference
from .select_bench import synthetic_video
from .timing import interleaved_best

METHODS = {"fastvid": (fastvid, fastvid_reference), "holitom": (holitom, holitom_reference)}


def run(T: int = 32, N: int = 256, D: int = 3584, ratio: float = 0.25, repeats: int = 3,
        dtype=torch.bfloat16, methods=("fastvid", "holitom")) -> list:
    x = synthetic_video(T, N, D).to(dtype).view(T, N, D)
    rows = []
    for name in methods:
        ours, loops = METHODS[name]
        mask, merged = ours(x, ratio)
        ref_mask, ref_merged = loops(x, ratio)
        same_keep = torch.equal(mask, ref_mask)
        maxdiff = float((merged.float() - ref_merged.float()).abs().max()) if same_keep else float("nan")
        times = interleaved_best({"ours": lambda f=ours: f(x, ratio), "loops": lambda f=loops: f(x, ratio)},
                                 repeats=repeats)
        rows.append({
            "method": name, "dtype": str(dtype).replace("torch.", ""), "T": T, "N": N, "D": D, "ratio": ratio,
            "ours_ms": round(times["ours"], 1), "loops_ms": round(times["loops"], 1),
            "speedup": round(times["loops"] / times["ours"], 2), "kept": int(mask.sum()),
            "same_keep": same_keep, "max_feature_diff": maxdiff,
        })
    return rows


def print_table(rows: list) -> None:
    r0 = rows[0]
    print(f"FastVID / HoliTom, T={r0['T']} N={r0['N']} D={r0['D']} r={r0['ratio']} {r0['dtype']}, "
          f"CPU threads={torch.get_num_threads()}")
    print(f"{'method':<9}{'ours ms':>10}{'loops ms':>11}{'speed-up':>10}{'kept':>7}  same keep, max |diff|")
    for r in rows:
        print(f"{r['method']:<9}{r['ours_ms']:>10.1f}{r['loops_ms']:>11.1f}{r['speedup']:>9.2f}x{r['kept']:>7}"
              f"  {r['same_keep']}, {r['max_feature_diff']:.1e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=3584)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=sorted(METHODS))
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    rows = run(a.frames, a.tokens, a.dim, a.ratio, a.repeats, getattr(torch, a.dtype), tuple(a.methods))
    print_table(rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
