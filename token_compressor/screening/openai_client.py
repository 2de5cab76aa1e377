"""A minimal OpenAI-compatible chat client on the standard library (no `openai` package).

POST `{base_url}/chat/completions`. JSON mode (`response_format: {"type": "json_object"}`) is asked
for first; a server that rejects it (HTTP 400/422 whose body mentions `response_format`) is asked
again without it, and the client remembers. Timeouts, 429 and 5xx are retried `max_retries` times
with exponential backoff; other 4xx fail at once.

Reliability and secrets (README and docs/reliability.md state the same):
- Circuit breaker, one per endpoint (base URL) and process, shared by every client of that URL:
  after `BREAKER_THRESHOLD` consecutive attempts that got no HTTP answer at all (connection
  refused or reset, DNS failure, timeout), the endpoint is down for `BREAKER_COOLDOWN_S`: every
  request fails at once with a non-retryable `ChatError` (`circuit_open=True`), so each sample
  falls back immediately. After the cool-down one request is let through; its success closes the
  circuit, its failure opens it again. Any HTTP answer, even a 5xx, proves the endpoint is up.
- Replies are read with a size cap (`MAX_REPLY_BYTES`, error bodies `MAX_ERROR_BYTES`).
- One wall-clock deadline per request: `timeout_s` covers connecting, sending, the status line and
  headers, and the body together. A watchdog timer shuts the socket down when it passes, so a
  server that drips its headers or body a byte at a time cannot hold a request longer (a
  per-read socket timeout alone would restart with every byte). Name resolution is the one step
  outside it (the system resolver takes no deadline).
- Redirects are never followed: a 3xx is a failed request (not retried; the sample falls back and
  is counted), so the key can never be re-sent to the host a redirect names.
- The API key is sent as a bearer token only to this client's `base_url`; a password in the URL
  (`http://user:pw@host`) is sent as HTTP Basic auth (when no key is set) and removed from the
  URL. Every message (errors, logs, reprs) and every reply text returned is passed through
  `redact`, which replaces the key, the URL password and any bearer token with `***`.

The standard library's `http.client`, not `urllib` (which follows redirects with the same
headers) nor `httpx` (its timeouts are per phase and per read too, so the total deadline would
need the same watchdog; it would add a dependency for nothing else here). `HTTP_PROXY` /
`HTTPS_PROXY` / `NO_PROXY` are honoured as `urllib` reads them.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from typing import Dict, Iterable, List, Optional

from ..config import parse_max_retries, parse_timeout

log = logging.getLogger(__name__)

BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 300.0
MAX_REPLY_BYTES = 1 << 20
MAX_ERROR_BYTES = 64 << 10

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]*)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")


def redact(text, secrets: Iterable[Optional[str]] = ()) -> str:
    """`text` with each of `secrets` (4+ characters), URL passwords and bearer/basic credentials
    replaced by `***`."""
    text = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)


def split_credentials(url: str):
    """(`url` without user:password, user or None, password or None)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")


