"""Seeing what is kept: feature sources (`features.py`) and drawing (`draw.py`), kept apart.

`features.py` turns a video into `VisualTokens` (features `[T*N, D]`, grid, pictures); `select`
chooses; `draw.py` draws from plain arrays. `token-compressor visualize` wires the three.
"""
from __future__ import annotations

import importlib
from typing import Callable

# name -> "module:function"; the function is called as
#   fn(video, max_frames, max_pixels=None, progress=None, **options) -> viz.features.VisualTokens
# Named by string so that listing the sources (for the command line's --help) imports no torch.
FEATURE_SOURCES = {
    "pixels": "token_compressor.viz.features:pixels_source",
    # options: model= a Qwen-VL folder or hub id, device=
    "model": "token_compressor.viz.model_features:model_source",
}


def feature_source(name: str) -> Callable:
    """The feature source registered as `name`."""
    try:
        module, fn = FEATURE_SOURCES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown feature source {name!r}; available: {', '.join(sorted(FEATURE_SOURCES))}") from None
    return getattr(importlib.import_module(module), fn)
