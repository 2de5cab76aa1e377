"""vLLM on CPU: a batch of video requests, uncompressed vs our compressors vs vLLM's own EVS at the
same kept fraction. Runs in the vLLM environment (`make bench-vllm`, i.e.
`.venv-vllm/bin/python -m benchmarks.vllm_bench`), not in `make bench`'s.

Every setting is its own engine in its own process (the plugin and vLLM read `COMPRESSOR`,
`R_RATIO` and the engine arguments once, at start-up): this process builds a random-weight
Qwen2.5-VL checkpoint from a config (no model hub), then runs `--rounds` rounds; each round starts
one engine per setting, in a shuffled order, and each engine times `--repeats` batches after one
warm-up batch. Per batch:

- time to first token: the wall time of `generate(batch, max_tokens=1)` (vision encoder,
  selection and prefill of every request; the batch's last first token),
- throughput: generated tokens per second of `generate(batch, max_tokens=M, ignore_eos)`.

Every call gets videos it has not seen (new random frames), and prefix caching and vLLM's
multimodal processor cache are off, so no call is served from a cache. Medians over all batches of
all rounds, with the range; ratios against `uncompressed` from the same run.

    python -m benchmarks.vllm_bench [--rounds 2] [--repeats 2] [--batch 4] [--frames 16] ...
    python -m benchmarks.vllm_bench --worker SPEC.json OUT.json      (one engine; internal)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEPT = 0.25  # R_RATIO; vLLM's --video-pruning-rate 1 - KEPT
# name -> (environment, extra engine arguments)
SETTINGS = {
    "uncompressed": ({}, {}),
    "ours vidcom2": ({"COMPRESSOR": "vidcom2", "R_RATIO": str(KEPT)}, {}),
    "ours dycoke": ({"COMPRESSOR": "dycoke", "R_RATIO": str(KEPT)}, {}),
    "vLLM evs": ({}, {"video_pruning_rate": 1 - KEPT}),
}
# text and vision widths of the benchmark's model ("mid": ~70M parameters, heads of 64)
SIZES = {
    "mid": dict(hidden=768, layers=6, heads=12, kv_heads=4, intermediate=2048,
                vision_hidden=384, vision_depth=4, vision_heads=6),
    "toy": dict(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128,
                vision_hidden=32, vision_depth=2, vision_heads=2),
}
FPS = 2.0  # 2 frames per temporal patch: whole seconds per grid step (docs/vllm.md, defect 4)


# --- the model -------------------------------------------------------------------------------

def build_checkpoint(folder: str, size: str) -> str:
    """A random-weight Qwen2.5-VL (model + processor) of `SIZES[size]` in `folder`, built from a
    config with the test suite's offline tokenizer and processor (`tests/tiny_checkpoint.py`)."""
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from tiny_checkpoint import save_checkpoint

    s = SIZES[size]

    def configure(cfg):
        text, vision = cfg.text_config, cfg.vision_config
        text.hidden_size, text.num_hidden_layers = s["hidden"], s["layers"]
        text.layer_types = ["full_attention"] * s["layers"]
        text.num_attention_heads, text.num_key_value_heads = s["heads"], s["kv_heads"]
        text.intermediate_size = s["intermediate"]
        text.head_dim = s["hidden"] // s["heads"]
        rope = dict(text.rope_parameters)
        half = text.head_dim // 2  # M-RoPE sections (t, h, w) over half a head, Qwen2.5-VL's 1:1.5:1.5
        rope["mrope_section"] = [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8]
        text.rope_parameters = rope
        vision.hidden_size, vision.depth, vision.num_heads = s["vision_hidden"], s["vision_depth"], s["vision_heads"]
        vision.intermediate_size = 2 * s["vision_hidden"]
        vision.out_hidden_size = s["hidden"]
        vision.fullatt_block_indexes = [s["vision_depth"] - 1]

    save_checkpoint(folder, "qwen2_5_vl", configure=configure)
    # the suite's processor caps a frame at 16 merged tokens (112 x 112 px); the benchmark's are larger
    path = os.path.join(folder, "processor_config.json")
    with open(path) as f:
        proc = json.load(f)
    for key in ("image_processor", "video_processor"):
        proc[key]["size"]["longest_edge"] = 448 * 448
    with open(path, "w") as f:
        json.dump(proc, f, indent=1)
    return folder


