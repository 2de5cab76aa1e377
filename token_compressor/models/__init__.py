"""Qwen-VL model patches: one module per family holds its seams (`qwen2_vl`, `qwen2_5_vl`,
`qwen3_vl`, `qwen3_vl_moe`, `qwen3_5`, `qwen3_5_moe`, the Omni thinkers `qwen2_5_omni`,
`qwen3_omni_moe` with `omni`); `pruning` is the shared plumbing; `patching` wraps forward/generate."""
from __future__ import annotations

import logging
from typing import Dict

from .families import Family
from .qwen2_5_omni import FAMILY as QWEN2_5_OMNI
from .qwen2_5_vl import FAMILY as QWEN2_5_VL
from .qwen2_vl import FAMILY as QWEN2_VL
from .qwen3_5 import FAMILY as QWEN3_5
from .qwen3_5_moe import FAMILY as QWEN3_5_MOE
from .qwen3_omni_moe import FAMILY as QWEN3_OMNI_MOE
from .qwen3_vl import FAMILY as QWEN3_VL
from .qwen3_vl_moe import FAMILY as QWEN3_VL_MOE

from ..support import SUPPORTED_MODEL_TYPES, TORCH_RANGE, TRANSFORMERS_RANGE, newer_than_tested, version_problem

logger = logging.getLogger("token_compressor")

# TRANSFORMERS_RANGE: the tested versions of the seams the patches rely on (get_video_features ->
# pooler_output tuple, get_rope_index, and the encoder outputs handed to forward: as
# `mm_encoder_outputs` in 5.23, through get_*_features in 5.17; see pruning.encoder_outputs_handover).
FAMILIES: Dict[str, Family] = {f.name: f for f in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, QWEN3_VL_MOE, QWEN3_5, QWEN3_5_MOE,
                                                   QWEN2_5_OMNI, QWEN3_OMNI_MOE)}
assert tuple(FAMILIES) == SUPPORTED_MODEL_TYPES

_WARNED = set()  # (package, version) already warned about in this process


def check_transformers_version(version: str = None, torch_version: str = None, environ=None) -> None:
    """Raise RuntimeError unless transformers lies in TRANSFORMERS_RANGE and torch in TORCH_RANGE
    (the installed ones when not given). A release NEWER than its range runs when
    `TOKEN_COMPRESSOR_ALLOW_UNTESTED=1`, with a WARNING once per process and release; an older
    one is always refused (its seams are not the ones the patches use)."""
    if version is None:
        import transformers

        version = transformers.__version__
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    from ..config import allow_untested_from_env

    for package, found, spec in (("transformers", version, TRANSFORMERS_RANGE), ("torch", torch_version, TORCH_RANGE)):
        problem = version_problem(package, found, spec)
        if problem is None:
            continue
        try:
            newer = newer_than_tested(found, spec)
        except Exception:  # noqa: BLE001 - unreadable: refused below with the problem's message
            newer = False
        if not (newer and allow_untested_from_env(environ)):
            raise RuntimeError(f"token_compressor: {problem}")
        if (package, found) not in _WARNED:
            _WARNED.add((package, found))
            logger.warning("token_compressor: WARNING: TOKEN_COMPRESSOR_ALLOW_UNTESTED=1: running on %s %s, which is "
                           "NOT tested (tested: %s%s); the patches may fail or compute something else than the "
                           "tested releases do", package, found, package, spec)


def _classes(family: Family) -> str:
    named = f"{family.name} ({family.model_class().__name__})"
    if family.composite is None:
        return named
    return f"{named} and the whole {family.composite.model_class().__name__}"


def supported_summary() -> str:
    """`qwen2_vl (Qwen2VLForConditionalGeneration), ...`: what can be compressed (from
    SUPPORTED_MODEL_TYPES, so it grows with the families; an Omni family names its thinker and
    the whole model)."""
    return ", ".join(_classes(f) for f in FAMILIES.values())


def family_for(model_type: str, model=None) -> Family:
    """The family of `config.model_type` (a family name, or another type of its model class: the
    Omni thinkers' own); a ValueError naming the model's class and what is supported otherwise."""
    for family in FAMILIES.values():
        if model_type == family.name or model_type in family.model_types:
            return family
    what = f"{type(model).__name__} (model_type {model_type!r})" if model is not None else f"model type {model_type!r}"
    raise ValueError(
        f"unsupported model type {model_type!r}: token_compressor cannot compress {what}; "
        f"it compresses {supported_summary()}"
    )


__all__ = ["FAMILIES", "Family", "SUPPORTED_MODEL_TYPES", "TORCH_RANGE", "TRANSFORMERS_RANGE", "check_transformers_version",
           "family_for", "supported_summary"]
