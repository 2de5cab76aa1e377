"""Never silently uncompressed, end to end with the real lmms-eval from the registry, offline:
with COMPRESSOR set, a run whose model token-compressor cannot compress stops before the first
sample with one line and status 2, through the entry point and through the launcher, unless
TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1 (then it runs, warned, and the run report lists the model).

The model: stock lmms-eval's `llava_hf` wrapper (`--force_simple`: its chat path hands the
LLaVA-OneVision image processor an empty image list, which fails before any model call) on a
tiny random LLaVA-OneVision checkpoint saved here.
"""
import pytest

import lmms_eval_harness as H
from tiny_checkpoint import make_mp4, save_llava_onevision_checkpoint
from token_compressor.models import FAMILIES

ARGS = "device=cpu,device_map=cpu,max_frames_num=4"
STOP = ("token_compressor: COMPRESSOR=vidcom2 cannot compress the lmms-eval model LlavaHf: "
        "LlavaOnevisionForConditionalGeneration (model_type 'llava_onevision'); token_compressor compresses ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval_unsupported")
    ckpt = save_llava_onevision_checkpoint(root / "llava_onevision")
    docs = [{"id": 0, "video": str(make_mp4(root / "clip0.mp4", frames=8)), "question": "What moves?",
             "answer": "a square"}]
    task = H.make_task(root / "task", docs)

    def command(output, launcher=False):
        return H.lmms_eval_command("llava_hf", ckpt, task, root / output, force_simple=True, launcher=launcher,
                                   model_args=ARGS, accelerate=False)

    compress = {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}
    jobs = {
        "entry_point": (command("out_entry"), compress),
        "launcher": (command("out_launcher", launcher=True), compress),
        "allowed": (command("out_allowed"), {**compress, "TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED": "1"}),
    }
    jobs = {name: (cmd, H.clean_env(env, root)) for name, (cmd, env) in jobs.items()}
    return {"root": root, "done": H.run_many(jobs, root, timeout=900)}


def _one_stop_line(proc):
    """The refusal is one line; beside it token_compressor says only its one announcement of what
    the run patched (`token_compressor: lmms-eval: vidcom2 at r=0.25 ...`, printed when the plugin
    is installed, before any model is built), and nothing raises a traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("token_compressor")]
    stops = [line for line in lines if line.startswith("token_compressor: COMPRESSOR=")]
    announcements = [line for line in lines if line not in stops]
    assert len(stops) == 1, proc.stderr[-3000:]
    assert len(announcements) <= 1 and all(" at r=0.25 " in a for a in announcements), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return stops[0]


@pytest.mark.parametrize("name", ["entry_point", "launcher"])
def test_an_unsupported_model_stops_the_run_before_the_first_sample(runs, name):
    proc = runs["done"][name]
    assert proc.returncode == 2, f"{name}: status {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    line = _one_stop_line(proc)
    assert line.startswith(STOP), line
    for family in FAMILIES.values():  # what is supported: support.SUPPORTED_MODEL_TYPES
        assert f"{family.name} ({family.model_class().__name__})" in line
    assert line.endswith("(set TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1 to run it uncompressed; "
                         "stopping the run before the first sample)")
    # before the first sample: no sample answered, no results, no run report
    assert "Model Responding" not in proc.stderr
    assert not (runs["root"] / f"out_{'entry' if name == 'entry_point' else 'launcher'}").exists()
    assert "token-compressor run report" not in proc.stdout


def test_allowed_uncompressed_run_goes_on_warned_and_counted(runs):
    proc = runs["done"]["allowed"]
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1: this run goes on UNCOMPRESSED" in proc.stderr
    rep = H.read_report(runs["root"] / "out_allowed")
    assert rep["uncompressed_models"] == ["LlavaHf: LlavaOnevisionForConditionalGeneration (model_type 'llava_onevision')"]
    assert rep["compressor"] == "vidcom2" and rep["compressed_samples"] == 0
    assert "UNCOMPRESSED models (allowed)" in proc.stdout
    results = H.results_of(runs["root"] / "out_allowed")
    assert "tiny_video_qa" in results["results"]  # the sample was answered, uncompressed
