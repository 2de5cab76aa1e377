"""Batches that really shrink (issue 21 item 5): when a compressed call drops anything, every
row's padding leaves with its dropped tokens and the batch is re-padded to its longest compressed
row, on the side the caller padded.

Oracle: each row of the batch against the unpatched model fed that row's explicitly pruned
prompt ALONE (`oracles.explicit_pruned_inputs`: no padding, original positions).

Tolerance: a row alone and the same row inside a padded batch are not the same computation
(sdpa gets a padding mask and other matmul shapes; the vision tower sees every video of the
batch at once), so they may differ in the last bits. Each test measures that effect on the
same machine, with the UNPATCHED model on the UNCOMPRESSED rows (alone vs inside the caller's
padded batch), and allows the compressed rows 4x that, but at least 32 fp32 ulps of the largest
logit (a machine where padding happens to change no bit of the unpatched rows still rounds the
pruned rows' different shapes differently). Measured here (2 cores, fp32): the padding effect
0-1.5e-7, the compressed rows 0-3e-7, the bound about 2.5e-6; it may never exceed 1e-5
(asserted). A wrong position, feature or mask moves these logits far more: +1 on the last six
kept M-RoPE positions of one row moves them by 1.5e-3 to 6e-2 and fails this file. Greedy tokens
must match exactly.
"""
import pytest
import torch

import token_compressor as tc
from oracles import SPECIAL, explicit_pruned_inputs, feature_inputs, greedy_uncached
from tiny_models import FAMILIES, collate, make_sample, tiny_model

RATIO = 0.25
NEW = 3
CEILING = 1e-5  # the tolerance may never grow past this, whatever the machine measures


_MODELS = {}


@pytest.fixture(autouse=True)
def _clean_patches():
    yield
    for model in _MODELS.values():
        tc.revert(model)
    tc.revert()


def model_of(family):
    if family not in _MODELS:
        _MODELS[family] = tiny_model(family)
    return _MODELS[family]


def very_different(family):
    """A long video (8 x 8x8 patches: 128 tokens) and a short one (2 x 4x4: 8 tokens) with a
    shorter text tail: the short row is mostly padding in the caller's batch."""
    return [make_sample(family, [(8, 8, 8)], seed=0),
            make_sample(family, [(2, 4, 4)], seed=1, text_after=(4, 5))]


def row(t, b, n, side, dim=-2):
    """The `n` real columns of row `b` of a batch output `t` ([B, L, ...] logits)."""
    x = t[b]
    return x.narrow(dim, x.shape[dim] - n, n) if side == "left" else x.narrow(dim, 0, n)


def tolerance(model, samples, side) -> float:
    """The padding effect measured here: the unpatched model on each uncompressed row alone vs
    inside the padded batch (see the module docstring)."""
    with torch.no_grad():
        together = model(**collate(samples, padding_side=side)).logits
        effect, scale = 0.0, 0.0
        for b, s in enumerate(samples):
            alone = model(**collate([s])).logits[0]
            effect = max(effect, float((row(together, b, alone.shape[0], side) - alone).abs().max()))
            scale = max(scale, float(alone.abs().max()))
    tol = max(4 * effect, 32 * torch.finfo(torch.float32).eps * scale)
    assert tol <= CEILING, f"padding alone moves the unpatched logits by {effect:.3g}: the bound is meaningless"
    return tol


