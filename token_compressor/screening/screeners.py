"""Screeners: `none` (keep everything), `llm` (ReSimplifyIt-simple against an OpenAI-compatible
server) and the generic `PlannerScreener` they share, which a `self` screener fills with a chat
function and an image-caption function built from the loaded Qwen-VL model.

A screener has a `name`, an `identity()` (what its results depend on, for cache keys; never a
secret) and `screen_video(info, question) -> PlanOutcome`.
"""
from __future__ import annotations

from typing import Callable, List, Optional

from ..config import ConfigError, ScreeningConfig
from .cache import ScreeningCache
from .planner import CAPTION_PROMPT, PlanOutcome, plan
from .questions import MAX_CAPTION_CHARS, clean_text
from .video import VideoInfo, frame_at, image_data_url


class NoneScreener:
    """Keeps the whole video and the question."""

    name = "none"

    def identity(self) -> dict:
        return {"screener": "none"}

    def screen_video(self, info: VideoInfo, question: str) -> PlanOutcome:
        return PlanOutcome([(0.0, info.duration)], question, "succeeded")


class PlannerScreener:
    """ReSimplifyIt-simple over any pair of functions:

        chat_fn(messages: list[dict]) -> str   the planner (OpenAI-style messages)
        describe_image(image: PIL.Image) -> str  a caption of one frame

    Captions are cached per video (fingerprint) and caption model in `cache`, so a second
    question about the same video asks only for seconds not seen before. `limits` overrides the
    planner's limits (`max_unparsable`, `max_messages`, `max_exceptions`; default 10 / 100 / 5)
    and is part of `identity()` when given.
    """

    def __init__(self, name: str, chat_fn: Callable[[List[dict]], str], describe_image: Callable,
                 identity: dict, caption_model: Optional[str] = None, cache: Optional[ScreeningCache] = None,
                 limits: Optional[dict] = None):
        self.name = name
        self.chat_fn = chat_fn
        self.describe_image = describe_image
        self._identity = dict(identity, **({"limits": dict(limits)} if limits else {}))
        self.caption_model = caption_model
        self.cache = cache or ScreeningCache(None)
        self.limits = dict(limits or {})  # plan()'s max_unparsable / max_messages / max_exceptions

    def identity(self) -> dict:
        return dict(self._identity)

    def caption_fn_for(self, info: VideoInfo) -> Callable[[int], str]:
        def caption(second: int) -> str:
            cached = self.cache.load_captions(info.fingerprint, self.caption_model).get(str(int(second)))
            if cached is not None:
                return cached
            text = clean_text(self.describe_image(frame_at(info.path, float(second))), MAX_CAPTION_CHARS)
            if not text:
                raise ValueError(f"empty caption for second {second}")
            self.cache.add_caption(info.fingerprint, self.caption_model, int(second), text)
            return text
        return caption

    def screen_video(self, info: VideoInfo, question: str) -> PlanOutcome:
        return plan(question, info.duration, info.fps, self.chat_fn, self.caption_fn_for(info), **self.limits)


def llm_screener(config: ScreeningConfig, cache: Optional[ScreeningCache] = None,
                 backoff_s: float = 1.0) -> PlannerScreener:
    """The `llm` screener: planner `config.model` on the OpenAI-compatible server at
    `config.base_url` (JSON mode where supported) and captioner `config.caption_model` on
    `config.caption_base_url` (default: the same server; another server gets
    `EMC_CAPTION_API_KEY`, never the planner's key)."""
    from .openai_client import OpenAIChatClient

    if not config.model:
        raise ConfigError("EMC_MODEL=None is not set; the llm screener needs the planner model name")
    secrets = (config.api_key, config.caption_key)  # each client redacts both keys from what it returns
    client = OpenAIChatClient(config.base_url, config.api_key, timeout_s=config.timeout_s,
                              max_retries=config.max_retries, backoff_s=backoff_s, redact_also=secrets)
    caption_model = config.caption_model or config.model
    caption_client = client
    if config.caption_base_url and config.caption_base_url != config.base_url:
        caption_client = OpenAIChatClient(config.caption_base_url, config.caption_key, timeout_s=config.timeout_s,
                                          max_retries=config.max_retries, backoff_s=backoff_s, redact_also=secrets)

    def chat_fn(messages):
        return client.chat(messages, config.model, json_mode=True)

    def describe_image(image):
        content = [{"type": "text", "text": CAPTION_PROMPT},
                   {"type": "image_url", "image_url": {"url": image_data_url(image)}}]
        return caption_client.chat([{"role": "user", "content": content}], caption_model)

    screener = PlannerScreener("llm", chat_fn, describe_image, config.cache_identity(),
                               caption_model=caption_model,
                               cache=cache if cache is not None else ScreeningCache(config.cache_dir))
    screener.client = client
    return screener


def make_screener(config: ScreeningConfig, cache: Optional[ScreeningCache] = None):
    """The screener `config.screener` names. `self` needs a loaded model, so it is built with
    `PlannerScreener` by the model integration, not from the environment alone."""
    if config.screener == "none":
        return NoneScreener()
    if config.screener == "llm":
        return llm_screener(config, cache)
    raise ConfigError(
        f"EMC_SCREENER={config.screener!r} needs the loaded Qwen-VL model: build it with "
        "token_compressor.screening.self_screener(model, processor) and pass it to screen() "
        "(lmms-eval, the launcher and `token-compressor run` find the model themselves)"
    )
