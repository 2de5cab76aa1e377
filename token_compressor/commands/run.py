"""`token-compressor run`: load a Qwen-VL model, answer a question about a video, and print what
compression (and EMC screening) did.

    token-compressor run --model PATH_OR_ID --video clip.mp4 --question "What happens?" \\
        [--compressor vidcom2 --ratio 0.25 --screener none|llm|self --max-frames 16 --device auto --json]

The prompt is built the way lmms-eval's chat wrappers build it (qwen-vl-utils messages, the
processor's chat template, `process_vision_info`), with the frames read by the project's own
reader (as `visualize` reads them), so a bad video is one line and exit code 2; the model is
patched with `apply`, so
`--compressor none` is the uncompressed baseline with the same measurements. `--screener llm`
reads its endpoint from the EMC_* variables.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

from ._common import (add_option_arguments, check_compressor, check_positive_int, check_ratio, command_error,
                      compressor_options)


class _FirstTokenTimer:
    """A generate() streamer that notes when the first new token arrives (the end of prefill).
    generate() first `put`s the prompt, then every new token."""

    def __init__(self):
        self.puts = 0
        self.first_token_at = None

    def put(self, value):
        self.puts += 1
        if self.puts == 2 and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def end(self):
        pass


def _peak_memory_mb(device) -> tuple:
    """(megabytes, what was measured): CUDA peak allocated on a CUDA device, else the process's
    peak resident set size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), "process peak RSS"
    except (ImportError, OSError):
        return None, "unavailable"


def read_video_for_qwen_vl_utils(ele: dict):
    """A qwen-vl-utils video reader backed by the project's reader (PyAV, `token_compressor.video`):
    `ele["nframes"]` frames uniformly over the whole video, fewer when the video is shorter (an
    odd count padded with its last frame: frames go in pairs). Returns what its readers return:
    uint8 `[T, 3, H, W]`, metadata (fps, frame indices, total frames), sampling fps. A bad video
    raises `VideoError` naming the file."""
    import torch

    from ..screening.video import probe
    from ..video import read_frames

    path = ele["video"][len("file://"):] if ele["video"].startswith("file://") else ele["video"]
    info = probe(path)
    frames, indices, total = read_frames(path, max(2, int(ele.get("nframes", 16))))
    indices = indices.tolist()
    if len(frames) % 2:
        frames = frames[list(range(len(frames))) + [len(frames) - 1]]
        indices.append(indices[-1])
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    metadata = dict(fps=info.fps, frames_indices=indices, total_num_frames=total, video_backend="token_compressor")
    return video, metadata, len(frames) / max(total, 1) * info.fps


@contextmanager
def _qwen_vl_utils_reads_with_pyav():
    """qwen-vl-utils' own readers, for the duration: `read_video_for_qwen_vl_utils`. Its
    torchvision fallback needs `torchvision.io.read_video`, gone from the pinned torchvision, and
    decord refuses short videos (`nframes` > frames); its reader table is the narrow seam. The
    fallback slot gets the same reader, so a bad video's error (naming the file) is the one raised."""
    from qwen_vl_utils import vision_process as vp

    saved_table, saved_choice = dict(vp.VIDEO_READER_BACKENDS), vp.get_video_reader_backend
    vp.VIDEO_READER_BACKENDS.update(token_compressor=read_video_for_qwen_vl_utils,
                                    torchvision=read_video_for_qwen_vl_utils)
    vp.get_video_reader_backend = lambda: "token_compressor"
    try:
        yield
    finally:
        vp.VIDEO_READER_BACKENDS.clear()
        vp.VIDEO_READER_BACKENDS.update(saved_table)
        vp.get_video_reader_backend = saved_choice


def answer(model, processor, video: str, question: str, *, max_frames: int, max_pixels: int,
           max_new_tokens: int, screener=None) -> dict:
    """One question about one video with an already loaded (and possibly patched) model.
    Returns the answer and the measurements."""
    import torch
    from qwen_vl_utils import process_vision_info

    from ..api import last_stats
    from ..report import visual_token_count

    t0 = time.perf_counter()
    # qwen-vl-utils' default video min_pixels (128 tokens of 28x28) capped by max_pixels
    item = {"type": "video", "video": video, "nframes": max(2, max_frames - max_frames % 2),
            "max_pixels": max_pixels, "min_pixels": min(max_pixels, 128 * 28 * 28)}
    messages = [{"role": "user", "content": [item, {"type": "text", "text": question}]}]
    screening = None
    if screener is not None:
        from ..screening import screen_messages

        results = screen_messages(messages, screener)
        screening = results[0].to_emc() if results else None
    asked = messages[0]["content"][1]["text"]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # as lmms-eval's chat wrappers: frames and their metadata from qwen-vl-utils, which already
    # resized them (do_resize=False keeps its size), fps for the temporal positions
    with _qwen_vl_utils_reads_with_pyav():
        _, videos, video_kwargs = process_vision_info(messages, return_video_kwargs=True, return_video_metadata=True,
                                                        image_patch_size=model.config.vision_config.patch_size)
    frames, metadata = zip(*videos)
    inputs = processor(text=[text], videos=list(frames), video_metadata=list(metadata), do_resize=False,
                       do_sample_frames=False, return_tensors="pt",
                       **({"fps": video_kwargs["fps"][0]} if video_kwargs.get("fps") else {}))
    inputs = inputs.to(model.device)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
    model.__dict__.pop("_token_compressor_last_stats", None)
    timer = _FirstTokenTimer()
    t1 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=timer)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    t2 = time.perf_counter()
    prompt_len = inputs["input_ids"].shape[1]
    reply = processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)[0]
    stats = last_stats(model)
    if stats is not None:
        before, after = stats["visual_tokens_before"], stats["visual_tokens_after"]
    else:
        before = after = visual_token_count(model, inputs["input_ids"], False)
    peak, peak_kind = _peak_memory_mb(model.device)
    return {
        "answer": reply.strip(),
        "question_asked": asked,
        "screening": screening,
        "visual_tokens_before": before,
        "visual_tokens_after": after,
        "kept_fraction": after / before if before else None,
        "video_grid_thw": inputs["video_grid_thw"].tolist(),
        "new_tokens": int(out.shape[1] - prompt_len),
        "prefill_s": (timer.first_token_at - t1) if timer.first_token_at else None,
        "generate_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,
    }


