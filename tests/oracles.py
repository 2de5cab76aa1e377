"""Oracles for the model patches: the unpatched model fed an explicitly pruned sequence."""
import torch

import token_compressor as tc
from tiny_models import VIDEO

SPECIAL = list(range(250, 256))  # image, video, vision start/end ids of the tiny vocabulary


def explicit_pruned_inputs(model, sample, ratio, method="vidcom2", video_token_id=VIDEO, merged=True, **options):
    """Oracle inputs for one unpadded sample, built without token_compressor.models: the kept
    video rows from `tc.select` on the model's own features, ids sliced, the kept tokens carrying
    their features (a merging compressor's merged rows when `merged`, else their own rows),
    original 3D positions sliced, text row renumbered 0..L'-1. Qwen3-VL's deepstack features are
    the kept rows' own (the authors never merge them)."""
    inner = model.model
    ids = sample["input_ids"].unsqueeze(0)
    mm = sample["mm_token_type_ids"].unsqueeze(0)
    with torch.no_grad():
        enc = inner.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True)
    rope_kw = {"video_grid_thw": sample["video_grid_thw"], "mm_token_type_ids": mm}
    if "second_per_grid_ts" in sample:
        rope_kw["second_per_grid_ts"] = sample["second_per_grid_ts"]
    pos3, _ = inner.get_rope_index(ids, attention_mask=torch.ones_like(ids), **rope_kw)
    video_pos = (ids[0] == video_token_id).nonzero().squeeze(1)
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    kept_feats, kept_deep, offset = [], [], 0
    for v, feat in enumerate(enc.pooler_output):
        n = feat.shape[0]
        sel = tc.select(feat, int(sample["video_grid_thw"][v][0]), ratio, method=method, **options)
        drop = torch.ones(n, dtype=torch.bool)
        drop[sel.keep] = False
        keep[video_pos[offset:offset + n][drop]] = False
        kept_feats.append(sel.kept_features(feat) if merged else feat[sel.keep])
        kept_deep.append(sel.keep)
        offset += n
    enc.pooler_output = tuple(kept_feats)
    if getattr(enc, "deepstack_features", None) is not None:
        enc.deepstack_features = [tuple(f[k] for f, k in zip(layer, kept_deep)) for layer in enc.deepstack_features]
    Lp = int(keep.sum())
    text = torch.arange(Lp).view(1, 1, Lp)
    position_ids = torch.cat([text, pos3[:, :, keep]], dim=0)
    return {
        "input_ids": ids[:, keep],
        "attention_mask": torch.ones(1, Lp, dtype=torch.long),
        "mm_token_type_ids": mm[:, keep],
        "position_ids": position_ids,
        "mm_encoder_outputs": {"video": enc},
    }


def as_inputs_embeds(model, oracle, video_token_id=VIDEO):
    """The same oracle through the language model's `inputs_embeds` path (Qwen2-VL, Qwen2.5-VL:
    no deepstack): token embeddings of the pruned ids with the kept video features written at the
    video positions, original positions, no ids and no encoder outputs."""
    ids = oracle["input_ids"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    feats = torch.cat(list(oracle["mm_encoder_outputs"]["video"].pooler_output)).to(embeds.dtype)
    embeds[ids == video_token_id] = feats
    return {"inputs_embeds": embeds, "attention_mask": oracle["attention_mask"],
            "position_ids": oracle["position_ids"]}


def greedy_uncached(model, inputs, steps, suppress=SPECIAL):
    """Greedy decoding without a KV cache: every step re-runs the whole (pruned) sequence, with
    every position row extended by +1 per generated token."""
    ids, pos = inputs["input_ids"], inputs["position_ids"]
    mm = inputs["mm_token_type_ids"]
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos,
                           mm_token_type_ids=mm, mm_encoder_outputs=inputs["mm_encoder_outputs"],
                           use_cache=False).logits
        last = logits[:, -1].clone()
        last[:, suppress] = float("-inf")  # as generate's suppress_tokens
        nxt = last.argmax(-1, keepdim=True)
        out.append(int(nxt))
        ids = torch.cat([ids, nxt], dim=1)
        mm = torch.cat([mm, torch.zeros_like(nxt)], dim=1)
        pos = torch.cat([pos, pos[..., -1:] + 1], dim=-1)
    return out
