"""Cache-sized blocks (issue #25): block sizes follow the machine's L2, and where a block ends
changes no selection; HoliTom's merges in memory-bounded groups change no bit."""
import numpy as np
import pytest
import torch

import token_compressor as tc
from golden import CASES, load_case, load_method_case, method_cases
from token_compressor.compressors import holitom as holitom_module
from token_compressor.kernels import machine, torch_scores
from token_compressor.kernels.torch_scores import frame_blocks, vidcom2_scores_torch


@pytest.mark.parametrize("T,N,rows", [(1, 1, 1), (5, 7, 1), (5, 7, 6), (5, 7, 7), (5, 7, 15), (3, 256, 36),
                                      (4, 300, 256), (2, 10, 1000)])
@pytest.mark.parametrize("token_major", [False, True])
def test_frame_blocks_cover_every_row_once(T, N, rows, token_major):
    seen = []
    for f0, f1, i0, i1 in frame_blocks(T, N, rows, token_major=token_major):
        assert 0 <= f0 < f1 <= T and 0 <= i0 < i1 <= N
        assert (f1 - f0) * (i1 - i0) <= max(rows, i1 - i0)  # at most `rows`, or one chunk
        assert f1 - f0 == 1 or (i0, i1) == (0, N)  # contiguous rows: whole frames or one frame's chunk
        seen += [t * N + i for t in range(f0, f1) for i in range(i0, i1)]
    assert sorted(seen) == list(range(T * N))
    back = list(frame_blocks(T, N, rows, reverse=True, token_major=token_major))
    assert back == list(frame_blocks(T, N, rows, token_major=token_major))[::-1]


@pytest.fixture(params=CASES)
def case(request):
    return load_case(request.param)


def test_vidcom2_block_edges_change_no_selection(case, monkeypatch):
    # blocks of whole frames, of one frame, of chunks of a frame: sums are split differently
    # (scores move by ~1e-6, a few fp32 ulps of scores up to 5; test_golden's SCORE_ATOL of 2e-5
    # stays under every case's decision margin), the selection is the golden one
    T, N, D = case["T"], case["N"], case["D"]
    x = case["x32"].view(T, N, D)
    plain = vidcom2_scores_torch(x)
    for rows in (1, 3, N - 1, N, N + 1, 2 * N + 1, 10**6):
        monkeypatch.setattr(torch_scores, "BLOCK_ROWS", max(1, rows))
        got = vidcom2_scores_torch(x)
        for a, b in zip(got, plain):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
        for features in (case["x32"], case["x32"].to(torch.bfloat16)):
            sel = tc.select(features, T, case["ratio"])
            assert np.array_equal(sel.budgets.numpy(), case["ks"]), rows
            assert np.array_equal(sel.keep.numpy(), case["global_idx"]), rows


@pytest.mark.parametrize("name", method_cases("holitom"))
@pytest.mark.parametrize("options", [{}, {"d": 0.5, "positions": "centres"}, {"t": 0.5, "max_window_size": 3, "k": 3}])
def test_holitom_blocks_and_groups_change_no_bit(name, options, monkeypatch):
    z = load_method_case("holitom", name)
    x = z["x32"].view(z["T"], z["N"], z["D"])
    refs = {dt: holitom_module.holitom(x.to(dt), z["ratio"], **options) for dt in (torch.float32, torch.bfloat16)}
    for rows, group_bytes in ((1, 1), (7, 5000), (10**6, 1 << 40)):
        monkeypatch.setattr(holitom_module, "BLOCK_ROWS", rows)
        monkeypatch.setattr(holitom_module, "GROUP_BYTES", group_bytes)  # 1: one set per group
        monkeypatch.setattr(holitom_module, "GROUP_SHARE", 1)
        for dt, (mask, rows_out) in refs.items():
            got = holitom_module.holitom(x.to(dt), z["ratio"], **options)
            assert torch.equal(got[0], mask) and torch.equal(got[1], rows_out), (rows, group_bytes, dt)


def _fake_cache(root, entries):
    for i, (level, kind, size) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")


def test_l2_size_from_sysfs_and_fallback(tmp_path, monkeypatch):
    _fake_cache(tmp_path, [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"), (3, "Unified", "105M")])
    monkeypatch.setattr(machine, "_CACHE_DIR", tmp_path)
    machine.l2_cache_bytes.cache_clear()
    try:
        assert machine.l2_cache_bytes() == 2 << 20
        # two fp32 buffers of 3584 channels in a 2 MiB L2: 73 rows (64-row blocks were faster than
        # 256-row ones on the Xeon where these overflowed it); a 4 MiB L2 holds twice as many
        assert machine.block_rows(4 * 3584, buffers=2) == 73
        (tmp_path / "index2" / "size").write_text("4M\n")
        machine.l2_cache_bytes.cache_clear()
        assert machine.block_rows(4 * 3584, buffers=2) == 146
        # a 1 MiB L2 would give 36 rows: the floor against per-operation costs keeps 73
        (tmp_path / "index2" / "size").write_text("1024K\n")
        machine.l2_cache_bytes.cache_clear()
        assert machine.block_rows(4 * 3584, buffers=2) == 73
        monkeypatch.setattr(machine, "_CACHE_DIR", tmp_path / "absent")
        monkeypatch.setattr(machine.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
        machine.l2_cache_bytes.cache_clear()
        assert machine.l2_cache_bytes() == machine.FALLBACK_L2_BYTES
        assert machine.block_rows(1) == machine.MAX_BLOCK_ROWS
        assert machine.block_rows(1 << 30) == machine.MIN_BLOCK_ROWS
    finally:
        machine.l2_cache_bytes.cache_clear()