def run(args) -> int:
    import os

    from ..config import ConfigError, parse_screener, screening_from_env
    from ..models.loading import check_model_folder

    ratio = check_ratio(args.ratio)
    method = check_compressor(args.compressor)
    options = compressor_options(method, args.option)
    check_positive_int(args.max_frames, "--max-frames", minimum=2)
    check_positive_int(args.max_new_tokens, "--max-new-tokens")
    check_positive_int(args.max_pixels, "--max-pixels", minimum=28 * 28)
    try:
        screener_name = parse_screener(args.screener, "--screener")
        # the endpoint of `--screener llm` comes from the EMC_* variables, validated there
        screening_cfg = screening_from_env({**os.environ, "EMC_SCREENER": screener_name})
    except ConfigError as e:
        raise command_error(str(e)) from None
    if not args.question.strip():
        raise command_error("--question is empty")
    from ..video import check_video_path
    from ..screening.video import probe

    check_video_path(args.video)
    probe(args.video)  # an unreadable video fails here, before the model is loaded
    from ..video import read_frames

    read_frames(args.video, 2)  # and one that cannot be decoded (first and last frame) too
    check_model_folder(args.model)

    from ..api import apply
    from ..models.loading import load_pretrained

    t_load = time.perf_counter()
    model, processor = load_pretrained(args.model, args.device)
    load_s = time.perf_counter() - t_load
    apply(model, method, ratio, **options)
    screener = None
    if screener_name == "llm":
        from ..screening import ScreeningCache, make_screener

        screener = make_screener(screening_cfg, ScreeningCache(screening_cfg.cache_dir))
    elif screener_name == "self":
        from ..screening import ScreeningCache, self_screener

        screener = self_screener(model, processor, cache=ScreeningCache(screening_cfg.cache_dir))
    result = answer(model, processor, os.path.abspath(args.video), args.question, max_frames=args.max_frames,
                    max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, screener=screener)
    result = {"model": args.model, "model_type": model.config.model_type, "device": str(model.device),
              "compressor": method, "ratio": ratio, "options": options, "screener": screener_name, "load_s": load_s, **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"answer: {result['answer']}")
    if result["screening"] is not None:
        s = result["screening"]
        print(f"screening ({screener_name}): {s['status']}, kept {s['screened_timestamps']}, "
              f"asked: {result['question_asked']!r}")
    kept = result["kept_fraction"]
    print(f"visual tokens: {result['visual_tokens_before']} -> {result['visual_tokens_after']}"
          + (f" ({100 * kept:.1f} % kept, {method} r={ratio:g}"
             f"{''.join(f', {k}={v}' for k, v in sorted(options.items()))})" if kept is not None else " (no video tokens)"))
    prefill = result["prefill_s"]
    print(f"time: prefill {prefill:.3f} s, generate {result['generate_s']:.3f} s "
          f"({result['new_tokens']} new tokens), total {result['total_s']:.3f} s, model load {load_s:.1f} s"
          if prefill is not None else
          f"time: generate {result['generate_s']:.3f} s, total {result['total_s']:.3f} s")
    peak = result["peak_memory_mb"]
    print(f"peak memory: {peak:.0f} MB ({result['peak_memory_kind']})" if peak is not None else "peak memory: n/a")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="answer a question about a video with a (compressed) Qwen-VL model",
                       description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--model", required=True, metavar="PATH_OR_ID", help="a Qwen-VL model folder or hub id")
    p.add_argument("--video", required=True, help="video file")
    p.add_argument("--question", required=True, help="the question to ask")
    p.add_argument("--compressor", default="vidcom2", help="a registered compressor, or none (default vidcom2)")
    p.add_argument("--ratio", default="0.25", help="retention ratio in (0, 1] (default 0.25)")
    add_option_arguments(p)
    p.add_argument("--screener", default="none", help="EMC screening first: none (default), llm or self")
    p.add_argument("--max-frames", type=int, default=16, help="frames sampled from the video (default 16)")
    p.add_argument("--max-pixels", type=int, default=448 * 448, help="pixels per frame (default 448*448)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
