"""Qwen3-VL-MoE seams (Qwen3-VL-30B-A3B, 235B-A22B): the vision side, the prompt layout, the
M-RoPE positions and the deepstack features are Qwen3-VL's, so are the seams; only the text
model's MLPs are mixtures of experts, routed token by token (a pruned token is simply not routed)."""
from .families import Family
from .qwen3_vl import deepstack_for_forward, prune_with_deepstack


def _model_class():
    from transformers import Qwen3VLMoeForConditionalGeneration

    return Qwen3VLMoeForConditionalGeneration


FAMILY = Family(name="qwen3_vl_moe", model_class=_model_class, prune_encoder_output=prune_with_deepstack,
                forward_encoder_output=deepstack_for_forward)
