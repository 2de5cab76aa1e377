"""Feature sources for `token-compressor visualize`: a video in, one video's visual tokens out.

A feature source returns `VisualTokens`: the features `[T*N, D]` that `select` takes, the token
grid `(T, H, W)` with `N = H*W`, and one picture per temporal patch, aligned with the grid, to draw
the kept tokens on. `pixels` needs no weights; a model source (the vision tower and patch merger
of a Qwen-VL checkpoint) plugs in as another entry of `viz.FEATURE_SOURCES`.

The pixel source mimics Qwen-VL's token grid: frames are resized to multiples of 28 pixels
(`smart_resize`), 2 consecutive input frames make one temporal patch, and 14-pixel patches
merged 2x2 give one token per 28x28 pixel cell. A token's features are the raw pixel values
(RGB in [0, 1]) of its cell in both frames of the temporal patch: `D = 2*28*28*3 = 4704`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# Qwen2/2.5/3-VL: 14-pixel patches (Qwen3-VL: 16) merged 2x2, 2 frames per temporal patch
PATCH_SIZE = 14
MERGE_SIZE = 2
CELL = PATCH_SIZE * MERGE_SIZE
TEMPORAL_PATCH = 2
# at most 256 tokens per temporal patch by default (448x448 pixels)
DEFAULT_MAX_PIXELS = 256 * CELL * CELL


@dataclass(frozen=True)
class VisualTokens:
    """One video's visual tokens and what to draw them on.

    Attributes:
        features: float `[T*N, D]`, frame-major, row-major inside a frame (`select`'s input).
        grid: `(T, H, W)`, temporal patches and tokens per column/row; `N = H*W`.
        frames: uint8 `[T, H*cell, W*cell, 3]` RGB, one picture per temporal patch; token
            `(t, y, x)` covers `frames[t, y*cell:(y+1)*cell, x*cell:(x+1)*cell]`.
        frame_numbers: int64 `[T]`, the video frame each picture comes from.
        source: what produced the features, for the legend (e.g. `pixels`).
    """

    features: torch.Tensor
    grid: Tuple[int, int, int]
    frames: np.ndarray
    frame_numbers: np.ndarray
    source: str

    @property
    def cell(self) -> int:
        """Pixels per token side in `frames`."""
        return self.frames.shape[1] // self.grid[1]


def smart_resize(height: int, width: int, factor: int = CELL, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_pixels: int = CELL * CELL) -> Tuple[int, int]:
    """Qwen-VL's resize rule: the size closest to `(height, width)` with both sides multiples of
    `factor` and `min_pixels <= h*w <= max_pixels`, aspect ratio kept as far as possible."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def resize_frames(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 `[F, h, w, 3]` -> uint8 `[F, *size, 3]` (bicubic, antialiased)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def pixel_patch_features(frames: np.ndarray, cell: int = CELL, temporal_patch: int = TEMPORAL_PATCH) -> torch.Tensor:
    """Raw pixel features on a Qwen-like token grid.

    Args:
        frames: uint8 `[F, H*cell, W*cell, 3]`, `F` a multiple of `temporal_patch`.
    Returns:
        float32 `[T*N, D]` with `T = F / temporal_patch`, `N = H*W`, `D = temporal_patch*cell*cell*3`:
        row `t*N + y*W + x` holds the pixels (in [0, 1]) of cell `(y, x)` in frames
        `t*temporal_patch ... (t+1)*temporal_patch - 1`.
    """
    Fn, Hp, Wp, C = frames.shape
    if Fn % temporal_patch or Hp % cell or Wp % cell:
        raise ValueError(f"frames {frames.shape} do not tile into {temporal_patch} x {cell} x {cell} patches")
    T, H, W = Fn // temporal_patch, Hp // cell, Wp // cell
    x = torch.from_numpy(np.ascontiguousarray(frames)).view(T, temporal_patch, H, cell, W, cell, C)
    x = x.permute(0, 2, 4, 1, 3, 5, 6).reshape(T * H * W, temporal_patch * cell * cell * C)
    return x.float().div_(255.0)


def pad_frames(frames: np.ndarray, numbers: np.ndarray, multiple: int = TEMPORAL_PATCH):
    """Pad frames (`[F, ...]`) and their frame numbers (`[F]`) to a multiple of `multiple` by
    repeating the last one, as Qwen-VL's processors do."""
    if len(frames) % multiple:
        pad = multiple - len(frames) % multiple
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        numbers = np.concatenate([numbers, np.repeat(numbers[-1:], pad)])
    return frames, numbers


def tokens_from_frames(frames: np.ndarray, frame_numbers: Optional[np.ndarray] = None,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> VisualTokens:
    """Decoded frames (uint8 `[F, h, w, 3]`) -> `VisualTokens` from raw pixels. An odd number of
    frames is padded by repeating the last one, as Qwen-VL's processors do."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.dtype} {frames.shape}")
    numbers = np.arange(len(frames)) if frame_numbers is None else np.asarray(frame_numbers, dtype=np.int64)
    frames, numbers = pad_frames(frames, numbers)
    frames = resize_frames(frames, smart_resize(frames.shape[1], frames.shape[2], max_pixels=max_pixels))
    T = len(frames) // TEMPORAL_PATCH
    grid = (T, frames.shape[1] // CELL, frames.shape[2] // CELL)
    return VisualTokens(
        features=pixel_patch_features(frames),
        grid=grid,
        frames=frames[::TEMPORAL_PATCH].copy(),
        frame_numbers=numbers[::TEMPORAL_PATCH].copy(),
        source="pixels",
    )


def pixels_source(video: str, max_frames: int, max_pixels: Optional[int] = None,
                  progress: Optional[Callable] = None) -> VisualTokens:
    """The `pixels` feature source (see `viz.FEATURE_SOURCES`): `max_frames` frames sampled
    uniformly from `video`, raw pixel features."""
    from ..video import read_frames

    frames, numbers, _ = read_frames(video, max_frames, progress=progress)
    return tokens_from_frames(frames, numbers, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)

