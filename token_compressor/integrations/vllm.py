"""vLLM plugin: our compressors inside vLLM's Qwen-VL models (`vllm serve`, `LLM(...)`, lmms-eval
`--model vllm`), configured by the same variables as everywhere else (`COMPRESSOR`, `R_RATIO`, the
methods' own variables; config.py).

vLLM calls `register()` (entry point group `vllm.general_plugins`, setup.py) in every process it
starts: the caller or API server, the engine core and every worker. With `COMPRESSOR` unset (or
`none`) it does nothing, and vLLM's own `--video-pruning-rate/--video-pruning-method` work as
shipped. With `COMPRESSOR` set it:

1. validates the configuration (one `ConfigError` line at engine start-up: unknown method, bad
   ratio, a method whose kept count depends on the content, an unsupported vLLM version);
2. turns vLLM's video pruning on for the engine being built (`EngineArgs.create_engine_config`):
   method `evs` (the one every Qwen-VL model of vLLM accepts) at rate `1 - R_RATIO`, so that vLLM
   sizes the placeholder, carries the kept tokens' M-RoPE positions and recomputes the sequence
   positions; asking for vLLM's own pruning as well is refused, and so is an architecture without
   the seams below;
3. in the model modules (they hold their own references to vLLM's pruning functions, so the
   functions are replaced there): the prompt-side count (`compute_retained_tokens_count`) becomes
   `compressors.counts.kept_count` of our method, and `_postprocess_video_embeds_evs` (the worker
   side, where the kept embeddings are produced) runs `select` on each video's embeddings, writes a
   merging method's rows over the kept rows, and hands vLLM our keep mask through the module's
   retention-mask function;
4. works around three vLLM 0.32 defects that would otherwise break every compressed request:
   the CPU model runner never turns pruning on in the worker (`_fix_cpu_runner`), Qwen3-VL's
   position recomputation takes the prompt's outer `<|vision_start|>` (which transformers >= 5.10
   keeps around the expanded video) for the video's start (`_without_outer_vision_starts`), and
   Qwen3.5's models never set the pruning method Qwen3-VL's code reads (`_fix_qwen3_5_init`).

Supported: vLLM `support.VLLM_RANGE` (0.32-0.34 share these seams), architectures in
`ARCHITECTURES`. vLLM's Qwen2-VL has no video pruning seam at all: refused with a clear error.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch

from ..config import ConfigError, Config, from_env, vllm_capture_dir_from_env
from ..support import VLLM_RANGE, vllm_supported

logger = logging.getLogger("token_compressor")

# vLLM architecture name -> the model module holding its pruning seams
ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl",
    "Qwen3_5ForConditionalGeneration": "qwen3_vl",
    "Qwen3_5MoeForConditionalGeneration": "qwen3_vl",
}
# the pruning method vLLM is told to run: the only one all these architectures accept
VLLM_METHOD = "evs"
# vLLM turns pruning on only for a rate > 0; R_RATIO = 1 ("keep everything") still needs the seams
MIN_RATE = 1e-6

_INSTALLED = {"done": False}
_PENDING = threading.local()  # the masks _postprocess_video_embeds_evs hands its mask function


@dataclass(frozen=True)
class Plan:
    """What the plugin runs: one validated configuration (the same in every process)."""

    method: str
    ratio: float
    options: Tuple[Tuple[str, Any], ...] = ()
    capture_dir: Optional[str] = None

    @classmethod
    def from_config(cls, cfg: Config, capture_dir: Optional[str] = None) -> "Plan":
        from ..compressors.counts import CountNotFixed, check_fixed_count
        from ..registry import check_options

        options = dict(cfg.options)
        try:
            check_options(cfg.compressor, options)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if cfg.ratio < 1.0:
            try:
                check_fixed_count(cfg.compressor, options)
            except CountNotFixed as e:
                raise ConfigError(f"COMPRESSOR={cfg.compressor!r} cannot run inside vLLM: {e}") from None
        return cls(cfg.compressor, cfg.ratio, tuple(sorted(options.items())), capture_dir)

    @property
    def effective_method(self) -> str:
        # R_RATIO = 1 keeps everything for every method, as in the transformers path
        return "none" if self.ratio >= 1.0 else self.method

    @property
    def vllm_rate(self) -> float:
        return max(1.0 - self.ratio, MIN_RATE)

    def count(self, num_frames: int, tokens_per_frame: int) -> int:
        """Tokens kept of a `T x N` video (the placeholder size), from the grid alone."""
        from ..compressors.counts import kept_count

        return kept_count(self.effective_method, num_frames, tokens_per_frame, self.ratio, dict(self.options))

    def select(self, features: torch.Tensor, num_frames: int):
        """`select` on one video's `[T*N, D]` embeddings, with the options that fix its count."""
        from ..compressors.counts import fixed_count_options
        from ..selection import select

        T = int(num_frames)
        N = features.shape[0] // T
        options = fixed_count_options(self.effective_method, T, N, self.ratio, dict(self.options))
        sel = select(features, T, self.ratio, self.effective_method, **options)
        expected = self.count(T, N)
        if sel.num_kept != expected:  # the counts module's contract, checked where it matters
            raise RuntimeError(f"token_compressor: {self.effective_method} kept {sel.num_kept} of {T}x{N} tokens, "
                               f"but the prompt was sized for {expected}")
        return sel


