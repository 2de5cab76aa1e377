"""The machine line every benchmark table prints: what a reader needs to judge whether the numbers
carry over to their machine.

    machine: AMD EPYC (family 25 model 17; AVX-512, AVX512-BF16), 2 cores, torch 2 threads, read 77.0 GB/s (256 MiB fp32 sum);
             load 1.06/1.19/1.55 before, 1.40/1.22/1.54 after; torch 2.14.1, transformers 5.25.0

The read bandwidth is measured once per process (best of 7 `sum`s of a buffer far larger than
any cache, with torch's current threads); on CUDA the line names the GPU instead of measuring.
"""
from __future__ import annotations

import functools
import os
import platform
from typing import Optional, Tuple

import torch

from ..kernels.machine import measure_read_bandwidth

READ_BYTES = 2**28  # 256 MiB: far beyond any CPU cache


ISA_FLAGS = (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), with its family/model numbers and the
    vector extensions that decide which matrix kernels run (a VM may show only "AMD EPYC"),
    e.g. `AMD EPYC (family 25 model 17; AVX-512, AVX512-BF16)`; else `platform.processor()`."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = " ".join(value.split())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    extra = []
    if "cpu family" in fields and "model" in fields:
        extra.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = set(fields.get("flags", "").split())
    isa = [label for flag, label in ISA_FLAGS if flag in flags]
    if isa:
        extra.append(", ".join(isa))
    return f"{name} ({'; '.join(extra)})" if extra else name


def cores() -> int:
    """Cores this process may run on (its affinity), else `os.cpu_count()`."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> Optional[Tuple[float, float, float]]:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def read_bandwidth(nbytes: int = READ_BYTES, repeats: int = 7) -> float:
    """Measured CPU read bandwidth, bytes/s (`kernels.machine.measure_read_bandwidth`: the best of
    `repeats` `sum`s over an fp32 buffer of `nbytes`, one warm-up first), at torch's current thread
    count. Measured once per process, size, repeats and thread count (every table of one run
    compares with the same number)."""
    return _read_bandwidth(nbytes, repeats, torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _read_bandwidth(nbytes: int, repeats: int, threads: int) -> float:
    return measure_read_bandwidth(nbytes, repeats, threads=threads)


def versions() -> dict:
    out = {"torch": torch.__version__}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:
        out["transformers"] = "not installed"
    return out


def machine_info(device="cpu", bandwidth_bytes: int = READ_BYTES) -> dict:
    """What the machine line prints, except the load after (`machine_line` takes both loads)."""
    device = torch.device(device)
    info = {"cpu": cpu_model(), "cores": cores(), "torch_threads": torch.get_num_threads(), **versions()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["read_GBps"] = round(read_bandwidth(bandwidth_bytes) / 1e9, 1)
        info["read_buffer_MiB"] = bandwidth_bytes // 2**20
    return info


def _load(load) -> str:
    return "unknown" if load is None else "/".join(f"{v:.2f}" for v in load)


def machine_line(info: dict, load_before, load_after) -> str:
    """One line naming the machine (see the module docstring), with the 1/5/15-minute load
    averages before and after the table's measurements."""
    where = f"{info['cpu']}, {info['cores']} cores, torch {info['torch_threads']} threads"
    if "gpu" in info:
        where = f"GPU {info['gpu']}; host {where}"
    else:
        where += f", read {info['read_GBps']:.1f} GB/s ({info['read_buffer_MiB']} MiB fp32 sum)"
    return (f"machine: {where}; load {_load(load_before)} before, {_load(load_after)} after; "
            f"torch {info['torch']}, transformers {info['transformers']}")


class Measured:
    """`with Measured(device) as m: ...` records the machine and the load before and after the
    block; `m.line()` is the table's machine line, `m.as_dict()` the same for JSON."""

    def __init__(self, device="cpu"):
        self.device = device
        self.info = None
        self.before = self.after = None

    def __enter__(self):
        self.info = machine_info(self.device)  # measures the bandwidth first: not inside the table's time
        self.before = load_average()
        return self

    def __exit__(self, *exc):
        self.after = load_average()
        return False

    def line(self) -> str:
        return machine_line(self.info, self.before, self.after)

    def as_dict(self) -> dict:
        return {**self.info, "load_before": self.before, "load_after": self.after}
