"""pytest plugin for running transformers' own Qwen-VL model tests under token-compressor's
class-level patch (`-p tcpatch`, with this folder on PYTHONPATH; see README.md).

Before any test module is imported it patches every supported family at class level
(`apply_to_qwen*`: vidcom2, ratio `TC_RATIO` (default 1.0), `compress_images=True`), asserts
that the classes are patched, and counts how often the compression path really ran (wrapping
`patching._compress` without changing what it returns), so that a "patched" run in which the
patch never engaged cannot pass unnoticed. `TC_MUTATE` (harness sensitivity checks only, never
for a verdict): `1` scales the visual features by 1.01, `zero` zeroes them, `nomask` drops the
attention mask: a run with them must show failures, or the comparison is too weak to mean much.
"""
import collections
import os

import torch

import token_compressor as tc
from token_compressor.models import FAMILIES, patching

COUNTS = collections.Counter()
_original_compress = patching._compress


def _counting_compress(model, family, settings, kwargs, **how):
    out = _original_compress(model, family, settings, kwargs, **how)
    mutate = os.environ.get("TC_MUTATE", "")
    if mutate in ("1", "zero"):
        k = 1.01 if mutate == "1" else 0.0
        for enc in (out[0].get("mm_encoder_outputs") or {}).values():
            if enc is not None:
                po = enc.pooler_output
                enc.pooler_output = po * k if isinstance(po, torch.Tensor) else type(po)(f * k for f in po)
    elif mutate == "nomask":
        out[0].pop("attention_mask", None)
    stats = out[1]
    COUNTS[f"{family.name}:{'generate' if how.get('for_generate') else 'forward'}"] += 1
    COUNTS[f"{family.name}:visual_before"] += int(stats.before)
    COUNTS[f"{family.name}:visual_after"] += int(stats.after)
    return out


def pytest_configure(config):
    ratio = float(os.environ.get("TC_RATIO", "1.0"))
    for name in FAMILIES:  # every supported family, through its own apply_to_<family>
        getattr(tc, f"apply_to_{name}")(method="vidcom2", ratio=ratio, compress_images=True)
    for fam in FAMILIES.values():
        cls = fam.model_class()
        assert patching.is_class_patched(cls), cls
        assert getattr(cls.forward, patching.ATTR_WRAPPED, None) is not None
        assert getattr(cls.generate, patching.ATTR_WRAPPED, None) is not None
    patching._compress = _counting_compress


def pytest_report_header(config):
    return [f"token_compressor class patch ACTIVE (from {tc.__file__})"] + [
        f"{f.model_class().__name__}: {patching._CLASS_SETTINGS[f.model_class()]}" for f in FAMILIES.values()]


def pytest_terminal_summary(terminalreporter):
    line = repr(dict(sorted(COUNTS.items())))
    terminalreporter.write_line(f"token_compressor compression calls: {line}")
    path = os.environ.get("TC_COUNTS_FILE")
    if path:
        with open(path, "w") as f:
            f.write(line + "\n")
