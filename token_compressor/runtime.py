"""Turning token-compressor on for a whole program run, from the environment alone.

Two ways in, one code path (`install`):
- lmms-eval's entry point (group `lmms_eval.models`, see setup.py): `lmms_eval_plugin` is called
  once per process when lmms-eval imports its model registry, before any model is built;
- the launcher, `python -m token_compressor.launch -m lmms_eval ...`, for other programs and
  for lmms-eval versions without entry points.

`install` validates every variable first (COMPRESSOR, R_RATIO, TOKEN_COMPRESSOR_KERNELS,
TOKEN_COMPRESSOR_REPORT, TOKEN_COMPRESSOR_ALLOW_*, EMC_*), then patches the Qwen-VL classes
(compressing when `COMPRESSOR` is set; measuring only otherwise, which is bitwise the unpatched
model), installs EMC screening in front of the model when `EMC_SCREENER` is set, and registers
the run report printed at exit.

Never silently uncompressed: with `COMPRESSOR` set, every model lmms-eval builds is checked as it
is built (`stop_unless_compressible`): one it cannot compress stops the run before the first sample
with one line and status 2, unless `TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1` (a WARNING, and the run
report lists it).
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
import time
from typing import Optional

from . import report
from .config import (ConfigError, allow_uncompressed_from_env, allow_untested_from_env, from_env, report_from_env,
                     screening_from_env)

logger = logging.getLogger("token_compressor")

ANNOUNCE = "token_compressor_announce"  # a log record's attribute: shown by the launcher's handler


class _LauncherFilter(logging.Filter):
    """What a program run under the launcher or lmms-eval sees from us without any logging set-up:
    the one line saying what was installed, and every WARNING; not one line per sample."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, ANNOUNCE, False))


_HANDLER: Optional[logging.Handler] = None


def _install_log_handler() -> None:
    """A stderr handler on the `token_compressor` logger, unless the program configured one;
    the logger's level is lowered to INFO only when it was unset."""
    global _HANDLER
    if _HANDLER is not None or logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(_LauncherFilter())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    _HANDLER = handler


def _remove_log_handler() -> None:
    global _HANDLER
    if _HANDLER is not None:
        logger.removeHandler(_HANDLER)
        logger.setLevel(logging.NOTSET)
        _HANDLER = None


_LOCK = threading.Lock()
_STATE = {"installed": False, "config": None, "screening": None, "since": None, "finalized": False}


def installed() -> bool:
    return _STATE["installed"]


def install(source: str) -> None:
    """Validate the environment configuration and turn compression, screening and the run
    report on for this process. Idempotent (a second call, e.g. the entry point under the
    launcher, does nothing). Raises `ConfigError` on an invalid variable, `RuntimeError` on an
    unsupported transformers."""
    with _LOCK:
        if _STATE["installed"]:
            return
        cfg = from_env()
        screening = screening_from_env()
        want_report = report_from_env()
        allow_uncompressed_from_env()  # validated now, read where a model is checked
        allow_untested_from_env()

        from .api import apply_from_env, describe
        from .models import FAMILIES, check_transformers_version
        from .models import patching
        from .models.pruning import Settings

        if cfg.enabled:
            apply_from_env()
            _guard_lmms_eval_models()
        elif want_report:
            # measure only: the wrappers call the original untouched (tested bitwise equal)
            check_transformers_version()
            for family in FAMILIES.values():
                cls = family.model_class()
                if not patching.is_class_patched(cls):
                    patching.patch_class(cls, family, Settings())
        if screening.enabled:
            from .screening.inject import install_processor_hook

            install_processor_hook(screening)
        if want_report:
            report.RECORDER.active = True
            atexit.register(finalize)
        _STATE.update(installed=True, config=cfg, screening=screening, since=time.time())
        if cfg.enabled or screening.enabled or want_report:
            _install_log_handler()
            what = describe(Settings(cfg.compressor, cfg.ratio, options=cfg.options)) if cfg.enabled else "compression off"
            logger.info("%s: %s in %s; screener %s; run report %s", source, what, ", ".join(FAMILIES),
                        screening.screener, "on" if want_report else "off", extra={ANNOUNCE: True})


class Uncompressible(SystemExit):
    """The run's model cannot be compressed and TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED is off: stops
    the process with status 2 (a SystemExit, which lmms-eval does not catch)."""


def compressible(model) -> bool:
    """Whether `model` is a class token-compressor patches (a supported `...ForConditionalGeneration`,
    or a whole Omni model whose thinker is one) with the seams the patches use on this
    transformers (the Omni thinkers have them from 5.21)."""
    from .models import FAMILIES
    from .models.patching import compressed_part, seam_problem

    classes = [f.model_class() for f in FAMILIES.values()]
    classes += [f.composite.model_class() for f in FAMILIES.values() if f.composite is not None]
    return isinstance(model, tuple(classes)) and seam_problem(compressed_part(model)) is None


