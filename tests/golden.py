"""Loading the VidCom² golden cases (outputs of the authors' code) for parity tests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "vidcom2"
MANIFEST = json.loads((GOLDEN_DIR / "manifest.json").read_text())
CASES = [c["name"] for c in MANIFEST["cases"]]


def load_case(name: str) -> dict:
    path = GOLDEN_DIR / f"{name}.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == MANIFEST["files"][path.name], f"{path} does not match its sha256 in the manifest"
    z = dict(np.load(path))
    bits = z["feat_bf16_bits"]
    z["x32"] = torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32).copy())
    z["xbf16"] = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    for key in ("T", "N", "D"):
        z[key] = int(z[key])
    z["ratio"] = float(z["ratio"])
    return z
