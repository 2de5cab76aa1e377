"""Qwen3-VL seams: each temporal frame is its own `<timestamp> <vision_start> tokens <vision_end>`
group (the timestamp text and the start/end tokens are never pruned: only video pad tokens are),
and the encoder output carries deepstack features, pruned with the same indices."""
from typing import List

import torch

from .families import Family
from .pruning import prune_pooled


def _model_class():
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration


def prune_with_deepstack(output, kept_rows: List[torch.Tensor]):
    """`pooler_output` and every deepstack layer's per-item features keep the same rows."""
    new = prune_pooled(output, kept_rows)
    deepstack = getattr(output, "deepstack_features", None)
    if deepstack is not None:
        new.deepstack_features = [
            tuple(f.index_select(0, k) for f, k in zip(layer, kept_rows)) for layer in deepstack
        ]
    return new


FAMILY = Family(name="qwen3_vl", model_class=_model_class, prune_encoder_output=prune_with_deepstack)