def _torch_models_of(lm) -> list:
    """The torch modules an lmms-eval model wrapper holds (its `model` property, which unwraps
    accelerate, first); empty for API-backed wrappers."""
    import torch

    found = []
    try:
        model = getattr(lm, "model", None)
    except Exception:  # noqa: BLE001 - a property of a wrapper without a local model may raise
        model = None
    for value in [model, *vars(lm).values()]:
        if isinstance(value, torch.nn.Module) and all(value is not f for f in found):
            found.append(value)
    return found


def _describe(model) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")


def stop_unless_compressible(lm, where: str) -> None:
    """With COMPRESSOR set: return when `lm` (an lmms-eval model wrapper) holds a model
    token-compressor compresses. Otherwise print ONE line naming the model class and what is
    supported and stop the process with status 2, before the first sample; or, with
    TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1, log a WARNING, count it in the run report and go on."""
    from .models import supported_summary

    cfg = _STATE["config"]
    if cfg is None or not cfg.enabled:
        return
    models = _torch_models_of(lm)
    if any(compressible(m) for m in models):
        return
    held = ", ".join(_describe(m) for m in models) or "no local torch model"
    name = f"{type(lm).__name__}: {held}"
    line = (f"token_compressor: COMPRESSOR={cfg.compressor} cannot compress the {where} model {name}; "
            f"token_compressor compresses {supported_summary()}")
    if allow_uncompressed_from_env():
        logger.warning("%s. TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1: this run goes on UNCOMPRESSED", line)
        report.RECORDER.note_uncompressed(name)
        return
    _STATE["finalized"] = True  # nothing ran: no run report at exit, the one line says it all
    sys.stderr.write(f"{line} (set TOKEN_COMPRESSOR_ALLOW_UNCOMPRESSED=1 to run it uncompressed; "
                     "stopping the run before the first sample)\n")
    sys.stderr.flush()
    raise Uncompressible(2)


def _guard_lmms_eval_models() -> None:
    """Check every lmms-eval model as soon as lmms-eval builds it (`lmms.create_from_arg_string`
    / `create_from_arg_object`, the classmethods `simple_evaluate` builds models with): before
    any dataset is loaded or sample generated. Nothing to do without lmms-eval."""
    try:
        from lmms_eval.api.model import lmms
    except Exception:  # noqa: BLE001 - no (working) lmms-eval: the guard has nothing to guard
        return
    for name in ("create_from_arg_string", "create_from_arg_object"):
        original = lmms.__dict__.get(name)
        if not isinstance(original, classmethod) or getattr(original.__func__, "_token_compressor_guard", False):
            continue

        def build(cls, *args, _original=original.__func__, **kwargs):
            lm = _original(cls, *args, **kwargs)
            stop_unless_compressible(lm, "lmms-eval")
            return lm

        build._token_compressor_guard = True
        build.__wrapped__ = original.__func__
        setattr(lmms, name, classmethod(build))


def _unguard_lmms_eval_models() -> None:
    lmms = getattr(sys.modules.get("lmms_eval.api.model"), "lmms", None)
    for name in ("create_from_arg_string", "create_from_arg_object"):
        current = lmms.__dict__.get(name) if lmms is not None else None
        if isinstance(current, classmethod) and getattr(current.__func__, "_token_compressor_guard", False):
            setattr(lmms, name, classmethod(current.__func__.__wrapped__))


def uninstall() -> None:
    """Undo `install` in this process: class patches reverted, screening hook removed, the
    report deactivated and reset (it will not print at exit)."""
    with _LOCK:
        if not _STATE["installed"]:
            return
        from .api import revert
        from .screening.inject import uninstall_processor_hook

        revert()
        _unguard_lmms_eval_models()
        uninstall_processor_hook()
        report.RECORDER.active = False
        report.RECORDER.reset()
        atexit.unregister(finalize)
        _remove_log_handler()
        _STATE.update(installed=False, config=None, screening=None, since=None, finalized=False)


def _asked_for_work(environ=None) -> bool:
    env = os.environ if environ is None else environ
    return any(str(env.get(k, "")).strip() not in ("", "none") for k in ("COMPRESSOR", "EMC_SCREENER"))


# What lmms-eval imports lazily once evaluation starts, after the model is built: a missing one
# surfaces only as lmms-eval's generic "Error during evaluation" and a run of 0 samples, so the
# entry point probes them first. (module, why it is needed and what to do)
LMMS_EVAL_RUNTIME_NEEDS = (
    ("filelock._api", "lmms-eval 0.7.x patches filelock's private module filelock._api when "
                      "evaluation starts, and filelock 4.3 removed it: pip install 'filelock<4.3'"),
)


