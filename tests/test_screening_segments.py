"""Property tests of the pure screening pieces: C1 segment arithmetic, the virtual timeline,
frame sampling, interval scores, reply parsing and question replacement."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from token_compressor.screening import (kept_duration, merge_intervals, normalize_segments, original_to_virtual,
                                        overlap_scores, parse_reply, replace_question, sample_timestamps,
                                        split_options, temporal_iou, virtual_to_original)

times = st.floats(-50, 150, allow_nan=False).map(lambda x: round(x, 3))
raw_segments = st.lists(st.tuples(times, times), max_size=12)
durations = st.floats(0.5, 120, allow_nan=False).map(lambda x: round(x, 3))


def is_normalized(segs, duration):
    return (len(segs) >= 1 and all(0 <= s < e <= duration for s, e in segs)
            and all(a[1] < b[0] for a, b in zip(segs, segs[1:])))


def covered(t, segs):
    return any(s <= t <= e for s, e in segs)


@given(raw_segments, durations)
def test_normalize_enforces_c1_and_preserves_coverage(raw, duration):
    segs = normalize_segments(raw, duration)
    assert is_normalized(segs, duration)
    clamped = [(min(max(s, 0), duration), min(max(e, 0), duration)) for s, e in raw]
    useful = [(s, e) for s, e in clamped if e > s]
    if not useful:
        assert segs == [(0.0, duration)]
        return
    # same covered set: every probe point is covered by the input iff by the output
    probes = sorted({p for s, e in clamped for p in (s, e, (s + e) / 2)} | {0.0, duration})
    for p in probes + [(a + b) / 2 for a, b in zip(probes, probes[1:])]:
        assert covered(p, segs) == covered(p, useful)
    assert kept_duration(segs) <= duration + 1e-9
    assert normalize_segments(segs, duration) == segs  # idempotent


def test_normalize_examples():
    assert normalize_segments([(5, 3), (1, 2), (2, 4), (-1, 0.5), (9, 20)], 10) == [(0.0, 0.5), (1.0, 4.0), (9.0, 10.0)]
    assert normalize_segments([(3, 3), (20, 30), None, [1], "ab"], 10) == [(0.0, 10.0)]
    assert normalize_segments([], 7.5) == [(0.0, 7.5)]
    with pytest.raises(ValueError, match="duration"):
        normalize_segments([(0, 1)], 0)


@given(raw_segments, durations, st.floats(0, 1))
def test_virtual_mapping_round_trips(raw, duration, frac):
    segs = normalize_segments(raw, duration)
    total = kept_duration(segs)
    tv = frac * total
    t = virtual_to_original(tv, segs)
    assert covered(t, segs)
    assert original_to_virtual(t, segs) == pytest.approx(tv, abs=1e-6)


def test_virtual_mapping_at_a_cut_goes_to_the_next_segment():
    segs = [(1.0, 3.0), (5.0, 6.0)]
    assert virtual_to_original(0.0, segs) == 1.0
    assert virtual_to_original(2.0, segs) == 5.0
    assert virtual_to_original(3.0, segs) == 6.0
    assert original_to_virtual(4.0, segs) is None
    with pytest.raises(ValueError):
        virtual_to_original(3.5, segs)


@given(raw_segments, durations, st.integers(1, 64))
def test_sampling_is_uniform_over_the_concatenated_segments(raw, duration, n):
    segs = normalize_segments(raw, duration)
    ts = sample_timestamps(segs, n)
    total = kept_duration(segs)
    assert len(ts) == n and ts == sorted(ts)
    assert all(covered(t, segs) for t in ts)
    for s, e in segs:  # each segment gets its share of the budget, up to one frame
        share = sum(1 for t in ts if s <= t <= e)
        assert abs(share - n * (e - s) / total) <= 1 + 1e-6


def test_sampling_whole_video_is_plain_uniform():
    assert sample_timestamps([(0.0, 8.0)], 4) == [1.0, 3.0, 5.0, 7.0]
    assert sample_timestamps([(0.0, 2.0), (6.0, 8.0)], 4) == [0.5, 1.5, 6.5, 7.5]
    with pytest.raises(ValueError):
        sample_timestamps([(0.0, 1.0)], 0)


def brute_measure(a, b, op, grid=2000, hi=100.0):
    step = hi / grid
    return sum(step for i in range(grid) if op(covered((i + 0.5) * step, a), covered((i + 0.5) * step, b)))


interval_sets = st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=6)


@settings(max_examples=60)
@given(interval_sets, interval_sets)
def test_iou_is_true_multi_interval_iou(a, b):
    ma, mb = merge_intervals(a), merge_intervals(b)
    inter = brute_measure(ma, mb, lambda x, y: x and y)
    union = brute_measure(ma, mb, lambda x, y: x or y)
    expected = 1.0 if union == 0 else inter / union
    assert temporal_iou(a, b) == pytest.approx(expected, abs=1e-6)
    assert temporal_iou(a, b) == pytest.approx(temporal_iou(b, a))
    s = overlap_scores(a, b)
    assert all(0 <= s[k] <= 1 for k in ("iou", "precision", "recall", "f1"))


def test_iou_examples_and_the_authors_pitfall():
    two = [[0, 2], [8, 10]]
    assert temporal_iou(two, two) == 1.0  # the authors' span-based helper scores this 0.667
    assert temporal_iou([[0, 2]], [[1, 3]]) == pytest.approx(1 / 3)
    s = overlap_scores([[0, 10]], [[2, 4]])
    assert (s["precision"], s["recall"]) == (pytest.approx(0.2), 1.0)
    assert s["f1"] == pytest.approx(2 * 0.2 / 1.2)
    assert temporal_iou([], []) == 1.0 and temporal_iou([[0, 1]], []) == 0.0


@pytest.mark.parametrize("text, expected", [
    ('{"decision": "tool", "parameter": 7}', {"decision": "tool", "parameter": 7.0}),
    ('Let me look.\n```json\n{"decision": "tool", "parameter": "3.5"}\n```\nThanks', {"decision": "tool", "parameter": 3.5}),
    ("【{'decision': 'tool', 'parameter': [4]}】", {"decision": "tool", "parameter": 4.0}),
    ('ok {"decision": "end", "timestamps": [1, 4], "revised_question": "what is it?"} done',
     {"decision": "end", "timestamps": [(1.0, 4.0)], "revised_question": "what is it?"}),
    ('{"decision": "end", "timestamps": [[1, 2], ["a", 3], [5]], "revised_question": ["q1"]}',
     {"decision": "end", "timestamps": [(1.0, 2.0)], "revised_question": "q1"}),
    ('{"decision":"end","timestamps":[[0,1]],"revised_question":null,"final":true}',
     {"decision": "end", "timestamps": [(0.0, 1.0)], "revised_question": None}),
    ('first {"decision": "tool", "parameter": 1} then {"decision": "tool", "parameter": 2}', {"decision": "tool", "parameter": 2.0}),
    ('{"decision": "tool", "parameter": -1}', None),
    ('{"decision": "maybe"}', None),
    ("I am not sure what to do {", None),
    ("", None),
])
def test_parse_reply(text, expected):
    assert parse_reply(text) == expected


@given(st.text(max_size=300))
def test_parse_reply_never_raises(text):
    out = parse_reply(text)
    assert out is None or out["decision"] in ("tool", "end")


options = st.lists(st.text(alphabet="abc xyz?!0123", min_size=1, max_size=15), min_size=2, max_size=5)
stems = st.text(alphabet="abcdefgh ijk?,", min_size=1, max_size=40).filter(lambda s: s.strip())


@given(stems, options, st.sampled_from(["{l}. ", "({l}) ", "{l}) ", "{l}: "]), st.sampled_from(["", "\nAnswer with the option's letter."]),
       stems)
def test_replace_question_keeps_options_byte_identical(stem, opts, fmt, post, new):
    block = "".join("\n" + fmt.format(l="ABCDE"[i]) + o.strip() + "x" for i, o in enumerate(opts)) + post
    prompt = stem + block
    assert split_options(prompt) == (stem, block)
    out = replace_question(prompt, new)
    assert out == new.strip() + block
    # with the original question known, only that substring changes (a pre-prompt survives)
    pre = "Look at the video. "
    assert replace_question(pre + prompt, new, stem) == pre + new.strip() + block


def test_replace_question_edge_cases():
    assert replace_question("What?", "Which?") == "Which?"
    assert replace_question("What?\nA. x\nB. y", None) == "What?\nA. x\nB. y"
    assert replace_question("What?\nA. x\nB. y", "  ") == "What?\nA. x\nB. y"
    # one option-like line is not a block of options
    assert split_options("Why?\nA. only one") == ("Why?\nA. only one", "")
