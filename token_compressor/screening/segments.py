"""Segment arithmetic for EMC's C1 (structural continuity), as pure functions.

A *segment set* is a list of `(start_s, end_s)` pairs in seconds of the ORIGINAL video. After
`normalize_segments` it is sorted, non-overlapping, non-touching, every segment has positive
length and lies in [0, duration]. The *virtual* timeline is the concatenation of the kept segments
in original order: it runs from 0 to `kept_duration(segments)`.

Boundary convention for the virtual <-> original mapping: every segment is half-open `[s, e)` on
the virtual timeline except the last, which is closed, so a virtual time that falls exactly on a
cut maps to the START of the next kept segment.
"""
from __future__ import annotations

import bisect
import math
from typing import Iterable, List, Optional, Sequence, Tuple

Segment = Tuple[float, float]


def _as_pairs(segments: Iterable) -> List[Segment]:
    pairs = []
    for seg in segments or ():
        try:
            s, e = seg
            s, e = float(s), float(e)
        except (TypeError, ValueError):
            continue  # malformed entries (None, [], [1], "ab") carry no segment
        if math.isnan(s) or math.isnan(e):
            continue
        pairs.append((s, e))
    return pairs


def merge_intervals(segments: Iterable) -> List[Segment]:
    """Sort, merge overlapping and touching intervals and drop empty ones (end <= start).
    No clamping: used for scoring where no duration may be known. Malformed entries are ignored."""
    pairs = sorted((s, e) for s, e in _as_pairs(segments) if e > s)
    merged: List[Segment] = []
    for s, e in pairs:
        if merged and s <= merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def normalize_segments(segments: Iterable, duration: float) -> List[Segment]:
    """Enforce C1: clamp every segment to [0, duration], drop empty and reversed ones, sort, merge
    overlapping and touching ones. Returns `[(0.0, duration)]` (the whole video) when nothing is
    left. Malformed entries (not a pair of numbers) are ignored.

    `duration` must be a finite number > 0.
    """
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration={duration!r} must be a finite number of seconds > 0")
    clamped = [(min(max(s, 0.0), duration), min(max(e, 0.0), duration)) for s, e in _as_pairs(segments)]
    merged = merge_intervals(clamped)
    return merged if merged else [(0.0, duration)]


def kept_duration(segments: Sequence[Segment]) -> float:
    """Total length of a normalised segment set (= length of the virtual timeline)."""
    return float(sum(e - s for s, e in segments))


def kept_ratio(segments: Sequence[Segment], duration: float) -> float:
    """Fraction of the original video kept, in [0, 1]."""
    return min(1.0, kept_duration(segments) / float(duration)) if duration > 0 else 1.0


def _offsets(segments: Sequence[Segment]) -> List[float]:
    """Virtual start of each segment: [0, len0, len0+len1, ...]."""
    out, acc = [], 0.0
    for s, e in segments:
        out.append(acc)
        acc += e - s
    return out


def virtual_to_original(t: float, segments: Sequence[Segment]) -> float:
    """Map a time on the virtual (concatenated) timeline to the original video.

    `segments` must be normalised and non-empty; `t` must be in [0, kept_duration(segments)].
    """
    if not segments:
        raise ValueError("no segments")
    total = kept_duration(segments)
    if not 0.0 <= t <= total + 1e-9:
        raise ValueError(f"virtual time {t!r} is outside [0, {total!r}]")
    offsets = _offsets(segments)
    i = max(0, bisect.bisect_right(offsets, t) - 1)
    s, e = segments[i]
    return min(e, s + (t - offsets[i]))


def original_to_virtual(t: float, segments: Sequence[Segment]) -> Optional[float]:
    """Map an original time to the virtual timeline; `None` when `t` is not in a kept segment."""
    offsets = _offsets(segments)
    for (s, e), off in zip(segments, offsets):
        if s <= t <= e:
            return off + (t - s)
    return None


def sample_timestamps(segments: Sequence[Segment], num_frames: int) -> List[float]:
    """`num_frames` timestamps (seconds of the ORIGINAL video) spread uniformly over the
    concatenated kept segments: the centres of `num_frames` equal bins of the virtual timeline.

    Every timestamp lies inside a kept segment, they are non-decreasing, and a segment of length
    L gets `num_frames * L / total` frames up to one. With the whole video as the only segment this
    is plain uniform sampling.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} must be a positive integer")
    total = kept_duration(segments)
    if total <= 0:
        raise ValueError("segments are empty; normalise them first")
    n = int(num_frames)
    return [virtual_to_original((i + 0.5) * total / n, segments) for i in range(n)]


def intersection_length(a: Sequence[Segment], b: Sequence[Segment]) -> float:
    """|A ∩ B| for two merged (sorted, disjoint) interval sets, by a two-pointer sweep."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def temporal_iou(a: Iterable, b: Iterable) -> float:
    """True multi-interval temporal IoU |A ∩ B| / |A ∪ B| after merging each set. Two empty sets
    score 1.0; one empty set scores 0.0."""
    a, b = merge_intervals(a), merge_intervals(b)
    inter = intersection_length(a, b)
    union = kept_duration(a) + kept_duration(b) - inter
    if union <= 0:
        return 1.0
    return max(0.0, min(1.0, inter / union))


def overlap_scores(pred: Iterable, gt: Iterable) -> dict:
    """Kept-time scores of predicted against ground-truth interval sets:
    `{"iou", "precision", "recall", "f1"}`. Precision = |P∩G|/|P| (how much kept time is needed),
    recall = |P∩G|/|G| (how much needed time is kept)."""
    p, g = merge_intervals(pred), merge_intervals(gt)
    inter = intersection_length(p, g)
    lp, lg = kept_duration(p), kept_duration(g)
    precision = inter / lp if lp > 0 else (1.0 if lg <= 0 else 0.0)
    recall = inter / lg if lg > 0 else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"iou": temporal_iou(p, g), "precision": min(1.0, precision), "recall": min(1.0, recall), "f1": min(1.0, f1)}
