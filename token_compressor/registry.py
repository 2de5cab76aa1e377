"""Compressor registry: a name -> a pure function over one video's features.

A compressor is called as ``fn(features, ratio, **options)`` with ``features`` of shape
``[T, N, D]`` (one video, frame-major, already validated: finite, T, N, D >= 1) and a validated
ratio in (0, 1]. It returns, on the features' device, either

* a bool keep mask ``[T, N]`` (a *pruning* compressor: the kept tokens keep their features), or
* a tuple ``(mask, features)``: the bool keep mask ``[T, N]`` and the replacement features of
  the kept tokens, ``[K, D]`` with ``K = mask.sum()``, in ascending kept order (row-major over
  the mask), in the input's dtype (a *merging* compressor: row j replaces the features of the
  j-th kept token, which keeps its original position).

`select` validates what comes back (shape, dtype, finite, K, at least one kept token) and raises
a ValueError naming the compressor otherwise. A compressor must not read the environment or hold
state: everything it needs comes in as arguments (options are keyword arguments).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

# (features [T, N, D], ratio, **options) -> mask [T, N] bool, or (mask [T, N] bool, features [K, D])
CompressorFn = Callable[..., Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]

_REGISTRY: Dict[str, CompressorFn] = {}


def register_compressor(name: str, fn: Optional[CompressorFn] = None, *, overwrite: bool = False):
    """Register `fn` under `name` (lower-case). Usable as a decorator:

    >>> @register_compressor("my_method")
    ... def my_method(features, ratio, **options):  # features [T, N, D] -> keep mask [T, N]
    ...     ...

    A merging method returns `(mask [T, N] bool, merged [K, D])`, `merged` being the new
    features of the K kept tokens in ascending kept order (see the module docstring).
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
