"""End to end with the real lmms-eval from the registry, unmodified, offline.

Every run is a subprocess: `accelerate launch --cpu --num_processes 1 -m lmms_eval` (or through
`-m token_compressor.launch`) on tiny random checkpoints saved here, real mp4 files made here and
a local task. The runs start together in one module fixture (3 at a time) to keep the suite's
time in check; each test then reads its run's exit status, output and report.

Expected token counts: 2 clips of 16 frames (4 fps, 112x112); the wrappers sample 8 frames
(`max_num_frames=8`), i.e. 4 temporal patches. Qwen2/2.5-VL (patch 14, 2x2 merge): 112x112 ->
4x4 = 16 tokens per temporal patch, 64 per clip, 128 in all. Qwen3-VL (patch 16): the frames
are resized to 96x96 (multiples of 32 under max_pixels=12544) -> 3x3 = 9 tokens, 36 per clip, 72.
VidCom² keeps sum_t round(r * (1 + p_t - mean p) * N) tokens per clip: r*N*T up to 1/2 token of
rounding per temporal patch, so |after - r*before| <= 0.5 * 4 * 2 = 4 over the two clips.
"""
import json
import os

import pytest

import lmms_eval_harness as H
from screening_helpers import FakeOpenAI, reply
from test_runtime import HIDE_FILELOCK_API


BEFORE = {"qwen2_vl": 128, "qwen2_5_vl": 128, "qwen3_vl": 72}
ROUNDING = 0.5 * 4 * 2


def planner(body, n):
    """Keep seconds 1-3 of clip 0 with a rewritten question; a malformed reply for clip 1."""
    asked = json.dumps(body["messages"])
    if "clip 0" in asked:
        return 200, reply(json.dumps({"decision": "end", "timestamps": [[1, 3]],
                                      "revised_question": "Which square moves?"})), 0
    return 200, reply("I cannot answer in JSON, sorry."), 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval")
    world = H.make_world(root, ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
    ck, task = world["checkpoints"], world["task_dir"]
    compress = {"COMPRESSOR": "vidcom2", "R_RATIO": "0.25"}
    with FakeOpenAI(planner) as server:
        emc = {"EMC_SCREENER": "llm", "EMC_BASE_URL": server.base_url, "EMC_MODEL": "planner",
               "EMC_CACHE_DIR": str(root / "emc_cache"), "EMC_TIMEOUT_S": "20", "EMC_MAX_RETRIES": "0"}
        jobs = {
            "qwen2_vl": (H.lmms_eval_command("qwen2_vl", ck["qwen2_vl"], task, root / "out_qwen2_vl"), compress),
            "qwen2_5_vl": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_qwen2_5_vl"), compress),
            "qwen3_vl": (H.lmms_eval_command("qwen3_vl", ck["qwen3_vl"], task, root / "out_qwen3_vl"), compress),
            "baseline": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_baseline"),
                         {"TOKEN_COMPRESSOR_REPORT": "1"}),
            "launcher_simple": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_launcher",
                                                    force_simple=True, launcher=True),
                                {"COMPRESSOR": "vidcom2", "R_RATIO": "0.5"}),
            "invalid": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_invalid"),
                        {"COMPRESSOR": "vidcom2", "R_RATIO": "abc"}),
            "screening": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_screening"),
                          {**compress, **emc}),
            # a merging compressor, with one of its authors' variables, through stock lmms-eval
            "visionzip": (H.lmms_eval_command("qwen3_vl", ck["qwen3_vl"], task, root / "out_visionzip"),
                          {"COMPRESSOR": "visionzip", "R_RATIO": "0.5", "visionzip_k_neighbors": "3"}),
            # the other three of the authors' baselines, each on another family and path, two of them
            # with our quirk corrections switched on by their variables
            "dycoke": (H.lmms_eval_command("qwen3_vl", ck["qwen3_vl"], task, root / "out_dycoke"),
                       {"COMPRESSOR": "dycoke", "R_RATIO": "0.5"}),
            "fastvid": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_fastvid"),
                        {"COMPRESSOR": "fastvid", "R_RATIO": "0.5", "fastvid_DySeg_c": "4",
                         "TOKEN_COMPRESSOR_FASTVID_FILL_BUDGET": "1"}),
            "holitom": (H.lmms_eval_command("qwen2_vl", ck["qwen2_vl"], task, root / "out_holitom"),
                        {"COMPRESSOR": "holitom", "R_RATIO": "0.5", "HOLITOM_T": "0.7",
                         "TOKEN_COMPRESSOR_HOLITOM_POSITIONS": "centres"}),
            "invalid_method_variable": (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_invalid_dycoke"),
                                        {"COMPRESSOR": "dycoke", "DYCOKE_K": "2"}),
        }
        jobs = {name: (cmd, H.clean_env(env, root)) for name, (cmd, env) in jobs.items()}
        # lmms-eval 0.7.3 beside a filelock without `filelock._api` (filelock >= 4.3): the
        # sitecustomize hides that module in every process of the run, as that release does
        hide = root / "hide_filelock_api"
        hide.mkdir()
        (hide / "sitecustomize.py").write_text(HIDE_FILELOCK_API)
        broken_env = H.clean_env(compress, root)
        broken_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hide), broken_env.get("PYTHONPATH")) if p)
        jobs["lmms_eval_broken"] = (H.lmms_eval_command("qwen2_5_vl", ck["qwen2_5_vl"], task, root / "out_broken"),
                                    broken_env)
        done = H.run_many(jobs, root, timeout=900)  # 13 runs, 3 at a time
        planner_requests = len(server.planner_requests())
    return {"root": root, "done": done, "planner_requests": planner_requests}


