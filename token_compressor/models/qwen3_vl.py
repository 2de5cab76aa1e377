"""Qwen3-VL seams: each temporal frame is its own `<timestamp> <vision_start> tokens <vision_end>`
group (the timestamp text and the start/end tokens are never pruned: only video pad tokens are),
and the encoder output carries deepstack features, pruned with the same indices."""
from typing import List

import torch

from .families import Family
from .pruning import prune_pooled, select_pooled


def _model_class():
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration


def _per_item(layer, sizes: List[int]):
    # transformers 5.23 splits each deepstack layer per item like pooler_output; 5.17 keeps one
    # `[sum n_i, D]` tensor per layer
    return torch.split(layer, sizes) if isinstance(layer, torch.Tensor) else tuple(layer)


def prune_with_deepstack(output, kept_rows: List[torch.Tensor]):
    """`pooler_output` and every deepstack layer's per-item features keep the same rows
    (deepstack layers come back per item, whichever form they came in)."""
    sizes = [f.shape[0] for f in output.pooler_output]
    new = prune_pooled(output, kept_rows)
    deepstack = getattr(output, "deepstack_features", None)
    if deepstack is not None:
        new.deepstack_features = [
            tuple(f.index_select(0, k) for f, k in zip(_per_item(layer, sizes), kept_rows)) for layer in deepstack
        ]
    return new


def deepstack_for_forward(output, order: List[int]):
    """Items `order` of an encoder output (pruned or not), deepstack layers concatenated as 5.17's
    forward uses them (`[sum k_i, D]` per layer)."""
    sizes = [f.shape[0] for f in output.pooler_output]
    new = select_pooled(output, order)
    deepstack = getattr(output, "deepstack_features", None)
    if deepstack is not None:  # pruned (per item) or as the vision tower returned it (5.17: one tensor)
        new.deepstack_features = [torch.cat([items[i] for i in order], dim=0)
                                  for items in (_per_item(layer, sizes) for layer in deepstack)]
    return new


FAMILY = Family(name="qwen3_vl", model_class=_model_class, prune_encoder_output=prune_with_deepstack,
                forward_encoder_output=deepstack_for_forward)
