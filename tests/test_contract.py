"""The patched model keeps Hugging Face's `generate`/`forward` contract (issue #12, #16 H3/H4).

The Omni thinkers (OMNI, where this transformers has their seams) run the core modes, forward
and batch cases on video prompts; their audio cases are in test_omni.py.

Two properties, for each family, for `vidcom2` and the `evs` baseline, over the generation modes:

- identity: where compression keeps every token (`none`; every method at ratio 1.0, which in a
  model means keep everything), the patched call is bitwise the unpatched one: ids, scores,
  logits, attentions, hidden states, KV cache, loss, with padding on every row.
- consistency: where compression drops tokens (asserted), the call equals the unpatched model fed
  the explicitly pruned prompt (`oracles.explicit_pruned_inputs`), bitwise, and `generate` returns
  the caller's prompt in front of the new tokens.

Family-independent modes (assisted and prompt-lookup decoding, static cache, torch.compile,
gradient checkpointing, position-id ranks, inputs_embeds) run on one family each, rotating, so
that every family is also covered beyond the core modes.
"""
import inspect
import logging

import pytest
import torch
import transformers

import token_compressor as tc
from oracles import SPECIAL, explicit_pruned_inputs, feature_inputs, features_input, greedy_uncached
from tiny_models import FAMILIES, HYBRID, IMAGE, PAD, VIDEO, collate, make_sample, omni_here, tiny_model
from token_compressor import report

NEW = 3  # new tokens per generate call
OMNI = omni_here()
# the KV cache's argument and output field: `past_key_values` up to transformers 5.23, `cache` from
# 5.24 (the old argument name is deprecated there): the follow-up tests use this release's own name
CACHE = ("cache" if "cache" in inspect.signature(transformers.Qwen2VLForConditionalGeneration.forward).parameters
         else "past_key_values")


_MODELS = {}


def model_of(family, attn="sdpa", seed=0):
    """One tiny model per (family, attention, seed) for the whole module (building is the slow part)."""
    key = (family, attn, seed)
    if key not in _MODELS:
        _MODELS[key] = tiny_model(family, attn=attn, seed=seed)
    return _MODELS[key]


@pytest.fixture(autouse=True)
def _unpatched_after():
    yield
    for model in _MODELS.values():
        tc.revert(model)
    tc.revert()


def video(family, seed=0, frames=4):
    return make_sample(family, [(frames, 4, 4)], seed=seed)


def single(sample):
    return collate([sample])


