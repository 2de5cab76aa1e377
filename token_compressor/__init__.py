"""token-compressor: training-free visual token compression for Qwen video language models.

Public API:
    select(features, num_frames, ratio, method="vidcom2") -> Selection
    available_compressors(), register_compressor(name, fn)
    Config, ConfigError, config_from_env()
    apply(model, method, ratio),
    apply_to_qwen2_vl/qwen2_5_vl/qwen3_vl/qwen3_vl_moe/qwen3_5/qwen3_5_moe/qwen2_5_omni/qwen3_omni_moe(model=None, ...),
    revert(model=None), apply_from_env(), last_stats(model)

The names are imported on first use (PEP 562), so `import token_compressor` and the command
line's `--help` / `--version` do not pay for importing torch and transformers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "apply": (".api", "apply"),
    "apply_from_env": (".api", "apply_from_env"),
    "apply_to_qwen2_5_omni": (".api", "apply_to_qwen2_5_omni"),
    "apply_to_qwen2_5_vl": (".api", "apply_to_qwen2_5_vl"),
    "apply_to_qwen2_vl": (".api", "apply_to_qwen2_vl"),
    "apply_to_qwen3_omni_moe": (".api", "apply_to_qwen3_omni_moe"),
    "apply_to_qwen3_vl": (".api", "apply_to_qwen3_vl"),
    "apply_to_qwen3_vl_moe": (".api", "apply_to_qwen3_vl_moe"),
    "apply_to_qwen3_5": (".api", "apply_to_qwen3_5"),
    "apply_to_qwen3_5_moe": (".api", "apply_to_qwen3_5_moe"),
    "last_stats": (".api", "last_stats"),
    "revert": (".api", "revert"),
    "Config": (".config", "Config"),
    "ConfigError": (".config", "ConfigError"),
    "config_from_env": (".config", "from_env"),
    "Selection": (".selection", "Selection"),
    "select": (".selection", "select"),
    "available_compressors": (".registry", "available_compressors"),
    "get_compressor": (".registry", "get_compressor"),
    "register_compressor": (".registry", "register_compressor"),
    "unregister_compressor": (".registry", "unregister_compressor"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value  # once: later lookups are ordinary attribute reads
        return value
    try:  # a submodule (`token_compressor.models` ...), as a plain package would give after import
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .api import (apply, apply_from_env, apply_to_qwen2_5_omni, apply_to_qwen2_5_vl, apply_to_qwen2_vl,
                      apply_to_qwen3_5, apply_to_qwen3_5_moe, apply_to_qwen3_omni_moe, apply_to_qwen3_vl,
                      apply_to_qwen3_vl_moe, last_stats, revert)
    from .config import Config, ConfigError
    from .config import from_env as config_from_env
    from .registry import available_compressors, get_compressor, register_compressor, unregister_compressor
    from .selection import Selection, select
