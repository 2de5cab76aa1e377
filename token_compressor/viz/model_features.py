"""The `model` feature source: a Qwen-VL checkpoint's own visual tokens (vision tower + patch
merger, through the transformers seam `get_video_features`), i.e. exactly what the model
patches compress, aligned with the frames they come from.

Frames are decoded and resized here (to multiples of the model's token cell, patch x merge
pixels) and handed to the checkpoint's video processor with `do_resize=False`, so token
`(t, y, x)` covers cell `(y, x)` of picture `t`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .features import VisualTokens, pad_frames, resize_frames, smart_resize

DEFAULT_TOKENS_PER_PATCH = 256  # the default max_pixels: at most 256 tokens per temporal patch


def model_source(video: str, max_frames: int, max_pixels: Optional[int] = None,
                 progress: Optional[Callable] = None, *, model: str, device: str = "auto",
                 loaded=None) -> VisualTokens:
    """`max_frames` frames sampled uniformly from `video`, encoded by the model at `model` (a
    folder or hub id; `loaded=(model, processor)` reuses a loaded pair)."""
    from ..models.loading import load_pretrained
    from ..video import read_frames

    frames, numbers, _ = read_frames(video, max_frames, progress=progress)  # a bad video fails before loading
    qwen, processor = loaded if loaded is not None else load_pretrained(model, device)
    vision = qwen.config.vision_config
    merge, temporal = int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    cell = int(vision.patch_size) * merge

    frames, numbers = pad_frames(frames, numbers, temporal)
    size = smart_resize(frames.shape[1], frames.shape[2], factor=cell,
                        max_pixels=max_pixels or DEFAULT_TOKENS_PER_PATCH * cell * cell, min_pixels=cell * cell)
    frames = resize_frames(frames, size)

    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [F, 3, H, W] uint8
    inputs = processor.video_processor(videos=[clip], do_resize=False, do_sample_frames=False, return_tensors="pt")
    grid = inputs["video_grid_thw"][0].tolist()
    device_ = qwen.device
    with torch.inference_mode():
        out = qwen.model.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"].to(device_, qwen.dtype),
            video_grid_thw=inputs["video_grid_thw"].to(device_))
    features = out.pooler_output[0].float().cpu()
    T, H, W = grid[0], grid[1] // merge, grid[2] // merge
    if features.shape[0] != T * H * W or (H * cell, W * cell) != tuple(size):
        raise RuntimeError(f"the model returned {features.shape[0]} tokens for a {T}x{H}x{W} grid of {size} frames")
    return VisualTokens(features=features, grid=(T, H, W), frames=frames[::temporal].copy(),
                        frame_numbers=numbers[::temporal].copy(),
                        source=f"model {qwen.config.model_type} ({model})")
