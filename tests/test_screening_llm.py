"""The `llm` screener end to end: real mp4 files, a real loopback HTTP server speaking the OpenAI
chat API with scripted replies (good, malformed, slow, erroring), caches and threads."""
import json
import logging
import os
import threading

import pytest

from screening_helpers import FakeOpenAI, make_mp4, reply
from token_compressor.config import ConfigError, ScreeningConfig, screening_from_env
from token_compressor.screening import (STATUSES, ScreeningStats, VideoError, frame_indices, frame_timestamps,
                                        llm_screener, screen)

SECRET = "sk-test-SECRET-0123456789"
GOOD_END = {"decision": "end", "timestamps": [[6, 9], [2, 4], [3, 5], [20, 30]], "revised_question": "what colour is shown in this video?"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"a": make_mp4(d / "a.mp4", seconds=12), "b": make_mp4(d / "b.mp4", seconds=7)}


def config_for(server, tmp_path, **kw):
    env = {"EMC_SCREENER": "llm", "EMC_BASE_URL": server.base_url, "EMC_MODEL": "planner-x",
           "EMC_CAPTION_MODEL": "captioner-y", "EMC_CACHE_DIR": str(tmp_path / "cache"),
           "EMC_TIMEOUT_S": "5", "EMC_MAX_RETRIES": "1", "OPENAI_API_KEY": SECRET, **kw}
    return screening_from_env(env)


def run(server, tmp_path, video, question="what happens after the red part?", stats=None, **kw):
    cfg = config_for(server, tmp_path, **kw)
    return screen(video, question, llm_screener(cfg, backoff_s=0.01), config=cfg, stats=stats or ScreeningStats())


def tool_then_end(body, n):
    if n == 0:
        return 200, reply('{"decision": "tool", "parameter": 5}'), 0
    return 200, reply(json.dumps(GOOD_END)), 0


