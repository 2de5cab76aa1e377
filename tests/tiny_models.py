"""Tiny random-weight Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL and its MoE variant, Qwen3.5
and its MoE variant) and hand-built video prompts, offline. Token ids: the vocabulary is 256 with
the Qwen special tokens at the top."""
from __future__ import annotations

import torch

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"]
# the Qwen3-VL prompt layout (one vision_start..vision_end group per frame) and patch size 16
QWEN3_LAYOUT = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
# text models whose cache holds recurrent state (gated delta-net layers beside attention layers)
HYBRID = ("qwen3_5", "qwen3_5_moe")
# the Omni thinkers (omni_models.py): `tiny_model`, `make_sample` and `collate` build them too, with
# video only (no audio: omni_models makes the prompts with audio) and without mm_token_type_ids,
# which the thinkers do not take
OMNI = ["qwen2_5_omni", "qwen3_omni_moe"]


def omni_here():
    """The Omni families whose thinker has the seams on this transformers: `thinker.model` a
    `*ThinkerModel` (5.21 on; 5.17-5.20 are refused, see test_omni.py)."""
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe

    return [family for family, module, name in (
        ("qwen2_5_omni", modeling_qwen2_5_omni, "Qwen2_5OmniThinkerModel"),
        ("qwen3_omni_moe", modeling_qwen3_omni_moe, "Qwen3OmniMoeThinkerModel")) if hasattr(module, name)]
VOCAB = 256
IMAGE, VIDEO, VSTART, VEND = 250, 251, 252, 253
PAD = 0


_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
# Qwen3.5's hybrid text model: one gated delta-net layer, then one (gated) attention layer, as its
# checkpoints alternate them (3:1); RoPE on half of each head, as they rotate a part of it
_HYBRID = dict(layer_types=["linear_attention", "full_attention"], head_dim=32, linear_conv_kernel_dim=4,
               linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                "mrope_interleaved": True, "partial_rotary_factor": 0.5})


def tiny_config(family: str, attn: str = "sdpa"):
    import transformers

    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    ids = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
               vision_end_token_id=VEND)
    text3 = dict(text, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                     "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    vision3 = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                   patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    elif family == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1], tokens_per_second=2)
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    elif family == "qwen3_vl":
        cfg = transformers.Qwen3VLConfig(text_config=text3, vision_config=dict(vision3, deepstack_visual_indexes=[0, 1]),
                                         **ids)
    elif family == "qwen3_vl_moe":
        cfg = transformers.Qwen3VLMoeConfig(text_config=dict(text3, **_MOE, decoder_sparse_step=1),
                                            vision_config=dict(vision3, deepstack_visual_indexes=[0, 1]), **ids)
    elif family == "qwen3_5":
        cfg = transformers.Qwen3_5Config(text_config=dict(text, **_HYBRID), vision_config=vision3, **ids)
    elif family == "qwen3_5_moe":
        moe = dict(_MOE, shared_expert_intermediate_size=32)
        cfg = transformers.Qwen3_5MoeConfig(text_config=dict(text, **_HYBRID, **moe), vision_config=vision3, **ids)
    else:
        raise ValueError(family)
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    cfg.vision_config._attn_implementation = attn
    return cfg


CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
           "qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
           "qwen3_5": "Qwen3_5ForConditionalGeneration", "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"}


def _long_memory(model):
    """Slow decay in every gated delta-net head (A in [0.005, 0.05] instead of transformers'
    random init in [0.01, 16], where most heads forget a token within a few steps): the recurrent
    state then carries the whole prompt, as a trained model's long-memory heads do, and a test
    that loses or re-feeds part of it sees a real difference."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "A_log") and hasattr(module, "dt_bias"):
                module.A_log.copy_(torch.linspace(0.005, 0.05, module.A_log.numel()).log())


def tiny_model(family: str, attn: str = "sdpa", seed: int = 0):
    if family in OMNI:
        from omni_models import tiny_thinker

        return tiny_thinker(family, attn, seed)
    import transformers

    cls = getattr(transformers, CLASSES[family])
    torch.manual_seed(seed)
    model = cls(tiny_config(family, attn)).eval()
    if family in HYBRID:
        _long_memory(model)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None
    return model


def patch_dim(family: str) -> int:
    p = 16 if family in QWEN3_LAYOUT + ("qwen3_omni_moe",) else 14
    return 3 * 2 * p * p


def video_segment(family: str, grid, timestamps=True):
    """Token ids of one video in the prompt: Qwen2/2.5 one block, Qwen3 one group per frame."""
    T, h, w = grid
    n = h * w // 4
    if family not in QWEN3_LAYOUT:
        return [VSTART] + [VIDEO] * (T * n) + [VEND]
    seg = []
    for t in range(T):
        seg += [10 + t, 11] if timestamps else []  # '<t.s> seconds' stand-in text
        seg += [VSTART] + [VIDEO] * n + [VEND]
    return seg


def make_sample(family: str, grids, text_before=(1, 2, 3), text_after=(4, 5, 6, 7), image_grids=(), seed=0):
    """One prompt with videos (and optionally images) -> dict of 1-D tensors + pixel tensors."""
    g = torch.Generator().manual_seed(seed)
    ids = list(text_before)
    for grid in image_grids:
        T, h, w = grid
        ids += [VSTART] + [IMAGE] * (T * h * w // 4) + [VEND] + [8]
    for i, grid in enumerate(grids):
        ids += video_segment(family, grid) + [20 + i]
    ids += list(text_after)
    ids = torch.tensor(ids)
    mm = torch.zeros_like(ids)
    mm[ids == IMAGE] = 1
    mm[ids == VIDEO] = 2
    out = {"input_ids": ids} if family in OMNI else {"input_ids": ids, "mm_token_type_ids": mm}
    if grids:
        rows = sum(T * h * w for T, h, w in grids)
        out["pixel_values_videos"] = torch.randn(rows, patch_dim(family), generator=g)
        out["video_grid_thw"] = torch.tensor(grids)
    if image_grids:
        rows = sum(T * h * w for T, h, w in image_grids)
        out["pixel_values"] = torch.randn(rows, patch_dim(family), generator=g)
        out["image_grid_thw"] = torch.tensor(image_grids)
    if family == "qwen2_5_vl" and grids:
        out["second_per_grid_ts"] = torch.ones(len(grids))
    if family in OMNI and grids:
        out["video_second_per_grid"] = torch.ones(len(grids))
    return out


def collate(samples, padding_side="left"):
    """Batch samples made by `make_sample`, padding input ids with PAD."""
    L = max(s["input_ids"].numel() for s in samples)
    B = len(samples)
    input_ids = torch.full((B, L), PAD, dtype=torch.long)
    mm = torch.zeros((B, L), dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for b, s in enumerate(samples):
        n = s["input_ids"].numel()
        sl = slice(L - n, L) if padding_side == "left" else slice(0, n)
        input_ids[b, sl] = s["input_ids"]
        if "mm_token_type_ids" in s:
            mm[b, sl] = s["mm_token_type_ids"]
        mask[b, sl] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if all("mm_token_type_ids" in s for s in samples):
        batch["mm_token_type_ids"] = mm
    for key in ("pixel_values_videos", "pixel_values", "second_per_grid_ts", "video_second_per_grid"):
        parts = [s[key] for s in samples if key in s]
        if parts:
            batch[key] = torch.cat(parts)
    for key in ("video_grid_thw", "image_grid_thw"):
        parts = [s[key] for s in samples if key in s]
        if parts:
            batch[key] = torch.cat(parts)
    return batch
