"""`token-compressor screen VIDEO QUESTION` and `token-compressor emc-eval SPLIT.json RESULTS.json`."""
from __future__ import annotations

import json
import os
from typing import List, Optional


def run_screen(args) -> int:
    from ..config import screening_from_env
    from ..screening import screen

    config = screening_from_env()
    result = screen(args.video, args.question, screener=args.screener, config=config)
    if args.json:
        out = result.to_emc()
        if args.verbose:
            out.update({"kept_ratio": result.kept_ratio, "reason": result.reason, "cached": result.cached,
                        "screener": result.screener, "trace": list(result.trace)})
        print(json.dumps(out, ensure_ascii=False))
    else:
        spans = ", ".join(f"[{s:.2f}, {e:.2f}]" for s, e in result.segments)
        print(f"status      {result.status}{'' if not result.reason else ' (' + result.reason + ')'}")
        print(f"segments    {spans}  (kept {100 * result.kept_ratio:.1f}% of {result.duration:.2f}s)")
        print(f"question    {result.question}")
    return 0


# --- emc-eval -----------------------------------------------------------------------------------

# A split or results file: thousands of items, each nesting 4 deep ([{"gt_timestamp": [[s, e]]}]).
MAX_EVAL_CHARS = 256 << 20
MAX_EVAL_DEPTH = 32


def _load(path: str):
    from ..bounded_json import JSONLimitError, loads_bounded
    from ..files import check_regular_file, open_regular

    check_regular_file(path, "JSON file", FileNotFoundError if not os.path.lexists(path) else ValueError)
    with open_regular(path, "r", encoding="utf-8", what="JSON file") as f:
        text = f.read(MAX_EVAL_CHARS + 1)
    try:
        return loads_bounded(text, MAX_EVAL_DEPTH, MAX_EVAL_CHARS, path)
    except JSONLimitError:
        raise
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None


def _items(split) -> List[tuple]:
    """(key, item) pairs of a split: a list (key = position) or a dict (key = its key)."""
    if isinstance(split, list):
        return [(str(i), item) for i, item in enumerate(split)]
    if isinstance(split, dict):
        return [(str(k), v) for k, v in split.items()]
    raise ValueError("SPLIT.json must hold a list or an object of items")


def _item_id(item) -> Optional[str]:
    if not isinstance(item, dict):
        return None
    if item.get("id") is not None:
        return str(item["id"])
    if item.get("vid_name") is not None and item.get("question") is not None:
        return f"{item['vid_name']}::{item['question']}"
    return None


def _match(split_items, results) -> List[Optional[dict]]:
    """For each split item, its result: by key (dict results: position/key, `id`, or
    `vid_name::question`), by `id`/`vid_name`+`question` fields in a results list, else by
    position in a results list of the same length."""
    if isinstance(results, dict):
        out = []
        for key, item in split_items:
            iid = _item_id(item)
            out.append(results.get(key) if key in results else results.get(iid) if iid else None)
        return out
    if not isinstance(results, list):
        raise ValueError("RESULTS.json must hold a list or an object of results")
    by_id = {_item_id(r): r for r in results if _item_id(r) is not None}
    if by_id:
        return [by_id.get(_item_id(item)) for _, item in split_items]
    if len(results) != len(split_items):
        raise ValueError(f"RESULTS.json has {len(results)} results for {len(split_items)} items and no ids to match them by")
    return list(results)


