"""What a model family must provide to the shared plumbing (its seams)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch


def no_position_inputs(kwargs: Dict[str, Any], for_generate: bool) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Composite:
    """A whole model whose text generation is one of its parts (Omni: thinker, talker, token2wav).

    Attributes:
        model_class: returns the whole model's class (its `generate` calls the part's).
        part: the attribute holding the family's `model_class` instance (`thinker`).
        refuses: `(whole model, its original generate, call kwargs) -> reason or None`: a call the
            compressed part cannot serve (Omni: speech output), refused with that reason.
    """

    model_class: Callable[[], type]
    part: str
    refuses: Callable[[object, Callable, Dict[str, Any]], Optional[str]]


@dataclass(frozen=True)
class Family:
    """One Qwen-VL family.

    Attributes:
        name: public family name, also `config.model_type` of the model it patches.
        model_class: returns the `*ForConditionalGeneration` class (imported lazily) whose
            forward/generate are wrapped: the model that generates text.
        prune_encoder_output: `(encoder output, kept rows per item) -> pruned encoder output`;
            the output's `pooler_output` is a tuple of `[n_i, D]`, kept rows are int64 `[k_i]`.
        forward_encoder_output: `(pruned encoder output, item order) -> what get_*_features must
            return to a forward that computes its features itself` (transformers 5.17; see
            `pruning.encoder_outputs_handover`).
        position_inputs: `(call kwargs, for_generate) -> extra keyword inputs` that transformers'
            position function needs beyond ids, mask and grids (Omni: audio lengths,
            `use_audio_in_video`, `video_second_per_grid`), named as that function names them.
        model_types: every `config.model_type` that `model_class` has (the Omni thinker's own
            type besides the family name).
        composite: the whole model when `model_class` is a part of one (Omni), else None.
        seam_note: added to the error when a transformers release lacks the seams (which
            releases have them).
    """

    name: str
    model_class: Callable[[], type]
    prune_encoder_output: Callable[[object, List[torch.Tensor]], object]
    forward_encoder_output: Callable[[object, List[int]], object]
    position_inputs: Callable[[Dict[str, Any], bool], Dict[str, Any]] = no_position_inputs
    model_types: Tuple[str, ...] = ()
    composite: Optional[Composite] = None
    seam_note: str = ""
