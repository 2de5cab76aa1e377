"""`token-compressor visualize`: the sampled frames with the kept tokens highlighted.

    token-compressor visualize --video clip.mp4 --features pixels -o kept.png [--compressor vidcom2 --ratio 0.25]
    token-compressor visualize --model PATH --video clip.mp4 -o kept.png      (the model's own tokens)

Three separate steps: a feature source turns the video into `VisualTokens` (features `[T*N, D]`,
grid `(T, H, W)`, one picture per temporal patch; `viz.FEATURE_SOURCES`), `select`
chooses, `viz.draw.draw_kept` draws. `--features pixels` needs no weights; `--model PATH` encodes
the frames with the checkpoint's vision tower (`--features model`).
"""
from __future__ import annotations

import os

from ._common import (add_option_arguments, check_compressor, check_output, check_positive_int, check_ratio,
                      command_error, compressor_options, progress, require)


def placement_note(method: str, merged: bool, options: dict) -> str:
    """Where the drawing puts kept rows, said on the picture and on the terminal."""
    if method == "holitom":
        if options.get("positions") == "linspace":
            return ("merged rows drawn at HoliTom's placeholder positions (positions=linspace), "
                    "not where they come from")
        return "merged rows drawn where they come from (positions=centres)"
    if merged:
        return "merged rows drawn at the kept token they replace"
    return ""


def legend_lines(tokens, sel, video: str, options=None, note: str = "") -> list:
    T, H, W = tokens.grid
    opts = "".join(f"   {k}={v}" for k, v in sorted((options or {}).items()))
    return [
        f"method {sel.method}   ratio r = {sel.ratio:g}{opts}   kept {sel.num_kept} of {sel.num_tokens} tokens "
        f"({100 * sel.kept_fraction:.1f} %)" + (f"; {note}" if note else ""),
        f"{os.path.basename(video)}: {2 * T} frames sampled, grid {T} x {H} x {W} "
        f"(temporal patches x rows x columns), features: {tokens.source}",
    ]


def run(args) -> int:
    from ..selection import select
    from ..viz import feature_source

    ratio = check_ratio(args.ratio)
    method = check_compressor(args.compressor)
    options = compressor_options(method, args.option)
    if method == "holitom":
        # a picture shows where tokens are: merged rows at their sources unless asked otherwise
        options.setdefault("positions", "centres")
    check_positive_int(args.max_frames, "--max-frames")
    if args.max_pixels is not None:
        check_positive_int(args.max_pixels, "--max-pixels", minimum=28 * 28)
    check_output(args.output)
    require("PIL", "av")
    features = args.features or ("model" if args.model else "pixels")
    source_options = {}
    if features == "model":
        if not args.model:
            raise command_error("--features model needs --model PATH (a Qwen-VL model folder or hub id)")
        source_options = {"model": args.model, "device": args.device}
    elif args.model:
        raise command_error(f"--model is used with --features model, not --features {features}")

    tokens = feature_source(features)(args.video, args.max_frames, max_pixels=args.max_pixels, progress=progress,
                                      **source_options)
    T, H, W = tokens.grid
    sel = select(tokens.features, T, ratio, method, **options)
    note = placement_note(method, sel.features is not None, options)

    from ..viz.draw import draw_kept

    image, _ = draw_kept(
        tokens.frames,
        sel.mask().view(T, H, W).cpu().numpy(),
        legend_lines(tokens, sel, args.video, options, note),
        frame_labels=[f"t={t} (frame {n})" for t, n in enumerate(tokens.frame_numbers.tolist())],
        uniform_budget=ratio * H * W,
    )
    try:
        image.save(args.output)
    except OSError as e:
        raise ValueError(f"cannot write {args.output}: {e}") from None
    print(f"{args.output}: {sel.method} r={sel.ratio:g} kept {sel.num_kept}/{sel.num_tokens} tokens; "
          f"per-frame budgets {' '.join(map(str, sel.budgets.tolist()))} of {H * W}" + (f"; {note}" if note else ""))
    return 0


def register(sub) -> None:
    from ..viz import FEATURE_SOURCES

    p = sub.add_parser("visualize", help="draw the sampled frames with the kept tokens highlighted",
                       description=__doc__.splitlines()[0])
    p.add_argument("--video", required=True, help="video file")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="a Qwen-VL model folder or hub id: draw the model's own visual tokens")
    p.add_argument("--features", choices=sorted(FEATURE_SOURCES), default=None,
                   help="where the token features come from (pixels: raw patch pixels, no weights needed; "
                        "model: the --model's vision tower). Default: model with --model, else pixels")
    p.add_argument("--device", default="auto", help="with --model: auto (default), cpu, cuda or cuda:N")
    p.add_argument("-o", "--output", default="kept.png", metavar="PNG", help="image to write (default kept.png)")
    p.add_argument("--compressor", default="vidcom2", help="a registered compressor (default vidcom2)")
    p.add_argument("--ratio", default="0.25", help="retention ratio in (0, 1] (default 0.25)")
    add_option_arguments(p)
    p.add_argument("--max-frames", type=int, default=16, help="frames sampled uniformly (2 per temporal patch; default 16)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="pixels per frame after resizing, as Qwen-VL's max_pixels (default 448*448: at most 256 tokens)")
    p.set_defaults(func=run)