def finished(runs, name):
    proc = runs["done"][name]
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("family, path", [("qwen2_vl", "simple"), ("qwen2_5_vl", "chat"), ("qwen3_vl", "chat")])
def test_stock_lmms_eval_runs_compressed(runs, family, path):
    proc = finished(runs, family)
    rep = H.read_report(runs["root"] / f"out_{family}")
    assert rep["compressor"] == "vidcom2" and rep["ratio"] == 0.25
    assert rep["eval_path"] == path and rep["model_types"] == [family]
    assert rep["samples"] == rep["compressed_samples"] == 2 and rep["world_size"] == 1
    # per sample, keyed by lmms-eval's own doc ids
    assert [(r["task"], r["doc_id"]) for r in rep["per_sample"]] == [(H.TASK, 0), (H.TASK, 1)]
    assert sum(r["visual_tokens_after"] for r in rep["per_sample"]) == rep["visual_tokens_after"]
    assert sum(r["visual_tokens_before"] for r in rep["per_sample"]) == rep["visual_tokens_before"]
    assert rep["visual_tokens_before"] == BEFORE[family]
    after = rep["visual_tokens_after"]
    assert abs(after - 0.25 * BEFORE[family]) <= ROUNDING and after < BEFORE[family]
    assert rep["achieved_ratio"] == pytest.approx(after / BEFORE[family])
    assert rep["LLM_time_s"] > 0 and rep["Total_time_s"] >= rep["LLM_time_s"] * 0.99
    assert rep["Peak_mem_MB"] is None  # CPU run: no CUDA call, no figure
    # the table is printed once, on stdout, with the same figures
    assert proc.stdout.count("token-compressor run report") == 1
    assert f"| visual tokens after  | {after}" in proc.stdout
    results = H.results_of(runs["root"] / f"out_{family}")
    assert "tiny_video_qa" in results["results"]


def test_run_without_compressor_reports_no_reduction(runs):
    finished(runs, "baseline")
    rep = H.read_report(runs["root"] / "out_baseline")
    assert rep["compressor"] is None and rep["compressed_samples"] == 0 and rep["samples"] == 2
    # the measuring wrapper counts the prompt's video tokens: the same count the compressed run saw
    assert rep["visual_tokens_before"] == rep["visual_tokens_after"] == BEFORE["qwen2_5_vl"]
    assert rep["achieved_ratio"] == 1.0 and rep["screening"] is None


def test_launcher_under_accelerate_with_the_simple_path(runs):
    proc = finished(runs, "launcher_simple")
    rep = H.read_report(runs["root"] / "out_launcher")
    assert rep["eval_path"] == "simple" and rep["ratio"] == 0.5 and rep["compressed_samples"] == 2
    assert abs(rep["visual_tokens_after"] - 0.5 * 128) <= ROUNDING
    # the entry point also ran inside the launched lmms-eval: installed once, one report
    assert proc.stdout.count("token-compressor run report") == 1


