"""`make bench` runs: every benchmark's entry point at toy sizes, through the same functions as the
recorded runs (the numbers are not judged here; that a benchmark runs, checks its own exactness,
prints its machine line, shuffles its rounds and loads the authors' code from a path is)."""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import textwrap

import pytest
import torch

import token_compressor
from token_compressor.bench import authors, kernels, machine, prefill, scaling, select_bench, timing
from tiny_models import tiny_model

TOY = ["--frames", "4", "--tokens", "16", "--dim", "8"]
MACHINE_LINE = re.compile(r"^machine: .+, \d+ cores, torch \d+ threads, read [\d.]+ GB/s .*; "
                          r"load [\d./]+ before, [\d./]+ after; torch \S+, transformers \S+$", re.M)


@pytest.fixture(autouse=True)
def _no_authors_from_env(monkeypatch):
    monkeypatch.delenv(authors.ENV, raising=False)


# -- timing: shuffled interleaved rounds ---------------------------------------------------------

def test_rounds_are_shuffled_interleaved_with_the_warmup_outside():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcdef"}
    times = timing.interleaved_times(fns, repeats=7, warmup=1, seed=3)
    assert {k: len(v) for k, v in times.items()} == {k: 7 for k in fns}
    assert calls[:6] == list("abcdef"), "one untimed warm-up call of each, before the rounds"
    rounds = [calls[6 + 6 * i: 12 + 6 * i] for i in range(7)]
    assert all(sorted(r) == list("abcdef") for r in rounds), "every round calls every cell once"
    assert len({tuple(r) for r in rounds}) > 1, "the order changes from round to round"
    assert rounds == timing.round_orders(list("abcdef"), 7, seed=3), "seeded: a run can be repeated"


def test_device_times_shuffle_too():
    calls = []
    fns = {name: (lambda x, name=name: calls.append(name)) for name in "abcd"}
    samples = timing.device_times(fns, [None], repeats=6, warmup=1, seed=1)
    assert all(len(v) == 6 for v in samples.values())
    rounds = [tuple(calls[4 + 4 * i: 8 + 4 * i]) for i in range(6)]
    assert len(set(rounds)) > 1 and all(sorted(r) == list("abcd") for r in rounds)


def test_spreads():
    assert timing.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
    # median over median, and the range of the per-round ratios (each round saw one machine state)
    assert timing.ratio_spread([10.0, 20.0, 30.0], [5.0, 5.0, 10.0]) == {"median": 4.0, "min": 2.0, "max": 4.0}
    assert timing.fmt_spread({"median": 2.5, "min": 1.0, "max": 10.0}) == "2.5 [1.0-10.0]"


# -- the machine line ------------------------------------------------------------------------------

def test_cpu_model_names_family_and_matrix_extensions(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                    "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: ignored\n")
    assert machine.cpu_model(str(info)) == "Intel(R) Xeon(R) Platinum 8488C (family 6 model 143; AVX-512, AMX-BF16)"
    assert machine.cpu_model(str(tmp_path / "absent")), "falls back to platform's name"


def test_machine_line_has_cpu_cores_threads_bandwidth_load_and_versions():
    with machine.Measured() as m:
        pass
    line = m.line()
    assert MACHINE_LINE.match(line), line
    assert f"{machine.cores()} cores" in line and f"torch {torch.get_num_threads()} threads" in line
    assert torch.__version__ in line and m.info["read_GBps"] > 0
    assert m.as_dict()["load_before"] == m.before and len(m.before) == 3
    assert machine.read_bandwidth(2**20, 3) > 0


# -- selection -------------------------------------------------------------------------------------

