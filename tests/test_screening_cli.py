"""`token-compressor screen` and `token-compressor emc-eval`."""
import json

import pytest

from screening_helpers import FakeOpenAI, make_mp4, reply
from token_compressor.cli import main
from token_compressor.commands.screen import evaluate


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_mp4(tmp_path_factory.mktemp("v") / "clip.mp4", seconds=6)


def test_screen_json_with_llm(video, tmp_path, monkeypatch, capsys):
    end = {"decision": "end", "timestamps": [[4, 5], [1, 2.5]], "revised_question": "what is shown?"}
    with FakeOpenAI(lambda b, n: (200, reply(json.dumps(end)), 0)) as server:
        for k, v in {"EMC_SCREENER": "llm", "EMC_BASE_URL": server.base_url, "EMC_MODEL": "m",
                     "EMC_CACHE_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-hidden"}.items():
            monkeypatch.setenv(k, v)
        assert main(["screen", video, "what is shown after the start?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"screened_timestamps": [[1.0, 2.5], [4.0, 5.0]], "screened_question": "what is shown?",
                   "status": "succeeded"}


def test_screen_defaults_to_none_and_text_output(video, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("EMC_SCREENER", raising=False)
    monkeypatch.setenv("EMC_CACHE_DIR", str(tmp_path))
    assert main(["screen", video, "why?", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"screened_timestamps": [[0.0, 6.0]], "screened_question": "why?",
                                                   "status": "succeeded"}
    assert main(["screen", video, "why?"]) == 0
    text = capsys.readouterr().out
    assert "kept 100.0% of 6.00s" in text and "question    why?" in text


def test_screen_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMC_CACHE_DIR", str(tmp_path))
    assert main(["screen", str(tmp_path / "missing.mp4"), "q"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    monkeypatch.setenv("EMC_SCREENER", "bogus")
    assert main(["screen", str(tmp_path / "missing.mp4"), "q"]) == 2
    assert "EMC_SCREENER='bogus' is not a screener" in capsys.readouterr().err


SPLIT = [
    {"vid_name": "v1", "question": "q1", "vid_duration": 10, "gt_timestamp": [[0, 2], [8, 10]]},
    {"vid_name": "v2", "question": "q2", "vid_duration": 20, "gt_timestamp": [[5, 10]]},
    {"vid_name": "v3", "question": "q3", "vid_duration": 10, "gt_timestamp": [3, 4]},
]
RESULTS = [
    {"screened_timestamps": [[8, 10], [0, 2]], "screened_question": "a", "status": "succeeded"},
    {"screened_timestamps": [[0, 10]], "screened_question": "b", "status": "succeeded"},
    {"screened_timestamps": [[3, 4]], "screened_question": "q3", "status": "failed"},
]


def test_evaluate_scores():
    report = evaluate(SPLIT, RESULTS)
    items = report["items"]
    assert items[0]["iou"] == 1.0 and items[0]["kept_ratio"] == pytest.approx(0.4)
    assert items[1]["iou"] == pytest.approx(0.5) and items[1]["precision"] == pytest.approx(0.5) and items[1]["recall"] == 1.0
    # a failed screen is scored as the whole video, whatever timestamps it carries
    assert items[2]["kept_ratio"] == 1.0 and items[2]["iou"] == pytest.approx(0.1)
    s = report["summary"]
    assert s["items"] == 3 and s["status"] == {"succeeded": 2, "failed": 1}
    assert s["iou"] == pytest.approx((1 + 0.5 + 0.1) / 3)
    assert s["kept_ratio"] == pytest.approx((0.4 + 0.5 + 1.0) / 3)


def test_evaluate_matching_by_key_and_missing():
    by_key = {"v2::q2": RESULTS[1], "0": RESULTS[0]}
    report = evaluate(SPLIT, by_key)
    assert [r["status"] for r in report["items"]] == ["succeeded", "succeeded", "missing"]
    assert report["summary"]["missing"] == 1 and report["items"][2]["kept_ratio"] == 1.0
    with_ids = [dict(RESULTS[1], vid_name="v2", question="q2")]
    assert evaluate(SPLIT, with_ids)["items"][1]["iou"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 results for 3 items"):
        evaluate(SPLIT, RESULTS[:2])


def test_emc_eval_command(tmp_path, capsys):
    split, results = tmp_path / "split.json", tmp_path / "results.json"
    split.write_text(json.dumps(SPLIT))
    results.write_text(json.dumps(RESULTS))
    assert main(["emc-eval", str(split), str(results), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 3 and summary["iou"] == pytest.approx(1.6 / 3)
    assert main(["emc-eval", str(split), str(results), "--per-item"]) == 0
    out = capsys.readouterr().out
    assert "iou" in out and "v2::q2" in out and "failed" in out
    assert main(["emc-eval", str(split), str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


@pytest.mark.parametrize("gt, message", [
    ("1-3", 'split item 0 \\(v1::q1\\): gt_timestamp is "1-3"; expected a list of \\[start, end\\] pairs'),
    (None, "split item 0 \\(v1::q1\\): gt_timestamp is null"),
    ([["1", "3"]], 'gt_timestamp is \\[\\["1", "3"\\]\\]'),
    ([[1, 2, 3]], "gt_timestamp is \\[\\[1, 2, 3\\]\\]"),
    (7, "gt_timestamp is 7"),
])
def test_malformed_ground_truth_is_an_error_naming_the_item(gt, message):
    split = [dict(SPLIT[0], gt_timestamp=gt)] + SPLIT[1:]
    with pytest.raises(ValueError, match=message):
        evaluate(split, RESULTS)


@pytest.mark.parametrize("stamps, ok", [([2, 6], True), ([[2, 6]], True), (5, False), ("2-6", False), (None, False),
                                        ([[2, True]], False)])
def test_screened_timestamps_are_checked(stamps, ok):
    results = [dict(RESULTS[0], screened_timestamps=stamps)] + RESULTS[1:]
    if ok:  # a flat pair of integers is one interval
        row = evaluate(SPLIT, results)["items"][0]
        assert row["kept_ratio"] == pytest.approx(0.4) and row["iou"] == 0.0  # [2, 6] against [0, 2] + [8, 10]
    else:
        with pytest.raises(ValueError, match="result for item 0 \\(v1::q1\\): screened_timestamps is"):
            evaluate(SPLIT, results)


def test_emc_eval_malformed_ground_truth_is_one_line(tmp_path, capsys):
    split, results = tmp_path / "split.json", tmp_path / "results.json"
    split.write_text(json.dumps([dict(SPLIT[0], gt_timestamp="1-3")] + SPLIT[1:]))
    results.write_text(json.dumps(RESULTS))
    assert main(["emc-eval", str(split), str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gt_timestamp" in err and "item 0" in err
