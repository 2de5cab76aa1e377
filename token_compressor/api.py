"""Patching models: apply / apply_to_* / revert / apply_from_env / last_stats."""
from __future__ import annotations

import logging
from typing import Optional

from .config import ConfigError, check_method_options, from_env, parse_compressor, parse_flag, parse_ratio
from .models import FAMILIES, check_transformers_version, family_for
from .models import patching
from .models.pruning import Settings

logger = logging.getLogger("token_compressor")


def describe(settings: Settings) -> str:
    """One line of what a patch does: method, ratio, options."""
    if not settings.enabled:
        return f"{settings.method or 'compression off'} (every visual token kept)"
    opts = ", ".join(f"{k}={v}" for k, v in settings.options)
    return f"{settings.method} at r={settings.ratio:g} (options: {opts or 'defaults'})"


def _settings(method, ratio, compress_images: bool, options: dict, keep_indices: bool = False) -> Settings:
    """Explicit arguments win; what is not given comes from the environment configuration. The
    method's own variables (`DYCOKE_K`, `HOLITOM_T`, ...) apply when the method itself comes
    from the environment (`COMPRESSOR`); explicit options override them."""
    compress_images = parse_flag(compress_images, "compress_images")
    env = None
    if method is None or ratio is None:
        env = from_env()
    name = parse_compressor(method, "method") if method is not None else env.compressor
    r = parse_ratio(ratio, "ratio") if ratio is not None else env.ratio
    if method is None:  # the method comes from the environment: so do its authors' variables
        options = {**dict(env.options), **options}
    if options:  # checked now, not at the first generate
        from .registry import check_options

        if name is None:
            raise ConfigError(f"compressor options {sorted(options)} given, but no method (COMPRESSOR is unset)")
        options = check_method_options(name, options)
        try:
            check_options(name, options)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if name is None:
        logger.warning("no method given and COMPRESSOR is unset: the model is patched but "
                       "compression is off (pass method=..., or set COMPRESSOR)")
    return Settings(method=name, ratio=r, compress_images=compress_images, options=tuple(sorted(options.items())),
                    keep_indices=bool(keep_indices))


def _check_model(model, family) -> None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != family.name and model_type not in family.model_types:
        raise ValueError(f"expected a {family.name} model, got model_type {model_type!r}")
    cls = family.model_class()
    if not isinstance(model, cls):
        # e.g. `apply(model.model)`: the inner `...Model` shares the config but has no generate,
        # and the patches wrap the outer model's forward/generate
        raise TypeError(
            f"token_compressor patches the {cls.__name__} model (the one with the language-model head "
            f"that from_pretrained / AutoModelForImageTextToText return); got a {type(model).__name__}: pass the "
            f"{cls.__name__} itself (e.g. `tc.apply(model)`, not `tc.apply(model.model)`)"
        )
    problem = patching.seam_problem(model, family)
    if problem is not None:
        raise RuntimeError(problem)


def _apply_family(name: str, model=None, method=None, ratio=None, compress_images=False, keep_indices=False,
                  announce=True, **options):
    check_transformers_version()
    family = FAMILIES[name]
    settings = _settings(method, ratio, compress_images, options, keep_indices)
    if model is None:
        cls = family.model_class()
        patching.patch_class(cls, family, settings)
        if family.composite is not None:
            patching.patch_composite_class(family)
        if announce:
            logger.info("%s patched into the class %s (every instance)", describe(settings), cls.__name__)
        return None
    target = model
    if family.composite is not None and isinstance(model, family.composite.model_class()):
        # a whole Omni model: its thinker generates the text and is the model compressed
        target = getattr(model, family.composite.part)
    _check_model(target, family)
    patching.patch_instance(target, family, settings)
    if target is not model:
        patching.patch_composite_instance(model, family)
    if announce:
        logger.info("%s patched into this %s", describe(settings), type(target).__name__)
    return model


