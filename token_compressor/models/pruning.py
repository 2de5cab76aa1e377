"""Shared plumbing of every Qwen-VL family: choose the kept sequence positions and build the
compressed prefill inputs (ids, masks, labels, 3D M-RoPE positions, encoder outputs), re-padded.

Semantics (the same as the VidCom² authors' and vLLM's):
- each video (and, when asked, each image) is compressed on its own with `select`;
- kept visual tokens keep their original (t, h, w) position ids, and text after a video keeps its
  original ids, so decoding continues in uncompressed coordinates;
- only the text-position row (row 0 of the `[4, B, L']` position ids, which transformers uses for
  masks and packed-sequence detection, never for RoPE) is renumbered contiguously over the kept
  tokens, exactly as `generate` numbers it from the attention mask.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..selection import select

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Settings:
    """How a patched model compresses. `method=None` or `"none"` means off."""

    method: Optional[str] = None
    ratio: float = 0.25
    compress_images: bool = False
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def enabled(self) -> bool:
        return self.method not in (None, "none")


@dataclass
class PrefillStats:
    """What one compressed prefill did. Token counts are visual tokens (video, and image when
    images are compressed); `per_sample[b]` lists `(kind, before, after)` per visual item."""

    method: str
    ratio: float
    before: int = 0
    after: int = 0
    per_sample: List[List[Tuple[str, int, int]]] = field(default_factory=list)
    seq_len_before: int = 0
    seq_len_after: int = 0
    encode_ms: float = 0.0
    compress_ms: float = 0.0

    @property
    def kept_fraction(self) -> float:
        return self.after / self.before if self.before else 1.0

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "ratio": self.ratio,
            "visual_tokens_before": self.before,
            "visual_tokens_after": self.after,
            "kept_fraction": self.kept_fraction,
            "per_sample": [
                [{"kind": k, "before": b, "after": a} for k, b, a in sample] for sample in self.per_sample
            ],
            "seq_len_before": self.seq_len_before,
            "seq_len_after": self.seq_len_after,
            "encode_ms": self.encode_ms,
            "compress_ms": self.compress_ms,
        }


def _token_positions(input_ids: torch.Tensor, token_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(batch index, sequence index) of every `token_id`, row-major: the order in which the
    vision tower's features are concatenated across the batch."""
    b, j = (input_ids == token_id).nonzero(as_tuple=True)
    return b, j


def _full_vision_positions(inner, input_ids, attention_mask, kwargs) -> torch.Tensor:
    """`[3, B, L]` original M-RoPE ids: the caller's, or `get_rope_index` on the full prompt."""
    given = kwargs.get("position_ids")
    if given is not None:
        if given.dim() != 3 or given.shape[0] not in (3, 4):
            raise ValueError(
                f"token_compressor needs 3D M-RoPE position_ids of shape [3 or 4, B, L], got {tuple(given.shape)}"
            )
        return given[-3:]
    params = inspect.signature(inner.get_rope_index).parameters
    rope_kwargs = {
        k: kwargs[k]
        for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
        if k in params and kwargs.get(k) is not None
    }
    positions, _ = inner.get_rope_index(input_ids, attention_mask=attention_mask, **rope_kwargs)
    return positions


def _pad_side(attention_mask: torch.Tensor) -> str:
    """'left' when any sample has padding before its first real token, else 'right'."""
    if attention_mask.shape[1] and bool((attention_mask[:, 0] == 0).any()) and bool(attention_mask[:, -1].all()):
        return "left"
    return "right"


