"""Running the real, unmodified lmms-eval offline on tiny checkpoints, as a subprocess.

The recipe of ../shared/notes/lmms-eval.md: tiny random checkpoint folders saved here, real mp4
files made here, a local task passed with --include_path, `accelerate launch --cpu
--num_processes 1 -m lmms_eval`, HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tiny_checkpoint import make_mp4, save_checkpoint

TASK = "tiny_video_qa"
FRAMES = 8  # --model_args max_num_frames

UTILS = '''
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
'''

YAML = """task: {task}
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs: {{max_new_tokens: 3, temperature: 0, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
"""


def make_task(folder: Path, docs: Sequence[dict], task: str = TASK) -> Path:
    """A local task folder (yaml + utils.py + data.json) for `--include_path`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.json"
    data.write_text(json.dumps(list(docs)))
    (folder / "utils.py").write_text(UTILS)
    (folder / f"{task}.yaml").write_text(YAML.format(task=task, data=json.dumps(str(data))))
    return folder


def make_world(root: Path, families: Sequence[str], videos: int = 2, frames: int = 16, fps: int = 4) -> dict:
    """Checkpoint folders for `families`, `videos` mp4 files and a task over them."""
    ckpts = {f: save_checkpoint(root / f, f) for f in families}
    docs = []
    for i in range(videos):
        mp4 = make_mp4(root / f"clip{i}.mp4", frames=frames, fps=fps)
        docs.append({"id": i, "video": str(mp4), "question": f"What moves in clip {i}?", "answer": "a square"})
    return {"checkpoints": ckpts, "task_dir": make_task(root / "task", docs), "docs": docs}


def lmms_eval_command(model: str, checkpoint: Path, task_dir: Path, output: Optional[Path],
                      force_simple: bool = False, launcher: bool = False, model_args: Optional[str] = None,
                      accelerate: bool = True) -> List[str]:
    """`accelerate launch --cpu --num_processes 1 [-m token_compressor.launch] -m lmms_eval ...`
    (`python [-m token_compressor.launch] -m lmms_eval ...` without `accelerate`, so the exit
    status is lmms-eval's own). `model_args`: other wrappers' arguments after `pretrained=`."""
    if model_args is None:
        model_args = f"device=cpu,device_map=cpu,max_num_frames={FRAMES},max_pixels=12544,min_pixels=3136"
    args = ["--model", model,
            "--model_args", f"pretrained={checkpoint},{model_args}",
            "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", "1", "--verbosity", "WARNING"]
    if output is not None:
        args += ["--output_path", str(output)]
    if force_simple:
        args.append("--force_simple")
    launch = [sys.executable]
    if accelerate:
        launch += ["-m", "accelerate.commands.accelerate_cli", "launch", "--cpu", "--num_processes", "1",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if launcher:
        launch += ["-m", "token_compressor.launch"]
    return launch + ["-m", "lmms_eval", *args]


def clean_env(extra: Dict[str, str], tmp: Path) -> Dict[str, str]:
    """The parent environment without any token-compressor / EMC variable (nor the compressors'
    own, `DYCOKE_K`, ...), offline, plus `extra`."""
    from token_compressor.config import METHOD_OPTIONS

    methods = {var for rows in METHOD_OPTIONS.values() for var, _, _ in rows}
    env = {k: v for k, v in os.environ.items()
           if not (k in ("COMPRESSOR", "R_RATIO") or k in methods or k.startswith("TOKEN_COMPRESSOR_")
                   or k.startswith("EMC_"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp / "hf_home"), HF_DATASETS_CACHE=str(tmp / "hf_datasets"),
               FORCE_QWENVL_VIDEO_READER="decord", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def read_report(output: Path) -> dict:
    """The run report JSON written next to lmms-eval's results under `output`."""
    found = glob.glob(str(output / "**" / "*_token_compressor.json"), recursive=True)
    assert len(found) == 1, f"expected one report under {output}, found {found}"
    results = glob.glob(str(output / "**" / "*_results.json"), recursive=True)
    assert len(results) == 1 and os.path.dirname(results[0]) == os.path.dirname(found[0]), (results, found)
    with open(found[0], encoding="utf-8") as f:
        return json.load(f)


def results_of(output: Path) -> dict:
    (path,) = glob.glob(str(output / "**" / "*_results.json"), recursive=True)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_many(jobs: Dict[str, tuple], cwd: Path, parallel: int = 3, timeout: int = 600) -> Dict[str, subprocess.CompletedProcess]:
    """Run `{name: (cmd, env)}` as subprocesses, `parallel` at a time (lmms-eval start-up is
    mostly single-threaded imports, so a 2-core machine overlaps them well)."""
    import time

    pending = list(jobs.items())
    running: Dict[str, tuple] = {}
    done: Dict[str, subprocess.CompletedProcess] = {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            name, (cmd, env) = pending.pop(0)
            out, err = (cwd / f"{name}.stdout"), (cwd / f"{name}.stderr")
            files = (out.open("w"), err.open("w"))
            proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                    stdout=files[0], stderr=files[1], text=True)
            running[name] = (proc, cmd, out, err, files)
        for name, (proc, cmd, out, err, files) in list(running.items()):
            if proc.poll() is not None:
                for f in files:
                    f.close()
                done[name] = subprocess.CompletedProcess(cmd, proc.returncode, out.read_text(), err.read_text())
                del running[name]
        if time.monotonic() > deadline:
            for proc, *_ in running.values():
                proc.kill()
            raise TimeoutError(f"lmms-eval runs still going after {timeout} s: {sorted(running)}")
        time.sleep(0.2)
    return done
