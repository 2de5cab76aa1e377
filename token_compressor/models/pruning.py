"""Shared plumbing of every Qwen-VL family: choose the kept sequence positions and build the
compressed prefill inputs (ids, masks, labels, embeddings, M-RoPE positions, encoder outputs),
re-padded.

Semantics (the same as the VidCom² authors' and vLLM's):
- each video (and, when asked, each image) is compressed on its own with `select`;
- a call in which every selection keeps everything is handed to Hugging Face unchanged (bitwise
  the unpatched model, padding and all);
- otherwise dropped visual tokens leave the sequence and so does every row's padding (the
  masked-out columns before a row's first attended token and after its last); text and masked-out
  tokens between them stay. The batch is re-padded to its longest compressed row, on the side the
  caller padded, so a batch of very different videos really shrinks (rows 1,500 and 500 + text
  wide make a batch 1,500 + text wide, not as wide as the short row's original padding);
- kept tokens keep the position ids the unpatched model would give them (its own M-RoPE ids, the
  caller's `position_ids` of any rank, or plain text positions where transformers falls back to
  them), so decoding continues in uncompressed coordinates;
- only the text-position row of `[4, B, L]` position ids (which transformers uses for masks and
  packed-sequence detection, never for RoPE) is renumbered, contiguously within each packed
  segment, as `generate` numbers it from the attention mask.

Gradients: the selection itself is discrete and runs under `torch.no_grad` (inside `select`);
the vision tower, the gather of kept rows and everything after run in the caller's grad mode, so
a caller training through the model gets gradients on the kept tokens (and through them on the
vision tower); dropped tokens get none. `generate` runs the whole compression under no_grad.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..selection import select

logger = logging.getLogger("token_compressor")

IGNORE_INDEX = -100

# the keyword inputs whose last dimension is the sequence (positions are handled on their own)
_SEQ_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids", "labels")
_PIXEL_INPUTS = ("pixel_values", "pixel_values_videos")
_GRID_INPUTS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


@dataclass(frozen=True)
class Settings:
    """How a patched model compresses. `method=None` or `"none"` means off."""

    method: Optional[str] = None
    ratio: float = 0.25
    compress_images: bool = False
    options: Tuple[Tuple[str, Any], ...] = ()
    keep_indices: bool = False  # record each video's kept rows and their positions in `last_stats`

    @property
    def enabled(self) -> bool:
        return self.method not in (None, "none")


@dataclass
class PrefillStats:
    """What one compressed prefill did. Token counts are visual tokens (video, and image when
    images are compressed); `per_sample[b]` lists `(kind, before, after)` per visual item.
    `skipped` names why a call with visual input could not be compressed (it then ran exactly as
    unpatched, `after == before`). `kept` (only when `Settings.keep_indices`): one dict per visual
    item, in prompt order: `kind`, `sample` (batch row), `keep` (kept rows of the item's features,
    ascending) and `positions` (their indices in that row of the caller's `input_ids`).

    Sequence lengths: `seq_len_before/after` count the attended tokens of the whole batch;
    `width_before/after` the padded batch width `L` / `L'` (what the KV cache and the attention
    are sized by); `row_lens_before/after[b]` the attended tokens of row b."""

    method: str
    ratio: float
    before: int = 0
    after: int = 0
    per_sample: List[List[Tuple[str, int, int]]] = field(default_factory=list)
    seq_len_before: int = 0
    seq_len_after: int = 0
    width_before: int = 0
    width_after: int = 0
    row_lens_before: List[int] = field(default_factory=list)
    row_lens_after: List[int] = field(default_factory=list)
    encode_ms: float = 0.0
    compress_ms: float = 0.0
    skipped: Optional[str] = None
    # visual items that ran uncompressed because their features are not finite (NaN or inf from
    # the vision tower): {"sample": b, "kind": "video", "index": i (the sample's i-th video), "reason"}
    uncompressed: List[dict] = field(default_factory=list)
    kept: Optional[List[Dict[str, Any]]] = None

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
            "width_before": self.width_before,
            "width_after": self.width_after,
            "row_lens_before": list(self.row_lens_before),
            "row_lens_after": list(self.row_lens_after),
            "encode_ms": self.encode_ms,
            "compress_ms": self.compress_ms,
            "skipped": self.skipped,
            "uncompressed": [dict(u) for u in self.uncompressed],
            "kept": self.kept,
        }


@dataclass
class CompressedPrompt:
    """How a compressed prompt maps onto the original one, kept with the KV cache it filled so
    that a follow-up call passing the original ids can be translated (see `translate_continuation`).

    Attributes:
        original_ids: `[B, L]` the ids the caller passed.
        compressed: name -> the compressed `[.., B, L']` tensor handed to Hugging Face
            (`input_ids`, `attention_mask`, `mm_token_type_ids`, `position_ids` where present).
    """

    original_ids: torch.Tensor
    compressed: Dict[str, torch.Tensor]

    @property
    def width_delta(self) -> int:
        """L - L': how much shorter the compressed prompt is (what `max_length` must lose)."""
        return int(self.original_ids.shape[1] - self.compressed["input_ids"].shape[1])


def _wait_for(device: torch.device) -> None:
    """Let queued CUDA work finish before a host clock is read: kernels run asynchronously, so
    without this the vision encoder still running at `t0` would be counted as compression time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def skip_reason(kwargs: Dict[str, Any], settings: Settings) -> Optional[str]:
    """Why a prefill with visual input cannot be compressed, or None when it can."""
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        return "inputs_embeds without input_ids: the visual tokens cannot be located"
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        return f"input_ids of shape {tuple(getattr(input_ids, 'shape', ()))} instead of [batch, seq]"
    encoded = kwargs.get("mm_encoder_outputs") or {}
    for kind in ("video", "image") if settings.compress_images else ("video",):
        if encoded.get(kind) is not None and kwargs.get(f"{kind}_grid_thw") is None:
            return f"{kind} mm_encoder_outputs without {kind}_grid_thw: the frames are unknown"
    return None


def visual_tokens_in(model, kwargs: Dict[str, Any], settings: Settings) -> int:
    """Visual tokens (video, and image when images count) the call's grids describe."""
    merge = model.config.vision_config.spatial_merge_size ** 2
    n = 0
    for kind in ("video", "image") if settings.compress_images else ("video",):
        grid = kwargs.get(f"{kind}_grid_thw")
        if isinstance(grid, torch.Tensor):
            n += int(grid.prod(-1).sum()) // merge
    return n


def uncompressed_stats(model, kwargs: Dict[str, Any], settings: Settings) -> PrefillStats:
    """`PrefillStats` of a call that keeps every visual token (`none`, or compression off), so a
    baseline is measured with the same code as a compressed run: every item's `after == before`.
    Counts come from the grids; per-sample attribution from the placeholder tokens in `input_ids`
    (row-major, the order of the grids)."""
    ids = kwargs.get("input_ids")
    mask = kwargs.get("attention_mask")
    merge = model.config.vision_config.spatial_merge_size ** 2
    B = int(ids.shape[0]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else 0
    width = int(ids.shape[1]) if B else 0
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        rows = mask.bool().sum(1).tolist()
    else:
        rows = [width] * B
    seq = int(sum(rows))
    stats = PrefillStats(method=settings.method or "none", ratio=1.0 if not settings.enabled else settings.ratio,
                         per_sample=[[] for _ in range(B)], seq_len_before=seq, seq_len_after=seq,
                         width_before=width, width_after=width, row_lens_before=list(rows),
                         row_lens_after=list(rows), kept=[] if settings.keep_indices else None)
    kinds = [("video", model.config.video_token_id)]
    if settings.compress_images:
        kinds.append(("image", model.config.image_token_id))
    for kind, token_id in kinds:
        grid = kwargs.get(f"{kind}_grid_thw")
        if not isinstance(grid, torch.Tensor):
            continue
        sizes = (grid.prod(-1) // merge).tolist()
        if B:
            bidx, sidx = (ids == token_id).nonzero(as_tuple=True)
        offset = 0
        for n in sizes:
            n = int(n)
            stats.before += n
            stats.after += n
            if B and offset + n <= bidx.numel():
                b = int(bidx[offset])
                stats.per_sample[b].append((kind, n, n))
                if stats.kept is not None:
                    stats.kept.append({"kind": kind, "sample": b, "keep": list(range(n)),
                                       "positions": sidx[offset:offset + n].tolist()})
            offset += n
    return stats


def encode(inner, kwargs: Dict[str, Any], encoder_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The call's encoder outputs (`{"image": .., "video": ..}`): the given `mm_encoder_outputs`,
    plus the vision tower run on the pixel values exactly as the unpatched model runs it."""
    encoded = dict(kwargs.get("mm_encoder_outputs") or {})
    for kind, pixels in (("image", "pixel_values"), ("video", "pixel_values_videos")):
        if encoded.get(kind) is None and kwargs.get(pixels) is not None:
            get = getattr(inner, f"get_{kind}_features")
            encoded[kind] = get(kwargs[pixels], kwargs.get(f"{kind}_grid_thw"), return_dict=True, **encoder_kwargs)
    return encoded


def check_placeholders(model, input_ids: torch.Tensor, encoded: Dict[str, Any]) -> None:
    """Placeholder tokens must match the encoder's feature rows, as transformers checks (with its
    message) before it computes any position."""
    for kind in ("image", "video"):
        out = encoded.get(kind)
        if out is None:
            continue
        tokens = int((input_ids == getattr(model.config, f"{kind}_token_id")).sum())
        rows = sum(int(f.shape[0]) for f in out.pooler_output)
        if tokens != rows:
            raise ValueError(
                f"{kind.capitalize()} features and {kind} tokens do not match, tokens: {tokens}, features: {rows}"
            )


# transformers 5.24 renamed the KV-cache argument and output field `past_key_values` to `cache`
# (the old argument name is still accepted, with a FutureWarning, until 5.40)
CACHE_NAMES = ("cache", "past_key_values")


def cache_of(call_or_output) -> Any:
    """The KV cache in a call's keyword arguments or a model/generate output, under whichever
    name this transformers uses (None when there is none)."""
    for name in CACHE_NAMES:
        value = (call_or_output.get(name) if isinstance(call_or_output, dict)
                 else getattr(call_or_output, name, None))
        if value is not None:
            return value
    return None


def _call_with(fn, **kwargs):
    """Call `fn` with the keyword arguments its signature names: the families' signatures differ,
    and so do transformers releases (5.24 renamed `past_key_values` to `cache`, and Qwen2.5-VL's
    `compute_3d_position_ids` takes it without a default). An argument `fn` requires that is not
    among `kwargs` is a seam this library does not know: a clear error, not a TypeError deep
    inside transformers."""
    params = inspect.signature(fn).parameters
    missing = [name for name, p in params.items()
               if p.default is inspect.Parameter.empty and name not in kwargs and name != "self"
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise RuntimeError(
            f"token_compressor: transformers' {getattr(fn, '__qualname__', fn)}() requires {', '.join(missing)}, "
            "which this token_compressor does not know how to fill: this transformers release changed the "
            "seam (see docs/models.md, 'Versions')"
        )
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def unpatched_positions(model, input_ids, attention_mask, kwargs, for_generate: bool,
                        extra: Optional[Dict[str, Any]] = None) -> torch.Tensor:
    """The position ids the unpatched model would use for this prefill, from transformers' own
    functions: `[4, B, L]` in `generate` (`_prepare_position_ids_for_generation`), `[3, B, L]` in a
    direct forward (`compute_3d_position_ids`, or plain text positions where it returns None).
    `extra`: the family's further inputs of those functions (`Family.position_inputs`)."""
    grids = {k: kwargs.get(k) for k in _GRID_INPUTS}
    extra = extra or {}
    if for_generate:
        model_kwargs = {k: v for k, v in dict(grids, attention_mask=attention_mask,
                                              mm_token_type_ids=kwargs.get("mm_token_type_ids"), **extra).items()
                        if v is not None}
        return model._prepare_position_ids_for_generation(input_ids, model_kwargs)
    pos = _call_with(model.model.compute_3d_position_ids, input_ids=input_ids, attention_mask=kwargs.get("attention_mask"),
                     mm_token_type_ids=kwargs.get("mm_token_type_ids"), inputs_embeds=kwargs.get("inputs_embeds"),
                     **{name: None for name in CACHE_NAMES},  # a prefill: no cache yet
                     **grids, **extra)
    if pos is None:  # transformers falls back to text positions, the same on all three axes
        B, L = input_ids.shape
        pos = torch.arange(L, device=input_ids.device).view(1, 1, L).expand(3, B, L)
    return pos


def _layout(keep: torch.Tensor, side: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where every column of the compressed, re-padded batch comes from.

    Args:
        keep: bool `[B, L]`, the columns that stay.
        side: 'left' or 'right': where the new padding goes.
    Returns:
        src: int64 `[B, L']`, the source column of each new column (any column where not filled);
        filled: bool `[B, L']`, True where a kept column landed, False at new padding.
    """
    B, L = keep.shape
    n = keep.sum(1, keepdim=True)
    Lp = int(n.max()) if B else 0
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept columns first, in order
    rank = torch.arange(Lp, device=keep.device).expand(B, Lp)
    if side == "left":
        rank = rank - (Lp - n)
    filled = (rank >= 0) & (rank < n)
    src = order.gather(1, rank.clamp(0, max(L - 1, 0)))
    return src, filled


def _gather(t: torch.Tensor, batch_dim: int, src: torch.Tensor, filled: torch.Tensor, pad) -> torch.Tensor:
    """`t` (batch in `batch_dim`, sequence in `batch_dim + 1`) with its columns taken from `src`
    per sample and `pad` at new padding. Differentiable in `t`."""
    x = t.movedim((batch_dim, batch_dim + 1), (0, 1))
    if x.shape[0] != src.shape[0]:  # a batch-1 tensor broadcast over the batch (text positions)
        x = x.expand(src.shape[0], *x.shape[1:])
    rows = torch.arange(src.shape[0], device=x.device).unsqueeze(1)
    g = x[rows, src.to(x.device)]
    f = filled.to(x.device).view(*filled.shape, *([1] * (x.dim() - 2)))
    g = torch.where(f, g, torch.as_tensor(pad, dtype=g.dtype, device=g.device))
    return g.movedim((0, 1), (batch_dim, batch_dim + 1))


def _renumber_text_row(row: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Text-position row `[B, L]` with the dropped tokens taken out of the numbering: inside every
    packed segment (a run where the row grows by 1) later tokens move down by the number of
    dropped tokens before them in that segment, so the kept tokens stay contiguous."""
    prev = torch.cat([row[:, :1] - 1, row[:, :-1]], dim=1)
    start = (row - prev) != 1
    d = dropped.to(device=row.device, dtype=row.dtype)
    before = d.cumsum(1) - d
    at_start = torch.where(start, before, torch.zeros_like(before)).cummax(1).values
    return row - (before - at_start)


def padding_columns(attention_mask: torch.Tensor) -> torch.Tensor:
    """bool `[B, L]`: each row's padding, the masked-out columns before its first attended column
    and after its last (all of a row that attends nothing). Masked-out columns between attended
    ones are not padding: they are tokens the caller hid, and they stay."""
    m = attention_mask.bool()
    started = m.int().cummax(1).values.bool()
    not_ended = m.flip(1).int().cummax(1).values.flip(1).bool()
    return ~(started & not_ended)


def _pad_side(attention_mask: torch.Tensor) -> str:
    """'right' when some sample ends in padding (right-padded input), else 'left' (the
    decoder-only convention that `generate` needs)."""
    if attention_mask.shape[1] and not bool(attention_mask[:, -1].bool().all()):
        return "right"
    return "left"


def _non_finite(feat: torch.Tensor) -> int:
    """How many values of `feat` are NaN or inf (min/max first: the exact count only when needed)."""
    lo, hi = torch.aminmax(feat.detach())
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return 0
    return int((~torch.isfinite(feat.detach())).sum())


def compress_prefill(model, family, settings: Settings, kwargs: Dict[str, Any], *, for_generate: bool,
                     encoder_kwargs: Optional[Dict[str, Any]] = None, attention_mask: Optional[torch.Tensor] = None):
    """Build compressed prefill inputs for a Qwen-VL `*ForConditionalGeneration` call.

    Args:
        model: the `*ForConditionalGeneration` model (its `.model` is the `*VLModel`).
        family: the family's seams (`models.families.Family`).
        settings: enabled `Settings`.
        kwargs: the call's keyword inputs: `input_ids` [B, L] (required, see `skip_reason`),
            `attention_mask`, `mm_token_type_ids`, pixel values and grids or `mm_encoder_outputs`,
            optional `labels` [B, L], `inputs_embeds` [B, L, D] and `position_ids` ([B, L],
            [3, B, L] or [4, B, L]).
        for_generate: positions as `generate` builds them (`[4, B, L]`) rather than `forward`.
        encoder_kwargs: extra keyword arguments the unpatched forward hands the vision tower.
        attention_mask: for `generate` without one, the mask `generate` infers.
    Returns:
        (new kwargs for the original forward/generate, `PrefillStats`, `CompressedPrompt` or None).
        When every selection keeps everything the kwargs are the caller's, with the pixel values
        replaced by the encoder outputs already computed, and no `CompressedPrompt` (bitwise the
        unpatched call). Otherwise they carry the compressed sequence inputs, position ids and
        pruned `mm_encoder_outputs`; pixel values and grids are consumed.
    """
    kwargs = dict(kwargs)
    input_ids = kwargs["input_ids"]
    B, L = input_ids.shape
    given_mask = kwargs.get("attention_mask")
    mask = given_mask if given_mask is not None else attention_mask
    if mask is None:
        mask = torch.ones_like(input_ids)
    cfg = model.config

    _wait_for(input_ids.device)
    t_encode = time.perf_counter()
    encoded = encode(model.model, kwargs, encoder_kwargs or {})
    _wait_for(input_ids.device)
    t0 = time.perf_counter()
    check_placeholders(model, input_ids, encoded)

    dropped = torch.zeros(B, L, dtype=torch.bool, device=input_ids.device)
    row_lens = mask.bool().sum(1).tolist()
    stats = PrefillStats(method=settings.method, ratio=settings.ratio, per_sample=[[] for _ in range(B)],
                         seq_len_before=int(sum(row_lens)), width_before=L, row_lens_before=row_lens,
                         kept=[] if settings.keep_indices else None)
    modalities = [("video", cfg.video_token_id, "video_grid_thw")]
    if settings.compress_images:
        modalities.append(("image", cfg.image_token_id, "image_grid_thw"))
    options = dict(settings.options)
    pruned = {}
    replaced = False
    for kind, token_id, grid_key in modalities:
        out = encoded.get(kind)
        if out is None:
            continue
        feats = list(out.pooler_output)
        grids = kwargs.get(grid_key)
        if grids is None or grids.shape[0] != len(feats):
            raise ValueError(f"{grid_key} is needed to compress {kind}s and must have one row per {kind}")
        bidx, sidx = (input_ids == token_id).nonzero(as_tuple=True)  # row-major: the features' order
        kept_rows, merged = [], []
        offset = 0
        for item, feat in enumerate(feats):
            n = feat.shape[0]
            b = int(bidx[offset])
            if bool((bidx[offset:offset + n] != b).any()):
                raise ValueError(f"{kind} {item} spans several samples: input_ids and grids disagree")
            T = int(grids[item][0])
            index = sum(1 for k, _, _ in stats.per_sample[b] if k == kind)  # the sample's index-th <kind>
            bad = _non_finite(feat)
            if bad:
                # one bad video must not fail the batch (the unpatched model answers every row):
                # it runs whole, as unpatched, and the others are compressed; `select` itself
                # still refuses non-finite features
                reason = f"{bad} non-finite feature value(s) (NaN or inf) from the vision tower"
                logger.warning("token_compressor: sample %d, %s %d: %s; this %s runs uncompressed (the batch's "
                               "other visual items are compressed)", b, kind, index, reason, kind)
                stats.uncompressed.append({"sample": b, "kind": kind, "index": index, "reason": reason})
                kept_rows.append(torch.arange(n, device=feat.device))
                merged.append(None)
                stats.per_sample[b].append((kind, n, n))
                stats.before += n
                stats.after += n
                offset += n
                continue
            if settings.ratio >= 1.0:
                # ratio 1.0 means "keep everything" in a model, for every method: the published
                # algorithms do not all keep everything there (VidCom²'s budget clamp keeps ~83 %,
                # DyCoke drops the last frame of an odd T, HoliTom still merges); `select` itself
                # stays the authors' algorithm at every ratio
                sel = select(feat, T, 1.0, method="none")
            else:
                sel = select(feat, T, settings.ratio, method=settings.method, **options)
            dropped[b, sidx[offset:offset + n][~sel.mask().to(sidx.device)]] = True
            kept_rows.append(sel.keep.to(feat.device))
            merged.append(sel.features)
            # a merging method that replaced a kept row changes the call even when nothing is dropped
            replaced = replaced or (sel.features is not None
                                    and not torch.equal(sel.features, feat.index_select(0, sel.keep.to(feat.device))))
            stats.per_sample[b].append((kind, n, sel.num_kept))
            if stats.kept is not None:
                keep = sel.keep.to(sidx.device)
                stats.kept.append({"kind": kind, "sample": b, "keep": keep.tolist(),
                                   "positions": sidx[offset:offset + n][keep].tolist()})
            stats.before += n
            stats.after += sel.num_kept
            offset += n
        pruned[kind] = with_merged_features(family.prune_encoder_output(out, kept_rows), merged)

    # consumed here; `encoder_outputs_handover` gives them back where transformers needs them
    consumed = {key: kwargs.pop(key) for key in _PIXEL_INPUTS if kwargs.get(key) is not None}
    if not bool(dropped.any()) and not replaced:
        # nothing to drop or replace: the caller's inputs as they are, the vision tower not run twice
        kwargs["mm_encoder_outputs"] = encoded
        stats.seq_len_after, stats.width_after, stats.row_lens_after = stats.seq_len_before, L, list(row_lens)
        stats.encode_ms = (t0 - t_encode) * 1e3
        _wait_for(input_ids.device)
        stats.compress_ms = (time.perf_counter() - t0) * 1e3
        return _for_this_transformers(model, kwargs, consumed), stats, None

    positions = kwargs.get("position_ids")
    if positions is None:
        positions = unpatched_positions(model, input_ids, mask, kwargs, for_generate,
                                        extra=family.position_inputs(kwargs, for_generate))
    if positions.dim() == 3 and positions.shape[0] == 4:
        positions = torch.cat([_renumber_text_row(positions[0], dropped).unsqueeze(0), positions[1:]], dim=0)

    # the rows' padding leaves with the dropped tokens: re-padded to the longest compressed row
    src, filled = _layout(~(dropped | padding_columns(mask)), _pad_side(mask))
    pad_id = getattr(model.generation_config, "pad_token_id", None)
    pad_id = 0 if pad_id is None else (pad_id[0] if isinstance(pad_id, (list, tuple)) else int(pad_id))
    pads = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0, "labels": IGNORE_INDEX}
    seq = {name: kwargs[name] for name in _SEQ_INPUTS if kwargs.get(name) is not None}
    seq["attention_mask"] = mask
    new = {name: _gather(t, 0, src, filled, pads[name]) for name, t in seq.items()}
    if kwargs.get("inputs_embeds") is not None:
        new["inputs_embeds"] = _gather(kwargs["inputs_embeds"], 0, src, filled, 0.0)
    new["position_ids"] = _gather(positions, 0 if positions.dim() == 2 else 1, src, filled, 0)
    if given_mask is None and attention_mask is None and bool(filled.all()):
        new.pop("attention_mask")  # no mask was given and no padding was added: keep it that way

    # decoding without position ids (a manual loop, or generate continuing from this cache) adds
    # rope_deltas to the text position: the next position after each sample's last kept token
    new_mask = new.get("attention_mask", filled.long()).bool()
    rope = new["position_ids"]
    rope = rope.unsqueeze(0) if rope.dim() == 2 else (rope[1:] if rope.shape[0] == 4 else rope)
    max_pos = rope.masked_fill(~new_mask.to(rope.device), -1).amax(dim=(0, 2)).unsqueeze(1)
    model.model.rope_deltas = max_pos + 1 - new_mask.sum(1, keepdim=True).to(max_pos.device)

    consumed.update({key: kwargs.pop(key) for key in _GRID_INPUTS if kwargs.get(key) is not None})
    kwargs.update(new)
    kwargs["mm_encoder_outputs"] = dict(encoded, **pruned)
    stats.row_lens_after = new_mask.sum(1).tolist()
    stats.seq_len_after = int(sum(stats.row_lens_after))
    stats.width_after = int(src.shape[1])
    stats.encode_ms = (t0 - t_encode) * 1e3
    _wait_for(input_ids.device)
    stats.compress_ms = (time.perf_counter() - t0) * 1e3
    kwargs = _for_this_transformers(model, kwargs, consumed)
    record = CompressedPrompt(
        original_ids=input_ids,
        compressed={k: v for k, v in new.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids", "position_ids")},
    )
    return kwargs, stats, record


def _expand_rows(t: torch.Tensor, batch_dim: int, rows: int) -> torch.Tensor:
    if t.shape[batch_dim] == rows:
        return t
    if rows % t.shape[batch_dim]:
        raise ValueError(
            f"token_compressor: a follow-up batch of {rows} rows does not fit the compressed prompt's "
            f"{t.shape[batch_dim]} rows"
        )
    return t.repeat_interleave(rows // t.shape[batch_dim], dim=batch_dim)


def translate_continuation(record: CompressedPrompt, kwargs: Dict[str, Any], cache_len: int,
                           for_generate: bool) -> Dict[str, Any]:
    """A follow-up call on a KV cache filled by a compressed prompt, rewritten into the cache's
    (compressed) coordinates; `cache_len` is the cache's length.

    As with an unpatched model, `generate` takes the full ids (the original prompt, the generated
    tokens, new text) with a mask of the same length or none, or only the uncached tokens with a
    full-length mask; `forward` takes the uncached tokens with a full-length mask or none. The
    prompt part of full-length inputs is replaced by the compressed prompt. New visual input is
    refused: the cache cannot take it.

    Raises ValueError naming the problem when the inputs do not continue this cache.
    """
    kwargs = dict(kwargs)
    L = record.original_ids.shape[1]
    delta = record.width_delta
    if any(kwargs.get(k) is not None for k in _PIXEL_INPUTS) or kwargs.get("mm_encoder_outputs"):
        raise ValueError(
            "token_compressor: this past_key_values holds a compressed prompt; a follow-up call can add "
            "text, not new images or videos (start a new prompt instead)"
        )
    ids = kwargs.get("input_ids")
    mask = kwargs.get("attention_mask")
    n = ids.shape[1] if isinstance(ids, torch.Tensor) else 0
    full_ids = for_generate and isinstance(ids, torch.Tensor) and (mask is None or mask.shape[-1] == n)
    if full_ids:
        rows = ids.shape[0]
        prompt = _expand_rows(record.original_ids.to(ids.device), 0, rows)
        if n < L or n - delta <= cache_len or not torch.equal(ids[:, :L], prompt):
            raise ValueError(
                "token_compressor: the input_ids passed with this past_key_values must be the ids the "
                f"compressed generate returned ({L} prompt ids and the generated ones), extended; got {n} ids "
                f"for a cache of {cache_len} compressed positions"
            )
        for name in ("input_ids", "mm_token_type_ids", "position_ids"):
            t = kwargs.get(name)
            if t is None:
                continue
            comp = record.compressed.get(name)
            if comp is None or comp.dim() != t.dim():
                raise ValueError(
                    f"token_compressor: {name} of shape {tuple(t.shape)} cannot continue this compressed prompt "
                    f"(which had {'none' if comp is None else tuple(comp.shape)})"
                )
            if name == "mm_token_type_ids" and bool(t[:, L:].any()):
                raise ValueError("token_compressor: a follow-up of a compressed prompt cannot add visual tokens")
            comp = _expand_rows(comp.to(t.device), 1 if t.dim() == 3 else 0, rows)
            kwargs[name] = torch.cat([comp, t[..., L:]], dim=-1)
    if mask is not None and mask.dim() == 2 and mask.shape[1] == (n if full_ids else cache_len + delta + n):
        comp = record.compressed.get("attention_mask")
        comp = torch.ones_like(record.compressed["input_ids"]) if comp is None else comp
        comp = _expand_rows(comp.to(device=mask.device, dtype=mask.dtype), 0, mask.shape[0])
        kwargs["attention_mask"] = torch.cat([comp, mask[:, L:]], dim=-1)
    elif mask is None and full_ids and record.compressed.get("attention_mask") is not None:
        comp = _expand_rows(record.compressed["attention_mask"].to(ids.device), 0, ids.shape[0])
        kwargs["attention_mask"] = torch.cat([comp, comp.new_ones(ids.shape[0], n - L)], dim=-1)
    return kwargs


_FEATURES = {"video": ("get_video_features", "video_token_id"), "image": ("get_image_features", "image_token_id")}


@functools.lru_cache(maxsize=None)
def takes_encoder_outputs(model_cls: type) -> bool:
    """Whether `model_cls.forward` (a `*VLModel`) accepts precomputed `mm_encoder_outputs`.

    The seam differs between the supported transformers releases: 5.23 takes the encoder outputs
    as an argument (generate precomputes them); 5.17 computes them inside `forward` from the pixel
    values with `get_video_features` / `get_image_features`. Detected from the signature, not
    from a version number."""
    return "mm_encoder_outputs" in inspect.signature(model_cls.forward).parameters


def _for_this_transformers(model, kwargs: Dict[str, Any], consumed: Dict[str, Any]) -> Dict[str, Any]:
    """Where `forward` computes the encoder outputs itself (5.17), the pixel values and grids the
    compression consumed go back into the call: generate expands them per beam / returned
    sequence from the grids, and `encoder_outputs_handover` answers the feature calls."""
    if not takes_encoder_outputs(type(model.model)):
        kwargs.update(consumed)
    return kwargs


@contextlib.contextmanager
def encoder_outputs_handover(model, family, kwargs: Dict[str, Any]):
    """Yield the keyword arguments for the original forward/generate of a compressed call.

    With `mm_encoder_outputs` in `forward` (transformers 5.23): the call as it is. Without (5.17):
    the call without `mm_encoder_outputs` (its pixel values and grids are in it, see
    `_for_this_transformers`), and while it runs the model's `get_*_features` answer with those
    encoder outputs instead of running the vision tower; when generate expanded the items, in
    its order (each sample's items repeated as one block)."""
    inner = model.model
    encoded = kwargs.get("mm_encoder_outputs")
    if encoded is None or takes_encoder_outputs(type(inner)):
        yield kwargs
        return
    call = {k: v for k, v in kwargs.items() if k != "mm_encoder_outputs"}
    missing = object()
    before = {}
    for kind, output in encoded.items():
        if output is None:
            continue
        name, token_attr = _FEATURES[kind]
        samples = _item_samples(call["input_ids"], getattr(model.config, token_attr), output.pooler_output)
        before[name] = inner.__dict__.get(name, missing)
        inner.__dict__[name] = _precomputed(family, kind, output, samples)
    try:
        yield call
    finally:
        for name, old in before.items():  # an instance attribute someone else set comes back
            if old is missing:
                inner.__dict__.pop(name, None)
            else:
                inner.__dict__[name] = old


def _item_samples(input_ids: torch.Tensor, token_id: int, items) -> List[int]:
    """The sample (batch row) of each visual item, from where its tokens sit in `input_ids`."""
    bidx, _ = (input_ids == token_id).nonzero(as_tuple=True)  # row-major: the features' order
    out, offset = [], 0
    for f in items:
        out.append(int(bidx[offset]) if f.shape[0] else 0)
        offset += f.shape[0]
    return out


def _precomputed(family, kind: str, output, samples: List[int]):
    n = len(output.pooler_output)

    def get_features(pixel_values, grid_thw=None, **_):
        rows = n if grid_thw is None else int(grid_thw.shape[0])
        if rows % n:
            raise ValueError(f"token_compressor: the model asked for {rows} {kind} items, the compressed "
                             f"prompt has {n}")
        repeat = rows // n
        order = [i for b in sorted(set(samples)) for _ in range(repeat)
                 for i in range(n) if samples[i] == b]
        return family.forward_encoder_output(output, order)

    return get_features


def select_pooled(output, order: List[int]):
    """A copy of an encoder output whose `pooler_output` holds items `order` (repeats allowed)."""
    new = type(output)(**{k: v for k, v in output.items()})
    new.pooler_output = tuple(output.pooler_output[i] for i in order)
    return new


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
