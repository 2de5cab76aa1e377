"""token-compressor: training-free visual token compression for Qwen video language models.

Public API:
    select(features, num_frames, ratio, method="vidcom2") -> Selection
    available_compressors(), register_compressor(name, fn)
    Config, ConfigError, config_from_env()
    apply(model, method, ratio), apply_to_qwen2_vl/qwen2_5_vl/qwen3_vl/qwen2_5_omni/qwen3_omni_moe(model=None, ...),
    revert(model=None), apply_from_env(), last_stats(model)
"""
__version__ = "0.1.0"

from .config import Config, ConfigError
from .config import from_env as config_from_env
from .registry import available_compressors, get_compressor, register_compressor, unregister_compressor
from .selection import Selection, select
from .api import (apply, apply_from_env, apply_to_qwen2_5_omni, apply_to_qwen2_5_vl, apply_to_qwen2_vl,
                  apply_to_qwen3_omni_moe, apply_to_qwen3_vl, last_stats, revert)

__all__ = [
    "apply",
    "apply_from_env",
    "apply_to_qwen2_5_omni",
    "apply_to_qwen2_5_vl",
    "apply_to_qwen2_vl",
    "apply_to_qwen3_omni_moe",
    "apply_to_qwen3_vl",
    "last_stats",
    "revert",
    "Config",
    "ConfigError",
    "Selection",
    "available_compressors",
    "config_from_env",
    "get_compressor",
    "register_compressor",
    "select",
    "unregister_compressor",
]