def padded_everywhere(family):
    """Two samples of different lengths, left padded, plus one more padding column on every row
    (the batch where every row has padding)."""
    batch = collate([video(family, 0), make_sample(family, [(2, 4, 4)], seed=1, text_after=(4, 5))])
    B = batch["input_ids"].shape[0]
    for key, pad in (("input_ids", PAD), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        if key in batch:  # the Omni thinkers take no mm_token_type_ids
            batch[key] = torch.cat([torch.full((B, 1), pad, dtype=batch[key].dtype), batch[key]], dim=1)
    return batch


def padded_single(family):
    """One sample with a padding column in front (assisted and prompt-lookup decoding take one row)."""
    batch = single(video(family))
    for key, pad in (("input_ids", PAD), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        if key in batch:
            batch[key] = torch.cat([torch.full((1, 1), pad, dtype=batch[key].dtype), batch[key]], dim=1)
    return batch


def image_batch(family):
    return collate([make_sample(family, [], image_grids=[(1, 8, 8)], seed=3),
                    make_sample(family, [], image_grids=[(1, 8, 8)], seed=4, text_after=(4,))])


# -- comparing outputs ----------------------------------------------------------------------------

def cache_tensors(cache):
    """Every tensor a cache holds: keys and values of attention layers, the convolution and
    recurrent states of linear-attention layers (Qwen3.5's gated delta-net)."""
    out = []
    for layer in cache.layers:
        if hasattr(layer, "recurrent_states"):
            out.append((list(layer.conv_states.values()), list(layer.recurrent_states.values())))
        if hasattr(layer, "keys"):
            out.append((layer.keys, layer.values))
    return out


def assert_same(a, b, where="output"):
    """Bitwise equality of tensors, nested tuples/lists/ModelOutputs and KV caches."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, f"{where}: {tuple(a.shape)} vs {getattr(b, 'shape', b)}"
        assert torch.equal(a, b), f"{where} differs"
    elif hasattr(a, "get_seq_length"):
        assert a.get_seq_length() == b.get_seq_length(), f"{where}: cache lengths differ"
        assert_same(cache_tensors(a), cache_tensors(b), where)
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "keys") and hasattr(a, "items"):
        assert sorted(a.keys()) == sorted(b.keys()), f"{where}: fields {sorted(a.keys())} vs {sorted(b.keys())}"
        for k in a.keys():
            assert_same(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def sequences(out):
    return out if isinstance(out, torch.Tensor) else out.sequences


def assert_consistent(got, oracle, prompt, oracle_len):
    """`got` (patched, on the full prompt) equals `oracle` (unpatched, on the pruned prompt of
    `oracle_len` columns) with the caller's prompt in front instead of the pruned one."""
    seq = sequences(got)
    rows = seq.shape[0] // prompt.shape[0]
    assert torch.equal(seq[:, :prompt.shape[1]], prompt.repeat_interleave(rows, 0)), "the caller's prompt is returned"
    assert torch.equal(seq[:, prompt.shape[1]:], sequences(oracle)[:, oracle_len:]), "new tokens differ from the oracle"
    if not isinstance(got, torch.Tensor):
        rest = {k: v for k, v in got.items() if k != "sequences"}
        assert_same(rest, {k: v for k, v in oracle.items() if k != "sequences"})


def text_labels(inputs):
    """The ids as labels, visual tokens ignored (-100)."""
    ids = inputs["input_ids"]
    visual = inputs["mm_token_type_ids"] != 0 if "mm_token_type_ids" in inputs else (ids == VIDEO) | (ids == IMAGE)
    return ids.masked_fill(visual, -100)


def dropped_tokens(model):
    stats = tc.last_stats(model)
    return stats["visual_tokens_before"] - stats["visual_tokens_after"]


# -- generation modes -----------------------------------------------------------------------------

MODES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=50),
    "beam": dict(num_beams=2, do_sample=False),
    "beam_sample": dict(num_beams=2, do_sample=True),
    "num_return_sequences": dict(do_sample=True, num_return_sequences=2),
    "beam_num_return_sequences": dict(num_beams=2, num_return_sequences=2),
    "prompt_lookup": dict(do_sample=False, prompt_lookup_num_tokens=2),
    "dict_outputs": dict(do_sample=False, return_dict_in_generate=True, output_scores=True, output_logits=True,
                         output_attentions=True, output_hidden_states=True),
    "static_cache": dict(do_sample=False, cache_implementation="static"),
    "assisted": dict(do_sample=False),
}
SINGLE_ROW = ("assisted", "prompt_lookup")  # transformers supports them for one row only
CORE = ["greedy", "beam", "num_return_sequences", "dict_outputs"]  # num_return_sequences samples
# family-independent modes: one family each, rotating
EXTRA = {"sample": "qwen3_vl", "beam_sample": "qwen2_5_vl", "beam_num_return_sequences": "qwen3_vl", "prompt_lookup": "qwen3_vl",
         "static_cache": "qwen2_vl", "assisted": "qwen2_5_vl"}
# qwen3_5_moe: qwen3_5's seams and cache, qwen3_vl_moe's routing, both through every core mode
CORE_OF = {"qwen3_5_moe": ["greedy", "dict_outputs"]}
CASES = [(f, m) for f in FAMILIES + OMNI for m in CORE_OF.get(f, CORE)] + [(f, m) for m, f in EXTRA.items()]


def generate(model, inputs, mode, family, **extra):
    kwargs = dict(MODES[mode], max_new_tokens=NEW, suppress_tokens=SPECIAL, **extra)
    if mode == "assisted":
        kwargs["assistant_model"] = model_of(family, seed=1)
    torch.manual_seed(0)
    return model.generate(**inputs, **kwargs)


def attn_for(mode):
    return "eager" if mode == "dict_outputs" else "sdpa"  # sdpa returns no attentions


@pytest.mark.parametrize("family,mode", CASES)
def test_generate_identity_where_nothing_is_dropped(family, mode):
    model = model_of(family, attn_for(mode))
    batch = padded_everywhere(family) if mode not in SINGLE_ROW else padded_single(family)
    ref = generate(model, batch, mode, family)
    tc.apply(model, "evs", 1.0)
    got = generate(model, batch, mode, family)
    assert tc.last_stats(model)["visual_tokens_before"] == (16 if mode in SINGLE_ROW else 24)
    assert dropped_tokens(model) == 0
    assert_same(got, ref)