def lmms_eval_problems() -> list:
    """Why the installed lmms-eval cannot evaluate in this environment (empty when it can)."""
    problems = []
    for module, why in LMMS_EVAL_RUNTIME_NEEDS:
        try:
            importlib.import_module(module)
        except ImportError as e:
            problems.append(f"{why} ({e})")
    return problems


def _lmms_eval_version() -> str:
    try:
        from importlib.metadata import version

        return version("lmms-eval")
    except Exception:  # noqa: BLE001 - a version is only for the message
        return "?"


def lmms_eval_plugin():
    """The `lmms_eval.models` entry point: registers no models (returns []).

    lmms-eval calls every entry point inside one try/except and carries on without the later
    ones when one raises, so this never lets an exception out. When the configuration is invalid,
    or compression/screening was asked for and cannot be installed, it prints one line and exits
    the process with status 2 (`SystemExit`, which lmms-eval does not catch) before any model is
    built: running uncompressed when compression was asked for would be silent and wrong.
    It does the same, whatever the configuration, when lmms-eval itself cannot evaluate in this
    environment (`lmms_eval_problems`): otherwise the run would fail after the model is loaded
    with a generic message and report 0 samples."""
    problems = lmms_eval_problems()
    if problems:
        sys.stderr.write(f"token_compressor: lmms-eval {_lmms_eval_version()} cannot run in this environment: "
                         f"{'; '.join(problems)} (stopping the run before the first sample)\n")
        sys.stderr.flush()
        raise SystemExit(2)
    try:
        install("lmms-eval")
    except Exception as e:  # noqa: BLE001 - see the docstring
        if isinstance(e, ConfigError) or _asked_for_work():
            sys.stderr.write(f"token_compressor: {e} (stopping the run before the first sample)\n")
            sys.stderr.flush()
            raise SystemExit(2)
        logger.warning("run report not installed: %s", e)
    return []


def _rank() -> int:
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def build_report(gathered) -> dict:
    """The merged report of the gathered per-rank summaries, with versions."""
    import transformers

    from . import __version__

    merged = report.merge(gathered)
    merged["token_compressor_version"] = __version__
    merged["transformers_version"] = transformers.__version__
    return merged


def finalize(argv=None, out=None) -> Optional[dict]:
    """Print the run report on rank 0 (merged over ranks) and write its JSON next to lmms-eval's
    results when `--output_path` was given. Registered with `atexit` by `install`; runs once.
    Returns the merged report on rank 0, else None."""
    if _STATE["finalized"] or not report.RECORDER.active:
        return None
    _STATE["finalized"] = True
    cfg = _STATE["config"]
    screening_cfg = _STATE["screening"]
    screening = None
    if screening_cfg is not None and screening_cfg.enabled:
        from .screening.api import screening_stats

        screening = {**screening_stats(), "screener": screening_cfg.screener}
    summary = report.RECORDER.summary(compressor=cfg.compressor if cfg else None,
                                      ratio=cfg.ratio if cfg and cfg.enabled else None,
                                      rank=_rank(), screening=screening,
                                      options=dict(cfg.options) if cfg and cfg.enabled else None)
    try:
        gathered = report.gather_to_rank0(summary)
    except Exception as e:  # noqa: BLE001 - a broken process group must not hide this rank's figures
        logger.warning("could not gather the run report over ranks (%s); this rank's only", e)
        gathered = [summary]
    if gathered is None:
        return None
    merged = build_report(gathered)
    out = sys.stdout if out is None else out
    print(report.format_table(merged), file=out)
    if cfg is not None and cfg.enabled and merged["samples"] and merged["compressed_samples"] == 0:
        print(f"token_compressor: WARNING: COMPRESSOR={cfg.compressor} was set but no generate call had "
              "video to compress", file=out)
    if cfg is not None and cfg.enabled and merged["generate_calls"] == 0:
        print(f"token_compressor: WARNING: COMPRESSOR={cfg.compressor} was set but no Qwen-VL model "
              "generated anything in this run", file=out)
    gap = report.ratio_gap_warning(merged)
    if gap:
        print(gap, file=out)
    output_path = report.output_path_from_argv(sys.argv if argv is None else argv)
    if output_path:
        path = report.report_file(output_path, _STATE["since"] or 0.0)
        from .screening.cache import atomic_write_json

        atomic_write_json(path, merged)
        print(f"token_compressor: run report written to {path}", file=out)
    out.flush()
    return merged
