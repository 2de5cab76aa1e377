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


def _load(folder: Path, manifest: dict, name: str) -> dict:
    """One case of `folder`, its sha256 checked against `manifest`; `x32` the exact fp32 input
    `[T*N, D]`, `xbf16` the same values in bf16, `T`, `N`, `D`, `ratio` as Python numbers."""
    path = folder / f"{name}.npz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == manifest["files"][path.name], f"{path} does not match its sha256 in the manifest"
    z = dict(np.load(path))
    bits = z["feat_bf16_bits"]
    z["x32"] = torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32).copy())
    z["xbf16"] = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    for key in ("T", "N", "D"):
        z[key] = int(z[key])
    z["ratio"] = float(z["ratio"])
    return z


def load_case(name: str) -> dict:
    return _load(GOLDEN_DIR, MANIFEST, name)


# -- the authors' other compressors (shared/golden/<method>/, copied to tests/fixtures/<method>/) --

def _method_manifest(method: str) -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / method / "manifest.json").read_text())


def method_cases(method: str) -> list:
    """Case names of `tests/fixtures/<method>/manifest.json`."""
    return [c["name"] for c in _method_manifest(method)["cases"]]


def load_method_case(method: str, name: str) -> dict:
    """One golden case of `method`, its sha256 checked; `x32` the exact fp32 input `[T*N, D]`,
    `xbf16` the same values in bf16; `keep`, `features_out` (and the rest) as stored."""
    manifest = _method_manifest(method)
    z = _load(Path(__file__).parent / "fixtures" / method, manifest, name)
    z["name"] = name
    z["tolerance"] = manifest["tolerance"]["features_out"]
    return z


def assert_features_match(got: torch.Tensor, case: dict) -> None:
    """The golden rule: `|got - ref| <= atol + rtol |ref|` elementwise, copied rows bitwise."""
    ref = case["features_out"]
    got = got.float().numpy()
    assert got.shape == ref.shape
    tol = case["tolerance"]
    bad = np.abs(got - ref) > tol["atol"] + tol["rtol"] * np.abs(ref)
    assert not bad.any(), f"{case['name']}: {int(bad.sum())} feature values off, max |diff| {np.abs(got - ref).max():.3g}"
    copies = case["copy_src"] >= 0
    assert np.array_equal(got[copies], case["x32"].numpy()[case["copy_src"][copies]])
