"""On-disk caches for screening, under `EMC_CACHE_DIR`:

    captions/<caption-model-slug>/<video fingerprint>.json   {"<integer second>": caption}
    results/<key>.json                                        EMC schema + what produced it

The format is versioned: `CACHE_FORMAT` is part of every result key and record (a record of
another format is a miss), and the video fingerprint names its own scheme, so a cache written by
another version is never misread. Files are created with the permissions the umask gives (not
the 0600 of a temporary file).

Every write goes to a temporary file in the same directory and is renamed over the target
(`os.replace`), so readers never see a half-written file, across processes too. A lock per path
(a thread lock, plus an advisory `fcntl` lock on the file's directory where available, so across
processes too, and without leaving lock files behind) serialises the read-modify-write of a
caption file, and `key_lock` lets `screen()` run each (video, question, screener) at most once at
a time within a process; two processes may screen the same key concurrently and the last atomic
write wins (both results are valid).

A cache is an optimisation, never a reason to fail: `ScreeningCache` methods do not raise. A
read or write that fails (volume full, read-only mount, `results/` a file, a file of the wrong
shape) is a miss or a skipped write, logged as a WARNING (once per kind) and
counted in `error_counts()`, which the screening counters report.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from typing import Dict, Optional

from ..bounded_json import loads_bounded
from ..files import open_regular

try:
    import fcntl
except ImportError:  # not POSIX: thread locks only
    fcntl = None

log = logging.getLogger(__name__)

CACHE_FORMAT = 2

_locks: Dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_errors: Dict[str, int] = {}
_warned = set()


def key_lock(key: str) -> threading.Lock:
    """The process-wide lock for `key` (created on first use)."""
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


def error_counts() -> Dict[str, int]:
    """Cache errors of this process so far, by kind (`read`, `write`, `malformed`)."""
    with _locks_guard:
        return dict(_errors)


def note_error(kind: str, path: str, error) -> None:
    """Count a cache error; a WARNING the first time per kind in this process (later ones at
    DEBUG: a dead cache must not print a line per caption), all of them counted."""
    with _locks_guard:
        _errors[kind] = _errors.get(kind, 0) + 1
        first = kind not in _warned
        _warned.add(kind)
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    (log.warning if first else log.debug)(
        "screening cache %s error, continuing without it (%s): %s%s", kind, path, text,
        " (further ones of this kind are counted in the run report, logged at DEBUG)" if first else "")


@contextmanager
def file_lock(path: str):
    """This process's lock for `path` and, on POSIX, an advisory lock on its directory."""
    with key_lock(f"file:{path}"):
        if fcntl is None:
            yield
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only portable way (sets it back at once)
    os.umask(mask)
    return mask


def atomic_write_json(path: str, obj) -> None:
    """Write `obj` as JSON to `path` atomically, with the umask's permissions. Raises OSError."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


# A cache record is a few KiB (a long video's captions: a few hundred KiB) and nests 2 deep.
MAX_RECORD_CHARS = 16 << 20
MAX_RECORD_DEPTH = 16


def read_json(path: str) -> Optional[object]:
    """The JSON in `path`, or None when it is missing or unreadable (a corrupt cache is a miss;
    anything but a missing file is also counted with `note_error`). A FIFO or a device is
    unreadable, never waited on; an oversized or deeply nested file is corrupt."""
    try:
        with open_regular(path, "r", encoding="utf-8", what="cache record") as f:
            text = f.read(MAX_RECORD_CHARS + 1)
        return loads_bounded(text, MAX_RECORD_DEPTH, MAX_RECORD_CHARS, f"cache record {path}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        note_error("read", path, e)
        return None


def _slug(name: Optional[str]) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name or "default")).strip("._") or "default"
    if len(text) > 60 or text != str(name):
        text = f"{text[:40]}-{hashlib.sha256(str(name).encode()).hexdigest()[:8]}"
    return text


class ScreeningCache:
    """Caption and result caches rooted at `root` (None disables caching). No method raises."""

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
        if data is None:
            return {}
        if not isinstance(data, dict):
            note_error("malformed", path, f"expected an object of captions, found {type(data).__name__}")
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def add_caption(self, fingerprint: str, caption_model: Optional[str], second: int, caption: str) -> None:
        path = self.captions_path(fingerprint, caption_model)
        if not path:
            return
        try:
            with file_lock(path):
                data = self.load_captions(fingerprint, caption_model)
                data[str(int(second))] = caption
                atomic_write_json(path, data)
        except OSError as e:
            note_error("write", path, e)

    # results ----------------------------------------------------------------------------------
    @staticmethod
    def result_key(fingerprint: str, question: str, identity: dict) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, "video": fingerprint, "question": question, "screener": identity},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:40]

    def result_path(self, key: str) -> Optional[str]:
        return os.path.join(self.root, "results", f"{key}.json") if self.root else None

    def load_result(self, key: str) -> Optional[dict]:
        """The stored record for `key`, or None (missing, unreadable, or of another format).
        The caller still checks the fields' types (see `screening.api`)."""
        path = self.result_path(key)
        data = read_json(path) if path else None
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("cache_format") != CACHE_FORMAT:
            note_error("malformed", path, "not a result record of format %d" % CACHE_FORMAT)
            return None
        return data

    def store_result(self, key: str, record: dict) -> None:
        path = self.result_path(key)
        if path:
            try:
                atomic_write_json(path, {**record, "cache_format": CACHE_FORMAT})
            except (OSError, TypeError, ValueError) as e:
                note_error("write", path, e)
