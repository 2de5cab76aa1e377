"""Qwen2-VL seams: one contiguous block of video tokens per video; no extra encoder outputs."""
from .families import Family
from .pruning import prune_pooled, select_pooled


def _model_class():
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration


FAMILY = Family(name="qwen2_vl", model_class=_model_class, prune_encoder_output=prune_pooled,
                forward_encoder_output=select_pooled)
