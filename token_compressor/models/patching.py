"""Wrapping `forward` and `generate` of a Qwen-VL `*ForConditionalGeneration` class or instance.

The wrappers never copy Hugging Face code: they rewrite the call's inputs (`compress_prefill`)
and call the original. `generate` is wrapped so that the whole generation (2D mask, positions,
KV cache) runs on the compressed prompt; `forward` is wrapped for direct prefill calls (with or
without labels). A thread-local guard makes nested calls (generate -> forward, or an instance
patch over a class patch) compress once.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Dict, Optional

import torch

from .. import report
from .pruning import PrefillStats, Settings, compress_prefill, encoder_outputs_handover

logger = logging.getLogger("token_compressor")

_STATE = threading.local()
ATTR_SETTINGS = "_token_compressor_settings"
ATTR_STATS = "_token_compressor_last_stats"
ATTR_FAMILY = "_token_compressor_family"
ATTR_WRAPPED = "_token_compressor_original"

# class -> Settings for class-level patches
_CLASS_SETTINGS: Dict[type, Settings] = {}


def _inside() -> bool:
    return getattr(_STATE, "depth", 0) > 0


class _Guard:
    def __enter__(self):
        _STATE.depth = getattr(_STATE, "depth", 0) + 1

    def __exit__(self, *exc):
        _STATE.depth -= 1


def settings_of(model) -> Settings:
    """The settings in force for `model`: its own (instance-level `apply`), else its class's."""
    own = model.__dict__.get(ATTR_SETTINGS)
    if own is not None:
        return own
    for cls in type(model).__mro__:
        if cls in _CLASS_SETTINGS:
            return _CLASS_SETTINGS[cls]
    return Settings()


def _has_visual_input(kwargs, settings: Settings) -> bool:
    encoded = kwargs.get("mm_encoder_outputs") or {}
    video = kwargs.get("pixel_values_videos") is not None or encoded.get("video") is not None
    image = kwargs.get("pixel_values") is not None or encoded.get("image") is not None
    return video or (settings.compress_images and image)


def _is_prefill(kwargs) -> bool:
    cache = kwargs.get("past_key_values")
    return cache is None or cache.get_seq_length() == 0


def _record(model, stats: PrefillStats) -> None:
    model.__dict__[ATTR_STATS] = stats
    logger.info(
        "token_compressor: %s r=%.3g kept %d/%d visual tokens (%.1f%%), sequence %d -> %d, %.1f ms",
        stats.method, stats.ratio, stats.after, stats.before, 100.0 * stats.kept_fraction,
        stats.seq_len_before, stats.seq_len_after, stats.compress_ms,
    )


def _compress(model, family, settings: Settings, kwargs):
    """Compressed prefill inputs and what was done (also recorded on the model)."""
    new_kwargs, stats = compress_prefill(model, family, settings, kwargs)
    _record(model, stats)
    return new_kwargs, stats


def make_forward(original, family):
    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        if _inside() or args:
            return original(self, *args, **kwargs)
        settings = settings_of(self)
        if not settings.enabled or not _has_visual_input(kwargs, settings) or not _is_prefill(kwargs):
            return original(self, **kwargs)
        new_kwargs, _ = _compress(self, family, settings, kwargs)
        with _Guard(), encoder_outputs_handover(self, family, new_kwargs) as call:
            return original(self, **call)

    setattr(forward, ATTR_WRAPPED, original)
    return forward


def _generate(self, original, family, inputs, args, kwargs):
    """One generate call, compressed when the settings ask for it and the prompt has visual
    input. Returns (output, PrefillStats or None when nothing was compressed)."""
    settings = settings_of(self)
    if not settings.enabled or not _has_visual_input(kwargs, settings):
        return original(self, inputs, *args, **kwargs), None
    if args:
        raise ValueError("token_compressor: pass generate()'s arguments after `inputs` by keyword")
    if inputs is not None:
        if kwargs.get("input_ids") is not None:
            raise ValueError("generate() got both `inputs` and `input_ids`")
        kwargs["input_ids"] = inputs
    if not _is_prefill(kwargs):
        raise ValueError(
            "token_compressor cannot compress a prompt continued from a filled past_key_values; "
            "pass the whole prompt, or revert the patch for this call"
        )
    original_ids = kwargs["input_ids"]
    new_kwargs, stats = _compress(self, family, settings, kwargs)
    compressed_len = new_kwargs["input_ids"].shape[1]
    with _Guard(), encoder_outputs_handover(self, family, new_kwargs) as call:
        out = original(self, **call)
    # Callers trim the prompt with the length of the ids they passed: return the original
    # prompt followed by the new tokens, as an uncompressed run would.
    if isinstance(out, torch.Tensor):
        return torch.cat([original_ids.to(out.device), out[:, compressed_len:]], dim=1), stats
    out.sequences = torch.cat([original_ids.to(out.sequences.device), out.sequences[:, compressed_len:]], dim=1)
    return out, stats


def make_generate(original, family):
    @functools.wraps(original)
    def generate(self, inputs: Optional[torch.Tensor] = None, *args, **kwargs):
        if _inside():
            return original(self, inputs, *args, **kwargs)
        if not report.RECORDER.recording():
            return _generate(self, original, family, inputs, args, kwargs)[0]
        # the run report (lmms-eval through the entry point, the launcher): time and count
        path = report.eval_path_of_caller()
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        samples = int(ids.shape[0]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else 0
        call = report.RECORDER.begin(self)
        out, stats = _generate(self, original, family, inputs, args, kwargs)
        if stats is not None:
            before, after, method = stats.before, stats.after, stats.method
        else:
            before = after = report.visual_token_count(self, ids, settings_of(self).compress_images)
            method = None
        report.RECORDER.end(call, model=self, path=path, samples=samples, before=before, after=after, method=method)
        return out

    setattr(generate, ATTR_WRAPPED, original)
    return generate


# class -> {method name: the class's own attribute before patching, None when inherited}
_CLASS_OWN: Dict[type, Dict[str, object]] = {}


def patch_class(cls, family, settings: Settings) -> None:
    """Class-level patch (once); every instance, existing or future, follows `settings` unless
    it has its own."""
    if cls not in _CLASS_OWN:
        _CLASS_OWN[cls] = {name: cls.__dict__.get(name) for name in ("forward", "generate")}
        cls.forward = make_forward(cls.forward, family)
        cls.generate = make_generate(cls.generate, family)
    _CLASS_SETTINGS[cls] = settings


def unpatch_class(cls) -> None:
    for name, own in _CLASS_OWN.pop(cls, {}).items():
        if own is None:
            delattr(cls, name)
        else:
            setattr(cls, name, own)
    _CLASS_SETTINGS.pop(cls, None)


def is_class_patched(cls) -> bool:
    return cls in _CLASS_OWN


def patch_instance(model, family, settings: Settings) -> None:
    """Instance-level patch (once); later calls only change the settings."""
    cls = type(model)
    for name, make in (("forward", make_forward), ("generate", make_generate)):
        if name not in model.__dict__:
            model.__dict__[name] = make(getattr(cls, name), family).__get__(model, cls)
    model.__dict__[ATTR_SETTINGS] = settings
    model.__dict__[ATTR_FAMILY] = family.name


def unpatch_instance(model) -> None:
    for name in ("forward", "generate", ATTR_SETTINGS, ATTR_FAMILY):
        model.__dict__.pop(name, None)


def last_stats(model) -> Optional[dict]:
    stats = model.__dict__.get(ATTR_STATS)
    return None if stats is None else stats.as_dict()
