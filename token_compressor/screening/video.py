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

from ..video import VideoError  # one error class for every unreadable video in the package

_MIB = 1 << 20


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float   # seconds, > 0
    fps: float        # average frame rate, > 0
    num_frames: int   # frames in the stream (counted from duration * fps when not stored)
    fingerprint: str


def fingerprint(path: str) -> str:
    """A cheap, content-based fingerprint: sha256 over the file size, the first MiB and the last
    MiB (40 hex characters). The modification time is deliberately left out so that copies and
    re-downloads share the cache; an mp4's index (moov atom, with every sample's size and offset)
    lives in the first or last MiB, so any re-encode changes the fingerprint."""
    size = os.path.getsize(path)
    h = hashlib.sha256(f"token-compressor-video-v1:{size}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()[:40]


def _check_exists(path: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    return path


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
