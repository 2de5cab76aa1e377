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


# --- a tiny random Qwen2-VL with a real processor, offline (for the `self` screener) --------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


from tiny_checkpoint import _bytes_to_unicode  # noqa: E402  (one byte-level alphabet for all test tokenizers)


def tiny_qwen2_vl_with_processor(seed: int = 0):
    """A random 2-layer Qwen2-VL (hidden 64) and a Qwen2VLProcessor over a byte-level tokenizer."""
    import torch
    from transformers import (Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = Qwen2Tokenizer(vocab={ch: i for i, ch in enumerate(_bytes_to_unicode().values())}, merges=[],
                         unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = CHAT_TEMPLATE
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIALS}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.bos_token_id = None
    image_proc = Qwen2VLImageProcessor(patch_size=14, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    video_proc = Qwen2VLVideoProcessor(patch_size=14, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    return model, Qwen2VLProcessor(image_processor=image_proc, tokenizer=tok, video_processor=video_proc,
                                   chat_template=CHAT_TEMPLATE)
