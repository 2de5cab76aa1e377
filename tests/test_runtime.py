"""The entry point, the launcher and the run report, in process and as small subprocesses."""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import token_compressor as tc
from token_compressor import report, runtime
from token_compressor.models import FAMILIES
from token_compressor.models.patching import is_class_patched, settings_of
from tiny_models import VIDEO, collate, make_sample, tiny_model

ENV_KEYS = ("COMPRESSOR", "R_RATIO", "TOKEN_COMPRESSOR_REPORT", "TOKEN_COMPRESSOR_KERNELS", "EMC_SCREENER",
            "DYCOKE_K", "visionzip_k_neighbors", "HOLITOM_T", "TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED",
            "TOKEN_COMPRESSOR_ALLOW_UNTESTED")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    runtime.uninstall()
    yield
    runtime.uninstall()
    tc.revert()


def batch_for(family):
    return collate([make_sample(family, [(4, 4, 4)], seed=1), make_sample(family, [(2, 4, 4)], seed=2)])


# -- the entry point ---------------------------------------------------------------------------

def test_plugin_patches_from_the_environment_and_registers_no_model(monkeypatch):
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("R_RATIO", "0.5")
    assert runtime.lmms_eval_plugin() == []
    for family in FAMILIES.values():
        cls = family.model_class()
        assert is_class_patched(cls)
        model_settings = settings_of(cls.__new__(cls))
        assert (model_settings.method, model_settings.ratio) == ("vidcom2", 0.5)
    assert report.RECORDER.active
    assert runtime.lmms_eval_plugin() == [] and runtime.installed()  # a second call changes nothing