@pytest.mark.parametrize("family,mode", CASES)
def test_generate_equals_the_explicitly_pruned_prompt(family, mode):
    model = model_of(family, attn_for(mode))
    sample = video(family)
    method = "evs" if mode == "beam" else "vidcom2"
    oracle_inputs = explicit_pruned_inputs(model, sample, 0.5, method=method)
    oracle = generate(model, oracle_inputs, mode, family)
    tc.apply(model, method, 0.5)
    batch = single(sample)
    got = generate(model, batch, mode, family)
    assert dropped_tokens(model) > 0
    assert_consistent(got, oracle, batch["input_ids"], oracle_inputs["input_ids"].shape[1])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("how", ["none", "vidcom2_images_at_1"])
def test_none_and_vidcom2_at_ratio_1_on_images_are_identities(family, how):
    model = model_of(family)
    batch = padded_everywhere(family) if how == "none" else image_batch(family)
    with torch.no_grad():
        ref_logits = model(**batch).logits
    ref = generate(model, batch, "greedy", family)
    if how == "none":
        tc.apply(model, "none")
    else:
        tc.apply(model, "vidcom2", 1.0, compress_images=True)
    with torch.no_grad():
        assert_same(model(**batch).logits, ref_logits)
    assert_same(generate(model, batch, "greedy", family), ref)
    if how != "none":
        stats = tc.last_stats(model)
        assert [k["kind"] for k in stats["per_sample"][0]] == ["image"] and dropped_tokens(model) == 0


@pytest.mark.parametrize("method", ["vidcom2", "dycoke", "holitom", "visionzip", "fastvid"])
def test_every_method_at_ratio_1_is_the_identity_on_videos(method):
    # `select` keeps the authors' algorithm at 1.0 (VidCom²'s budget clamp drops tokens of a
    # multi-frame video, DyCoke drops an odd T's last frame, HoliTom still merges) but in a model
    # ratio 1.0 means keep everything (#12), for every method
    family = "qwen2_vl"
    model = model_of(family)
    batch = padded_everywhere(family)
    with torch.no_grad():
        ref_logits = model(**batch).logits
    ref = generate(model, batch, "greedy", family)
    tc.apply(model, method, 1.0)
    with torch.no_grad():
        got_logits = model(**batch).logits
    got = generate(model, batch, "greedy", family)
    assert torch.equal(got_logits, ref_logits)
    assert tc.last_stats(model)["visual_tokens_before"] == 24 and dropped_tokens(model) == 0
    assert_same(got, ref)


def test_vidcom2_select_at_ratio_1_is_still_the_published_algorithm():
    # documented (#16 H16): the published budget clamp keeps less than everything at r = 1
    model = model_of("qwen2_vl")
    sample = video("qwen2_vl")
    with torch.no_grad():
        enc = model.model.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True)
    feat = enc.pooler_output[0]
    sel = tc.select(feat, int(sample["video_grid_thw"][0][0]), 1.0, method="vidcom2")
    assert sel.num_kept < feat.shape[0]


# -- forward --------------------------------------------------------------------------------------

FORWARD = dict(output_attentions=True, output_hidden_states=True, use_cache=True)


@pytest.mark.parametrize("family", FAMILIES + OMNI)
def test_forward_identity_with_outputs_labels_and_padding(family):
    model = model_of(family, "eager")
    batch = padded_everywhere(family)
    labels = text_labels(batch)
    with torch.no_grad():
        ref = model(**batch, labels=labels, **FORWARD)
        ref_last = model(**batch, logits_to_keep=1).logits
    tc.apply(model, "evs", 1.0)
    with torch.no_grad():
        got = model(**batch, labels=labels, **FORWARD)
        got_last = model(**batch, logits_to_keep=1).logits
    assert dropped_tokens(model) == 0
    assert_same(got, ref)
    assert_same(got_last, ref_last)


