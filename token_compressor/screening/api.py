"""`screen(video, question)` and what the model path needs from a screening result."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple, Union

from ..config import ScreeningConfig, screening_from_env
from .cache import ScreeningCache, error_counts, key_lock
from .openai_client import breaker_counts
from .planner import STATUSES, PlanOutcome
from .questions import clean_question
from .screeners import NoneScreener, make_screener
from .segments import kept_ratio, normalize_segments, sample_timestamps
from .video import VideoInfo, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreenResult:
    """One screened (video, question) pair.

    `segments` are normalised (C1) seconds of the original video; `question` is the question to
    ask (the original one whenever `status != "succeeded"`); `trace` lists the calls made (empty
    when the result came from the cache, see `cached`)."""

    segments: Tuple[Tuple[float, float], ...]
    question: str
    status: str
    duration: float
    original_question: str
    screener: str
    kept_ratio: float
    reason: Optional[str] = None
    trace: Tuple[dict, ...] = ()
    cached: bool = False

    @property
    def fell_back(self) -> bool:
        """True when screening ran but kept the whole video and the original question."""
        return self.status != "succeeded"

    def to_emc(self) -> dict:
        """EMC's output schema."""
        return {"screened_timestamps": [[s, e] for s, e in self.segments],
                "screened_question": self.question, "status": self.status}


def _incidents() -> dict:
    """Process-wide counts of what screening survived: cache errors, endpoints found down and
    requests refused because of it."""
    return {"cache_errors": sum(error_counts().values()), **breaker_counts()}


