"""Scoring-kernel benchmark: the Triton path, the compiled CPU path, the torch path and the
per-frame-loop formulation of VidCom²; and EVS's selection (one pass over the input).

Each path computes one video's VidCom² keep mask from bf16 features `[T, N, D]`:
  - `triton`: `vidcom2(..., backend="triton")` (CUDA only): three Triton passes + vectorised top-k
  - `numba`: `vidcom2(..., backend="numba")` (CPU; `auto`'s choice there): three compiled passes on
    the caller's thread count + the same top-k, under `select`'s thread policy (`kernels/threads.py`)
  - `torch`: `vidcom2(..., backend="torch")`: the blocked torch path + the same top-k, on one
    CPU thread as `select` runs it
  - `loop`: `compressors.reference.vidcom2_reference` in bf16, the authors' formulation
    (materialised gather, normalised features, difference tensors, a top-k loop over frames)
  - `evs`: the `evs` compressor (`compressors/baselines.py`) as `select` runs it: on the CPU one
    compiled screening pass over the input plus exact re-checks near the cut (`kernels/evs_scores.py`,
    `evs_keep`), elsewhere the blocked torch path
Shuffled interleaved rounds (`token_compressor/bench/timing.py`: a warm-up outside the rounds, each
round in a fresh random order), the median of `--repeats` rounds with the min-max: on CUDA timed
with CUDA events, each round rotating over enough copies of the input (>= 512 MiB in all) that no
call is served from L2; elsewhere by the host clock.

Bandwidth. The scores need three dependent passes over the input (channel variances -> kept
channels -> row norms and frame centres -> dots with the centres), so the memory-bound time is
`3 * T*N*D*2 bytes / peak`. `GB/s` below is `3 * input bytes / time` (EVS: `1 *`) and `of peak` its
ratio to the device's peak: 1.0 would be the bandwidth bound, 0.5 is "within 2x". Peak: a table by device name
on CUDA (HBM peak from the vendor's datasheet), else the read bandwidth the machine line measures
(`machine.read_bandwidth`: a 256 MiB fp32 `sum` at torch's thread count), reported with the device.

    python -m benchmarks.kernels [--frames 16 32 64 --tokens 256 --dim 3584 --repeats 7 --device cuda --threads 1]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from token_compressor.compressors.baselines import evs
from token_compressor.compressors.reference import vidcom2_reference
from token_compressor.compressors.vidcom2 import vidcom2
from token_compressor.kernels import numba_import_error, resolve_backend
from token_compressor.kernels.threads import selection_threads

from .machine import Measured, read_bandwidth
from .select_bench import synthetic_video
from .timing import device_median_ms, device_times, fmt_spread, spread

PASSES = 3
# passes over the input per path (the loop formulation is not a bandwidth path)
PATH_PASSES = {"triton": PASSES, "numba": PASSES, "torch": PASSES, "evs": 1}
# Datasheet HBM bandwidth, bytes/s, matched by substring of torch.cuda.get_device_name().
# Order matters: the more specific names first.
PEAK_BANDWIDTH = (
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM
    ("GH200", 4.0e12),
    ("B200", 8.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),  # 40 GB
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
    ("A10G", 0.6e12),
    ("A10", 0.6e12),
    ("V100", 0.9e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
)


# on CUDA, each timed repeat rotates over copies of the input totalling at least this many bytes
ROTATE_BYTES = 2**29


def copy_bandwidth(device, nbytes: int = 2**30, repeats: int = 10) -> float:
    """Measured device-to-device copy bandwidth, bytes/s, counting bytes read plus bytes written
    (the practical ceiling of a memory-bound kernel on this device). Random bf16 data, not zeros."""
    device = torch.device(device)
    src = torch.randn(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    ms = device_median_ms({"copy": lambda _: dst.copy_(src)}, [None], repeats=repeats, device=device)["copy"]
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def triton_runs(x: torch.Tensor) -> bool:
    """Whether `backend="triton"` can score `x` here (CUDA, or CPU under the interpreter)."""
    try:
        resolve_backend(x, "triton")
    except ValueError:
        return False
    return True


def device_peak(device: torch.device) -> tuple:
    """(name, peak bytes/s, how the peak was obtained)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_BANDWIDTH:
            if key in name:
                return name, peak, "datasheet"
        return name, copy_bandwidth(device, 2**28), "measured: 256 MiB copy, read + write"
    return (f"CPU, {torch.get_num_threads()} thread(s)", read_bandwidth(),
            "measured: 256 MiB fp32 sum, read, as the machine line")