@pytest.mark.parametrize("env, message", [
    ({"COMPRESSOR": "vidcom2", "R_RATIO": "abc"}, "R_RATIO='abc' is not a number"),
    ({"COMPRESSOR": "vidcomm2"}, "COMPRESSOR='vidcomm2' is not a known compressor"),
    ({"TOKEN_COMPRESSOR_REPORT": "maybe"}, "TOKEN_COMPRESSOR_REPORT='maybe' is not a switch"),
    ({"EMC_SCREENER": "llm"}, "EMC_MODEL=None is not set"),
    ({"COMPRESSOR": "holitom", "HOLITOM_T": "abc"}, "HOLITOM_T='abc' is not a number"),
    ({"COMPRESSOR": "visionzip", "visionzip_k_neighbors": "0"}, "visionzip_k_neighbors='0' is out of range"),
    ({"COMPRESSOR": "dycoke", "DYCOKE_K": "2"}, "DYCOKE_K='2' is out of range"),
    ({"COMPRESSOR": "visionzip", "visionzip_k_neighbors": "0"}, "visionzip_k_neighbors='0' is out of range"),
])
def test_plugin_stops_the_process_on_a_bad_configuration(monkeypatch, capsys, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        runtime.lmms_eval_plugin()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "stopping the run before the first sample" in err and err.count("\n") == 1
    assert not runtime.installed() and not is_class_patched(FAMILIES["qwen2_vl"].model_class())


# filelock 4.3 in effect: every module of filelock loaded, then `filelock._api` made unimportable
PRELOAD_FILELOCK = (
    "import importlib, pkgutil, sys, filelock\n"
    "for m in pkgutil.walk_packages(filelock.__path__, 'filelock.'):\n"
    "    importlib.import_module(m.name)\n"
)
HIDE_FILELOCK_API = PRELOAD_FILELOCK + "sys.modules['filelock._api'] = None\n"


@pytest.mark.parametrize("env", [{}, {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}])
def test_plugin_stops_when_lmms_eval_itself_cannot_run(monkeypatch, capsys, env):
    assert runtime.lmms_eval_problems() == []  # the locked environment evaluates
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    exec(PRELOAD_FILELOCK, {})  # loaded, so that setitem restores it afterwards
    monkeypatch.setitem(sys.modules, "filelock._api", None)
    with pytest.raises(SystemExit) as info:
        runtime.lmms_eval_plugin()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("token_compressor: lmms-eval 0.7.3 cannot run in this environment:")
    assert "filelock<4.3" in err and "stopping the run before the first sample" in err and err.count("\n") == 1
    assert not runtime.installed()


def test_plugin_passes_the_methods_own_variables_to_the_compressor(monkeypatch):
    monkeypatch.setenv("COMPRESSOR", "dycoke")
    monkeypatch.setenv("DYCOKE_K", "0.5")
    monkeypatch.setenv("HOLITOM_T", "abc")  # another method's variable: not read
    assert runtime.lmms_eval_plugin() == []
    for family in FAMILIES.values():
        cls = family.model_class()
        assert settings_of(cls.__new__(cls)).options == (("k", 0.5),)


def test_plugin_never_raises_when_nothing_was_asked(monkeypatch, caplog):
    def broken():
        raise RuntimeError("token_compressor supports transformers >=5.0,<6; found 4.57.0")

    monkeypatch.setattr("token_compressor.models.check_transformers_version", broken)
    monkeypatch.setenv("TOKEN_COMPRESSOR_REPORT", "1")  # measuring a baseline was asked for
    assert runtime.lmms_eval_plugin() == []  # measuring only: a warning, lmms-eval carries on
    assert "run report not installed" in caplog.text and not runtime.installed()
    monkeypatch.setenv("COMPRESSOR", "vidcom2")  # asked for compression: the same failure stops the run
    monkeypatch.setattr("token_compressor.api.check_transformers_version", broken)
    with pytest.raises(SystemExit):
        runtime.lmms_eval_plugin()


def test_report_off_and_no_compressor_patches_nothing(monkeypatch):
    monkeypatch.setenv("TOKEN_COMPRESSOR_REPORT", "off")
    assert runtime.lmms_eval_plugin() == []
    assert not any(is_class_patched(f.model_class()) for f in FAMILIES.values())
    assert not report.RECORDER.active


# -- what the recorder measures ----------------------------------------------------------------

def test_measuring_only_is_bitwise_the_unpatched_model_and_counts_video_tokens(monkeypatch):
    model = tiny_model("qwen2_5_vl")
    batch = batch_for("qwen2_5_vl")
    expected = model.generate(**batch, max_new_tokens=4, do_sample=False)
    monkeypatch.setenv("TOKEN_COMPRESSOR_REPORT", "1")
    runtime.install("test")  # no COMPRESSOR, the report asked for: measure only
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, expected)
    s = report.RECORDER.summary(compressor=None, ratio=None)
    video_tokens = int((batch["input_ids"] == VIDEO).sum())
    assert video_tokens == 4 * 4 * 4 // 4 + 2 * 4 * 4 // 4
    assert (s["samples"], s["generate_calls"], s["compressed_samples"]) == (2, 1, 0)
    assert s["visual_tokens_before"] == s["visual_tokens_after"] == video_tokens
    assert s["eval_paths"] == {"python": 2} and s["model_types"] == {"qwen2_5_vl": 2}
    assert s["LLM_time_s"] > 0 and s["Peak_mem_MB"] is None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compressed_calls_are_recorded_as_last_stats_says(monkeypatch, family):
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    runtime.install("test")
    model = tiny_model(family)
    for seed in (1, 2):
        model.generate(**collate([make_sample(family, [(4, 4, 4)], seed=seed)]), max_new_tokens=2, do_sample=False)
    stats = tc.last_stats(model)
    s = report.RECORDER.summary(compressor="vidcom2", ratio=0.25)
    assert s["samples"] == s["compressed_samples"] == 2 and s["generate_calls"] == 2
    assert s["visual_tokens_before"] == 2 * stats["visual_tokens_before"] == 2 * 16
    assert s["visual_tokens_after"] < s["visual_tokens_before"]
    with report.RECORDER.suspended():  # e.g. the `self` screener's own calls
        model.generate(**collate([make_sample(family, [(4, 4, 4)], seed=3)]), max_new_tokens=2, do_sample=False)
    assert report.RECORDER.summary(compressor="vidcom2", ratio=0.25)["generate_calls"] == 2


