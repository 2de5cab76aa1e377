"""Qwen3.5-MoE seams (Qwen3.5-35B-A3B, 397B-A17B): Qwen3.5's (see `qwen3_5`: hybrid text model,
no deepstack); its MLPs are mixtures of experts, routed token by token."""
from .families import Family
from .qwen3_5 import FAMILY as QWEN3_5


def _model_class():
    from transformers import Qwen3_5MoeForConditionalGeneration

    return Qwen3_5MoeForConditionalGeneration


FAMILY = Family(name="qwen3_5_moe", model_class=_model_class, prune_encoder_output=QWEN3_5.prune_encoder_output,
                forward_encoder_output=QWEN3_5.forward_encoder_output)