def _gather_repad(keep: torch.Tensor, side: str, tensors: Dict[str, Tuple[torch.Tensor, int, Any]]):
    """Keep the True positions of `keep` [B, L] in every tensor and re-pad to the longest sample.

    Args:
        keep: bool [B, L].
        side: 'left' or 'right' padding of the result.
        tensors: name -> (tensor with the sequence in dim `seq_dim` and batch in `seq_dim - 1`,
            seq_dim, pad value).
    Returns: name -> re-padded tensor, and the new bool attention mask [B, L'].
    """
    B, _ = keep.shape
    lengths = keep.sum(1)
    Lp = int(lengths.max()) if B else 0
    new_mask = torch.zeros(B, Lp, dtype=torch.bool, device=keep.device)
    out = {}
    for name, (t, dim, pad) in tensors.items():
        shape = list(t.shape)
        shape[dim] = Lp
        out[name] = torch.full(shape, pad, dtype=t.dtype, device=t.device)
    for b in range(B):
        idx = keep[b].nonzero().squeeze(1)
        n = idx.numel()
        dst = slice(Lp - n, Lp) if side == "left" else slice(0, n)
        new_mask[b, dst] = True
        for name, (t, dim, _) in tensors.items():
            # batch is dim - 1: take sample b, then its kept sequence positions
            src = t.select(dim - 1, b).index_select(dim - 1, idx.to(t.device))
            out[name].select(dim - 1, b)[..., dst] = src
    return out, new_mask