def register() -> None:
    """The `vllm.general_plugins` entry point (run once in every vLLM process). The two defect
    workarounds are installed whenever the plugin is loaded (they act only when video pruning is
    on, so they also make vLLM's own `--video-pruning-rate` work on CPU and with Qwen3-VL chat
    prompts); the compressor only when `COMPRESSOR` is set."""
    if _INSTALLED["done"]:
        return
    cfg = from_env()
    if cfg.enabled:
        check_vllm_version()
        plan = Plan.from_config(cfg, vllm_capture_dir_from_env())
        install(plan)
        logger.info("token_compressor: %s at r=%g in vLLM (pid %d)", plan.method, plan.ratio, os.getpid())
    elif vllm_supported(_vllm_version()):
        install_fixes()
    _INSTALLED["done"] = True


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


def check_vllm_version(version: Optional[str] = None) -> str:
    """The installed vLLM version; a ConfigError naming `VLLM_RANGE` when it lies outside."""
    if version is None:
        version = _vllm_version()
    if not vllm_supported(version):
        raise ConfigError(f"vLLM {version} is not supported by token_compressor's vLLM plugin; supported: "
                          f"vllm{VLLM_RANGE} (unset COMPRESSOR to run vLLM without it)")
    return version


def install(plan: Plan) -> None:
    """Wrap vLLM's seams for `plan` in this process (see the module docstring)."""
    _wrap_engine_config(plan)
    for module in _model_modules():
        _wrap_model_module(module, plan)
    install_fixes(plan.capture_dir and plan)


def install_fixes(capture: Optional[Plan] = None) -> None:
    """The workarounds of vLLM 0.32's defects (section 4); `capture`: also record positions."""
    _fix_cpu_runner()
    _fix_qwen3_5_init()
    for module in _model_modules():
        for cls in _pruning_models(module):
            if getattr(cls.recompute_mrope_positions, "_token_compressor", False):
                continue
            if "_recompute_mrope_positions" in vars(cls):  # Qwen3-VL: the outer <|vision_start|> defect
                cls.recompute_mrope_positions = _without_outer_vision_starts(cls.recompute_mrope_positions)
            if capture is not None:
                cls.recompute_mrope_positions = _capture_positions(cls.recompute_mrope_positions, capture)
            cls.recompute_mrope_positions._token_compressor = True


def _model_modules():
    import importlib

    return [importlib.import_module(f"vllm.model_executor.models.{name}")
            for name in sorted(set(ARCHITECTURES.values()))]


# --- 2. the engine configuration -------------------------------------------------------------

def _wrap_engine_config(plan: Plan) -> None:
    from vllm.engine.arg_utils import EngineArgs

    original = EngineArgs.create_engine_config
    if getattr(original, "_token_compressor", False):
        return

    @functools.wraps(original)
    def create_engine_config(self, *args, **kwargs):
        configure_engine_args(self, plan)
        vllm_config = original(self, *args, **kwargs)
        check_architecture(vllm_config.model_config.architecture, plan)
        return vllm_config

    create_engine_config._token_compressor = True
    EngineArgs.create_engine_config = create_engine_config


