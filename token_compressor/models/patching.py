"""Wrapping `forward` and `generate` of a Qwen-VL `*ForConditionalGeneration` class or instance.

The wrappers never copy Hugging Face code: they rewrite the call's inputs (`compress_prefill`)
and call the original. `generate` is wrapped so that the whole generation (2D mask, positions,
KV cache, `max_length`) runs on the compressed prompt and the caller gets the original prompt
back in front of the new tokens; `forward` is wrapped for direct prefill calls (with or without
labels). A thread-local guard makes nested calls (generate -> forward, an assistant model, or an
instance patch over a class patch) compress once.

A KV cache filled by a compressed prompt carries its `CompressedPrompt`: a later call continuing
from that cache with the original coordinates (the returned ids, a full-length mask) is
translated into the cache's coordinates, or refused with a clear error; never silently wrong.

Calls that cannot be compressed (only `inputs_embeds`: nothing locates the visual tokens) run
exactly as unpatched; the skip is recorded in `last_stats`, counted in the run report and logged
once as a WARNING.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import Dict, Optional

import torch

from .. import report
from .pruning import (CompressedPrompt, PrefillStats, Settings, cache_of, compress_prefill, encoder_outputs_handover,
                      skip_reason, translate_continuation, uncompressed_stats, visual_tokens_in)

logger = logging.getLogger("token_compressor")

_STATE = threading.local()
ATTR_SETTINGS = "_token_compressor_settings"
ATTR_STATS = "_token_compressor_last_stats"
ATTR_FAMILY = "_token_compressor_family"
ATTR_WRAPPED = "_token_compressor_original"
ATTR_PROMPT = "_token_compressor_prompt"  # on a KV cache: the CompressedPrompt that filled it

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


def _cache_len(kwargs) -> int:
    cache = cache_of(kwargs)
    return 0 if cache is None or not hasattr(cache, "get_seq_length") else int(cache.get_seq_length())


def _prompt_of(kwargs) -> Optional[CompressedPrompt]:
    """The compressed prompt a filled cache holds (None for an empty or ordinary cache)."""
    cache = cache_of(kwargs)
    record = getattr(cache, ATTR_PROMPT, None)
    if record is not None and _cache_len(kwargs) == 0:  # the cache was reset: a fresh prompt
        delattr(cache, ATTR_PROMPT)
        return None
    return record


def _remember(record: Optional[CompressedPrompt], *caches) -> None:
    for cache in caches:
        if cache is not None and hasattr(cache, "get_seq_length"):
            setattr(cache, ATTR_PROMPT, record)


def _bind(original, self, args, kwargs) -> dict:
    """Positional arguments turned into keywords by the original signature."""
    if not args:
        return dict(kwargs)
    bound = inspect.signature(original).bind_partial(self, *args, **kwargs).arguments
    out = {}
    for name, value in bound.items():
        if name == "self":
            continue
        if name == "kwargs" and isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    return out


@functools.lru_cache(maxsize=None)
def _named_params(original) -> frozenset:
    return frozenset(name for name, p in inspect.signature(original).parameters.items()
                     if p.kind is not inspect.Parameter.VAR_KEYWORD)


@torch.compiler.disable  # data-dependent selection and re-padding: nothing for a compiler to fuse
def _compress(model, family, settings: Settings, kwargs, **how):
    return compress_prefill(model, family, settings, kwargs, **how)


class _LastStats:
    """`last_stats` of one model. A copy of the model (pickle, `torch.save`, `copy.deepcopy`)
    starts with none: the numbers describe a call the copy never made."""

    def __init__(self, stats: Optional[PrefillStats] = None):
        self.stats = stats

    def __reduce__(self):
        return _LastStats, ()


def _record(model, stats: PrefillStats) -> None:
    model.__dict__[ATTR_STATS] = _LastStats(stats)
    if stats.skipped:
        logger.warning("%s not applied to this call (%s); it runs exactly as unpatched",
                       stats.method, stats.skipped)
        return
    logger.info(
        "%s r=%.3g kept %d/%d visual tokens (%.1f%%), sequence %d -> %d, "
        "batch width %d -> %d, %.1f ms",
        stats.method, stats.ratio, stats.after, stats.before, 100.0 * stats.kept_fraction,
        stats.seq_len_before, stats.seq_len_after, stats.width_before, stats.width_after, stats.compress_ms,
    )


def seam_problem(model, family=None) -> Optional[str]:
    """Why `model` lacks the seams the patches use on this transformers (None when it has them):
    `model.model` must have `get_video_features` and `get_rope_index` (transformers 5.17's Omni
    thinker, for one, keeps them on itself around a bare text model)."""
    inner = getattr(model, "model", None)
    for seam in ("get_video_features", "get_rope_index"):
        if not callable(getattr(inner, seam, None)):
            note = f" ({family.seam_note})" if family is not None and family.seam_note else ""
            return (f"{type(model).__name__}.model has no {seam}(): this transformers version's Qwen-VL seams "
                    f"are not the ones token_compressor supports{note}")
    return None


def _check_seams(model, family) -> None:
    problem = seam_problem(model, family)
    if problem is not None:
        raise RuntimeError(f"token_compressor cannot compress this call: {problem}")


def _skip(model, settings: Settings, kwargs, reason: str) -> PrefillStats:
    n = visual_tokens_in(model, kwargs, settings)
    stats = PrefillStats(method=settings.method, ratio=settings.ratio, before=n, after=n, skipped=reason)
    rows = kwargs.get("input_ids") if isinstance(kwargs.get("input_ids"), torch.Tensor) else kwargs.get("inputs_embeds")
    if isinstance(rows, torch.Tensor) and rows.dim() >= 2:  # it runs as it came: the same shape after
        mask = kwargs.get("attention_mask")
        lens = (mask.bool().sum(1).tolist() if isinstance(mask, torch.Tensor) and mask.dim() == 2
                else [int(rows.shape[1])] * int(rows.shape[0]))
        stats.width_before = stats.width_after = int(rows.shape[1])
        stats.row_lens_before, stats.row_lens_after = lens, list(lens)
        stats.seq_len_before = stats.seq_len_after = int(sum(lens))
    _record(model, stats)
    return stats


def make_forward(original, family):
    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        if _inside():
            return original(self, *args, **kwargs)
        kwargs = _bind(original, self, args, kwargs)
        record = _prompt_of(kwargs)
        if record is not None:  # continuing a compressed cache by hand
            return original(self, **translate_continuation(record, kwargs, _cache_len(kwargs), for_generate=False))
        settings = settings_of(self)
        if not _has_visual_input(kwargs, settings) or _cache_len(kwargs):
            return original(self, **kwargs)
        if not settings.enabled:  # `none` or compression off: measured with the same code, run as is
            self.__dict__[ATTR_STATS] = _LastStats(uncompressed_stats(self, kwargs, settings))
            return original(self, **kwargs)
        reason = skip_reason(kwargs, settings)
        if reason is not None:
            _skip(self, settings, kwargs, reason)
            with _Guard():
                return original(self, **kwargs)
        _check_seams(self, family)
        # what the unpatched forward hands the vision tower besides pixels and grids
        encoder_kwargs = {k: v for k, v in kwargs.items() if k not in _named_params(original) and k != "return_dict"}
        new_kwargs, stats, record = _compress(self, family, settings, kwargs, for_generate=False,
                                              encoder_kwargs=encoder_kwargs)
        _record(self, stats)
        with _Guard(), encoder_outputs_handover(self, family, new_kwargs) as call:
            out = original(self, **call)
        _remember(record, cache_of(out), cache_of(kwargs))
        return out

    setattr(forward, ATTR_WRAPPED, original)
    return forward


def _generation_mask(model, kwargs) -> torch.Tensor:
    """The attention mask `generate` infers when none is given: padding where the ids hold the pad
    token (unless it is also the eos token), else all ones."""
    ids = kwargs["input_ids"]
    config = kwargs.get("generation_config") or model.generation_config
    as_list = lambda v: [] if v is None else ([int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)])
    pad = as_list(kwargs.get("pad_token_id", config.pad_token_id))
    eos = as_list(kwargs.get("eos_token_id", config.eos_token_id))
    if not pad or pad[0] in eos or not bool((ids == pad[0]).any()):
        return torch.ones_like(ids)
    return ids.ne(pad[0]).long()


def _shift_lengths(model, kwargs, delta: int) -> dict:
    """`max_length`/`min_length` count the caller's prompt: the compressed one is `delta` shorter."""
    if not delta:
        return kwargs
    config = kwargs.get("generation_config")
    for name in ("max_length", "min_length"):
        value = kwargs.get(name)
        for source in (config, model.generation_config):
            if value is None and source is not None:
                value = getattr(source, name, None)
        if value is not None:
            kwargs[name] = max(int(value) - delta, 0)
    return kwargs