def run(frames=(16, 32, 64), N: int = 256, D: int = 3584, ratio: float = 0.25, repeats: int = 7, device=None,
        peak: tuple = None, rotate_bytes: int = ROTATE_BYTES) -> dict:
    """One row per T. `peak`: `(device name, bytes/s, how obtained)` to compare against (default:
    `device_peak`)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name, peak, how = peak or device_peak(device)
    rows = []
    timing = None
    for T in frames:
        x = synthetic_video(T, N, D).to(torch.bfloat16).to(device).view(T, N, D)
        use_triton = triton_runs(x)
        use_numba = device.type == "cpu" and numba_import_error() is None
        fns = {}
        if use_triton:
            fns["triton"] = lambda v: vidcom2(v, ratio, backend="triton")

        def on_select_threads(fn):
            def path(v):
                with selection_threads(v.device):  # the thread policy `select` applies
                    return fn(v)
            return path

        if use_numba:
            fns["numba"] = on_select_threads(lambda v: vidcom2(v, ratio, backend="numba"))
        fns["torch"] = on_select_threads(lambda v: vidcom2(v, ratio, backend="torch"))
        fns["loop"] = lambda v: vidcom2_reference(v, ratio, compute_dtype=torch.bfloat16)
        fns["evs"] = on_select_threads(lambda v: evs(v, ratio))
        row = {"T": T, "N": N, "D": D, "dtype": "bfloat16", "input_MB": round(x.numel() * 2 / 1e6, 1)}
        for path in ("triton", "numba"):  # every fp32 scorer must choose the same tokens on this input
            if path in fns:
                row[f"{path}_selects_as_torch"] = bool(torch.equal(fns[path](x), fns["torch"](x)))
        if device.type == "cuda":
            copies = max(1, -(-rotate_bytes // (x.numel() * 2)))
            xs = [x] + [x.clone() for _ in range(copies - 1)]
            samples = device_times(fns, xs, repeats=repeats, device=device)
            timing = (f"median [min-max] of {repeats} shuffled interleaved rounds after a warm-up, CUDA events, "
                      f"rotating over {copies} input copies")
            del xs
        else:
            samples = device_times(fns, [x], repeats=repeats, device=device)
            timing = f"median [min-max] of {repeats} shuffled interleaved rounds after a warm-up, host clock"
        times = {path: spread(v)["median"] for path, v in samples.items()}
        for path, v in samples.items():
            row[f"{path}_spread_ms"] = spread(v)
        row["timing"] = timing
        for path, ms in times.items():
            row[f"{path}_ms"] = round(ms, 4)
        for path in ("triton", "numba", "torch", "evs"):
            if path in times:
                bw = PATH_PASSES[path] * x.numel() * 2 / (times[path] / 1e3)
                row[f"{path}_GBps"] = round(bw / 1e9, 1)
                row[f"{path}_of_peak"] = round(bw / peak, 3)
                if path != "evs":
                    row[f"loop_over_{path}"] = round(times["loop"] / times[path], 1)
        rows.append(row)
    return {"device": name, "peak_GBps": round(peak / 1e9, 1), "peak_source": how,
            "torch": torch.__version__, "rows": rows}


def print_table(result: dict, measured: Measured = None) -> None:
    print(f"VidCom² keep mask from bf16 features, device: {result['device']}, "
          f"peak {result['peak_GBps']} GB/s ({result['peak_source']}), torch {result['torch']}")
    print(f"timing: {result['rows'][0]['timing']}; ms = median, spread in the last columns")
    if measured is not None:
        print(measured.line())
    print(f"GB/s = {PASSES} passes x input bytes / time (evs: 1 pass); 'of peak' = GB/s / peak "
          f"(1.0 = bandwidth bound); evs = EVS's selection, one pass over the input")
    paths = [p for p in ("triton", "numba", "torch") if f"{p}_ms" in result["rows"][0]]
    head = f"{'T':>4}{'input MB':>10}"
    for p in paths + ["evs"]:
        head += f"{p + ' ms':>12}{'GB/s':>8}{'of peak':>9}"
    head += f"{'loop ms':>10}" + "".join(f"{'loop/' + p:>13}" for p in paths)
    print(head)
    for r in result["rows"]:
        line = f"{r['T']:>4}{r['input_MB']:>10}"
        for p in paths + ["evs"]:
            line += f"{r[p + '_ms']:>12.3f}{r[p + '_GBps']:>8.1f}{r[p + '_of_peak']:>9.3f}"
        line += f"{r['loop_ms']:>10.2f}" + "".join(f"{r['loop_over_' + p]:>12.1f}x" for p in paths)
        line += "  " + "  ".join(f"{p} {fmt_spread(r[p + '_spread_ms'], 2)}" for p in paths + ["evs", "loop"])
        same = [f"{p} {r[p + '_selects_as_torch']}" for p in ("triton", "numba") if p + "_selects_as_torch" in r]
        if same:
            line += "  same selection as torch: " + ", ".join(same)
        print(line)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=3584)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); on a "
                   "machine shared with other jobs, 1 avoids OpenMP oversubscription stalls")
    p.add_argument("--json", help="also write the result to this file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    with Measured(a.device or ("cuda" if torch.cuda.is_available() else "cpu")) as measured:
        result = run(a.frames, a.tokens, a.dim, a.ratio, a.repeats, a.device)
    result["machine"] = measured.as_dict()
    print_table(result, measured)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    for path in ("triton", "numba"):
        if not all(r.get(f"{path}_selects_as_torch", True) for r in result["rows"]):
            raise SystemExit(f"the {path} and torch paths selected different tokens")


if __name__ == "__main__":
    main()
