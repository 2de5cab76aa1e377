"""Qwen2.5-Omni seams: the thinker is Qwen2.5-VL's seam (one block of video tokens per video,
or video chunks between audio chunks with `use_audio_in_video`) plus audio; see `omni`."""
from .families import Composite, Family
from .omni import SEAM_NOTE, position_inputs, speech_refused
from .pruning import prune_pooled, select_pooled


def _model_class():
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration


def _whole_class():
    from transformers import Qwen2_5OmniForConditionalGeneration

    return Qwen2_5OmniForConditionalGeneration


FAMILY = Family(name="qwen2_5_omni", model_class=_model_class, prune_encoder_output=prune_pooled,
                forward_encoder_output=select_pooled, position_inputs=position_inputs,
                model_types=("qwen2_5_omni", "qwen2_5_omni_thinker"),
                composite=Composite(model_class=_whole_class, part="thinker", refuses=speech_refused),
                seam_note=SEAM_NOTE)
