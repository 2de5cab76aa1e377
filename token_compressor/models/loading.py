"""Loading a Qwen-VL checkpoint and its processor for the command line, with one clear error per
thing a person gets wrong (a missing folder, a folder that is not a supported model)."""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from ..files import open_regular
from ..support import SUPPORTED_MODEL_TYPES


class ModelLoadError(ValueError):
    """The model (or its processor) cannot be loaded; the message names the path and the reason."""


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (`org/name`, exactly one slash, not on disk)."""
    return os.path.exists(name) or name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") != 1)


def _command_line_types():
    """The families the command line loads: not the Omni ones (a whole model with a thinker and
    audio, loaded by other Auto classes and processors), which the Python API patches."""
    from . import FAMILIES

    return tuple(t for t in SUPPORTED_MODEL_TYPES if FAMILIES[t].composite is None)


def _check_supported(name: str, model_type) -> None:
    types = _command_line_types()
    if model_type not in types:
        omni = any(model_type == f or str(model_type).startswith(f + "_") for f in SUPPORTED_MODEL_TYPES if f not in types)
        raise ModelLoadError(f"{name} holds a {model_type!r} model; supported Qwen-VL models: {', '.join(types)}"
                             + ("; Omni models are compressed through the Python API (tc.apply), see docs/models.md"
                                if omni else ""))


def check_model_folder(name: str) -> Optional[str]:
    """For a local folder: its `model_type`, checked against the supported families. For a hub id
    (`org/name` that is not a local path): None, the hub decides."""
    path = os.path.expanduser(name)
    if not _looks_like_path(name):
        return None
    if not os.path.exists(path):
        raise ModelLoadError(f"model folder {name} does not exist")
    if not os.path.isdir(path):
        raise ModelLoadError(f"{name} is a file; --model expects a model folder (with config.json) or a hub id")
    config = os.path.join(path, "config.json")
    if not os.path.lexists(config):
        raise ModelLoadError(f"{name} is not a model folder: it has no config.json")
    try:
        with open_regular(config, "r", encoding="utf-8", what="config.json") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{name}/config.json cannot be read: {e}") from None
    _check_supported(name, model_type)
    return model_type


SUPPORTED_DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when CUDA is usable, else `cpu`; `cpu`, `cuda` and `cuda:N` are checked
    against this machine. Every other device type (meta holds no weights; mps, xpu and the rest
    are untested with the patched models) is refused here, before any model is loaded."""
    import torch

    if not isinstance(device, str):
        raise ModelLoadError(f"--device {device!r} is not a device; expected {SUPPORTED_DEVICES}")
    device = device.strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"--device {device!r} is not a device; expected {SUPPORTED_DEVICES}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"--device {device!r} is not supported; expected {SUPPORTED_DEVICES}")
    if parsed.type == "cpu" and parsed.index not in (None, 0):
        raise ModelLoadError(f"--device {device!r} is not a device; expected {SUPPORTED_DEVICES}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelLoadError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def load_pretrained(name: str, device: str = "auto") -> Tuple[object, object]:
    """`(model, processor)` from a local folder or a hub id, in eval mode on `device`
    (bfloat16 on CUDA, float32 on CPU)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    check_model_folder(name)
    device = resolve_device(device)
    path = os.path.expanduser(name)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {name}: {first}") from None
    _check_supported(name, getattr(model.config, "model_type", None))
    return model.to(device).eval(), processor