def _with_prompt(out, prompt: torch.Tensor, compressed_len: int):
    """Generate's output with its (compressed) prompt columns replaced by the caller's prompt,
    rows repeated as generate repeats them (`num_return_sequences`, beams)."""
    seq = out if isinstance(out, torch.Tensor) else out.sequences
    prompt = prompt.to(seq.device)
    if seq.shape[0] != prompt.shape[0]:
        prompt = prompt.repeat_interleave(seq.shape[0] // prompt.shape[0], dim=0)
    seq = torch.cat([prompt, seq[:, compressed_len:]], dim=1)
    if isinstance(out, torch.Tensor):
        return seq
    out.sequences = seq
    return out


def _run(self, original, family, kwargs, record: CompressedPrompt, prompt: torch.Tensor):
    """The original generate on compressed-coordinate inputs; the caller's prompt in front of the
    output and the compressed prompt remembered on the cache."""
    kwargs = _shift_lengths(self, kwargs, record.width_delta)
    with _Guard(), encoder_outputs_handover(self, family, kwargs) as call:
        out = original(self, **call)
    _remember(record, cache_of(out), cache_of(kwargs))
    return _with_prompt(out, prompt, kwargs["input_ids"].shape[1])


def _generate(self, original, family, kwargs):
    """One generate call, compressed when the settings ask for it and the prompt has visual
    input. Returns (output, PrefillStats or None when compression was not asked for)."""
    inputs = kwargs.pop("inputs", None)
    if inputs is not None:
        if kwargs.get("input_ids") is not None:
            raise ValueError("generate() got both `inputs` and `input_ids`")
        kwargs["input_ids"] = inputs
    record = _prompt_of(kwargs)
    if record is not None:
        new = translate_continuation(record, kwargs, _cache_len(kwargs), for_generate=True)
        return _run(self, original, family, new, record, kwargs["input_ids"]), None
    # a new prompt: `last_stats` describes this call from here on, not an earlier one
    self.__dict__.pop(ATTR_STATS, None)
    settings = settings_of(self)
    if not _has_visual_input(kwargs, settings):
        return original(self, **kwargs), None
    if not settings.enabled:  # `none` or compression off: measured with the same code, run as is
        self.__dict__[ATTR_STATS] = _LastStats(uncompressed_stats(self, kwargs, settings))
        with _Guard():  # generate's own forward calls are this call's, already measured
            return original(self, **kwargs), None
    if _cache_len(kwargs):
        raise ValueError(
            "token_compressor cannot compress a prompt continued from a past_key_values it did not fill; "
            "pass the whole prompt, or revert the patch for this call"
        )
    reason = skip_reason(kwargs, settings)
    if reason is not None:
        stats = _skip(self, settings, kwargs, reason)
        with _Guard():
            return original(self, **kwargs), stats
    _check_seams(self, family)
    # generate never builds a graph: neither do the vision tower and the selection before it
    with torch.no_grad():
        mask = kwargs.get("attention_mask")
        mask = _generation_mask(self, kwargs) if mask is None else mask
        new_kwargs, stats, record = _compress(self, family, settings, kwargs, for_generate=True,
                                              attention_mask=mask)
    _record(self, stats)
    if record is None:  # nothing dropped: the unpatched call
        with _Guard(), encoder_outputs_handover(self, family, new_kwargs) as call:
            return original(self, **call), stats
    return _run(self, original, family, new_kwargs, record, kwargs["input_ids"]), stats


def make_generate(original, family):
    @functools.wraps(original)
    def generate(self, *args, **kwargs):
        if _inside():
            return original(self, *args, **kwargs)
        kwargs = _bind(original, self, args, kwargs)
        if not report.RECORDER.recording():
            return _generate(self, original, family, kwargs)[0]
        # the run report (lmms-eval through the entry point, the launcher): time and count
        path = report.eval_path_of_caller()
        ids = kwargs.get("inputs") if kwargs.get("inputs") is not None else kwargs.get("input_ids")
        rows = ids if ids is not None else kwargs.get("inputs_embeds")
        samples = int(rows.shape[0]) if isinstance(rows, torch.Tensor) and rows.dim() >= 2 else 0
        docs = report.lmms_eval_docs_of_caller(samples) if path != "python" else None
        continued = _prompt_of(kwargs) is not None  # its visual tokens were counted by the first call
        call = report.RECORDER.begin(self)
        out, stats = _generate(self, original, family, kwargs)
        if continued:
            before = after = 0
            method = None
        elif stats is not None and not stats.skipped:
            before, after, method = stats.before, stats.after, stats.method
        else:
            before = after = (stats.before if stats is not None else
                              report.visual_token_count(self, ids, settings_of(self).compress_images))
            method = None
        per_sample = None
        if docs is not None and not continued:
            box = self.__dict__.get(ATTR_STATS)
            last = box.stats if isinstance(box, _LastStats) else None
            counts = last.per_sample if last is not None and len(last.per_sample) == samples else [None] * samples
            per_sample = [{**doc, "visual_tokens_before": None if row is None else sum(b for _, b, _ in row),
                           "visual_tokens_after": None if row is None else sum(a for _, _, a in row)}
                          for doc, row in zip(docs, counts)]
        report.RECORDER.end(call, model=self, path=path, samples=samples, before=before, after=after, method=method,
                            skipped=stats is not None and bool(stats.skipped), per_sample=per_sample,
                            uncompressed=len(stats.uncompressed) if stats is not None and not continued else 0)
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


def settings_of_class(cls) -> Settings:
    return _CLASS_SETTINGS.get(cls, Settings())


def is_class_patched(cls) -> bool:
    return cls in _CLASS_OWN


class _InstanceMethod:
    """`forward` / `generate` of an instance-patched model: the wrapper bound to the model.

    A bound method of the wrapper (a local function) cannot travel with the model: `pickle` and
    `torch.save` store a bound method as "look the name up again", which found the class's
    unpatched method, so a loaded model silently stopped compressing while `apply` took it for
    patched. This object is rebuilt around the copy instead (`__reduce__`), so a pickled,
    `torch.save`d or `copy.deepcopy`d model keeps compressing with the settings it was saved with.
    `__wrapped__` lets `inspect.signature` (which `generate` consults) see the original signature.
    """

    def __init__(self, model, name: str, family_name: str):
        from . import FAMILIES

        make = {"forward": make_forward, "generate": make_generate}[name]
        self._model, self._name, self._family = model, name, family_name
        self.__wrapped__ = make(getattr(type(model), name), FAMILIES[family_name]).__get__(model, type(model))

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __reduce__(self):
        return _InstanceMethod, (self._model, self._name, self._family)

    def bound_to(self, model) -> bool:
        return self._model is model


def make_composite_generate(original, family):
    """`generate` of a whole model whose text comes from its patched part (Omni: the thinker):
    the call goes through unchanged unless the part compresses and the call is one the family
    refuses (`Composite.refuses`: speech output), which raises ValueError with the reason."""
    composite = family.composite

    @functools.wraps(original)
    def generate(self, *args, **kwargs):
        part = getattr(self, composite.part, None)
        if part is not None and settings_of(part).enabled:
            reason = composite.refuses(self, original, _bind(original, self, args, kwargs))
            if reason is not None:
                raise ValueError(f"token_compressor ({family.name}): {reason}")
        return original(self, *args, **kwargs)

    setattr(generate, ATTR_WRAPPED, original)
    return generate


def patch_composite_class(family) -> None:
    """Guard the whole model's class `generate` (once) for a family whose model is a part."""
    cls = family.composite.model_class()
    if cls not in _CLASS_OWN:
        _CLASS_OWN[cls] = {"generate": cls.__dict__.get("generate")}
        cls.generate = make_composite_generate(cls.generate, family)


def patch_composite_instance(model, family) -> None:
    """Guard one whole model's `generate` (once); its part is patched with `patch_instance`."""
    if "generate" not in model.__dict__:
        cls = type(model)
        model.__dict__["generate"] = make_composite_generate(getattr(cls, "generate"), family).__get__(model, cls)
    model.__dict__[ATTR_FAMILY] = family.name


def patch_instance(model, family, settings: Settings) -> None:
    """Instance-level patch (once); later calls only change the settings. A method entry that is
    not this model's wrapper (a model loaded by an older pickle, or a shallow copy holding the
    original's) is replaced."""
    for name in ("forward", "generate"):
        entry = model.__dict__.get(name)
        if not (isinstance(entry, _InstanceMethod) and entry.bound_to(model)):
            model.__dict__[name] = _InstanceMethod(model, name, family.name)
    model.__dict__[ATTR_SETTINGS] = settings
    model.__dict__[ATTR_FAMILY] = family.name


def unpatch_instance(model) -> None:
    for name in ("forward", "generate", ATTR_SETTINGS, ATTR_FAMILY, ATTR_STATS):
        model.__dict__.pop(name, None)


def compressed_part(model):
    """The model whose calls are compressed: `model`, or its part for a whole Omni model patched
    through `patch_composite_instance`/`patch_composite_class`."""
    from . import FAMILIES

    family = FAMILIES.get(getattr(getattr(model, "config", None), "model_type", None))
    if family is not None and family.composite is not None and hasattr(model, family.composite.part):
        return getattr(model, family.composite.part)
    return model


def last_stats(model) -> Optional[dict]:
    box = compressed_part(model).__dict__.get(ATTR_STATS)
    stats = box.stats if isinstance(box, _LastStats) else None
    return None if stats is None else stats.as_dict()
