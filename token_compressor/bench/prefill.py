"""End-to-end prefill benchmark: a random-weight Qwen2.5-VL of realistic width (text hidden 1024,
8 layers) with about 6,000 video tokens, uncompressed vs VidCom² at r = 0.25 and 0.5 and the
authors' four other compressors (DyCoke, FastVID, VisionZip, HoliTom) at r = 0.25; then a
left-padded batch of two videos of very different lengths (6,144 and 2,048 tokens), full vs
VidCom² at r = 0.25: the compressed batch is as wide as its longest compressed row.

Reports prefill time (vision encoder + compression + language model, one forward with
use_cache=True and last-position logits, as generate() runs it), the compressor's share of it
(selection and gathering, not the vision encoder), the speed-up, and the KV-cache size after prefill.
The vision tower is kept tiny (it is not what compression shortens: pruning happens after it).
Every configuration is timed in the same shuffled interleaved rounds (`timing.py`: a warm-up call of
each outside the rounds, >= 5 rounds, each in a fresh random order): median with the min-max. The
compressor's share is computed per call (that call's selection time / that call's prefill time, from
`last_stats` of the same call) and its median taken, so numerator and denominator are the same calls.
Every table prints the machine line (`machine.py`): the language model runs on torch's threads.

    python -m benchmarks.prefill_bench   [--device cpu|cuda] [--dtype bfloat16] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import token_compressor as tc

from ..models.pruning import cache_of
from .machine import Measured
from .timing import device_times, fmt_spread, interleaved_times, ratio_spread, spread, sync

MIN_ROUNDS = 5  # the floor for the prefill tables


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


def video_inputs(config, frames: int, height: int, width: int, device="cpu", seed: int = 0) -> dict:
    """Model inputs for one prompt holding one video of `frames` frames of `height` x `width`
    pixels, laid out as the Qwen processors lay it out for `config` (a Qwen2/2.5/3-VL config):
    Qwen2/2.5 one block of video tokens, Qwen3 one `<timestamp> <vision_start> tokens <vision_end>`
    group per temporal patch. `frames / temporal_patch_size` temporal patches of
    `(height / patch) * (width / patch) / merge**2` tokens each; random pixel rows (fp32)."""
    v = config.vision_config
    p, tp, m = v.patch_size, v.temporal_patch_size, v.spatial_merge_size
    if frames % tp or height % (p * m) or width % (p * m):
        raise ValueError(f"{frames} frames of {height}x{width} do not tile into {tp}-frame patches of "
                         f"{p * m}x{p * m} pixels (patch {p}, merge {m})")
    T, h, w = frames // tp, height // p, width // p
    n = h * w // (m * m)
    video, start, end = config.video_token_id, config.vision_start_token_id, config.vision_end_token_id
    ids = [1, 2, 3]
    if config.model_type in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"):  # one group per frame
        for t in range(T):  # two text ids stand in for the '<t.s seconds>' timestamp
            ids += [40 + t % 10, 50, start] + [video] * n + [end]
    else:
        ids += [start] + [video] * (T * n) + [end]
    ids = torch.tensor([ids + list(range(10, 40))])
    g = torch.Generator().manual_seed(seed)
    inputs = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_token_type_ids": ((ids == video).long() * 2).to(device),
        "pixel_values_videos": torch.randn(T * h * w, 3 * tp * p * p, generator=g).to(device),
        "video_grid_thw": torch.tensor([[T, h, w]]).to(device),
    }
    if config.model_type == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = torch.tensor([1.0]).to(device)
    return inputs


def kv_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            total += t.numel() * t.element_size()
    return total


BASELINES = ("dycoke", "fastvid", "visionzip", "holitom")


def configurations(ratios=(0.25, 0.5), baselines=()) -> dict:
    """`{name: (method, ratio)}`: "full" (method `none`), VidCom² at every ratio, then every
    method of `baselines` at the first ratio (the authors' table is at r = 0.25)."""
    configs = {"full": ("none", None), **{f"vidcom2 r={r}": ("vidcom2", r) for r in ratios}}
    configs.update({f"{m} r={ratios[0]}": (m, ratios[0]) for m in baselines})
    return configs


def _configure(model, method: str, ratio) -> None:
    tc.apply(model, method=method, ratio=0.25 if ratio is None else ratio)


def _timed(fns: dict, repeats: int, warmup: int, device) -> dict:
    """Per-round times (ms) of each configuration: shuffled interleaved rounds after `warmup`
    untimed calls of each (CUDA events on CUDA, the host clock elsewhere)."""
    if torch.device(device).type == "cuda":
        return device_times(fns, [None], repeats=repeats, warmup=warmup, device=device)
    return interleaved_times(fns, repeats=repeats, warmup=warmup, device=device)


def measure(model, inputs: dict, ratios=(0.25, 0.5), repeats: int = MIN_ROUNDS, new_tokens: int = 0,
            warmup: int = 1, baselines=()) -> list:
    """Prefill of `inputs` by `model` uncompressed, with VidCom² at each ratio and with each
    method of `baselines` at `ratios[0]` (`configurations`), in `repeats` shuffled interleaved rounds
    after `warmup` untimed calls of each (on CUDA timed with CUDA events).

    One row per configuration: `method`, `prefill_ms` (median of the rounds) and `prefill_spread_ms`
    (median, min, max), `speedup` (full median / this median) and `speedup_spread` (with the per-round
    min-max), `vision_ms` (the vision encoder, median over the timed compressed calls' statistics: it
    is the same work in every configuration), `compressor_ms` (selection + gathering, median over
    this configuration's timed calls), `compressor_share` (median over the timed calls of that call's
    compressor time / that call's prefill time) and `compressor_of_full` (median compressor time /
    median full prefill), `lm_ms` (prefill less vision encoder and compressor), KV-cache bytes after
    prefill; on CUDA `peak_MiB` (`torch.cuda.max_memory_allocated` over one prefill, weights
    included); with `new_tokens`, `measure_generate`'s `generate_ms`."""
    device = model.device
    cuda = device.type == "cuda"
    stats = {}

    def prefill():
        with torch.no_grad():
            # logits for the last position only, as generate() does
            return model(**inputs, use_cache=True, logits_to_keep=1)

    configs = configurations(ratios, baselines)

    fns, kvs = {}, {}
    for name, (method, r) in configs.items():
        def fn(_=None, name=name, method=method, r=r):
            _configure(model, method, r)
            out = prefill()
            kvs[name] = kv_bytes(cache_of(out))  # the same in every call: no extra call needed for it
            if r is not None:
                stats.setdefault(name, []).append(tc.last_stats(model))
        fns[name] = fn
    samples = _timed(fns, repeats, warmup, device)
    times = {name: statistics.median(v) for name, v in samples.items()}
    # the statistics of the timed calls only: every configuration's first `warmup` calls were the warm-up
    stats = {name: v[warmup:warmup + repeats] for name, v in stats.items()}

    def median_of(name, fn):
        return statistics.median(fn(s, t) for s, t in zip(stats[name], samples[name])) if name in stats else 0.0

    # fixed before a CUDA peak-memory call below adds the statistics of an untimed call
    compressor_ms = {name: median_of(name, lambda s, t: s["compress_ms"]) for name in configs}
    # per call: this call's compressor time over this call's prefill time
    shares = {name: median_of(name, lambda s, t: s["compress_ms"] / t) for name in configs}

    vision_ms = statistics.median(s["encode_ms"] for v in stats.values() for s in v) if stats else None
    n_video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    rows, full_kv = [], None
    for name, (method, r) in configs.items():
        if cuda:  # one more call, alone, for its peak memory
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            fns[name]()
        kv = kvs[name]
        full_kv = kv if r is None else full_kv
        row = {
            "config": name,
            "method": method,
            "ratio": r,
            "visual_tokens": stats[name][-1]["visual_tokens_after"] if r is not None else n_video,
            "seq_len": stats[name][-1]["seq_len_after"] if r is not None else int(inputs["input_ids"].shape[1]),
            "prefill_ms": round(times[name], 2),
            "prefill_spread_ms": spread(samples[name]),
            "rounds": repeats,
            "speedup": round(times["full"] / times[name], 2),
            "speedup_spread": ratio_spread(samples["full"], samples[name]),
            "vision_ms": None if vision_ms is None else round(vision_ms, 2),
            "compressor_ms": round(compressor_ms[name], 3),
            "compressor_share": round(shares[name], 4),
            "compressor_of_full": round(compressor_ms[name] / times["full"], 4),
            "kv_cache_bytes": kv,
            "kv_cache_MiB": round(kv / 2**20, 2),
            "kv_vs_full": round(kv / full_kv, 3),
        }
        if vision_ms is not None:
            row["lm_ms"] = round(times[name] - vision_ms - compressor_ms[name], 2)
        if cuda:
            torch.cuda.synchronize(device)
            row["peak_MiB"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        rows.append(row)
    if "lm_ms" in rows[0]:
        for row in rows:  # None where timing noise leaves no positive LM time to divide by
            row["lm_speedup"] = round(rows[0]["lm_ms"] / row["lm_ms"], 2) if min(rows[0]["lm_ms"], row["lm_ms"]) > 0 else None
    tc.revert(model)
    if new_tokens:
        measure_generate(model, inputs, rows, new_tokens, warmup)
    return rows


def measure_generate(model, inputs: dict, rows: list, new_tokens: int, warmup: int = 1) -> None:
    """Adds `generate_ms` (one greedy `generate` of exactly `new_tokens` tokens, host clock after
    synchronising) and `new_tokens` to each row of `measure`, in the row's configuration."""
    device = model.device
    L = inputs["input_ids"].shape[1]

    def generate():
        with torch.no_grad():
            return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    try:
        if warmup:
            _configure(model, "none", None)
            generate()  # warm-up of the decoding path
        for row in rows:
            _configure(model, row["method"], row["ratio"])
            sync(device)
            t0 = time.perf_counter()
            ids = generate()
            sync(device)
            row["generate_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            row["new_tokens"] = int(ids.shape[1] - L)
    finally:
        tc.revert(model)


def run(device="cpu", dtype=torch.bfloat16, repeats=MIN_ROUNDS, ratios=(0.25, 0.5), baselines=BASELINES):
    model = build_model(device, dtype)
    # 48 frames of 448x448: 24 temporal patches x 256 tokens = 6,144 video tokens
    return measure(model, video_inputs(model.config, 48, 448, 448, device), ratios, repeats, baselines=baselines)


def batch_inputs(config, videos, device="cpu", pad_id: int = 0) -> dict:
    """One left-padded batch (as lmms-eval and `generate` pad) of one prompt per video;
    `videos` lists `(frames, height, width)` per prompt (`video_inputs` lays each out)."""
    rows = [video_inputs(config, f, h, w, device, seed=i) for i, (f, h, w) in enumerate(videos)]
    L = max(r["input_ids"].shape[1] for r in rows)
    out = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        out[key] = torch.cat([torch.cat([torch.full((1, L - r[key].shape[1]), pad, dtype=r[key].dtype, device=device),
                                         r[key]], dim=1) for r in rows])
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        if key in rows[0]:
            out[key] = torch.cat([r[key] for r in rows])
    return out


def measure_batch(model, inputs: dict, ratio: float = 0.25, repeats: int = MIN_ROUNDS, warmup: int = 1) -> list:
    """Prefill of a padded batch `inputs` (rows of very different lengths) uncompressed and with
    VidCom² at `ratio`, in shuffled interleaved rounds after a warm-up (as `measure`). One row per
    configuration: `config`, `width` (padded batch width, what the attention and the KV cache are
    sized by), `row_lens` (attended tokens per row), `prefill_ms` (median) and `prefill_spread_ms`,
    `speedup` (full / this, medians) and `speedup_spread`, `kv_cache_bytes`, `kv_vs_full`."""
    device = model.device
    configs = {"full": ("none", None), f"vidcom2 r={ratio}": ("vidcom2", ratio)}
    fns, kvs, last = {}, {}, {}
    for name, (method, r) in configs.items():
        def fn(_=None, name=name, method=method, r=r):
            _configure(model, method, r)
            with torch.no_grad():
                out = model(**inputs, use_cache=True, logits_to_keep=1)
            kvs[name] = kv_bytes(cache_of(out))  # the same in every call: no extra call needed for it
            last[name] = tc.last_stats(model) if r is not None else None
        fns[name] = fn
    try:
        samples = _timed(fns, repeats, warmup, device)
        times = {name: statistics.median(v) for name, v in samples.items()}
        rows, full_kv = [], None
        for name, (method, r) in configs.items():
            kv, stats = kvs[name], last[name]
            full_kv = kv if r is None else full_kv
            rows.append({
                "config": name,
                "width": stats["width_after"] if stats else int(inputs["input_ids"].shape[1]),
                "row_lens": stats["row_lens_after"] if stats else inputs["attention_mask"].sum(1).tolist(),
                "prefill_ms": round(times[name], 2),
                "prefill_spread_ms": spread(samples[name]),
                "rounds": repeats,
                "speedup": round(times["full"] / times[name], 2),
                "speedup_spread": ratio_spread(samples["full"], samples[name]),
                "kv_cache_bytes": kv,
                "kv_cache_MiB": round(kv / 2**20, 2),
                "kv_vs_full": round(kv / full_kv, 3),
            })
    finally:
        tc.revert(model)
    return rows


def run_batch(device="cpu", dtype=torch.bfloat16, repeats=MIN_ROUNDS, ratio=0.25, videos=((48, 448, 448), (16, 448, 448))):
    """The batch row of `make bench`: two videos of 6,144 and 2,048 tokens, left padded."""
    model = build_model(device, dtype)
    return measure_batch(model, batch_inputs(model.config, videos, device), ratio, repeats)


def _timing_line(rows) -> str:
    return (f"{rows[0]['rounds']} shuffled interleaved rounds after a warm-up; ms median [min-max]; "
            "speed-up = full / this, median [per-round min-max]")


def print_batch_table(rows, device, dtype, measured: Measured = None):
    print(f"Qwen2.5-VL prefill of a padded batch of two videos of very different lengths "
          f"(random weights, text hidden 1024 x 8 layers), {device}, {dtype}")
    print(_timing_line(rows))
    if measured is not None:
        print(measured.line())
    print(f"{'config':<18}{'width':>7}{'row lengths':>16}{'prefill ms':>28}{'speed-up':>20}{'KV MiB':>9}{'KV/full':>9}")
    for r in rows:
        lens = "/".join(str(n) for n in r["row_lens"])
        print(f"{r['config']:<18}{r['width']:>7}{lens:>16}{fmt_spread(r['prefill_spread_ms'], 0):>28}"
              f"{fmt_spread(r['speedup_spread'], 2):>20}{r['kv_cache_MiB']:>9.2f}{r['kv_vs_full']:>9.3f}")


def print_table(rows, device, dtype, measured: Measured = None):
    print(f"Qwen2.5-VL prefill (random weights, text hidden 1024 x 8 layers), {device}, {dtype}")
    print(_timing_line(rows) + "; compressor = median over the same calls of its time / that call's prefill")
    if measured is not None:
        print(measured.line())
    print(f"{'config':<18}{'video tok':>10}{'prefill ms':>28}{'speed-up':>20}{'compressor':>12}{'KV MiB':>9}{'KV/full':>9}")
    for r in rows:
        print(f"{r['config']:<18}{r['visual_tokens']:>10}{fmt_spread(r['prefill_spread_ms'], 0):>28}"
              f"{fmt_spread(r['speedup_spread'], 2):>20}{100 * r['compressor_share']:>11.1f}%"
              f"{r['kv_cache_MiB']:>9.2f}{r['kv_vs_full']:>9.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--repeats", type=int, default=MIN_ROUNDS, help=f"timing rounds (default {MIN_ROUNDS})")
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="the other compressors, at r=0.25 (default: all four; none: VidCom² only)")
    p.add_argument("--no-batch", dest="batch", action="store_false",
                   help="skip the padded batch of two videos of very different lengths")
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    with Measured(a.device) as measured:
        rows = run(a.device, dtype, a.repeats, baselines=tuple(a.baselines))
    print_table(rows, a.device, a.dtype, measured)
    if a.batch:
        print()
        with Measured(a.device) as measured:
            batch_rows = run_batch(a.device, dtype, a.repeats)
        print_batch_table(batch_rows, a.device, a.dtype, measured)
        rows = rows + [dict(r, batch=True) for r in batch_rows]
    return rows


if __name__ == "__main__":
    main()
