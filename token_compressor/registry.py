"""Compressor registry: a name -> a pure function over one video's features.

A compressor is called as ``fn(features, ratio, **options)`` with ``features`` of shape
``[T, N, D]`` (one video, frame-major, already validated: finite, T, N, D >= 1) and a validated
ratio in (0, 1]. One registered with ``scans_input=True`` may instead get the unchecked video on
CPU: it promises that its first pass over the values calls `kernels.ranges.vouch_for_input`
before anything else can go wrong on a NaN (see `selection._run`), which spares a memory-bound
method the separate read of the whole video that the check otherwise costs. It returns, on the features' device, either

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

import inspect
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch

# (features [T, N, D], ratio, **options) -> mask [T, N] bool, or (mask [T, N] bool, features [K, D])
CompressorFn = Callable[..., Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]

_REGISTRY: Dict[str, CompressorFn] = {}
_SCANS_INPUT: set = set()  # names registered with scans_input=True


def register_compressor(name: str, fn: Optional[CompressorFn] = None, *, overwrite: bool = False,
                        scans_input: bool = False):
    """Register `fn` under `name` (lower-case). Usable as a decorator:

    >>> @register_compressor("my_method")
    ... def my_method(features, ratio, **options):  # features [T, N, D] -> keep mask [T, N]
    ...     ...

    A merging method returns `(mask [T, N] bool, merged [K, D])`, `merged` being the new
    features of the K kept tokens in ascending kept order (see the module docstring).
    `scans_input`: the compressor vouches for unchecked input itself (module docstring).
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
        (_SCANS_INPUT.add if scans_input else _SCANS_INPUT.discard)(key)
        return f

    return _register if fn is None else _register(fn)


def unregister_compressor(name: str) -> None:
    """Remove a registered compressor (mainly for tests of user-registered methods)."""
    _REGISTRY.pop(str(name).strip().lower(), None)
    _SCANS_INPUT.discard(str(name).strip().lower())


def scans_input(name: str) -> bool:
    """Whether compressor `name` was registered with `scans_input=True`."""
    _ensure_builtins()
    return str(name).strip().lower() in _SCANS_INPUT


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


def _accepts(hint, value) -> bool:
    """Whether `value` fits a simple type hint (a class, or Optional/Union of classes); hints this
    cannot judge (generics, Any, strings) accept everything."""
    if hint is Any:
        return True
    if typing.get_origin(hint) is typing.Union:
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if not isinstance(hint, type):
        return True
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float and isinstance(value, int):
        return True
    return isinstance(value, hint)


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError unless compressor `name` takes every keyword in `options` with a value of
    its annotated type (read from its signature, so a compressor registered later, with
    keyword-only options, is checked the same way). `fn(features, ratio, **options)` is the call."""
    fn = get_compressor(name)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: nothing to check against
        return
    params = list(sig.parameters.values())
    accepted = [p.name for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: names are still checked
        hints = {}
    for key, value in options.items():
        if key not in accepted and not takes_any:
            raise ValueError(f"compressor {name!r} has no option {key!r}; its options: "
                             f"{', '.join(accepted) if accepted else '(none)'}")
        if key in hints and not _accepts(hints[key], value):
            raise ValueError(f"compressor {name!r} option {key}={value!r} is a {type(value).__name__}; "
                             f"expected {getattr(hints[key], '__name__', None) or str(hints[key]).replace('typing.', '')}")
