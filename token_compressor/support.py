"""What token-compressor supports: the one place these facts are written down.

`setup.py` reads `TORCH_RANGE` and `TRANSFORMERS_RANGE` from this file (without importing the
package), and `token-compressor info` prints them. Both ranges are exactly what is tested: the
bottom by `make test-oldest` (requirements/oldest.lock), the top by `make test`
(requirements/main.lock); tests/test_lock.py checks that the locks and these ranges agree.
"""
from __future__ import annotations

# `config.model_type` of every Qwen-VL family the model patches handle (the Omni families: the
# whole model and its thinker, `qwen2_5_omni_thinker` / `qwen3_omni_moe_thinker`).
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni_moe")

# The transformers and torch versions the library is tested with (PEP 440 specifiers): 5.17 with
# torch 2.11 (what the GPU machines ship; inside vLLM 0.32's transformers<5.20) up to 5.23 with
# torch 2.14. A newer release is outside until `make test-latest` has passed on it.
TRANSFORMERS_RANGE = ">=5.17,<5.24"
TORCH_RANGE = ">=2.11,<2.15"


def _in_range(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    # a local build tag (`2.11.0+cu130`) is the same release as `2.11.0`
    return SpecifierSet(spec).contains(Version(Version(version).base_version), prereleases=True)


def transformers_supported(version: str) -> bool:
    """True when `version` (e.g. `transformers.__version__`) lies in `TRANSFORMERS_RANGE`."""
    return _in_range(version, TRANSFORMERS_RANGE)


def torch_supported(version: str) -> bool:
    """True when `version` (e.g. `torch.__version__`, local tags ignored) lies in `TORCH_RANGE`."""
    return _in_range(version, TORCH_RANGE)
