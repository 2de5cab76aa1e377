"""What token-compressor supports: the one place these facts are written down.

`setup.py` reads `TRANSFORMERS_RANGE` from this file (without importing the package), and
`token-compressor info` prints both constants.
"""
from __future__ import annotations

# `config.model_type` of every Qwen-VL family the model patches handle.
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# The transformers versions the library is written and tested for (a PEP 440 specifier).
TRANSFORMERS_RANGE = ">=5.0,<6"


def transformers_supported(version: str) -> bool:
    """True when `version` (e.g. `transformers.__version__`) lies in `TRANSFORMERS_RANGE`."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return SpecifierSet(TRANSFORMERS_RANGE).contains(Version(version), prereleases=True)
