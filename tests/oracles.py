"""Oracles for the model patches: the unpatched model fed an explicitly pruned sequence."""
import inspect

import torch

import token_compressor as tc
from tiny_models import VIDEO

SPECIAL = list(range(250, 256))  # image, video, vision start/end ids of the tiny vocabulary


def explicit_pruned_inputs(model, sample, ratio, method="vidcom2", video_token_id=VIDEO, merged=True,
                           feature_map=None, encoder_kwargs=None, **options):
    """Oracle inputs for one unpadded sample, built without token_compressor.models: the kept
    video rows from `tc.select` on the model's own features, ids sliced, the kept tokens carrying
    their features (a merging compressor's merged rows when `merged`, else their own rows),
    original 3D positions sliced, text row renumbered 0..L'-1. Qwen3-VL's deepstack features are
    the kept rows' own (the authors never merge them). Tensors are made on the sample's device
    (benchmarks/gpu_check.py runs this oracle on CUDA). `feature_map`, when given, transforms the
    kept features (a control: `torch.neg` must change the logits, or the features never arrive).
    `encoder_kwargs` go to the vision tower as the unpatched forward hands it its own keyword
    arguments (`output_attentions=True`, ...): from transformers 5.24 the forward's output carries
    the encoder output (`video_outputs`), whose attentions and hidden states then exist."""
    inner = model.model
    ids = sample["input_ids"].unsqueeze(0)
    dev = ids.device
    mm = sample.get("mm_token_type_ids")  # Omni prompts have none (the thinkers do not read it)
    with torch.no_grad():
        enc = inner.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True,
                                       **(encoder_kwargs or {}))
    pos3 = original_positions(inner, sample, ids)
    video_pos = (ids[0] == video_token_id).nonzero().squeeze(1)
    keep = torch.ones(ids.shape[1], dtype=torch.bool, device=dev)
    kept_feats, kept_deep, offset = [], [], 0
    if getattr(enc, "deepstack_features", None) is not None:
        sizes = [f.shape[0] for f in enc.pooler_output]  # 5.17: one tensor per layer
        enc.deepstack_features = [torch.split(layer, sizes) if torch.is_tensor(layer) else layer
                                  for layer in enc.deepstack_features]
    for v, feat in enumerate(enc.pooler_output):
        n = feat.shape[0]
        sel = tc.select(feat, int(sample["video_grid_thw"][v][0]), ratio, method=method, **options)
        drop = torch.ones(n, dtype=torch.bool, device=dev)
        drop[sel.keep.to(dev)] = False
        keep[video_pos[offset:offset + n][drop]] = False
        kept = sel.kept_features(feat) if merged else feat[sel.keep]
        kept_feats.append(kept if feature_map is None else feature_map(kept))
        kept_deep.append(sel.keep)
        offset += n
    enc.pooler_output = tuple(kept_feats)
    if getattr(enc, "deepstack_features", None) is not None:
        enc.deepstack_features = [tuple(f[k] for f, k in zip(layer, kept_deep)) for layer in enc.deepstack_features]
    Lp = int(keep.sum())
    text = torch.arange(Lp, device=dev).view(1, 1, Lp)
    position_ids = torch.cat([text, pos3[:, :, keep]], dim=0)
    out = {
        "input_ids": ids[:, keep],
        "attention_mask": torch.ones(1, Lp, dtype=torch.long, device=dev),
        "position_ids": position_ids,
        **features_input(model, sample, enc),
        **{k: sample[k] for k in AUDIO_INPUTS if k in sample},  # Omni: the audio as it is, never pruned
    }
    if mm is not None:
        out["mm_token_type_ids"] = mm.unsqueeze(0)[:, keep]
    return out


def original_positions(inner, sample, ids):
    """`[3, 1, L]` M-RoPE ids of the unpadded prompt `ids` from the model's own `get_rope_index`:
    Qwen-VL's (by mm_token_type_ids) or the Omni thinkers' (by token ids, with audio lengths)."""
    mask = torch.ones_like(ids)
    if "second_per_grids" in inspect.signature(inner.get_rope_index).parameters:  # Omni
        audio = sample.get("feature_attention_mask")
        pos3, _ = inner.get_rope_index(ids, video_grid_thw=sample.get("video_grid_thw"), attention_mask=mask,
                                       use_audio_in_video=bool(sample.get("use_audio_in_video", False)),
                                       audio_seqlens=None if audio is None else audio.sum(-1),
                                       second_per_grids=sample.get("video_second_per_grid"))
        return pos3
    rope_kw = {"video_grid_thw": sample["video_grid_thw"], "mm_token_type_ids": sample["mm_token_type_ids"].unsqueeze(0)}
    if "second_per_grid_ts" in sample:
        rope_kw["second_per_grid_ts"] = sample["second_per_grid_ts"]
    pos3, _ = inner.get_rope_index(ids, attention_mask=mask, **rope_kw)
    return pos3