class ChatError(RuntimeError):
    """A chat request failed. `retryable` is False for errors a retry cannot fix (401, 404, an
    open circuit, an oversized reply ...); `circuit_open` is True when the endpoint is known down."""

    def __init__(self, message: str, status: Optional[int] = None, retryable: bool = True,
                 circuit_open: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.circuit_open = circuit_open


class CircuitBreaker:
    """The state of one endpoint (see the module docstring for the policy). `clock` is
    `time.monotonic` unless a test passes its own."""

    def __init__(self, threshold: int = BREAKER_THRESHOLD, cooldown_s: float = BREAKER_COOLDOWN_S, clock=None):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock or time.monotonic
        self._lock = threading.Lock()
        self.failures = 0          # consecutive attempts without an HTTP answer
        self.opened_at = None      # set while open
        self.probing = False       # one request in flight after the cool-down
        self.times_opened = 0
        self.rejected = 0          # requests failed at once while open

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        with self._lock:
            if self.opened_at is None:
                return True
            if not self.probing and self.clock() - self.opened_at >= self.cooldown_s:
                self.probing = True  # half-open: this request decides
                return True
            self.rejected += 1
            return False

    def success(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> bool:
        """Count an attempt with no HTTP answer; True when this opened (or re-opened) the circuit."""
        with self._lock:
            self.failures += 1
            reopen = self.probing
            self.probing = False
            if reopen or (self.opened_at is None and self.failures >= self.threshold):
                self.opened_at = self.clock()
                self.times_opened += 1
                return True
            return False


_BREAKERS: Dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(base_url: str) -> CircuitBreaker:
    """The process-wide circuit breaker of `base_url` (created on first use)."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(base_url)
        if breaker is None:
            breaker = _BREAKERS[base_url] = CircuitBreaker()
        return breaker


def breaker_counts() -> Dict[str, int]:
    """Over every endpoint of this process: how often a circuit opened, and requests it refused."""
    with _BREAKERS_LOCK:
        breakers = list(_BREAKERS.values())
    return {"endpoint_down": sum(b.times_opened for b in breakers),
            "skipped_endpoint_down": sum(b.rejected for b in breakers)}


def reset_breakers() -> None:
    """Forget every endpoint's state (tests; a new run in the same process)."""
    with _BREAKERS_LOCK:
        _BREAKERS.clear()


class _NoAnswer(Exception):
    """An attempt that got no HTTP answer (counts for the circuit breaker)."""


class _HTTPStatus(Exception):
    """An HTTP answer with an error status (4xx/5xx): `code`, and the start of its body."""

    def __init__(self, code: int, detail: str):
        super().__init__(f"HTTP {code}")
        self.code = code
        self.detail = detail


class OpenAIChatClient:
    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout_s: float = 60.0,
                 max_retries: int = 2, backoff_s: float = 1.0, max_tokens: int = 1024,
                 temperature: float = 0.2, breaker: Optional[CircuitBreaker] = None,
                 redact_also: Iterable[Optional[str]] = ()):
        url, user, password = split_credentials(base_url.rstrip("/"))
        self.base_url = url
        self._api_key = api_key
        self._secrets = tuple(s for s in (api_key, password, *redact_also) if s)  # redact_also: other clients' keys
        self._basic = (base64.b64encode(f"{user}:{password}".encode()).decode()
                       if password and not api_key else None)
        self.timeout_s = parse_timeout(timeout_s, "timeout_s")
        self.max_retries = parse_max_retries(max_retries, "max_retries")
        self.backoff_s = float(backoff_s)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.breaker = breaker or breaker_for(self.base_url)
        self._json_mode_ok = True   # flips to False once the server rejects response_format
        self._lock = threading.Lock()
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"OpenAIChatClient(base_url={self.base_url!r}, api_key={'***' if self._api_key else None})"

    @property
    def json_mode_supported(self) -> bool:
        return self._json_mode_ok

    def redact(self, text) -> str:
        return redact(text, self._secrets)

    def _error(self, message: str, **kw) -> ChatError:
        return ChatError(self.redact(f"{self.base_url}: {message}"), **kw)

    def _headers(self) -> dict:
        auth = (f"Bearer {self._api_key}" if self._api_key else f"Basic {self._basic}" if self._basic else None)
        return {"Content-Type": "application/json", "Accept": "application/json",
                **({"Authorization": auth} if auth else {})}

    def _read_capped(self, resp) -> bytes:
        chunks, size = [], 0
        while True:
            chunk = resp.read1(64 << 10) if hasattr(resp, "read1") else resp.read(64 << 10)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise self._error(f"reply over {MAX_REPLY_BYTES} bytes; not read further", retryable=False)
            chunks.append(chunk)

    def _connection(self):
        """(an unconnected HTTP(S) connection to the endpoint or its proxy, the request target,
        headers for the proxy). `HTTP(S)_PROXY`/`NO_PROXY` as urllib reads them; a proxy's
        `user:password@` is sent to the proxy only, as Basic `Proxy-Authorization`."""
        parts = urllib.parse.urlsplit(f"{self.base_url}/chat/completions")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.netloc}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        proxy = None if urllib.request.proxy_bypass(parts.hostname) else urllib.request.getproxies().get(parts.scheme)
        if not proxy:
            if parts.scheme == "https":
                return http.client.HTTPSConnection(parts.hostname, port, timeout=self.timeout_s,
                                                   context=ssl.create_default_context()), target, {}
            return http.client.HTTPConnection(parts.hostname, port, timeout=self.timeout_s), target, {}
        pp = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        proxy_headers = {}
        if pp.username is not None:
            token = f"{urllib.parse.unquote(pp.username)}:{urllib.parse.unquote(pp.password or '')}"
            proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        proxy_port = pp.port or (443 if pp.scheme == "https" else 80)
        if parts.scheme == "http":  # a plain-HTTP proxy takes the absolute URL
            return (http.client.HTTPConnection(pp.hostname, proxy_port, timeout=self.timeout_s),
                    urllib.parse.urlunsplit(parts), proxy_headers)
        conn = http.client.HTTPSConnection(pp.hostname, proxy_port, timeout=self.timeout_s,
                                           context=ssl.create_default_context())
        conn.set_tunnel(parts.hostname, port, headers=proxy_headers)  # CONNECT, then TLS to the endpoint
        return conn, target, {}

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode("utf-8")
        with self._lock:
            self.requests_sent += 1
        try:
            conn, target, proxy_headers = self._connection()
        except ValueError as e:  # a malformed port and friends: not a usable endpoint
            raise self._error(f"cannot send a request ({type(e).__name__}: {e})", retryable=False) from None
        expired = threading.Event()

        def expire():  # the request's one deadline: unblock whatever phase it is in
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", target, body=data, headers={**self._headers(), **proxy_headers})
            resp = conn.getresponse()
            if resp.status >= 400:
                detail = resp.read(MAX_ERROR_BYTES).decode("utf-8", "replace")
                raise _HTTPStatus(resp.status, detail)
            if resp.status >= 300:  # never followed: the key must not travel to another URL
                where = urllib.parse.urlsplit(resp.getheader("Location") or "")
                raise self._error(f"HTTP {resp.status} redirect{f' to {where.hostname}' if where.hostname else ''} "
                                  "not followed (a request is only ever sent to the configured URL); falling back",
                                  status=resp.status, retryable=False)
            body = self._read_capped(resp)
            if expired.is_set():  # the shutdown can look like the end of a body without a length
                raise TimeoutError("deadline")
        except (_HTTPStatus, ChatError):
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            if expired.is_set():
                raise _NoAnswer(f"timed out: no complete reply within {self.timeout_s:g}s (connect, headers "
                                "and body together)") from None
            if isinstance(e, (socket.timeout, TimeoutError)):
                raise _NoAnswer(f"timed out after {self.timeout_s:g}s") from None
            if isinstance(e, ValueError) and not isinstance(e, UnicodeError):
                raise self._error(f"cannot send a request ({type(e).__name__}: {e})", retryable=False) from None
            raise _NoAnswer(f"connection failed ({type(e).__name__}: {e})") from None
        finally:
            watchdog.cancel()
            conn.close()
        try:
            return json.loads(body)
        except ValueError:
            raise self._error(f"reply is not JSON ({body[:120]!r})") from None

    def _post_with_retries(self, payload: dict) -> dict:
        attempt = 0
        while True:
            if not self.breaker.allow():
                raise self._error(f"endpoint down (circuit open after {self.breaker.threshold} attempts without an "
                                  f"answer; retried after {self.breaker.cooldown_s:g}s); falling back",
                                  retryable=False, circuit_open=True)
            try:
                result = self._post(payload)
                self.breaker.success()
                return result
            except _HTTPStatus as e:
                self.breaker.success()  # an HTTP answer: the endpoint is up
                detail = e.detail
                retryable = e.code == 429 or e.code >= 500
                err = self._error(f"HTTP {e.code} {detail[:300]}", status=e.code, retryable=retryable)
            except _NoAnswer as e:
                err = self._error(str(e))
                if self.breaker.failure():
                    log.warning("%s: %d attempts in a row got no answer; treating the endpoint as down for %gs "
                                "(samples fall back to the whole video at once)",
                                self.base_url, self.breaker.threshold, self.breaker.cooldown_s)
                    raise ChatError(f"{err}; endpoint down for {self.breaker.cooldown_s:g}s after "
                                    f"{self.breaker.threshold} attempts without an answer",
                                    retryable=False, circuit_open=True) from None
            except ChatError as e:  # a 200 whose body is not JSON (a proxy's error page): retry; a 3xx
                self.breaker.success()
                err = e
            if err.status in (400, 422) and "response_format" in str(err) and "response_format" in payload:
                raise err  # handled by chat(): not a transient failure
            if not err.retryable or attempt >= self.max_retries:
                raise err
            delay = self.backoff_s * (2 ** attempt)
            log.warning("chat request failed (%s); retry %d/%d in %.2fs", err, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
            attempt += 1

    def chat(self, messages: List[dict], model: str, json_mode: bool = False) -> str:
        """The assistant's text for `messages` (OpenAI chat format), redacted (see `redact`).
        `json_mode` asks for a JSON object where the server supports it."""
        payload = {"model": model, "messages": messages, "max_tokens": self.max_tokens,
                   "temperature": self.temperature}
        if json_mode and self._json_mode_ok:
            try:
                return self.redact(_content(self._post_with_retries({**payload, "response_format": {"type": "json_object"}}),
                                            self))
            except ChatError as e:
                if not (e.status in (400, 422) and "response_format" in str(e)):
                    raise
                log.info("%s rejects response_format; continuing without JSON mode", self.base_url)
                self._json_mode_ok = False
        return self.redact(_content(self._post_with_retries(payload), self))


def _content(reply: dict, client: OpenAIChatClient) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise client._error(f"reply has no choices[0].message.content ({str(reply)[:120]})") from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(content, str):
        raise client._error(f"message content is {type(content).__name__}, not text")
    return content
