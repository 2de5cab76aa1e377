"""Qwen3.5 seams: Qwen3-VL's prompt layout (one `<timestamp> <vision_start> tokens <vision_end>`
group per frame) and M-RoPE positions, features from `get_video_features` as a per-item
`pooler_output`, no deepstack.

The text model is hybrid: gated delta-net (linear-attention) layers beside attention layers, so
its cache holds a recurrent state (and a short convolution state) per linear layer as well as keys
and values. A compressed prefill is fed as a shorter sequence, and the recurrent state absorbs
exactly the kept tokens, as for the unpatched model fed the pruned prompt. Continuing from that
cache (`pruning.translate_continuation`) only ever feeds the tokens the cache has not seen (it
refuses a follow-up that does not extend the compressed prompt), which is what makes it exact
here: a recurrent state cannot be rolled back or fed a token twice."""
from .families import Family
from .pruning import prune_pooled, select_pooled


def _model_class():
    from transformers import Qwen3_5ForConditionalGeneration

    return Qwen3_5ForConditionalGeneration


FAMILY = Family(name="qwen3_5", model_class=_model_class, prune_encoder_output=prune_pooled,
                forward_encoder_output=select_pooled)
