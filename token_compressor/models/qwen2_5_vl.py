"""Qwen2.5-VL seams: like Qwen2-VL (the windowed vision tower restores raster order before its
output, so features are frame-major as `select` expects); `second_per_grid_ts` only scales the
temporal position ids, which are computed on the full prompt before pruning."""
from .families import Family
from .pruning import prune_pooled, select_pooled


def _model_class():
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration


FAMILY = Family(name="qwen2_5_vl", model_class=_model_class, prune_encoder_output=prune_pooled,
                forward_encoder_output=select_pooled)
