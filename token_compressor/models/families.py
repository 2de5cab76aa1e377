"""What a model family must provide to the shared plumbing (its seams)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List

import torch


@dataclass(frozen=True)
class Family:
    """One Qwen-VL family.

    Attributes:
        name: public family name, also `config.model_type`.
        model_class: returns the `*ForConditionalGeneration` class (imported lazily).
        prune_encoder_output: `(encoder output, kept rows per item) -> pruned encoder output`;
            the output's `pooler_output` is a tuple of `[n_i, D]`, kept rows are int64 `[k_i]`.
        forward_encoder_output: `(pruned encoder output, item order) -> what get_*_features must
            return to a forward that computes its features itself` (transformers 5.17; see
            `pruning.encoder_outputs_handover`).
    """

    name: str
    model_class: Callable[[], type]
    prune_encoder_output: Callable[[object, List[torch.Tensor]], object]
    forward_encoder_output: Callable[[object, List[int]], object]