def test_select_bench_main_runs_every_method_and_is_exact(tmp_path, capsys):
    out = tmp_path / "rows.json"
    select_bench.main(TOY + ["--repeats", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["method"] for r in rows} == set(select_bench.NAMES)
    assert {(r["method"], r["dtype"], r["threads"]) for r in rows} == {
        (m, d, n) for m in select_bench.NAMES for d in ("float32", "bfloat16") for n in select_bench.thread_counts()}
    for r in rows:
        assert r["T"] == 4 and r["N"] == 16 and r["D"] == 8 and 0 < r["kept"] < 4 * 16 and r["rounds"] == 2
        assert 0 < r["ours_ms"]["min"] <= r["ours_ms"]["median"] <= r["ours_ms"]["max"]
        assert 0 < r["peer_ms"]["min"] <= r["peer_ms"]["median"] <= r["peer_ms"]["max"]
        assert r["speedup"]["median"] > 0 and r["peer"].startswith("our rewrite of ")
        if r["method"] in ("fastvid", "holitom"):  # merging: kept rows and features as their fp32 loops
            assert r["check"].startswith("same keep as fp32 loops, features within")
            assert float(r["check"].rsplit(" ", 1)[1]) <= 1e-5
        elif r["method"] in select_bench.BASELINES:
            assert "fp64 loop" in r["check"]
        else:
            assert r["check"] == "exact: yes" and r["exact"] is True
    assert result["machine"]["cores"] == machine.cores()
    text = capsys.readouterr().out
    assert "OUR straightforward formulations" in text and "--authors-repo" in text
    assert "shuffled interleaved rounds" in text and MACHINE_LINE.search(text)


# -- the authors' code from a path -------------------------------------------------------------------

FAKE_VIDCOM2 = '''
import torch
CALLS = []

def select_low_var_channels(x):
    CALLS.append(x.shape)
    return x

def compute_gaussian_scores(x, tpf):
    s = x.float().norm(dim=-1).view(-1, tpf)
    return s, -s

def compute_scales(scores, base):
    return torch.full_like(scores, base)

def select_outlier_indices(scores, scales, tpf):
    return [torch.arange(max(1, int(round(float(k) * tpf)))) for k in scales]

def _map_linear_offset(indices, tpf):
    return torch.cat([i + t * tpf for t, i in enumerate(indices)])
'''
FAKE_CORE = '''
import torch
CALLS = []

def compress_features(flat, grid_thw, merge, ratio):
    CALLS.append(tuple(grid_thw.tolist()))
    keep = torch.arange(0, flat.shape[0], 2)
    return flat[keep], keep
'''


def plant_repo(root, broken=None):
    """A tiny stand-in for the authors' checkout: their layout, toy functions that count their calls,
    a top-level package __init__ that must never run and a models/ module that must never be imported."""
    pkg = root / "token_compressor"
    (pkg / "vidcom2" / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the top-level package must not be imported')\n")
    (pkg / "vidcom2" / "__init__.py").write_text("from .vidcom2 import select_low_var_channels\n")
    (pkg / "vidcom2" / "vidcom2.py").write_text(FAKE_VIDCOM2)
    (pkg / "vidcom2" / "models" / "__init__.py").write_text("raise ImportError('models must not be imported')\n")
    for m in ("dycoke", "visionzip", "fastvid", "holitom"):
        (pkg / m).mkdir()
        (pkg / m / "__init__.py").write_text("from .core import compress_features\n")
        (pkg / m / "core.py").write_text(FAKE_CORE)
    if broken == "syntax":
        (pkg / "fastvid" / "core.py").write_text("def compress_features(:\n")
    elif broken == "missing function":
        (pkg / "vidcom2" / "vidcom2.py").write_text(FAKE_VIDCOM2.replace("def compute_scales", "def other_name"))
    elif broken == "missing file":
        os.remove(pkg / "holitom" / "core.py")
    elif broken == "absolute import":
        (pkg / "dycoke" / "core.py").write_text("from token_compressor.dycoke import x\n" + FAKE_CORE)
    return str(root)


def test_authors_functions_are_loaded_from_the_path_and_timed_as_the_peers(tmp_path, capsys, monkeypatch):
    ours_before = sys.modules["token_compressor"]
    code = authors.load(plant_repo(tmp_path / "repo"))
    assert set(code.functions) == set(authors.METHODS) and code.label == "authors' code (commit unknown)"
    # the loaded module really is the planted file, under a private name: our package is untouched
    planted = str(tmp_path / "repo" / "token_compressor" / "vidcom2" / "vidcom2.py")
    fake = next(m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == planted)
    assert fake.__name__.startswith("_tc_authors_") and fake.__name__.endswith(".vidcom2.vidcom2")
    assert sys.modules["token_compressor"] is ours_before and token_compressor.select
    keep, features = code.functions["dycoke"](torch.randn(4 * 16, 8), 4, 0.25)
    assert keep.tolist() == list(range(0, 64, 2)) and features.shape == (32, 8)

    monkeypatch.setenv(authors.ENV, str(tmp_path / "repo"))  # the environment variable is enough
    select_bench.main(TOY + ["--repeats", "2", "--dtypes", "float32", "--methods", "vidcom2", "dycoke", "evs"])
    text = capsys.readouterr().out
    assert "peers: the authors' functions loaded from " + str(tmp_path / "repo") in text and MACHINE_LINE.search(text)
    rows = [ln for ln in text.splitlines() if ln.startswith(("vidcom2 ", "dycoke ", "evs "))]
    assert len(rows) == 3 * len(select_bench.thread_counts())
    for ln in rows:
        if ln.startswith("evs"):
            assert "our rewrite of vLLM's EVS" in ln
        else:  # the toy functions keep other rows than ours: the check column says how many agree
            assert "authors' code (commit unknown)" in ln and "overlap with authors'" in ln
    # every timed call went to the planted code: the check, then a warm-up + 2 rounds per thread count
    assert len(fake.CALLS) == 1 + (1 + 2) * len(select_bench.thread_counts())


@pytest.mark.parametrize("broken, message", [
    ("syntax", r"importing the authors' .*fastvid/core\.py failed: SyntaxError"),
    ("missing function", r"vidcom2/vidcom2\.py has no function compute_scales"),
    ("missing file", r"has no token_compressor/holitom/core\.py; expected a checkout of xuyang-liu16/VidCom2 at a85d485"),
    ("absolute import", r"dycoke/core\.py imports `token_compressor` by its absolute name"),
])
def test_a_broken_checkout_is_refused_naming_the_file(tmp_path, broken, message):
    with pytest.raises(authors.AuthorsRepoError, match=message):
        authors.load(plant_repo(tmp_path / "repo", broken))


def test_a_bad_path_is_refused_clearly(tmp_path, capsys):
    with pytest.raises(authors.AuthorsRepoError, match=r"TOKEN_COMPRESSOR_AUTHORS_REPO / --authors-repo: .*nowhere.* "
                                                         r"is not a directory"):
        authors.load(str(tmp_path / "nowhere"))
    with pytest.raises(authors.AuthorsRepoError, match="has no token_compressor/ folder"):
        authors.load(str(tmp_path))
    with pytest.raises(SystemExit, match=r"^error: TOKEN_COMPRESSOR_AUTHORS_REPO / --authors-repo: .*nowhere"):
        select_bench.main(TOY + ["--authors-repo", str(tmp_path / "nowhere")])
    assert "Selection" not in capsys.readouterr().out, "refused before anything is timed"


# -- kernels, prefill ------------------------------------------------------------------------------

def test_kernels_bench_main_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "k.json"
    kernels.main(["--frames", "2", "--tokens", "16", "--dim", "8", "--repeats", "2", "--device", "cpu",
                  "--json", str(out)])
    result = json.loads(out.read_text())
    assert [r["T"] for r in result["rows"]] == [2]
    for r in result["rows"]:
        assert r["torch_ms"] == r["torch_spread_ms"]["median"] > 0 and "shuffled" in r["timing"]
        # the compiled CPU path is timed beside it and must select the same tokens; EVS's one pass too
        assert r["numba_ms"] == r["numba_spread_ms"]["median"] > 0 and r["numba_selects_as_torch"] is True
        assert r["evs_ms"] > 0 and r["evs_GBps"] >= 0 and "loop_over_evs" not in r  # 0.0 GB/s at toy sizes
    assert MACHINE_LINE.search(capsys.readouterr().out)


def test_prefill_measures_every_method_and_compresses():
    model = tiny_model("qwen2_5_vl")
    inputs = prefill.video_inputs(model.config, 8, 56, 56)
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    rows = prefill.measure(model, inputs, ratios=(0.25, 0.5), repeats=2, warmup=1, baselines=prefill.BASELINES)
    by = {r["config"]: r for r in rows}
    assert list(by) == ["full", "vidcom2 r=0.25", "vidcom2 r=0.5"] + [f"{m} r=0.25" for m in prefill.BASELINES]
    assert by["full"]["visual_tokens"] == n_video and by["full"]["compressor_ms"] == 0
    for name, r in by.items():
        assert r["rounds"] == 2 and r["prefill_spread_ms"]["min"] <= r["prefill_ms"] <= r["prefill_spread_ms"]["max"]
        if name == "full":
            continue
        assert r["method"] == name.split()[0]
        # every method really dropped tokens and shortened the KV cache
        assert 0 < r["visual_tokens"] < n_video and r["kv_vs_full"] < 1, name
        assert r["compressor_ms"] > 0 and 0 < r["compressor_share"] < 1
    prefill.print_table(rows, "cpu", "bfloat16")
    # the model is left as it was: it answers exactly as a fresh copy of it
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, tiny_model("qwen2_5_vl")(**inputs).logits)


def test_prefill_compressor_share_comes_from_the_timed_calls(monkeypatch):
    """The share is the median over the timed calls of (that call's compressor time / that call's
    prefill time): the warm-up's statistics are left out and nothing is divided by another statistic."""
    model = tiny_model("qwen2_5_vl")
    inputs = prefill.video_inputs(model.config, 8, 56, 56)
    planted = [100.0, 400.0, 200.0]  # the timed calls' prefill times, in round order
    seen = {}
    real_last_stats = prefill.tc.last_stats

    def fake_timed(fns, repeats, warmup, device):
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples = {name: [] for name in fns}
        for i in range(repeats):
            for name, fn in fns.items():
                fn()
                stats = real_last_stats(model)
                seen.setdefault(name, []).append(stats["compress_ms"] if name != "full" else None)
                samples[name].append(planted[i])
        return samples

    monkeypatch.setattr(prefill, "_timed", fake_timed)
    rows = prefill.measure(model, inputs, ratios=(0.25,), repeats=3, warmup=1, baselines=("dycoke",))
    for r in rows:
        assert r["prefill_ms"] == 200.0 and r["prefill_spread_ms"] == {"median": 200.0, "min": 100.0, "max": 400.0}
        if r["config"] == "full":
            continue
        calls = seen[r["config"]]
        assert r["compressor_share"] == round(statistics.median(c / t for c, t in zip(calls, planted)), 4)
        assert r["compressor_ms"] == round(statistics.median(calls), 3)


def test_prefill_batch_of_very_different_videos_shrinks(capsys):
    model = tiny_model("qwen2_5_vl")
    inputs = prefill.batch_inputs(model.config, [(16, 56, 56), (4, 56, 56)])
    L = inputs["input_ids"].shape[1]
    assert inputs["attention_mask"][1, 0] == 0 and bool(inputs["attention_mask"][:, -1].all()), "left padded"
    with machine.Measured() as measured:
        rows = prefill.measure_batch(model, inputs, ratio=0.25, repeats=2, warmup=1)
    full, comp = rows
    assert full["config"] == "full" and full["width"] == L and full["kv_vs_full"] == 1
    assert comp["config"] == "vidcom2 r=0.25"
    # the compressed batch is as wide as its longest compressed row, and its KV cache that narrow
    assert comp["width"] == max(comp["row_lens"]) < L
    assert comp["kv_vs_full"] == round(comp["width"] / L, 3)
    assert full["prefill_ms"] > 0 and comp["prefill_ms"] > 0 and comp["speedup_spread"]["median"] == comp["speedup"]
    prefill.print_batch_table(rows, "cpu", "bfloat16", measured)
    out = capsys.readouterr().out
    assert MACHINE_LINE.search(out) and "vidcom2 r=0.25" in out and "shuffled interleaved rounds" in out
    with torch.no_grad():  # the model is left unpatched
        assert torch.equal(model(**inputs).logits, tiny_model("qwen2_5_vl")(**inputs).logits)


# -- scaling ----------------------------------------------------------------------------------------

def test_scaling_cells_run_in_fresh_processes(tmp_path, capsys):
    out = tmp_path / "s.json"
    scaling.main(["--frames", "2", "4", "--tokens", "16", "--dim", "32", "--repeats", "2", "--methods", "vidcom2", "evs",
                  "--json", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["method"], r["T"]) for r in rows] == [("vidcom2", 2), ("vidcom2", 4), ("evs", 2), ("evs", 4)]
    for r in rows:
        assert "error" not in r and r["time_ms"]["median"] > 0 and r["peak_above_input_MiB"] is not None
        assert r["input_MiB"] == round(r["T"] * 16 * 32 * 2 / 2**20, 1)
    text = capsys.readouterr().out
    assert MACHINE_LINE.search(text) and "one fresh process per cell" in text and "time ~ T^" in text


def test_scaling_peak_sees_what_a_call_allocates(monkeypatch):
    """The peak above the input is the resident memory the timed call adds: a call that writes a
    64 MiB buffer shows >= 64 MiB, a call that allocates nothing shows far less."""
    def grab(x, T, r):
        return torch.ones(2**24)  # 64 MiB, written

    monkeypatch.setattr(scaling, "_cell_fn", lambda method, peer, repo: grab)
    big = scaling.measure_cell("vidcom2", 4, 16, 32, repeats=1)
    monkeypatch.setattr(scaling, "_cell_fn", lambda method, peer, repo: (lambda x, T, r: x[:1]))
    small = scaling.measure_cell("vidcom2", 4, 16, 32, repeats=1)
    assert big["peak_above_input_MiB"] >= 63.5 > 8 > small["peak_above_input_MiB"], (big, small)


def test_scaling_reports_a_failed_cell_and_the_exponent(capsys):
    row = scaling.run_cell_subprocess({"method": "no-such-method", "peer": "ours", "T": 2, "N": 4, "D": 8,
                                       "dtype": "bfloat16", "ratio": 0.25, "repeats": 1, "authors_repo": None})
    assert "exit status 1" in row["error"] and "no-such-method" in row["error"]
    ok = [{"T": t, "time_ms": {"median": 3.0 * t}} for t in (16, 64, 256)]
    assert scaling.exponent(ok) == 1.0
    assert scaling.exponent([{"T": t, "time_ms": {"median": t * t}} for t in (16, 64)]) == 2.0
    assert scaling.exponent(ok[:1] + [row]) is None


def test_scaling_video_is_built_in_blocks_with_the_benchmark_statistics():
    x = scaling.video(8, 16, 64, torch.bfloat16, block=3)
    assert x.shape == (8 * 16, 64) and x.dtype == torch.bfloat16 and bool(torch.isfinite(x.float()).all())
    # VidCom²'s large-mean, low-variance channels are there (the ones it keeps)
    mean, var = x.float().mean(0).abs(), x.float().var(0)
    assert ((mean > 3) & (var < 0.1)).sum() >= 64 // 16


# -- make bench's wiring -----------------------------------------------------------------------------

def test_make_bench_passes_the_authors_checkout_and_scaling_sizes(monkeypatch):
    from token_compressor import bench

    calls = {}
    for name in ("select_bench", "kernels", "prefill", "scaling"):
        monkeypatch.setattr(getattr(bench, name), "main", lambda argv=None, name=name: calls.setdefault(name, argv))
    bench.main(bench.MAKE_BENCH_ARGS + ["--authors-repo", "/x", "--scaling-frames", "16", "1024"])
    assert calls["select_bench"] == ["--repeats", "7", "--authors-repo", "/x"]
    assert calls["scaling"] == ["--frames", "16", "1024", "--authors-repo", "/x"]
    assert calls["kernels"] == [] and calls["prefill"] == []
    assert int(bench.MAKE_BENCH_ARGS[1]) >= select_bench.MIN_ROUNDS >= 7 and prefill.MIN_ROUNDS >= 5
