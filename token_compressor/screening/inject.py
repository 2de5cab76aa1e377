"""EMC screening in front of a Qwen-VL model, on the qwen-vl-utils message format.

`screen_messages(messages)` screens every user turn that holds one local video and a question:
on success the question text is replaced (multiple-choice options untouched) and the video item
becomes the list of frames sampled uniformly over the CONCATENATED kept segments, with the same
frame budget as without screening (`nframes` of the item, else qwen-vl-utils' fps rule over the
whole video). qwen-vl-utils reads such a frame list as a video whose timeline is the kept one
(`sample_fps` = frames / kept seconds). On any fallback (and when the whole video is kept) the
item stays exactly as it was, so the model sees what it would have seen without screening.

`install_processor_hook(config)` runs `screen_messages` inside `apply_chat_template` of the Qwen-VL
processor classes: every pipeline that templates its messages before `process_vision_info` (all
of lmms-eval's Qwen wrappers, chat and simple) then screens without a code change. This is how
`EMC_SCREENER` works under lmms-eval and the launcher.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
from typing import Dict, List, Optional

from ..config import ConfigError, ScreeningConfig, screening_from_env
from .api import STATS, ScreenResult, indices_for, screen
from .cache import ScreeningCache
from .questions import replace_question, split_options
from .segments import kept_duration
from .video import probe

log = logging.getLogger(__name__)

MARK = "token_compressor_screening"  # set on a screened video item: its status
CLIP_KEYS = ("video_start", "video_end")  # qwen-vl-utils' clip bounds of a video item, in seconds
_LOCAL = threading.local()


def _local_path(value) -> Optional[str]:
    if not isinstance(value, str):
        return None
    if value.startswith("file://"):
        return value[len("file://"):]
    if "://" in value:
        return None
    return value


def _conversations(messages) -> List[list]:
    """One conversation (a list of message dicts) or a batch of them -> a list of conversations."""
    if not messages:
        return []
    if isinstance(messages[0], dict):
        return [messages]
    return [c for c in messages if isinstance(c, list)]


def _frame_budget(item: dict, total_frames: int, fps: float) -> int:
    """The frames qwen-vl-utils would sample from the whole video for this item."""
    from qwen_vl_utils.vision_process import smart_nframes

    ele = {k: item[k] for k in ("nframes", "fps", "min_frames", "max_frames") if k in item}
    return int(smart_nframes(ele, total_frames=total_frames, video_fps=fps))


def _frames_item(item: dict, path: str, result: ScreenResult) -> dict:
    """The video item rewritten to the frames sampled over the kept segments."""
    from PIL import Image

    from ..video import read_frames_at

    info = probe(path)
    n = _frame_budget(item, info.num_frames, info.fps)
    indices = indices_for(info, result, n)
    frames = [Image.fromarray(f) for f in read_frames_at(path, indices)]
    sample_fps = n / max(kept_duration(result.segments), 1e-6)
    new = {k: v for k, v in item.items() if k not in ("video", "nframes", "fps", "min_frames", "max_frames",
                                                          "video_start", "video_end")}
    new.update(video=frames, sample_fps=sample_fps, raw_fps=sample_fps)
    return new


def screen_messages(messages, screener=None, *, config: Optional[ScreeningConfig] = None) -> List[ScreenResult]:
    """Screen the videos of `messages` (one conversation or a batch) IN PLACE; returns the results.

    A user turn is screened when its content holds exactly one video given as a local path and at
    least one text item (the last text item is the question; options after it stay). Items already
    screened (marked with `MARK`) are skipped, so templating the same messages twice screens once.
    `screener`/`config` as in `screen()`. Screening never drops the sample: a video the screener
    cannot read, kept frames that cannot be decoded, or an item with clip bounds (`video_start` /
    `video_end`: screening plans over whole videos) leave the item as it was (a WARNING, and
    counted as `failed` in `screening_stats()`)."""
    results = []
    for conversation in _conversations(messages):
        for message in conversation:
            content = message.get("content") if isinstance(message, dict) else None
            if message.get("role", "user") != "user" or not isinstance(content, list):
                continue
            videos = [i for i, c in enumerate(content) if isinstance(c, dict) and c.get("type", "video") == "video"
                      and "video" in c]
            texts = [i for i, c in enumerate(content) if isinstance(c, dict) and c.get("type") == "text"
                     and isinstance(c.get("text"), str)]
            if len(videos) != 1 or not texts or MARK in content[videos[0]]:
                continue
            item = content[videos[0]]
            path = _local_path(item["video"])
            if path is None:
                continue
            clip = [item.get(k) for k in CLIP_KEYS]
            if any(v is not None for v in clip):
                # the screeners plan over whole videos: a plan could keep seconds outside the clip
                # the item asks for, so such an item goes to the model as asked (counted)
                log.warning("screening skipped for %s: the item asks for its clip %s = %s and screening "
                            "covers whole videos only; the sample goes to the model unscreened, clip as asked",
                            path, "/".join(CLIP_KEYS), clip)
                STATS.record_unscreened()
                item[MARK] = "failed"
                continue
            text = content[texts[-1]]["text"]
            stem, _ = split_options(text)
            try:
                result = screen(path, stem.strip() or text, screener, config=config)
            except (OSError, ValueError) as e:  # a video the screener cannot read: the model's reader decides
                log.warning("screening skipped for %s (%s); the sample goes to the model unscreened", path, e)
                STATS.record_unscreened()
                item[MARK] = "failed"
                continue
            if not result.fell_back:
                if result.kept_ratio < 1.0:  # the whole video kept (e.g. the `none` screener): sample as usual
                    try:
                        content[videos[0]] = _frames_item(item, path, result)
                    except (OSError, ValueError) as e:  # frames of the kept part unreadable: the whole video
                        log.warning("screening of %s: cannot read the kept frames (%s); the whole video is used",
                                    path, e)
                        STATS.record_unused(result)
                        item[MARK] = "failed"
                        continue
                if result.question != result.original_question:
                    content[texts[-1]] = {**content[texts[-1]],
                                          "text": replace_question(text, result.question, result.original_question)}
            content[videos[0]][MARK] = result.status
            results.append(result)
    return results


# -- the processor hook ------------------------------------------------------------------------

_PATCHED: Dict[type, object] = {}  # processor class -> its own apply_chat_template (None: inherited)
_SCREENERS: Dict[object, object] = {}


def _processor_classes() -> list:
    import transformers

    return [transformers.Qwen2VLProcessor, transformers.Qwen2_5_VLProcessor, transformers.Qwen3VLProcessor]


def find_model_for(processor, max_depth: int = 40):
    """The Qwen-VL model that goes with `processor`, found on the caller's stack: an object in a
    calling frame (`self` of an lmms-eval wrapper, or a local) holding both. Used by
    `EMC_SCREENER=self`, where no code hands the model to the screener."""
    from ..models import FAMILIES

    classes = tuple(f.model_class() for f in FAMILIES.values())
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            break
        for value in list(frame.f_locals.values()):
            if isinstance(value, classes):
                return value
            for attr in ("_model", "model"):
                candidate = value.__dict__.get(attr) if hasattr(value, "__dict__") else None
                if isinstance(candidate, classes):
                    return candidate
        frame = frame.f_back
    return None


def _screener_for(processor, config: ScreeningConfig):
    if config.screener != "self":
        key = ("config", config)
        if key not in _SCREENERS:
            from .screeners import make_screener

            _SCREENERS[key] = make_screener(config, ScreeningCache(config.cache_dir))
        return _SCREENERS[key]
    model = find_model_for(processor)
    if model is None:
        raise RuntimeError("EMC_SCREENER=self: no Qwen-VL model using this processor was found on the call stack; "
                           "build the screener with token_compressor.screening.self_screener(model, processor)")
    key = ("self", id(model), id(processor))
    if key not in _SCREENERS:
        from .self_screener import self_screener

        _SCREENERS[key] = self_screener(model, processor, cache=ScreeningCache(config.cache_dir))
    return _SCREENERS[key]


def _make_apply_chat_template(original, config: ScreeningConfig):
    @functools.wraps(original)
    def apply_chat_template(self, conversation, *args, **kwargs):
        if not getattr(_LOCAL, "busy", False):
            _LOCAL.busy = True  # the `self` screener templates its own messages through here
            try:
                from ..report import RECORDER

                with RECORDER.suspended():
                    screen_messages(conversation, _screener_for(self, config), config=config)
            finally:
                _LOCAL.busy = False
        return original(self, conversation, *args, **kwargs)

    return apply_chat_template


def install_processor_hook(config: Optional[ScreeningConfig] = None) -> None:
    """Screen inside `apply_chat_template` of the Qwen-VL processor classes (see the module
    docstring). Idempotent; `config` defaults to the environment's (`EMC_SCREENER` must not be
    `none`)."""
    config = screening_from_env() if config is None else config
    if not config.enabled:
        raise ConfigError("install_processor_hook needs a screener; EMC_SCREENER is 'none'")
    for cls in _processor_classes():
        if cls in _PATCHED:
            continue
        _PATCHED[cls] = cls.__dict__.get("apply_chat_template")
        cls.apply_chat_template = _make_apply_chat_template(cls.apply_chat_template, config)


def uninstall_processor_hook() -> None:
    for cls, own in list(_PATCHED.items()):
        if own is None:
            del cls.apply_chat_template
        else:
            cls.apply_chat_template = own
        del _PATCHED[cls]
    _SCREENERS.clear()