@pytest.mark.parametrize("family", FAMILIES + OMNI)
@pytest.mark.parametrize("method", ["vidcom2", "evs"])
def test_forward_equals_the_explicitly_pruned_prompt(family, method):
    model = model_of(family, "eager")
    sample = video(family)
    # the vision tower run as the patched (and the unpatched) forward runs it with these outputs asked
    vision = {k: v for k, v in FORWARD.items() if k.startswith("output_")}
    oracle_inputs = explicit_pruned_inputs(model, sample, 0.5, method=method, encoder_kwargs=vision)
    oracle_labels = text_labels(oracle_inputs)
    with torch.no_grad():
        ref = model(**oracle_inputs, labels=oracle_labels, **FORWARD)
        ref_last = model(**oracle_inputs, logits_to_keep=1).logits
    tc.apply(model, method, 0.5)
    batch = single(sample)
    labels = text_labels(batch)
    with torch.no_grad():
        got = model(**batch, labels=labels, **FORWARD)
        got_last = model(**batch, logits_to_keep=1).logits
    assert dropped_tokens(model) > 0
    if "rope_deltas" in type(got).__dataclass_fields__:
        # transformers 5.17 returns the model's rope_deltas (state it keeps for decoding without
        # positions; 5.23 returns none): the oracle was given its positions, so its value is
        # whatever an earlier call left. Compressed, it must place the next token after the last
        # kept one: the largest kept M-RoPE id + 1, at cache position L'
        pos = oracle_inputs["position_ids"]
        expected = pos[1:].amax(dim=(0, 2)).view(-1, 1) + 1 - pos.shape[-1]
        assert_same(got.rope_deltas, expected, "rope_deltas")
        assert_same(model.model.rope_deltas, expected, "the model's rope_deltas")
        got, ref = ({k: v for k, v in out.items() if k != "rope_deltas"} for out in (got, ref))
    assert_same(got, ref)
    assert_same(got_last, ref_last)


@pytest.mark.parametrize("family", FAMILIES + OMNI)
def test_compressed_batch_drops_its_padding_and_each_row_equals_its_oracle(family):
    """Every row padded, compressed: the padding leaves with the dropped tokens, the batch is as
    wide as its longest pruned row, new padding goes left, and each row's next-token logits equal
    its own oracle (re-padded batch: sdpa tolerance as in test_models; tests/test_batches.py
    measures it)."""
    model = model_of(family)
    batch = padded_everywhere(family)
    samples = [video(family, 0), make_sample(family, [(2, 4, 4)], seed=1, text_after=(4, 5))]
    expected, widths = [], []
    for s in samples:
        with torch.no_grad():
            oracle = explicit_pruned_inputs(model, s, 0.5)
            expected.append(model(**oracle).logits[0, -1])
        widths.append(oracle["input_ids"].shape[1])
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        logits = model(**batch).logits
    assert dropped_tokens(model) > 0
    assert logits.shape[1] == max(widths)
    for b in range(2):
        torch.testing.assert_close(logits[b, -1], expected[b], atol=1e-5, rtol=0)


def test_gradients_reach_the_kept_tokens_and_the_vision_tower_with_checkpointing():
    """Selection runs under no_grad; the vision tower, the gather and the language model keep the
    caller's autograd: training through the patched model gives the gradients of the explicitly
    pruned model, with gradient checkpointing in training mode."""
    family = "qwen2_5_vl"
    sample = video(family)
    grads = []
    for patched in (False, True):
        model = tiny_model(family)
        model.gradient_checkpointing_enable()
        model.train()
        if patched:
            tc.apply(model, "vidcom2", 0.5)
            inputs = single(sample)
        else:  # the oracle's ids and positions, its features recomputed with autograd on
            inputs = explicit_pruned_inputs(model, sample, 0.5)
            keep = [k for k in _kept_rows(model, sample, 0.5)]
            enc = model.model.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True)
            enc.pooler_output = tuple(f.index_select(0, k) for f, k in zip(enc.pooler_output, keep))
            inputs.update(features_input(model, sample, enc))
        labels = inputs["input_ids"].masked_fill(inputs["mm_token_type_ids"] != 0, -100)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        if patched:
            assert dropped_tokens(model) > 0
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    oracle, got = grads
    assert sorted(got) == sorted(oracle)
    assert any(n.startswith("model.visual.") for n in got) and any("language_model" in n for n in got)
    for name in oracle:
        torch.testing.assert_close(got[name], oracle[name], atol=0, rtol=0, msg=name)


def _kept_rows(model, sample, ratio, method="vidcom2"):
    with torch.no_grad():
        enc = model.model.get_video_features(sample["pixel_values_videos"], sample["video_grid_thw"], return_dict=True)
    return [tc.select(f, int(sample["video_grid_thw"][i][0]), ratio, method=method).keep
            for i, f in enumerate(enc.pooler_output)]


def test_generate_builds_no_graph_and_forward_keeps_the_callers_grad_mode():
    family = "qwen2_vl"
    model = model_of(family)
    seen = []
    hook = model.model.visual.register_forward_hook(lambda *a: seen.append(torch.is_grad_enabled()))
    try:
        tc.apply(model, "vidcom2", 0.5)
        generate(model, single(video(family)), "greedy", family)
        out = model(**single(video(family)))
    finally:
        hook.remove()
    assert seen == [False, True]
    assert out.logits.requires_grad


