"""What the two Omni families share: the thinker (`...ThinkerForConditionalGeneration`) is a
Qwen-VL model with an audio tower beside the vision tower, inside a whole model (`...Omni
ForConditionalGeneration`) whose `generate` calls `thinker.generate` and then, for speech, a talker.

Seams (transformers 5.23): `thinker.model` has `get_video_features` (pooler_output per video,
Qwen3-Omni with deepstack features), `mm_encoder_outputs` in `forward`, the placeholder mask and
`masked_scatter` as Qwen-VL; positions from `get_rope_index`, which also needs the audio lengths,
`use_audio_in_video` and `video_second_per_grid` (`position_inputs`). Audio features are scattered
into the audio tokens inside `forward`; compression never touches them.

`use_audio_in_video=True` lays each video out as chunks of video tokens and audio tokens in time
order; the video tokens are still the video features in order, and their positions come from the
unpatched position function on the full prompt, so dropping video tokens there is the same seam.

Refused: speech output from a compressed thinker. The talker reads the thinker's prompt hidden
states row by row against the caller's `input_ids`; after compression the prompt is shorter.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

# transformers 5.21 moved the thinker's vision seam into `thinker.model` (a `*ThinkerModel`); up to
# 5.20 the thinker holds the towers itself around a bare text model, which is refused (detected by
# structure, `patching.seam_problem`, not by version number)
SEAM_NOTE = "the Omni thinkers need transformers >= 5.21, where `thinker.model` is a *ThinkerModel"

# how generate's position function (`_prepare_position_ids_for_generation`) names the audio inputs
_GENERATE_INPUTS = ("feature_attention_mask", "audio_feature_lengths", "use_audio_in_video", "video_second_per_grid")


def position_inputs(kwargs: Dict[str, Any], for_generate: bool) -> Dict[str, Any]:
    """The audio and timing inputs of the thinker's position function, as the unpatched call
    hands them to it: `generate` reads them from its model kwargs; `forward` passes
    `compute_3d_position_ids` the audio lengths counted from `feature_attention_mask` (and none
    without it, whatever `audio_feature_lengths` says)."""
    if for_generate:
        return {k: kwargs[k] for k in _GENERATE_INPUTS if kwargs.get(k) is not None}
    mask = kwargs.get("feature_attention_mask")
    return {
        "use_audio_in_video": kwargs.get("use_audio_in_video"),
        "video_second_per_grid": kwargs.get("video_second_per_grid"),
        "audio_feature_lengths": None if mask is None else mask.sum(1),
    }


def speech_refused(model, original: Callable, kwargs: Dict[str, Any]) -> Optional[str]:
    """Why the whole Omni model's `generate` call cannot run on a compressed thinker, or None.

    Speech is returned when a talker is loaded unless the call says otherwise: Qwen3-Omni reads
    `return_audio`, then `generation_mode`; Qwen2.5-Omni (transformers 5.23) only
    `generation_mode` (`"text"` or False for text). Read from the signature, not a version."""
    if not getattr(model, "has_talker", False):
        return None
    speech = kwargs.get("return_audio") if "return_audio" in inspect.signature(original).parameters else None
    mode = kwargs.get("generation_mode")
    if speech is None and mode is not None:
        speech = mode != "text" and mode is not False
    if speech is None or speech:
        return ("speech output is not supported with a compressed thinker: the talker reads the thinker's "
                "prompt hidden states against the uncompressed input_ids. Generate text only "
                f"({'return_audio=False or ' if 'return_audio' in inspect.signature(original).parameters else ''}"
                "generation_mode='text'), or call model.disable_talker()")
    return None