# -- merging, the table, the file --------------------------------------------------------------

def rank_summary(rank, before, after, llm, total, peak, scr=None):
    return {"rank": rank, "compressor": "vidcom2", "ratio": 0.25, "samples": 3, "generate_calls": 3,
            "compressed_samples": 3, "visual_tokens_before": before, "visual_tokens_after": after,
            "LLM_time_s": llm, "Total_time_s": total, "Peak_mem_MB": peak, "eval_paths": {"chat": 3},
            "model_types": {"qwen3_vl": 3}, "screening": scr}


def test_merge_sums_counts_and_takes_the_slowest_rank():
    scr = lambda n, kept: {"samples": n, "screened": n - 1, "fallen_back": 1, "cached": 0,  # noqa: E731
                           "by_status": {"succeeded": n - 1, "failed": 1}, "kept_ratio_sum": kept,
                           "kept_ratio_mean": kept / n, "screener": "llm"}
    merged = report.merge([rank_summary(0, 1000, 250, 4.0, 10.0, 900.0, scr(3, 2.0)),
                           rank_summary(1, 600, 160, 3.0, 12.5, 1200.5, scr(2, 1.5))])
    assert (merged["samples"], merged["visual_tokens_before"], merged["visual_tokens_after"]) == (6, 1600, 410)
    assert merged["achieved_ratio"] == pytest.approx(410 / 1600)
    assert merged["LLM_time_s"] == 7.0 and merged["Total_time_s"] == 12.5 and merged["Peak_mem_MB"] == 1200.5
    assert merged["world_size"] == 2 and merged["eval_path"] == "chat" and merged["model_types"] == ["qwen3_vl"]
    assert merged["screening"]["samples"] == 5 and merged["screening"]["fallen_back"] == 2
    assert merged["screening"]["kept_ratio_mean"] == pytest.approx(3.5 / 5)
    table = report.format_table(merged)
    lines = table.splitlines()
    assert lines[0] == "token-compressor run report" and len({len(line) for line in lines[1:]}) == 1
    for label, value in [("visual tokens after", "410"), ("achieved ratio", "0.2562"), ("Peak_mem_MB", "1200.5"),
                         ("fallen back", "2"), ("ranks", "2")]:
        assert any(line.startswith(f"| {label} ") and f"| {value} " in line for line in lines), label


def test_report_goes_next_to_lmms_eval_results(tmp_path):
    assert report.output_path_from_argv(["x", "--output_path", "a/b"]) == "a/b"
    assert report.output_path_from_argv(["x", "--output_path=c"]) == "c"
    assert report.output_path_from_argv(["x", "--model", "m"]) is None
    assert report.report_file(str(tmp_path), 0.0) == str(tmp_path / "token_compressor_report.json")
    results = tmp_path / "model__x" / "20261121_101010_results.json"
    results.parent.mkdir()
    results.write_text("{}")
    assert report.report_file(str(tmp_path), 0.0) == str(tmp_path / "model__x" / "20261121_101010_token_compressor.json")
    # a results file older than the run is not this run's
    assert report.report_file(str(tmp_path), os.path.getmtime(results) + 60).endswith("token_compressor_report.json")


