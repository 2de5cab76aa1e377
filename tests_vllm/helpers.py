"""Tiny Qwen-VL checkpoints vLLM's CPU build can run, a video, and one engine per setting."""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the main suite's tiny models

from tiny_checkpoint import save_checkpoint  # noqa: E402

FPS = 2.0  # 2 frames per temporal patch: 1 s per grid step, an integer (see docs/vllm.md, defect 4)


def vllm_sized(cfg):
    """Shapes vLLM 0.32's CPU build runs (each found as the error it raises otherwise):
    - a text head size >= 32 (its CPU attention): 2 heads of 32 (1 KV head), M-RoPE sections
      summing to half the rotated part of a head (Qwen3.5 rotates only `partial_rotary_factor` of
      it: [2, 3, 3]; the others [4, 6, 6]);
    - Qwen3.5's gated delta-net heads a multiple of 32 wide (`chunk_gated_delta_rule_cpu: expect
      head_dim to be multiples of 32`);
    - Qwen3-VL-MoE: `norm_topk_prob` in the config (vLLM's `Qwen3MoeSparseMoeBlock` reads it;
      transformers' `Qwen3VLMoeTextConfig` has no such field, its router always renormalises, which
      is `True`), and an expert width whose gate/up matrix is not square (2 * 48 != 64), so that
      the layout of the saved experts is unambiguous (see `_released_expert_layout`)."""
    text = cfg.text_config
    text.num_attention_heads, text.num_key_value_heads = 2, 1
    text.head_dim = text.hidden_size // 2
    rope = dict(text.rope_parameters)
    rotated = int(text.head_dim * rope.get("partial_rotary_factor", 1.0))
    rope["mrope_section"] = {16: [4, 6, 6], 8: [2, 3, 3]}[rotated // 2]
    text.rope_parameters = rope
    if "linear_attention" in (getattr(text, "layer_types", None) or ()):
        text.linear_key_head_dim = text.linear_value_head_dim = 128
    if getattr(text, "num_experts", None):
        text.norm_topk_prob = True
        text.moe_intermediate_size = 48


def _released_expert_layout(folder):
    """transformers 5.19 saves Qwen3-VL-MoE's fused experts in its in-memory layout (`gate_up_proj`
    `[E, 2I, H]`, `down_proj` `[E, H, I]`: its load-time `Transpose(check_dims=True)` finds the
    shapes equal on the way back and does not transpose), but the released checkpoints, and vLLM's
    loader (`is_fused_checkpoint_transposed=True`), have them as `[E, H, 2I]` and `[E, I, H]`
    (vLLM otherwise fails loading: "The size of tensor a (32) must match the size of tensor b
    (64)"). Rewrite the file in the released layout; transformers loads either (it transposes when
    the shape differs from its own)."""
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    weights = load_file(path)
    for name in weights:
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            weights[name] = weights[name].transpose(1, 2).contiguous()
    save_file(weights, path, metadata={"format": "pt"})


def make_checkpoint(folder, family):
    if not os.path.exists(os.path.join(folder, "config.json")):
        save_checkpoint(folder, family, configure=vllm_sized)
        if family == "qwen3_vl_moe":
            _released_expert_layout(folder)
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