@pytest.mark.parametrize("family", ["qwen3_vl"])
def test_torch_compile_of_the_forward(family):
    model = model_of(family)
    batch = single(video(family))
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        eager = model(**batch).logits
        compiled = torch.compile(model, backend="eager", dynamic=False)
        got = compiled(**batch).logits
    assert dropped_tokens(model) > 0
    assert_same(got, eager)


# -- positions ------------------------------------------------------------------------------------

def _text_positions(batch):
    L = batch["input_ids"].shape[1]
    return torch.arange(L).expand_as(batch["input_ids"]).clone()


@pytest.mark.parametrize("family,rank", [("qwen2_vl", 2), ("qwen2_5_vl", 3), ("qwen3_vl", 3), ("qwen3_vl", 2),
                                         ("qwen2_vl", 4)])
def test_explicit_position_ids_of_every_rank(family, rank):
    """The caller's position ids win (2-D text positions on all three axes, 3-D M-RoPE ids, or
    [4, B, L] with a text row); no mm_token_type_ids are needed then. Identity at 1.0; compressed,
    the kept tokens carry the caller's positions (the text row renumbered over the kept tokens):
    the same as the oracle fed those positions."""
    model = model_of(family)
    sample = video(family)
    batch = single(sample)
    if rank == 2:
        positions = _text_positions(batch)
    else:
        positions, _ = model.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                                  video_grid_thw=batch["video_grid_thw"],
                                                  **({"second_per_grid_ts": batch["second_per_grid_ts"]}
                                                     if "second_per_grid_ts" in batch else {}))
        if rank == 4:
            positions = torch.cat([_text_positions(batch).unsqueeze(0), positions], dim=0)
    no_types = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
    keep = torch.ones(batch["input_ids"].shape[1], dtype=torch.bool)
    vpos = (batch["input_ids"][0] == VIDEO).nonzero().squeeze(1)
    rows = torch.cat(_kept_rows(model, sample, 0.5))
    drop = torch.ones(vpos.numel(), dtype=torch.bool)
    drop[rows] = False
    keep[vpos[drop]] = False
    oracle = explicit_pruned_inputs(model, sample, 0.5)
    kept_positions = positions[..., keep].clone()
    if rank == 4:
        kept_positions[0] = torch.arange(int(keep.sum()))
    with torch.no_grad():
        expected = model(input_ids=oracle["input_ids"], position_ids=kept_positions,
                         **feature_inputs(oracle)).logits
        ref = model(**no_types, position_ids=positions).logits
    tc.apply(model, "evs", 1.0)
    with torch.no_grad():
        assert_same(model(**no_types, position_ids=positions).logits, ref)
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        got = model(**no_types, position_ids=positions).logits
    assert dropped_tokens(model) > 0
    assert_same(got, expected)


def test_qwen2_5_vl_without_mm_token_type_ids_runs_as_transformers_does():
    """transformers falls back to text positions for Qwen2.5-VL without mm_token_type_ids: so do
    we (identity at 1.0, and compressed equals the oracle on those positions)."""
    family = "qwen2_5_vl"
    model = model_of(family)
    sample = video(family)
    batch = {k: v for k, v in single(sample).items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        ref = model(**batch).logits
    tc.apply(model, "evs", 1.0)
    with torch.no_grad():
        assert_same(model(**batch).logits, ref)
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        got = model(**batch).logits
        expected = model(**batch, position_ids=_text_positions(batch)).logits  # explicit, rank 2
    assert dropped_tokens(model) > 0
    assert_same(got, expected)


# -- masks and placeholders -----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_vl"])
def test_visual_tokens_under_attention_mask_0(family):
    """Masked visual tokens still have encoder features (transformers scatters them by ids): they
    stay in the sequence, masked; identity at 1.0, and compression runs and drops tokens.
    (Positions are given: transformers' own get_rope_index cannot number a partly masked video.)"""
    model = model_of(family)
    batch = single(video(family))
    batch["position_ids"], _ = model.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                                          video_grid_thw=batch["video_grid_thw"])
    vpos = (batch["input_ids"][0] == VIDEO).nonzero().squeeze(1)
    batch["attention_mask"][0, vpos[:2]] = 0
    with torch.no_grad():
        ref = model(**batch).logits
    tc.apply(model, "evs", 1.0)
    with torch.no_grad():
        assert_same(model(**batch).logits, ref)
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        out = model(**batch)
    stats = tc.last_stats(model)
    assert dropped_tokens(model) > 0
    assert out.logits.shape[1] == batch["input_ids"].shape[1] - dropped_tokens(model)
    assert stats["seq_len_before"] == int(batch["attention_mask"].sum())