def test_finalize_prints_and_writes_once(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPRESSOR", "uniform")
    runtime.install("test")
    model = tiny_model("qwen2_vl")
    model.generate(**collate([make_sample("qwen2_vl", [(4, 4, 4)], seed=1)]), max_new_tokens=2, do_sample=False)
    out = io.StringIO()
    merged = runtime.finalize(argv=["prog", "--output_path", str(tmp_path)], out=out)
    assert merged["compressor"] == "uniform" and merged["samples"] == 1
    written = json.loads((tmp_path / "token_compressor_report.json").read_text())
    assert written["visual_tokens_after"] == merged["visual_tokens_after"] == 4
    assert written["token_compressor_version"] == tc.__version__
    assert "token-compressor run report" in out.getvalue() and "written to" in out.getvalue()
    assert runtime.finalize(out=io.StringIO()) is None  # once


def test_finalize_warns_when_compression_was_asked_but_nothing_generated(monkeypatch):
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    runtime.install("test")
    out = io.StringIO()
    runtime.finalize(argv=["prog"], out=out)
    assert "COMPRESSOR=vidcom2 was set but no Qwen-VL model generated anything" in out.getvalue()


GATHER_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    torch.distributed.init_process_group("gloo")
    from token_compressor import report, runtime
    from tiny_models import collate, make_sample, tiny_model
    os.environ["COMPRESSOR"] = "vidcom2"
    runtime.install("test")
    rank = torch.distributed.get_rank()
    model = tiny_model("qwen2_vl")
    for seed in range(rank + 1):  # rank 0: one sample, rank 1: two
        model.generate(**collate([make_sample("qwen2_vl", [(4, 4, 4)], seed=seed)]), max_new_tokens=2, do_sample=False)
""")


def test_report_is_merged_over_ranks_on_rank_0(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(GATHER_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script), "--output_path", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("token-compressor run report") == 1  # rank 0 only
    merged = json.loads((tmp_path / "out" / "token_compressor_report.json").read_text())
    assert merged["world_size"] == 2 and merged["samples"] == 3
    assert sorted(r["samples"] for r in merged["per_rank"]) == [1, 2]
    assert merged["visual_tokens_before"] == 3 * 16


# -- the launcher ------------------------------------------------------------------------------

def launch(args, tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    full.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "token_compressor.launch", *args], env=full, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)


def test_launcher_runs_a_script_with_its_arguments_patched(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import sys
        from transformers import Qwen3VLForConditionalGeneration as C
        from token_compressor.models.patching import settings_of
        s = settings_of(C.__new__(C))
        print("ARGV", sys.argv[1:], "NAME", __name__, "SETTINGS", s.method, s.ratio)
    """))
    proc = launch([str(script), "--flag", "x y"], tmp_path, COMPRESSOR="evs", R_RATIO="0.3")
    assert proc.returncode == 0, proc.stderr
    assert "ARGV ['--flag', 'x y'] NAME __main__ SETTINGS evs 0.3" in proc.stdout
    assert "token-compressor run report" in proc.stdout  # printed at exit, with 0 samples
    assert "no Qwen-VL model generated anything" in proc.stdout


def test_launcher_errors_are_one_line_with_status_2(tmp_path):
    bad = launch(["-m", "json.tool", "--help"], tmp_path, COMPRESSOR="vidcom2", R_RATIO="2")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("token_compressor.launch: R_RATIO='2' is out of range")
    missing = launch(["no-such-program-xyz"], tmp_path)
    assert missing.returncode == 2 and "is not a file or a program on PATH" in missing.stderr
    usage = launch([], tmp_path)
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")


# -- never silently uncompressed: the run's model must be one we compress ----------------------

def _wrapper_class():
    """An lmms-eval model wrapper in lmms-eval's own shape: built by `create_from_arg_string`,
    the HF model under `_model`, exposed (unwrapped) as `model`."""
    from lmms_eval.api.model import lmms

    class Wrapper(lmms):
        def __init__(self, kind="qwen2_vl"):
            super().__init__()
            if kind == "qwen2_vl":
                self._model = tiny_model("qwen2_vl")
            else:  # a text-only Qwen2 LM: a model token-compressor does not compress
                from transformers import Qwen2Config, Qwen2ForCausalLM

                self._model = Qwen2ForCausalLM(Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                           num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                                                           bos_token_id=None, eos_token_id=None))

        @property
        def model(self):
            return self._model

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    return Wrapper


