"""On-disk caches for screening, under `EMC_CACHE_DIR`:

    captions/<caption-model-slug>/<video fingerprint>.json   {"<integer second>": caption}
    results/<key>.json                                        EMC schema + what produced it

Every write goes to a temporary file in the same directory and is renamed over the target
(`os.replace`), so readers never see a half-written file, across processes too. A lock per path
(a thread lock, plus an advisory `fcntl` lock on `<file>.lock` where available, so across
processes too) serialises the read-modify-write of a caption file, and `key_lock` lets `screen()`
run each (video, question, screener) at most once at a time within a process; two processes may
screen the same key concurrently and the last atomic write wins (both results are valid).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from typing import Dict, Optional

try:
    import fcntl
except ImportError:  # not POSIX: thread locks only
    fcntl = None

_locks: Dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def key_lock(key: str) -> threading.Lock:
    """The process-wide lock for `key` (created on first use)."""
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


@contextmanager
def file_lock(path: str):
    """This process's lock for `path` and, on POSIX, an advisory lock on `path + ".lock"`."""
    with key_lock(f"file:{path}"):
        if fcntl is None:
            yield
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def atomic_write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str) -> Optional[object]:
    """The JSON in `path`, or None when it is missing or unreadable (a corrupt cache is a miss)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _slug(name: Optional[str]) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name or "default")).strip("._") or "default"
    if len(text) > 60 or text != str(name):
        text = f"{text[:40]}-{hashlib.sha256(str(name).encode()).hexdigest()[:8]}"
    return text


class ScreeningCache:
    """Caption and result caches rooted at `root` (None disables caching)."""

    def __init__(self, root: Optional[str]):
        self.root = os.path.abspath(os.path.expanduser(root)) if root else None

    # captions ---------------------------------------------------------------------------------
    def captions_path(self, fingerprint: str, caption_model: Optional[str]) -> Optional[str]:
        if not self.root:
            return None
        return os.path.join(self.root, "captions", _slug(caption_model), f"{fingerprint}.json")

    def load_captions(self, fingerprint: str, caption_model: Optional[str]) -> Dict[str, str]:
        path = self.captions_path(fingerprint, caption_model)
        data = read_json(path) if path else None
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def add_caption(self, fingerprint: str, caption_model: Optional[str], second: int, caption: str) -> None:
        path = self.captions_path(fingerprint, caption_model)
        if not path:
            return
        with file_lock(path):
            data = self.load_captions(fingerprint, caption_model)
            data[str(int(second))] = caption
            atomic_write_json(path, data)

    # results ----------------------------------------------------------------------------------
    @staticmethod
    def result_key(fingerprint: str, question: str, identity: dict) -> str:
        blob = json.dumps({"video": fingerprint, "question": question, "screener": identity}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:40]

    def result_path(self, key: str) -> Optional[str]:
        return os.path.join(self.root, "results", f"{key}.json") if self.root else None

    def load_result(self, key: str) -> Optional[dict]:
        path = self.result_path(key)
        data = read_json(path) if path else None
        return data if isinstance(data, dict) else None

    def store_result(self, key: str, record: dict) -> None:
        path = self.result_path(key)
        if path:
            atomic_write_json(path, record)