def configure_engine_args(args, plan: Plan) -> None:
    """Turn vLLM's pruning on for `plan` in `args` (an EngineArgs); refuse vLLM's own as well."""
    rate = getattr(args, "video_pruning_rate", None)
    if getattr(args, "_token_compressor_rate", None) is None and rate not in (None, 0, 0.0):
        raise ConfigError(f"COMPRESSOR={plan.method!r} and --video-pruning-rate={rate} both ask for video "
                          f"pruning: unset one (with COMPRESSOR set, R_RATIO={plan.ratio:g} is the kept fraction)")
    args.video_pruning_rate = plan.vllm_rate
    args.video_pruning_method = VLLM_METHOD
    args._token_compressor_rate = plan.vllm_rate  # create_engine_config may run twice on one args


def check_architecture(architecture: str, plan: Plan) -> None:
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"COMPRESSOR={plan.method!r}: vLLM's {architecture} has no video pruning seam "
                          f"token_compressor supports; supported: {', '.join(sorted(ARCHITECTURES))} "
                          "(unset COMPRESSOR for this model)")


# --- 3. the model modules --------------------------------------------------------------------

def _wrap_model_module(module, plan: Plan) -> None:
    """Replace the module's pruning functions and wrap its model's `_postprocess_video_embeds_evs`."""
    if getattr(module, "_token_compressor", False):
        return
    count = functools.partial(_retained_count, plan)
    for name in ("compute_retained_tokens_count", "vidcom2_compute_retained_tokens_count"):
        if hasattr(module, name):
            setattr(module, name, count)
    for name in ("compute_retention_mask", "vidcom2_compute_retention_mask"):
        if hasattr(module, name):
            setattr(module, name, _precomputed_mask)
    for cls in _pruning_models(module):
        cls._postprocess_video_embeds_evs = _wrap_postprocess(cls._postprocess_video_embeds_evs, plan)
    module._token_compressor = True


def _pruning_models(module):
    """The classes defined in `module` that define `_postprocess_video_embeds_evs` themselves."""
    return [c for c in vars(module).values()
            if isinstance(c, type) and c.__module__ == module.__name__ and "_postprocess_video_embeds_evs" in vars(c)]


def _retained_count(plan: Plan, tokens_per_frame: int, num_frames: int, q: float) -> int:
    """The prompt side: the placeholder size of one video (vLLM's signature; `q` is the rate the
    plugin set, the count is our method's)."""
    return plan.count(int(num_frames), int(tokens_per_frame))


def _precomputed_mask(video_embeds: torch.Tensor, video_size_thw, spatial_merge_size: int, q: float) -> torch.Tensor:
    """The mask function the model module calls: hands back the mask `select` chose for this video
    (in call order; `_wrap_postprocess` computed them just before)."""
    masks = getattr(_PENDING, "masks", None)
    if not masks:
        raise RuntimeError("token_compressor: vLLM asked for a video retention mask outside "
                           "_postprocess_video_embeds_evs; this vLLM's seams are not the supported ones")
    mask = masks.popleft()
    if mask.numel() != video_embeds.shape[0]:
        raise RuntimeError(f"token_compressor: retention mask of {mask.numel()} tokens for a video of "
                           f"{video_embeds.shape[0]}; this vLLM's seams are not the supported ones")
    return mask


