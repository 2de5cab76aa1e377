"""Qwen-VL model patches: one module per family holds its seams (`qwen2_vl`, `qwen2_5_vl`,
`qwen3_vl`, the Omni thinkers `qwen2_5_omni`, `qwen3_omni_moe` with `omni`); `pruning` is the
shared plumbing; `patching` wraps forward/generate."""
from __future__ import annotations

from typing import Dict

from .families import Family
from .qwen2_5_omni import FAMILY as QWEN2_5_OMNI
from .qwen2_5_vl import FAMILY as QWEN2_5_VL
from .qwen2_vl import FAMILY as QWEN2_VL
from .qwen3_omni_moe import FAMILY as QWEN3_OMNI_MOE
from .qwen3_vl import FAMILY as QWEN3_VL

from ..support import SUPPORTED_MODEL_TYPES, TRANSFORMERS_RANGE, transformers_supported

# TRANSFORMERS_RANGE: the tested versions of the seams the patches rely on (get_video_features ->
# pooler_output tuple, get_rope_index, and the encoder outputs handed to forward: as
# `mm_encoder_outputs` in 5.23, through get_*_features in 5.17; see pruning.encoder_outputs_handover).
FAMILIES: Dict[str, Family] = {f.name: f for f in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, QWEN2_5_OMNI, QWEN3_OMNI_MOE)}
assert tuple(FAMILIES) == SUPPORTED_MODEL_TYPES


def check_transformers_version(version: str = None) -> None:
    """Raise RuntimeError unless transformers is within TRANSFORMERS_RANGE."""
    if version is None:
        import transformers

        version = transformers.__version__
    try:
        ok = transformers_supported(version)
    except Exception:
        raise RuntimeError(f"cannot read the transformers version {version!r}") from None
    if not ok:
        raise RuntimeError(
            f"token_compressor supports transformers {TRANSFORMERS_RANGE} (the tested Qwen-VL seams); found {version}"
        )


def family_for(model_type: str) -> Family:
    """The family of a `config.model_type` (a family name, or another type of its model class:
    the Omni thinkers' own)."""
    for family in FAMILIES.values():
        if model_type == family.name or model_type in family.model_types:
            return family
    raise ValueError(
        f"unsupported model type {model_type!r}; token_compressor patches: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


__all__ = ["FAMILIES", "Family", "SUPPORTED_MODEL_TYPES", "TRANSFORMERS_RANGE", "check_transformers_version", "family_for"]