class ScreeningStats:
    """Thread-safe counters a run report reads: samples, screened (status `succeeded` by a real
    screener), fallen back (any other status), cache hits, per-status counts, kept-ratio sum, and
    since the last `reset()`: cache errors, endpoints found down (circuit opened) and samples'
    requests refused while one was (`skipped_endpoint_down`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.samples = self.screened = self.fallen_back = self.cached = 0
            self.kept_ratio_sum = 0.0
            self.by_status = {s: 0 for s in STATUSES}
            self._baseline = _incidents()

    def record(self, result: ScreenResult) -> None:
        with self._lock:
            self.samples += 1
            self.kept_ratio_sum += result.kept_ratio
            self.by_status[result.status] = self.by_status.get(result.status, 0) + 1
            self.cached += int(result.cached)
            if result.fell_back:
                self.fallen_back += 1
            elif result.screener != "none":
                self.screened += 1

    def record_unscreened(self) -> None:
        """A sample whose screening could not even start (its video unreadable to the screener):
        counted as a `failed` fallback."""
        with self._lock:
            self.samples += 1
            self.fallen_back += 1
            self.kept_ratio_sum += 1.0
            self.by_status["failed"] = self.by_status.get("failed", 0) + 1

    def record_unused(self, result: ScreenResult) -> None:
        """A `record`ed screened result that could not be applied (its kept frames could not be
        decoded): moved from screened to a `failed` fallback of the whole video."""
        with self._lock:
            self.screened -= 1
            self.fallen_back += 1
            self.kept_ratio_sum += 1.0 - result.kept_ratio
            self.by_status[result.status] -= 1
            self.by_status["failed"] = self.by_status.get("failed", 0) + 1

    def snapshot(self) -> dict:
        now = _incidents()
        with self._lock:
            return {"samples": self.samples, "screened": self.screened, "fallen_back": self.fallen_back,
                    "cached": self.cached, "by_status": dict(self.by_status),
                    **{k: now[k] - self._baseline.get(k, 0) for k in now},
                    "kept_ratio_sum": self.kept_ratio_sum,
                    "kept_ratio_mean": self.kept_ratio_sum / self.samples if self.samples else None}


STATS = ScreeningStats()


def screening_stats() -> dict:
    """A snapshot of the process-wide screening counters."""
    return STATS.snapshot()


def reset_screening_stats() -> None:
    STATS.reset()


def _result(info: VideoInfo, original: str, outcome: PlanOutcome, screener: str, cached: bool) -> ScreenResult:
    status = outcome.status if outcome.status in STATUSES else "failed"
    if status == "succeeded":
        segments = normalize_segments(outcome.segments, info.duration)
        question = clean_question(outcome.question, original)  # planner text is data
    else:  # every fallback: the whole video and the original question
        segments, question = [(0.0, info.duration)], original
    return ScreenResult(tuple((float(s), float(e)) for s, e in segments), question, status, info.duration,
                        original, screener, kept_ratio(segments, info.duration), outcome.reason,
                        tuple(outcome.trace), cached)


def screen(video: str, question: str, screener=None, *, config: Optional[ScreeningConfig] = None,
           stats: Optional[ScreeningStats] = None) -> ScreenResult:
    """Screen `video` for `question` (EMC): the kept segments and the question to ask.

    `screener`: None (from `EMC_SCREENER` / `config`), a name (`"none"`, `"llm"`), or a screener
    object (`NoneScreener`, `PlannerScreener`, ...). A missing video raises `FileNotFoundError`,
    an unreadable one `VideoError` (a `ValueError`), both naming the file; everything that fails
    inside screening (server down, timeouts, nonsense replies, a crashing screener) gives the whole
    video with the original question and the status recorded. Results that are not fallbacks are
    cached under `config.cache_dir` keyed by video fingerprint, question and screener identity;
    concurrent calls for the same key wait for the first one. Every call is counted in `stats`
    (default: the process-wide `STATS`).
    """
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, not {type(question).__name__}")
    config = config if config is not None else screening_from_env()
    if screener is None or isinstance(screener, str):
        screener = make_screener(config if screener is None else replace(config, screener=str(screener).strip().lower()))
    stats = STATS if stats is None else stats
    info = probe(video)

    if isinstance(screener, NoneScreener):
        result = _result(info, question, screener.screen_video(info, question), "none", False)
        stats.record(result)
        return result

    cache = getattr(screener, "cache", None) or ScreeningCache(config.cache_dir)
    key = cache.result_key(info.fingerprint, question, screener.identity())
    with key_lock(f"result:{cache.root}:{key}"):
        result = _cached(cache, key, info, question, screener.name)
        if result is None:
            try:
                outcome = screener.screen_video(info, question)
            except Exception as e:  # a crashing screener must not drop the sample
                log.warning("screener %s crashed on %s: %s", screener.name, info.path, e)
                outcome = PlanOutcome([(0.0, info.duration)], question, "failed",
                                      f"screener raised {type(e).__name__}: {e}", [])
            result = _result(info, question, outcome, screener.name, False)
            if result.status in ("succeeded", "no_screening_possible"):
                cache.store_result(key, {**result.to_emc(), "reason": result.reason, "video": info.path,
                                         "fingerprint": info.fingerprint, "question": question,
                                         "screener": screener.identity()})
    if result.fell_back:
        # a WARNING: screening was asked for and did not happen (after the one that says an
        # endpoint is down, its refused samples only at DEBUG: one line per dead endpoint, not per sample)
        down = "endpoint down (circuit open" in (result.reason or "")
        (log.debug if down else log.warning)("screening %s fell back to the whole video: %s (%s)",
                                             info.path, result.status, result.reason)
    stats.record(result)
    return result


def _cached(cache: ScreeningCache, key: str, info: VideoInfo, question: str, screener: str) -> Optional[ScreenResult]:
    """The cached result for `key`, or None. A record of the wrong shape (valid JSON, wrong
    types) is a miss, counted as a cache error, never an exception."""
    from .cache import note_error

    record = cache.load_result(key)
    if record is None or record.get("status") not in ("succeeded", "no_screening_possible"):
        return None
    stamps, asked = record.get("screened_timestamps"), record.get("screened_question")
    try:
        if not isinstance(stamps, list) or not all(isinstance(p, list) and len(p) == 2 and
                                                   all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                                                       math.isfinite(v) for v in p) for p in stamps):
            raise TypeError("screened_timestamps is not a list of [start, end] numbers")
        if not isinstance(asked, str):
            raise TypeError(f"screened_question is {type(asked).__name__}, not text")
        reason = record.get("reason")
        outcome = PlanOutcome([tuple(p) for p in stamps], asked, record["status"],
                              reason if isinstance(reason, str) else None)
        return _result(info, question, outcome, screener, True)
    except (TypeError, ValueError) as e:
        note_error("malformed", cache.result_path(key) or "", e)
        return None


def frame_timestamps(video: str, result: Optional[ScreenResult], num_frames: int) -> List[float]:
    """Seconds of the original video at which to sample `num_frames` frames: uniform over the
    concatenated kept segments of `result` (the whole video when `result` is None). The frame
    budget is the same as without screening."""
    info = probe(video)
    segments = normalize_segments(result.segments if result is not None else [], info.duration)
    return sample_timestamps(segments, num_frames)


def frame_indices(video: str, result: Optional[ScreenResult], num_frames: int) -> List[int]:
    """`frame_timestamps` as frame indices (`floor(t * fps)`, within the stream), for readers
    such as decord that index frames. Short segments can repeat an index."""
    return indices_for(probe(video), result, num_frames)


def indices_for(info: VideoInfo, result: Optional[ScreenResult], num_frames: int) -> List[int]:
    """`frame_indices` for a video already probed (`info`)."""
    segments = normalize_segments(result.segments if result is not None else [], info.duration)
    return [min(info.num_frames - 1, max(0, int(math.floor(t * info.fps)))) for t in sample_timestamps(segments, num_frames)]