def oracles(model, samples):
    with torch.no_grad():
        return [explicit_pruned_inputs(model, s, RATIO) for s in samples]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_forward_batch_is_as_wide_as_its_longest_compressed_row(family, side):
    model = model_of(family)
    samples = very_different(family)
    tol = tolerance(model, samples, side)
    pruned = oracles(model, samples)
    expected = []
    with torch.no_grad():
        for o in pruned:
            expected.append(model(**o).logits[0])
    lens = [e.shape[0] for e in expected]
    batch = collate(samples, padding_side=side)
    tc.apply(model, "vidcom2", RATIO)
    with torch.no_grad():
        out = model(**batch, use_cache=True)
    stats = tc.last_stats(model)
    # the width: the longest compressed row, not the short row's original padding kept around
    assert out.logits.shape[1] == max(lens) < batch["input_ids"].shape[1]
    assert out.past_key_values.get_seq_length() == max(lens)
    assert stats["width_before"] == batch["input_ids"].shape[1] and stats["width_after"] == max(lens)
    assert stats["row_lens_before"] == [int(s["input_ids"].numel()) for s in samples]
    assert stats["row_lens_after"] == lens
    assert stats["seq_len_before"] == sum(stats["row_lens_before"]) and stats["seq_len_after"] == sum(lens)
    for b, e in enumerate(expected):
        torch.testing.assert_close(row(out.logits, b, lens[b], side), e, atol=tol, rtol=0)
    # decoding without positions continues after each row's last kept position
    for b, o in enumerate(pruned):
        pos = o["position_ids"]
        assert int(model.model.rope_deltas[b]) == int(pos[1:].max()) + 1 - lens[b]


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_each_row_equals_its_pruned_prompt_alone(family):
    model = model_of(family)
    samples = very_different(family)
    tol = tolerance(model, samples, "left")
    pruned = oracles(model, samples)
    expected = [greedy_uncached(model, o, steps=NEW) for o in pruned]
    with torch.no_grad():
        first = [model(**o).logits[0, -1] for o in pruned]
    batch = collate(samples, padding_side="left")
    L = batch["input_ids"].shape[1]
    tc.apply(model, "vidcom2", RATIO)
    out = model.generate(**batch, max_new_tokens=NEW, do_sample=False, suppress_tokens=SPECIAL,
                         return_dict_in_generate=True, output_logits=True)
    assert torch.equal(out.sequences[:, :L], batch["input_ids"]), "the caller's prompt is returned in front"
    for b in range(len(samples)):
        torch.testing.assert_close(out.logits[0][b], first[b], atol=tol, rtol=0)  # the prefill's logits
        assert out.sequences[b, L:].tolist() == expected[b]
    stats = tc.last_stats(model)
    assert out.past_key_values.get_seq_length() == stats["width_after"] + NEW - 1
    assert stats["width_after"] == max(stats["row_lens_after"]) < L


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_of_a_shrunk_batch_give_the_rows_alone_loss(family):
    """Forward with labels (padding and prompt at -100, the usual collator): the batch loss is
    the token-weighted mean of the rows' losses alone."""
    model = model_of(family)
    samples = very_different(family)
    tol = tolerance(model, samples, "left")
    batch = collate(samples, padding_side="left")
    K = 4  # only the answer is scored: the last K columns, text in every row (kept, and last)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -K:] = batch["input_ids"][:, -K:]
    total, count = 0.0, 0
    with torch.no_grad():
        for b, o in enumerate(oracles(model, samples)):
            target = torch.full_like(o["input_ids"][0], -100)
            target[-K:] = batch["input_ids"][b, -K:]
            logits = model(**o).logits[0, :-1]
            target = target[1:]
            scored = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[scored], target[scored], reduction="sum"))
            count += int(scored.sum())
    assert count > 0
    tc.apply(model, "vidcom2", RATIO)
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss
    assert tc.last_stats(model)["width_after"] < batch["input_ids"].shape[1]
    # a mean of token losses, each within the logit tolerance (log-softmax is 1-Lipschitz x2)
    assert abs(float(loss) - total / count) <= 2 * tol


def test_continuing_a_shrunk_batch_from_its_cache():
    """A follow-up generate on the returned ids and cache of a compressed, re-padded batch: each
    row's new tokens are those of its pruned prompt alone, extended."""
    family = "qwen3_vl"  # deepstack and one group per frame
    model = model_of(family)
    samples = very_different(family)
    pruned = oracles(model, samples)
    batch = collate(samples, padding_side="left")
    L = batch["input_ids"].shape[1]
    tc.apply(model, "vidcom2", RATIO)
    first = model.generate(**batch, max_new_tokens=NEW, do_sample=False, suppress_tokens=SPECIAL,
                           return_dict_in_generate=True)
    follow = torch.tensor([[5, 6], [5, 6]])
    ids = torch.cat([first.sequences, follow], dim=1)
    extra = ids.shape[1] - L
    mask = torch.cat([batch["attention_mask"], torch.ones(2, extra, dtype=torch.long)], 1)
    mm = torch.cat([batch["mm_token_type_ids"], torch.zeros(2, extra, dtype=torch.long)], 1)
    second = model.generate(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm,
                            past_key_values=first.past_key_values, max_new_tokens=NEW, do_sample=False,
                            suppress_tokens=SPECIAL)
    assert torch.equal(second[:, :ids.shape[1]], ids)
    tc.revert(model)
    for b, o in enumerate(pruned):
        tail = ids[b:b + 1, L:]
        steps = torch.arange(1, tail.shape[1] + 1).view(1, 1, -1)
        pos = o["position_ids"]
        extended = dict(o, input_ids=torch.cat([o["input_ids"], tail], 1),
                        mm_token_type_ids=torch.cat([o["mm_token_type_ids"], torch.zeros_like(tail)], 1),
                        position_ids=torch.cat([pos, pos[..., -1:] + steps], -1))
        assert second[b, ids.shape[1]:].tolist() == greedy_uncached(model, extended, steps=NEW)


def test_nothing_dropped_keeps_the_callers_padding_bitwise():
    """Identity stays: every selection keeps everything, the call is transformers' own."""
    family = "qwen2_5_vl"
    model = model_of(family)
    batch = collate(very_different(family), padding_side="left")
    with torch.no_grad():
        ref = model(**batch).logits
    tc.apply(model, "vidcom2", 1.0)
    with torch.no_grad():
        got = model(**batch).logits
    assert torch.equal(got, ref)
    stats = tc.last_stats(model)
    assert stats["width_after"] == stats["width_before"] == batch["input_ids"].shape[1]
    assert stats["row_lens_after"] == stats["row_lens_before"]