def _wrap_postprocess(original, plan: Plan):
    @functools.wraps(original)
    def postprocess(self, video_embeds_split, video_input):
        """Per video: `select` on the language-model embeddings (`[T*N, D]`, the first D channels;
        Qwen3-VL appends its deepstack features, which keep the kept rows as they are, as in the
        transformers path), merged rows written over the kept rows, then vLLM's own code keeps
        the rows of our mask and appends their M-RoPE positions."""
        grid = video_input["video_grid_thw"].tolist()
        width = self.config.get_text_config().hidden_size
        masks, videos, records = deque(), [], []
        for emb, (t, h, w) in zip(video_embeds_split, grid):
            main = emb[:, :width]
            sel = plan.select(main, int(t))
            if sel.features is not None:
                emb = emb.clone()
                emb[sel.keep.to(emb.device), :width] = sel.features.to(emb.device, emb.dtype)
            masks.append(sel.mask().to(emb.device))
            videos.append(emb)
            if plan.capture_dir:
                records.append(dict(features=main.detach().cpu(), grid=(int(t), int(h), int(w)), width=width,
                                    keep=sel.keep.cpu(), merged=None if sel.features is None else sel.features.cpu(),
                                    kept_rows=emb[sel.keep.to(emb.device), :width].detach().cpu()))
        _PENDING.masks = masks
        try:
            out = original(self, tuple(videos), video_input)
        finally:
            left, _PENDING.masks = _PENDING.masks, None
        if left:
            raise RuntimeError("token_compressor: vLLM did not ask for every video's retention mask; "
                               "this vLLM's seams are not the supported ones")
        for record, final in zip(records, out):  # what vLLM puts into the sequence, positions appended
            _capture(plan, "video", final=final.detach().cpu(), **record)
        return out

    postprocess._token_compressor = True
    return postprocess


# --- 4. vLLM 0.32 defects --------------------------------------------------------------------