def test_good_conversation(videos, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    stats = ScreeningStats()
    with FakeOpenAI(tool_then_end) as server:
        res = run(server, tmp_path, videos["a"], stats=stats)
    assert res.status == "succeeded" and not res.fell_back
    assert res.segments == ((2.0, 5.0), (6.0, 9.0))  # C1: merged, sorted, clamped, out-of-range dropped
    assert res.question == "what colour is shown in this video?"
    assert res.kept_ratio == pytest.approx(6 / 12)
    assert res.to_emc() == {"screened_timestamps": [[2.0, 5.0], [6.0, 9.0]],
                            "screened_question": "what colour is shown in this video?", "status": "succeeded"}
    # 12 overview captions (seconds 0..11); the requested second 5 came from the caption cache
    caps = server.caption_requests()
    assert len(caps) == 12 and {r[2]["model"] for r in caps} == {"captioner-y"}
    planner = server.planner_requests()
    assert len(planner) == 2 and planner[0][2]["model"] == "planner-x"
    assert planner[0][2]["response_format"] == {"type": "json_object"}
    assert planner[1][2]["messages"][-1]["content"] == "Caption of the frame at second 5: A solid coloured frame; colour code 5."
    system = planner[0][2]["messages"][0]["content"]
    assert '"7": "A solid coloured frame; colour code 7."' in system and "lasts 12 seconds" in system
    assert all(r[1]["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    # captions cached in EMC's format, under the caption model
    cache_dir = tmp_path / "cache" / "captions" / "captioner-y"
    (cap_file,) = cache_dir.glob("*.json")
    caps_json = json.loads(cap_file.read_text())
    assert caps_json["5"] == "A solid coloured frame; colour code 5." and set(caps_json) == {str(s) for s in range(12)}
    # the key never leaks
    assert SECRET not in json.dumps(list(res.trace)) + caplog.text + repr(res)
    assert SECRET not in "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert stats.snapshot()["screened"] == 1 and stats.snapshot()["kept_ratio_sum"] == pytest.approx(0.5)
    # frames for the model: the usual budget over the kept segments only
    ts = frame_timestamps(videos["a"], res, 6)
    assert ts == [2.5, 3.5, 4.5, 6.5, 7.5, 8.5]
    assert frame_indices(videos["a"], res, 6) == [5, 7, 9, 13, 15, 17]
    assert frame_timestamps(videos["a"], None, 4) == [1.5, 4.5, 7.5, 10.5]


def test_caches_results_and_captions(videos, tmp_path):
    with FakeOpenAI(tool_then_end) as server:
        first = run(server, tmp_path, videos["a"])
        n = len(server.requests)
        again = run(server, tmp_path, videos["a"])
        assert len(server.requests) == n and again.cached and again.to_emc() == first.to_emc()
        other = run(server, tmp_path, videos["a"], question="another question?")
        # a new question plans again, but every caption it needs is cached
        assert not other.cached and len(server.caption_requests()) == 12
        # a different planner model is a different screener configuration
        assert len(server.planner_requests()) == 3
        assert not run(server, tmp_path, videos["a"], EMC_MODEL="planner-z").cached
        assert len(server.planner_requests()) == 4


def test_messy_replies_are_parsed(videos, tmp_path):
    script = ["Sure, let me check.\n```json\n{'decision': 'tool', 'parameter': '3'}\n```",
              "nonsense without json", "【{\"decision\": \"end\", \"timestamps\": [[1.5, 3.5]], \"revised_question\": \"why?\"}】 thanks!"]
    with FakeOpenAI(lambda body, n: (200, reply(script[n]), 0)) as server:
        res = run(server, tmp_path, videos["b"])
    assert (res.status, res.segments, res.question) == ("succeeded", ((1.5, 3.5),), "why?")
    assert [t.get("decision") for t in res.trace if t["call"] == "chat"] == ["tool", None, "end"]


@pytest.mark.parametrize("script, status, planner_calls", [
    (lambda b, n: (200, reply("I think the answer is in the middle."), 0), "failed", 10),
    (lambda b, n: (200, reply('{"decision": "tool", "parameter": 1}'), 0), "max_turns_exceeded", 50),
    (lambda b, n: (200, reply('{"decision": "end", "timestamps": [[9, 3], [40, 50]], "revised_question": "x"}'), 0),
     "no_screening_possible", 1),
    (lambda b, n: (500, {"error": {"message": "boom"}}, 0), "failed", 10),          # 5 exceptions x (1 + 1 retry)
    (lambda b, n: (401, {"error": {"message": "bad key"}}, 0), "failed", 1),        # not retryable: stop at once
    (lambda b, n: (200, "this is not json", 0), "failed", 10),
    (lambda b, n: (200, {"choices": []}, 0), "failed", 5),
])
def test_failures_fall_back_to_the_whole_video(videos, tmp_path, script, status, planner_calls):
    stats = ScreeningStats()
    with FakeOpenAI(script) as server:
        res = run(server, tmp_path, videos["b"], question="the original?", stats=stats)
        assert len(server.planner_requests()) == planner_calls
    assert res.status == status and res.fell_back and res.reason
    assert res.segments == ((0.0, 7.0),) and res.question == "the original?" and res.kept_ratio == 1.0
    snap = stats.snapshot()
    assert (snap["samples"], snap["screened"], snap["fallen_back"], snap["by_status"][status]) == (1, 0, 1, 1)


def test_transient_errors_are_retried(videos, tmp_path):
    def flaky(body, n):
        return (503, {"error": {"message": "busy"}}, 0) if n % 2 == 0 else tool_then_end(body, n // 2)
    with FakeOpenAI(flaky) as server:
        res = run(server, tmp_path, videos["a"])
    assert res.status == "succeeded" and len(server.planner_requests()) == 4


def test_slow_server_times_out_and_falls_back(videos, tmp_path):
    with FakeOpenAI(lambda b, n: (200, reply(json.dumps(GOOD_END)), 1.0)) as server:
        res = run(server, tmp_path, videos["b"], EMC_TIMEOUT_S="0.1", EMC_MAX_RETRIES="0")
    assert res.status == "failed" and "timed out" in res.reason and res.segments == ((0.0, 7.0),)
    # the circuit breaker: 3 attempts without an answer and the endpoint is down (no 5th timeout)
    assert sum(1 for t in res.trace if t["call"] == "chat" and not t["ok"]) == 3 and "endpoint down" in res.reason


def test_failed_results_are_not_cached(videos, tmp_path):
    mode = {"down": False}

    def script(body, n):
        return (502, {}, 0) if mode["down"] else (200, reply(json.dumps(GOOD_END)), 0)
    with FakeOpenAI(script) as server:
        assert run(server, tmp_path, videos["a"], EMC_MAX_RETRIES="0", question="q").status == "succeeded"
        mode["down"] = True
        assert run(server, tmp_path, videos["b"], EMC_MAX_RETRIES="0", question="q").status == "failed"
        assert run(server, tmp_path, videos["a"], EMC_MAX_RETRIES="0", question="q").cached  # success was cached
        mode["down"] = False
        again = run(server, tmp_path, videos["b"], question="q")
        assert again.status == "succeeded" and not again.cached  # the failure was not


def test_server_without_json_mode(videos, tmp_path):
    with FakeOpenAI(tool_then_end, reject_response_format=True) as server:
        cfg = config_for(server, tmp_path)
        screener = llm_screener(cfg, backoff_s=0.01)
        res = screen(videos["a"], "q?", screener, config=cfg, stats=ScreeningStats())
        assert res.status == "succeeded" and not screener.client.json_mode_supported
        planner = server.planner_requests()
        # rejected once, then remembered: every later request goes without response_format
        assert ["response_format" in r[2] for r in planner] == [True, False, False]
        assert SECRET not in repr(screener.client)


def test_caption_failures_count_as_exceptions(videos, tmp_path):
    with FakeOpenAI(tool_then_end) as server:
        server.answer_orig = server.answer
        server.answer = lambda path, body: ((500, {}, 0) if isinstance(body["messages"][-1]["content"], list)
                                            else server.answer_orig(path, body))
        res = run(server, tmp_path, videos["a"], EMC_MAX_RETRIES="0")
    assert res.status == "failed" and "5 exceptions" in res.reason
    assert not server.planner_requests()


def test_bad_video_input_is_an_error(tmp_path):
    cfg = ScreeningConfig(screener="llm", model="m", base_url="http://127.0.0.1:9", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        screen(str(tmp_path / "nope.mp4"), "q", config=cfg)
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    with pytest.raises(VideoError, match="corrupt.mp4"):
        screen(str(bad), "q", config=cfg)


def test_none_screener_and_crashing_screener(videos, tmp_path):
    stats = ScreeningStats()
    res = screen(videos["b"], "q?", config=ScreeningConfig(cache_dir=str(tmp_path)), stats=stats)
    assert (res.status, res.segments, res.question, res.screener) == ("succeeded", ((0.0, 7.0),), "q?", "none")

    class Boom:
        name, cache = "boom", None
        def identity(self):
            return {"screener": "boom"}
        def screen_video(self, info, question):
            raise RuntimeError("kaput")
    res = screen(videos["b"], "q?", Boom(), config=ScreeningConfig(cache_dir=str(tmp_path)), stats=stats)
    assert res.status == "failed" and "kaput" in res.reason and res.segments == ((0.0, 7.0),)
    assert stats.snapshot()["fallen_back"] == 1 and stats.snapshot()["samples"] == 2
    assert set(stats.snapshot()["by_status"]) == set(STATUSES)


def test_concurrent_runs_share_one_cache(videos, tmp_path):
    lock = threading.Lock()
    seen = {}

    def planner(body, n):
        # one planning conversation per (video, question): count opening requests by question
        q = body["messages"][1]["content"]
        with lock:
            if len(body["messages"]) == 2:
                seen[(body["messages"][0]["content"][-40:], q)] = seen.get((body["messages"][0]["content"][-40:], q), 0) + 1
        if len(body["messages"]) == 2:
            return 200, reply('{"decision": "tool", "parameter": 2}'), 0.02
        return 200, reply('{"decision": "end", "timestamps": [[1, 3]], "revised_question": "r"}'), 0.02

    stats = ScreeningStats()
    jobs = [(v, q) for v in ("a", "b") for q in ("q1?", "q2?")] * 3
    results, errors = [None] * len(jobs), []
    with FakeOpenAI(planner, caption_delay_s=0.01) as server:
        cfg = config_for(server, tmp_path)
        screener = llm_screener(cfg, backoff_s=0.01)  # one screener shared by all threads

        def work(i):
            try:
                results[i] = screen(videos[jobs[i][0]], jobs[i][1], screener, config=cfg, stats=stats)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert all(r.status == "succeeded" and r.segments == ((1.0, 3.0),) and r.question == "r" for r in results)
    assert sum(seen.values()) == 4 and set(seen.values()) == {1}  # each key planned once, others hit the cache
    assert sum(r.cached for r in results) == len(jobs) - 4
    snap = stats.snapshot()
    assert (snap["samples"], snap["screened"], snap["cached"]) == (12, 12, 8)
    cap_files = sorted((tmp_path / "cache" / "captions" / "captioner-y").glob("*.json"))
    assert len(cap_files) == 2
    for f in cap_files:
        data = json.loads(f.read_text())
        assert "2" in data and all(v.startswith("A solid coloured frame") for v in data.values())
    assert len({f.name for f in (tmp_path / "cache" / "results").iterdir()}) == 4
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]


def test_config_validation():
    assert screening_from_env({}) == ScreeningConfig()
    cfg = screening_from_env({"EMC_SCREENER": " LLM ", "OPENAI_BASE_URL": "http://h:1/v1/", "EMC_MODEL": "m",
                              "EMC_TIMEOUT_S": "2.5", "EMC_MAX_RETRIES": "0", "OPENAI_API_KEY": SECRET})
    assert (cfg.screener, cfg.base_url, cfg.model, cfg.caption_model, cfg.timeout_s, cfg.max_retries) == \
        ("llm", "http://h:1/v1", "m", "m", 2.5, 0)
    assert cfg.enabled and SECRET not in repr(cfg) and SECRET not in json.dumps(cfg.cache_identity())
    assert screening_from_env({"EMC_BASE_URL": "http://a/v1", "OPENAI_BASE_URL": "http://b/v1"}).base_url == "http://a/v1"
    assert screening_from_env({"EMC_CAPTION_BASE_URL": "http://c/v1/"}).caption_base_url == "http://c/v1"
    for env, msg in [
        ({"EMC_SCREENER": "gpt"}, r"EMC_SCREENER='gpt' is not a screener; expected one of: none, llm, self"),
        ({"EMC_SCREENER": "llm"}, r"EMC_MODEL=None is not set; EMC_SCREENER='llm' needs"),
        ({"EMC_BASE_URL": "localhost:8000"}, r"EMC_BASE_URL='localhost:8000' is not a URL; expected an http"),
        ({"OPENAI_BASE_URL": "ftp://x", "EMC_SCREENER": "llm", "EMC_MODEL": "m"}, r"OPENAI_BASE_URL='ftp://x' is not a URL"),
        ({"EMC_CAPTION_BASE_URL": "x"}, r"EMC_CAPTION_BASE_URL='x' is not a URL"),
        ({"EMC_TIMEOUT_S": "0"}, r"EMC_TIMEOUT_S='0' is out of range; expected a number of seconds in \[0.001, 86400\]"),
        ({"EMC_TIMEOUT_S": "soon"}, r"EMC_TIMEOUT_S='soon' is not a number"),
        ({"EMC_MAX_RETRIES": "11"}, r"EMC_MAX_RETRIES='11' is out of range; expected an integer in \[0, 10\]"),
        ({"EMC_MAX_RETRIES": "1.5"}, r"EMC_MAX_RETRIES='1.5' is not an integer"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            screening_from_env(env)


def test_caption_cache_merges_across_processes(tmp_path):
    """Two processes adding captions to one video's file: every entry survives (file lock)."""
    import subprocess
    import sys

    import token_compressor.screening.cache as cache_module

    # the module alone (stdlib only), so the processes start without importing torch
    code = ("import os, sys, types\n"  # the package's directories, without its __init__ (which imports torch)
            "root = os.path.dirname(os.path.dirname(sys.argv[3]))\n"
            "for name, path in (('token_compressor', root), ('token_compressor.screening', root + '/screening')):\n"
            "    pkg = types.ModuleType(name); pkg.__path__ = [path]; sys.modules[name] = pkg\n"
            "import token_compressor.screening.cache as m\n"
            "c = m.ScreeningCache(sys.argv[1]); off = int(sys.argv[2])\n"
            "for s in range(off, off + 40): c.add_caption('fp', 'm', s, f'cap {s}')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(off), cache_module.__file__])
             for off in (0, 40)]
    assert [p.wait(60) for p in procs] == [0, 0]
    data = json.loads((tmp_path / "captions" / "m" / "fp.json").read_text())
    assert data == {str(s): f"cap {s}" for s in range(80)}


def test_captions_from_another_endpoint(videos, tmp_path):
    with FakeOpenAI(tool_then_end) as planner_server, FakeOpenAI(lambda b, n: (500, {}, 0)) as caption_server:
        res = run(planner_server, tmp_path, videos["b"], EMC_CAPTION_BASE_URL=caption_server.base_url)
        assert res.status == "succeeded"
        assert len(caption_server.caption_requests()) == 7 and not planner_server.caption_requests()
        assert not caption_server.planner_requests() and len(planner_server.planner_requests()) == 2