def test_an_uncompressible_lmms_eval_model_stops_the_run_with_one_line(monkeypatch, capsys):
    Wrapper = _wrapper_class()
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    assert runtime.lmms_eval_plugin() == []
    assert isinstance(Wrapper.create_from_arg_string("kind=qwen2_vl"), Wrapper)  # a supported model goes on
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        Wrapper.create_from_arg_string("kind=qwen2")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("token_compressor: COMPRESSOR=vidcom2 cannot compress the lmms-eval model "
                             "Wrapper: Qwen2ForCausalLM (model_type 'qwen2'); token_compressor compresses qwen2_vl "
                             "(Qwen2VLForConditionalGeneration), ")
    for family in FAMILIES.values():  # the supported list is support.SUPPORTED_MODEL_TYPES
        assert f"{family.name} ({family.model_class().__name__})" in err[0]
        if family.composite is not None:  # the Omni families: the whole model too
            assert f"and the whole {family.composite.model_class().__name__}" in err[0]
    assert "TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1" in err[0] and "before the first sample" in err[0]
    assert runtime.finalize(argv=[], out=io.StringIO()) is None  # nothing ran: no run report
    runtime.uninstall()  # the guard leaves lmms-eval as it was
    assert Wrapper.create_from_arg_string("kind=qwen2").model.config.model_type == "qwen2"


def test_no_compressor_no_guard(monkeypatch):
    Wrapper = _wrapper_class()
    assert runtime.lmms_eval_plugin() == []  # measuring only: any model may run
    assert Wrapper.create_from_arg_string("kind=qwen2").model.config.model_type == "qwen2"


def test_allowed_uncompressed_run_is_warned_and_counted(monkeypatch, caplog):
    Wrapper = _wrapper_class()
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED", "1")
    assert runtime.lmms_eval_plugin() == []
    with caplog.at_level("WARNING", logger="token_compressor"):
        Wrapper.create_from_arg_string("kind=qwen2")
    assert "this run goes on UNCOMPRESSED" in caplog.text and "Qwen2ForCausalLM" in caplog.text
    out = io.StringIO()
    merged = runtime.finalize(argv=[], out=out)
    assert merged["uncompressed_models"] == ["Wrapper: Qwen2ForCausalLM (model_type 'qwen2')"]
    assert "UNCOMPRESSED models (allowed)" in out.getvalue()


def test_allow_uncompressed_is_validated(monkeypatch):
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    monkeypatch.setenv("TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED", "perhaps")
    with pytest.raises(SystemExit) as stop:  # at the entry point, before any model is built
        runtime.lmms_eval_plugin()
    assert stop.value.code == 2
    with pytest.raises(tc.ConfigError, match="TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED='perhaps' is not a switch"):
        runtime.install("test")


def _finalized(monkeypatch, method, ratio="0.25", **env):
    monkeypatch.setenv("COMPRESSOR", method)
    monkeypatch.setenv("R_RATIO", ratio)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    runtime.install("test")
    model = tiny_model("qwen2_vl")
    model.generate(**collate([make_sample("qwen2_vl", [(8, 8, 8)], seed=1)]), max_new_tokens=2, do_sample=False)
    out = io.StringIO()
    merged = runtime.finalize(argv=["prog"], out=out)
    return merged, out.getvalue()


def test_finalize_warns_when_the_achieved_ratio_is_far_from_r_ratio(monkeypatch):
    merged, text = _finalized(monkeypatch, "dycoke")
    # DyCoke's published budget: about (1 + r)/2 of 8 temporal patches of 16 tokens
    assert merged["achieved_ratio"] - 0.25 > report.RATIO_MARGIN
    line = [l for l in text.splitlines() if "achieved ratio" in l and "WARNING" in l]
    assert len(line) == 1 and "R_RATIO=0.25 by more than 0.05" in line[0] and "DyCoke's published budget" in line[0]


