"""The `self` screener on a tiny random Qwen2-VL: real generate calls through a real processor;
its nonsense must fall back cleanly, and a scripted chat function must drive the same seam."""
import json

import pytest

from screening_helpers import make_mp4
from tiny_checkpoint import save_checkpoint
from token_compressor.config import ConfigError, ScreeningConfig
from token_compressor.screening import ScreeningCache, ScreeningStats, screen, self_screener


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = save_checkpoint(tmp_path_factory.mktemp("self") / "qwen2_vl", "qwen2_vl")
    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def test_random_model_falls_back_cleanly(tiny, tmp_path):
    model, processor = tiny
    video = make_mp4(tmp_path / "v.mp4", seconds=2)
    cache = ScreeningCache(str(tmp_path / "cache"))
    # 3 instead of 10 unparsable replies in a row keeps this under a few seconds on CPU
    screener = self_screener(model, processor, cache=cache, max_new_tokens=4, limits={"max_unparsable": 3})
    stats = ScreeningStats()
    res = screen(video, "what colour is it?", screener, config=ScreeningConfig(cache_dir=str(tmp_path / "cache")), stats=stats)
    assert res.status == "failed" and res.fell_back and res.reason
    assert res.segments == ((0.0, 2.0),) and res.question == "what colour is it?" and res.kept_ratio == 1.0
    assert stats.snapshot()["fallen_back"] == 1
    # the model really captioned both frames and really answered (nonsense) three times
    assert [t["call"] for t in res.trace] == ["caption", "caption", "chat", "chat", "chat"]
    assert res.reason == "3 unparsable replies in a row" and all(t["decision"] is None for t in res.trace[2:])
    assert not list((tmp_path / "cache").rglob("results/*.json"))  # fallbacks are not cached


def test_self_seam_with_a_following_planner(tiny, tmp_path):
    """The same screener with the model's captioner but a chat function that follows the protocol."""
    model, processor = tiny
    video = make_mp4(tmp_path / "v.mp4", seconds=4)
    screener = self_screener(model, processor, cache=ScreeningCache(str(tmp_path / "c")), max_new_tokens=6)
    seen = []

    def planner(messages):
        seen.append(messages)
        if len(seen) == 1:
            return json.dumps({"decision": "tool", "parameter": 3})
        return json.dumps({"decision": "end", "timestamps": [[1, 2]], "revised_question": "what is here?"})
    screener.chat_fn = planner
    screener.describe_image = (lambda orig: (lambda image: orig(image) + " [caption]"))(screener.describe_image)
    res = screen(video, "q?", screener, config=ScreeningConfig(cache_dir=str(tmp_path / "c")), stats=ScreeningStats())
    assert (res.status, res.segments, res.question) == ("succeeded", ((1.0, 2.0),), "what is here?")
    assert seen[1][-1]["content"].startswith("Caption of the frame at second 3:") and "[caption]" in seen[1][-1]["content"]
    caps = json.loads(next((tmp_path / "c" / "captions").rglob("*.json")).read_text())
    assert sorted(caps, key=int) == ["0", "1", "2", "3"]


def test_self_from_environment_alone_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="EMC_SCREENER='self' needs the loaded Qwen-VL model"):
        screen(make_mp4(tmp_path / "v.mp4", seconds=2), "q", config=ScreeningConfig(screener="self"))