def test_invalid_configuration_stops_the_run_before_the_first_sample(runs):
    proc = runs["done"]["invalid"]
    assert proc.returncode != 0
    assert "R_RATIO='abc' is not a number" in proc.stderr and "stopping the run" in proc.stderr
    assert "Model Responding" not in proc.stderr + proc.stdout
    assert not (runs["root"] / "out_invalid").exists()


def test_lmms_eval_that_cannot_run_here_stops_before_the_first_sample(runs):
    proc = runs["done"]["lmms_eval_broken"]
    assert proc.returncode != 0
    assert "lmms-eval 0.7.3 cannot run in this environment" in proc.stderr
    assert "filelock<4.3" in proc.stderr and "stopping the run before the first sample" in proc.stderr
    assert "Model Responding" not in proc.stderr + proc.stdout and "Error during evaluation" not in proc.stderr
    assert not (runs["root"] / "out_broken").exists()


def test_stock_lmms_eval_runs_a_merging_compressor(runs):
    finished(runs, "visionzip")
    rep = H.read_report(runs["root"] / "out_visionzip")
    assert rep["compressor"] == "visionzip" and rep["ratio"] == 0.5 and rep["compressed_samples"] == 2
    assert rep["options"] == {"k_neighbors": 3}
    before, after = rep["visual_tokens_before"], rep["visual_tokens_after"]
    assert before == BEFORE["qwen3_vl"]
    # every frame keeps exactly max(1, int(0.5 N)) tokens
    assert 0.4 * before <= after <= 0.5 * before
    assert "tiny_video_qa" in H.results_of(runs["root"] / "out_visionzip")["results"]


@pytest.mark.parametrize("method, family", [("dycoke", "qwen3_vl"), ("fastvid", "qwen2_5_vl"), ("holitom", "qwen2_vl")])
def test_stock_lmms_eval_runs_the_other_baselines(runs, method, family):
    finished(runs, method)
    rep = H.read_report(runs["root"] / f"out_{method}")
    assert rep["compressor"] == method and rep["ratio"] == 0.5 and rep["compressed_samples"] == 2
    assert rep["model_types"] == [family]
    before, after = rep["visual_tokens_before"], rep["visual_tokens_after"]
    assert before == BEFORE[family] and 0 < after < before
    # the variables reached the compressor's options, and the report says so
    expected = {"dycoke": {}, "fastvid": {"dyseg_c": 4, "fill_budget": True},
                "holitom": {"t": 0.7, "positions": "centres"}}[method]
    assert rep["options"] == expected
    if method == "fastvid":  # fill_budget: exactly int(N r) per frame
        assert after == before // 2
    assert "tiny_video_qa" in H.results_of(runs["root"] / f"out_{method}")["results"]


def test_invalid_method_variable_stops_the_run_before_the_first_sample(runs):
    proc = runs["done"]["invalid_method_variable"]
    assert proc.returncode != 0
    assert "DYCOKE_K='2' is out of range; expected a number in [0, 1]" in proc.stderr
    assert "stopping the run before the first sample" in proc.stderr
    assert "Model Responding" not in proc.stderr + proc.stdout
    assert not (runs["root"] / "out_invalid_dycoke").exists()


def test_emc_screening_in_front_of_the_model_is_counted(runs):
    finished(runs, "screening")
    rep = H.read_report(runs["root"] / "out_screening")
    scr = rep["screening"]
    assert scr["screener"] == "llm" and scr["samples"] == 2
    assert scr["screened"] == 1 and scr["fallen_back"] == 1
    assert scr["by_status"]["succeeded"] == 1
    # clip 0 keeps 2 of its 4 seconds, clip 1 falls back to the whole clip
    assert scr["kept_ratio_mean"] == pytest.approx((0.5 + 1.0) / 2, abs=0.01)
    assert runs["planner_requests"] >= 2
    # the frame budget is unchanged by screening, and compression still ran on both samples
    assert rep["visual_tokens_before"] == BEFORE["qwen2_5_vl"] and rep["compressed_samples"] == 2
