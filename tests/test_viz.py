"""`visualize`: pixel features on a Qwen-like grid, drawing, and the command end to end."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from token_compressor import cli, select
from token_compressor.video import read_frames, uniform_indices, write_video
from token_compressor.viz import draw
from token_compressor.viz.features import CELL, pixel_patch_features, smart_resize, tokens_from_frames

GREY = 110


def spot_pixels():
    """The planted spot's 28x28 cell: white with 4-pixel orange stripes.

    Colour AND texture on purpose: a flat-colour spot on a flat grey background is a parallel
    pixel vector (white = grey scaled), so its cosine scores tie with the background's up to
    rounding, and which token is "most distinctive" is then whatever the BLAS kernel's rounding
    picks (it differed between MKL's AVX-512 and AVX2 paths). This spot's VidCom² score is
    ~0.11 below every grey token's (cosine units, fp64; tests/test_viz.py::
    test_planted_spot_wins_by_a_real_margin), about 10**6 times fp32 rounding.
    """
    cell = np.full((CELL, CELL, 3), 255, np.uint8)
    for row in range(0, CELL, 8):
        cell[row:row + 4] = (255, 150, 60)
    return cell


def planted_video(num_frames=8, size=112, spot=(1, 2), event_patch=2):
    """Grey frames with a striped white/orange 28x28 spot at token `spot`; temporal patch
    `event_patch` (input frames 2p, 2p+1) is dark blue instead: a short event."""
    frames = np.full((num_frames, size, size, 3), GREY, np.uint8)
    frames[2 * event_patch: 2 * event_patch + 2] = (20, 30, 160)
    y, x = spot
    frames[:, y * CELL:(y + 1) * CELL, x * CELL:(x + 1) * CELL] = spot_pixels()
    return frames


def test_uniform_indices_cover_first_and_last():
    assert uniform_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]


def test_read_frames_samples_uniformly(tmp_path):
    # frame i has grey level 20*i: decoded frames show which ones were sampled
    frames = np.stack([np.full((64, 64, 3), 20 * i, np.uint8) for i in range(12)])
    path = str(tmp_path / "ramp.mp4")
    write_video(path, frames)
    got, numbers, total = read_frames(path, 4)
    assert total == 12 and numbers.tolist() == [0, 4, 7, 11]
    assert got.shape == (4, 64, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.reshape(4, -1).mean(1) - 20 * numbers).max() < 4


def test_smart_resize_multiples_of_28_within_budget():
    assert smart_resize(112, 112) == (112, 112)
    h, w = smart_resize(720, 1280, max_pixels=256 * 28 * 28)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 256 * 28 * 28 and abs(w / h - 1280 / 720) < 0.15
    assert smart_resize(10, 10) == (28, 28)


def test_pixel_features_are_the_cells_pixels_in_both_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)  # T=2, grid 2x3
    x = pixel_patch_features(frames)
    assert x.shape == (2 * 6, 2 * 28 * 28 * 3)
    t, y, xx = 1, 1, 2
    row = x[t * 6 + y * 3 + xx].view(2, 28, 28, 3)
    expected = torch.from_numpy(frames[2 * t: 2 * t + 2, y * 28:(y + 1) * 28, xx * 28:(xx + 1) * 28]).float() / 255
    assert torch.equal(row, expected)


def test_tokens_from_frames_pads_odd_count_and_keeps_first_of_each_pair():
    frames = planted_video(num_frames=7)
    vt = tokens_from_frames(frames, np.arange(0, 14, 2))
    assert vt.grid == (4, 4, 4) and vt.features.shape == (64, 4704)
    assert vt.frames.shape == (4, 112, 112, 3) and vt.frame_numbers.tolist() == [0, 4, 8, 12]
    assert vt.cell == 28


def _centre(image, box):
    x0, y0, x1, y1 = box
    return np.asarray(image)[(y0 + y1) // 2, (x0 + x1) // 2]


def test_draw_kept_layout_and_pixels():
    T, H, W = 3, 4, 4
    frames = np.full((T, 112, 112, 3), 200, np.uint8)
    mask = np.zeros((T, H, W), bool)
    mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 3, 3] = True
    mask[2] = True
    image, layout = draw.draw_kept(frames, mask, ["line one", "line two"], uniform_budget=4)
    assert image.size == layout.size
    assert len(layout.panels) == T and len(layout.bars) == T
    assert layout.panels == draw.kept_layout((T, H, W), 2).panels
    kept_colour, dropped_colour = np.array([200] * 3), draw.dim(np.array([200] * 3, np.uint8))
    for t in range(T):
        for y in range(H):
            for x in range(W):
                box = layout.cell_box(t, y, x)
                want = kept_colour if mask[t, y, x] else dropped_colour
                assert np.array_equal(_centre(image, box), want), (t, y, x)
    # kept tokens are framed in amber
    x0, y0, _, _ = layout.cell_box(0, 1, 2)
    assert tuple(np.asarray(image)[y0, x0 + layout.cell // 2]) == draw.KEPT_OUTLINE
    # bar heights are proportional to the budgets 1, 2, 16 (out of 16)
    heights = [b[3] - b[1] for b in layout.bars]
    assert heights[2] == layout.chart[3] - layout.chart[1]
    assert abs(heights[1] - 2 * heights[0]) <= 1 and heights[0] > 0
    px = np.asarray(image)
    bx0, by0, bx1, by1 = layout.bars[2]
    column = px[by0:by1, (bx0 + bx1) // 2]
    assert (column == draw.BAR).all(axis=1).sum() >= heights[2] - 4  # the dashed r*N line crosses it


def test_draw_kept_wraps_many_frames_into_rows():
    T, H, W = 12, 4, 4
    _, layout = draw.draw_kept(np.zeros((T, 112, 112, 3), np.uint8), np.ones((T, H, W), bool), ["x"])
    tops = sorted({p[1] for p in layout.panels})
    assert len(tops) == 3 and layout.size[0] <= draw.MAX_WIDTH
    assert all(p[2] <= layout.size[0] for p in layout.panels)


def _cosine_scores_fp64(features, grid):
    """VidCom²'s token score (cosine to the video centre + cosine to the frame centre; lower is
    more distinctive) in float64, straight from the definition: an oracle independent of the
    fp32 kernels and of the BLAS code path."""
    T, H, W = grid
    x = features.double().view(T, H * W, -1)
    unit = torch.nn.functional.normalize(x, dim=-1)
    video = torch.nn.functional.normalize(x.reshape(-1, x.shape[-1]).mean(0), dim=0)
    frame = torch.nn.functional.normalize(x.mean(1), dim=-1)
    return unit @ video + (unit * frame[:, None]).sum(-1)


def test_planted_spot_wins_by_a_real_margin(tmp_path):
    """The visualize test below relies on the spot being the most distinctive token of every
    frame. It must win by far more than fp32 rounding, or the kept token depends on the CPU's
    BLAS code path (a flat white spot on grey tied exactly: parallel pixel vectors)."""
    video = str(tmp_path / "clip.mp4")
    write_video(video, planted_video())
    frames, numbers, _ = read_frames(video, 8)
    tokens = tokens_from_frames(frames, numbers)
    scores = _cosine_scores_fp64(tokens.features, tokens.grid)
    W = tokens.grid[2]
    spot = 1 * W + 2
    for t in range(tokens.grid[0]):
        others = torch.cat([scores[t, :spot], scores[t, spot + 1:]])
        assert others.min() - scores[t, spot] > 0.05, t  # fp32 rounding here is ~1e-6

    # the old planted input (flat white spot) ties with the grey background up to rounding
    flat = np.full((2, 112, 112, 3), GREY, np.uint8)
    flat[:, CELL:2 * CELL, 2 * CELL:3 * CELL] = 255
    tied = _cosine_scores_fp64(pixel_patch_features(flat), (1, 4, 4))[0]
    assert (tied - tied[spot]).abs().max() < 1e-12


def test_visualize_command_draws_the_selection(tmp_path, capsys):
    video, out = str(tmp_path / "clip.mp4"), str(tmp_path / "kept.png")
    write_video(video, planted_video())
    rc = cli.main(["visualize", "--video", video, "--features", "pixels", "-o", out,
                   "--compressor", "vidcom2", "--ratio", "0.125", "--max-frames", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    budgets = [int(b) for b in re.search(r"budgets ([\d ]+) of 16", printed).group(1).split()]
    assert len(budgets) == 4
    # the event patch (t=2) is the most unique frame: VidCom² gives it the biggest budget
    assert budgets[2] == max(budgets) and budgets[2] > budgets[0]

    image = Image.open(out).convert("RGB")
    layout = draw.kept_layout((4, 4, 4), 2)
    assert image.size == layout.size
    for t in range(4):
        # the striped spot is the most distinctive token of every frame: kept, shown undimmed
        # (a dimmed cell's brightest channel is at most 255*0.3 + 16*0.7 < 88)
        assert _centre(image, layout.cell_box(t, 1, 2)).max() > 230
        # every other cell is either kept (its own colour) or dimmed; count the dimmed ones
        dimmed = 0
        for y in range(4):
            for x in range(4):
                c = _centre(image, layout.cell_box(t, y, x)).astype(int)
                dimmed += int(c.max() < 90)
        assert dimmed == 16 - budgets[t], t