def test_no_ratio_warning_when_the_method_keeps_what_was_asked(monkeypatch):
    merged, text = _finalized(monkeypatch, "uniform")
    assert abs(merged["achieved_ratio"] - 0.25) <= report.RATIO_MARGIN
    assert "WARNING" not in text


def test_ratio_gap_reasons():
    base = {"ratio": 0.25, "compressed_samples": 3}
    assert report.ratio_gap_warning({**base, "compressor": "holitom", "achieved_ratio": 0.8}).count("HoliTom") == 1
    assert "FILL_BUDGET=1" in report.ratio_gap_warning({**base, "compressor": "fastvid", "achieved_ratio": 0.15})
    assert report.ratio_gap_warning({**base, "compressor": "vidcom2", "achieved_ratio": 0.29}) is None
    assert report.ratio_gap_warning({**base, "compressor": "x", "achieved_ratio": 0.5}).endswith("x's own budget rule")


def test_per_sample_kept_counts_are_keyed_by_lmms_eval_doc_ids(monkeypatch):
    """Called from an lmms-eval wrapper (a function of an `lmms_eval.models.chat.*` module whose
    locals hold the chunk's `doc_id` and `task`, as every Qwen wrapper's do), each row of the batch
    is recorded under its document; a plain Python caller records none."""
    monkeypatch.setenv("COMPRESSOR", "vidcom2")
    runtime.install("test")
    model = tiny_model("qwen2_vl")
    batch = collate([make_sample("qwen2_vl", [(4, 4, 4)], seed=1), make_sample("qwen2_vl", [(2, 4, 4)], seed=2)])
    wrapper = {"__name__": "lmms_eval.models.chat.fake_qwen", "model": model, "batch": batch}
    exec("def generate_until():\n"
         "    doc_id, task, split = (7, 3), ('videomme', 'videomme'), ('test', 'test')\n"
         "    return model.generate(**batch, max_new_tokens=2, do_sample=False)\n", wrapper)
    wrapper["generate_until"]()
    stats = tc.last_stats(model)
    model.generate(**batch, max_new_tokens=2, do_sample=False)  # not lmms-eval: no rows
    merged = report.merge([report.RECORDER.summary(compressor="vidcom2", ratio=0.25)])
    expected = [{"task": "videomme", "doc_id": d, "visual_tokens_before": sum(v["before"] for v in row),
                 "visual_tokens_after": sum(v["after"] for v in row)}
                for d, row in zip((7, 3), stats["per_sample"])]
    assert merged["per_sample"] == sorted(expected, key=lambda r: str(r["doc_id"]))
    assert [r["visual_tokens_before"] for r in expected] == [16, 8]
    assert all(r["visual_tokens_after"] < r["visual_tokens_before"] for r in expected)
    assert "per_sample" not in merged["per_rank"][0]


def test_a_run_that_asked_for_nothing_is_left_alone(tmp_path):
    """No COMPRESSOR, no EMC_SCREENER, no TOKEN_COMPRESSOR_REPORT: the program runs unpatched, and
    neither a table, a file nor a line of ours appears (the entry point runs the same `install`)."""
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.path.insert(0, {tests!r})
        from tiny_models import collate, make_sample, tiny_model
        from transformers import Qwen2VLForConditionalGeneration as C
        from token_compressor.models.patching import is_class_patched
        model = tiny_model("qwen2_vl")
        model.generate(**collate([make_sample("qwen2_vl", [(4, 4, 4)])]), max_new_tokens=2, do_sample=False)
        print("PATCHED", is_class_patched(C))
    """).format(tests=str(REPO / "tests")))
    proc = launch([str(script), "--output_path", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "PATCHED False" in proc.stdout
    assert "token-compressor run report" not in proc.stdout and "token_compressor" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
    asked = launch([str(script), "--output_path", str(tmp_path / "out")], tmp_path, TOKEN_COMPRESSOR_REPORT="1")
    assert "token-compressor run report" in asked.stdout  # a baseline measured when asked for