def compress_prefill(model, family, settings: Settings, kwargs: Dict[str, Any]):
    """Build compressed prefill inputs for a Qwen-VL `*ForConditionalGeneration` call.

    Args:
        model: the `*ForConditionalGeneration` model (its `.model` is the `*VLModel`).
        family: the family's seams (`models.families.Family`).
        settings: enabled `Settings`.
        kwargs: the call's keyword inputs: `input_ids` [B, L] (required), `attention_mask`,
            `mm_token_type_ids` (required), pixel values and grids or `mm_encoder_outputs`,
            optional `labels` [B, L] and `position_ids`.
    Returns:
        (new kwargs for the original forward/generate, `PrefillStats`). The new kwargs carry the
        pruned `input_ids`, `attention_mask`, `mm_token_type_ids`, `labels`, `position_ids`
        `[4, B, L']` and pruned `mm_encoder_outputs`; pixel values and grids are consumed.
    """
    kwargs = dict(kwargs)
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("token_compressor compresses from input_ids; this call passed inputs_embeds only")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    if kwargs.get("mm_token_type_ids") is None:
        raise ValueError(
            "token_compressor needs mm_token_type_ids (0 text, 1 image, 2 video) to place 3D M-RoPE "
            "positions; the Qwen-VL processors return it — pass the processor's whole output"
        )
    B, L = input_ids.shape
    attention_mask = kwargs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    inner = model.model
    cfg = model.config

    t_encode = time.perf_counter()
    encoded = dict(kwargs.pop("mm_encoder_outputs", None) or {})
    if encoded.get("video") is None and kwargs.get("pixel_values_videos") is not None:
        encoded["video"] = inner.get_video_features(kwargs["pixel_values_videos"], kwargs.get("video_grid_thw"), return_dict=True)
    if encoded.get("image") is None and kwargs.get("pixel_values") is not None:
        encoded["image"] = inner.get_image_features(kwargs["pixel_values"], kwargs.get("image_grid_thw"), return_dict=True)
    t0 = time.perf_counter()
    encode_ms = (t0 - t_encode) * 1e3
    vision_pos = _full_vision_positions(inner, input_ids, attention_mask, kwargs)

    keep = attention_mask.bool().clone()
    stats = PrefillStats(method=settings.method, ratio=settings.ratio, per_sample=[[] for _ in range(B)],
                         seq_len_before=int(attention_mask.sum()))
    modalities = [("video", cfg.video_token_id, "video_grid_thw")]
    if settings.compress_images:
        modalities.append(("image", cfg.image_token_id, "image_grid_thw"))
    options = dict(settings.options)
    for kind, token_id, grid_key in modalities:
        out = encoded.get(kind)
        if out is None:
            continue
        feats = list(out.pooler_output)
        grids = kwargs.get(grid_key)
        if grids is None or grids.shape[0] != len(feats):
            raise ValueError(f"{grid_key} is needed to compress {kind}s and must have one row per {kind}")
        bidx, sidx = _token_positions(input_ids, token_id)
        if bidx.numel() != sum(f.shape[0] for f in feats):
            raise ValueError(
                f"{kind} tokens in input_ids ({bidx.numel()}) do not match the {kind} features "
                f"({sum(f.shape[0] for f in feats)})"
            )
        kept_rows, merged = [], []
        offset = 0
        for item, feat in enumerate(feats):
            n = feat.shape[0]
            b = int(bidx[offset])
            if bool((bidx[offset:offset + n] != b).any()):
                raise ValueError(f"{kind} {item} spans several samples: input_ids and grids disagree")
            T = int(grids[item][0])
            sel = select(feat, T, settings.ratio, method=settings.method, **options)
            dropped = ~sel.mask()
            keep[b, sidx[offset:offset + n][dropped.to(sidx.device)]] = False
            kept_rows.append(sel.keep.to(feat.device))
            merged.append(sel.features)
            stats.per_sample[b].append((kind, n, sel.num_kept))
            stats.before += n
            stats.after += sel.num_kept
            offset += n
        encoded[kind] = with_merged_features(family.prune_encoder_output(out, kept_rows), merged)

    side = _pad_side(attention_mask)
    pad_id = getattr(model.generation_config, "pad_token_id", None)
    pad_id = 0 if pad_id is None else (pad_id[0] if isinstance(pad_id, (list, tuple)) else int(pad_id))
    to_gather = {
        "input_ids": (input_ids, 1, pad_id),
        "mm_token_type_ids": (kwargs["mm_token_type_ids"], 1, 0),
        "vision_pos": (vision_pos, 2, 1),
    }
    if kwargs.get("labels") is not None:
        to_gather["labels"] = (kwargs["labels"], 1, IGNORE_INDEX)
    gathered, new_mask = _gather_repad(keep, side, to_gather)

    new_attention = new_mask.to(attention_mask.dtype)
    text_row = new_mask.long().cumsum(-1) - 1
    text_row = text_row.masked_fill(~new_mask, 1)
    position_ids = torch.cat([text_row.unsqueeze(0).to(vision_pos.device), gathered["vision_pos"]], dim=0)
    # decoding from a manual loop (no position_ids) adds rope_deltas to the cache length
    lengths = new_mask.sum(1, keepdim=True)
    max_pos = gathered["vision_pos"].masked_fill(~new_mask.to(vision_pos.device), -1).amax(dim=(0, 2)).unsqueeze(1)
    inner.rope_deltas = (max_pos + 1 - lengths.to(max_pos.device))

    for key in ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts"):
        kwargs.pop(key, None)
    kwargs.update(
        input_ids=gathered["input_ids"],
        attention_mask=new_attention,
        mm_token_type_ids=gathered["mm_token_type_ids"],
        position_ids=position_ids,
        mm_encoder_outputs=encoded,
    )
    if "labels" in gathered:
        kwargs["labels"] = gathered["labels"]
    stats.seq_len_after = int(new_mask.sum())
    stats.encode_ms = encode_ms
    stats.compress_ms = (time.perf_counter() - t0) * 1e3
    return kwargs, stats


def prune_pooled(output, kept_rows: List[torch.Tensor]):
    """A copy of an encoder output whose `pooler_output` (a tuple, one `[n_i, D]` per item) keeps
    only `kept_rows[i]` of item i."""
    fields = {k: v for k, v in output.items()}
    new = type(output)(**fields)
    new.pooler_output = tuple(f.index_select(0, k) for f, k in zip(output.pooler_output, kept_rows))
    return new


def with_merged_features(output, merged: List[Optional[torch.Tensor]]):
    """A pruned encoder output whose item i carries `merged[i]` (`[K_i, D]`, a merging
    compressor's replacement rows in kept order) instead of its kept rows; items with None (pruning
    compressors) are left as they are. Only `pooler_output`, the features scattered into the
    language model's embeddings, changes: Qwen3-VL's deepstack features stay index-selected with
    the same kept rows, as in the VidCom² authors' Qwen code (they never merge them)."""
    if all(m is None for m in merged):
        return output
    output.pooler_output = tuple(
        f if m is None else m.to(dtype=f.dtype, device=f.device) for f, m in zip(output.pooler_output, merged)
    )
    return output
