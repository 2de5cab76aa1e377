"""Reading and writing small videos with PyAV (the `viz` extra).

`read_frames` samples frames uniformly over a whole video, as Qwen-VL's video readers do;
`write_video` writes test and example videos. Errors a person will meet (no such file, a folder,
a file that is not a video) raise `VideoError`, a `ValueError` with one line naming the file.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np


class VideoError(ValueError):
    """A video file is missing or cannot be decoded."""


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError("reading videos needs PyAV: pip install 'token-compressor[viz]'") from None
    return av


def uniform_indices(total: int, count: int) -> np.ndarray:
    """`count` frame indices spread uniformly over `[0, total)` (all of them when `count >= total`),
    first and last frame included: int64 `[min(count, total)]`, ascending, distinct."""
    if total < 1 or count < 1:
        raise ValueError(f"need total >= 1 and count >= 1, got total={total}, count={count}")
    if count >= total:
        return np.arange(total, dtype=np.int64)
    return np.round(np.linspace(0, total - 1, count)).astype(np.int64)


def check_video_path(path: str) -> None:
    """A VideoError unless `path` is a regular file (a FIFO or a device would block the reader)."""
    from .files import check_regular_file

    check_regular_file(path, "video file", VideoError)


def read_frames(
    path: str,
    max_frames: int,
    progress: Optional[Callable] = None,
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Decode up to `max_frames` frames spread uniformly over the video at `path`.

    Args:
        path: a video file PyAV/FFmpeg can decode.
        max_frames: how many frames to sample (all frames when the video is shorter).
        progress: optional `tqdm`-like wrapper `progress(iterable, total=..., desc=...)` shown while decoding.
    Returns:
        `(frames, indices, total)`: uint8 `[F, H, W, 3]` RGB, the sampled frame numbers int64 `[F]`,
        and the number of frames in the video.
    Raises:
        VideoError: missing file, a folder, or a file with no decodable video stream.
    """
    check_video_path(path)
    av = _import_av()
    try:
        total = _header_frame_count(av, path)
        frames, decoded = _decode_at(av, path, uniform_indices(total or 1, max_frames) if total else None, total, progress)
        if total == 0 or len(frames) < min(max_frames, total):
            # no count in the header, or the header overstated it: sample again over the real count
            total = decoded
            if total == 0:
                raise VideoError(f"cannot read video {path}: no frame could be decoded")
            frames, _ = _decode_at(av, path, uniform_indices(total, max_frames), total, progress)
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as e:
        raise VideoError(f"cannot read video {path}: {_reason(e)}") from None
    return np.stack(frames), uniform_indices(total, max_frames), total


def read_frames_at(path: str, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames numbered `indices` (any order, repeats allowed) of the video at `path`.

    Returns: uint8 `[len(indices), H, W, 3]` RGB, in the order of `indices`.
    Raises: VideoError when the file cannot be read or an index is past the last frame.
    """
    check_video_path(path)
    if len(indices) == 0:
        raise ValueError("read_frames_at needs at least one frame index")
    av = _import_av()
    wanted = np.unique(np.asarray(indices, dtype=np.int64))
    if wanted[0] < 0:
        raise ValueError(f"frame indices must be >= 0, got {int(wanted[0])}")
    try:
        frames, decoded = _decode_at(av, path, wanted, 0, None)
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as e:
        raise VideoError(f"cannot read video {path}: {_reason(e)}") from None
    if len(frames) < len(wanted):
        raise VideoError(f"cannot read video {path}: frame {int(wanted[len(frames)])} asked, {decoded} decodable")
    by_index = dict(zip(wanted.tolist(), frames))
    return np.stack([by_index[int(i)] for i in indices])


def _header_frame_count(av, path: str) -> int:
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError(f"cannot read video {path}: it has no video stream")
        return max(0, int(container.streams.video[0].frames or 0))


def _decode_at(av, path, wanted, total, progress):
    """Decode the frames numbered `wanted` (None: only count). Returns (RGB arrays, frames decoded)."""
    frames, count = [], 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = container.decode(stream)
        if progress is not None and wanted is not None:
            decoded = progress(decoded, total=total or None, desc="decoding", unit="frame")
        targets = iter([] if wanted is None else wanted.tolist())
        target = next(targets, None)
        for frame in decoded:
            if count == target:
                frames.append(frame.to_ndarray(format="rgb24"))
                target = next(targets, None)
            count += 1
            if wanted is not None and target is None:
                break
        if hasattr(decoded, "close"):
            decoded.close()  # the progress bar, when stopped early
    return frames, count


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # FFmpeg messages repeat the file name: "[Errno 1094995529] Invalid data ...: 'x.mp4'"
    return text.split("] ", 1)[-1]


def write_video(path: str, frames: np.ndarray, fps: int = 8) -> None:
    """Write uint8 `[F, H, W, 3]` RGB frames (H, W even) to an H.264 mp4 (or whatever the
    extension's container takes) at `fps`."""
    av = _import_av()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264" if path.endswith(".mp4") else "mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"} if path.endswith(".mp4") else {}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