@pytest.mark.parametrize("family", FAMILIES)
def test_more_placeholders_than_features_is_transformers_value_error(family):
    model = model_of(family)
    batch = single(make_sample(family, [(2, 4, 4)], image_grids=[(1, 8, 8)]))
    ids = batch["input_ids"]
    first_text = int((batch["mm_token_type_ids"][0] == 0).nonzero()[0])
    ids[0, first_text] = IMAGE  # one image token more than the image has features
    batch["mm_token_type_ids"][0, first_text] = 1
    with pytest.raises(ValueError, match="Image features and image tokens do not match") as unpatched:
        with torch.no_grad():
            model(**batch)
    tc.apply(model, "vidcom2", 0.5, compress_images=True)
    with pytest.raises(ValueError, match="Image features and image tokens do not match") as patched:
        with torch.no_grad():
            model(**batch)
    assert type(patched.value) is type(unpatched.value)


# -- inputs_embeds --------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_inputs_embeds_with_input_ids_are_pruned_together(family):
    model = model_of(family)
    sample = video(family)
    batch = single(sample)
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    oracle_inputs = explicit_pruned_inputs(model, sample, 0.5)
    oracle_embeds = model.get_input_embeddings()(oracle_inputs["input_ids"]).detach()
    with torch.no_grad():
        ref_logits = model(**oracle_inputs, inputs_embeds=oracle_embeds).logits
    ref = generate(model, dict(oracle_inputs, inputs_embeds=oracle_embeds), "greedy", family)
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        got_logits = model(**batch, inputs_embeds=embeds).logits
    assert dropped_tokens(model) > 0
    assert_same(got_logits, ref_logits)
    got = generate(model, dict(batch, inputs_embeds=embeds), "greedy", family)
    assert_consistent(got, ref, batch["input_ids"], oracle_inputs["input_ids"].shape[1])


def test_inputs_embeds_only_runs_unpatched_and_the_skip_is_counted(caplog):
    family = "qwen2_vl"
    model = model_of(family)
    batch = single(video(family))
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach()
    call = {k: v for k, v in batch.items() if k != "input_ids"}
    call["inputs_embeds"] = embeds
    # without ids transformers positions the embeddings from the model's last rope_deltas (state
    # it keeps between calls): start every call from the same state
    model.model.rope_deltas = None
    with torch.no_grad():
        ref_logits = model(**call).logits
    model.model.rope_deltas = None
    ref = generate(model, call, "greedy", family)
    model.model.rope_deltas = None
    tc.apply(model, "vidcom2", 0.5)
    report.RECORDER.reset()
    report.RECORDER.active = True
    try:
        with caplog.at_level(logging.WARNING, logger="token_compressor"):
            got = generate(model, call, "greedy", family)
        summary = report.RECORDER.summary(compressor="vidcom2", ratio=0.5)
    finally:
        report.RECORDER.active = False
        report.RECORDER.reset()
    assert_same(got, ref)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "inputs_embeds" in r.getMessage()]
    assert len(warnings) == 1
    stats = tc.last_stats(model)
    assert stats["skipped"].startswith("inputs_embeds without input_ids")
    assert stats["visual_tokens_before"] == stats["visual_tokens_after"] == 16
    L = embeds.shape[1]  # it ran as it came: the same shape after
    assert (stats["width_before"], stats["width_after"], stats["row_lens_after"]) == (L, L, [L])
    assert summary["skipped_samples"] == 1 and summary["compressed_samples"] == 0
    assert "not compressible" in report.format_table(report.merge([summary]))
    model.model.rope_deltas = None
    with torch.no_grad():
        assert_same(model(**call).logits, ref_logits)


# -- continuing, lengths (#16 H3, H4) -------------------------------------------------------------

