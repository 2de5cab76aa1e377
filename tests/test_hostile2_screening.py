"""Second hostile sweep (issue 24) on the screening side: redirects, deadlines, clip bounds,
ground truth the video does not hold, special files, deep nesting, values that cannot work. Real
mp4 files; network only to loopback servers (127.0.0.1) started here, each bounded in time."""
import copy
import json
import logging
import os
import socket
import threading
import time

import pytest

from screening_helpers import FakeOpenAI, make_mp4, reply
from token_compressor.cli import main
from token_compressor.config import ConfigError, ScreeningConfig, screening_from_env
from token_compressor.screening import (PlannerScreener, ScreeningCache, ScreeningStats, llm_screener, parse_reply,
                                        plan, screen, screen_messages)
from token_compressor.screening import openai_client
from token_compressor.screening.openai_client import ChatError, OpenAIChatClient

SECRET = "sk-sweep2-SECRET-0123456789"
END = {"decision": "end", "timestamps": [[1, 3]], "revised_question": "what colour is it?"}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_mp4(tmp_path_factory.mktemp("sweep2") / "clip.mp4", seconds=4)


@pytest.fixture(autouse=True)
def _fresh_breakers():
    openai_client.reset_breakers()
    yield
    openai_client.reset_breakers()


class RawServer:
    """A loopback server that answers every connection with `script(conn)` (raw bytes, any pace)."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.connections = 0
        self.heads = []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        try:
            conn.settimeout(0.5)
            data = b""
            while b"\r\n\r\n" not in data:  # the request head; the body is not needed
                data += conn.recv(65536)
            self.heads.append(data.split(b"\r\n\r\n")[0].decode("latin-1"))
            self.script(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def close(self):
        self.stop.set()
        self.sock.close()


def _drip(conn, stop, data: bytes, every_s: float):
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        conn.sendall(data[i:i + 1])


# -- R1: credentials never follow a redirect ------------------------------------------------------

@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_request_and_the_key_stays_home(tmp_path, video, code):
    with FakeOpenAI(lambda b, n: (200, reply(json.dumps(END)), 0)) as elsewhere:
        target = elsewhere.base_url + "/chat/completions"
        head = (f"HTTP/1.1 {code} Moved\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n").encode()
        server = RawServer(lambda conn, stop: conn.sendall(head))
        try:
            cfg = screening_from_env({"EMC_SCREENER": "llm", "EMC_BASE_URL": server.base_url, "EMC_MODEL": "m",
                                      "EMC_CACHE_DIR": str(tmp_path), "EMC_TIMEOUT_S": "5", "EMC_MAX_RETRIES": "2",
                                      "EMC_API_KEY": SECRET})
            stats = ScreeningStats()
            result = screen(video, "q?", llm_screener(cfg, backoff_s=0.0), config=cfg, stats=stats)
        finally:
            server.close()
        assert elsewhere.requests == []  # never re-sent, with or without the key
    assert result.status == "failed" and result.segments == ((0.0, 4.0),) and result.question == "q?"
    assert f"HTTP {code} redirect to 127.0.0.1 not followed" in result.reason and SECRET not in result.reason
    assert server.connections == 1  # not retried: a redirect does not go away
    assert stats.snapshot()["fallen_back"] == 1


# -- R2: one deadline per request ---------------------------------------------------------------

BODY = json.dumps(reply(json.dumps(END))).encode()


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_a_dripping_server_cannot_outlast_the_deadline(phase):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()

    def script(conn, stop):
        if phase == "headers":
            _drip(conn, stop, head + BODY, 0.05)
        else:
            conn.sendall(head)
            _drip(conn, stop, BODY, 0.05)

    server = RawServer(script)
    try:
        client = OpenAIChatClient(server.base_url, SECRET, timeout_s=0.6, max_retries=0, backoff_s=0)
        t0 = time.monotonic()
        with pytest.raises(ChatError, match=r"timed out: no complete reply within 0.6s \(connect, headers and body together\)"):
            client.chat([{"role": "user", "content": "hi"}], "m")
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    # each byte arrives well within any per-read timeout; the whole reply would take > 5 s
    assert elapsed < 1.5, elapsed


def test_a_prompt_reply_within_the_deadline_still_works():
    with FakeOpenAI(lambda b, n: (200, reply("fine"), 0)) as server:
        client = OpenAIChatClient(server.base_url, SECRET, timeout_s=2, max_retries=0)
        assert client.chat([{"role": "user", "content": "hi"}], "m") == "fine"
        assert server.requests[0][1]["Authorization"] == f"Bearer {SECRET}"


def test_a_plain_http_proxy_from_the_environment_is_still_used(monkeypatch):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    proxy = RawServer(lambda conn, stop: conn.sendall(head + BODY))
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://pu:pp@127.0.0.1:{proxy.sock.getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        client = OpenAIChatClient("http://planner.invalid/v1", SECRET, timeout_s=5, max_retries=0)
        assert client.chat([{"role": "user", "content": "hi"}], "m") == json.dumps(END)
    finally:
        proxy.close()
    (request,) = proxy.heads
    assert request.startswith("POST http://planner.invalid/v1/chat/completions HTTP/1.1")
    assert "Proxy-Authorization: Basic cHU6cHA=" in request and f"Bearer {SECRET}" in request


# -- R3: an item's own clip bounds ----------------------------------------------------------------

def test_an_item_with_clip_bounds_goes_to_the_model_as_asked(tmp_path, video, caplog):
    from token_compressor.screening import screening_stats
    from token_compressor.screening.inject import MARK

    with FakeOpenAI(lambda b, n: (200, reply(json.dumps(END)), 0)) as server:
        cfg = screening_from_env({"EMC_SCREENER": "llm", "EMC_BASE_URL": server.base_url, "EMC_MODEL": "m",
                                  "EMC_CACHE_DIR": str(tmp_path), "EMC_TIMEOUT_S": "5"})
        messages = [{"role": "user", "content": [
            {"type": "video", "video": video, "video_start": 2.0, "video_end": 4.0, "nframes": 2},
            {"type": "text", "text": "what colour?"}]}]
        original = copy.deepcopy(messages)
        before = screening_stats()["fallen_back"]
        with caplog.at_level(logging.WARNING):
            assert screen_messages(messages, config=cfg) == []
        assert server.requests == []  # nothing planned over seconds outside the clip
    item = messages[0]["content"][0]
    assert item.pop(MARK) == "failed" and messages == original  # frames of the clip, as asked
    assert screening_stats()["fallen_back"] == before + 1
    assert "video_start/video_end = [2.0, 4.0]" in caplog.text and video in caplog.text


# -- R4: ground truth the video does not hold ----------------------------------------------------

SPLIT = [{"vid_name": "v1", "question": "q1", "gt_timestamp": [[2, 4]], "vid_duration": 10}]
RESULTS = [{"vid_name": "v1", "question": "q1", "status": "succeeded", "screened_timestamps": [[2, 4]]}]


@pytest.mark.parametrize("change, message", [
    ({"gt_timestamp": [[8, 12]]}, r"item 0 \(v1::q1\): gt_timestamp \[8, 12\] lies outside the video \(0 to 10 s\)"),
    ({"gt_timestamp": [[-1, 3]]}, r"item 0 \(v1::q1\): gt_timestamp \[-1, 3\] lies outside the video"),
    ({"gt_timestamp": [[6, 2]]}, r"item 0 \(v1::q1\): gt_timestamp \[6, 2\] is reversed"),
    ({"gt_timestamp": [[3, 3]]}, r"item 0 \(v1::q1\): gt_timestamp \[\[3.0, 3.0\]\] covers no time"),
    ({"vid_duration": -5}, r"item 0 \(v1::q1\): vid_duration is -5; expected a number of seconds > 0"),
    ({"vid_duration": "nan"}, r"item 0 \(v1::q1\): vid_duration is \"nan\""),
    ({"vid_duration": 0}, r"item 0 \(v1::q1\): vid_duration is 0"),
])
def test_ground_truth_outside_the_video_is_an_error_naming_the_item(tmp_path, capsys, change, message):
    split, results = tmp_path / "split.json", tmp_path / "results.json"
    split.write_text(json.dumps([{**SPLIT[0], **change}]))
    results.write_text(json.dumps(RESULTS))
    assert main(["emc-eval", str(split), str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    import re
    assert re.search(message, err), err


def test_ground_truth_inside_the_video_is_scored(tmp_path, capsys):
    split, results = tmp_path / "split.json", tmp_path / "results.json"
    split.write_text(json.dumps(SPLIT))
    results.write_text(json.dumps(RESULTS))
    assert main(["emc-eval", str(split), str(results), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iou"] == 1.0


# -- R8: special files ----------------------------------------------------------------------------

def _fifo(tmp_path, name="pipe"):
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


def _bounded(fn, seconds=20):
    """fn() in a thread; fails the test (instead of hanging it) if it blocks."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked on a special file"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_a_fifo_in_the_cache_is_a_miss_not_a_hang(tmp_path, video):
    from token_compressor.screening import cache as cache_module
    from token_compressor.screening.video import fingerprint

    calls = []

    def chat_fn(messages):
        calls.append(1)
        return json.dumps(END)
    cache = ScreeningCache(str(tmp_path / "cache"))
    screener = PlannerScreener("local", chat_fn, lambda image: "a red frame", {"screener": "local"}, cache=cache)
    captions = cache.captions_path(fingerprint(video), None)
    os.makedirs(os.path.dirname(captions))
    os.mkfifo(captions)
    before = cache_module.error_counts().get("read", 0)
    res = _bounded(lambda: screen(video, "q?", screener, config=ScreeningConfig(cache_dir=str(tmp_path)),
                                  stats=ScreeningStats()))
    assert res.status == "succeeded" and calls
    assert cache_module.error_counts().get("read", 0) > before  # counted as a failed read


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "folder"])
def test_special_files_are_named_for_what_they_are(tmp_path, capsys, kind):
    path = {"fifo": lambda: _fifo(tmp_path), "/dev/zero": lambda: "/dev/zero", "folder": lambda: str(tmp_path)}[kind]()
    what = {"fifo": "a FIFO", "/dev/zero": "a character device", "folder": "a folder"}[kind]
    for argv in (["visualize", "--video", path, "-o", str(tmp_path / "k.png")],
                 ["screen", path, "q?"],
                 ["emc-eval", path, path]):
        assert _bounded(lambda: main(argv)) == 2, argv
        err = capsys.readouterr().err
        said = f"{path} is a folder, expected a" if kind == "folder" else f"{path} is {what}, not a regular file"
        assert said in err and "not found" not in err, (argv, err)


