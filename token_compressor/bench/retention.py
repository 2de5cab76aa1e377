"""What frame budgets buy: the share of a short planted event that each compressor keeps.

Synthetic videos (no weights, no files): a smooth textured scene panning slowly, with sensor
noise, and for a few frames a different scene (the "event", e.g. a cut-away or a flash). Tokens
are raw pixel features on Qwen-VL's grid (`viz.features`: one token per 28x28 cell of 2 frames).
For each compressor and retention ratio r we report the share of the event's tokens kept. A
method that spreads tokens evenly keeps about r of the event, like of everything else; one that
gives unusual frames bigger budgets keeps more.

    token-compressor bench --retention [-o retention.png]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..selection import select
from ..viz.features import CELL, TEMPORAL_PATCH, tokens_from_frames

RATIOS = (0.1, 0.25, 0.5)
METHODS = ("vidcom2", "uniform", "evs", "random", "dycoke", "visionzip", "fastvid", "holitom")


@dataclass(frozen=True)
class EventVideo:
    """frames: uint8 `[F, H, W, 3]`; event: bool `[F]`, True on the planted event's frames."""

    frames: np.ndarray
    event: np.ndarray


def _smooth_field(gen: torch.Generator, channels: int, height: int, width: int, detail: int) -> torch.Tensor:
    """A smooth random texture `[channels, height, width]` in about [-1, 1]."""
    low = torch.randn(1, channels, detail, detail, generator=gen)
    return F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(-2, 2) / 2


def event_video(num_frames: int = 32, size: int = 224, event_start: int = 12, event_length: int = 4,
                seed: int = 0, noise: float = 4.0) -> EventVideo:
    """A synthetic video with a planted short event.

    The background is a smooth texture panning one pixel per frame plus Gaussian noise (std
    `noise` in 0-255 units); frames `event_start ... event_start + event_length - 1` show a
    different, more saturated texture. Deterministic in `seed`.
    """
    if not 0 <= event_start and event_start + event_length <= num_frames and event_length >= 1:
        raise ValueError(f"event [{event_start}, {event_start + event_length}) outside {num_frames} frames")
    gen = torch.Generator().manual_seed(seed)
    scene = _smooth_field(gen, 3, size, size + num_frames, detail=6)
    palette = torch.rand(3, 1, 1, generator=gen) * 0.5 + 0.25
    other = _smooth_field(gen, 3, size, size, detail=4)
    other_palette = torch.rand(3, 1, 1, generator=gen)
    frames = []
    for f in range(num_frames):
        if event_start <= f < event_start + event_length:
            img = other_palette + 0.45 * other
        else:
            img = palette + 0.25 * scene[:, :, f : f + size]
        img = img * 255 + noise * torch.randn(3, size, size, generator=gen)
        frames.append(img.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0))
    event = np.zeros(num_frames, dtype=bool)
    event[event_start : event_start + event_length] = True
    return EventVideo(torch.stack(frames).numpy(), event)


def event_share(keep_mask: torch.Tensor, event_patches: torch.Tensor) -> float:
    """Share of the event's tokens kept. keep_mask: bool `[T, N]`; event_patches: bool `[T]`."""
    return float(keep_mask[event_patches].float().mean())


def run(ratios: Sequence[float] = RATIOS, methods: Sequence[str] = METHODS, videos: int = 5,
        num_frames: int = 32, size: int = 224, event_length: int = 4,
        progress: Optional[Callable] = None) -> List[dict]:
    """The retention study. Video `i` plants its event at a different place (always whole temporal
    patches). Returns one row per (method, ratio): mean, min and max event share over the videos,
    and the mean share of all tokens kept."""
    if event_length % TEMPORAL_PATCH or num_frames % TEMPORAL_PATCH:
        raise ValueError(f"num_frames and event_length must be multiples of {TEMPORAL_PATCH}")
    if size % CELL:
        raise ValueError(f"size must be a multiple of {CELL}")
    slots = (num_frames - event_length) // TEMPORAL_PATCH + 1
    shares: Dict[Tuple[str, float], List[float]] = {}
    kept: Dict[Tuple[str, float], List[float]] = {}
    work = [(i, m) for i in range(videos) for m in methods]
    if progress is not None:
        work = progress(work, desc="retention", unit="run")
    tokens = {}
    for i, method in work:
        if i not in tokens:
            # spread the event over the video, never at the very start (where EVS keeps everything)
            start = TEMPORAL_PATCH * (1 + (i * 7 + 3) % max(1, slots - 1)) if slots > 1 else 0
            video = event_video(num_frames, size, start, event_length, seed=i)
            tokens = {i: (tokens_from_frames(video.frames), torch.from_numpy(video.event[::TEMPORAL_PATCH].copy()))}
        vt, event = tokens[i]
        T, H, W = vt.grid
        for r in ratios:
            sel = select(vt.features, T, r, method)
            mask = sel.mask().view(T, H * W)
            shares.setdefault((method, r), []).append(event_share(mask, event))
            kept.setdefault((method, r), []).append(sel.kept_fraction)
    return [
        {
            "method": m, "ratio": r,
            "event_share": float(np.mean(shares[m, r])),
            "event_share_min": float(np.min(shares[m, r])),
            "event_share_max": float(np.max(shares[m, r])),
            "kept_fraction": float(np.mean(kept[m, r])),
            "videos": videos,
        }
        for m in methods for r in ratios
    ]


def describe(videos: int = 5, num_frames: int = 32, size: int = 224, event_length: int = 4) -> str:
    T, N = num_frames // TEMPORAL_PATCH, (size // CELL) ** 2
    return (f"{videos} synthetic videos, {num_frames} frames of {size}x{size} = {T} temporal patches x {N} tokens,\n"
            f"event: {event_length} frames ({event_length // TEMPORAL_PATCH} patches) unlike the rest; raw pixel features")


def format_table(rows: List[dict]) -> str:
    """Methods down, ratios across: mean event share (and the overall kept share in brackets)."""
    ratios = sorted({r["ratio"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["ratio"]): r for r in rows}
    lines = ["share of the event's tokens kept (share of all tokens kept)",
             f"{'method':<10}" + "".join(f"{'r = ' + format(r, 'g'):>18}" for r in ratios)]
    for m in methods:
        lines.append(f"{m:<10}" + "".join(
            f"{cell[m, r]['event_share']:>11.3f} ({cell[m, r]['kept_fraction']:.3f})" for r in ratios))
    return "\n".join(lines)


KEPT_MARGIN = 0.05  # a method whose share of all tokens kept differs from r by more is labelled so


def legend_names(rows: List[dict]) -> Dict[str, str]:
    """method -> its legend entry: the name, plus the shares of all tokens it really keeps when
    they differ from the asked r by more than KEPT_MARGIN at some ratio (the plot's x is r asked)."""
    names = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r["ratio"], r["kept_fraction"]) for r in rows if r["method"] == m)
        if any(abs(kept - r) > KEPT_MARGIN for r, kept in mine):
            names[m] = f"{m} (keeps {'/'.join(format(k, '.2f') for _, k in mine)})"
        else:
            names[m] = m
    return names


def plot(rows: List[dict], title: str):
    """The table as a picture (PIL image): one line per method, event share against the ratio
    asked; methods that keep another share of all tokens say which in the legend."""
    from ..viz.draw import draw_retention

    ratios = sorted({r["ratio"] for r in rows})
    names = legend_names(rows)
    cell = {(r["method"], r["ratio"]): r["event_share"] for r in rows}
    image, _ = draw_retention({names[m]: [cell[m, r] for r in ratios] for m in names}, ratios, title)
    return image
