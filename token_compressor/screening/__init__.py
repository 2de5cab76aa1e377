"""EMC segment screening in front of the model: which parts of a video to keep for a question,
and the question to ask about them.

    result = screen("video.mp4", "what did the person do after putting down the dog?")
    result.segments, result.question, result.status, result.kept_ratio, result.to_emc()
    frame_timestamps("video.mp4", result, 16)      # where to sample the usual frame budget
    replace_question(prompt, result.question, original_question)   # options stay untouched
    screen_messages(messages)                       # qwen-vl-utils messages, screened in place
    screening_stats()                               # counters for a run report

Layout: `segments` (C1 arithmetic, pure), `questions` (prompt surgery, pure), `planner`
(ReSimplifyIt-simple over a chat and a caption function), `openai_client`, `video`, `cache`,
`screeners` (none / llm / generic), `api` (screen, counters, frame sampling), `inject` (in front
of the model: messages and the processor hook).
"""
from .api import (STATS, ScreeningStats, ScreenResult, frame_indices, frame_timestamps, reset_screening_stats,
                  screen, screening_stats)
from .cache import ScreeningCache
from .inject import install_processor_hook, screen_messages, uninstall_processor_hook
from .planner import STATUSES, PlanOutcome, parse_reply, plan
from .questions import replace_question, split_options
from .screeners import NoneScreener, PlannerScreener, llm_screener, make_screener
from .self_screener import self_screener
from .segments import (kept_duration, kept_ratio, merge_intervals, normalize_segments, original_to_virtual,
                       overlap_scores, sample_timestamps, temporal_iou, virtual_to_original)
from .video import VideoError, VideoInfo, fingerprint, probe

__all__ = [
    "STATS", "STATUSES", "NoneScreener", "PlanOutcome", "PlannerScreener", "ScreenResult", "ScreeningCache",
    "ScreeningStats", "VideoError", "install_processor_hook", "screen_messages", "uninstall_processor_hook", "VideoInfo", "fingerprint", "frame_indices", "frame_timestamps",
    "kept_duration", "kept_ratio", "llm_screener", "make_screener", "merge_intervals", "normalize_segments",
    "original_to_virtual", "overlap_scores", "parse_reply", "plan", "probe", "replace_question",
    "reset_screening_stats", "sample_timestamps", "screen", "screening_stats", "self_screener", "split_options",
    "temporal_iou", "virtual_to_original",
]