AUDIO_INPUTS = ("input_features", "feature_attention_mask")
FEATURE_INPUTS = ("mm_encoder_outputs", "pixel_values_videos", "video_grid_thw") + AUDIO_INPUTS
_PLACEHOLDERS = iter(range(10_000, 10**9))  # one seed per oracle: no two oracles share pixels


def feature_inputs(inputs):
    """The keyword arguments of `inputs` (an oracle's) that carry its video features (and an Omni
    prompt's audio): what a call built by hand must pass along with its own ids and positions."""
    return {k: v for k, v in inputs.items() if k in FEATURE_INPUTS}


def features_input(model, sample, enc):
    """How the unpatched model is given the (pruned) encoder output `enc` of `sample`'s videos:
    the keyword arguments to pass it.

    transformers 5.23: `mm_encoder_outputs`. 5.17 has no such argument (its forward computes the
    features from the pixel values): the oracle passes placeholder pixel values of its own (random,
    seeded per oracle, so that no other call passes the same) and makes the model's
    `get_video_features` answer `enc` for exactly those, or for generate's copies of them per beam
    / returned sequence (`enc`'s items repeated as one block, as generate repeats a sample's videos);
    any other input still runs the vision tower, and so would the placeholders themselves were
    they ever not answered here (features of noise: the comparison fails). Deepstack layers are
    concatenated as 5.17's forward expects them. `enc` keeps its autograd graph."""
    inner = model.model
    if "mm_encoder_outputs" in inspect.signature(type(inner).forward).parameters:
        return {"mm_encoder_outputs": {"video": enc}}
    real = sample["pixel_values_videos"]
    grid = sample["video_grid_thw"]
    gen = torch.Generator().manual_seed(next(_PLACEHOLDERS))
    pixels = torch.randn(real.shape, generator=gen).to(device=real.device, dtype=real.dtype)
    deep = getattr(enc, "deepstack_features", None)

    def fed(copies):
        out = type(enc)(**{k: v for k, v in enc.items()})
        out.pooler_output = tuple(enc.pooler_output) * copies
        if deep is not None:
            out.deepstack_features = [torch.cat(list(layer) * copies, dim=0) for layer in deep]
        return out

    def copies_of(pixel_values):
        """k when `pixel_values` is the placeholder repeated k times (generate's expansion), else 0."""
        n = pixels.shape[0]
        if pixel_values is pixels:
            return 1
        if pixel_values.shape[0] % n or pixel_values.shape[1:] != pixels.shape[1:]:
            return 0
        k = pixel_values.shape[0] // n
        return k if torch.equal(pixel_values, pixels.repeat(k, *([1] * (pixels.dim() - 1)))) else 0

    real_get = type(inner).get_video_features.__get__(inner)
    previous = inner.__dict__.get("get_video_features", real_get)

    def get_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
        k = copies_of(pixel_values_videos)
        if not k:
            return previous(pixel_values_videos, video_grid_thw, **kwargs)
        assert video_grid_thw is None or torch.equal(video_grid_thw.cpu(), grid.cpu().repeat(k, 1)), \
            "the oracle's placeholder pixels came with other grids"
        return fed(k)

    inner.get_video_features = get_video_features
    return {"pixel_values_videos": pixels, "video_grid_thw": grid}


def as_inputs_embeds(model, oracle, video_token_id=VIDEO):
    """The same oracle through the language model's `inputs_embeds` path (Qwen2-VL, Qwen2.5-VL:
    no deepstack): token embeddings of the pruned ids with the kept video features written at the
    video positions, original positions, no ids and no encoder outputs."""
    ids = oracle["input_ids"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    if "mm_encoder_outputs" in oracle:
        video = oracle["mm_encoder_outputs"]["video"]
    else:  # transformers 5.17: the features `features_input` hands the model for these pixels
        video = model.model.get_video_features(oracle["pixel_values_videos"], oracle["video_grid_thw"])
    feats = torch.cat(list(video.pooler_output)).to(embeds.dtype)
    embeds[ids == video_token_id] = feats
    return {"inputs_embeds": embeds, "attention_mask": oracle["attention_mask"],
            "position_ids": oracle["position_ids"]}


def greedy_uncached(model, inputs, steps, suppress=SPECIAL):
    """Greedy decoding without a KV cache: every step re-runs the whole (pruned) sequence, with
    every position row extended by +1 per generated token."""
    ids, pos = inputs["input_ids"], inputs["position_ids"]
    mm = inputs.get("mm_token_type_ids")
    out = []
    for _ in range(steps):
        with torch.no_grad():
            features = feature_inputs(inputs)
            if mm is not None:
                features["mm_token_type_ids"] = mm
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos,
                           use_cache=False, **features).logits
        last = logits[:, -1].clone()
        last[:, suppress] = float("-inf")  # as generate's suppress_tokens
        nxt = last.argmax(-1, keepdim=True)
        out.append(int(nxt))
        ids = torch.cat([ids, nxt], dim=1)
        mm = None if mm is None else torch.cat([mm, torch.zeros_like(nxt)], dim=1)
        pos = torch.cat([pos, pos[..., -1:] + 1], dim=-1)
    return out