def uncached_logits(model, inputs, tokens):
    """Next-token logits `[steps, V]` of the unpatched model over the pruned `inputs` followed by
    `tokens[:i]` for each step i, the whole sequence re-run each time (positions +1 per token)."""
    ids, pos, mm = inputs["input_ids"], inputs["position_ids"], inputs["mm_token_type_ids"]
    out = []
    for i in range(len(tokens) + 1):
        with torch.no_grad():
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos, mm_token_type_ids=mm,
                             **feature_inputs(inputs), use_cache=False).logits[0, -1])
        if i < len(tokens):
            nxt = tokens[i].view(1, 1)
            ids, mm = torch.cat([ids, nxt], 1), torch.cat([mm, torch.zeros_like(nxt)], 1)
            pos = torch.cat([pos, pos[..., -1:] + 1], -1)
    return torch.stack(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_continuing_from_a_compressed_cache_with_the_returned_ids(family):
    """A text follow-up with all returned ids plus the returned past_key_values continues the
    compressed conversation: every step's logits are those of an uncached run over the pruned
    prompt, the generated tokens and the follow-up text (cached vs uncached: fp32 tolerance)."""
    model = model_of(family)
    sample = video(family)
    batch = single(sample)
    tc.apply(model, "vidcom2", 0.5)
    first = model.generate(**batch, max_new_tokens=NEW, do_sample=False, suppress_tokens=SPECIAL,
                           return_dict_in_generate=True)
    assert dropped_tokens(model) > 0
    follow_text = torch.tensor([[5, 6]])
    ids = torch.cat([first.sequences, follow_text], dim=1)
    extra = ids.shape[1] - batch["input_ids"].shape[1]
    follow = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=torch.cat([batch["mm_token_type_ids"], torch.zeros(1, extra, dtype=torch.long)], 1))
    second = model.generate(**follow, **{CACHE: getattr(first, CACHE)}, max_new_tokens=NEW, do_sample=False,
                            suppress_tokens=SPECIAL,
                            return_dict_in_generate=True, output_logits=True)
    assert torch.equal(second.sequences[:, :ids.shape[1]], ids)

    tc.revert(model)
    oracle = explicit_pruned_inputs(model, sample, 0.5)
    tail = ids[:, batch["input_ids"].shape[1]:]
    pos = oracle["position_ids"]
    steps = torch.arange(1, tail.shape[1] + 1).view(1, 1, -1)
    extended = dict(oracle, input_ids=torch.cat([oracle["input_ids"], tail], 1),
                    mm_token_type_ids=torch.cat([oracle["mm_token_type_ids"], torch.zeros_like(tail)], 1),
                    position_ids=torch.cat([pos, pos[..., -1:] + steps], -1))
    expected = uncached_logits(model, extended, second.sequences[0, ids.shape[1]:-1])
    torch.testing.assert_close(torch.cat(second.logits), expected, atol=1e-5, rtol=0)
    if family in HYBRID:
        assert_recurrent_state_is_the_pruned_conversations(model, second, extended, ids.shape[1])


def assert_recurrent_state_is_the_pruned_conversations(model, out, extended, width):
    """Qwen3.5: the continued cache's linear-attention states are those of the unpatched model
    after one cached prefill over the pruned prompt, the tokens generated and the follow-up text
    and the tokens generated after it (all but the last, which no call has fed yet): the state
    absorbed exactly the kept tokens and every later one, once. The states are compared relative
    to their size (rtol 1e-4: step-by-step decoding vs one chunked prefill reorder fp32 sums;
    measured ~1e-6); losing or re-feeding any part of the conversation moves them by O(1)."""
    fed = out.sequences[:, width:-1]
    ids = torch.cat([extended["input_ids"], fed], 1)
    pos = extended["position_ids"]
    pos = torch.cat([pos, pos[..., -1:] + torch.arange(1, fed.shape[1] + 1).view(1, 1, -1)], -1)
    mm = torch.cat([extended["mm_token_type_ids"], torch.zeros_like(fed)], 1)
    with torch.no_grad():
        oracle = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos, mm_token_type_ids=mm,
                       **feature_inputs(extended), use_cache=True).past_key_values
    got_cache = out.past_key_values
    assert got_cache.get_seq_length() == oracle.get_seq_length() == ids.shape[1]
    states = [(a.recurrent_states[0], b.recurrent_states[0]) for a, b in zip(got_cache.layers, oracle.layers)
              if hasattr(a, "recurrent_states")]
    assert states, "a hybrid model's cache holds recurrent states"
    for got, want in states:
        assert float(want.abs().max()) > 1e-3, "the recurrent state carries something"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_5"])
