"""Video probing, frame decoding and fingerprints for screening (PyAV; imported lazily).

A missing file raises `FileNotFoundError`; a file PyAV cannot open or decode raises `VideoError`
(a `ValueError`); both name the file. Screening never hides bad input behind a fallback.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import Optional

from ..files import check_regular_file, open_regular
from ..video import VideoError  # one error class for every unreadable video in the package

_MIB = 1 << 20


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float   # seconds, > 0
    fps: float        # average frame rate, > 0
    num_frames: int   # frames in the stream (counted from duration * fps when not stored)
    fingerprint: str


WHOLE_FILE_BYTES = 256 * _MIB   # files up to this size are hashed whole
SAMPLED_CHUNKS = 1024           # larger files: this many evenly spaced 64 KiB chunks, plus head and tail
_CHUNK = 64 << 10
_FINGERPRINTS: dict = {}        # (path, size, mtime_ns, inode) -> fingerprint: hash once per file version


def fingerprint(path: str) -> str:
    """A content-based fingerprint (40 hex characters) that names its scheme (`-v2`).

    Files up to `WHOLE_FILE_BYTES` are hashed whole (sha256 runs at GB/s: a fraction of a second),
    so two different videos never share one. Larger files hash their size, the first and last
    MiB and `SAMPLED_CHUNKS` evenly spaced 64 KiB chunks (64 MiB read): two distinct files of
    equal size collide only if every difference lies in the unread gaps between chunks (under
    size/1024 each); an encoded video's index (first or last MiB, every sample's size and offset)
    changes with any re-encode, so that takes equal-size files edited in place. The modification time
    is deliberately left out so that copies and re-downloads share the cache; within a process
    a file is hashed once per (size, mtime, inode)."""
    with open_regular(path, "rb", what="video file") as f:
        return _fingerprint(path, f)


def _fingerprint(path: str, f) -> str:
    st = os.fstat(f.fileno())
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _FINGERPRINTS.get(memo)
    if cached is not None:
        return cached
    size = st.st_size
    whole = size <= WHOLE_FILE_BYTES
    h = hashlib.sha256(f"token-compressor-video-v2:{'whole' if whole else 'sampled'}:{size}:".encode())
    if whole:
        for block in iter(lambda: f.read(4 * _MIB), b""):
            h.update(block)
    else:
        h.update(f.read(_MIB))
        step = (size - 2 * _MIB - _CHUNK) / (SAMPLED_CHUNKS - 1)
        for k in range(SAMPLED_CHUNKS):
            f.seek(_MIB + int(k * step))
            h.update(f.read(_CHUNK))
        f.seek(size - _MIB)
        h.update(f.read(_MIB))
    digest = h.hexdigest()[:40]
    if len(_FINGERPRINTS) > 4096:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[memo] = digest
    return digest


def _check_exists(path: str) -> str:
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"video file not found: {path}")
    return check_regular_file(path, "video file", VideoError)  # a FIFO would block the reader


def probe(path: str) -> VideoInfo:
    """Duration, fps and frame count of the first video stream of `path`."""
    import av

    path = _check_exists(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            frames = int(stream.frames or 0)
            if (not duration or duration <= 0) and frames and fps:
                duration = frames / fps
    except VideoError:
        raise
    except Exception as e:  # av.error.InvalidDataError and friends
        raise VideoError(f"{path}: cannot read as a video ({type(e).__name__}: {e})") from None
    if not duration or duration <= 0 or not fps or fps <= 0:
        raise VideoError(f"{path}: cannot determine duration/fps (duration={duration!r}, fps={fps!r})")
    if not frames:
        frames = max(1, int(round(duration * fps)))
    return VideoInfo(path=path, duration=duration, fps=fps, num_frames=frames, fingerprint=fingerprint(path))


def frame_at(path: str, second: float):
    """The decoded frame shown at `second` (the last frame at or before it) as an RGB PIL image."""
    import av

    path = _check_exists(path)
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            if second > 0 and tb:
                container.seek(int(second / tb) + (stream.start_time or 0), stream=stream, backward=True, any_frame=False)
            chosen = None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                if chosen is not None and t > second + 1e-6:
                    break
                chosen = frame
            if chosen is None:
                raise VideoError(f"{path}: no frame decodable at {second}s")
            return chosen.to_image()
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(f"{path}: cannot decode the frame at {second}s ({type(e).__name__}: {e})") from None


def image_data_url(image, fmt: str = "JPEG", max_side: Optional[int] = 768) -> str:
    """Encode a PIL image as a base64 data URL (downscaled so the longer side is <= `max_side`)."""
    import base64

    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, quality=90)
    mime = "image/jpeg" if fmt.upper() in ("JPEG", "JPG") else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
