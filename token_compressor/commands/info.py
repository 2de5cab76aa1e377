"""`token-compressor info`: versions, compressors and what is usable on this machine."""
from __future__ import annotations

import importlib.util
import json


def collect() -> dict:
    import torch
    import transformers

    import token_compressor as tc

    def usable(mod):
        return importlib.util.find_spec(mod) is not None

    return {
        "token_compressor": tc.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "compressors": tc.available_compressors(),
        "cuda": torch.cuda.is_available(),
        "triton_installed": usable("triton"),
        "flash_attn_installed": usable("flash_attn"),
    }


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for key, value in info.items():
            print(f"{key:<22}{', '.join(value) if isinstance(value, list) else value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, compressors, and whether CUDA/Triton/flash-attn are usable")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
