"""Compressor registry: a name -> a pure function over one video's features.

A compressor is called as ``fn(features, ratio, **options)`` with ``features`` of shape
``[T, N, D]`` (one video, frame-major, already validated: finite, T, N, D >= 1) and a validated
ratio in (0, 1]. It returns a boolean keep mask of shape ``[T, N]`` on the features' device.
It must not read the environment or hold state: everything it needs comes in as arguments.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

CompressorFn = Callable[..., torch.Tensor]

_REGISTRY: Dict[str, CompressorFn] = {}


def register_compressor(name: str, fn: Optional[CompressorFn] = None, *, overwrite: bool = False):
    """Register `fn` under `name` (lower-case). Usable as a decorator:

    >>> @register_compressor("my_method")
    ... def my_method(features, ratio, **options):  # features [T, N, D] -> keep mask [T, N]
    ...     ...
    """
    key = str(name).strip().lower()
    if not key or not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"compressor name {name!r} must be a non-empty word of letters, digits, '_' or '-'")

    def _register(f: CompressorFn) -> CompressorFn:
        if not callable(f):
            raise TypeError(f"compressor {key!r} must be callable, got {type(f).__name__}")
        if key in _REGISTRY and _REGISTRY[key] is not f and not overwrite:
            raise ValueError(f"a compressor named {key!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[key] = f
        return f

    return _register if fn is None else _register(fn)


def unregister_compressor(name: str) -> None:
    """Remove a registered compressor (mainly for tests of user-registered methods)."""
    _REGISTRY.pop(str(name).strip().lower(), None)


def get_compressor(name: str) -> CompressorFn:
    _ensure_builtins()
    key = str(name).strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown compressor {name!r}; available: {', '.join(available_compressors())}"
        ) from None


def available_compressors() -> List[str]:
    """Names of every registered compressor, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def _ensure_builtins() -> None:
    # The built-in methods register themselves on import; importing lazily keeps this module at
    # the bottom of the import graph (config -> registry, never registry -> models).
    from . import compressors  # noqa: F401