def test_video_readers_refuse_special_files(tmp_path):
    from token_compressor.screening.video import fingerprint, probe
    from token_compressor.video import VideoError, read_frames

    fifo = _fifo(tmp_path)
    for fn in (lambda: read_frames(fifo, 2), lambda: probe(fifo), lambda: fingerprint(fifo),
               lambda: read_frames("/dev/zero", 2), lambda: probe("/dev/zero")):
        with pytest.raises((VideoError, OSError), match="is a (FIFO|character device), not a regular file"):
            _bounded(fn)


# -- R9: deep nesting -----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100, 5000, 100_000 // 2])
def test_a_deeply_nested_planner_reply_is_unparsable_not_a_crash(depth):
    deep = '{"decision": "end", "timestamps": ' + "[" * depth + "]" * depth + ', "revised_question": "x"}'
    assert parse_reply(deep) is None
    deep_obj = '{"a": ' * depth + "1" + "}" * depth
    assert parse_reply(deep_obj) is None
    replies = iter([deep] * 10)
    out = plan("q?", 10.0, 2.0, lambda messages: next(replies), lambda second: "a frame")
    assert out.status == "failed" and out.segments == [(0.0, 10.0)]


def test_a_deeply_nested_eval_file_is_one_line(tmp_path, capsys):
    split = tmp_path / "split.json"
    split.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["emc-eval", str(split), str(split)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested 100000 levels deep; the limit is 32" in err


def test_nesting_depth_skips_strings():
    from token_compressor.bounded_json import nesting_depth

    assert nesting_depth('{"a": "[[[[{{{\\"[[[", "b": [[1]]}') == 3
    assert nesting_depth("[" * 7) == 7 and nesting_depth("") == 0


# -- R10: values that cannot work -------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1e10", "86401", "0.0001", "inf"])
def test_a_timeout_that_cannot_work_is_refused_before_the_first_sample(value):
    with pytest.raises(ConfigError, match=r"EMC_TIMEOUT_S=.* expected a number of seconds in \[0.001, 86400\]"):
        screening_from_env({"EMC_SCREENER": "llm", "EMC_MODEL": "m", "EMC_TIMEOUT_S": value})
    with pytest.raises(ConfigError, match="timeout_s="):
        OpenAIChatClient("http://127.0.0.1:9/v1", timeout_s=float(value))


def test_the_largest_timeout_works():
    with FakeOpenAI(lambda b, n: (200, reply("fine"), 0)) as server:
        cfg = screening_from_env({"EMC_SCREENER": "llm", "EMC_MODEL": "m", "EMC_TIMEOUT_S": "86400",
                                  "EMC_BASE_URL": server.base_url})
        client = OpenAIChatClient(cfg.base_url, timeout_s=cfg.timeout_s, max_retries=0)
        assert client.chat([{"role": "user", "content": "hi"}], "m") == "fine"