def apply_to_qwen2_vl(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                      compress_images: bool = False, keep_indices: bool = False, **options):
    """Patch Qwen2-VL: the class when `model` is None (every model, existing or built later), else
    this instance. Method/ratio default to the environment configuration (`COMPRESSOR`,
    `R_RATIO`). Calling again only changes the settings. Extra options go to the compressor.
    `keep_indices=True` adds each video's kept rows and positions to `last_stats`."""
    return _apply_family("qwen2_vl", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen2_5_vl(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                        compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen2_vl`, for Qwen2.5-VL."""
    return _apply_family("qwen2_5_vl", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen3_vl(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                      compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen2_vl`, for Qwen3-VL (deepstack features pruned with the same indices)."""
    return _apply_family("qwen3_vl", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen3_vl_moe(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                          compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen3_vl`, for Qwen3-VL-MoE (the same seams, deepstack included)."""
    return _apply_family("qwen3_vl_moe", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen3_5(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                     compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen2_vl`, for Qwen3.5 (hybrid text model: its cache holds recurrent state,
    which absorbs exactly the kept tokens)."""
    return _apply_family("qwen3_5", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen3_5_moe(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                         compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen3_5`, for Qwen3.5-MoE."""
    return _apply_family("qwen3_5_moe", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen2_5_omni(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                          compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen2_vl`, for Qwen2.5-Omni: the thinker class when `model` is None (the whole
    model's generate calls it), else `model`, a thinker or a whole model (its thinker is patched).
    Video tokens only, audio untouched; speech output from a compressed thinker is refused."""
    return _apply_family("qwen2_5_omni", model, method, ratio, compress_images, keep_indices, **options)


def apply_to_qwen3_omni_moe(model=None, method: Optional[str] = None, ratio: Optional[float] = None,
                            compress_images: bool = False, keep_indices: bool = False, **options):
    """As `apply_to_qwen2_5_omni`, for Qwen3-Omni (MoE; deepstack features pruned with the same indices)."""
    return _apply_family("qwen3_omni_moe", model, method, ratio, compress_images, keep_indices, **options)


def apply(model, method: Optional[str] = None, ratio: Optional[float] = None, compress_images: bool = False,
          keep_indices: bool = False, **options):
    """Patch one loaded model, dispatching on `model.config.model_type`; returns the model.

    Without `method`/`ratio` the environment configuration is used; with neither `method` nor
    `COMPRESSOR` the model is patched but compression is off (a WARNING says so; `method="none"`
    says it explicitly). Compressor options are checked here against the compressor's signature
    (an unknown option or a value of the wrong type is a `ConfigError`). Calling `apply` again on
    a patched model changes its method/ratio without patching twice. `keep_indices=True` adds
    each video's kept rows and their prompt positions to `last_stats` (`"kept"`). One INFO line
    (logger `token_compressor`) says what was patched."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = family_for(model_type, model)
    return _apply_family(family.name, model, method, ratio, compress_images, keep_indices, **options)


def revert(model=None) -> None:
    """Undo `apply`/`apply_to_*`: for `model` (its `last_stats` forgotten too), or every
    class-level patch when None."""
    if model is not None:
        part = patching.compressed_part(model)
        patching.unpatch_instance(model)
        if part is not model:
            patching.unpatch_instance(part)
        return
    for family in FAMILIES.values():
        patching.unpatch_class(family.model_class())
        if family.composite is not None:
            patching.unpatch_class(family.composite.model_class())


def apply_from_env() -> bool:
    """Class-level patches for every supported family from `COMPRESSOR`/`R_RATIO` and the
    selected method's own variables (config.METHOD_OPTIONS).

    Returns True when patches were applied; a no-op (False) when `COMPRESSOR` is unset or `none`.
    Raises `ConfigError` on an invalid configuration."""
    cfg = from_env()
    if not cfg.enabled:
        return False
    settings = None
    for name in FAMILIES:
        _apply_family(name, None, cfg.compressor, cfg.ratio, announce=False, **dict(cfg.options))
        settings = patching.settings_of_class(FAMILIES[name].model_class())
    logger.info("%s patched into %s (from COMPRESSOR/R_RATIO)", describe(settings), ", ".join(FAMILIES),
                extra={"token_compressor_announce": True})
    return True


def last_stats(model) -> Optional[dict]:
    """What the last prefill with visual input of `model` did (visual tokens before/after, per
    sample and per visual item, method, ratio, time; sequence lengths: `seq_len_before/after`
    attended tokens of the batch, `width_before/after` the padded batch width,
    `row_lens_before/after` attended tokens per row; `kept` with `keep_indices=True`), whatever
    the method (`none` and ratio 1.0 included: `after == before`). None before the first such
    call and after `revert(model)`."""
    return patching.last_stats(model)


__all__ = ["ConfigError", "apply", "apply_from_env", "apply_to_qwen2_5_omni", "apply_to_qwen2_5_vl", "apply_to_qwen2_vl",
           "apply_to_qwen3_5", "apply_to_qwen3_5_moe", "apply_to_qwen3_omni_moe", "apply_to_qwen3_vl",
           "apply_to_qwen3_vl_moe", "last_stats", "revert"]
