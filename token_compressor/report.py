"""The run report: what compression (and EMC screening) saved over a whole run.

The patched `generate` of every Qwen-VL class calls `RECORDER.measure(...)` when the recorder is
active (lmms-eval runs through the entry point, and the launcher). Per call it
records the batch size, the visual tokens before and after compression, the time spent in
`model.generate` and the peak CUDA memory. The figures follow the VidCom² authors' definitions:

- `LLM_time_s`: the summed time of `model.generate` calls (vision encoder, compression, prefill
  and decoding). On CUDA the device is synchronised before and after the call, which measures
  what their CUDA events measure; on CPU it is wall-clock time.
- `Total_time_s`: wall clock from the start of the first `generate` call to the end of the last,
  i.e. the evaluation loop including every later sample's video loading and preprocessing (only
  the first sample's preparation, before its `generate`, is outside the span).
- `Peak_mem_MB`: `torch.cuda.max_memory_allocated`, reset before each call; the maximum over
  calls. `None` without CUDA (no CUDA call is made then).

With several processes (accelerate ranks) each rank records its own calls; `finalize` gathers the
summaries to rank 0, which prints one merged table (counts and `LLM_time_s` summed, `Total_time_s`
and `Peak_mem_MB` the maximum over ranks, every rank's own summary kept under `per_rank`) and
writes it as JSON next to lmms-eval's results when `--output_path` was given.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

logger = logging.getLogger("token_compressor")

REPORT_SUFFIX = "_token_compressor.json"


def eval_path_of_caller(max_depth: int = 60) -> str:
    """Which code called `generate`: `chat` or `simple` (an lmms-eval Qwen wrapper of that kind),
    else `python`."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            break
        name = frame.f_globals.get("__name__", "")
        if name.startswith("lmms_eval.models.chat."):
            return "chat"
        if name.startswith("lmms_eval.models.simple."):
            return "simple"
        frame = frame.f_back
    return "python"


def lmms_eval_docs_of_caller(samples: int, max_depth: int = 60) -> Optional[List[dict]]:
    """lmms-eval's document ids of the batch being generated, one `{"task", "doc_id"}` per row, read
    from the calling lmms-eval wrapper's `doc_id` / `task` locals (every Qwen wrapper, chat and
    simple, unpacks a chunk into them before it calls `generate`); None outside lmms-eval or when
    they do not match the batch (then the run report simply has no per-sample rows for it)."""
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if frame.f_globals.get("__name__", "").startswith("lmms_eval.models."):
            ids, tasks = frame.f_locals.get("doc_id"), frame.f_locals.get("task")
            if isinstance(ids, (tuple, list)) and len(ids) == samples:
                if not isinstance(tasks, (tuple, list)) or len(tasks) != samples:
                    tasks = [tasks if isinstance(tasks, str) else None] * samples
                return [{"task": t if isinstance(t, str) else None, "doc_id": int(d) if isinstance(d, int) else d}
                        for t, d in zip(tasks, ids)]
            return None
        frame = frame.f_back
    return None


def _count(input_ids: Optional[torch.Tensor], token_id: Optional[int]) -> int:
    if input_ids is None or token_id is None:
        return 0
    return int((input_ids == token_id).sum())


def visual_token_count(model, input_ids: Optional[torch.Tensor], with_images: bool) -> int:
    """Video tokens (and image tokens when images count) in a prompt, from the model's config."""
    config = getattr(model, "config", None)
    n = _count(input_ids, getattr(config, "video_token_id", None))
    if with_images:
        n += _count(input_ids, getattr(config, "image_token_id", None))
    return n


@dataclass
class _Call:
    start: float
    device: Optional[torch.device]  # a CUDA device, or None


