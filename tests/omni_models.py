"""Tiny random-weight Omni thinkers (Qwen2.5-Omni, Qwen3-Omni MoE) and whole Omni models, with
hand-built prompts of video, audio, or audio inside the video (`use_audio_in_video`, laid out by
the processor's own placeholder function), offline. Ids share tiny_models' vocabulary of 256;
the audio tokens sit just below its vision tokens."""
from __future__ import annotations

import types

import numpy as np

import torch

from tiny_models import IMAGE, PAD, VEND, VIDEO, VOCAB, VSTART

OMNI_FAMILIES = ["qwen2_5_omni", "qwen3_omni_moe"]
AUDIO, ASTART, AEND = 248, 246, 247
OMNI_SPECIAL = list(range(246, 256))  # audio, image, video, start/end ids: never generated in tests
MEL = 16  # mel bins of the tiny audio towers


def _ids():
    return dict(vision_start_token_id=VSTART, vision_end_token_id=VEND, audio_start_token_id=ASTART,
                audio_end_token_id=AEND)


def thinker_config(family: str, attn: str = "sdpa"):
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    audio = dict(num_mel_bins=MEL, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                 output_dim=64, max_source_positions=64)
    if family == "qwen2_5_omni":
        from transformers import Qwen2_5OmniThinkerConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
        cfg = Qwen2_5OmniThinkerConfig(text_config=text, vision_config=vision, audio_config=dict(audio, n_window=4),
                                       image_token_index=IMAGE, video_token_index=VIDEO, audio_token_index=AUDIO,
                                       **_ids())
    elif family == "qwen3_omni_moe":
        from transformers import Qwen3OmniMoeThinkerConfig

        text.update(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                     "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0, 1])
        # n_window 50 as the processor counts audio tokens (its default), downsampling kept tiny
        cfg = Qwen3OmniMoeThinkerConfig(text_config=text, vision_config=vision,
                                        audio_config=dict(audio, n_window=50, n_window_infer=100,
                                                          downsample_hidden_size=8),
                                        image_token_id=IMAGE, video_token_id=VIDEO, audio_token_id=AUDIO, **_ids())
    else:
        raise ValueError(family)
    for c in (cfg, cfg.text_config, cfg.vision_config, cfg.audio_config):
        c._attn_implementation = attn
    return cfg


def _ready(model):
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None
    return model.eval()


def tiny_thinker(family: str, attn: str = "sdpa", seed: int = 0):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration

    cls = {"qwen2_5_omni": Qwen2_5OmniThinkerForConditionalGeneration,
           "qwen3_omni_moe": Qwen3OmniMoeThinkerForConditionalGeneration}[family]
    torch.manual_seed(seed)
    return _ready(cls(thinker_config(family, attn)))


def tiny_omni(family: str, seed: int = 0):
    """The whole Omni model (thinker and, per its config, a talker), talker off by default."""
    from transformers import (Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen3OmniMoeConfig,
                              Qwen3OmniMoeForConditionalGeneration)

    thinker = thinker_config(family).to_dict()
    if family == "qwen2_5_omni":
        cfg = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
        cls = Qwen2_5OmniForConditionalGeneration
    else:
        cfg = Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
        cls = Qwen3OmniMoeForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    _ready(model.thinker)
    if family == "qwen2_5_omni":
        # transformers 5.23's Qwen2.5-Omni generate reads the speaker and `talker.codec_pad_token`
        # even for text only (a checkpoint loads spk_dict.pt and has a talker): without a talker it
        # fails with AttributeError before the thinker runs. This stand-in answers that one
        # attribute; text-only generation never calls the talker.
        model.speaker_map.setdefault("Chelsie", {})
        model.talker = types.SimpleNamespace(codec_pad_token=PAD)
    return model


def patch_dim(family: str) -> int:
    p = 16 if family == "qwen3_omni_moe" else 14
    return 3 * 2 * p * p


def audio_tokens(family: str, frames: int) -> int:
    """Audio placeholder tokens of `frames` mel frames, as the family's processor counts them."""
    if family == "qwen2_5_omni":
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths
    else:
        from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths
    return int(_get_feat_extract_output_lengths(torch.tensor(frames)))


def _interleaved(family: str, grid, n_audio: int, second_per_grid: float):
    """`<audio_bos> video and audio tokens in time order <audio_eos>` from the processor's own
    placeholder function, as ids."""
    if family == "qwen2_5_omni":
        from transformers import Qwen2_5OmniProcessor as P
    else:
        from transformers import Qwen3OmniMoeProcessor as P
    fake = types.SimpleNamespace(video_token="V", audio_token="A", audio_bos_token="<", audio_eos_token=">",
                                 video_processor=types.SimpleNamespace(merge_size=2))
    fake.get_chunked_index = types.MethodType(P.get_chunked_index, fake)
    text = P.replace_video_with_audio_token(
        fake, {"video_grid_thw": np.array([grid]), "video_second_per_grid": [second_per_grid]}, 0,
        {"num_audio_tokens": [n_audio]}, 0, position_id_per_seconds=25, seconds_per_chunk=2.0)
    return [{"V": VIDEO, "A": AUDIO, "<": ASTART, ">": AEND}[c] for c in text]


def make_omni_sample(family: str, grids=((4, 4, 4),), audio_frames=(), in_video=False, text_before=(1, 2, 3),
                     text_after=(4, 5, 6, 7), seed=0, second_per_grid=1.0):
    """One prompt -> dict of 1-D ids + model inputs. `audio_frames`: mel frames of each separate
    audio clip (before the videos); `in_video`: each video carries its own audio track of
    `audio_frames[i]` frames, interleaved with its tokens (`use_audio_in_video`)."""
    g = torch.Generator().manual_seed(seed)
    ids = list(text_before)
    if not in_video:
        for frames in audio_frames:
            ids += [ASTART] + [AUDIO] * audio_tokens(family, frames) + [AEND] + [9]
    for i, grid in enumerate(grids):
        if in_video:
            ids += [VSTART] + _interleaved(family, grid, audio_tokens(family, audio_frames[i]), second_per_grid) + [VEND]
        else:
            ids += [VSTART] + [VIDEO] * (grid[0] * grid[1] * grid[2] // 4) + [VEND]
        ids += [20 + i]
    ids += list(text_after)
    out = {"input_ids": torch.tensor(ids)}
    if grids:
        rows = sum(T * h * w for T, h, w in grids)
        out["pixel_values_videos"] = torch.randn(rows, patch_dim(family), generator=g)
        out["video_grid_thw"] = torch.tensor(grids)
        out["video_second_per_grid"] = torch.full((len(grids),), float(second_per_grid))
    if audio_frames:
        longest = max(audio_frames)
        out["input_features"] = torch.randn(len(audio_frames), MEL, longest, generator=g)
        mask = torch.zeros(len(audio_frames), longest, dtype=torch.long)
        for i, frames in enumerate(audio_frames):
            mask[i, :frames] = 1
        out["feature_attention_mask"] = mask
    if in_video:
        out["use_audio_in_video"] = True
    return out


def collate_omni(samples, padding_side="left"):
    """Batch samples of `make_omni_sample`: ids padded with PAD, audio clips padded to the longest."""
    L = max(s["input_ids"].numel() for s in samples)
    B = len(samples)
    input_ids = torch.full((B, L), PAD, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for b, s in enumerate(samples):
        n = s["input_ids"].numel()
        sl = slice(L - n, L) if padding_side == "left" else slice(0, n)
        input_ids[b, sl] = s["input_ids"]
        mask[b, sl] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        parts = [s[key] for s in samples if key in s]
        if parts:
            batch[key] = torch.cat(parts)
    clips = [(s["input_features"], s["feature_attention_mask"]) for s in samples if "input_features" in s]
    if clips:
        longest = max(f.shape[-1] for f, _ in clips)
        batch["input_features"] = torch.cat([torch.nn.functional.pad(f, (0, longest - f.shape[-1])) for f, _ in clips])
        batch["feature_attention_mask"] = torch.cat([torch.nn.functional.pad(m, (0, longest - m.shape[-1]))
                                                     for _, m in clips])
    if any(s.get("use_audio_in_video") for s in samples):
        batch["use_audio_in_video"] = True
    return batch
