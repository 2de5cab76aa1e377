"""`token-compressor info`: versions, compressors, supported models and what is usable here."""
from __future__ import annotations

import importlib.util
import json
from typing import Tuple


def cuda_status() -> Tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        return False, f"no GPU visible (torch built with CUDA {built})" if built else "torch built without CUDA"
    return True, f"{torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"


def triton_status() -> Tuple[bool, str]:
    """Usable = importable AND a GPU driver is active (importing works without a GPU; launching does not)."""
    if importlib.util.find_spec("triton") is None:
        return False, "not installed"
    try:
        import triton
        from triton.runtime.driver import driver

        driver.active  # raises "0 active drivers" without a usable GPU
    except Exception as e:  # any failure here means kernels cannot launch
        version = getattr(locals().get("triton"), "__version__", "?")
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(" (")[0]
        return False, f"installed {version}, but no usable GPU driver: {reason}"
    return True, f"{triton.__version__}"


def flash_attn_status(cuda: bool) -> Tuple[bool, str]:
    if importlib.util.find_spec("flash_attn") is None:
        return False, "not installed"
    try:
        import flash_attn
    except Exception as e:
        return False, f"installed but fails to import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if not cuda:
        return False, f"installed {flash_attn.__version__}, but no GPU"
    return True, flash_attn.__version__


# the evaluation stack: (distribution, what it is for here)
EVAL_STACK = (
    ("lmms-eval", "evaluation harness (extra: eval)"),
    ("accelerate", "lmms-eval's launcher"),
    ("qwen-vl-utils", "the Qwen model cards' video loading"),
    ("torchvision", "the Qwen-VL processors"),
    ("decord", "video reader"),
    ("av", "video reader (PyAV)"),
    ("torchcodec", "video reader"),
    ("opencv-python-headless", "video reader"),
    ("pillow", "drawing (extra: viz)"),
)


def _version_of(dist: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def entry_point_status(environ=None) -> str:
    """Whether lmms-eval will call our plugin, and what it will do with this environment."""
    import os
    from importlib.metadata import entry_points

    ours = [ep for ep in entry_points(group="lmms_eval.models") if ep.value.startswith("token_compressor.")]
    if not ours:
        return "not registered (install token-compressor with pip; the launcher works without it)"
    env = os.environ if environ is None else environ
    from ..config import report_from_env

    try:
        reporting = report_from_env(env)
    except ValueError as e:
        return f"registered ({ours[0].value}); the configuration is invalid: {e}"
    compressor = (env.get("COMPRESSOR") or "").strip()
    screener = (env.get("EMC_SCREENER") or "").strip()
    if compressor.lower() not in ("", "none"):
        what = f"active: COMPRESSOR={compressor} R_RATIO={env.get('R_RATIO') or '0.25 (default)'}"
    elif screener.lower() not in ("", "none"):
        what = f"active: EMC_SCREENER={screener}, no compression"
    elif reporting:
        what = "active: measuring only (TOKEN_COMPRESSOR_REPORT on, COMPRESSOR unset)"
    else:
        what = "idle: COMPRESSOR unset, lmms-eval runs are left alone"
    return f"registered ({ours[0].value}); {what}"


RATIO_ONE_NOTE = ("R_RATIO=1 keeps every token in a model, for every method; select(ratio=1) stays the "
                  "published algorithm: vidcom2 keeps most, not all (~83-98 %: its budget clamps the most unique "
                  "frames at N and does not redistribute their surplus)")


def collect() -> dict:
    import torch
    import transformers

    import token_compressor as tc

    from ..config import allow_untested_from_env
    from ..support import (SUPPORTED_MODEL_TYPES, TORCH_RANGE, TRANSFORMERS_RANGE, torch_supported,
                           transformers_supported)

    cuda, cuda_detail = cuda_status()
    triton, triton_detail = triton_status()
    flash, flash_detail = flash_attn_status(cuda)
    return {
        "token_compressor": tc.__version__,
        "torch": torch.__version__,
        "torch_range": TORCH_RANGE,
        "torch_supported": torch_supported(torch.__version__),
        "transformers": transformers.__version__,
        "transformers_range": TRANSFORMERS_RANGE,
        "transformers_supported": transformers_supported(transformers.__version__),
        # TOKEN_COMPRESSOR_ALLOW_UNTESTED=1: a newer, untested release runs anyway (with a WARNING)
        "allow_untested": allow_untested_from_env(),
        "model_families": list(SUPPORTED_MODEL_TYPES),
        "compressors": tc.available_compressors(),
        "cuda": cuda,
        "cuda_detail": cuda_detail,
        "triton": triton,
        "triton_detail": triton_detail,
        "flash_attn": flash,
        "flash_attn_detail": flash_detail,
        "eval_stack": {dist: _version_of(dist) for dist, _ in EVAL_STACK},
        "lmms_eval_entry_point": entry_point_status(),
        "notes": [RATIO_ONE_NOTE],
    }


def format_text(info: dict) -> str:
    def yes(flag, detail):
        return f"{'yes' if flag else 'no'}: {detail}"

    rows = [
        ("token-compressor", info["token_compressor"]),
        ("torch", f"{info['torch']} (tested range {info['torch_range']}: "
                  f"{'yes' if info['torch_supported'] else 'NO'})"),
        ("transformers", f"{info['transformers']} (tested range {info['transformers_range']}: "
                         f"{'yes' if info['transformers_supported'] else 'NO'})"),
        *((("untested", "TOKEN_COMPRESSOR_ALLOW_UNTESTED=1: releases outside the tested ranges run anyway"),)
          if info.get("allow_untested") else ()),
        ("model families", ", ".join(info["model_families"])),
        ("compressors", ", ".join(info["compressors"])),
        ("CUDA", yes(info["cuda"], info["cuda_detail"])),
        ("Triton", yes(info["triton"], info["triton_detail"])),
        ("flash-attn", yes(info["flash_attn"], info["flash_attn_detail"])),
        *((dist, f"{info['eval_stack'][dist] or 'not installed'} ({why})") for dist, why in EVAL_STACK),
        ("lmms-eval plugin", info["lmms_eval_entry_point"]),
        *(("note", note) for note in info.get("notes", [])),
    ]
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join(f"{key:<{width}}{value}" for key, value in rows)


def run(args) -> int:
    info = collect()
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, compressors, the evaluation stack, the lmms-eval plugin's state, "
                                    "and whether CUDA/Triton/flash-attn are usable")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