def video(num_frames: int, size: int, seed: int):
    """uint8 `[T, H, W, 3]` frames (a moving square on a gradient, noise) and the metadata vLLM's
    Qwen processors want for pre-decoded frames."""
    import numpy as np

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(num_frames):
        img = np.stack([(xx * 2 + i * 9 + seed) % 256, (yy * 3) % 256, np.full_like(xx, 60)], -1).astype(np.int32)
        s = (i * 7 + seed) % (size - size // 4)
        img[s:s + size // 4, s:s + size // 4] = 250
        img += rng.randint(-20, 20, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    meta = {"fps": FPS, "duration": num_frames / FPS, "total_num_frames": num_frames,
            "frames_indices": list(range(num_frames)), "video_backend": "opencv", "do_sample_frames": False}
    return np.stack(frames), meta


PROMPT = ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n"
          "<|im_start|>assistant\n")


# --- one engine (worker process) -------------------------------------------------------------

def worker(spec_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams

    with open(spec_path) as f:
        spec = json.load(f)
    t0 = time.perf_counter()
    llm = LLM(model=spec["model"], dtype="bfloat16", max_model_len=spec["max_model_len"], enforce_eager=True,
              limit_mm_per_prompt={"video": 1, "image": 0}, max_num_seqs=spec["batch"], seed=0,
              enable_prefix_caching=False, mm_processor_cache_gb=0, **spec["engine"])
    engine_s = time.perf_counter() - t0
    video_pad = llm.get_tokenizer().convert_tokens_to_ids("<|video_pad|>")
    seed = [spec["seed"]]

    def batch():
        requests = []
        for _ in range(spec["batch"]):
            seed[0] += 1
            requests.append({"prompt": PROMPT, "multi_modal_data": {"video": video(spec["frames"], spec["size"], seed[0])}})
        return requests

    def run(max_tokens):
        requests = batch()  # built before the clock starts: the frames are the caller's, not vLLM's work
        params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=0.0)
        t = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        return time.perf_counter() - t, outs

    run(1), run(spec["max_tokens"])  # warm-up
    samples = []
    for _ in range(spec["repeats"]):
        ttft_s, outs = run(1)
        gen_s, gen = run(spec["max_tokens"])
        samples.append(dict(ttft_s=ttft_s, gen_s=gen_s,
                            output_tokens=sum(len(o.outputs[0].token_ids) for o in gen),
                            prompt_tokens=sum(len(o.prompt_token_ids) for o in outs),
                            video_tokens=[o.prompt_token_ids.count(video_pad) for o in outs]))
    with open(out_path, "w") as f:
        json.dump({"engine_s": engine_s, "samples": samples}, f)


def run_engine(name: str, spec: dict, workdir: str, timeout: float) -> dict:
    env_add, engine = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("COMPRESSOR", "R_RATIO")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default does not fit small machines
    env.update(env_add)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    tag = name.replace(" ", "_")
    spec_path, out_path = os.path.join(workdir, f"{tag}.spec.json"), os.path.join(workdir, f"{tag}.out.json")
    with open(spec_path, "w") as f:
        json.dump(dict(spec, engine=engine), f)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.vllm_bench", "--worker", spec_path, out_path], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the {name!r} engine failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    with open(out_path) as f:
        return json.load(f)


# --- the run and its report ------------------------------------------------------------------

def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def load() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "unknown"


def spread(values):
    """(median, min, max)"""
    return statistics.median(values), min(values), max(values)


def summarise(results: dict) -> list:
    """One row per setting from {name: [worker outputs]}: medians (and ranges) over every batch."""
    rows = []
    for name, outs in results.items():
        samples = [s for o in outs for s in o["samples"]]
        rows.append(dict(setting=name,
                         video_tokens=statistics.median(v for s in samples for v in s["video_tokens"]),
                         prompt_tokens=statistics.median(s["prompt_tokens"] for s in samples),
                         ttft_s=spread([s["ttft_s"] for s in samples]),
                         tokens_per_s=spread([s["output_tokens"] / s["gen_s"] for s in samples]),
                         engine_s=spread([o["engine_s"] for o in outs]), batches=len(samples)))
    base = next((r for r in rows if r["setting"] == "uncompressed"), None)
    for r in rows:
        r["ttft_speedup"] = base["ttft_s"][0] / r["ttft_s"][0] if base else None
        r["throughput_ratio"] = r["tokens_per_s"][0] / base["tokens_per_s"][0] if base else None
    return rows


def table(rows: list) -> str:
    lines = ["| setting | video tokens / request | prompt tokens / batch | time to first token (batch), median [range] "
             "| vs uncompressed | generated tokens/s, median [range] | vs uncompressed |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, g = r["ttft_s"], r["tokens_per_s"]
        lines.append(f"| {r['setting']} | {r['video_tokens']:g} | {r['prompt_tokens']:g} | {t[0]:.2f} s [{t[1]:.2f}-{t[2]:.2f}] "
                     f"| {r['ttft_speedup']:.2f}x | {g[0]:.1f} [{g[1]:.1f}-{g[2]:.1f}] | {r['throughput_ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ", ".join(SETTINGS))
    p.add_argument("--size", choices=sorted(SIZES), default="mid")
    p.add_argument("--model", help="a Qwen2.5-VL checkpoint folder to use instead of building one")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed batches per engine (after one warm-up)")
    p.add_argument("--batch", type=int, default=4, help="video requests per batch")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--frame-size", type=int, default=224, help="pixels, square")
    p.add_argument("--max-tokens", type=int, default=16, help="generated per request in the throughput batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where the checkpoint and the engines' files go (default: a temporary folder)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--timeout", type=float, default=900, help="seconds per engine")
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return {}
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or "uncompressed" not in names:
        p.error(f"--settings: {unknown or 'uncompressed is required (the ratios are against it)'}; "
                f"known: {', '.join(SETTINGS)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="vllm_bench_")
    os.makedirs(workdir, exist_ok=True)
    model = args.model or build_checkpoint(os.path.join(workdir, f"qwen2_5_vl-{args.size}"), args.size)
    load_before, t0 = load(), time.time()
    spec = dict(model=model, batch=args.batch, frames=args.frames, size=args.frame_size, repeats=args.repeats,
                max_tokens=args.max_tokens, seed=args.seed, max_model_len=4096)
    order = random.Random(args.seed)
    results = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in order.sample(names, len(names)):  # a new order each round: drift hits every setting
            results[name].append(run_engine(name, spec, workdir, args.timeout))
    rows = summarise(results)
    import torch
    import vllm

    header = (f"vLLM {vllm.__version__} (CPU), torch {torch.__version__}; {machine()}; load average "
              f"{load_before} before, {load()} after; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, "
              f"{time.time() - t0:.0f} s; {args.size} Qwen2.5-VL, {args.batch} requests x {args.frames} frames of "
              f"{args.frame_size} px, {args.rounds} rounds x {args.repeats} batches per setting, kept fraction {KEPT}")
    print(header)
    print(table(rows))
    out = dict(header=header, rows=rows, args=vars(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
