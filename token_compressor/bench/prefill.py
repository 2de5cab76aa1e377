"""End-to-end prefill benchmark: a random-weight Qwen2.5-VL of realistic width (text hidden 1024,
8 layers) with about 6,000 video tokens, uncompressed vs VidCom² at r = 0.25 and 0.5.

Reports prefill time (vision encoder + compression + language model, one forward with
use_cache=True and last-position logits, as generate() runs it), the compressor's share of it
(selection and gathering, not the vision encoder), the speed-up, and the KV-cache size after prefill.
The vision tower is kept tiny (it is not what compression shortens: pruning happens after it).

    python -m benchmarks.prefill_bench   (or token-compressor bench --prefill) [--device cpu|cuda] [--dtype bfloat16] [--repeats 2]
"""
from __future__ import annotations

import argparse

import torch

import token_compressor as tc

from .timing import interleaved_best

VIDEO, VSTART, VEND = 151656, 151652, 151653


def build_model(device, dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(vocab_size=152064, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=1024,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[0], tokens_per_second=2)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(cfg).to(device=device, dtype=dtype).eval()


def build_inputs(device, T=24, h=32, w=32):
    """One video of T temporal patches of (h/2)*(w/2) tokens: 24 * 256 = 6,144 video tokens."""
    n = T * h * w // 4
    ids = torch.tensor([[1, 2, 3, VSTART] + [VIDEO] * n + [VEND] + list(range(10, 40))])
    mm = (ids == VIDEO).long() * 2
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_token_type_ids": mm.to(device),
        "pixel_values_videos": torch.randn(T * h * w, 3 * 2 * 14 * 14, generator=g).to(device),
        "video_grid_thw": torch.tensor([[T, h, w]]).to(device),
        "second_per_grid_ts": torch.tensor([1.0]).to(device),
    }


def kv_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            total += t.numel() * t.element_size()
    return total


def run(device="cpu", dtype=torch.bfloat16, repeats=2, ratios=(0.25, 0.5)):
    model = build_model(device, dtype)
    inputs = build_inputs(device)
    n_video = int((inputs["input_ids"] == VIDEO).sum())
    rows = []

    def prefill():
        with torch.no_grad():
            # logits for the last position only, as generate() does
            return model(**inputs, use_cache=True, logits_to_keep=1)

    tc.apply(model, method="none")
    full = prefill()
    configs = {"full": None, **{f"vidcom2 r={r}": r for r in ratios}}
    kv, share = {}, {}
    fns = {}
    for name, r in configs.items():
        def fn(r=r):
            tc.apply(model, method="none" if r is None else "vidcom2", ratio=0.25 if r is None else r)
            return prefill()
        fns[name] = fn
    times = interleaved_best(fns, repeats=repeats, warmup=1, device=device)
    for name, r in configs.items():
        out = fns[name]()
        stats = tc.last_stats(model) if r is not None else None
        kv[name] = kv_bytes(out.past_key_values)
        share[name] = (stats["compress_ms"] / times[name]) if stats else 0.0
        rows.append({
            "config": name,
            "visual_tokens": stats["visual_tokens_after"] if stats else n_video,
            "prefill_ms": round(times[name], 1),
            "speedup": round(times["full"] / times[name], 2),
            "compressor_share": round(share[name], 4),
            "kv_cache_MiB": round(kv[name] / 2**20, 2),
            "kv_vs_full": round(kv[name] / kv_bytes(full.past_key_values), 3),
        })
    tc.revert(model)
    return rows


def print_table(rows, device, dtype):
    print(f"Qwen2.5-VL prefill (random weights, text hidden 1024 x 8 layers), {device}, {dtype}")
    print(f"{'config':<16}{'video tok':>10}{'prefill ms':>12}{'speed-up':>10}{'compressor':>12}{'KV MiB':>9}{'KV/full':>9}")
    for r in rows:
        print(f"{r['config']:<16}{r['visual_tokens']:>10}{r['prefill_ms']:>12.1f}{r['speedup']:>9.2f}x"
              f"{100 * r['compressor_share']:>11.1f}%{r['kv_cache_MiB']:>9.2f}{r['kv_vs_full']:>9.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    rows = run(a.device, dtype, a.repeats)
    print_table(rows, a.device, a.dtype)
    return rows


if __name__ == "__main__":
    main()