def test_continuing_a_compressed_cache_wrongly_is_a_clear_error(family):
    model = model_of(family)
    batch = single(video(family))
    tc.apply(model, "vidcom2", 0.5)
    first = model.generate(**batch, max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True)
    other = first.sequences.clone()
    other[0, 0] += 1
    with pytest.raises(ValueError, match="must be the ids the compressed generate returned"):
        model.generate(input_ids=other, **{CACHE: getattr(first, CACHE)}, max_new_tokens=2)
    with pytest.raises(ValueError, match="not new images or videos"):
        model.generate(**dict(batch, input_ids=first.sequences, attention_mask=torch.ones_like(first.sequences)),
                       **{CACHE: getattr(first, CACHE)}, max_new_tokens=2)


@pytest.mark.parametrize("family", ["qwen2_5_vl"])
def test_max_length_and_min_length_count_the_original_prompt(family):
    model = model_of(family)
    sample = video(family)
    batch = single(sample)
    L = batch["input_ids"].shape[1]
    oracle_inputs = explicit_pruned_inputs(model, sample, 0.5)
    Lp = oracle_inputs["input_ids"].shape[1]
    first = model.generate(**oracle_inputs, max_new_tokens=1, do_sample=False, suppress_tokens=SPECIAL)[0, -1]
    eos = int(first)  # the first token it would choose, suppressed by min_length until then
    ref_max = model.generate(**oracle_inputs, max_length=Lp + NEW, do_sample=False, suppress_tokens=SPECIAL)
    ref_min = model.generate(**oracle_inputs, min_length=Lp + 2, max_new_tokens=4, eos_token_id=eos,
                             do_sample=False, suppress_tokens=SPECIAL)
    tc.apply(model, "vidcom2", 0.5)
    got_max = model.generate(**batch, max_length=L + NEW, do_sample=False, suppress_tokens=SPECIAL)
    assert got_max.shape[1] == L + NEW
    assert_consistent(got_max, ref_max, batch["input_ids"], Lp)
    got_min = model.generate(**batch, min_length=L + 2, max_new_tokens=4, eos_token_id=eos,
                             do_sample=False, suppress_tokens=SPECIAL)
    assert_consistent(got_min, ref_min, batch["input_ids"], Lp)
    assert eos not in got_min[0, L:L + 2].tolist()


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_manual_decoding_loop_on_a_compressed_forward_cache(family):
    """A hand-written loop: compressed prefill with use_cache, then one token at a time with the
    cache and no mask or positions (transformers places them from its rope_deltas, which the
    compressed prefill sets for the kept sequence); each step's logits equal the uncached
    oracle's. Qwen3.5: the cache's recurrent state, filled by the kept tokens only, carries on."""
    model = model_of(family)
    sample = video(family)
    batch = single(sample)
    oracle = explicit_pruned_inputs(model, sample, 0.5)
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    assert dropped_tokens(model) > 0
    cache = getattr(out, CACHE)
    ids, pos, mm = oracle["input_ids"], oracle["position_ids"], oracle["mm_token_type_ids"]
    for _ in range(NEW):
        nxt = out.logits[:, -1:].argmax(-1)
        with torch.no_grad():
            out = model(input_ids=nxt, **{CACHE: cache}, use_cache=True)
        ids, mm = torch.cat([ids, nxt], 1), torch.cat([mm, torch.zeros_like(nxt)], 1)
        pos = torch.cat([pos, pos[..., -1:] + 1], -1)
        tc.revert(model)
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos, mm_token_type_ids=mm,
                             **feature_inputs(oracle), use_cache=False).logits[:, -1]
        tc.apply(model, "vidcom2", 0.5)
        # cached vs uncached attention: the same math in a different order (fp32 ulps)
        torch.testing.assert_close(out.logits[:, -1], expected, atol=1e-5, rtol=0)
    assert cache.get_seq_length() == ids.shape[1]


def test_positional_arguments_are_compressed_like_keywords():
    """`model(input_ids, attention_mask, ...)` and `generate(input_ids, ...)`: positional inputs
    are bound by the original signature, never a silent uncompressed run."""
    family = "qwen2_vl"
    model = model_of(family)
    batch = single(video(family))
    tc.apply(model, "vidcom2", 0.5)
    with torch.no_grad():
        by_keyword = model(**batch).logits
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        by_position = model(batch["input_ids"], batch["attention_mask"], **rest).logits
    assert dropped_tokens(model) > 0
    assert_same(by_position, by_keyword)
    ids = {k: v for k, v in batch.items() if k != "input_ids"}
    assert_same(model.generate(batch["input_ids"], max_new_tokens=NEW, do_sample=False, **ids),
                model.generate(**batch, max_new_tokens=NEW, do_sample=False))
