"""`bench --retention`: synthetic event videos, event shares, table and plot."""
import re

import numpy as np
import torch
from PIL import Image

from token_compressor import cli
from token_compressor.bench import retention
from token_compressor.viz import draw
from token_compressor.viz.features import tokens_from_frames


def test_event_video_plants_a_short_unlike_event():
    v = retention.event_video(num_frames=8, size=56, event_start=4, event_length=2, seed=3)
    assert v.frames.shape == (8, 56, 56, 3) and v.event.tolist() == [False] * 4 + [True] * 2 + [False] * 2
    f = v.frames.astype(float)
    step = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))
    # entering and leaving the event are by far the biggest changes
    assert set(np.argsort(step)[-2:]) == {3, 5} and step[[3, 5]].min() > 5 * step[[0, 1, 2, 6]].max()
    assert np.array_equal(v.frames, retention.event_video(8, 56, 4, 2, seed=3).frames)


def test_event_share():
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert retention.event_share(mask, torch.tensor([False, True, False])) == 0.75
    assert retention.event_share(mask, torch.tensor([True, True, False])) == 0.5


def test_budgets_buy_event_tokens():
    rows = retention.run(ratios=(0.25, 0.5), methods=("vidcom2", "random", "uniform"), videos=2,
                         num_frames=16, size=112, event_length=2)
    cell = {(r["method"], r["ratio"]): r for r in rows}
    assert len(rows) == 6
    for r in (0.25, 0.5):
        # even budgets keep exactly round(r*N)/N of every frame, the event included
        assert cell["random", r]["event_share"] == cell["uniform", r]["event_share"] == round(r * 16) / 16
        # VidCom² gives the most unique frame (the event) a bigger budget
        assert cell["vidcom2", r]["event_share"] > r + 0.1
        assert abs(cell["vidcom2", r]["kept_fraction"] - r) < 0.05
    table = retention.format_table(rows)
    assert re.search(r"^vidcom2\s+\d\.\d{3} \(0\.\d{3}\)\s+\d\.\d{3}", table, re.M) and "r = 0.25" in table


def test_plot_puts_each_method_where_its_share_is():
    shares = {"a": [0.2, 0.9], "b": [0.1, 0.4]}
    image, (left, top, right, bottom, x_max) = draw.draw_retention(shares, [0.25, 0.5], "title")
    px = np.asarray(image)
    for i, (name, ys) in enumerate(shares.items()):
        for r, s in zip([0.25, 0.5], ys):
            x = round(left + (right - left) * r / x_max)
            y = round(bottom - (bottom - top) * s)
            assert tuple(px[y, x]) == draw.METHOD_COLOURS[i], (name, r)


def test_bench_retention_command(tmp_path, capsys):
    out = tmp_path / "retention.png"
    assert cli.main(["bench", "--retention", "--videos", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for method in retention.METHODS:
        assert re.search(rf"^{method}\s+(\d\.\d{{3}} \(\d\.\d{{3}}\)\s*){{3}}$", text, re.M), method
    image = Image.open(out).convert("RGB")
    assert image.size == (720, 460)
    colours = {tuple(c) for c in np.asarray(image).reshape(-1, 3)}
    assert all(c in colours for c in draw.METHOD_COLOURS[: len(retention.METHODS)])
