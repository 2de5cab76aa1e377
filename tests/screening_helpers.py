"""Test helpers for screening: real mp4 files written with PyAV, and a loopback HTTP server that
speaks the OpenAI chat-completions API with scripted replies."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def color_of_second(second: int):
    """The solid colour of every frame shown during `second` in `make_mp4` videos."""
    return ((40 * second) % 256, (255 - 30 * second) % 256, (90 + 70 * second) % 256)


def make_mp4(path, seconds: int = 12, fps: int = 2, size=(64, 48)):
    """A real H.264 (or mpeg4) mp4: every frame of second s is a solid `color_of_second(s)`."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        try:
            stream = out.add_stream("libx264", rate=fps)
            stream.options = {"crf": "10", "preset": "ultrafast"}
        except Exception:
            stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * fps):
            img = np.zeros((h, w, 3), np.uint8)
            img[:] = color_of_second(i // fps)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def caption_for_image_url(url: str) -> str:
    """What the fake captioner says about a data-URL image: the second its colour belongs to."""
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1])
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).reshape(-1, 3).mean(0)
    best = min(range(256), key=lambda s: float(((rgb - np.array(color_of_second(s))) ** 2).sum()))
    return f"A solid coloured frame; colour code {best}."


def reply(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


class FakeOpenAI:
    """`planner(request_json, n) -> (status, body, delay_s)` scripts the planner replies (n counts
    planner requests from 0); caption requests (those with an image) are answered from the image.
    Every request is recorded with its headers."""

    def __init__(self, planner, caption_delay_s: float = 0.0, reject_response_format: bool = False):
        self.planner = planner
        self.caption_delay_s = caption_delay_s
        self.reject_response_format = reject_response_format
        self.requests = []          # (path, headers dict, json)
        self.planner_calls = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers), body))
                status, payload, delay = outer.answer(self.path, body)
                if delay:
                    time.sleep(delay)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, path, body):
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": "not found"}}, 0
        if self.reject_response_format and "response_format" in body:
            return 400, {"error": {"message": "Unsupported parameter: 'response_format'"}}, 0
        last = body["messages"][-1]["content"]
        if isinstance(last, list):  # a caption request
            url = next(p["image_url"]["url"] for p in last if p.get("type") == "image_url")
            return 200, reply(caption_for_image_url(url)), self.caption_delay_s
        with self.lock:
            n = self.planner_calls
            self.planner_calls += 1
        return self.planner(body, n)

    def planner_requests(self):
        return [r for r in self.requests if not isinstance(r[2]["messages"][-1]["content"], list)]

    def caption_requests(self):
        return [r for r in self.requests if isinstance(r[2]["messages"][-1]["content"], list)]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