def _seconds(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _intervals(value, what: str) -> List[tuple]:
    """`value` as [(start, end), ...] seconds: a list of [start, end] pairs of numbers, or one
    flat [start, end]. Anything else (a string such as "1-3", null, a number, a pair of
    strings) raises ValueError naming `what`, the value and the expected shape."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_seconds(v) for v in value):
        value = [value]  # a single flat [s, e]
    if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 and
                                                all(_seconds(v) for v in p) for p in value):
        return [(float(s), float(e)) for s, e in value]
    shown = json.dumps(value)[:80] if not isinstance(value, float) else repr(value)
    raise ValueError(f"{what} is {shown}; expected a list of [start, end] pairs of seconds, e.g. [[1.5, 4.0]]")


def _name(key: str, item) -> str:
    iid = _item_id(item)
    return f"item {key}" + (f" ({iid})" if iid and iid != key else "")


def _duration(item: dict, name: str) -> Optional[float]:
    """The item's `vid_duration` (or `duration`) in seconds, None when absent; a ValueError naming
    the item when it is not a finite number of seconds > 0."""
    import math

    key = "vid_duration" if "vid_duration" in item else "duration"
    value = item.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"split {name}: {key} is {json.dumps(value)[:40]}; expected a number of seconds > 0")
    return seconds


def _check_ground_truth(gt: List[tuple], duration: Optional[float], name: str) -> None:
    """Ground truth is scored as given: a reversed pair, a pair outside [0, duration] or one that
    covers no time is an error naming the item, never clipped or dropped (a reversed pair used to
    become nothing, and nothing is recalled perfectly)."""
    for s, e in gt:
        if s > e:
            raise ValueError(f"split {name}: gt_timestamp [{s:g}, {e:g}] is reversed (start after end)")
        if s < 0 or (duration is not None and e > duration):
            raise ValueError(f"split {name}: gt_timestamp [{s:g}, {e:g}] lies outside the video "
                             f"(0 to {'?' if duration is None else format(duration, 'g')} s)")
    if not any(e > s for s, e in gt):
        raise ValueError(f"split {name}: gt_timestamp {[list(p) for p in gt]} covers no time")


def evaluate(split, results) -> dict:
    """Per-item and mean scores of EMC results against `gt_timestamp`: true multi-interval IoU,
    kept-time precision/recall/F1 and the kept ratio. A missing result, or one whose status is not
    `succeeded`, is scored as what the model gets: the whole video."""
    from ..screening.segments import kept_duration, merge_intervals, normalize_segments, overlap_scores

    split_items = _items(split)
    matched = _match(split_items, results)
    rows, statuses, missing = [], {}, 0
    for (key, item), res in zip(split_items, matched):
        if not isinstance(item, dict) or "gt_timestamp" not in item:
            raise ValueError(f"split item {key} has no gt_timestamp")
        name = _name(key, item)
        gt_raw = _intervals(item["gt_timestamp"], f"split {name}: gt_timestamp")
        duration = _duration(item, name)
        _check_ground_truth(gt_raw, duration, name)
        gt = merge_intervals(gt_raw)
        if res is None:
            missing += 1
            status = "missing"
        else:
            status = str(res.get("status", "succeeded")) if isinstance(res, dict) else "failed"
        statuses[status] = statuses.get(status, 0) + 1
        pred_raw = None
        if isinstance(res, dict) and status == "succeeded":
            pred_raw = _intervals(res.get("screened_timestamps"),
                                  f"result for {_name(key, item)}: screened_timestamps")
        if duration is None:
            duration = max([e for _, e in gt] + [e for _, e in merge_intervals(pred_raw or [])] + [0.0]) or None
        if duration:
            gt = normalize_segments(gt, duration) if gt else []
            pred = normalize_segments(pred_raw or [], duration)
        else:
            pred = merge_intervals(pred_raw or [])
        scores = overlap_scores(pred, gt)
        scores["kept_ratio"] = kept_duration(pred) / duration if duration else None
        rows.append({"key": key, "id": _item_id(item), "status": status, **scores})

    def mean(name):
        vals = [r[name] for r in rows if r[name] is not None]
        return sum(vals) / len(vals) if vals else None

    summary = {"items": len(rows), "missing": missing, "status": statuses,
               **{name: mean(name) for name in ("iou", "precision", "recall", "f1", "kept_ratio")}}
    return {"summary": summary, "items": rows}


def run_eval(args) -> int:
    report = evaluate(_load(args.split), _load(args.results))
    if args.json:
        print(json.dumps(report if args.per_item else report["summary"], ensure_ascii=False))
        return 0
    s = report["summary"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{'items':<12}{s['items']}")
    print(f"{'missing':<12}{s['missing']}")
    print(f"{'status':<12}{', '.join(f'{k}={v}' for k, v in sorted(s['status'].items()))}")
    for name in ("iou", "precision", "recall", "f1", "kept_ratio"):
        print(f"{name:<12}{fmt(s[name])}")
    if args.per_item:
        print()
        print(f"{'item':<24}{'status':<24}{'iou':>8}{'prec':>8}{'rec':>8}{'f1':>8}{'kept':>8}")
        for r in report["items"]:
            print(f"{(r['id'] or r['key'])[:23]:<24}{r['status']:<24}{fmt(r['iou']):>8}{fmt(r['precision']):>8}"
                  f"{fmt(r['recall']):>8}{fmt(r['f1']):>8}{fmt(r['kept_ratio']):>8}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("screen", help="EMC screening: the segments of VIDEO to keep for QUESTION and the rewritten question")
    p.add_argument("video")
    p.add_argument("question")
    p.add_argument("--screener", choices=["none", "llm"], default=None, help="default: EMC_SCREENER")
    p.add_argument("--json", action="store_true", help="print EMC's schema as JSON")
    p.add_argument("--verbose", action="store_true", help="with --json: also kept ratio, reason, cache hit and trace")
    p.set_defaults(func=run_screen)

    p = sub.add_parser("emc-eval", help="score EMC screening results against gt_timestamp (temporal IoU, kept-time P/R/F1)")
    p.add_argument("split", help="benchmark items with gt_timestamp (list, or object keyed by id)")
    p.add_argument("results", help="EMC results: list (by position, or with id / vid_name+question) or object keyed like the split")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--per-item", action="store_true", help="also per-item scores")
    p.set_defaults(func=run_eval)
