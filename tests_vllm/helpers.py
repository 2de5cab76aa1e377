"""Tiny Qwen-VL checkpoints vLLM's CPU build can run, a video, and one engine per setting."""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the main suite's tiny models

from tiny_checkpoint import save_checkpoint  # noqa: E402

FPS = 2.0  # 2 frames per temporal patch: 1 s per grid step, an integer (see docs/vllm.md, defect 3)


def vllm_sized(cfg):
    """vLLM's CPU attention needs a head size >= 32: 2 heads of 32 (1 KV head), M-RoPE sections
    summing to 16 = head_dim / 2."""
    text = cfg.text_config
    text.num_attention_heads, text.num_key_value_heads = 2, 1
    text.head_dim = text.hidden_size // 2
    rope = dict(text.rope_parameters)
    rope["mrope_section"] = [4, 6, 6]
    text.rope_parameters = rope


def make_checkpoint(folder, family):
    if not os.path.exists(os.path.join(folder, "config.json")):
        save_checkpoint(folder, family, configure=vllm_sized)
    return folder


def video(num_frames=8, size=56, seed=0):
    """uint8 `[T, H, W, 3]` frames with structure (moving squares on a gradient, some noise) and the
    metadata vLLM's Qwen processors want for pre-decoded frames."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(num_frames):
        img = np.stack([(xx * 4 + i * 20) % 256, (yy * 3) % 256, np.full_like(xx, 60)], -1).astype(np.int32)
        s = (i * 7) % (size - 16)
        img[s:s + 16, s:s + 16] = 250
        img += rng.randint(-20, 20, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    frames = np.stack(frames)
    meta = {"fps": FPS, "duration": num_frames / FPS, "total_num_frames": num_frames,
            "frames_indices": list(range(num_frames)), "video_backend": "opencv", "do_sample_frames": False}
    return frames, meta


def prompt(text_before="Describe", text_after="now.", outer=True):
    pad = "<|vision_start|><|video_pad|><|vision_end|>" if outer else "<|video_pad|>"
    return f"<|im_start|>user\n{text_before}{pad}{text_after}<|im_end|>\n<|im_start|>assistant\n"


def engine(model_dir, **kwargs):
    from vllm import LLM

    args = dict(model=model_dir, dtype="bfloat16", max_model_len=2048, enforce_eager=True,
                limit_mm_per_prompt={"video": 1, "image": 0}, max_num_seqs=2, seed=0)
    args.update(kwargs)
    return LLM(**args)


# --- one engine per setting, in its own process ----------------------------------------------

def run_engine(model_dir, env, prompts, workdir, engine_kwargs=None, max_tokens=4, capture=True, timeout=600):
    """Run tests_vllm/engine_run.py with `env` added to this environment. Returns
    (completed process, results or None, captures: list of dicts loaded from the capture dir)."""
    import glob
    import json
    import subprocess

    import torch

    os.makedirs(workdir, exist_ok=True)
    spec, out = os.path.join(workdir, "spec.json"), os.path.join(workdir, "out.json")
    with open(spec, "w") as f:
        json.dump({"model": model_dir, "engine": engine_kwargs or {}, "max_tokens": max_tokens, "prompts": prompts}, f)
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("COMPRESSOR", "R_RATIO", "TOKEN_COMPRESSOR_VLLM_CAPTURE")}
    full_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default does not fit these machines
    cap_dir = os.path.join(workdir, "capture")
    if capture:
        os.makedirs(cap_dir, exist_ok=True)
        full_env["TOKEN_COMPRESSOR_VLLM_CAPTURE"] = cap_dir
    full_env.update(env)
    # vLLM logs (its workers' errors included) go to stdout: one stream, in order, as `proc.stdout`
    proc = subprocess.run([sys.executable, os.path.join(HERE, "engine_run.py"), spec, out], env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    results = None
    if proc.returncode == 0:
        with open(out) as f:
            results = json.load(f)["results"]
    captures = [dict(torch.load(p), file=os.path.basename(p))
                for p in sorted(glob.glob(os.path.join(cap_dir, "*.pt")))] if capture else []
    return proc, results, captures


def hf_prompt_positions(model_dir, text, frames, meta):
    """The transformers path's view of the same prompt and video: (input_ids [L], video_grid_thw
    [3], position ids [3, L] of the UNcompressed prompt from transformers' own functions, which
    kept tokens keep in token_compressor's transformers path)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    from token_compressor.models.pruning import unpatched_positions

    processor = AutoProcessor.from_pretrained(model_dir)
    md = VideoMetadata(total_num_frames=meta["total_num_frames"], fps=meta["fps"], duration=meta["duration"],
                       frames_indices=meta["frames_indices"], video_backend=meta["video_backend"])
    enc = processor(text=[text], videos=[frames], video_metadata=[md], do_sample_frames=False, return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    kwargs = {k: v for k, v in enc.items() if k != "input_ids"}
    with torch.no_grad():
        pos = unpatched_positions(model, enc["input_ids"], enc["attention_mask"], kwargs, for_generate=False)
    return enc["input_ids"][0], enc["video_grid_thw"][0], pos[:, 0]

