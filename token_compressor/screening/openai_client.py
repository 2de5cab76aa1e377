"""A minimal OpenAI-compatible chat client on the standard library (no `openai` package).

POST `{base_url}/chat/completions`. JSON mode (`response_format: {"type": "json_object"}`) is asked
for first; a server that rejects it (HTTP 400/422 whose body mentions `response_format`) is asked
again without it, and the client remembers. Timeouts, 429 and 5xx are retried `max_retries` times
with exponential backoff; other 4xx fail at once. The API key is sent as a bearer token and never
appears in errors, logs or reprs.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import List, Optional

log = logging.getLogger(__name__)


class ChatError(RuntimeError):
    """A chat request failed. `retryable` is False for errors a retry cannot fix (401, 404, ...)."""

    def __init__(self, message: str, status: Optional[int] = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class OpenAIChatClient:
    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout_s: float = 60.0,
                 max_retries: int = 2, backoff_s: float = 1.0, max_tokens: int = 1024,
                 temperature: float = 0.2):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._json_mode_ok = True   # flips to False once the server rejects response_format
        self._lock = threading.Lock()
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.base_url!r}, api_key={'***' if self._api_key else None})"

    @property
    def json_mode_supported(self) -> bool:
        return self._json_mode_ok

    def _post(self, payload: dict) -> dict:
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json", "Accept": "application/json",
                     **({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {})},
            method="POST",
        )
        with self._lock:
            self.requests_sent += 1
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            body = resp.read()
        try:
            return json.loads(body)
        except ValueError:
            raise ChatError(f"{self.base_url}: reply is not JSON ({body[:120]!r})") from None

    def _post_with_retries(self, payload: dict) -> dict:
        attempt = 0
        while True:
            try:
                return self._post(payload)
            except urllib.error.HTTPError as e:
                detail = _read_error_body(e)
                retryable = e.code == 429 or e.code >= 500
                err = ChatError(f"{self.base_url}: HTTP {e.code} {detail[:300]}", status=e.code, retryable=retryable)
            except (socket.timeout, TimeoutError) as e:
                err = ChatError(f"{self.base_url}: timed out after {self.timeout_s:g}s ({e})")
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    err = ChatError(f"{self.base_url}: timed out after {self.timeout_s:g}s")
                else:
                    err = ChatError(f"{self.base_url}: connection failed ({reason})")
            except ChatError as e:  # a 200 whose body is not JSON (a proxy's error page): retry
                err = e
            except (ConnectionError, OSError) as e:
                err = ChatError(f"{self.base_url}: connection failed ({type(e).__name__}: {e})")
            if err.status in (400, 422) and "response_format" in str(err) and "response_format" in payload:
                raise err  # handled by chat(): not a transient failure
            if not err.retryable or attempt >= self.max_retries:
                raise err
            delay = self.backoff_s * (2 ** attempt)
            log.warning("chat request failed (%s); retry %d/%d in %.2fs", err, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
            attempt += 1

    def chat(self, messages: List[dict], model: str, json_mode: bool = False) -> str:
        """The assistant's text for `messages` (OpenAI chat format). `json_mode` asks for a JSON
        object where the server supports it."""
        payload = {"model": model, "messages": messages, "max_tokens": self.max_tokens,
                   "temperature": self.temperature}
        if json_mode and self._json_mode_ok:
            try:
                return _content(self._post_with_retries({**payload, "response_format": {"type": "json_object"}}), self.base_url)
            except ChatError as e:
                if not (e.status in (400, 422) and "response_format" in str(e)):
                    raise
                log.info("%s rejects response_format; continuing without JSON mode", self.base_url)
                self._json_mode_ok = False
        return _content(self._post_with_retries(payload), self.base_url)


def _read_error_body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace")
    except Exception:
        return ""


def _content(reply: dict, where: str) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChatError(f"{where}: reply has no choices[0].message.content ({str(reply)[:120]})") from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ChatError(f"{where}: message content is {type(content).__name__}, not text")
    return content
