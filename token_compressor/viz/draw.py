"""Pictures, drawn with Pillow from plain arrays: no model, no video decoding, no selection here.

`draw_kept`       the sampled frames with kept tokens highlighted, per-frame budgets, a legend
`draw_retention`  share of a planted event's tokens kept vs retention ratio, one line per method

Both return the image and the geometry they used (`KeptLayout`, boxes in pixels), so that callers
and tests can find every panel, cell and bar.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID_INK = (200, 200, 200)
KEPT_OUTLINE = (255, 190, 0)  # amber frame around every kept token
DIM_TO = (16, 16, 16)  # dropped tokens are blended towards this ...
DIM_KEEP = 0.3  # ... keeping this share of their own colour
BAR = (66, 120, 220)
REFERENCE = (220, 50, 50)  # uniform budget line / "keep r of everything" diagonal
METHOD_COLOURS = [(66, 120, 220), (220, 120, 30), (40, 160, 80), (150, 80, 190), (120, 120, 120), (200, 60, 120),
                  (30, 170, 170), (170, 140, 20)]

MARGIN = 16
GAP = 12
CHART_HEIGHT = 150
MAX_WIDTH = 1100  # panels wrap to rows beyond this width


def dim(pixels: np.ndarray) -> np.ndarray:
    """The dropped-token look: uint8 RGB -> uint8 RGB blended towards `DIM_TO`."""
    out = pixels.astype(np.float32) * DIM_KEEP + np.asarray(DIM_TO, np.float32) * (1 - DIM_KEEP)
    return out.round().astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _text_height(draw, font) -> int:
    x0, y0, x1, y1 = draw.textbbox((0, 0), "Ag", font=font)
    return y1 - y0 + 4


@dataclass
class KeptLayout:
    """Where `draw_kept` put things. Token `(t, y, x)` is the square of side `cell` at
    `(panels[t][0] + x*cell, panels[t][1] + y*cell)`."""

    size: Tuple[int, int]
    cell: int
    legend: Box = (0, 0, 0, 0)
    panels: List[Box] = field(default_factory=list)
    captions: List[Box] = field(default_factory=list)
    chart_area: Box = (0, 0, 0, 0)  # title, axes and bars
    chart: Optional[Box] = None  # the axes' inside, set when drawn
    bars: List[Box] = field(default_factory=list)  # one per frame, set when drawn

    def cell_box(self, t: int, y: int, x: int) -> Box:
        px, py = self.panels[t][:2]
        return px + x * self.cell, py + y * self.cell, px + (x + 1) * self.cell, py + (y + 1) * self.cell


def panel_cell(grid_h: int, grid_w: int) -> int:
    """Side in pixels of one token in a frame panel: panels about 256 px wide, cells 8-56 px."""
    return max(8, min(56, 256 // max(grid_h, grid_w)))


def kept_layout(grid: Tuple[int, int, int], legend_lines: int) -> KeptLayout:
    """Where `draw_kept` puts the legend, the frame panels and the chart for a token grid
    `(T, H, W)` and that many legend lines (geometry only, nothing drawn)."""
    from PIL import Image, ImageDraw

    T, H, W = grid
    cell = panel_cell(H, W)
    pw, ph = W * cell, H * cell
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h, small_h = _text_height(probe, _font(15)), _text_height(probe, _font(12))
    cols = max(1, min(T, (MAX_WIDTH - 2 * MARGIN + GAP) // (pw + GAP)))
    rows = -(-T // cols)
    width = max(2 * MARGIN + cols * pw + (cols - 1) * GAP, 520)
    legend_bottom = MARGIN + (legend_lines + 1) * line_h + 6  # text lines + the colour key
    panel_top = legend_bottom + GAP
    chart_top = panel_top + rows * (small_h + ph + GAP) + GAP
    layout = KeptLayout(size=(width, chart_top + CHART_HEIGHT + small_h + MARGIN), cell=cell,
                        legend=(MARGIN, MARGIN, width - MARGIN, legend_bottom),
                        chart_area=(MARGIN, chart_top, width - MARGIN, chart_top + CHART_HEIGHT))
    for t in range(T):
        r, c = divmod(t, cols)
        x0, y0 = MARGIN + c * (pw + GAP), panel_top + r * (small_h + ph + GAP)
        layout.captions.append((x0, y0, x0 + pw, y0 + small_h))
        layout.panels.append((x0, y0 + small_h, x0 + pw, y0 + small_h + ph))
    return layout


def draw_kept(
    frames: np.ndarray,
    mask: np.ndarray,
    legend: Sequence[str],
    frame_labels: Optional[Sequence[str]] = None,
    uniform_budget: Optional[float] = None,
):
    """Draw which tokens were kept.

    Args:
        frames: uint8 `[T, Hp, Wp, 3]`, one picture per temporal patch; token `(t, y, x)` covers
            the `Hp/H x Wp/W` block at `(y, x)`.
        mask: bool `[T, H, W]`, True where a token was kept.
        legend: lines printed above the panels (method, ratio, counts ...).
        frame_labels: one caption per panel (default `t=<t>`); the budget `k_t/N` is appended.
        uniform_budget: tokens per frame of an even split (`r*N`), drawn as a line on the bar chart.
    Returns:
        `(PIL.Image.Image, KeptLayout)`.
    """
    from PIL import Image, ImageDraw

    frames = np.asarray(frames)
    mask = np.asarray(mask, dtype=bool)
    T, H, W = mask.shape
    if frames.ndim != 4 or frames.shape[0] != T or frames.shape[1] % H or frames.shape[2] % W:
        raise ValueError(f"frames {frames.shape} do not match the token grid {mask.shape}")
    layout = kept_layout((T, H, W), len(legend))
    cell, (width, height) = layout.cell, layout.size
    font, small = _font(15), _font(12)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    line_h = _text_height(draw, font)
    pw, ph = W * cell, H * cell

    # legend: the caller's lines, then a key for the two looks
    y = MARGIN
    for text in legend:
        draw.text((MARGIN, y), text, fill=INK, font=font)
        y += line_h
    sw = line_h - 6
    draw.rectangle([MARGIN, y + 1, MARGIN + sw, y + 1 + sw], fill=(150, 150, 150), outline=KEPT_OUTLINE, width=2)
    draw.text((MARGIN + sw + 6, y), "kept token", fill=INK, font=font)
    kx = MARGIN + sw + 6 + int(draw.textlength("kept token", font=font)) + 24
    draw.rectangle([kx, y + 1, kx + sw, y + 1 + sw], fill=tuple(dim(np.array([150, 150, 150], np.uint8))))
    draw.text((kx + sw + 6, y), "dropped token (dimmed)", fill=INK, font=font)

    budgets = mask.reshape(T, -1).sum(1)
    labels = list(frame_labels) if frame_labels is not None else [f"t={t}" for t in range(T)]
    for t in range(T):
        x0, py = layout.panels[t][:2]
        draw.text((x0, layout.captions[t][1]), f"{labels[t]}  kept {budgets[t]}/{H * W}", fill=INK, font=small)
        # the panel is exactly W*cell x H*cell, so every token owns a `cell`-pixel square of it
        picture = np.asarray(Image.fromarray(frames[t]).resize((pw, ph), Image.BICUBIC))
        cells = np.repeat(np.repeat(mask[t], cell, 0), cell, 1)[..., None]
        image.paste(Image.fromarray(np.where(cells, picture, dim(picture))), (x0, py))
        for yy, xx in zip(*np.nonzero(mask[t])):
            cx, cy = x0 + xx * cell, py + yy * cell
            draw.rectangle([cx, cy, cx + cell - 1, cy + cell - 1], outline=KEPT_OUTLINE, width=1 if cell < 16 else 2)

    _draw_budget_chart(draw, layout, budgets, H * W, uniform_budget, layout.chart_area, small)
    return image, layout


def _draw_budget_chart(draw, layout, budgets, tokens_per_frame, uniform_budget, box, font):
    x0, y0, x1, y1 = box
    title_h = _text_height(draw, font)
    title = f"tokens kept per frame (bars), out of {tokens_per_frame}"
    draw.text((x0, y0), title, fill=INK, font=font)
    if uniform_budget is not None:
        draw.text((x0 + draw.textlength(title + "    ", font=font), y0),
                  f"dashed: even split r*N = {uniform_budget:g}", fill=REFERENCE, font=font)
    axis_x = x0 + int(draw.textlength(str(tokens_per_frame), font=font)) + 6
    top, bottom = y0 + title_h + 4, y1
    layout.chart = (axis_x, top, x1, bottom)
    draw.line([axis_x, top, axis_x, bottom], fill=INK)
    draw.line([axis_x, bottom, x1, bottom], fill=INK)
    draw.text((x0, top - 6), str(tokens_per_frame), fill=INK, font=font)
    draw.text((x0, bottom - 12), "0", fill=INK, font=font)
    T = len(budgets)
    slot = (x1 - axis_x - 4) / T
    scale = (bottom - top) / tokens_per_frame
    label_every = max(1, int(np.ceil(T / ((x1 - axis_x) / 28))))
    for t, k in enumerate(budgets.tolist()):
        bx0 = int(axis_x + 4 + t * slot + slot * 0.15)
        bx1 = max(bx0 + 1, int(axis_x + 4 + (t + 1) * slot - slot * 0.15))
        by0 = bottom - int(round(k * scale))
        if k > 0:
            draw.rectangle([bx0, by0, bx1 - 1, bottom - 1], fill=BAR)
        layout.bars.append((bx0, by0, bx1, bottom))
        if t % label_every == 0:
            draw.text(((bx0 + bx1) // 2 - 4, bottom + 2), str(t), fill=INK, font=font)
    if uniform_budget is not None:
        uy = bottom - int(round(uniform_budget * scale))
        for sx in range(axis_x + 1, x1, 10):
            draw.line([sx, uy, min(sx + 5, x1), uy], fill=REFERENCE, width=2)


def draw_retention(
    shares: Dict[str, Sequence[float]],
    ratios: Sequence[float],
    title: str,
    size: Tuple[int, int] = (900, 460),
):
    """Line plot: share of the event's tokens kept (y, 0..1) against the retention ratio (x).

    Args:
        shares: method -> one share per ratio, in [0, 1].
        ratios: the x values, in (0, 1].
        title: printed above the plot.
    Returns:
        `(PIL.Image.Image, plot_box)`; `plot_box` maps x in [0, 1] and y in [0, 1] linearly.
    """
    from PIL import Image, ImageDraw

    W, H = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    line_h = _text_height(draw, font)
    y = MARGIN
    for line in title.splitlines():
        draw.text((MARGIN, y), line, fill=INK, font=font)
        y += line_h
    draw.text((MARGIN, y + 4), "share of the event's tokens kept", fill=INK, font=small)
    left, top, right, bottom = 64, y + 28, W - 330, H - 56
    x_max = 1.0 if max(ratios) > 0.6 else 0.6

    def px(x, y):
        return left + (right - left) * x / x_max, bottom - (bottom - top) * y

    for v in np.linspace(0, 1, 6):
        gx, gy = px(0, v)
        draw.line([left, gy, right, gy], fill=GRID_INK)
        draw.text((left - 36, gy - 7), f"{v:.1f}", fill=INK, font=small)
    for r in ratios:
        gx, _ = px(r, 0)
        draw.line([gx, top, gx, bottom], fill=GRID_INK)
        draw.text((gx - 12, bottom + 6), f"{r:g}", fill=INK, font=small)
    draw.rectangle([left, top, right, bottom], outline=INK)
    # the x value is the ratio ASKED: DyCoke, FastVID and HoliTom keep other shares of the video
    # (their legend entries say which), so "share kept" would misplace them
    draw.text(((left + right) // 2 - 120, bottom + 26), "ratio r asked (R_RATIO); legend: share kept if other",
              fill=INK, font=small)
    # the share any method keeps of a video-wide average token: r itself
    for i in range(0, 40, 2):
        a, b = px(x_max * i / 40, x_max * i / 40), px(x_max * (i + 1) / 40, x_max * (i + 1) / 40)
        if a[1] >= top:
            draw.line([a, b], fill=REFERENCE, width=2)
    legend_y = top
    entries = list(shares.items()) + [("y = r", None)]
    for i, (name, ys) in enumerate(entries):
        colour = REFERENCE if ys is None else METHOD_COLOURS[i % len(METHOD_COLOURS)]
        if ys is not None:
            # earlier methods drawn wider, so that methods with equal shares all stay visible
            wide = 2 * (len(shares) - 1 - i)
            points = [px(r, s) for r, s in zip(ratios, ys)]
            draw.line(points, fill=colour, width=3 + wide)
            for x, y in points:
                rad = 4 + wide // 2 + 1
                draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=colour)
        draw.line([right + 16, legend_y + 8, right + 40, legend_y + 8], fill=colour, width=3)
        draw.text((right + 46, legend_y), name, fill=INK, font=font)
        legend_y += 22
    return image, (left, top, right, bottom, x_max)
