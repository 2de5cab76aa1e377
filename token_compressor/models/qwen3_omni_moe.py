"""Qwen3-Omni (MoE) seams: the thinker is Qwen3-VL's vision seam (deepstack features pruned with
the same indices) with Qwen2.5-Omni's prompt layout (one block of video tokens per video, no
per-frame timestamps) plus audio; its M-RoPE positions are float. See `omni`."""
from .families import Composite, Family
from .omni import SEAM_NOTE, position_inputs, speech_refused
from .qwen3_vl import deepstack_for_forward, prune_with_deepstack


def _model_class():
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    return Qwen3OmniMoeThinkerForConditionalGeneration


def _whole_class():
    from transformers import Qwen3OmniMoeForConditionalGeneration

    return Qwen3OmniMoeForConditionalGeneration


FAMILY = Family(name="qwen3_omni_moe", model_class=_model_class, prune_encoder_output=prune_with_deepstack,
                forward_encoder_output=deepstack_for_forward, position_inputs=position_inputs,
                model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
                composite=Composite(model_class=_whole_class, part="thinker", refuses=speech_refused),
                seam_note=SEAM_NOTE)