class Recorder:
    """Process-wide, thread-safe accumulator of `generate` calls (see the module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self.active = False
        self.reset()

    def recording(self) -> bool:
        """Active, and not suspended in this thread."""
        return self.active and not getattr(self._local, "suspended", 0)

    @contextlib.contextmanager
    def suspended(self):
        """Calls made inside (EMC's `self` screener asking the model) are not the run's samples."""
        self._local.suspended = getattr(self._local, "suspended", 0) + 1
        try:
            yield
        finally:
            self._local.suspended -= 1

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.samples = 0
            self.before = 0
            self.after = 0
            self.compressed_samples = 0
            self.skipped_samples = 0
            self.llm_time_s = 0.0
            self.first_start: Optional[float] = None
            self.last_end: Optional[float] = None
            self.peak_mem_mb: Optional[float] = None
            self.paths: Dict[str, int] = {}
            self.model_types: Dict[str, int] = {}
            self.methods: Dict[str, int] = {}
            self.per_sample: List[dict] = []  # lmms-eval runs: one row per document, by doc id
            # models allowed to run uncompressed (TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1): name -> times seen
            self.uncompressed_models: Dict[str, int] = {}

    def note_uncompressed(self, name: str) -> None:
        """A model token-compressor cannot compress ran uncompressed with COMPRESSOR set, as allowed."""
        with self._lock:
            self.uncompressed_models[name] = self.uncompressed_models.get(name, 0) + 1

    # -- one generate call ------------------------------------------------------------------
    def begin(self, model) -> _Call:
        device = getattr(model, "device", None)
        cuda = device if isinstance(device, torch.device) and device.type == "cuda" else None
        if cuda is not None:
            torch.cuda.synchronize(cuda)
            torch.cuda.reset_peak_memory_stats(cuda)
        return _Call(time.perf_counter(), cuda)

    def end(self, call: _Call, *, model, path: str, samples: int, before: int, after: int,
            method: Optional[str], skipped: bool = False, per_sample: Optional[List[dict]] = None) -> None:
        """Count one call; `skipped`: compression was asked for but impossible for this call
        (e.g. `inputs_embeds` only), which then ran uncompressed. `per_sample`: one dict per row
        (lmms-eval's task and doc id, visual tokens before/after), kept for the report."""
        peak = None
        if call.device is not None:
            torch.cuda.synchronize(call.device)
            peak = torch.cuda.max_memory_allocated(call.device) / 2**20
        stop = time.perf_counter()
        model_type = str(getattr(getattr(model, "config", None), "model_type", "unknown"))
        with self._lock:
            self.calls += 1
            self.samples += samples
            self.before += before
            self.after += after
            if method is not None:
                self.compressed_samples += samples
                self.methods[method] = self.methods.get(method, 0) + samples
            if skipped:
                self.skipped_samples += samples
            self.llm_time_s += stop - call.start
            self.first_start = call.start if self.first_start is None else min(self.first_start, call.start)
            self.last_end = stop if self.last_end is None else max(self.last_end, stop)
            if peak is not None:
                self.peak_mem_mb = peak if self.peak_mem_mb is None else max(self.peak_mem_mb, peak)
            self.paths[path] = self.paths.get(path, 0) + samples
            self.model_types[model_type] = self.model_types.get(model_type, 0) + samples
            self.per_sample.extend(per_sample or ())

    # -- summaries ----------------------------------------------------------------------------
    def summary(self, *, compressor: Optional[str], ratio: Optional[float], rank: int = 0,
                screening: Optional[dict] = None, options: Optional[dict] = None) -> dict:
        """This process's figures as a JSON-able dict (the shape `merge` takes); `options`: the
        compressor's keyword options from its variables (what a rerun needs besides the ratio)."""
        with self._lock:
            total = (self.last_end - self.first_start) if self.calls else 0.0
            return {
                "rank": rank,
                "compressor": compressor,
                "ratio": ratio,
                "options": dict(options or {}),
                "samples": self.samples,
                "generate_calls": self.calls,
                "compressed_samples": self.compressed_samples,
                "skipped_samples": self.skipped_samples,
                "visual_tokens_before": self.before,
                "visual_tokens_after": self.after,
                "LLM_time_s": self.llm_time_s,
                "Total_time_s": total,
                "Peak_mem_MB": self.peak_mem_mb,
                "eval_paths": dict(self.paths),
                "model_types": dict(self.model_types),
                "uncompressed_models": dict(self.uncompressed_models),
                "screening": screening,
                "per_sample": list(self.per_sample),
            }


RECORDER = Recorder()


def _sum_dicts(dicts: Sequence[Optional[dict]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def merge(summaries: Sequence[dict]) -> dict:
    """Merge per-rank summaries: counts and `LLM_time_s` summed; `Total_time_s` and
    `Peak_mem_MB` the maximum (ranks run side by side); the achieved ratio is
    after / before over all ranks; `eval_path` names the path(s) that ran."""
    if not summaries:
        raise ValueError("merge() needs at least one summary")
    first = summaries[0]
    before = sum(s["visual_tokens_before"] for s in summaries)
    after = sum(s["visual_tokens_after"] for s in summaries)
    peaks = [s["Peak_mem_MB"] for s in summaries if s.get("Peak_mem_MB") is not None]
    paths = _sum_dicts([s.get("eval_paths") for s in summaries])
    merged = {
        "compressor": first.get("compressor"),
        "ratio": first.get("ratio"),
        "options": dict(first.get("options") or {}),
        "eval_path": "+".join(sorted(paths)) if paths else None,
        "model_types": sorted(_sum_dicts([s.get("model_types") for s in summaries])),
        "samples": sum(s["samples"] for s in summaries),
        "generate_calls": sum(s["generate_calls"] for s in summaries),
        "compressed_samples": sum(s["compressed_samples"] for s in summaries),
        "skipped_samples": sum(s.get("skipped_samples", 0) for s in summaries),
        "uncompressed_models": sorted(_sum_dicts([s.get("uncompressed_models") for s in summaries])),
        "visual_tokens_before": before,
        "visual_tokens_after": after,
        "achieved_ratio": (after / before) if before else None,
        "LLM_time_s": sum(s["LLM_time_s"] for s in summaries),
        "Total_time_s": max(s["Total_time_s"] for s in summaries),
        "Peak_mem_MB": max(peaks) if peaks else None,
        "world_size": len(summaries),
        "screening": _merge_screening([s.get("screening") for s in summaries]),
        # every rank's documents, in lmms-eval's order (task, doc id)
        "per_sample": sorted((row for s in summaries for row in s.get("per_sample") or ()),
                             key=lambda row: (str(row.get("task")), str(row.get("doc_id")))),
        "per_rank": [{k: v for k, v in s.items() if k != "per_sample"} for s in summaries],
    }
    return merged


def _merge_screening(parts: Sequence[Optional[dict]]) -> Optional[dict]:
    parts = [p for p in parts if p]
    if not parts:
        return None
    samples = sum(p["samples"] for p in parts)
    kept_sum = sum(p["kept_ratio_sum"] for p in parts)
    return {
        "screener": parts[0].get("screener"),
        "samples": samples,
        "screened": sum(p["screened"] for p in parts),
        "fallen_back": sum(p["fallen_back"] for p in parts),
        "cached": sum(p["cached"] for p in parts),
        **{k: sum(p.get(k, 0) for p in parts) for k in ("cache_errors", "endpoint_down", "skipped_endpoint_down")},
        "by_status": _sum_dicts([p.get("by_status") for p in parts]),
        "kept_ratio_sum": kept_sum,
        "kept_ratio_mean": kept_sum / samples if samples else None,
    }


# A run whose kept share differs from R_RATIO by more than this (absolute, in shares of the visual
# tokens) gets a WARNING naming why. 0.05 is well above what per-frame rounding moves on real
# videos (half a token per frame of hundreds) and well below the published budgets' gaps (DyCoke
# at r=0.25 keeps about 0.6).
RATIO_MARGIN = 0.05

_GAP_REASONS = {
    "dycoke": "DyCoke's published budget: its TTM stage prunes only the second frame of each pair (and "
              "re-prunes every 4th frame), so it keeps about (1 + r)/2 of the video; DYCOKE_K sets the pruned "
              "frames' merging ratio (default 1 - R_RATIO)",
    "fastvid": "FastVID's published caps: a frame keeps at most N tokens, at most N//2 of them context, and only "
               "the last frame of a run of near-identical frames gets any; TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET=1 "
               "gives the dropped budget back",
    "holitom": "HoliTom's temporal windows removed more than 1 - r of a static video, and everything they leave "
               "is kept (its published rule; no option changes it)",
    "evs": "EVS keeps at least one frame's tokens (max(N, int(T*N*r))), which is more than r on short videos",
    "vidcom2": "VidCom²'s frame budgets are clamped at N tokens and keep at least one token per frame; short or "
               "very uneven videos move the share",
}


def ratio_gap_warning(report: dict, margin: float = RATIO_MARGIN) -> Optional[str]:
    """The WARNING line for a run whose achieved ratio differs from the asked one by more than
    `margin`, naming the method's reason; None when it does not (or nothing was compressed)."""
    asked, achieved, method = report.get("ratio"), report.get("achieved_ratio"), report.get("compressor")
    if asked is None or achieved is None or not report.get("compressed_samples"):
        return None
    if abs(achieved - asked) <= margin:
        return None
    options = report.get("options") or {}
    why = _GAP_REASONS.get(method, f"{method}'s own budget rule")
    if method == "fastvid" and options.get("fill_budget"):
        why = "FastVID with fill_budget still keeps at most N tokens per frame"
    return (f"token_compressor: WARNING: achieved ratio {achieved:.4f} differs from R_RATIO={asked:g} by more "
            f"than {margin:g}: {why}")


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(report: dict) -> str:
    """The merged report as a plain-text table."""
    rows = [
        ("compressor", str(report["compressor"] or "off")),
        ("ratio (asked)", _fmt(report["ratio"], "g") if report["compressor"] else "-"),
        ("options", ", ".join(f"{k}={v}" for k, v in sorted((report.get("options") or {}).items())) or "defaults"),
        ("eval path", str(report["eval_path"] or "-")),
        ("model types", ", ".join(report["model_types"]) or "-"),
        ("samples", str(report["samples"])),
        ("compressed samples", str(report["compressed_samples"])),
        ("visual tokens before", str(report["visual_tokens_before"])),
        ("visual tokens after", str(report["visual_tokens_after"])),
        ("achieved ratio", _fmt(report["achieved_ratio"], ".4f")),
        ("LLM_time_s", _fmt(report["LLM_time_s"], ".3f")),
        ("Total_time_s", _fmt(report["Total_time_s"], ".3f")),
        ("Peak_mem_MB", _fmt(report["Peak_mem_MB"], ".1f")),
        ("ranks", str(report["world_size"])),
    ]
    if report.get("skipped_samples"):
        rows.insert(6, ("not compressible (ran as is)", str(report["skipped_samples"])))
    if report.get("uncompressed_models"):
        rows.insert(5, ("UNCOMPRESSED models (allowed)", ", ".join(report["uncompressed_models"])))
    scr = report.get("screening")
    if scr:
        rows += [
            ("EMC screener", str(scr.get("screener"))),
            ("screened samples", str(scr["screened"])),
            ("fallen back", str(scr["fallen_back"])),
            ("endpoint down (skipped)", f"{scr.get('endpoint_down', 0)} ({scr.get('skipped_endpoint_down', 0)})"),
            ("screening cache errors", str(scr.get("cache_errors", 0))),
            ("kept duration (mean)", _fmt(scr["kept_ratio_mean"], ".4f")),
        ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (max(len(v) for _, v in rows) + 2) + "+"
    vwidth = len(line) - width - 7
    body = [f"| {k.ljust(width)} | {v.ljust(vwidth)} |" for k, v in rows]
    return "\n".join(["token-compressor run report", line, *body, line])


def output_path_from_argv(argv: Sequence[str]) -> Optional[str]:
    """lmms-eval's `--output_path` value in `argv` (`--output_path X` or `--output_path=X`)."""
    for i, arg in enumerate(argv):
        if arg == "--output_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--output_path="):
            return arg.split("=", 1)[1]
    return None


def report_file(output_path: str, since: float) -> str:
    """Where the JSON report goes: next to the newest `*_results.json` lmms-eval wrote under
    `output_path` (a folder, or a file whose folder is used) after `since` (a `time.time()`),
    named `<its date id>_token_compressor.json`; else `token_compressor_report.json` in the
    output folder."""
    root = output_path if not os.path.splitext(output_path)[1] else (os.path.dirname(output_path) or ".")
    found = [p for p in glob.glob(os.path.join(root, "**", "*_results.json"), recursive=True)
             if os.path.getmtime(p) >= since - 1.0]
    if found:
        newest = max(found, key=os.path.getmtime)
        return newest[: -len("_results.json")] + REPORT_SUFFIX
    return os.path.join(root, "token_compressor_report.json")


def gather_to_rank0(summary: dict) -> Optional[List[dict]]:
    """Every rank's summary on rank 0 (None on other ranks); `[summary]` without a process
    group."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [summary]
    gathered: List[Optional[dict]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, summary)
    return gathered if dist.get_rank() == 0 else None