def _fix_cpu_runner() -> None:
    """vLLM 0.32's CPU model runner loads the model without setting `is_multimodal_pruning_enabled`
    (only the GPU runner's `load_model` does), so the pruned tokens' positions are never
    recomputed and the first compressed prefill fails on a shape mismatch. Set it as the GPU
    runner does."""
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # a build without the CPU runner
        return
    original = CPUModelRunner.load_model
    if getattr(original, "_token_compressor", False):
        return

    @functools.wraps(original)
    def load_model(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        from vllm.model_executor.models.interfaces import supports_multimodal_pruning

        mm = self.model_config.multimodal_config
        self.is_multimodal_pruning_enabled = bool(
            supports_multimodal_pruning(self.get_model()) and mm is not None and mm.is_multimodal_pruning_enabled())
        return out

    load_model._token_compressor = True
    CPUModelRunner.load_model = load_model


def _fix_qwen3_5_init() -> None:
    """vLLM 0.32's `Qwen3_5ForConditionalGeneration` and `Qwen3_5MoeForConditionalGeneration`
    declare `supports_multimodal_pruning = True` and inherit Qwen3-VL's pruning code, but their own
    `__init__` (which does not call Qwen3-VL's) sets only the pruning rate, not
    `video_pruning_method`, which that code reads: the first video request with pruning on fails
    ("'Qwen3_5ForConditionalGeneration' object has no attribute 'video_pruning_method'"). After
    their `__init__`, run Qwen3-VL's own `_init_video_pruning` where the attribute is missing."""
    try:
        from vllm.model_executor.models import qwen3_5
    except ImportError:  # a vLLM without Qwen3.5
        return
    for name in ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration"):
        cls = getattr(qwen3_5, name, None)
        if cls is None or "__init__" not in vars(cls) or not hasattr(cls, "_init_video_pruning"):
            continue
        original = cls.__init__
        if getattr(original, "_token_compressor", False):
            continue

        def __init__(self, *args, _original=original, **kwargs):
            _original(self, *args, **kwargs)
            if not hasattr(self, "video_pruning_method"):
                self._init_video_pruning(self.multimodal_config)

        functools.update_wrapper(__init__, original)
        __init__._token_compressor = True
        cls.__init__ = __init__


def outer_vision_starts(input_ids: torch.Tensor, vision_start: int, vision_end: int, media: Tuple[int, ...]) -> torch.Tensor:
    """bool `[L]`: the `<|vision_start|>` tokens whose next vision token (start, end or media pad)
    is another `<|vision_start|>`: the outer marker transformers >= 5.10 keeps around a Qwen3-VL
    video expanded into per-frame `<t> <|vision_start|> pads <|vision_end|>` groups."""
    ids = input_ids.reshape(-1)
    special = (ids == vision_start) | (ids == vision_end)
    for m in media:
        special |= ids == m
    where = special.nonzero().flatten()
    kinds = ids[where]
    outer = torch.zeros_like(ids, dtype=torch.bool)
    if where.numel() > 1:
        both = (kinds[:-1] == vision_start) & (kinds[1:] == vision_start)
        outer[where[:-1][both]] = True
    return outer


_SPLIT_VIDEOS = {"count": 0}


def video_rows_left_unpositioned(input_ids: torch.Tensor, multimodal_embeddings, num_computed_tokens: int,
                                 media: Tuple[int, ...]) -> bool:
    """True when vLLM 0.32's Qwen3-VL position recomputation will skip rows it is given: a later
    prefill chunk (`num_computed_tokens > 0`) carries media rows (`[n, D + 5]` embeddings) while
    every media placeholder id lies before the chunk.
    vLLM sizes a pruned video's placeholder as all K tokens in the first frame's group, then
    fills the whole replacement (every frame's timestamp, start, rows, end) with embeddings; its
    recomputation counts placeholder ids to tell whether media is left, finds none, and returns
    the positions unchanged (`evs.recompute_mrope_positions`, the early exit)."""
    if num_computed_tokens <= 0 or not any(m.shape[0] for m in multimodal_embeddings):
        return False
    ids = input_ids.reshape(-1)
    placeholder = torch.zeros_like(ids, dtype=torch.bool)
    for m in media:
        placeholder |= ids == m
    return int(placeholder[:num_computed_tokens].sum()) == int(placeholder.sum())


def _without_outer_vision_starts(original):
    """vLLM 0.32's Qwen3-VL position recomputation takes the FIRST `<|vision_start|>` at or after
    the video as the start of its replacement; with the outer marker of transformers >= 5.10
    (`<|vision_start|><0.2 seconds><|vision_start|>...`) it starts one group too early and the
    first compressed prefill fails ("The expanded size of the tensor (0) must match ..."). The
    recomputation reads the ids only to find vision starts and media tokens, so the outer markers
    are hidden from it (as -1); their own positions stay the ones vLLM computed for the prompt."""

    @functools.wraps(original)
    def recompute(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        cfg = self.config
        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor(input_ids, dtype=torch.long)
        outer = outer_vision_starts(ids, cfg.vision_start_token_id, cfg.vision_end_token_id,
                                    (cfg.image_token_id, cfg.video_token_id))
        if bool(outer.any()):
            hidden = ids.clone().reshape(-1)
            hidden[outer] = -1
            input_ids = hidden if isinstance(input_ids, torch.Tensor) else hidden.tolist()
        if video_rows_left_unpositioned(ids, multimodal_embeddings, num_computed_tokens,
                                        (cfg.image_token_id, cfg.video_token_id)):
            _SPLIT_VIDEOS["count"] += 1
            logger.warning("token_compressor: a pruned video was split between prefill chunks; vLLM 0.32 leaves "
                           "the M-RoPE positions of its rows in the later chunk unchanged (%d so far in this "
                           "process; see docs/vllm.md, defect 5: --no-enable-prefix-caching for Qwen3.5, a "
                           "max_num_batched_tokens above the longest prompt)", _SPLIT_VIDEOS["count"])
        return original(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens)

    recompute._token_compressor = True
    return recompute


# --- capture (tests) -------------------------------------------------------------------------

def _capture(plan: Plan, kind: str, **record) -> None:
    """Save one record into `TOKEN_COMPRESSOR_VLLM_CAPTURE` (the worker's view, for exactness tests)."""
    _capture.counter = getattr(_capture, "counter", 0) + 1
    path = os.path.join(plan.capture_dir, f"{kind}-{os.getpid()}-{_capture.counter:05d}.pt")
    torch.save(dict(record, method=plan.effective_method, ratio=plan.ratio, options=dict(plan.options)), path)


def _capture_positions(original, plan: Plan):
    @functools.wraps(original)
    def recompute(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens):
        before = mrope_positions.detach().cpu().clone()
        out = original(self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens)
        ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.tensor(input_ids)
        channels = 5 if "_recompute_mrope_positions" in dir(type(self)) else 4  # Qwen3-VL: 5, Qwen2.5-VL: 4
        _capture(plan, "positions", input_ids=ids.detach().cpu(), positions=out[1].detach().cpu(),
                 num_computed_tokens=int(num_computed_tokens), mrope_positions_before=before,
                 media_positions=[m[:, -channels:].detach().cpu() for m in multimodal_embeddings])
        return out

    return recompute
