"""token-compressor: training-free visual token compression for Qwen video language models.

Public API:
    select(features, num_frames, ratio, method="vidcom2") -> Selection
    available_compressors(), register_compressor(name, fn)
    Config, ConfigError, config_from_env()
"""
__version__ = "0.1.0"

from .config import Config, ConfigError
from .config import from_env as config_from_env
from .registry import available_compressors, get_compressor, register_compressor, unregister_compressor
from .selection import Selection, select

__all__ = [
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
